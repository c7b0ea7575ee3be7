package upstream_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/upstream"
)

const model = "claude-sonnet-4-6"

var body = []byte(`{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)

// testClock is an injectable clock. It is safe for concurrent use.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2026, 3, 15, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testBundle is three simulator nodes a, b, c and a real Redis.
type testBundle struct {
	rdb   *redis.Client
	sims  map[string]*sim.Server
	nodes []upstream.NodeConfig
	clock *testClock
}

// setup starts one simulator per config (named a, b, c, …) on loopback.
func setup(t *testing.T, cfgs ...sim.Config) *testBundle {
	t.Helper()
	if len(cfgs) == 0 {
		cfgs = make([]sim.Config, 3)
	}
	b := &testBundle{rdb: redistest.New(t).Client(t), sims: map[string]*sim.Server{}, clock: newClock()}
	for i, cfg := range cfgs {
		name := string(rune('a' + i))
		if cfg.Seed == 0 {
			cfg.Seed = int64(i + 1)
		}
		s := sim.New(cfg)
		ts := httptest.NewServer(s)
		t.Cleanup(ts.Close)
		b.sims[name] = s
		b.nodes = append(b.nodes, upstream.NodeConfig{Name: name, URL: ts.URL, APIKey: "test-key", Weight: 1})
	}
	return b
}

// fleet returns a Fleet on the bundle's nodes, Redis and clock.
func (b *testBundle) fleet(t *testing.T, o upstream.FleetOptions) *upstream.Fleet {
	t.Helper()
	o.Redis = b.rdb
	if o.Now == nil {
		o.Now = b.clock.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	f, err := upstream.NewFleet(b.nodes, o)
	require.NoError(t, err)
	return f
}

func (b *testBundle) requests(name string) int64 { return b.sims[name].Stats().Requests }

func (b *testBundle) total() int64 {
	var n int64
	for _, s := range b.sims {
		n += s.Stats().Requests
	}
	return n
}

func status(t *testing.T, f *upstream.Fleet, name string) upstream.NodeStatus {
	t.Helper()
	all, err := f.Nodes(context.Background())
	require.NoError(t, err)
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no node %s", name)
	return upstream.NodeStatus{}
}

func pickCounts(t *testing.T, f *upstream.Fleet, n int, model string, avoid ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, err := f.Pick(context.Background(), model, avoid)
		require.NoError(t, err)
		got[name]++
	}
	return got
}

var strategies = []string{upstream.RoundRobin, upstream.WeightedRandom, upstream.LeastConnections, upstream.ResponseTime}

func TestWeightedRandom(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i, w := range []int{1, 2, 7} {
		b.nodes[i].Weight = w
	}
	f := b.fleet(t, upstream.FleetOptions{Strategy: upstream.WeightedRandom})
	const n = 10_000
	got := pickCounts(t, f, n, model)
	for name, want := range map[string]float64{"a": 0.10, "b": 0.20, "c": 0.70} {
		share := float64(got[name]) / n
		require.InDelta(t, want, share, 0.03, "node %s: %v", name, got)
	}
	require.Zero(t, b.total(), "Pick calls no node")
}

func TestRoundRobinAcrossFleets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f1 := b.fleet(t, upstream.FleetOptions{Strategy: upstream.RoundRobin})
	f2 := b.fleet(t, upstream.FleetOptions{Strategy: upstream.RoundRobin})
	got := map[string]int{}
	var seq []string
	for i := range 300 {
		f := f1
		if i%2 == 1 {
			f = f2
		}
		name, err := f.Pick(context.Background(), model, nil)
		require.NoError(t, err)
		got[name]++
		seq = append(seq, name)
	}
	require.Equal(t, map[string]int{"a": 100, "b": 100, "c": 100}, got)
	for i := 3; i < len(seq); i++ {
		require.Equal(t, seq[i-3], seq[i], "the two fleets share one rotation")
	}

	// Calls rotate too: each node gets exactly one of three calls.
	for range 6 {
		_, _, err := f1.Call(context.Background(), model, body, nil)
		require.NoError(t, err)
	}
	for name := range b.sims {
		require.Equal(t, int64(2), b.requests(name), name)
	}
}

func TestLeastConnectionsPrefersIdleNode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f1 := b.fleet(t, upstream.FleetOptions{Strategy: upstream.LeastConnections})
	f2 := b.fleet(t, upstream.FleetOptions{Strategy: upstream.LeastConnections})
	b.sims["a"].SetLatency(time.Minute, 0)
	b.sims["b"].SetLatency(time.Minute, 0)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ended := make(chan string, 2)
	for _, busy := range []string{"a", "b"} {
		avoid := slices.DeleteFunc([]string{"a", "b", "c"}, func(s string) bool { return s == busy })
		wg.Go(func() {
			_, node, err := f1.Call(ctx, model, body, avoid)
			ended <- fmt.Sprintf("%s %v", node, claudeq.ErrorKind(err))
		})
	}
	require.Eventually(t, func() bool {
		return b.sims["a"].Stats().InFlight == 1 && b.sims["b"].Stats().InFlight == 1
	}, 5*time.Second, 5*time.Millisecond)

	require.Equal(t, map[string]int{"c": 200}, pickCounts(t, f1, 200, model), "the fleet that started the calls")
	require.Equal(t, map[string]int{"c": 200}, pickCounts(t, f2, 200, model), "another fleet sharing Redis")
	require.Equal(t, int64(1), status(t, f2, "a").InFlight)
	require.Equal(t, int64(1), status(t, f2, "b").InFlight)
	require.Equal(t, int64(0), status(t, f2, "c").InFlight)

	cancel()
	wg.Wait()
	close(ended)
	var results []string
	for r := range ended {
		results = append(results, r)
	}
	require.ElementsMatch(t, []string{"a service_unavailable", "b service_unavailable"}, results)
	for _, n := range []string{"a", "b", "c"} {
		s := status(t, f2, n)
		require.Equal(t, int64(0), s.InFlight, n)
		require.Equal(t, upstream.StatusHealthy, s.Status, "a canceled call is not the node's fault")
	}
	got := pickCounts(t, f1, 3000, model)
	require.Len(t, got, 3, "idle again, ties are broken at random: %v", got)
}

func TestResponseTimePrefersFastNode(t *testing.T) {
	t.Parallel()
	b := setup(t,
		sim.Config{PerTokenLatency: 2 * time.Millisecond},
		sim.Config{},
		sim.Config{PerTokenLatency: time.Millisecond})
	f := b.fleet(t, upstream.FleetOptions{Strategy: upstream.ResponseTime})
	ctx := context.Background()

	// Warm-up: every untried node is tried once first.
	for range 3 {
		_, _, err := f.Call(ctx, model, body, nil)
		require.NoError(t, err)
	}
	for name := range b.sims {
		require.Equal(t, int64(1), b.requests(name), name)
	}
	const n = 60
	for range n {
		_, _, err := f.Call(ctx, model, body, nil)
		require.NoError(t, err)
	}
	fast := b.requests("b") - 1
	require.GreaterOrEqual(t, fast, int64(n*85/100), "fast node b got %d of %d", fast, n)
	// Measurements older than 30 s are retried: every node once more.
	before := map[string]int64{}
	for name := range b.sims {
		before[name] = b.requests(name)
	}
	b.clock.Advance(31 * time.Second)
	for range 3 {
		_, _, err := f.Call(ctx, model, body, nil)
		require.NoError(t, err)
	}
	for name := range b.sims {
		require.Equal(t, before[name]+1, b.requests(name), name)
	}

	sa, sb := status(t, f, "a"), status(t, f, "b")
	require.Greater(t, sa.LatencyPerToken, 2*sb.LatencyPerToken, "a: %v, b: %v", sa.LatencyPerToken, sb.LatencyPerToken)
	require.Positive(t, sb.P50)
	require.GreaterOrEqual(t, sb.P95, sb.P50)
}

func TestResponseTimeExploresWithOneCall(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, sim.Config{})
	f := b.fleet(t, upstream.FleetOptions{Strategy: upstream.ResponseTime})
	other := b.fleet(t, upstream.FleetOptions{Strategy: upstream.ResponseTime, SnapshotTTL: -1})
	ctx := context.Background()
	b.sims["a"].SetLatency(300*time.Millisecond, 0)
	_, node, err := f.Call(ctx, model, body, []string{"a"})
	require.NoError(t, err)
	require.Equal(t, "b", node, "b is measured, a not yet")

	// a is explored by one call; while it runs, a is not a target for
	// anybody else, since it has not been measured yet.
	done := make(chan string, 1)
	go func() {
		_, node, _ := f.Call(ctx, model, body, nil)
		done <- node
	}()
	require.Eventually(t, func() bool { return b.sims["a"].Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, map[string]int{"b": 50}, pickCounts(t, f, 50, model))
	require.Equal(t, map[string]int{"b": 50}, pickCounts(t, other, 50, model))
	require.Equal(t, "a", <-done)
	require.Equal(t, int64(1), b.sims["a"].Stats().MaxInFlight)
}

func TestFailingNodeEjectedThenRecoversHalfOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, sim.Config{Faults: []string{sim.Fault500}}, sim.Config{})
	o := upstream.FleetOptions{Strategy: upstream.RoundRobin, FailureThreshold: 3, FailureWindow: 30 * time.Second, Cooldown: 30 * time.Second}
	f := b.fleet(t, o)
	ctx := context.Background()
	toB := []string{"a", "c"} // avoiding the others sends the call to b while b can take it
	b.sims["b"].SetFaultRate(1)

	for i := range 3 {
		if i == 0 {
			require.Equal(t, upstream.StatusHealthy, status(t, f, "b").Status)
		}
		_, node, err := f.Call(ctx, model, body, toB)
		require.Equal(t, "b", node)
		require.Equal(t, claudeq.KindUpstream, claudeq.ErrorKind(err))
		b.clock.Advance(time.Second)
		if i < 2 {
			s := status(t, f, "b")
			require.Equal(t, upstream.StatusDegraded, s.Status)
			require.Equal(t, int64(i+1), s.Failures)
		}
	}
	s := status(t, f, "b")
	require.Equal(t, upstream.StatusUnhealthy, s.Status)
	require.False(t, s.HalfOpen)
	require.Equal(t, b.clock.Now().Add(29*time.Second), s.CooldownUntil)
	require.Equal(t, int64(3), s.Errors)

	// During the cooldown b gets nothing, even when every call prefers it.
	other := b.fleet(t, o)
	for range 20 {
		_, node, err := f.Call(ctx, model, body, toB)
		require.NoError(t, err)
		require.NotEqual(t, "b", node)
		_, node, err = other.Call(ctx, model, body, toB)
		require.NoError(t, err)
		require.NotEqual(t, "b", node)
	}
	require.Equal(t, int64(3), b.requests("b"))

	// Cooldown over, still broken: the half-open trial fails and b is out again.
	b.clock.Advance(29 * time.Second)
	require.True(t, status(t, f, "b").HalfOpen)
	_, node, err := f.Call(ctx, model, body, toB)
	require.Equal(t, "b", node, "the trial request")
	require.Error(t, err)
	s = status(t, f, "b")
	require.Equal(t, upstream.StatusUnhealthy, s.Status)
	require.False(t, s.HalfOpen)
	require.Equal(t, b.clock.Now().Add(30*time.Second), s.CooldownUntil)
	_, node, err = f.Call(ctx, model, body, toB)
	require.NoError(t, err)
	require.NotEqual(t, "b", node)
	require.Equal(t, int64(4), b.requests("b"))

	// Fixed and cooled: exactly one trial runs; while it does, nobody else
	// sends b anything; its success makes b healthy.
	b.sims["b"].SetFaultRate(0)
	b.sims["b"].SetLatency(2*time.Second, 0)
	b.clock.Advance(30 * time.Second)
	trial := make(chan string, 1)
	go func() {
		_, node, err := f.Call(ctx, model, body, toB)
		if err != nil {
			node += " " + err.Error()
		}
		trial <- node
	}()
	require.Eventually(t, func() bool { return b.sims["b"].Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)
	fresh := b.fleet(t, upstream.FleetOptions{Strategy: upstream.RoundRobin, SnapshotTTL: -1})
	// Calls made while the trial runs (checked after each: on a loaded
	// machine the trial may end before all thirty are made) avoid b.
	during := 0
	for range 10 {
		for _, fl := range []*upstream.Fleet{f, other, fresh} {
			_, node, err := fl.Call(ctx, model, body, toB)
			require.NoError(t, err)
			if b.sims["b"].Stats().InFlight == 1 {
				require.NotEqual(t, "b", node)
				during++
			}
		}
	}
	require.Positive(t, during, "some calls were made while the trial ran")
	require.Equal(t, "b", <-trial)
	require.Equal(t, int64(1), b.sims["b"].Stats().MaxInFlight)
	s = status(t, f, "b")
	require.Equal(t, upstream.StatusHealthy, s.Status)
	require.Zero(t, s.Failures)

	b.sims["b"].SetLatency(0, 0)
	got := map[string]int{}
	for range 9 {
		_, node, err := f.Call(ctx, model, body, nil)
		require.NoError(t, err)
		got[node]++
	}
	require.Equal(t, map[string]int{"a": 3, "b": 3, "c": 3}, got, "b is back in the rotation")
}

func TestRateLimitedNodeRestsForRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, sim.Config{RetryAfter: 2 * time.Second}, sim.Config{})
	o := upstream.FleetOptions{Strategy: upstream.WeightedRandom}
	f := b.fleet(t, o)
	stale := b.fleet(t, upstream.FleetOptions{Strategy: upstream.WeightedRandom, SnapshotTTL: time.Hour})
	ctx := context.Background()
	toB := []string{"a", "c"}
	_, err := stale.Pick(ctx, model, toB) // its view now predates the 429
	require.NoError(t, err)

	b.sims["b"].Script(sim.Fault429)
	_, node, err := f.Call(ctx, model, body, toB)
	require.Equal(t, "b", node)
	require.Equal(t, claudeq.KindRateLimit, claudeq.ErrorKind(err))
	require.Equal(t, 2*time.Second, claudeq.RetryAfter(err))
	s := status(t, f, "b")
	require.Equal(t, upstream.StatusDegraded, s.Status)
	require.Equal(t, b.clock.Now().Add(2*time.Second), s.CooldownUntil)

	for _, wait := range []time.Duration{0, time.Second, 900 * time.Millisecond} {
		b.clock.Advance(wait)
		for _, fl := range []*upstream.Fleet{f, stale} {
			for range 5 {
				_, node, err := fl.Call(ctx, model, body, toB)
				require.NoError(t, err)
				require.NotEqual(t, "b", node)
			}
		}
	}
	require.Equal(t, int64(1), b.requests("b"), "no request during the 2 s, not even from a stale view")

	b.clock.Advance(100 * time.Millisecond)
	_, node, err = stale.Call(ctx, model, body, toB)
	require.NoError(t, err)
	require.Equal(t, "b", node)
	require.Equal(t, upstream.StatusHealthy, status(t, f, "b").Status)
}

func TestBadRequestsNeverMarkNodeUnhealthy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		model  string
		kind   claudeq.Kind
	}{
		{name: "400 invalid_request_error", script: sim.Fault400, model: model, kind: claudeq.KindInvalidRequest},
		{name: "404 unknown model", model: "claude-no-such-model", kind: claudeq.KindNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			f := b.fleet(t, upstream.FleetOptions{FailureThreshold: 2})
			req := []byte(fmt.Sprintf(`{"model":%q,"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, tt.model))
			for range 10 {
				if tt.script != "" {
					b.sims["b"].Script(tt.script)
				}
				_, node, err := f.Call(context.Background(), tt.model, req, []string{"a", "c"})
				require.Equal(t, "b", node)
				require.Equal(t, tt.kind, claudeq.ErrorKind(err))
			}
			s := status(t, f, "b")
			require.Equal(t, upstream.StatusHealthy, s.Status)
			require.Zero(t, s.Failures)
			require.Zero(t, s.Errors)
			require.Equal(t, int64(10), s.Requests)
		})
	}
}

func TestSpendLimitMarksNodeExhausted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := b.fleet(t, upstream.FleetOptions{Strategy: upstream.LeastConnections})
	ctx := context.Background()
	b.sims["b"].Script(sim.FaultSpendLimit)
	_, node, err := f.Call(ctx, model, body, []string{"a", "c"})
	require.Equal(t, "b", node)
	require.Equal(t, claudeq.KindBilling, claudeq.ErrorKind(err))
	require.False(t, upstream.Temporary(err))

	s := status(t, f, "b")
	require.Equal(t, upstream.StatusExhausted, s.Status)
	nextMonth := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, nextMonth, s.CooldownUntil)
	for range 20 {
		_, node, err := f.Call(ctx, model, body, []string{"a", "c"})
		require.NoError(t, err)
		require.NotEqual(t, "b", node)
	}
	require.Equal(t, int64(1), b.requests("b"))

	b.clock.Advance(nextMonth.Sub(b.clock.Now()))
	_, node, err = f.Call(ctx, model, body, []string{"a", "c"})
	require.NoError(t, err)
	require.Equal(t, "b", node, "a new month")
	require.Equal(t, upstream.StatusHealthy, status(t, f, "b").Status)
}

func TestModelAllowList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.nodes[0].Models = []string{"claude-haiku-*"}
	b.nodes[1].Models = []string{"claude-sonnet-4-6", "claude-opus-4-5"}
	tests := []struct {
		name  string
		model string
		want  []string
	}{
		{name: "prefix", model: "claude-haiku-4-5", want: []string{"a", "c"}},
		{name: "exact", model: "claude-sonnet-4-6", want: []string{"b", "c"}},
		{name: "unlisted", model: "claude-sonnet-5-5", want: []string{"c"}},
	}
	for _, strategy := range strategies {
		f := b.fleet(t, upstream.FleetOptions{Strategy: strategy})
		for _, tt := range tests {
			t.Run(strategy+"/"+tt.name, func(t *testing.T) {
				got := pickCounts(t, f, 300, tt.model)
				require.ElementsMatch(t, tt.want, keys(got), "%v", got)
			})
		}
	}

	b.nodes[2].Models = []string{"claude-opus-4-5"}
	f := b.fleet(t, upstream.FleetOptions{})
	_, node, err := f.Call(context.Background(), "claude-sonnet-5-5", body, nil)
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))
	require.Equal(t, "no upstream node serves model claude-sonnet-5-5", claudeq.ErrorMessage(err))
	require.Empty(t, node)
	require.Zero(t, b.total())
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestEveryNodeDownReturnsNoUpstream(t *testing.T) {
	t.Parallel()
	b := setup(t,
		sim.Config{Faults: []string{sim.Fault500}},
		sim.Config{Faults: []string{sim.Fault529}},
		sim.Config{Faults: []string{sim.FaultReset}})
	f := b.fleet(t, upstream.FleetOptions{FailureThreshold: 1, Cooldown: 30 * time.Second})
	ctx := context.Background()
	var failed []string
	for _, s := range b.sims {
		s.SetFaultRate(1)
	}
	for range 3 {
		_, node, err := f.Call(ctx, model, body, failed)
		require.Error(t, err)
		require.True(t, upstream.Temporary(err))
		require.NotContains(t, failed, node)
		failed = append(failed, node)
		b.clock.Advance(5 * time.Second)
	}
	before := b.total()
	start := time.Now()
	_, node, err := f.Call(ctx, model, body, nil)
	t.Logf("Call with every node down answered in %v", time.Since(start))
	require.Empty(t, node)
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))
	require.Equal(t, "no healthy upstream for model "+model, claudeq.ErrorMessage(err))
	require.Equal(t, 15*time.Second, claudeq.RetryAfter(err), "the first node ejected cools until 30 s after it failed, 15 s ago")
	require.Equal(t, before, b.total(), "no node was called")
	for _, s := range []string{"a", "b", "c"} {
		require.Equal(t, upstream.StatusUnhealthy, status(t, f, s).Status)
	}
	_, err = f.Pick(ctx, model, nil)
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))
}

func TestProbe(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{})
	_, url, stop, err := sim.Listen("127.0.0.1:0", sim.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { stop() })
	b.nodes = append(b.nodes, upstream.NodeConfig{Name: "p", URL: url, Weight: 1})
	f := b.fleet(t, upstream.FleetOptions{Timeout: 2 * time.Second})
	ctx := context.Background()

	require.NoError(t, f.Probe(ctx, "p"))
	s := status(t, f, "p")
	require.Equal(t, upstream.StatusHealthy, s.Status)
	require.Equal(t, b.clock.Now(), s.LastCheck)
	require.Positive(t, s.ProbeLatency)

	stop()
	b.clock.Advance(10 * time.Second)
	require.Error(t, f.Probe(ctx, "p"))
	s = status(t, f, "p")
	require.Equal(t, upstream.StatusDegraded, s.Status)
	require.Equal(t, int64(1), s.ProbeFailures)
	require.NotEmpty(t, s.LastError)

	b.clock.Advance(10 * time.Second)
	require.Error(t, f.Probe(ctx, "p"))
	s = status(t, f, "p")
	require.Equal(t, upstream.StatusUnhealthy, s.Status)
	require.Equal(t, b.clock.Now(), s.LastCheck)
	require.Equal(t, map[string]int{"a": 100}, pickCounts(t, f, 100, model))

	// Back on the same address: one good probe restores it.
	require.Eventually(t, func() bool {
		_, _, stop2, err := sim.Listen(url[len("http://"):], sim.Config{})
		if err == nil {
			t.Cleanup(stop2)
		}
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	b.clock.Advance(10 * time.Second)
	require.NoError(t, f.Probe(ctx, "p"))
	s = status(t, f, "p")
	require.Equal(t, upstream.StatusHealthy, s.Status)
	require.Zero(t, s.ProbeFailures)
	require.True(t, s.CooldownUntil.IsZero())
	require.Len(t, pickCounts(t, f, 300, model), 2)

	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(f.Probe(ctx, "nope")))
}

func TestCallPrefersNodesNotAvoided(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			f := b.fleet(t, upstream.FleetOptions{Strategy: strategy})
			require.Equal(t, map[string]int{"c": 50}, pickCounts(t, f, 50, model, "a", "b"))
			got := pickCounts(t, f, 300, model, "a", "b", "c")
			require.NotEmpty(t, got, "all avoided: still served")
		})
	}
}

func TestRPMLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{})
	b.nodes[0].RPM = 2
	f := b.fleet(t, upstream.FleetOptions{})
	other := b.fleet(t, upstream.FleetOptions{})
	ctx := context.Background()
	_, _, err := f.Call(ctx, model, body, nil)
	require.NoError(t, err)
	_, _, err = other.Call(ctx, model, body, nil)
	require.NoError(t, err)
	for _, fl := range []*upstream.Fleet{f, other} {
		_, _, err = fl.Call(ctx, model, body, nil)
		require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))
	}
	require.Equal(t, int64(2), b.total())
	b.clock.Advance(time.Minute)
	_, _, err = other.Call(ctx, model, body, nil)
	require.NoError(t, err)
}

func TestTPMLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{})
	b.nodes[0].TPM = 100 // one request of max_tokens 64 fits, two do not
	f := b.fleet(t, upstream.FleetOptions{})
	ctx := context.Background()
	_, _, err := f.Call(ctx, model, body, nil)
	require.NoError(t, err)
	_, _, err = f.Call(ctx, model, body, nil)
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))
	b.clock.Advance(time.Minute)
	_, _, err = f.Call(ctx, model, body, nil)
	require.NoError(t, err)
}

func TestInFlightOfCrashedProcessIsReaped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sims["a"].SetLatency(time.Minute, 0)
	o := upstream.FleetOptions{InFlightTTL: 10 * time.Minute}
	crashed := b.fleet(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = crashed.Call(ctx, model, body, []string{"b", "c"})
	}()
	survivor := b.fleet(t, o)
	require.Eventually(t, func() bool { return status(t, survivor, "a").InFlight == 1 }, 5*time.Second, 5*time.Millisecond)

	// The process stays silent past InFlightTTL: its count is discarded by
	// the next snapshot any other process reads.
	b.clock.Advance(10*time.Minute + time.Second)
	_, err := survivor.Pick(context.Background(), model, nil)
	require.NoError(t, err)
	require.Equal(t, int64(0), status(t, survivor, "a").InFlight)

	// Had it been alive after all, its late finish does not go negative.
	cancel()
	<-done
	require.Equal(t, int64(0), status(t, survivor, "a").InFlight)
}

func TestConcurrentCallsSettle(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{Latency: time.Millisecond}, sim.Config{Latency: 2 * time.Millisecond}, sim.Config{})
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			fleets := []*upstream.Fleet{
				b.fleet(t, upstream.FleetOptions{Strategy: strategy}),
				b.fleet(t, upstream.FleetOptions{Strategy: strategy}),
			}
			before := b.total()
			var wg sync.WaitGroup
			errs := make(chan error, 160)
			for g := range 16 {
				wg.Go(func() {
					for range 10 {
						_, _, err := fleets[g%2].Call(context.Background(), model, body, nil)
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.Equal(t, before+160, b.total())
			for _, n := range []string{"a", "b", "c"} {
				require.Zero(t, status(t, fleets[0], n).InFlight, n)
			}
		})
	}
}

func TestNewFleetValidation(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	good := []upstream.NodeConfig{{Name: "a", URL: "http://127.0.0.1:1", Weight: 1}}
	tests := []struct {
		name  string
		nodes []upstream.NodeConfig
		o     upstream.FleetOptions
		want  []string
	}{
		{name: "no redis", nodes: good, want: []string{"redis: required"}},
		{name: "bad strategy", nodes: good, o: upstream.FleetOptions{Redis: rdb, Strategy: "fastest"}, want: []string{`strategy: "fastest"`}},
		{name: "negative durations", nodes: good, o: upstream.FleetOptions{Redis: rdb, Cooldown: -1, Timeout: -1},
			want: []string{"cooldown: -1ns", "timeout: -1ns"}},
		{name: "bad nodes", o: upstream.FleetOptions{Redis: rdb}, want: []string{"no nodes"}},
		{name: "duplicate names", nodes: append(slices.Clone(good), good[0]), o: upstream.FleetOptions{Redis: rdb},
			want: []string{`"a" already used`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := upstream.NewFleet(tt.nodes, tt.o)
			require.Nil(t, f)
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestRedisDownFailsOpen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	f, err := upstream.NewFleet(b.nodes, upstream.FleetOptions{Redis: rdb, Strategy: upstream.RoundRobin})
	require.NoError(t, err)
	got := map[string]int{}
	for range 6 {
		_, node, err := f.Call(context.Background(), model, body, nil)
		require.NoError(t, err)
		got[node]++
	}
	require.Equal(t, map[string]int{"a": 2, "b": 2, "c": 2}, got, "rotates locally")
	_, err = f.Nodes(context.Background())
	require.Equal(t, claudeq.KindUnavailable, claudeq.ErrorKind(err))
}

// TestOnStartBracketsEachCall: the hook sees the node before the call is
// sent and its done runs once the answer is back, for failed calls too.
func TestOnStartBracketsEachCall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, s := range b.sims {
		s.SetLatency(300*time.Millisecond, 0)
	}
	var mu sync.Mutex
	var started, finished []string
	inflight := 0
	f := b.fleet(t, upstream.FleetOptions{OnStart: func(node string) func() {
		mu.Lock()
		defer mu.Unlock()
		started = append(started, node)
		inflight++
		return func() {
			mu.Lock()
			defer mu.Unlock()
			finished = append(finished, node)
			inflight--
		}
	}})
	type result struct {
		node string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		_, node, err := f.Call(context.Background(), model, body, nil)
		res <- result{node, err}
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return inflight == 1
	}, 5*time.Second, 5*time.Millisecond, "in flight while the node answers")
	r := <-res
	require.NoError(t, r.err)
	for _, s := range b.sims {
		s.Script(sim.Fault529)
	}
	_, node2, err := f.Call(context.Background(), model, body, nil)
	require.Equal(t, claudeq.KindOverloaded, claudeq.ErrorKind(err))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{r.node, node2}, started)
	require.Equal(t, started, finished)
	require.Zero(t, inflight)
}
