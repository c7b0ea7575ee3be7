package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStats(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	require.Equal(t, 5*time.Millisecond, Percentile(ms(9, 1, 5, 3, 7), 50))
	require.Equal(t, 100*time.Millisecond, Percentile(ms(append(make([]int, 99), 100)...), 100))
	require.Equal(t, time.Duration(0), Percentile(ms(append(make([]int, 99), 100)...), 99))
	require.Equal(t, time.Duration(0), Percentile(nil, 99))
	require.Equal(t, 2.5, Median([]float64{4, 1, 2, 3}))
	require.Equal(t, 3.0, Median([]float64{3, 9, 1}))
	require.Equal(t, "1,234,567", num(1234567.4))
	require.Equal(t, "999", num(999))
	require.Equal(t, "-1,000", num(-1000))
}

// TestRunTiny runs every figure at toy sizes, so that a change of the app,
// the api or asynq that breaks the benchmark shows up in CI, not at the
// next `make bench`.
func TestRunTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and FerretDB")
	}
	if _, err := RedisBinary(); err != nil {
		if os.Getenv("CLAUDEQ_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// No budget of its own: on a loaded machine every figure takes longer,
	// and each wait inside has its own bound; the test binary's -timeout
	// (less a margin for the report of a failure) is the only one.
	ctx := t.Context()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
		defer cancel()
	}
	o := Options{Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Concurrency: []int{4}, Jobs: 40,
		DrainBudget: 15 * time.Second, Reps: 1, LatencyDuration: 300 * time.Millisecond, LatencyRate: 40, Command: "test",
		PickDuration: 20 * time.Millisecond, FleetNodes: 3, MoneyDuration: 200 * time.Millisecond, MoneyClients: 4, Profile: true,
		MessagesRate: 100, MessagesClients: 4, AuditRate: 100}
	var log bytes.Buffer
	o.Log = &log
	r, err := Run(ctx, o)
	require.NoError(t, err, "log:\n%s", log.String())

	require.Len(t, r.Submit, 1)
	s := r.Submit[0]
	require.Greater(t, s.PayloadBytes, 100)
	for _, x := range slices.Concat(s.Subject, s.Baseline, s.Budgets) {
		require.Positive(t, x.OK)
		require.Zero(t, x.Errors, x.FirstErr)
	}
	require.Len(t, s.Budgets, 1)
	require.Len(t, s.NoAudit, 1)

	require.NotNil(t, r.Audit, "figure 8's fixed-rate runs")
	require.Equal(t, 100.0, r.Audit.Rate)
	for _, x := range append(r.Audit.On, r.Audit.Off...) {
		require.Positive(t, x.OK)
		require.Zero(t, x.Errors, x.FirstErr)
		require.Positive(t, x.P50)
		require.LessOrEqual(t, x.P50, x.P99)
	}
	require.Len(t, r.Audit.On, 1)
	require.Len(t, r.Audit.Off, 1)
	require.Len(t, r.Audit.Loaded, 1, "figure 8's control")
	require.Positive(t, r.Audit.Loaded[0].OK)
	require.NotNil(t, r.AuditAPI, "figure 8's api-on-one-core runs")
	for _, x := range slices.Concat(r.AuditAPI.On, r.AuditAPI.Off, r.AuditAPI.Loaded) {
		require.Positive(t, x.Max.OK)
		require.Positive(t, x.Fixed.OK)
		require.Zero(t, x.Fixed.Errors, x.Fixed.FirstErr)
		require.Positive(t, x.Answered)
	}
	require.Len(t, r.AuditAPI.On, 1)
	require.Equal(t, r.AuditAPI.On[0].Answered, r.AuditAPI.On[0].Stored, "one audit record per submit answered")
	require.Zero(t, r.AuditAPI.Off[0].Stored)
	require.Len(t, r.AuditAPI.Loaded, 1)
	// The control's store got records from the storeload process: at
	// least one a submit of its fixed-rate window.
	require.GreaterOrEqual(t, r.AuditAPI.Loaded[0].Stored, int64(r.AuditAPI.Loaded[0].Fixed.OK))

	require.NotNil(t, r.E2E)
	for _, x := range append(r.E2E.Subject, r.E2E.Baseline...) {
		require.True(t, x.Drained, "%+v", x)
		require.Equal(t, 40, x.Done)
		require.Equal(t, 40, x.Succeeded)
		require.Positive(t, x.JobsPerSec)
	}
	require.EqualValues(t, 40, r.E2E.Subject[0].Persisted)
	require.Len(t, r.E2E.Fleet, 1)
	require.Equal(t, 3, r.E2E.FleetNodes)
	for _, x := range r.E2E.Fleet {
		require.True(t, x.Drained, "%+v", x)
		require.Equal(t, 40, x.Succeeded)
		require.EqualValues(t, 40, x.Persisted)
	}

	require.NotNil(t, r.Pick)
	require.Len(t, r.Pick.Cases, len(PickStrategies)*len(PickNodes))
	for _, c := range r.Pick.Cases {
		require.Len(t, c.Runs, 1)
		require.Positive(t, c.Runs[0].NsPerOp)
		if c.Strategy == "round_robin" { // one INCR per pick, by design
			require.InDelta(t, 1, float64(c.Runs[0].Use.Cmds["incr"])/float64(c.Runs[0].Ops), 0.01)
		}
	}
	require.Len(t, r.Pick.Reference, 1)

	require.NotNil(t, r.Money)
	require.Positive(t, r.Money.Subject[0].OK)
	require.Positive(t, r.Money.Floor[0].OK)

	require.Len(t, r.Profiles, 2)
	for _, pr := range r.Profiles {
		require.NotEmpty(t, pr.Stages, pr.Title)
	}

	require.NotNil(t, r.Messages)
	for _, runs := range [][]LoadStats{r.Messages.C1[MsgDirect], r.Messages.C1[MsgOn], r.Messages.C1[MsgOff], r.Messages.C1[MsgProxy],
		r.Messages.Max[MsgDirect], r.Messages.Max[MsgOn], r.Messages.Max[MsgOff]} {
		require.Len(t, runs, 1)
		require.Positive(t, runs[0].OK)
		require.Zero(t, runs[0].Errors, runs[0].FirstErr)
	}
	for _, ol := range r.Messages.Open {
		require.Len(t, ol, 1)
		require.Equal(t, ol[0].Sent, ol[0].OK, ol[0].FirstErr)
	}
	require.NotNil(t, r.Messages.Profile)

	require.Len(t, r.Latency, 2)
	for _, l := range r.Latency {
		require.NotEmpty(t, l.All)
		require.Equal(t, len(l.All), l.Runs[0].Succeeded)
	}
	// The 20 ms interval picks jobs up within about a second even on a busy
	// machine; the 1 s one cannot beat 0.5 s on average.
	p50, _, _ := r.Latency[0].Pooled()
	require.Less(t, p50, time.Second)

	var md bytes.Buffer
	require.NoError(t, Render(&md, r))
	for _, want := range []string{"## Machine", "## Summary", "## 1. Submit throughput", "## 2. End-to-end throughput",
		"## 3. Enqueue-to-pick-up latency", "## 4. Balancer pick cost", "## 5. End to end over 3 nodes", "## 6. Money",
		"## Where the time goes", "## How measured / rerun", "## 7. Anthropic-compatible API: POST /v1/messages", "| 7. POST /v1/messages added p50, 1 client", "| 1. submit, 4 clients |", "| 6. submit with budgets vs without, 4 clients |",
		"## 8. The audit log's cost on the submit path", "| 8. submit latency p50 with the audit log vs without, 100/s |"} {
		require.Contains(t, md.String(), want)
	}
}

//go:noinline
func spin(d time.Duration) int {
	n := 0
	for t0 := time.Now(); time.Since(t0) < d; {
		for i := range 1000 {
			n += i % 7
		}
	}
	return n
}

// TestSummarizeProfile checks the profile decoder on a profile of a busy
// loop: most of the CPU must land on the loop's function.
func TestSummarizeProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(path)
	require.NoError(t, err)
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Skip("a CPU profile is already running:", err)
	}
	spin(300 * time.Millisecond)
	pprof.StopCPUProfile()
	require.NoError(t, f.Close())
	s, err := SummarizeProfile(path, "spin", []Stage{
		{Name: "spin", Match: []string{"github.com/claudeq/claudeq/internal/bench.spin"}},
		{Name: "none", Match: []string{"github.com/claudeq/claudeq/internal/bench.spin"}, Except: []string{"testing.tRunner"}},
	})
	require.NoError(t, err)
	require.Greater(t, s.CPU, 100*time.Millisecond)
	require.Greater(t, s.Duration, 250*time.Millisecond)
	require.Greater(t, s.Stages[0].Share, 0.5, "%+v", s)
	require.Zero(t, s.Stages[1].Share)
	require.NotEmpty(t, s.Top)
}
