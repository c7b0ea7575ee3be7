//go:build chaos

package chaos

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// apiURLs returns the base URLs of the cluster's api processes.
func (c *cluster) apiURLs() []string {
	out := make([]string, len(c.apis))
	for i, r := range c.apis {
		out[i] = r.URL()
	}
	return out
}

// waitActive waits until at least n jobs run at once (asynq's active
// list of the default queue) and returns how many do. On a timeout it
// says the most it saw, the last Redis error and what the clients got.
func (c *cluster) waitActive(n int, within time.Duration, s *submitter) int {
	c.t.Helper()
	rdb := c.redis.Client(c.t)
	var most int64
	var lastErr error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		v, err := rdb.LLen(context.Background(), "asynq:{default}:active").Result()
		if err != nil {
			lastErr = err
			continue
		}
		if v >= int64(n) {
			return int(v)
		}
		most = max(most, v)
	}
	c.t.Fatalf("never %d jobs run at once within %v (the most: %d; last Redis error: %v); clients: %s", n, within, most, lastErr, s.summary())
	return 0
}

// reruns returns the finish times, relative to at, of the jobs that needed
// more than one attempt, sorted.
func reruns(jobs map[string]*claudeq.Job, at time.Time) []time.Duration {
	var out []time.Duration
	for _, j := range jobs {
		if j.Attempts > 1 && j.FinishedAt != nil {
			out = append(out, j.FinishedAt.Sub(at))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func secs(d time.Duration) float64 { return d.Seconds() }

// Scenario 1: kill -9 one of two workers while it has many jobs in flight
// (handlers taking 4–8 s, long enough for the workers to fill up on a
// loaded machine before the first jobs end), restart it 5 s later. Nothing is lost or billed
// twice; the killed worker's jobs come back when their asynq lease has
// expired.
func TestKillOneWorker(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Sim: simOptions{Latency: 4 * time.Second, Jitter: 4 * time.Second}})
	c.startAPI()
	c.startScheduler()
	conc := scaled(50, 500)
	w0 := c.startWorker(conc)
	c.startWorker(conc)
	s := newSubmitter("kill-one-worker", []user{c.user("alice", "research")}, c.apiURLs)

	n := scaled(200, 1000)
	// The jobs are queued first and then let go at once, so that both
	// workers fill up whatever the machine's speed (submitting while the
	// 1–3 s jobs already finish could stay below the mark on a slow day).
	insp := asynq.NewInspectorFromRedisClient(c.redis.Client(t))
	require.NoError(t, insp.PauseQueue("default"))
	s.count(context.Background(), n, 32)
	require.NoError(t, insp.UnpauseQueue("default"))
	// Both workers are full: half of the jobs in flight are the first's.
	inflight := c.waitActive(min(n, 2*conc)*8/10, 2*time.Minute, s)
	killedAt := time.Now()
	w0.kill()
	record(t, "jobs in flight when the worker was killed", "%d in both workers, %d submitted in all", inflight, n)
	time.Sleep(5 * time.Second)
	w0.start()

	a := c.account(s, 5*time.Minute)
	t.Log(a)
	require.Equal(t, n, a.Accepted, s.summary())
	require.Zero(t, a.Failed, "no job fails: %v", a.FailedBy)
	jobs, err := c.jobs(context.Background())
	require.NoError(t, err)
	rr := reruns(jobs, killedAt)
	require.NotEmpty(t, rr, "the killed worker's jobs ran again")
	record(t, "jobs re-run after the kill", "%d: the killed worker's jobs in flight", len(rr))
	record(t, "recovery time", "the re-run jobs finished %.0f–%.0f s after the kill (asynq lease 30 s + 30 s expiry margin + recoverer tick ≤ 60 s)",
		secs(rr[0]), secs(rr[len(rr)-1]))
	record(t, "upstream calls per success", "%.3f (%d calls, %d succeeded)", a.CallsPerSuccess(), a.Calls, a.Succeeded)
	record(t, "accounting", "%s", a)
}

// Scenario 2: kill -9 every worker while they are full, keep submitting
// while none runs, restart them later (20 s; 5 min at full scale):
// everything completes, nothing is billed twice.
func TestKillAllWorkers(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Webhooks: true, Sim: simOptions{Latency: 4 * time.Second, Jitter: 4 * time.Second}})
	c.startAPI()
	c.startScheduler()
	conc := scaled(30, 250)
	ws := []*role{c.startWorker(conc), c.startWorker(conc)}
	s := newSubmitter("kill-all-workers", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)
	s.webhook = c.hooks.URL()

	n := scaled(150, 1000)
	s.count(context.Background(), n, 32)
	inflight := c.waitActive(min(n, 2*conc)*8/10, 2*time.Minute, s)
	killedAt := time.Now()
	for _, w := range ws {
		w.kill()
	}
	// Jobs submitted while no worker runs wait in the queue.
	s.count(context.Background(), n/3, 16)
	time.Sleep(scaled(20*time.Second, 5*time.Minute) - time.Since(killedAt))
	restartedAt := time.Now()
	for _, w := range ws {
		w.start()
	}

	a := c.account(s, 5*time.Minute)
	c.requireRunning()
	require.Equal(t, n+n/3, a.Accepted, s.summary())
	require.Zero(t, a.Failed, "no job fails: %v", a.FailedBy)
	record(t, "downtime", "%d jobs in flight and %d queued when both workers were killed; restarted %.0f s later", inflight, n-inflight+n/3, secs(restartedAt.Sub(killedAt)))
	record(t, "restart to last job finished", "%.0f s (in-flight jobs come back when their lease has expired: up to ~60 s after the restart when it comes within a minute of the kill)",
		secs(c.lastFinish(s.ids()).Sub(restartedAt)))
	record(t, "accounting", "%s", a)
}
