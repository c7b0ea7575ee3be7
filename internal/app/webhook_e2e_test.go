package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pwebhook "github.com/claudeq/claudeq/pkg/webhook"
)

// receiver is a webhook endpoint on loopback that verifies every call with
// the public verification helper, as a user's would.
type receiver struct {
	t        *testing.T
	url      string
	up       atomic.Bool
	mu       sync.Mutex
	verifier *pwebhook.Verifier
	raw      int
	byID     map[string]map[string]any
	bad      int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, byID: map[string]map[string]any{}}
	r.up.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: r}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.url = "http://" + ln.Addr().String() + "/hook"
	return r
}

func (r *receiver) setSecrets(secrets ...string) {
	v, err := pwebhook.NewVerifier(secrets...)
	require.NoError(r.t, err)
	r.mu.Lock()
	r.verifier = v
	r.mu.Unlock()
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.up.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verifier == nil || r.verifier.Verify(req.Header, body) != nil {
		r.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.raw++
	var ev map[string]any
	_ = json.Unmarshal(body, &ev)
	r.byID[req.Header.Get("webhook-id")] = ev
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) events() (unique, raw, bad int, evs map[string]map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := make(map[string]map[string]any, len(r.byID))
	for k, v := range r.byID {
		cp[k] = v
	}
	return len(r.byID), r.raw, r.bad, cp
}

func TestWebhooksSignedRetriedAndDeliveredOncePerEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rcv := newReceiver(t)
	base := e.all("CLAUDEQ_WEBHOOK_ALLOW", "http://127.0.0.1", "CLAUDEQ_WEBHOOK_SCHEDULE", "0,1s,2s,4s,8s,15s,30s,60s",
		"CLAUDEQ_WORKER_CONCURRENCY", "50", "CLAUDEQ_PUBLIC_URL", "https://claudeq.example")
	key, _ := e.key("alice", "research")

	// The SSRF policy refuses what is not allow-listed, at submit.
	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "x", "webhook_url": "http://10.0.0.1/hook"})
	require.Equal(t, http.StatusBadRequest, r.Status)
	requireErrorShape(t, r, "invalid_request_error", "webhook_url")

	sec := do(t, "GET", base+"/api/claude/webhooks/secret", key, nil)
	require.Equal(t, http.StatusOK, sec.Status, "%s", sec.Body)
	var secrets []string
	for _, s := range sec.json(t)["secrets"].([]any) {
		secrets = append(secrets, s.(string))
	}
	rcv.setSecrets(secrets...)

	// The receiver is down for a stretch while jobs finish.
	rcv.up.Store(false)
	// Down for a stretch (the first deliveries fail and are retried), then
	// up; the schedule (2 min) outlasts the stretch on a slow machine too.
	time.AfterFunc(3*time.Second, func() { rcv.up.Store(true) })
	const n = 1000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submit(t, base, key, map[string]any{"prompt": fmt.Sprintf("webhook job %d", i), "webhook_url": rcv.url})
	}
	// And one that fails: its event is job.failed.
	e.sim.Script("400")
	failedID := submit(t, base, key, map[string]any{"prompt": "fails upstream", "webhook_url": rcv.url})
	for _, id := range ids {
		wait(t, base, key, id, 3*time.Minute)
	}

	require.Eventually(t, func() bool { u, _, _, _ := rcv.events(); return u == n+1 }, 60*time.Second, 100*time.Millisecond)
	unique, raw, bad, evs := rcv.events()
	t.Logf("events: %d unique webhook-ids, %d raw deliveries (%d duplicates), %d unverifiable", unique, raw, raw-unique, bad)
	require.Zero(t, bad)
	types := map[string]int{}
	for _, ev := range evs {
		types[ev["type"].(string)]++
		data := ev["data"].(map[string]any)
		require.Contains(t, data["result_url"], "https://claudeq.example/api/claude/jobs/job_")
	}
	require.Equal(t, map[string]int{"job.succeeded": n, "job.failed": 1}, types)

	// Every attempt is recorded and listed; a redelivery keeps the webhook-id.
	atts := do(t, "GET", base+"/api/claude/jobs/"+ids[0]+"/webhooks", key, nil)
	require.Equal(t, http.StatusOK, atts.Status, "%s", atts.Body)
	list := atts.json(t)["data"].([]any)
	require.GreaterOrEqual(t, len(list), 2, "at least one failed attempt while the receiver was down, then a success")
	last := list[len(list)-1].(map[string]any)
	require.EqualValues(t, 204, last["status"])
	require.NotEmpty(t, last["delivery_id"])
	rd := do(t, "POST", base+"/api/claude/jobs/"+failedID+"/webhooks/redeliver", key, nil)
	require.Equal(t, http.StatusAccepted, rd.Status, "%s", rd.Body)
	require.Eventually(t, func() bool { _, r2, _, _ := rcv.events(); return r2 > raw }, 10*time.Second, 50*time.Millisecond)
	u2, _, _, _ := rcv.events()
	require.Equal(t, unique, u2, "a redelivery has the same webhook-id")
}

func TestWebhookGoneDisablesTheKeysDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var hits atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusGone)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + ln.Addr().String() + "/gone"

	base := e.all("CLAUDEQ_WEBHOOK_ALLOW", "http://127.0.0.1", "CLAUDEQ_WEBHOOK_SCHEDULE", "0,200ms,200ms")
	admin, _ := e.key("root", "ops", "admin")
	r := do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "u", "department": "d", "webhook_url": url})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	key := r.json(t)["key"].(string)
	keyID := r.json(t)["data"].(map[string]any)["id"].(string)

	wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "one"}), 15*time.Second)
	require.Eventually(t, func() bool {
		k, err := e.store.Key(t.Context(), keyID)
		return err == nil && k.WebhookURL == ""
	}, 10*time.Second, 50*time.Millisecond, "410 disables the key's default webhook")
	require.EqualValues(t, 1, hits.Load(), "a 410 is not retried")
	wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "two"}), 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	require.EqualValues(t, 1, hits.Load(), "the disabled endpoint is not called again")
}
