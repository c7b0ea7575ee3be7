package bench

import (
	"bytes"
	"context"
	"os"
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := Options{Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Concurrency: []int{4}, Jobs: 40,
		DrainBudget: 15 * time.Second, Reps: 1, LatencyDuration: 300 * time.Millisecond, LatencyRate: 40, Command: "test"}
	var log bytes.Buffer
	o.Log = &log
	r, err := Run(ctx, o)
	require.NoError(t, err, "log:\n%s", log.String())

	require.Len(t, r.Submit, 1)
	s := r.Submit[0]
	require.Greater(t, s.PayloadBytes, 100)
	for _, x := range append(s.Subject, s.Baseline...) {
		require.Positive(t, x.OK)
		require.Zero(t, x.Errors, x.FirstErr)
	}

	require.NotNil(t, r.E2E)
	for _, x := range append(r.E2E.Subject, r.E2E.Baseline...) {
		require.True(t, x.Drained, "%+v", x)
		require.Equal(t, 40, x.Done)
		require.Equal(t, 40, x.Succeeded)
		require.Positive(t, x.JobsPerSec)
	}
	require.EqualValues(t, 40, r.E2E.Subject[0].Persisted)

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
		"## 3. Enqueue-to-pick-up latency", "## How measured / rerun", "| 1. submit, 4 clients |"} {
		require.Contains(t, md.String(), want)
	}
}
