package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/task"
)

// TestMain lets the test binary double as a worker process, so that a test
// can kill -9 a real worker: with CLAUDEQ_E2E_ROLE=worker it runs the worker
// role from the environment and nothing else.
func TestMain(m *testing.M) {
	if os.Getenv("CLAUDEQ_E2E_ROLE") == "worker" {
		ctx, stop := signalContext()
		defer stop()
		if err := app.Run(ctx, app.Options{Roles: app.Roles{Worker: true}}, os.Getenv, os.Stderr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestMongoDownInWorkerRetriesWithoutSecondUpstreamCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOwnMongo())
	base := e.all("CLAUDEQ_KEY_CACHE_TTL", "10m")
	key, _ := e.key("alice", "research")
	wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "warm the key cache"}), 15*time.Second)

	e.mongoSv.Stop()
	id := submit(t, base, key, map[string]any{"prompt": "written while the store is down"})
	require.Eventually(t, func() bool { return e.sim.Stats().Requests == 2 }, 10*time.Second, 20*time.Millisecond)
	time.Sleep(2 * time.Second) // several retries happen meanwhile
	j := do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)
	require.NotEqual(t, "succeeded", j["status"], "cannot be durable while the store is down")

	e.mongoSv.Start()
	j = wait(t, base, key, id, 30*time.Second)
	require.Equal(t, "succeeded", j["status"])
	require.EqualValues(t, 2, e.sim.Stats().Requests, "the stashed answer is used; the upstream is not paid twice")
	require.EqualValues(t, 1, e.count("conversations", bson.D{{Key: "job_ids", Value: id}}))
}

func TestRedeliveredFinishedJobHasNoSecondEffect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true, Worker: true})
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	id := submit(t, base, key, map[string]any{"prompt": "run me once", "session_id": "once"})
	first := wait(t, base, key, id, 15*time.Second)
	calls := e.sim.Stats().Requests

	// What asynq does when Redis loses a completion mark: the task runs
	// again, and the job's live state still says running.
	rdb := e.redis.Client(t)
	require.NoError(t, rdb.HSet(t.Context(), "cq:job:"+id, "st", "running").Err())
	req, _ := json.Marshal(map[string]any{"model": "claude-sonnet-5-5", "max_tokens": 1024,
		"messages": []map[string]any{{"role": "user", "content": "run me once"}}})
	payload, _ := json.Marshal(job.Payload{ID: id, Kind: "chat", UserID: "alice", SessionID: "once", Request: req, CreatedAt: time.Now()})
	c := asynq.NewClientFromRedisClient(rdb)
	_, err := c.Enqueue(asynq.NewTask(queue.TypeJobRun, payload), asynq.TaskID(id), asynq.Retention(time.Hour))
	require.NoError(t, err)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		info, err := insp.GetTaskInfo(queue.Default, id)
		return err == nil && info.State == asynq.TaskStateCompleted
	}, 10*time.Second, 20*time.Millisecond)

	require.Equal(t, calls, e.sim.Stats().Requests, "no second upstream call")
	require.EqualValues(t, 1, e.count("conversations", bson.D{{Key: "job_ids", Value: id}}))
	convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "session_id", Value: "once"}})
	require.NoError(t, err)
	require.Len(t, convs, 1)
	require.Len(t, convs[0].Messages, 2, "no second turn")
	again := do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)
	require.Equal(t, "succeeded", again["status"])
	require.Equal(t, first["text"], again["text"])
}

func TestKilledWorkerLosesNoJobAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.SetLatency(1500*time.Millisecond, 0)
	a, _ := e.run(app.Roles{API: true})
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")

	// A real worker process, killed with SIGKILL in the middle of its jobs.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CLAUDEQ_E2E_ROLE=worker", "CLAUDEQ_WORKER_CONCURRENCY=10")
	for k, v := range e.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	const n = 30
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submit(t, base, key, map[string]any{"prompt": fmt.Sprintf("job %d", i), "session_id": fmt.Sprintf("s%d", i)})
	}
	// Kill once the first ten are done and the next ten are mid-call.
	require.Eventually(t, func() bool { return e.sim.Stats().Succeeded >= 10 && e.sim.Stats().InFlight >= 5 },
		30*time.Second, 10*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	killedAt := time.Now()
	before := e.sim.Stats().Requests

	// A new worker finishes the rest; the killed jobs come back when their
	// asynq lease has expired (30 s, plus asynq's 30 s grace and its 1 min
	// recovery tick).
	e.run(app.Roles{Worker: true}, "CLAUDEQ_WORKER_CONCURRENCY", "10")
	for _, id := range ids {
		j := wait(t, base, key, id, 180*time.Second)
		require.Equal(t, "succeeded", j["status"], "%v", j)
	}
	t.Logf("recovered all %d jobs %.1fs after the kill; upstream calls: %d before kill, %d total (each re-run is a job that was mid-call)",
		n, time.Since(killedAt).Seconds(), before, e.sim.Stats().Requests)
	for i, id := range ids {
		require.EqualValues(t, 1, e.count("jobs", bson.D{{Key: "_id", Value: id}}))
		convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "session_id", Value: fmt.Sprintf("s%d", i)}})
		require.NoError(t, err)
		require.Len(t, convs, 1)
		require.Equal(t, []string{id}, convs[0].JobIDs, "one turn per job")
	}
	// Only jobs that were mid-call when killed were called again.
	require.LessOrEqual(t, e.sim.Stats().Requests, int64(n+10))
}

func TestGracefulShutdownFinishesInFlightJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.SetLatency(time.Second, 0)
	a, _ := e.run(app.Roles{API: true})
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	_, stopWorker := e.run(app.Roles{Worker: true})
	ids := []string{
		submit(t, base, key, map[string]any{"prompt": "one"}),
		submit(t, base, key, map[string]any{"prompt": "two"}),
	}
	require.Eventually(t, func() bool { return e.sim.Stats().InFlight == 2 }, 10*time.Second, 10*time.Millisecond)
	stopWorker() // SIGTERM: the in-flight jobs finish before it returns
	for _, id := range ids {
		require.EqualValues(t, 1, e.count("jobs", bson.D{{Key: "_id", Value: id}, {Key: "status", Value: "succeeded"}}))
	}
}

func TestSchedulersRunRetentionOncePerPeriod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	over := []string{"CLAUDEQ_RETENTION_INTERVAL", "1s", "CLAUDEQ_RETENTION", "1s"}
	a, _ := e.run(app.Roles{API: true, Worker: true}, over...)
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	id := submit(t, base, key, map[string]any{"prompt": "short-lived"})
	wait(t, base, key, id, 15*time.Second)
	require.EqualValues(t, 1, e.count("jobs", bson.D{{Key: "_id", Value: id}}))

	start := time.Now()
	e.run(app.Roles{Scheduler: true}, over...)
	e.run(app.Roles{Scheduler: true}, over...)
	require.Eventually(t, func() bool { return e.count("jobs", bson.D{{Key: "_id", Value: id}}) == 0 },
		15*time.Second, 100*time.Millisecond, "the retention sweep deletes expired jobs")
	time.Sleep(2500 * time.Millisecond)
	periods := int(time.Now().Unix()-start.Unix()) + 1 // the periods (seconds) the schedulers lived in

	insp := asynq.NewInspectorFromRedisClient(e.redis.Client(t))
	done, err := insp.ListCompletedTasks(queue.Critical, asynq.PageSize(1000))
	require.NoError(t, err)
	seen := map[string]bool{}
	sweeps := 0
	for _, ti := range done {
		if ti.Type != task.TypeRetention {
			continue
		}
		require.False(t, seen[ti.ID])
		seen[ti.ID] = true
		sweeps++
	}
	require.NotZero(t, sweeps)
	require.LessOrEqual(t, sweeps, periods, "two schedulers, one sweep per period")
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

var _ = http.StatusOK

func TestJobWhoseWorkersAllDiedEndsFailedNotStuck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_WEBHOOK_ALLOW", "http://127.0.0.1")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	rcv := newReceiver(t)
	sec := do(t, "GET", base+"/api/claude/webhooks/secret", key, nil)
	require.Equal(t, http.StatusOK, sec.Status, "%s", sec.Body)
	rcv.setSecrets(sec.json(t)["secrets"].([]any)[0].(string))
	id := submit(t, base, key, map[string]any{"prompt": "doomed", "webhook_url": rcv.url})

	// What asynq does after the last attempt's worker was killed: the task
	// is archived while the job's state still says running.
	rdb := e.redis.Client(t)
	require.NoError(t, rdb.HSet(t.Context(), "cq:job:"+id, "st", "running").Err())
	require.NoError(t, asynq.NewInspectorFromRedisClient(rdb).ArchiveTask(queue.Default, id))

	e.run(app.Roles{Worker: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_WEBHOOK_ALLOW", "http://127.0.0.1")
	j := wait(t, base, key, id, 15*time.Second)
	require.Equal(t, "failed", j["status"])
	require.Equal(t, job.ErrWorkerLost, j["error"].(map[string]any)["type"])
	require.EqualValues(t, 0, e.sim.Stats().Requests)
	// The job's webhook says so too.
	require.Eventually(t, func() bool { u, _, _, _ := rcv.events(); return u == 1 }, 15*time.Second, 50*time.Millisecond)
	_, _, bad, evs := rcv.events()
	require.Zero(t, bad)
	require.Len(t, evs, 1)
	var ev map[string]any
	for _, ev = range evs {
	}
	require.Equal(t, "job.failed", ev["type"])
	data := ev["data"].(map[string]any)
	require.Equal(t, id, data["job_id"])
	require.Equal(t, job.ErrWorkerLost, data["error"].(map[string]any)["type"])
}
