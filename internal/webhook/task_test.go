package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/webhook"
	sw "github.com/claudeq/claudeq/pkg/webhook"
)

// The worker records attempts with store.Store: the two types convert.
var _ = store.Attempt(webhook.Attempt{})

// memRecorder keeps attempts in memory; safe for concurrent use.
type memRecorder struct {
	mu sync.Mutex
	a  []webhook.Attempt
}

func (r *memRecorder) RecordAttempt(_ context.Context, a webhook.Attempt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.a = append(r.a, a)
	return nil
}

func (r *memRecorder) attempts() []webhook.Attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Attempt(nil), r.a...)
}

func TestDeliveryID(t *testing.T) {
	t.Parallel()
	a := webhook.DeliveryID("job_1", webhook.EventJobSucceeded)
	require.Equal(t, a, webhook.DeliveryID("job_1", webhook.EventJobSucceeded), "deterministic")
	require.NotEqual(t, a, webhook.DeliveryID("job_1", webhook.EventJobFailed))
	require.NotEqual(t, a, webhook.DeliveryID("job_2", webhook.EventJobSucceeded))
	require.Regexp(t, `^msg_[0-9a-f]{32}$`, a)
}

func TestNewDeliverTask(t *testing.T) {
	t.Parallel()
	p := webhook.Payload{DeliveryID: "msg_1", JobID: "job_1", UserID: "u", URL: "https://h.example/", Event: json.RawMessage(`{"type":"job.succeeded"}`)}
	task, err := webhook.NewDeliverTask(p)
	require.NoError(t, err)
	require.Equal(t, webhook.TypeDeliver, task.Type())
	var back webhook.Payload
	require.NoError(t, json.Unmarshal(task.Payload(), &back))
	require.Equal(t, p, back)

	_, err = webhook.NewDeliverTask(webhook.Payload{DeliveryID: "msg_1"})
	require.Error(t, err)
}

// TestHandler runs the handler directly (first attempt) against a loopback
// receiver answering each status.
func TestHandler(t *testing.T) {
	t.Parallel()
	fast := webhook.DefaultSchedule.Scale(1.0 / 3600) // 0, 1.4ms, 83ms, 0.5s, 2s, 5s, 10s, 10s
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		schedule  webhook.Schedule
		wantErr   bool
		wantSkip  bool
		wantDelay time.Duration
		wantGone  bool
		outcome   string // claudeq_webhook_deliveries_total
	}{
		{name: "2xx succeeds", status: 204, outcome: "success"},
		{name: "5xx retries after the schedule's next wait", status: 500, wantErr: true, wantDelay: fast[1], outcome: "retry"},
		{name: "429 retries after the larger Retry-After", status: 429, header: map[string]string{"Retry-After": "120"}, wantErr: true, wantDelay: 2 * time.Minute, outcome: "retry"},
		{name: "503 Retry-After shorter than the schedule", status: 503, header: map[string]string{"Retry-After": "1"}, schedule: webhook.Schedule{0, time.Hour}, wantErr: true, wantDelay: time.Hour, outcome: "retry"},
		{name: "3xx is a failure", status: 302, header: map[string]string{"Location": "http://127.0.0.1:1/"}, wantErr: true, wantDelay: fast[1], outcome: "retry"},
		{name: "410 stops and disables", status: 410, wantErr: true, wantSkip: true, wantGone: true, outcome: "failed"},
		{name: "last attempt of the schedule gives up", status: 500, schedule: webhook.Schedule{0}, wantErr: true, wantSkip: true, outcome: "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
			})
			secret := sw.NewSecret()
			rec := &memRecorder{}
			var gone []webhook.Payload
			at := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
			schedule := fast
			if tt.schedule != nil {
				schedule = tt.schedule
			}
			reg := prometheus.NewRegistry()
			h := &webhook.Handler{
				Secrets:   func(context.Context, string) ([]string, error) { return []string{secret}, nil },
				Deliverer: webhook.NewDeliverer(config(t, "http://127.0.0.1", nil)),
				Recorder:  rec,
				Schedule:  schedule,
				OnGone:    func(_ context.Context, p webhook.Payload) error { gone = append(gone, p); return nil },
				Now:       func() time.Time { return at },
				Metrics:   metrics.New(reg, metrics.Options{}),
			}
			p := webhook.Payload{DeliveryID: "msg_1", JobID: "job_1", UserID: "u1", URL: rcv.URL + "/hook", Event: json.RawMessage(`{"type":"job.succeeded"}`)}
			task, err := webhook.NewDeliverTask(p)
			require.NoError(t, err)

			err = h.ProcessTask(t.Context(), task)
			if !tt.wantErr {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				require.Equal(t, tt.wantSkip, errors.Is(err, asynq.SkipRetry), "SkipRetry")
				if !tt.wantSkip {
					d, ok := webhook.NextDelay(err)
					require.True(t, ok)
					require.Equal(t, tt.wantDelay, d)
					require.Equal(t, tt.wantDelay, webhook.RetryDelay(0, err, task), "RetryDelay reads it")
				}
			}
			require.Equal(t, tt.wantGone, len(gone) == 1)
			require.Equal(t, map[string]float64{"success": 0, "retry": 0, "failed": 0, tt.outcome: 1}, deliveries(t, reg))

			got := rec.attempts()
			require.Len(t, got, 1)
			a := got[0]
			require.NotEmpty(t, a.ID)
			require.Equal(t, webhook.Attempt{ID: a.ID, DeliveryID: "msg_1", JobID: "job_1", UserID: "u1", URL: p.URL,
				Attempt: 1, At: at, Status: tt.status, LatencyMS: a.LatencyMS, Error: a.Error}, a)
			require.Equal(t, tt.wantErr, a.Error != "")
		})
	}
}

func TestHandlerDoesNotSend(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, nil)
	okSecrets := func(context.Context, string) ([]string, error) { return []string{sw.NewSecret()}, nil }
	good := webhook.Payload{DeliveryID: "msg_1", UserID: "u1", URL: rcv.URL, Event: json.RawMessage(`{}`)}
	tests := []struct {
		name      string
		payload   []byte
		allow     string
		secrets   func(context.Context, string) ([]string, error)
		wantSkip  bool
		wantInfra bool
		wantKind  claudeq.Kind
	}{
		{name: "bad payload", payload: []byte(`{`), allow: "http://127.0.0.1", secrets: okSecrets, wantSkip: true},
		{name: "payload without url", payload: []byte(`{"delivery_id":"m"}`), allow: "http://127.0.0.1", secrets: okSecrets, wantSkip: true},
		{name: "payload without user", payload: []byte(`{"delivery_id":"m","url":"https://h.example/","event":{}}`), allow: "http://127.0.0.1", secrets: okSecrets, wantSkip: true},
		{name: "secret store down", allow: "http://127.0.0.1", secrets: func(context.Context, string) ([]string, error) {
			return nil, errors.New("redis: connection refused")
		}, wantInfra: true, wantKind: claudeq.KindUnavailable},
		{name: "URL no longer allowed", allow: "", secrets: okSecrets, wantSkip: true, wantKind: claudeq.KindInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &memRecorder{}
			reg := prometheus.NewRegistry()
			h := &webhook.Handler{Secrets: tt.secrets, Deliverer: webhook.NewDeliverer(config(t, tt.allow, nil)), Recorder: rec,
				Metrics: metrics.New(reg, metrics.Options{})}
			payload := tt.payload
			if payload == nil {
				var err error
				payload, err = json.Marshal(good)
				require.NoError(t, err)
			}
			err := h.ProcessTask(t.Context(), asynq.NewTask(webhook.TypeDeliver, payload))
			require.Error(t, err)
			require.Equal(t, tt.wantSkip, errors.Is(err, asynq.SkipRetry))
			require.Equal(t, tt.wantInfra, webhook.IsInfra(err))
			if tt.wantKind != claudeq.KindInternal {
				require.Equal(t, tt.wantKind, claudeq.ErrorKind(err))
			}
			want := map[string]float64{"success": 0, "retry": 0, "failed": 0}
			if tt.wantKind == claudeq.KindInvalidRequest {
				want["failed"] = 1 // refused by the policy: given up
			}
			require.Equal(t, want, deliveries(t, reg))
			if tt.wantInfra {
				require.Empty(t, rec.attempts(), "no attempt was made")
				d, ok := webhook.NextDelay(err)
				require.True(t, ok)
				require.Equal(t, 10*time.Second, d)
			}
		})
	}
	require.Zero(t, rcv.conns.Load())
}

// deliveries returns claudeq_webhook_deliveries_total by outcome.
func deliveries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "claudeq_webhook_deliveries_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}
