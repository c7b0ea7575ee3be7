package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
)

func TestSubmitPollSucceeds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")

	id := submit(t, base, key, map[string]any{"prompt": "Explain queues in one line", "model": "haiku", "max_tokens": 300,
		"temperature": 0.2, "system": "Be brief.", "metadata": map[string]any{"ticket": "T-1"}})
	j := wait(t, base, key, id, 15*time.Second)

	require.Equal(t, "succeeded", j["status"])
	require.Equal(t, "claude-haiku-5-5", j["model"])
	require.Equal(t, false, j["cached"])
	require.Contains(t, j["text"], "Simulated reply to: Explain queues in one line")
	res := j["result"].(map[string]any)
	require.Equal(t, "message", res["type"])
	require.Equal(t, "assistant", res["role"])
	usage := j["usage"].(map[string]any)
	require.Greater(t, usage["output_tokens"].(float64), 0.0)
	require.Greater(t, usage["input_tokens"].(float64), 0.0)
	require.Equal(t, map[string]any{"ticket": "T-1"}, j["metadata"])
	for _, f := range []string{"created_at", "started_at", "finished_at"} {
		require.NotNil(t, j[f], f)
	}
	require.Nil(t, j["error"])

	// The worker persisted the job and its conversation with the original
	// design's fields.
	require.EqualValues(t, 1, e.count("jobs", bson.D{{Key: "_id", Value: id}}))
	convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "job_ids", Value: id}})
	require.NoError(t, err)
	require.Len(t, convs, 1)
	c := convs[0]
	require.Equal(t, "alice", c.UserID)
	require.Equal(t, "claude-haiku-5-5", c.ModelUsed)
	require.Len(t, c.Messages, 2)
	require.Equal(t, "user", c.Messages[0].Role)
	require.Equal(t, "Explain queues in one line", c.Messages[0].Content)
	require.Equal(t, "assistant", c.Messages[1].Role)
	require.Equal(t, j["text"], c.Messages[1].Content)
	require.EqualValues(t, usage["input_tokens"].(float64)+usage["output_tokens"].(float64), c.TokensConsumed)
	require.False(t, c.CreatedAt.IsZero())
	require.False(t, c.UpdatedAt.IsZero())
}

func TestCacheAnswersRepeatsAtSubmit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	alice, _ := e.key("alice", "research")
	bob, _ := e.key("bob", "research")
	body := map[string]any{"prompt": "What is 2+2?", "model": "sonnet"}

	first := wait(t, base, alice, submit(t, base, alice, body), 15*time.Second)
	require.Equal(t, "succeeded", first["status"])
	calls := e.sim.Stats().Requests

	// Same user, same canonical request (keys in another order): a cache hit
	// at submit, no upstream call.
	r := do(t, "POST", base+"/api/claude/chat", alice, `{"model":"sonnet","prompt":"What is 2+2?"}`)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	hit := r.json(t)
	require.Equal(t, "succeeded", hit["status"])
	require.Equal(t, true, hit["cached"])
	require.Equal(t, first["text"], hit["text"])
	require.Equal(t, calls, e.sim.Stats().Requests)
	// The cached job can be polled like any other.
	polled := do(t, "GET", base+"/api/claude/jobs/"+hit["id"].(string), alice, nil).json(t)
	require.Equal(t, true, polled["cached"])
	require.Equal(t, first["text"], polled["text"])

	// Another parameter is another request.
	submit(t, base, alice, map[string]any{"prompt": "What is 2+2?", "model": "sonnet", "max_tokens": 77})
	// Another tenant never sees alice's cache.
	submit(t, base, bob, body)
	// Opting out.
	optOut := submit(t, base, alice, map[string]any{"prompt": "What is 2+2?", "model": "sonnet", "cache": false})
	noCache := submit(t, base, alice, body, "Cache-Control", "no-cache")
	// no-cache still stores its answer: let both finish before the purge,
	// or the purged entry can come back after it.
	wait(t, base, alice, optOut, 15*time.Second)
	wait(t, base, alice, noCache, 15*time.Second)

	// Dropping alice's entries makes the next identical request go upstream.
	d := do(t, "DELETE", base+"/api/claude/cache", alice, nil)
	require.Equal(t, http.StatusOK, d.Status, "%s", d.Body)
	require.GreaterOrEqual(t, d.json(t)["deleted"].(float64), 1.0)
	submit(t, base, alice, body)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")
	body := map[string]any{"prompt": "idempotent", "model": "haiku"}

	id1 := submit(t, base, key, body, "Idempotency-Key", "order-42")
	r := do(t, "POST", base+"/api/claude/chat", key, body, "Idempotency-Key", "order-42")
	require.Contains(t, []int{http.StatusAccepted, http.StatusOK}, r.Status, "%s", r.Body)
	require.Equal(t, id1, r.json(t)["id"])
	wait(t, base, key, id1, 15*time.Second)
	r = do(t, "POST", base+"/api/claude/chat", key, body, "Idempotency-Key", "order-42")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, id1, r.json(t)["id"])
	require.Equal(t, "succeeded", r.json(t)["status"])

	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "something else", "model": "haiku"}, "Idempotency-Key", "order-42")
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "idempotency_error", "different request body")
	require.EqualValues(t, 1, e.sim.Stats().Requests)
}

func TestAnalyze(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")
	r := do(t, "POST", base+"/api/claude/analyze", key, map[string]any{"content": "The launch slipped two weeks.", "task": "summarize", "instructions": "One sentence."})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	j := wait(t, base, key, r.json(t)["id"].(string), 15*time.Second)
	require.Equal(t, "succeeded", j["status"])
	require.Equal(t, "analyze", j["kind"])
	require.Contains(t, j["text"], "The launch slipped two weeks")

	r = do(t, "POST", base+"/api/claude/analyze", key, map[string]any{"content": "x", "task": "translate"})
	require.Equal(t, http.StatusBadRequest, r.Status)
	requireErrorShape(t, r, "invalid_request_error", "task:")
}

func TestSessionTurnsShareOneConversation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")
	id1 := submit(t, base, key, map[string]any{"prompt": "first turn", "session_id": "s-1"})
	wait(t, base, key, id1, 15*time.Second)
	id2 := submit(t, base, key, map[string]any{"session_id": "s-1", "messages": []map[string]any{
		{"role": "user", "content": "first turn"}, {"role": "assistant", "content": "ok"},
		{"role": "user", "content": []map[string]any{{"type": "text", "text": "second turn"}}}}})
	wait(t, base, key, id2, 15*time.Second)

	convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "session_id", Value: "s-1"}})
	require.NoError(t, err)
	require.Len(t, convs, 1)
	c := convs[0]
	require.Equal(t, []string{id1, id2}, c.JobIDs)
	require.Len(t, c.Messages, 4)
	require.Equal(t, "first turn", c.Messages[0].Content)
	require.Equal(t, "second turn", c.Messages[2].Content)
}

func TestCancelQueuedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true}) // no worker yet: the job stays queued
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	other, _ := e.key("mallory", "elsewhere")
	id := submit(t, base, key, map[string]any{"prompt": "cancel me"})

	// Another user sees neither the job nor a way to cancel it.
	require.Equal(t, http.StatusNotFound, do(t, "GET", base+"/api/claude/jobs/"+id, other, nil).Status)
	require.Equal(t, http.StatusNotFound, do(t, "DELETE", base+"/api/claude/jobs/"+id, other, nil).Status)

	r := do(t, "DELETE", base+"/api/claude/jobs/"+id, key, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, "canceled", r.json(t)["status"])
	r = do(t, "DELETE", base+"/api/claude/jobs/"+id, key, nil)
	require.Equal(t, http.StatusConflict, r.Status)

	e.run(app.Roles{Worker: true})
	require.Eventually(t, func() bool {
		return e.count("jobs", bson.D{{Key: "_id", Value: id}, {Key: "status", Value: "canceled"}}) == 1
	},
		10*time.Second, 50*time.Millisecond)
	j := do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)
	require.Equal(t, "canceled", j["status"])
	require.EqualValues(t, 0, e.sim.Stats().Requests, "a canceled job never reaches the upstream")
	require.Equal(t, http.StatusNotFound, do(t, "GET", base+"/api/claude/jobs/job_doesnotexist", key, nil).Status)
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A high failure threshold keeps the only node in rotation: this test is
	// about the job's retries, not about node health.
	base := e.all("CLAUDEQ_JOB_MAX_RETRIES", "3", "CLAUDEQ_NODE_FAILURES", "100")
	key, _ := e.key("alice", "research")

	// Transient failures are retried until the upstream answers.
	e.sim.Script("429", "529", "500")
	j := wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "flaky"}), 30*time.Second)
	require.Equal(t, "succeeded", j["status"], "%v", j)
	require.EqualValues(t, 4, j["attempts"])

	// An upstream 400 fails the job at once with the upstream's error.
	e.sim.Script("400")
	j = wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "bad for upstream"}), 15*time.Second)
	require.Equal(t, "failed", j["status"])
	require.EqualValues(t, 1, j["attempts"])
	jerr := j["error"].(map[string]any)
	require.Equal(t, "invalid_request_error", jerr["type"])
	require.Contains(t, jerr["message"], "upstream 400")

	// Retries run out: the job ends failed with a clear error, never stuck.
	e.sim.Script("529", "529", "529", "529")
	j = wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "always overloaded"}), 30*time.Second)
	require.Equal(t, "failed", j["status"])
	require.EqualValues(t, 4, j["attempts"])
	require.Equal(t, "overloaded_error", j["error"].(map[string]any)["type"])
	require.True(t, strings.HasPrefix(j["error"].(map[string]any)["message"].(string), "upstream 529"))
}

func requireErrorShape(t *testing.T, r response, typ, msgContains string) {
	t.Helper()
	m := r.json(t)
	require.Equal(t, "error", m["type"], "%s", r.Body)
	e := m["error"].(map[string]any)
	require.Equal(t, typ, e["type"], "%s", r.Body)
	require.Contains(t, e["message"], msgContains)
	require.True(t, strings.HasPrefix(m["request_id"].(string), "req_"))
	require.Equal(t, m["request_id"], r.Header.Get("request-id"))
	require.NotContains(t, string(r.Body), "goroutine")
}

func TestEveryNodeDownEndsFailedWithNoHealthyUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for range 50 {
		e.sim.Script("529", "500") // every call fails
	}
	// Attempts that find no healthy node wait 3 s without using a retry,
	// then count (CLAUDEQ_NO_UPSTREAM_WAIT).
	base := e.all("CLAUDEQ_JOB_MAX_RETRIES", "4", "CLAUDEQ_NODE_FAILURES", "2", "CLAUDEQ_NODE_COOLDOWN", "2s",
		"CLAUDEQ_UPSTREAM_TIMEOUT", "2s", "CLAUDEQ_NO_UPSTREAM_WAIT", "3s")
	key, _ := e.key("alice", "research")
	j := wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "nobody answers"}), 90*time.Second)
	require.Equal(t, "failed", j["status"])
	jerr := j["error"].(map[string]any)
	require.Equal(t, "no_healthy_upstream", jerr["type"], "%v", jerr)
	require.Contains(t, jerr["message"], "no healthy upstream for model claude-sonnet-5-5")
}

// A fleet with no healthy node for a while (here the only node, ejected
// for 3 s after one failure) makes jobs wait for it without using up their
// retries: with one retry, the job below would otherwise end
// no_healthy_upstream on its second attempt.
func TestNoHealthyNodeWaitsWithoutUsingRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all("CLAUDEQ_JOB_MAX_RETRIES", "1", "CLAUDEQ_NODE_FAILURES", "1", "CLAUDEQ_NODE_COOLDOWN", "3s")
	key, _ := e.key("alice", "research")
	e.sim.Script("500")
	j := wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "waits for its node"}), 60*time.Second)
	require.Equal(t, "succeeded", j["status"], "%v", j)
	require.EqualValues(t, 2, j["attempts"], "the 500 used the one retry; the waits used none")
	require.EqualValues(t, 2, e.sim.Stats().Requests, "no call while the node was ejected")
}
