//go:build chaos

package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Scenario 5: 30 % of upstream calls fail (429 with retry-after, 529, 500,
// timeouts, connection resets, and 400s, which must not be retried) on
// three nodes, and one node dies a third of the way in. Every job ends
// within a stated bound; no retry comes before a retry-after; a 400 ends
// its job at once; the calls per success are reported.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	const bound = 3 * time.Minute
	c := newCluster(t, clusterOptions{Nodes: 3,
		Sim: simOptions{Latency: 100 * time.Millisecond, Jitter: 200 * time.Millisecond, FaultRate: 0.3,
			Faults: "429,529,500,timeout,reset,400", RetryAfter: time.Second, Timeout: 3 * time.Second},
		// The passive breaker counts failures, not their share: at the
		// default (5 in 30 s) every node here is ejected within seconds,
		// again and again, and jobs mostly wait out its cooldowns; so it is
		// off here, and the dead node is found by the scheduler's probes.
		// A 429 cools its node down for its retry-after; with every node
		// cooling or dead an attempt finds no healthy node and waits
		// (CLAUDEQ_NO_UPSTREAM_WAIT) without using a retry. 20 retries: 30 %
		// faults on the surviving two nodes.
		Env: map[string]string{"CLAUDEQ_UPSTREAM_TIMEOUT": "2s", "CLAUDEQ_NODE_FAILURES": "1000", "CLAUDEQ_HEALTH_INTERVAL": "2s",
			"CLAUDEQ_JOB_MAX_RETRIES": "20"}})
	c.startAPI()
	c.startScheduler()
	c.startWorker(scaled(30, 100))
	c.startWorker(scaled(30, 100))
	s := newSubmitter("upstream-faults", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)

	d := scaled(10*time.Second, 30*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(context.Background(), scaled(30.0, 50.0), d, 128)
	}()
	time.Sleep(d / 3)
	c.sims[2].kill()
	<-done

	a := c.account(s, bound+time.Minute)
	c.requireRunning()
	jobs, err := c.jobs(context.Background())
	require.NoError(t, err)
	var longest time.Duration
	for _, j := range jobs {
		longest = max(longest, j.FinishedAt.Sub(j.CreatedAt))
	}
	record(t, "longest time from submit to end", "%.1f s (bound %v: at most 21 counted attempts, each cut at 2 s, each retry after at most 2 s of backoff or retry-after + 1 s, plus the waits for a healthy node, which count none)", secs(longest), bound)
	require.Less(t, longest, bound)
	record(t, "upstream calls", "%d: %v", a.Calls, a.CallsBy)
	record(t, "upstream calls per success", "%.2f", a.CallsPerSuccess())
	record(t, "accounting", "%s", a)
	// The simulators drew 400s for some calls: each ended its job at once
	// (invalid_request_error), and no other kind of failure is left after
	// the retries.
	require.Equal(t, a.CallsBy["400"], a.FailedBy["invalid_request_error"], "one failed job per 400: %v", a.FailedBy)
	// Any other failure is a transient one that outlasted every retry,
	// never an early give-up.
	const maxRetries = 20
	transient := 0
	for _, j := range jobs {
		if j.Status != claudeq.StatusFailed || j.Error == nil || j.Error.Type == "invalid_request_error" {
			continue
		}
		transient++
		require.Equal(t, maxRetries+1, j.Attempts, "job %s failed with %s after %d attempts: only a 400 ends a job before its retries are used up", j.ID, j.Error.Type, j.Attempts)
	}
	record(t, "jobs failed on transient errors after all 21 attempts", "%d of %d (%.1f %%): %v", transient, a.Accepted, 100*float64(transient)/float64(a.Accepted), a.FailedBy)
}
