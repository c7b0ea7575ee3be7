package webhook_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/webhook"
	sw "github.com/claudeq/claudeq/pkg/webhook"
)

// TestDeliverVerifiesWithPkgWebhook delivers to a loopback receiver that
// verifies with pkg/webhook, during a secret rotation: receivers holding
// only the old secret and those holding only the new one both accept.
func TestDeliverVerifiesWithPkgWebhook(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := sw.NewSecret(), sw.NewSecret()
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	verifier := func(secrets ...string) *sw.Verifier {
		v, err := sw.NewVerifier(secrets...)
		require.NoError(t, err)
		v.Now = clock
		return v
	}
	onOld, onNew, onOther := verifier(oldSecret), verifier(newSecret), verifier(sw.NewSecret())

	rcv := newReceiver(t, nil)
	cfg := config(t, "http://127.0.0.1", nil)
	cfg.Now = clock
	d := webhook.NewDeliverer(cfg)
	body, err := webhook.EncodeJobEvent(webhook.EventJobSucceeded, now, webhook.JobData{
		JobID: "job_1", Status: claudeq.StatusSucceeded, CostUSD: 0.0012, ResultURL: "https://gw.example/api/claude/jobs/job_1",
		Usage: &claudeq.Usage{InputTokens: 10, OutputTokens: 20}, Result: json.RawMessage(`{"type":"message","content":[]}`),
	}, 0)
	require.NoError(t, err)

	res := d.Deliver(t.Context(), webhook.Delivery{ID: "msg_abc", URL: rcv.URL + "/hook", Secrets: []string{newSecret, oldSecret}, Body: body})
	require.NoError(t, res.Err)
	require.Equal(t, http.StatusNoContent, res.Status)
	require.Positive(t, res.Latency)

	reqs := rcv.requests()
	require.Len(t, reqs, 1)
	got := reqs[0]
	require.Equal(t, body, got.body, "the body arrives byte for byte")
	require.Equal(t, "msg_abc", got.header.Get(sw.HeaderID))
	require.Equal(t, strconv.FormatInt(now.Unix(), 10), got.header.Get(sw.HeaderTimestamp))
	require.Equal(t, "application/json", got.header.Get("Content-Type"))
	require.Len(t, strings.Fields(got.header.Get(sw.HeaderSignature)), 2, "one signature per secret")
	require.NoError(t, onOld.Verify(got.header, got.body))
	require.NoError(t, onNew.Verify(got.header, got.body))
	require.ErrorIs(t, onOther.Verify(got.header, got.body), sw.ErrSignature)

	var ev struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      struct {
			JobID     string          `json:"job_id"`
			Status    string          `json:"status"`
			CostUSD   float64         `json:"cost_usd"`
			ResultURL string          `json:"result_url"`
			Usage     map[string]int  `json:"usage"`
			Result    json.RawMessage `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got.body, &ev))
	require.Equal(t, "job.succeeded", ev.Type)
	require.True(t, now.Equal(ev.Timestamp))
	require.Equal(t, "job_1", ev.Data.JobID)
	require.Equal(t, "succeeded", ev.Data.Status)
	require.Equal(t, 0.0012, ev.Data.CostUSD)
	require.Equal(t, 20, ev.Data.Usage["output_tokens"])
	require.JSONEq(t, `{"type":"message","content":[]}`, string(ev.Data.Result))
}

func TestDeliverOutcomes(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		status         int
		header         map[string]string
		body           string
		wantErr        string // "" = success
		wantRetryAfter time.Duration
		wantDisable    bool
	}{
		{name: "200", status: 200},
		{name: "204", status: 204},
		{name: "202", status: 202},
		{name: "304 is a failure", status: 304, wantErr: "304"},
		{name: "400", status: 400, body: "bad event", wantErr: "receiver answered 400: bad event"},
		{name: "401", status: 401, wantErr: "401"},
		{name: "404", status: 404, wantErr: "404"},
		{name: "410 disables", status: 410, wantErr: "disable the endpoint", wantDisable: true},
		{name: "429 with Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "120"}, wantErr: "429", wantRetryAfter: 2 * time.Minute},
		{name: "429 without Retry-After", status: 429, wantErr: "429"},
		{name: "503 with Retry-After date", status: 503, header: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, wantErr: "503", wantRetryAfter: 90 * time.Second},
		{name: "503 with a past date", status: 503, header: map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)}, wantErr: "503"},
		{name: "429 with an absurd Retry-After", status: 429, header: map[string]string{"Retry-After": "99999999999"}, wantErr: "429", wantRetryAfter: webhook.MaxRetryAfter},
		{name: "429 with garbage Retry-After", status: 429, header: map[string]string{"Retry-After": "soon"}, wantErr: "429"},
		{name: "500 ignores Retry-After", status: 500, header: map[string]string{"Retry-After": "120"}, wantErr: "500"},
		{name: "502", status: 502, wantErr: "502"},
		{name: "error body is sanitized and cut", status: 500, body: "line1\nline2\x00" + strings.Repeat("x", 1000), wantErr: "receiver answered 500: line1 line2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			cfg := config(t, "http://127.0.0.1", nil)
			cfg.Now = func() time.Time { return now }
			res := webhook.NewDeliverer(cfg).Deliver(t.Context(), webhook.Delivery{ID: "msg_1", URL: rcv.URL, Secrets: []string{sw.NewSecret()}, Body: []byte(`{}`)})
			require.Equal(t, tt.status, res.Status)
			require.Equal(t, tt.wantRetryAfter, res.RetryAfter)
			require.Equal(t, tt.wantDisable, res.Disable)
			if tt.wantErr == "" {
				require.NoError(t, res.Err)
				return
			}
			require.ErrorContains(t, res.Err, tt.wantErr)
			require.Less(t, len(res.Err.Error()), 400, "the quoted body is cut")
		})
	}
}

// TestDeliverChecksURLAgain: a URL registered under an older policy is not
// contacted once the policy forbids it.
func TestDeliverChecksURLAgain(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, nil)
	tests := []struct {
		name     string
		delivery webhook.Delivery
		wantErr  string
	}{
		{name: "no longer allowed", delivery: webhook.Delivery{ID: "m", URL: rcv.URL, Secrets: []string{sw.NewSecret()}}, wantErr: "webhook_url: host 127.0.0.1 is a loopback address"},
		{name: "no secret", delivery: webhook.Delivery{ID: "m", URL: "https://hooks.example.com/"}, wantErr: "no signing secret"},
		{name: "bad secret", delivery: webhook.Delivery{ID: "m", URL: "https://hooks.example.com/", Secrets: []string{"whsec_short"}}, wantErr: "invalid secret"},
		{name: "no id", delivery: webhook.Delivery{URL: "https://hooks.example.com/", Secrets: []string{sw.NewSecret()}}, wantErr: "without an id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := webhook.NewDeliverer(config(t, "", nil)).Deliver(t.Context(), tt.delivery)
			require.ErrorContains(t, res.Err, tt.wantErr)
			require.Zero(t, res.Status)
		})
	}
	require.Zero(t, rcv.conns.Load())
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{name: "empty", in: "", want: 0},
		{name: "seconds", in: "30", want: 30 * time.Second},
		{name: "spaces", in: " 30 ", want: 30 * time.Second},
		{name: "zero", in: "0", want: 0},
		{name: "negative", in: "-5", want: 0},
		{name: "capped", in: "172800", want: webhook.MaxRetryAfter},
		{name: "date", in: now.Add(time.Hour).Format(http.TimeFormat), want: time.Hour},
		{name: "past date", in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0},
		{name: "far date", in: now.Add(1000 * time.Hour).Format(http.TimeFormat), want: webhook.MaxRetryAfter},
		{name: "garbage", in: "tomorrow", want: 0},
		{name: "fraction", in: "1.5", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, webhook.ParseRetryAfter(tt.in, now))
		})
	}
}

func TestEncodeJobEvent(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 11, 3, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	result := func(n int) json.RawMessage {
		return json.RawMessage(`{"type":"message","content":[{"type":"text","text":"` + strings.Repeat("a", n) + `"}]}`)
	}
	tests := []struct {
		name         string
		data         webhook.JobData
		limit        int
		wantResult   bool
		wantOmitted  bool
		wantMetadata bool
		wantErr      error
	}{
		{name: "small result inline", data: webhook.JobData{JobID: "j", Result: result(100)}, wantResult: true},
		{name: "result just fits 20 KiB", data: webhook.JobData{JobID: "j", Result: result(19 << 10)}, wantResult: true},
		{name: "large result left out", data: webhook.JobData{JobID: "j", Result: result(20 << 10), Metadata: map[string]any{"k": "v"}}, wantOmitted: true, wantMetadata: true},
		{name: "custom limit", data: webhook.JobData{JobID: "j", Result: result(200)}, limit: 200, wantOmitted: true},
		{name: "metadata dropped last", data: webhook.JobData{JobID: "j", Result: result(100), Metadata: map[string]any{"big": strings.Repeat("m", 30<<10)}}, wantOmitted: true},
		{name: "failed job, no result", data: webhook.JobData{JobID: "j", Status: claudeq.StatusFailed, Error: &claudeq.JobError{Type: "overloaded_error", Message: "try later"}}},
		{name: "too large anyway", data: webhook.JobData{JobID: "j", Error: &claudeq.JobError{Type: "x", Message: strings.Repeat("e", 30<<10)}}, wantErr: webhook.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := webhook.EncodeJobEvent(webhook.EventJobSucceeded, ts, tt.data, tt.limit)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			limit := tt.limit
			if limit == 0 {
				limit = webhook.DefaultMaxBody
			}
			require.LessOrEqual(t, len(b), limit)
			var ev map[string]any
			require.NoError(t, json.Unmarshal(b, &ev))
			require.Equal(t, "job.succeeded", ev["type"])
			require.Equal(t, "2026-11-03T11:00:00Z", ev["timestamp"], "UTC")
			data := ev["data"].(map[string]any)
			require.Equal(t, "j", data["job_id"])
			require.Contains(t, data, "result_url", "always present, so receivers can fetch the result")
			require.Contains(t, data, "cost_usd")
			_, hasResult := data["result"]
			require.Equal(t, tt.wantResult, hasResult)
			require.Equal(t, tt.wantOmitted, data["result_omitted"] == true)
			_, hasMeta := data["metadata"]
			require.Equal(t, tt.wantMetadata, hasMeta)
		})
	}
}
