package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// SlowRun is one run of figure S2: one worker process with concurrency
// InFlight against a simulator answering after Latency.
type SlowRun struct {
	InFlight   int
	Latency    time.Duration
	Jobs       int
	Done       int
	Drained    bool
	Elapsed    time.Duration // queue unpaused → empty (or the budget), sampled every 50 ms
	JobsPerSec float64       // Done ÷ Elapsed
	// The steady state: the samples with at least 95 % of InFlight jobs
	// in flight, from the first to the last.
	Window     time.Duration
	MeanActive float64 // jobs in flight, averaged over the window
	// Memory of the worker process: before the queue was unpaused (idle,
	// registered), its mean and peak RSS in the window, and its peak open
	// file descriptors (upstream and Redis connections).
	IdleRSS, WindowRSS, PeakRSS int64
	PeakFDs                     int
	// CPU during Elapsed.
	WorkerCPU, BenchCPU, RedisCPU, SimCPU time.Duration
	Machine                               time.Duration
	FillRate                              float64
	Persisted                             int64
}

// Ideal returns in-flight ÷ latency, the throughput of a worker that adds
// no time to a call.
func (s SlowRun) Ideal() float64 { return float64(s.InFlight) / s.Latency.Seconds() }

// PerJob returns the worker's memory per job in flight: (window RSS −
// idle RSS) ÷ mean in flight.
func (s SlowRun) PerJob() float64 {
	if s.MeanActive <= 0 {
		return 0
	}
	return float64(s.WindowRSS-s.IdleRSS) / s.MeanActive
}

// Busy returns the CPUs the measured processes used during the drain.
func (s SlowRun) Busy() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.WorkerCPU+s.BenchCPU+s.RedisCPU+s.SimCPU) / float64(s.Elapsed)
}

// SlowResult is figure S2.
type SlowResult struct {
	Runs []SlowRun
}

// SlowRSSTarget is S2's bound on the worker's RSS with 2,000 jobs in
// flight, and SlowTarget its throughput target as a share of the ideal.
const (
	SlowRSSTarget = 300 << 20
	SlowTarget    = 0.9
)

// RunSlow measures figure S2: for each in-flight level N, rounds × N jobs
// are queued through the api (in this process), then one worker process
// (cmd/worker) with CLAUDEQ_WORKER_CONCURRENCY=N drains them against a
// claude-sim process that answers every call after SlowLatency. Every
// 50 ms the bench samples the jobs done and in flight (asynq's active
// list), the worker's RSS and open descriptors and the CPU of every
// process. Throughput is jobs ÷ the time from unpausing the queue to its
// being empty: with the latency fixed, jobs run in waves of N, so any
// shorter window would depend on where it cuts the waves.
func RunSlow(ctx context.Context, e *Env, o *Options) (*SlowResult, error) {
	so := o.ScaleOptions
	bin, err := e.Binary(ctx, WorkerPkg)
	if err != nil {
		return nil, err
	}
	sim, err := e.StartSim(ctx, so.SlowLatency)
	if err != nil {
		return nil, err
	}
	defer sim.Stop(10 * time.Second)
	api, base, _, err := e.StartAPI(ctx, "slowfill")
	if err != nil {
		return nil, err
	}
	defer func() { _ = StopApp(api) }()
	res := &SlowResult{}
	for _, n := range so.SlowInFlight {
		r, err := e.slowRun(ctx, o, base, bin, sim, n)
		if err != nil {
			return nil, err
		}
		res.Runs = append(res.Runs, r)
		o.logf("slow in-flight %d, latency %v: %.0f jobs/s (ideal %.0f, %.2f×), mean active %.0f; RSS idle %d MB, window %d MB, peak %d MB (%.0f kB per job in flight); %d fds; busy %.2f CPUs",
			n, r.Latency, r.JobsPerSec, r.Ideal(), ratio(r.JobsPerSec, r.Ideal()), r.MeanActive, r.IdleRSS>>20, r.WindowRSS>>20, r.PeakRSS>>20,
			r.PerJob()/1024, r.PeakFDs, r.Busy())
	}
	return res, nil
}

type slowSample struct {
	t                  time.Time
	done, active, left int64
	pending            int64
	rss                int64
	fds                int
	worker, sim        time.Duration
	use                Usage
}

func (e *Env) slowRun(ctx context.Context, o *Options, base, bin string, sim *SimProc, n int) (SlowRun, error) {
	so := o.ScaleOptions
	k := so.SlowRounds * n
	r := SlowRun{InFlight: n, Latency: so.SlowLatency, Jobs: k}
	if err := e.Flush(ctx); err != nil {
		return r, err
	}
	_, fill, err := e.fillAPI(ctx, base, []string{e.Key}, k)
	if err != nil {
		return r, err
	}
	r.FillRate = fill
	db, err := e.NewDB(ctx, "slow")
	if err != nil {
		return r, err
	}
	env, err := e.WorkerEnv(db, Sims{sim}, "CLAUDEQ_WORKER_CONCURRENCY", strconv.Itoa(n))
	if err != nil {
		return r, err
	}
	if err := e.PauseDefault(); err != nil {
		return r, err
	}
	w, err := e.StartWorkers(ctx, "worker", bin, 1, env)
	if err != nil {
		return r, err
	}
	defer w.Stop()
	proc := w.Procs[0]
	e.settle(ctx, o)
	r.IdleRSS, _ = proc.RSS()
	s0 := slowSample{worker: proc.CPU(), sim: sim.CPU(), use: e.usage()}
	if err := e.ResumeDefault(); err != nil {
		return r, err
	}
	// The whole drain at most: the ideal time twice over, plus a minute.
	budget := 2*time.Duration(float64(k)/r.Ideal()*float64(time.Second)) + time.Minute
	var samples []slowSample
	t0 := time.Now()
	for {
		sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		d, err := e.depth(ctx, "default")
		if err != nil {
			continue
		}
		s := slowSample{t: time.Now(), pending: d.pending, active: d.active, left: d.pending + d.active + d.retry + d.scheduled,
			worker: proc.CPU(), sim: sim.CPU(), use: e.usage(), fds: countFDs(proc.PID())}
		s.rss, _ = proc.RSS()
		s.done = int64(k) - s.left
		samples = append(samples, s)
		if proc.Exited() {
			return r, fmt.Errorf("worker exited: %s", proc.Tail())
		}
		if s.left == 0 || time.Since(t0) > budget {
			break
		}
	}
	last := samples[len(samples)-1]
	r.Done, r.Drained = int(last.done), last.left == 0
	first := 0
	for first < len(samples) && samples[first].pending == int64(k) {
		first++
	}
	if first == len(samples) {
		return r, fmt.Errorf("slow: no job picked up")
	}
	r.Elapsed = last.t.Sub(t0)
	r.JobsPerSec = float64(r.Done) / r.Elapsed.Seconds()
	// The steady state, for memory: the samples with at least 95 % of n
	// jobs in flight (or, if the worker never got there, with jobs still
	// waiting).
	var win []slowSample
	for _, s := range samples[first:] {
		if s.active >= int64(n)*95/100 {
			win = append(win, s)
		}
	}
	if len(win) == 0 {
		for _, s := range samples[first:] {
			if s.pending > 0 {
				win = append(win, s)
			}
		}
	}
	if len(win) == 0 {
		return r, fmt.Errorf("slow: no sample with jobs in flight (%d jobs)", k)
	}
	r.Window = win[len(win)-1].t.Sub(win[0].t)
	var act, rss float64
	for _, s := range win {
		act += float64(s.active)
		rss += float64(s.rss)
	}
	r.MeanActive, r.WindowRSS = act/float64(len(win)), int64(rss/float64(len(win)))
	for _, s := range samples {
		r.PeakFDs = max(r.PeakFDs, s.fds)
	}
	_, r.PeakRSS = proc.RSS()
	u := last.use.sub(s0.use)
	r.WorkerCPU, r.SimCPU, r.BenchCPU, r.RedisCPU, r.Machine = last.worker-s0.worker, last.sim-s0.sim, u.Proc, u.Redis, u.Machine
	if err := w.Stop(); err != nil {
		return r, err
	}
	if r.Persisted, err = e.countJobs(ctx, db); err != nil {
		return r, err
	}
	if r.Persisted < int64(r.Done) {
		return r, fmt.Errorf("slow: %d jobs done, %d persisted", r.Done, r.Persisted)
	}
	return r, nil
}

// countFDs returns how many file descriptors pid has open (0 where
// unknown).
func countFDs(pid int) int {
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0
	}
	return len(es)
}
