package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// PickupRun is S4 at one offered rate.
type PickupRun struct {
	Fraction     float64 // of the saturation
	Rate         float64 // offered, jobs/s
	Open         OpenStats
	Duration     time.Duration
	Jobs         int
	P50, P99     time.Duration
	Max          time.Duration
	Backlog      int64   // jobs waiting or running when sending stopped
	Busy, Others float64 // CPUs of the measured processes and of the rest of the machine while sending
}

// PickupResult is figure S4.
type PickupResult struct {
	Saturation float64 // jobs/s
	SatNote    string  // where Saturation came from
	Runs       []PickupRun
}

// Median returns, per fraction, the medians of the runs' p50 and p99.
func (p *PickupResult) Median(fraction float64) (p50, p99 time.Duration, runs []PickupRun) {
	var a, b []float64
	for _, r := range p.Runs {
		if r.Fraction == fraction {
			runs = append(runs, r)
			a, b = append(a, float64(r.P50)), append(b, float64(r.P99))
		}
	}
	return time.Duration(Median(a)).Round(time.Millisecond), time.Duration(Median(b)).Round(time.Millisecond), runs
}

// RunPickup measures figure S4: the api in this process, one worker
// process (cmd/worker, concurrency 100, TaskCheckInterval 20ms, upstream a
// claude-sim process at zero latency), jobs submitted through the api at
// a fixed open-loop rate — each fraction of the saturation, S1's median
// one-process claudeq drain rate — for PickupDuration; pick-up latency =
// sa − ca of every job's state hash, as in figure 3. Each rate runs
// PickupReps times (default Reps), alternating the order.
func RunPickup(ctx context.Context, e *Env, o *Options, w *WorkersResult) (*PickupResult, error) {
	so := o.ScaleOptions
	bin, err := e.Binary(ctx, WorkerPkg)
	if err != nil {
		return nil, err
	}
	sim, err := e.StartSim(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer sim.Stop(10 * time.Second)
	api, base, _, err := e.StartAPI(ctx, "pickupapi")
	if err != nil {
		return nil, err
	}
	defer func() { _ = StopApp(api) }()
	res := &PickupResult{}
	if w != nil && len(w.Of("claudeq", 1)) > 0 {
		res.Saturation = w.Median("claudeq", 1)
		res.SatNote = fmt.Sprintf("S1's median drain rate of one worker process over %d run(s)", len(w.Of("claudeq", 1)))
	} else {
		d, err := e.procDrainClaudeq(ctx, o, base, bin, Sims{sim}, 1, so.ProcJobs, o.DrainBudget)
		if err != nil {
			return nil, err
		}
		res.Saturation = d.JobsPerSec
		res.SatNote = fmt.Sprintf("one drain of %d jobs by one worker process, measured here (S1 was not run)", so.ProcJobs)
	}
	o.logf("pickup: saturation %.0f jobs/s (%s)", res.Saturation, res.SatNote)
	reps := so.PickupReps
	if reps <= 0 {
		reps = o.Reps
	}
	for rep := range reps {
		for k := range so.PickupFractions {
			i := k
			if rep%2 == 1 {
				i = len(so.PickupFractions) - 1 - k
			}
			f := so.PickupFractions[i]
			r, err := e.pickupRun(ctx, o, base, bin, sim, f, f*res.Saturation)
			if err != nil {
				return nil, err
			}
			res.Runs = append(res.Runs, r)
			o.logf("pickup %.0f%% (%.0f/s) rep %d/%d: p50 %v p99 %v max %v; %d jobs, %d left when sending stopped; busy %.2f CPUs, others %.2f",
				100*f, r.Rate, rep+1, reps, r.P50, r.P99, r.Max, r.Jobs, r.Backlog, r.Busy, r.Others)
		}
	}
	return res, e.Flush(ctx)
}

func (e *Env) pickupRun(ctx context.Context, o *Options, base, bin string, sim *SimProc, fraction, rate float64) (PickupRun, error) {
	r := PickupRun{Fraction: fraction, Rate: rate, Duration: o.PickupDuration}
	if err := e.Flush(ctx); err != nil {
		return r, err
	}
	db, err := e.NewDB(ctx, "pickup")
	if err != nil {
		return r, err
	}
	env, err := e.WorkerEnv(db, Sims{sim})
	if err != nil {
		return r, err
	}
	w, err := e.StartWorkers(ctx, "worker", bin, 1, env)
	if err != nil {
		return r, err
	}
	defer w.Stop()
	sleep(ctx, 200*time.Millisecond) // let the worker reach its idle polling
	e.settle(ctx, o)
	s := &Submitter{Client: NewHTTPClient(64), URL: base + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	var ids idList
	u0, c0, s0 := e.usage(), w.CPU(), sim.CPU()
	r.Open = OpenLoop(ctx, rate, r.Duration, 512, func(ctx context.Context, i int64) error {
		id, err := s.Submit(ctx, i)
		if err == nil {
			ids.add(id)
		}
		return err
	})
	u := e.usage().sub(u0)
	busy := u.Proc + u.Redis + w.CPU() - c0 + sim.CPU() - s0
	r.Busy = float64(busy) / float64(r.Duration)
	if u.Machine > 0 {
		r.Others = float64(max(0, u.Machine-busy)) / float64(r.Duration)
	}
	d, err := e.depth(ctx, "default")
	if err != nil {
		return r, err
	}
	r.Backlog = d.pending + d.active
	all := ids.all()
	if err := e.waitTerminal(ctx, all, 2*time.Minute); err != nil {
		return r, err
	}
	lat, ok, err := e.pickups(ctx, all)
	if err != nil {
		return r, err
	}
	if ok != len(all) {
		return r, fmt.Errorf("pickup: %d of %d jobs succeeded", ok, len(all))
	}
	r.Jobs = len(lat)
	if len(lat) > 0 {
		r.Max = slices.Max(lat)
	}
	r.P50, r.P99 = Percentile(slices.Clone(lat), 50), Percentile(slices.Clone(lat), 99)
	return r, w.Stop()
}
