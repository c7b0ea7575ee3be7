package bench

import (
	"context"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/queue"
)

// The figures of issue #9's proof ("S" for scaling, numbered as the
// issue's items; S5, interactive /v1/messages latency, is its own figure).
// Their -only names:
//
//	workers  S1: jobs/s end to end with 1 and 2 worker processes against
//	         raw asynq draining no-op tasks with 1 and 2 processes
//	slow     S2: a simulator answering after 2 s; one worker process
//	         holding thousands of jobs in flight: throughput against
//	         in-flight ÷ latency, RSS, memory per in-flight job
//	backlog  S3: Redis bytes per queued job at 10k, 100k and 1M queued
//	         jobs, submit latency as the backlog grows, time to drain 100k
//	pickup   S4: pick-up latency at 25, 50 and 90 % of S1's saturation
//	growth   S6: jobs/s, CPU per 1,000 jobs and memory as users, nodes,
//	         worker concurrency and backlog grow 10×
//	tool     the rate one core of `claudeq loadtest` generates
var ScaleFigures = []string{"workers", "slow", "backlog", "pickup", "growth", "tool"}

func init() { FigureNames = append(FigureNames, ScaleFigures...) }

// ScaleOptions shape the S figures. A figure whose sizes are zero (no
// jobs, no levels, no rows) is not run, so an Options literal without
// them runs none of the S figures.
type ScaleOptions struct {
	ProcJobs         int   // S1: jobs each claudeq drain handles
	ProcBaselineJobs int   // S1: no-op tasks each baseline drain handles (it is ~7× faster)
	ProcCounts       []int // S1: worker processes

	SlowInFlight []int         // S2: worker concurrency (jobs in flight) of each run
	SlowLatency  time.Duration // S2: the simulator's latency per call
	SlowRounds   int           // S2: jobs = rounds × in-flight

	BacklogLevels      []int         // S3: queued jobs at which Redis memory and submit latency are measured
	BacklogAPIJobs     int           // S3: jobs submitted through the api to check the in-process fill's bytes per job
	BacklogDrainJobs   int           // S3: the backlog whose drain is timed
	BacklogFillBudget  time.Duration // S3: the in-process fill stops at the level reached by then
	BacklogDrainBudget time.Duration // S3: the drain stops waiting after this
	BacklogProbe       time.Duration // S3: submit-latency window at each level

	PickupFractions []float64     // S4: offered rates, as fractions of S1's saturation
	PickupDuration  time.Duration // S4: sending time at each rate
	PickupReps      int           // S4: runs at each rate (0: Reps)

	GrowthJobs   int           // S6: jobs submitted through the api for each row
	GrowthWindow time.Duration // S6: a row's drain is measured for at most this long
	GrowthCases  []GrowthCase  // S6: the rows

	ToolDuration time.Duration // tool: each of the self-test's three runs
}

// DefaultScaleOptions are the S figures of `make bench`: about eleven
// minutes on two cores.
func DefaultScaleOptions() ScaleOptions {
	return ScaleOptions{
		ProcJobs: 5000, ProcBaselineJobs: 20000, ProcCounts: []int{1, 2},
		SlowInFlight: []int{200, 2000}, SlowLatency: 2 * time.Second, SlowRounds: 5,
		BacklogLevels: []int{10_000, 100_000, 1_000_000}, BacklogAPIJobs: 10_000, BacklogDrainJobs: 100_000,
		BacklogFillBudget: 5 * time.Minute, BacklogDrainBudget: 4 * time.Minute, BacklogProbe: 2 * time.Second,
		PickupFractions: []float64{0.25, 0.5, 0.9}, PickupDuration: 5 * time.Second, PickupReps: 2,
		GrowthJobs: 3000, GrowthWindow: 6 * time.Second, GrowthCases: DefaultGrowthCases(3000),
		ToolDuration: 3 * time.Second,
	}
}

// QuickScaleOptions are the S figures' smoke run, about a minute; their
// numbers are not worth comparing.
func QuickScaleOptions() ScaleOptions {
	return ScaleOptions{
		ProcJobs: 500, ProcBaselineJobs: 2000, ProcCounts: []int{1, 2},
		SlowInFlight: []int{200}, SlowLatency: time.Second, SlowRounds: 2,
		BacklogLevels: []int{1000, 5000}, BacklogAPIJobs: 1000, BacklogDrainJobs: 1000,
		BacklogFillBudget: time.Minute, BacklogDrainBudget: 20 * time.Second, BacklogProbe: 300 * time.Millisecond,
		PickupFractions: []float64{0.5}, PickupDuration: 1500 * time.Millisecond,
		GrowthJobs: 300, GrowthWindow: 3 * time.Second,
		GrowthCases: []GrowthCase{{Dim: "base", Users: 1, Nodes: 1, Concurrency: 100, Backlog: 300}, {Dim: "users", Users: 10, Nodes: 1, Concurrency: 100, Backlog: 300},
			{Dim: "nodes", Users: 1, Nodes: 2, Concurrency: 100, Backlog: 300}, {Dim: "backlog", Users: 1, Nodes: 1, Concurrency: 100, Backlog: 3000}},
		ToolDuration: 500 * time.Millisecond,
	}
}

// ScaleReport holds the S figures' results; nil: not run.
type ScaleReport struct {
	Workers *WorkersResult
	Slow    *SlowResult
	Backlog *BacklogResult
	Pickup  *PickupResult
	Growth  *GrowthResult
	Tool    *ToolResult
}

// runScale runs the S figures that o wants and sizes, in an order that
// lets S4 use S1's saturation.
func runScale(ctx context.Context, e *Env, o *Options, r *Report) error {
	var err error
	if o.wants("tool") && o.ToolDuration > 0 {
		if r.Tool, err = RunTool(ctx, e, o); err != nil {
			return fmt.Errorf("figure tool (loadtest self-test): %w", err)
		}
	}
	if o.wants("workers") && o.ProcJobs > 0 && len(o.ProcCounts) > 0 {
		if r.Workers, err = RunWorkers(ctx, e, o); err != nil {
			return fmt.Errorf("figure S1 (worker processes): %w", err)
		}
	}
	if o.wants("pickup") && len(o.PickupFractions) > 0 && o.PickupDuration > 0 {
		if r.Pickup, err = RunPickup(ctx, e, o, r.Workers); err != nil {
			return fmt.Errorf("figure S4 (pick-up under load): %w", err)
		}
	}
	if o.wants("slow") && len(o.SlowInFlight) > 0 && o.SlowRounds > 0 {
		if r.Slow, err = RunSlow(ctx, e, o); err != nil {
			return fmt.Errorf("figure S2 (slow upstream): %w", err)
		}
	}
	if o.wants("growth") && len(o.GrowthCases) > 0 {
		if r.Growth, err = RunGrowth(ctx, e, o); err != nil {
			return fmt.Errorf("figure S6 (cost growth): %w", err)
		}
	}
	if o.wants("backlog") && len(o.BacklogLevels) > 0 {
		if r.Backlog, err = RunBacklog(ctx, e, o); err != nil {
			return fmt.Errorf("figure S3 (queue scale): %w", err)
		}
	}
	return e.Flush(ctx)
}

// ProcDrain is one drain of a pre-filled queue by worker processes.
type ProcDrain struct {
	System string // "claudeq" or "baseline"
	Procs  int
	DrainStats
	WorkerCPU time.Duration // CPU of the worker processes while they drained
	SimCPU    time.Duration // CPU of the simulator process
	WorkerRSS int64         // the worker processes' peak RSS, summed
	// CPU per job of all the measured processes (workers, bench,
	// redis-server, simulators) over the first and the last quarter of
	// the jobs done, from samples every 250 ms.
	FirstQuarterCPU, LastQuarterCPU time.Duration
}

// CPUPerJob returns the CPU per job of the workers, the bench process
// (embedded FerretDB, the api idle, the drain poll), redis-server and
// the simulator.
func (d ProcDrain) CPUPerJob() (worker, bench, redis, sim time.Duration) {
	if d.Done == 0 {
		return
	}
	n := time.Duration(d.Done)
	return d.WorkerCPU / n, d.Use.Proc / n, d.Use.Redis / n, d.SimCPU / n
}

// Busy returns the CPUs the measured processes kept busy during the drain.
func (d ProcDrain) Busy() float64 {
	if d.Elapsed <= 0 {
		return 0
	}
	return float64(d.WorkerCPU+d.Use.Proc+d.Use.Redis+d.SimCPU) / float64(d.Elapsed)
}

// Others returns the CPUs the rest of the machine used during the drain.
func (d ProcDrain) Others() float64 {
	if d.Elapsed <= 0 || d.Use.Machine == 0 {
		return 0
	}
	return float64(max(0, d.Use.Machine-d.WorkerCPU-d.Use.Proc-d.Use.Redis-d.SimCPU)) / float64(d.Elapsed)
}

// WorkersResult is figure S1.
type WorkersResult struct {
	Jobs, BaselineJobs int
	Concurrency        int
	PayloadBytes       int
	Runs               []ProcDrain
}

// Of returns the runs of system with procs processes.
func (w *WorkersResult) Of(system string, procs int) []ProcDrain {
	var out []ProcDrain
	for _, r := range w.Runs {
		if r.System == system && r.Procs == procs {
			out = append(out, r)
		}
	}
	return out
}

// Median returns the median jobs/s of system with procs processes.
func (w *WorkersResult) Median(system string, procs int) float64 {
	var xs []float64
	for _, r := range w.Of(system, procs) {
		xs = append(xs, r.JobsPerSec)
	}
	return Median(xs)
}

// RunWorkers measures figure S1: K jobs queued through the api (in this
// process) with no worker running and the default queue paused; then n
// processes of the real worker binary (cmd/worker, concurrency 100,
// upstream a claude-sim process at zero latency, persistence in the
// embedded FerretDB of this process) start, register with asynq, the
// queue is unpaused and the time from the first pick-up to an empty queue
// is measured. The baseline is n processes of a raw asynq server
// (internal/bench/noopworker) draining no-op tasks of the same payload
// size. Every system and process count runs once per repetition, in a
// rotating order.
func RunWorkers(ctx context.Context, e *Env, o *Options) (*WorkersResult, error) {
	so := o.ScaleOptions
	workerBin, err := e.Binary(ctx, WorkerPkg)
	if err != nil {
		return nil, err
	}
	noopBin, err := e.Binary(ctx, NoopPkg)
	if err != nil {
		return nil, err
	}
	sim, err := e.StartSim(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer sim.Stop(10 * time.Second)
	api, base, fillDB, err := e.StartAPI(ctx, "procfill")
	if err != nil {
		return nil, err
	}
	defer func() { _ = StopApp(api) }()
	payload, err := e.ProbePayload(ctx, base)
	if err != nil {
		return nil, err
	}
	cfg, err := e.Config(fillDB)
	if err != nil {
		return nil, err
	}
	res := &WorkersResult{Jobs: so.ProcJobs, BaselineJobs: so.ProcBaselineJobs, Concurrency: cfg.WorkerConcurrency, PayloadBytes: len(payload)}
	type sys struct {
		name  string
		procs int
	}
	var systems []sys
	for _, n := range so.ProcCounts {
		systems = append(systems, sys{"claudeq", n}, sys{"baseline", n})
	}
	for rep := range o.Reps {
		for k := range systems {
			s := systems[(rep+k)%len(systems)]
			var d ProcDrain
			var err error
			if s.name == "claudeq" {
				d, err = e.procDrainClaudeq(ctx, o, base, workerBin, Sims{sim}, s.procs, so.ProcJobs, o.DrainBudget)
			} else {
				d, err = e.procDrainBaseline(ctx, o, noopBin, payload, s.procs, so.ProcBaselineJobs)
			}
			if err != nil {
				return nil, err
			}
			res.Runs = append(res.Runs, d)
			wk, bn, rd, sm := d.CPUPerJob()
			o.logf("workers rep %d/%d %-8s ×%d %8.0f jobs/s  (%d in %v, drained %v; CPU/job µs: worker %d, bench %d, redis %d, sim %d; busy %.2f CPUs, others %.2f; RSS %d MB)",
				rep+1, o.Reps, s.name, s.procs, d.JobsPerSec, d.Done, d.Elapsed.Round(time.Millisecond), d.Drained,
				wk.Microseconds(), bn.Microseconds(), rd.Microseconds(), sm.Microseconds(), d.Busy(), d.Others(), d.WorkerRSS>>20)
		}
	}
	return res, nil
}

// procDrainClaudeq fills the queue with k jobs through the api at base,
// then times n worker processes (upstream sims) draining it, for at most
// budget after the first pick-up.
func (e *Env) procDrainClaudeq(ctx context.Context, o *Options, base, bin string, sims Sims, n, k int, budget time.Duration, over ...string) (ProcDrain, error) {
	if err := e.Flush(ctx); err != nil {
		return ProcDrain{}, err
	}
	ids, fill, err := e.fillAPI(ctx, base, []string{e.Key}, k)
	if err != nil {
		return ProcDrain{}, err
	}
	db, err := e.NewDB(ctx, "procs")
	if err != nil {
		return ProcDrain{}, err
	}
	env, err := e.WorkerEnv(db, sims, over...)
	if err != nil {
		return ProcDrain{}, err
	}
	d, err := e.procDrain(ctx, o, "worker", bin, env, sims, n, k, budget)
	if err != nil {
		return d, err
	}
	d.System, d.FillRate = "claudeq", fill
	counts, err := e.statuses(ctx, ids)
	if err != nil {
		return d, err
	}
	d.Succeeded = counts["succeeded"]
	if d.Persisted, err = e.countJobs(ctx, db); err != nil {
		return d, err
	}
	switch {
	case counts["failed"] > 0:
		return d, fmt.Errorf("%d of %d jobs failed (%v)", counts["failed"], k, counts)
	case d.Persisted < int64(d.Done) || d.Succeeded < d.Done:
		return d, fmt.Errorf("%d jobs done in the window but %d succeeded (%v), %d persisted", d.Done, d.Succeeded, counts, d.Persisted)
	}
	return d, nil
}

// procDrainBaseline enqueues k no-op tasks of the payload's size with a
// plain asynq client, then times n noopworker processes draining them.
func (e *Env) procDrainBaseline(ctx context.Context, o *Options, bin string, payload []byte, n, k int) (ProcDrain, error) {
	if err := e.Flush(ctx); err != nil {
		return ProcDrain{}, err
	}
	cfg, err := e.Config("unused")
	if err != nil {
		return ProcDrain{}, err
	}
	opt, err := redis.ParseURL(e.Redis.URL())
	if err != nil {
		return ProcDrain{}, err
	}
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c := asynq.NewClientFromRedisClient(rdb)
	t0 := time.Now()
	if err := Drive(ctx, 32, k, func(ctx context.Context, i int64) error {
		_, err := c.EnqueueContext(ctx, asynq.NewTask("bench:noop", payload), asynq.Queue(queue.Default),
			job.MaxRetry(cfg.JobMaxRetries), asynq.Timeout(cfg.JobTimeout))
		return err
	}); err != nil {
		return ProcDrain{}, fmt.Errorf("fill: %w", err)
	}
	fill := float64(k) / time.Since(t0).Seconds()
	d, err := e.procDrain(ctx, o, "noopworker", bin, e.Settings("unused"), nil, n, k, o.DrainBudget)
	if err != nil {
		return d, err
	}
	d.System, d.FillRate = "baseline", fill
	info, err := asynq.NewInspectorFromRedisClient(e.RDB).GetQueueInfo(queue.Default)
	if err != nil {
		return d, err
	}
	d.Succeeded = info.ProcessedTotal
	if d.Succeeded < d.Done {
		return d, fmt.Errorf("baseline: %d tasks processed, %d done", d.Succeeded, d.Done)
	}
	return d, nil
}

// procDrain pauses the default queue (holding k tasks), starts n
// processes of bin with env, waits until they have registered and the
// machine is quiet, unpauses the queue and times the drain.
func (e *Env) procDrain(ctx context.Context, o *Options, name, bin string, env map[string]string, sims Sims, n, k int, budget time.Duration) (ProcDrain, error) {
	if err := e.PauseDefault(); err != nil {
		return ProcDrain{}, err
	}
	w, err := e.StartWorkers(ctx, name, bin, n, env)
	if err != nil {
		return ProcDrain{}, err
	}
	defer w.Stop()
	e.settle(ctx, o)
	var c0, s0 time.Duration
	// Every 250 ms, the jobs done and the CPU every process used so far,
	// for the CPU per job over the first and the last quarter.
	type cpuPoint struct {
		done int64
		cpu  time.Duration
	}
	var pts []cpuPoint
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	sample := func() {
		if d, err := e.depth(ctx, queue.Default); err == nil {
			pts = append(pts, cpuPoint{int64(k) - d.pending - d.active - d.retry - d.scheduled, w.CPU() + sims.CPU() + selfCPU() + e.Redis.CPU()})
		}
	}
	st, err := e.drain(ctx, k, budget, func() error {
		c0, s0 = w.CPU(), sims.CPU()
		sample()
		go func() {
			defer close(sampled)
			for sctx.Err() == nil {
				sleep(sctx, 250*time.Millisecond)
				sample()
			}
		}()
		return e.ResumeDefault()
	})
	stopSampling()
	if err != nil {
		return ProcDrain{}, fmt.Errorf("%w (%s: %s)", err, name, w.Procs[0].Tail())
	}
	<-sampled
	d := ProcDrain{Procs: n, DrainStats: st, WorkerCPU: w.CPU() - c0, SimCPU: sims.CPU() - s0}
	// The CPU per job over the first and the last quarter of the jobs done.
	if q := int64(st.Done) / 4; q > 0 && len(pts) > 2 {
		at := func(done int64) int {
			for i, p := range pts {
				if p.done >= done {
					return i
				}
			}
			return len(pts) - 1
		}
		per := func(a, b cpuPoint) time.Duration {
			if b.done <= a.done {
				return 0
			}
			return (b.cpu - a.cpu) / time.Duration(b.done-a.done)
		}
		d.FirstQuarterCPU = per(pts[0], pts[at(q)])
		d.LastQuarterCPU = per(pts[at(int64(st.Done)-q)], pts[len(pts)-1])
	}
	_, d.WorkerRSS = w.RSS()
	if err := w.Stop(); err != nil {
		return d, err
	}
	return d, nil
}

// fillAPI submits k jobs through the api at base, 32 at a time, spread
// over keys in turn, and returns their ids and the submit rate.
func (e *Env) fillAPI(ctx context.Context, base string, keys []string, k int) ([]string, float64, error) {
	client := NewHTTPClient(32)
	defer client.CloseIdleConnections()
	subs := make([]*Submitter, len(keys))
	for i, key := range keys {
		subs[i] = &Submitter{Client: client, URL: base + "/api/claude/chat", Key: key}
	}
	var ids idList
	t0 := time.Now()
	if err := Drive(ctx, 32, k, func(ctx context.Context, i int64) error {
		id, err := subs[int(i)%len(subs)].Submit(ctx, i)
		if err == nil {
			ids.add(id)
		}
		return err
	}); err != nil {
		return nil, 0, fmt.Errorf("fill: %w", err)
	}
	return ids.all(), float64(k) / time.Since(t0).Seconds(), nil
}
