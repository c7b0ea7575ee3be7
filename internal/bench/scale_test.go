package bench

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestScaleTiny runs every S figure at toy sizes — real worker, no-op
// worker, simulator and CLI binaries, built here — so that a change of
// the app, asynq or the binaries that breaks them shows up in CI, not at
// the next `make bench`.
func TestScaleTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries, starts redis-server, FerretDB and worker processes")
	}
	if _, err := RedisBinary(); err != nil {
		if os.Getenv("CLAUDEQ_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := Options{Reps: 1, DrainBudget: 30 * time.Second, Command: "test", Figures: ScaleFigures, ScaleOptions: ScaleOptions{
		ProcJobs: 60, ProcBaselineJobs: 200, ProcCounts: []int{1, 2},
		SlowInFlight: []int{40}, SlowLatency: 300 * time.Millisecond, SlowRounds: 3,
		BacklogLevels: []int{100, 3000}, BacklogAPIJobs: 100, BacklogDrainJobs: 80,
		BacklogFillBudget: time.Minute, BacklogDrainBudget: 30 * time.Second, BacklogProbe: 100 * time.Millisecond,
		PickupFractions: []float64{0.5}, PickupDuration: 500 * time.Millisecond,
		GrowthJobs: 40, GrowthWindow: 20 * time.Second,
		GrowthCases:  []GrowthCase{{Dim: "base", Users: 1, Nodes: 1, Concurrency: 20, Backlog: 40}, {Dim: "users", Users: 3, Nodes: 2, Concurrency: 20, Backlog: 100}},
		ToolDuration: 200 * time.Millisecond,
	}}
	var log bytes.Buffer
	o.Log = &log
	r, err := Run(ctx, o)
	require.NoError(t, err, "log:\n%s", log.String())

	// S1: every drain finished, and claudeq's jobs all succeeded and were
	// stored by the worker processes.
	require.NotNil(t, r.Workers)
	require.Len(t, r.Workers.Runs, 4)
	for _, d := range r.Workers.Runs {
		require.True(t, d.Drained, "%+v", d)
		require.Positive(t, d.JobsPerSec)
		require.Positive(t, d.WorkerCPU, "worker processes' CPU is read from /proc")
		require.Positive(t, d.WorkerRSS)
		if d.System == "claudeq" {
			require.Equal(t, 60, d.Succeeded)
			require.EqualValues(t, 60, d.Persisted)
		} else {
			require.GreaterOrEqual(t, d.Succeeded, 200)
		}
	}
	require.Positive(t, r.Workers.Median("claudeq", 2))

	// S2: 40 jobs held in flight against a 300 ms upstream.
	require.NotNil(t, r.Slow)
	s := r.Slow.Runs[0]
	require.True(t, s.Drained)
	require.Equal(t, 120, s.Done)
	require.EqualValues(t, 120, s.Persisted)
	require.InDelta(t, 40, s.MeanActive, 4)
	require.Positive(t, s.PeakRSS)
	require.Greater(t, s.PeakFDs, 40, "an upstream connection per job in flight")
	// No worker finishes 40 jobs of 300 ms in three rounds faster than the
	// latency allows.
	require.LessOrEqual(t, s.JobsPerSec, s.Ideal()*1.05)

	// S3: bytes per job grow with the payload; the drain is complete.
	b := r.Backlog
	require.NotNil(t, b)
	require.Greater(t, b.APIBytesPerJob, float64(b.PayloadBytes))
	require.Greater(t, b.DirectBytesAtAPIJobs, float64(b.PayloadBytes))
	// ListpackBytes is not checked: at these toy sizes a memory delta of a
	// few thousand jobs is noise (seen negative under load).
	require.Len(t, b.Levels, 2)
	require.GreaterOrEqual(t, b.Levels[1].Queued, int64(3000))
	require.Positive(t, b.Levels[1].Submit.OK)
	require.Len(t, b.Keys, 3)
	for _, k := range b.Keys {
		require.Positive(t, k.Bytes, k.Key)
	}
	require.NotNil(t, b.Drain)
	require.True(t, b.Drain.Drained)
	require.EqualValues(t, 80, b.Drain.Persisted)

	// S4: uses S1's saturation.
	require.NotNil(t, r.Pickup)
	require.Equal(t, r.Workers.Median("claudeq", 1), r.Pickup.Saturation)
	require.NotEmpty(t, r.Pickup.Runs)
	require.Positive(t, r.Pickup.Runs[0].Jobs)

	// S6: two rows, the second over three users and two nodes.
	require.NotNil(t, r.Growth)
	require.Len(t, r.Growth.Rows, 2)
	for _, row := range r.Growth.Rows {
		require.True(t, row.Drain.Drained, "%+v", row)
		require.EqualValues(t, row.Case.Backlog, row.Drain.Persisted)
		require.Positive(t, row.SubmitRate)
	}

	// The tool's self-test.
	require.NotNil(t, r.Tool)
	require.Len(t, r.Tool.Runs, 3)
	lo, hi, _, _ := r.Tool.PerCore()
	require.Positive(t, lo)
	require.GreaterOrEqual(t, hi, lo)

	var md bytes.Buffer
	require.NoError(t, Render(&md, r))
	for _, want := range []string{"## Scaling (issue #9)", "### S1. Throughput with 1 and 2 worker processes", "### S2. Slow upstream",
		"### S3. Queue scale", "### S4. Pick-up latency under load", "### S6. How cost grows", "### The load generator",
		"| S1. end to end, 2 worker processes vs 1 |", "| S3. Redis bytes per queued job, ", "| tool: requests one core of"} {
		require.Contains(t, md.String(), want)
	}
}
