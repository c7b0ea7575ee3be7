package bench

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/upstream"
)

// PickStrategies are the balancing strategies of figure 4, the default
// first.
var PickStrategies = []string{upstream.LeastConnections, upstream.RoundRobin, upstream.WeightedRandom, upstream.ResponseTime}

// PickNodes are the fleet sizes of figure 4.
var PickNodes = []int{3, 50}

// PickStats is one timed loop of figure 4.
type PickStats struct {
	Ops         int
	Elapsed     time.Duration
	NsPerOp     float64
	AllocsPerOp float64 // heap allocations per op, process-wide (as testing.B counts them)
	BytesPerOp  float64
	Use         Usage // during the loop; Redis commands per op come from it
}

// PickCase is one strategy at one fleet size.
type PickCase struct {
	Strategy string
	Nodes    int
	Runs     []PickStats
}

// PickResult is figure 4: Fleet.Pick per strategy and fleet size, and the
// reference, one go-redis INCR round trip on the same client (what
// round_robin adds to every pick).
type PickResult struct {
	Cases     []PickCase
	Reference []PickStats
	Model     string
}

// Median returns the median ns/op and allocs/op of c's runs.
func (c *PickCase) Median() (ns, allocs float64) { return medianPick(c.Runs) }

// PairedRatio is the median over repetitions of c's ns/op divided by the
// reference's in the same repetition: a round trip's time moves with the
// machine's load, so runs minutes apart are not compared.
func (r *PickResult) PairedRatio(c *PickCase) float64 {
	var xs []float64
	for i, x := range c.Runs {
		if i < len(r.Reference) && r.Reference[i].NsPerOp > 0 {
			xs = append(xs, x.NsPerOp/r.Reference[i].NsPerOp)
		}
	}
	return Median(xs)
}

func medianPick(rs []PickStats) (ns, allocs float64) {
	var a, b []float64
	for _, r := range rs {
		a, b = append(a, r.NsPerOp), append(b, r.AllocsPerOp)
	}
	return Median(a), Median(b)
}

// RunPick measures figure 4: for every strategy of PickStrategies and
// fleet size of PickNodes, a Fleet over this run's redis-server (a go-redis
// client configured like the app's) whose nodes have weights 1–5 and a
// measured latency (so that response_time compares scores instead of
// exploring untried nodes), and Pick called in a tight loop from one
// goroutine for o.PickDuration after a warm-up that outlasts the
// snapshot's 200 ms TTL. The shared snapshot is cached as in production:
// one EVALSHA per 200 ms refreshes it; round_robin also does one INCR per
// pick, by design (one rotation shared by every worker). The cases and the
// reference rotate their order in each repetition.
func RunPick(ctx context.Context, e *Env, o *Options) (*PickResult, error) {
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	cfg, err := e.Config("unused")
	if err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(e.Redis.URL())
	if err != nil {
		return nil, err
	}
	opt.PoolSize = max(64, cfg.WorkerConcurrency+16)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	model := "claude-sonnet"
	if m, ok := claudeq.NewCatalog(pricing.Default().Catalog(), nil).Resolve("sonnet"); ok {
		model = m.ID
	}
	res := &PickResult{Model: model}
	type entry struct {
		c      *PickCase
		fleet  *upstream.Fleet
		prefix string
		names  []string
	}
	var entries []entry
	for _, n := range PickNodes {
		for _, s := range PickStrategies {
			res.Cases = append(res.Cases, PickCase{Strategy: s, Nodes: n})
		}
	}
	for i := range res.Cases {
		c := &res.Cases[i]
		prefix := fmt.Sprintf("{bench:pick:%s:%d}:", c.Strategy, c.Nodes)
		nodes := make([]upstream.NodeConfig, c.Nodes)
		var names []string
		for j := range nodes {
			nodes[j] = upstream.NodeConfig{Name: fmt.Sprintf("node-%02d", j), URL: "http://127.0.0.1:9", Weight: j%5 + 1}
			names = append(names, nodes[j].Name)
		}
		f, err := upstream.NewFleet(nodes, upstream.FleetOptions{Strategy: c.Strategy, Redis: rdb, KeyPrefix: prefix,
			Logger: slog.New(e.Log)})
		if err != nil {
			return nil, err
		}
		entries = append(entries, entry{c, f, prefix, names})
	}
	// seed gives every node a fresh latency measurement (ewma, samples,
	// seen_at: the fields the snapshot script reads), so that
	// response_time compares instead of exploring.
	seed := func(en entry) error {
		p := rdb.Pipeline()
		now := time.Now().UnixMilli()
		for j, name := range en.names {
			p.HSet(ctx, en.prefix+"node:"+name, "ewma", 100+j, "samples", 10, "seen_at", now)
		}
		_, err := p.Exec(ctx)
		return err
	}
	warm := max(300*time.Millisecond, o.PickDuration/4) // > SnapshotTTL: the seeded state is read
	e.settle(ctx, o)
	for rep := range o.Reps {
		n := len(entries) + 1
		for k := range n {
			i := (rep*3 + k) % n // a different order in every repetition
			if i == len(entries) {
				st, err := e.timeOps(ctx, warm, o.PickDuration, func() error { return rdb.Incr(ctx, "bench:pick:ref").Err() })
				if err != nil {
					return nil, err
				}
				res.Reference = append(res.Reference, st)
				o.logf("pick rep %d/%d reference INCR           %7.0f ns/op", rep+1, o.Reps, st.NsPerOp)
				continue
			}
			en := entries[i]
			if err := seed(en); err != nil {
				return nil, err
			}
			st, err := e.timeOps(ctx, warm, o.PickDuration, func() error {
				_, err := en.fleet.Pick(ctx, model, nil)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s, %d nodes: %w", en.c.Strategy, en.c.Nodes, err)
			}
			en.c.Runs = append(en.c.Runs, st)
			o.logf("pick rep %d/%d %-17s %2d nodes %7.0f ns/op %5.1f allocs/op", rep+1, o.Reps, en.c.Strategy, en.c.Nodes, st.NsPerOp, st.AllocsPerOp)
		}
	}
	return res, e.Flush(ctx)
}

// timeOps calls op for warm, then times it for at least d, checking the
// clock every 64 calls; allocations are counted process-wide, as
// testing.B does.
func (e *Env) timeOps(ctx context.Context, warm, d time.Duration, op func() error) (PickStats, error) {
	run := func(d time.Duration) (int, time.Duration, error) {
		n, t0 := 0, time.Now()
		for {
			for range 64 {
				if err := op(); err != nil {
					return n, 0, err
				}
			}
			n += 64
			if el := time.Since(t0); el >= d || ctx.Err() != nil {
				return n, el, ctx.Err()
			}
		}
	}
	if _, _, err := run(warm); err != nil {
		return PickStats{}, err
	}
	u0 := e.usage()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	n, el, err := run(d)
	runtime.ReadMemStats(&m1)
	u1 := e.usage()
	if err != nil {
		return PickStats{}, err
	}
	return PickStats{Ops: n, Elapsed: el, NsPerOp: float64(el.Nanoseconds()) / float64(n),
		AllocsPerOp: float64(m1.Mallocs-m0.Mallocs) / float64(n), BytesPerOp: float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n),
		Use: u1.sub(u0)}, nil
}
