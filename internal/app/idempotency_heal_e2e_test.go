package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/queue"
)

// An api killed between the two steps of a submit (the job's state is
// written, its task not yet enqueued) left a job that the client's retry
// with the same Idempotency-Key answered 202 "queued" and that never ran
// (found by the chaos suite, kill -9 of the api). The retry now puts the
// missing task back: one job, and it runs.
func TestIdempotentRetryHealsJobWhoseTaskIsMissing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true})
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	body := map[string]any{"prompt": "submitted just before the api died"}
	id := submit(t, base, key, body, "Idempotency-Key", "crash-1")

	// What the crash leaves: the state says queued, the queue has no task.
	require.NoError(t, asynq.NewInspectorFromRedisClient(e.redis.Client(t)).DeleteTask(queue.Default, id))

	r := do(t, "POST", base+"/api/claude/chat", key, body, "Idempotency-Key", "crash-1")
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	require.Equal(t, id, r.json(t)["id"])
	require.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))

	e.run(app.Roles{Worker: true})
	require.Equal(t, "succeeded", wait(t, base, key, id, 30*time.Second)["status"])
	e.requireBilledOnce(t, []string{id})
	require.EqualValues(t, 1, e.sim.Stats().Requests)
}
