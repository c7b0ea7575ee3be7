package app_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
)

// A load the workers cannot take is shed at the door: once
// CLAUDEQ_MAX_QUEUED_JOBS jobs wait, submits get 503 with Retry-After
// (before, the queue grew until Redis was full), a replayed
// Idempotency-Key is still answered, and the api accepts again once the
// workers have drained the queue.
func TestFullQueueShedsSubmits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_MAX_QUEUED_JOBS", "3")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	var ids []string
	for i := range 3 {
		ids = append(ids, submit(t, base, key, map[string]any{"prompt": fmt.Sprintf("queued %d", i)}, "Idempotency-Key", fmt.Sprintf("k%d", i)))
	}
	var refused response
	for i := 0; refused.Status == 0; i++ {
		require.Less(t, i, 100, "the api keeps accepting with a full queue")
		r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": fmt.Sprintf("more %d", i)})
		switch r.Status {
		case http.StatusAccepted: // the api's view of the queue is up to 100 ms old
			ids = append(ids, r.json(t)["id"].(string))
			time.Sleep(20 * time.Millisecond)
		case http.StatusServiceUnavailable:
			refused = r
		default:
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
	}
	requireErrorShape(t, refused, "service_unavailable", "too many jobs are waiting")
	require.Equal(t, "5", refused.Header.Get("Retry-After"))

	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "queued 0"}, "Idempotency-Key", "k0")
	require.Equal(t, http.StatusAccepted, r.Status, "a replay is answered: %s", r.Body)
	require.Equal(t, ids[0], r.json(t)["id"])

	e.run(app.Roles{Worker: true})
	for _, id := range ids {
		require.Equal(t, "succeeded", wait(t, base, key, id, 30*time.Second)["status"])
	}
	require.Eventually(t, func() bool {
		return do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "after the drain"}).Status == http.StatusAccepted
	}, 10*time.Second, 50*time.Millisecond)
}
