package app_test

import (
	"context"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/store"
)

func TestJobsAreBilledOnceAndShownInUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")

	est := do(t, "POST", base+"/api/claude/estimate", key, map[string]any{"prompt": "Price me", "model": "opus", "max_tokens": 1000})
	require.Equal(t, http.StatusOK, est.Status, "%s", est.Body)
	// Worst case: 1,000 output tokens of opus at $20/MTok is at least $0.02.
	require.GreaterOrEqual(t, est.json(t)["estimated_cost_usd"].(float64), 0.02)

	id := submit(t, base, key, map[string]any{"prompt": "Price me", "model": "opus", "max_tokens": 1000})
	j := wait(t, base, key, id, 15*time.Second)
	require.Equal(t, "succeeded", j["status"])
	cost := j["cost_usd"].(float64)
	u := j["usage"].(map[string]any)
	want := (u["input_tokens"].(float64)*4 + u["output_tokens"].(float64)*20) / 1e6
	require.InDelta(t, want, cost, 2e-6, "opus-5-5: $4 in / $20 out per million tokens")

	var entry store.LedgerEntry
	require.NoError(t, e.db.Collection("ledger").FindOne(t.Context(), bson.D{{Key: "_id", Value: id}}).Decode(&entry))
	require.InDelta(t, cost, float64(entry.CostMicros)/1e6, 1e-9)

	q := do(t, "GET", base+"/api/claude/quota", key, nil).json(t)
	var userScope map[string]any
	for _, sc := range q["data"].([]any) {
		if m := sc.(map[string]any); m["scope"] == "user" {
			userScope = m
		}
	}
	require.NotNil(t, userScope)
	require.InDelta(t, cost, userScope["spent_usd"].(float64), 1e-9)
	require.Zero(t, userScope["reserved_usd"])

	usage := do(t, "GET", base+"/api/claude/usage?days=7", key, nil)
	require.Equal(t, http.StatusOK, usage.Status, "%s", usage.Body)
	um := usage.json(t)
	require.EqualValues(t, 1, um["requests"])
	require.InDelta(t, cost, um["cost_usd"].(float64), 1e-9)
	require.Len(t, um["daily"].([]any), 1)
	require.Equal(t, "claude-opus-5-5", um["models"].([]any)[0].(map[string]any)["model"])
}

func TestAutoModelSaysWhichAndWhy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")
	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "What is the capital of France?", "model": "auto"})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	require.Equal(t, "claude-haiku-5-5", r.Header.Get("X-Claudeq-Routed-Model"))
	require.NotEmpty(t, r.Header.Get("X-Claudeq-Route-Reason"))
	j := wait(t, base, key, r.json(t)["id"].(string), 15*time.Second)
	require.Equal(t, "claude-haiku-5-5", j["model"])
	require.NotEmpty(t, j["route_reason"])

	hard := "Prove step by step that the algorithm below is correct, compare it with two alternatives, analyze the trade-offs, and explain why each design choice matters:\n```go\nfunc f(xs []int) int { s := 0; for _, x := range xs { s += x }; return s }\n```\n1. correctness\n2. complexity\n3. failure modes\nWhy? How would you test it?"
	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": hard, "model": "auto", "max_tokens": 8000})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	require.Equal(t, "claude-opus-5-5", r.Header.Get("X-Claudeq-Routed-Model"), r.Header.Get("X-Claudeq-Route-Reason"))
}

// TestBudgetsHoldUnderConcurrency: many clients against user, department and
// total caps; spent + reserved never exceeds a cap, and once everything
// settled the spent counters equal the ledger exactly.
func TestBudgetsHoldUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all("CLAUDEQ_QUOTA_TOTAL_DAILY_USD", "0.60", "CLAUDEQ_QUOTA_DEPARTMENT_DAILY_USD", "0.40",
		"CLAUDEQ_QUOTA_USER_DAILY_USD", "0.25", "CLAUDEQ_WORKER_CONCURRENCY", "50")
	users := []string{"u0", "u1", "u2", "u3"}
	keys := map[string]string{}
	for i, u := range users {
		keys[u], _ = e.key(u, fmt.Sprintf("d%d", i%2))
	}
	q, err := quota.New(e.redis.Client(t), quota.Options{UserDaily: 250_000, DepartmentDaily: 400_000, TotalDaily: 600_000})
	require.NoError(t, err)

	// A watcher samples every budget while the load runs.
	ctx, stop := context.WithCancel(context.Background())
	var overshoot atomic.Int64
	var samples atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for i, u := range users {
				st, err := q.Status(ctx, u, fmt.Sprintf("d%d", i%2))
				if err != nil {
					continue
				}
				for _, s := range st {
					if !s.Unlimited && s.Spent+s.Reserved > s.Limit {
						overshoot.Add(int64(s.Spent + s.Reserved - s.Limit))
					}
				}
			}
			samples.Add(1)
		}
	}()

	const clients, perClient = 40, 25
	var accepted sync.Map
	var refused atomic.Int64
	var cw sync.WaitGroup
	for c := range clients {
		cw.Add(1)
		go func() {
			defer cw.Done()
			u := users[c%len(users)]
			for i := range perClient {
				r := do(t, "POST", base+"/api/claude/chat", keys[u], map[string]any{
					"prompt": fmt.Sprintf("client %d request %d", c, i), "model": "sonnet", "max_tokens": 500})
				switch r.Status {
				case http.StatusAccepted:
					accepted.Store(r.json(t)["id"].(string), u)
				case http.StatusTooManyRequests:
					require.Equal(t, "quota_exceeded", r.json(t)["error"].(map[string]any)["type"])
					refused.Add(1)
				default:
					t.Errorf("unexpected %d: %s", r.Status, r.Body)
				}
			}
		}()
	}
	cw.Wait()
	n := 0
	accepted.Range(func(k, v any) bool {
		j := wait(t, base, keys[v.(string)], k.(string), 60*time.Second)
		require.Equal(t, "succeeded", j["status"])
		n++
		return true
	})
	// Settles happen right after each job's write.
	require.Eventually(t, func() bool {
		st, err := q.Status(ctx, "u0", "d0")
		return err == nil && st[len(st)-1].Reserved == 0
	}, 10*time.Second, 50*time.Millisecond)
	stop()
	wg.Wait()
	t.Logf("%d accepted, %d refused, %d watcher samples, overshoot %d micro-USD", n, refused.Load(), samples.Load(), overshoot.Load())
	require.Zero(t, overshoot.Load())
	require.Positive(t, refused.Load(), "the caps were reached")

	tot, err := e.store.LedgerSum(context.Background(), store.LedgerFilter{})
	require.NoError(t, err)
	require.EqualValues(t, n, tot.Requests, "one ledger entry per job")
	st, err := q.Status(context.Background(), "u0", "d0")
	require.NoError(t, err)
	for _, s := range st {
		if s.Scope == quota.ScopeTotal && s.Period == quota.PeriodDaily {
			require.EqualValues(t, tot.CostMicros, s.Spent, "spent equals the ledger sum exactly")
			require.Zero(t, s.Reserved)
		}
	}
}

func TestQuotaRefusalSaysWhichBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")
	admin, _ := e.key("root", "ops", "admin")
	r := do(t, "PUT", base+"/admin/quotas/user/alice", admin, map[string]any{"daily_usd": "0.001"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.InDelta(t, 0.001, r.json(t)["daily_usd"].(float64), 1e-9)
	g := do(t, "GET", base+"/admin/quotas/user/alice", admin, nil)
	require.Equal(t, true, g.json(t)["daily_override"])
	for _, v := range []any{"0.1058295", 0.1058295} {
		bad := do(t, "PUT", base+"/admin/quotas/user/alice", admin, map[string]any{"daily_usd": v})
		require.Equal(t, http.StatusBadRequest, bad.Status, "%s", bad.Body)
		requireErrorShape(t, bad, "invalid_request_error", "daily_usd: 0.1058295 has more than 6 decimal places")
	}
	bad := do(t, "PUT", base+"/admin/quotas/user/alice", admin, map[string]any{"daily_usd": "-1"})
	requireErrorShape(t, bad, "invalid_request_error", "at most 6 decimal places")

	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "too expensive", "model": "opus", "max_tokens": 4000})
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "quota_exceeded", "user alice")
	qd := r.json(t)["error"].(map[string]any)["quota"].(map[string]any)
	require.Equal(t, "user", qd["scope"])
	require.InDelta(t, 0.001, qd["limit_usd"].(float64), 1e-9)
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	require.EqualValues(t, 0, e.sim.Stats().Requests)
}

func TestKeyOptionsDeferRequestsPerDayAndDefaultWebhook(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	admin, _ := e.key("root", "ops", "admin")
	mk := func(body map[string]any) string {
		r := do(t, "POST", base+"/admin/keys", admin, body)
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		return r.json(t)["key"].(string)
	}

	// requests_per_day caps submits per quota day.
	capped := mk(map[string]any{"user_id": "cap", "department": "d", "requests_per_day": 2})
	submit(t, base, capped, map[string]any{"prompt": "one"})
	submit(t, base, capped, map[string]any{"prompt": "two"})
	r := do(t, "POST", base+"/api/claude/chat", capped, map[string]any{"prompt": "three"})
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "quota_exceeded", "")

	// on_quota: defer parks an over-budget job until the budget resets,
	// and it runs (and is billed) then.
	deferKey := mk(map[string]any{"user_id": "patient", "department": "d", "on_quota": "defer"})
	require.Equal(t, http.StatusOK, do(t, "PUT", base+"/admin/quotas/user/patient", admin, map[string]any{"daily_usd": "0.000001"}).Status)
	r = do(t, "POST", base+"/api/claude/chat", deferKey, map[string]any{"prompt": "when the budget allows"})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	until, err := time.Parse(time.RFC3339, r.Header.Get("X-Claudeq-Deferred-Until"))
	require.NoError(t, err)
	require.Equal(t, time.Now().UTC().Truncate(24*time.Hour).Add(24*time.Hour), until.UTC(), "the next UTC midnight")
	id := r.json(t)["id"].(string)
	insp := asynqInspector(t, e)
	info, err := insp.GetTaskInfo("default", id)
	require.NoError(t, err)
	require.Equal(t, "scheduled", info.State.String())
	// Midnight comes early: raise the budget and run the parked job now.
	require.Equal(t, http.StatusOK, do(t, "PUT", base+"/admin/quotas/user/patient", admin, map[string]any{"daily_usd": "10"}).Status)
	require.NoError(t, insp.RunTask("default", id))
	j := wait(t, base, deferKey, id, 15*time.Second)
	require.Equal(t, "succeeded", j["status"])
	require.Positive(t, j["cost_usd"].(float64))

	// A key's default webhook is used by its jobs that name none.
	rcv := newReceiver(t)
	hookKey := mk(map[string]any{"user_id": "hooked", "department": "d", "webhook_url": "https://hooks.example.com/claudeq"})
	r = do(t, "POST", base+"/api/claude/chat", hookKey, map[string]any{"prompt": "notify me"})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	j = wait(t, base, hookKey, r.json(t)["id"].(string), 15*time.Second)
	_ = rcv
	jr := do(t, "GET", base+"/api/claude/jobs/"+j["id"].(string)+"/webhooks", hookKey, nil).json(t)
	require.Equal(t, "https://hooks.example.com/claudeq", jr["webhook_url"])
}

// An interactive request whose api died after writing its ledger entry but
// before settling leaves a reservation with no job: the reconciler settles
// it to the ledger's cost; one with no ledger entry either is released.
func TestReconcilerSettlesAnInteractiveReservationFromTheLedger(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run(app.Roles{Worker: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_QUOTA_RECONCILE_AFTER", "1s")
	ctx := context.Background()
	q, err := quota.New(e.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	require.NoError(t, q.Reserve(ctx, quota.Reservation{JobID: "req_billed", UserID: "alice", Department: "research", Amount: 50_000}))
	require.NoError(t, q.Reserve(ctx, quota.Reservation{JobID: "req_unbilled", UserID: "alice", Department: "research", Amount: 70_000}))
	c := e.store.NewCommitter(store.CommitterOptions{})
	defer c.Close()
	require.NoError(t, c.Commit(ctx, store.Record{Ledger: &store.LedgerEntry{ID: "req_billed", JobID: "req_billed", UserID: "alice",
		Department: "research", Model: "claude-haiku-4-5", Usage: claudeq.Usage{InputTokens: 10, OutputTokens: 20},
		CostMicros: 1234, Day: q.Day(time.Now()), At: time.Now().UTC(), Interactive: true}}))

	require.Eventually(t, func() bool {
		st, err := q.Status(ctx, "alice", "research")
		if err != nil {
			return false
		}
		for _, s := range st {
			if s.Scope == quota.ScopeUser && s.Period == quota.PeriodDaily {
				return s.Reserved == 0 && int64(s.Spent) == 1234
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond, "the billed reservation settles to the ledger's 1234, the other is released")
}

// billed writes the ledger entry of an attempt of job id that was answered
// and billed (cost micro-dollars) although the job did not finish.
func (e *testEnv) billed(t *testing.T, q *quota.Quota, id, user, dept string, cost int64) {
	t.Helper()
	c := e.store.NewCommitter(store.CommitterOptions{})
	defer c.Close()
	require.NoError(t, c.Commit(context.Background(), store.Record{Ledger: &store.LedgerEntry{ID: id, JobID: id, UserID: user,
		Department: dept, Model: "claude-haiku-4-5", Usage: claudeq.Usage{InputTokens: 10, OutputTokens: 20},
		CostMicros: cost, Day: q.Day(time.Now()), At: time.Now().UTC()}}))
}

// A job whose task Redis lost (writes acknowledged, then a kill without a
// durable append-only file) while its state still says queued is failed
// by the reconciler and its reservation released, instead of holding the
// user's budget forever; a queued job whose task is there is left alone.
// Only its Redis state says so: the same state is what a submit that
// failed (503) leaves behind, which must not get a record.
func TestReconcilerFailsAJobWhoseTaskWasLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	api, _ := e.run(app.Roles{API: true})
	base := "http://" + api.Addr()
	key, _ := e.key("alice", "research")
	lost := submit(t, base, key, map[string]any{"prompt": "Lost in a crash", "max_tokens": 100})
	kept := submit(t, base, key, map[string]any{"prompt": "Waiting in a long backlog", "max_tokens": 100})
	// One more whose attempt was answered and billed (its ledger entry
	// written) before the task was lost, as for a job waiting for a retry
	// after its job write failed.
	billed := submit(t, base, key, map[string]any{"prompt": "Billed, then lost", "max_tokens": 100})
	insp := asynqInspector(t, e)
	require.NoError(t, insp.DeleteTask("default", lost), "what Redis losing the enqueue looks like")
	require.NoError(t, insp.DeleteTask("default", billed))
	require.NoError(t, insp.PauseQueue("default"), "the kept job stays queued")

	q, err := quota.New(e.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	keptHold, err := q.Hold(context.Background(), kept)
	require.NoError(t, err)
	e.billed(t, q, billed, "alice", "research", 1234)
	e.run(app.Roles{Worker: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_QUOTA_RECONCILE_AFTER", "1s")

	j := wait(t, base, key, lost, 30*time.Second)
	require.Equal(t, "failed", j["status"])
	jerr := j["error"].(map[string]any)
	require.Equal(t, job.ErrQueueLost, jerr["type"])
	require.Contains(t, jerr["message"], "submit it again")
	require.Eventually(t, func() bool {
		st, err := q.Status(context.Background(), "alice", "research")
		require.NoError(t, err)
		return st[0].Reserved == keptHold.Amount && st[0].Spent == 1234
	}, 10*time.Second, 100*time.Millisecond, "only the kept job's reservation is held; the billed one settled to its ledger cost")
	jb := wait(t, base, key, billed, 10*time.Second)
	require.Equal(t, "failed", jb["status"])
	require.Equal(t, job.ErrQueueLost, jb["error"].(map[string]any)["type"])
	for _, id := range []string{lost, billed} {
		_, err := e.store.Job(context.Background(), id)
		require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err), "no store record for %s: the client may have had a 503 for it", id)
	}
	r := do(t, "GET", base+"/api/claude/jobs/"+kept, key, nil)
	require.Equal(t, "queued", r.json(t)["status"], "a queued job whose task exists is not failed")

	require.NoError(t, insp.UnpauseQueue("default"))
	require.Equal(t, "succeeded", wait(t, base, key, kept, 30*time.Second)["status"])
	// A record for the kept job only; the ledger holds its entry and the
	// billed attempt's, and the counters agree with it, nothing reserved.
	require.EqualValues(t, 1, e.count("jobs", bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: []string{kept, lost, billed}}}}}))
	tot, err := e.store.LedgerSum(context.Background(), store.LedgerFilter{})
	require.NoError(t, err)
	require.EqualValues(t, 2, tot.Requests)
	require.Eventually(t, func() bool {
		st, err := q.Status(context.Background(), "alice", "research")
		require.NoError(t, err)
		return int64(st[0].Spent) == tot.CostMicros && st[0].Reserved == 0
	}, 10*time.Second, 100*time.Millisecond, "the budget counters equal the ledger")
}

// A job whose every attempt lost its worker is failed by the reconciler
// (worker_lost); if one of those attempts was answered and billed (the
// ledger entry is written before the job record, and the worker stopped
// in between), its reservation is settled to that cost and the record
// shows it, so that the spent counters still equal the ledger.
func TestBilledJobWhoseWorkersAllDiedIsSettledNotReleased(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	api, _ := e.run(app.Roles{API: true})
	base := "http://" + api.Addr()
	key, _ := e.key("alice", "research")
	billed := submit(t, base, key, map[string]any{"prompt": "Billed, then every worker died", "max_tokens": 100})
	unbilled := submit(t, base, key, map[string]any{"prompt": "Never answered, every worker died", "max_tokens": 100})
	rdb := e.redis.Client(t)
	insp := asynqInspector(t, e)
	for _, id := range []string{billed, unbilled} {
		// What asynq does after the last attempt's worker was killed.
		require.NoError(t, rdb.HSet(context.Background(), "cq:job:"+id, "st", "running").Err())
		require.NoError(t, insp.ArchiveTask("default", id))
	}
	q, err := quota.New(rdb, quota.Options{})
	require.NoError(t, err)
	e.billed(t, q, billed, "alice", "research", 1234)
	e.run(app.Roles{Worker: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s")

	jb := wait(t, base, key, billed, 30*time.Second)
	require.Equal(t, "failed", jb["status"])
	require.Equal(t, job.ErrWorkerLost, jb["error"].(map[string]any)["type"])
	require.Contains(t, jb["error"].(map[string]any)["message"], "answered and billed")
	require.InDelta(t, 0.001234, jb["cost_usd"], 1e-9)
	ju := wait(t, base, key, unbilled, 30*time.Second)
	require.Equal(t, job.ErrWorkerLost, ju["error"].(map[string]any)["type"])
	require.NotContains(t, ju["error"].(map[string]any)["message"], "billed")
	require.Eventually(t, func() bool {
		st, err := q.Status(context.Background(), "alice", "research")
		require.NoError(t, err)
		return st[0].Reserved == 0 && st[0].Spent == 1234
	}, 10*time.Second, 100*time.Millisecond, "the billed job's reservation settled to its ledger cost, the other released")
	require.EqualValues(t, 0, e.sim.Stats().Requests)
}
