package webhook_test

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/pkg/webhook"
)

// The test vector published with the Standard Webhooks / Svix libraries.
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTS     = 1614265330
	vecBody   = `{"test": 2432232314}`
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignKnownVector(t *testing.T) {
	t.Parallel()
	got, err := webhook.Sign(vecSecret, vecID, time.Unix(vecTS, 0), []byte(vecBody))
	require.NoError(t, err)
	require.Equal(t, vecSig, got)
}

// TestInteropWithReferenceLibrary checks Sign and Verify against the
// reference Go implementation of Standard Webhooks, both ways.
func TestInteropWithReferenceLibrary(t *testing.T) {
	t.Parallel()
	secret := webhook.NewSecret()
	ref, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	now := time.Now()
	body := []byte(`{"type":"job.succeeded","data":{"job_id":"j1"}}`)

	ours, err := webhook.Sign(secret, "msg_1", now, body)
	require.NoError(t, err)
	theirs, err := ref.Sign("msg_1", now, body)
	require.NoError(t, err)
	require.Equal(t, theirs, ours)

	h := headers("msg_1", now, ours)
	require.NoError(t, ref.Verify(body, h), "reference library verifies our signature")
	v, err := webhook.NewVerifier(secret)
	require.NoError(t, err)
	require.NoError(t, v.Verify(headers("msg_1", now, theirs), body), "we verify the reference signature")
}

func TestNewSecret(t *testing.T) {
	t.Parallel()
	a, b := webhook.NewSecret(), webhook.NewSecret()
	require.NotEqual(t, a, b)
	require.True(t, strings.HasPrefix(a, webhook.SecretPrefix))
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, webhook.SecretPrefix))
	require.NoError(t, err)
	require.Len(t, key, 32)
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name    string
		secret  string
		wantLen int // 0 = error
	}{
		{name: "prefixed 32 bytes", secret: "whsec_" + b64(32), wantLen: 32},
		{name: "no prefix", secret: b64(32), wantLen: 32},
		{name: "24 bytes is the minimum", secret: "whsec_" + b64(24), wantLen: 24},
		{name: "64 bytes is the maximum", secret: "whsec_" + b64(64), wantLen: 64},
		{name: "23 bytes is too short", secret: "whsec_" + b64(23)},
		{name: "65 bytes is too long", secret: "whsec_" + b64(65)},
		{name: "not base64", secret: "whsec_not*base64!"},
		{name: "empty", secret: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := webhook.ParseSecret(tt.secret)
			if tt.wantLen == 0 {
				require.ErrorIs(t, err, webhook.ErrSecret)
				_, err = webhook.Sign(tt.secret, "id", time.Now(), nil)
				require.ErrorIs(t, err, webhook.ErrSecret)
				_, err = webhook.NewVerifier(tt.secret)
				require.ErrorIs(t, err, webhook.ErrSecret)
				return
			}
			require.NoError(t, err)
			require.Len(t, key, tt.wantLen)
		})
	}
}

func TestNewVerifierNeedsASecret(t *testing.T) {
	t.Parallel()
	_, err := webhook.NewVerifier()
	require.ErrorIs(t, err, webhook.ErrSecret)
}

func headers(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set(webhook.HeaderID, id)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(webhook.HeaderSignature, sig)
	return h
}

func TestVerify(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret, otherSecret := webhook.NewSecret(), webhook.NewSecret(), webhook.NewSecret()
	sent := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"type":"job.succeeded","timestamp":"2026-11-03T12:00:00Z","data":{}}`)
	sign := func(secret string) string {
		s, err := webhook.Sign(secret, "msg_1", sent, body)
		require.NoError(t, err)
		return s
	}
	both := sign(oldSecret) + " " + sign(newSecret)

	tests := []struct {
		name     string
		secrets  []string // the receiver's secrets
		header   func(h http.Header)
		body     string // "" = the signed body
		receive  time.Duration
		want     error
		wantText string
	}{
		{name: "round trip", secrets: []string{newSecret}},
		{name: "rotation: receiver still on the old secret", secrets: []string{oldSecret}},
		{name: "rotation: receiver already on the new secret", secrets: []string{newSecret}},
		{name: "rotation: receiver holds both", secrets: []string{otherSecret, oldSecret}},
		{name: "wrong secret", secrets: []string{otherSecret}, want: webhook.ErrSignature},
		{name: "changed body", secrets: []string{newSecret}, body: `{"type":"job.failed"}`, want: webhook.ErrSignature},
		{name: "changed id", secrets: []string{newSecret}, header: func(h http.Header) { h.Set(webhook.HeaderID, "msg_2") }, want: webhook.ErrSignature},
		{name: "changed timestamp", secrets: []string{newSecret}, header: func(h http.Header) {
			h.Set(webhook.HeaderTimestamp, strconv.FormatInt(sent.Unix()+1, 10))
		}, want: webhook.ErrSignature},
		{name: "4m59s late is fine", secrets: []string{newSecret}, receive: 4*time.Minute + 59*time.Second},
		{name: "4m59s early is fine", secrets: []string{newSecret}, receive: -4*time.Minute - 59*time.Second},
		{name: "5m01s late", secrets: []string{newSecret}, receive: 5*time.Minute + time.Second, want: webhook.ErrTimestamp},
		{name: "5m01s early", secrets: []string{newSecret}, receive: -5*time.Minute - time.Second, want: webhook.ErrTimestamp},
		{name: "missing id", secrets: []string{newSecret}, header: func(h http.Header) { h.Del(webhook.HeaderID) }, want: webhook.ErrMissingHeaders},
		{name: "missing timestamp", secrets: []string{newSecret}, header: func(h http.Header) { h.Del(webhook.HeaderTimestamp) }, want: webhook.ErrMissingHeaders},
		{name: "missing signature", secrets: []string{newSecret}, header: func(h http.Header) { h.Set(webhook.HeaderSignature, "") }, want: webhook.ErrMissingHeaders},
		{name: "timestamp in milliseconds", secrets: []string{newSecret}, header: func(h http.Header) {
			h.Set(webhook.HeaderTimestamp, strconv.FormatInt(sent.UnixMilli(), 10))
		}, want: webhook.ErrTimestamp},
		{name: "timestamp not a number", secrets: []string{newSecret}, header: func(h http.Header) { h.Set(webhook.HeaderTimestamp, "yesterday") }, want: webhook.ErrTimestamp, wantText: "not a Unix time"},
		{name: "timestamp absurdly small", secrets: []string{newSecret}, header: func(h http.Header) { h.Set(webhook.HeaderTimestamp, "-9223372036854775808") }, want: webhook.ErrTimestamp},
		{name: "signature without version", secrets: []string{newSecret}, header: func(h http.Header) {
			h.Set(webhook.HeaderSignature, strings.TrimPrefix(sign(newSecret), "v1,"))
		}, want: webhook.ErrSignature},
		{name: "signature of another version", secrets: []string{newSecret}, header: func(h http.Header) {
			h.Set(webhook.HeaderSignature, "v1a,"+strings.TrimPrefix(sign(newSecret), "v1,"))
		}, want: webhook.ErrSignature},
		{name: "signature not base64", secrets: []string{newSecret}, header: func(h http.Header) { h.Set(webhook.HeaderSignature, "v1,%%%") }, want: webhook.ErrSignature},
		{name: "truncated signature", secrets: []string{newSecret}, header: func(h http.Header) { h.Set(webhook.HeaderSignature, sign(newSecret)[:20]) }, want: webhook.ErrSignature},
		{name: "junk entries before a good one are skipped", secrets: []string{newSecret}, header: func(h http.Header) {
			h.Set(webhook.HeaderSignature, "garbage v2,abc v1,%%%  "+sign(newSecret))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := webhook.NewVerifier(tt.secrets...)
			require.NoError(t, err)
			v.Now = func() time.Time { return sent.Add(tt.receive) }
			h := headers("msg_1", sent, both)
			if tt.header != nil {
				tt.header(h)
			}
			b := body
			if tt.body != "" {
				b = []byte(tt.body)
			}
			err = v.Verify(h, b)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			if tt.wantText != "" {
				require.ErrorContains(t, err, tt.wantText)
			}
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	t.Parallel()
	secret := webhook.NewSecret()
	sent := time.Unix(1_800_000_000, 0)
	sig, err := webhook.Sign(secret, "m", sent, nil)
	require.NoError(t, err)
	v, err := webhook.NewVerifier(secret)
	require.NoError(t, err)
	v.Tolerance = time.Minute
	v.Now = func() time.Time { return sent.Add(90 * time.Second) }
	require.ErrorIs(t, v.Verify(headers("m", sent, sig), nil), webhook.ErrTimestamp)
	v.Now = func() time.Time { return sent.Add(59 * time.Second) }
	require.NoError(t, v.Verify(headers("m", sent, sig), nil))
}
