package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
)

// requireBilledOnce checks the accounting of finished jobs: one job record
// and one ledger entry per job, and the budgets' spent equal to the ledger
// with nothing left reserved.
func (e *testEnv) requireBilledOnce(t *testing.T, ids []string, failed ...string) {
	t.Helper()
	in := func(ids []string) bson.D { return bson.D{{Key: "$in", Value: ids}} }
	all := append(slices.Clone(ids), failed...)
	require.EqualValues(t, len(all), e.count("jobs", bson.D{{Key: "_id", Value: in(all)}}), "one record per job")
	require.EqualValues(t, len(ids), e.count("ledger", bson.D{{Key: "job_id", Value: in(ids)}}), "one ledger entry per success")
	if len(failed) > 0 {
		require.EqualValues(t, 0, e.count("ledger", bson.D{{Key: "job_id", Value: in(failed)}}), "a failed job is not billed")
	}
	tot, err := e.store.LedgerSum(context.Background(), store.LedgerFilter{})
	require.NoError(t, err)
	require.EqualValues(t, len(ids), tot.Requests)
	q, err := quota.New(e.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := q.Status(context.Background(), "alice", "research")
		if err != nil {
			return false
		}
		for _, s := range st {
			if s.Scope == quota.ScopeTotal && s.Period == quota.PeriodDaily {
				return int64(s.Spent) == tot.CostMicros && s.Reserved == 0
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond, "spent equals the ledger (%d micro-USD) and nothing stays reserved", tot.CostMicros)
}

func TestThirtyPercentUpstreamFaultsThreeNodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, nodes := e.withNodes(3, sim.Config{FaultRate: 0.3, Faults: []string{"429", "529", "500", "timeout", "reset"},
		Timeout: 3 * time.Second, RetryAfter: time.Second})
	base := e.all("CLAUDEQ_NODES_FILE", nodes, "CLAUDEQ_WORKER_CONCURRENCY", "100", "CLAUDEQ_UPSTREAM_TIMEOUT", "1s",
		"CLAUDEQ_JOB_MAX_RETRIES", "20", "CLAUDEQ_NODE_FAILURES", "1000")
	key, _ := e.key("alice", "research")
	const n = 1000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submit(t, base, key, map[string]any{"prompt": fmt.Sprintf("faulty %d", i), "max_tokens": 100})
	}
	start := time.Now()
	var ok, failed []string
	kinds := map[string]int{}
	for _, id := range ids {
		j := wait(t, base, key, id, 5*time.Minute)
		if j["status"] == "succeeded" {
			ok = append(ok, id)
			continue
		}
		require.Equal(t, "failed", j["status"])
		kinds[j["error"].(map[string]any)["type"].(string)]++
		failed = append(failed, id)
	}
	t.Logf("%d jobs terminal in %.1fs under 30%% faults: %d succeeded, %d failed after 20 retries %v; upstream calls per success: %.2f",
		n, time.Since(start).Seconds(), len(ok), len(failed), kinds, float64(e.totalSimRequests())/float64(len(ok)))
	// Every job is terminal; a success is billed and stored once, a failure
	// not at all, and no reservation stays held.
	e.requireBilledOnce(t, ok, failed...)
}

func TestKilledWorkerAndRestartedRedisBillNothingTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withRedis(redistest.WithAOF(), redistest.WithArgs("--appendfsync", "always")))
	e.sim.SetLatency(300*time.Millisecond, 0)
	a, _ := e.run(app.Roles{API: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_QUOTA_RECONCILE_AFTER", "5s")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")

	worker := exec.Command(os.Args[0], "-test.run=^$")
	worker.Env = append(os.Environ(), "CLAUDEQ_E2E_ROLE=worker", "CLAUDEQ_WORKER_CONCURRENCY=20")
	for k, v := range e.env {
		worker.Env = append(worker.Env, k+"="+v)
	}
	require.NoError(t, worker.Start())
	t.Cleanup(func() { _ = worker.Process.Kill(); _ = worker.Wait() })

	const n = 150
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submit(t, base, key, map[string]any{"prompt": fmt.Sprintf("chaos %d", i), "session_id": fmt.Sprintf("c%d", i)})
	}
	require.Eventually(t, func() bool { return e.sim.Stats().Succeeded >= 40 }, 60*time.Second, 10*time.Millisecond)
	require.NoError(t, worker.Process.Signal(syscall.SIGKILL))
	_ = worker.Wait()
	e.run(app.Roles{Worker: true}, "CLAUDEQ_WORKER_CONCURRENCY", "20")
	require.Eventually(t, func() bool { return e.sim.Stats().Succeeded >= 90 }, 60*time.Second, 10*time.Millisecond)
	e.redis.Kill()
	time.Sleep(time.Second)
	e.redis.Restart()

	for _, id := range ids {
		j := wait(t, base, key, id, 4*time.Minute)
		require.Equal(t, "succeeded", j["status"], "%v", j)
	}
	e.requireBilledOnce(t, ids)
	for i, id := range ids {
		convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "session_id", Value: fmt.Sprintf("c%d", i)}})
		require.NoError(t, err)
		require.Len(t, convs, 1)
		require.Equal(t, []string{id}, convs[0].JobIDs)
	}
}
