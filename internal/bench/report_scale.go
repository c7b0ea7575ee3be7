package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Targets of the S figures (issue #9).
const (
	ProcsTarget   = 0.5 // S1: claudeq with one worker process ≥ this × raw asynq with one
	ScaleUpTarget = 1.8 // S1: two worker processes ≥ this × one
)

// mb formats bytes as MiB with one decimal.
func mb(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// usPer formats d ÷ n in µs.
func usPer(d time.Duration, n int) string {
	if n <= 0 {
		return "—"
	}
	return num(float64(d) / float64(n) / 1e3)
}

// scaleSummary writes the S figures' rows of the summary table and
// returns the targets they missed.
func scaleSummary(p printer, r *Report) (misses []string) {
	if w := r.Workers; w != nil {
		one, raw1 := w.Median("claudeq", 1), w.Median("baseline", 1)
		if one > 0 && raw1 > 0 {
			ok := ratio(one, raw1) >= ProcsTarget
			p("| S1. end to end, 1 worker process vs raw asynq, 1 process | %s jobs/s | %s tasks/s | %s× | ≥ %s× | %s |", num(one), num(raw1), rx(ratio(one, raw1)), rx(ProcsTarget), verdict(ok))
			if !ok {
				misses = append(misses, fmt.Sprintf("S1: one claudeq worker process handles %s jobs/s, %s× raw asynq's %s no-op tasks/s with one process; the target is ≥ %s× (see S1 for where the CPU goes).",
					num(one), rx(ratio(one, raw1)), num(raw1), rx(ProcsTarget)))
			}
		}
		two, raw2 := w.Median("claudeq", 2), w.Median("baseline", 2)
		if one > 0 && two > 0 {
			ok := ratio(two, one) >= ScaleUpTarget
			p("| S1. end to end, 2 worker processes vs 1 | %s jobs/s | %s jobs/s (1 process) | %s× | ≥ %s× | %s |", num(two), num(one), rx(ratio(two, one)), rx(ScaleUpTarget), verdict(ok))
			if !ok {
				misses = append(misses, fmt.Sprintf("S1: two claudeq worker processes handle %s jobs/s, %s× one process's %s; the target is ≥ %s× until Redis saturates — here the machine's %s CPUs saturate first (see S1).",
					num(two), rx(ratio(two, one)), num(one), rx(ScaleUpTarget), r.Machine.NProc))
			}
		}
		if raw1 > 0 && raw2 > 0 {
			p("| S1. raw asynq, 2 processes vs 1 (for comparison) | %s tasks/s | %s tasks/s (1 process) | %s× | — | — |", num(raw2), num(raw1), rx(ratio(raw2, raw1)))
		}
	}
	if s := r.Slow; s != nil && len(s.Runs) > 0 {
		x := s.Runs[len(s.Runs)-1]
		ok := ratio(x.JobsPerSec, x.Ideal()) >= SlowTarget
		p("| S2. slow upstream (%v), %s jobs in flight, 1 worker process | %s jobs/s | %s jobs/s (in flight ÷ latency) | %s× | ≥ %s× | %s |",
			x.Latency, num(float64(x.InFlight)), num(x.JobsPerSec), num(x.Ideal()), rx(ratio(x.JobsPerSec, x.Ideal())), rx(SlowTarget), verdict(ok))
		if !ok {
			misses = append(misses, fmt.Sprintf("S2: with %s jobs in flight and a %v upstream, one worker process finishes %s jobs/s, %s× the ideal %s; the target is ≥ %s× (see S2).",
				num(float64(x.InFlight)), x.Latency, num(x.JobsPerSec), rx(ratio(x.JobsPerSec, x.Ideal())), num(x.Ideal()), rx(SlowTarget)))
		}
		okm := x.PeakRSS <= SlowRSSTarget
		p("| S2. worker RSS, %s jobs in flight: steady / peak | %s / %s MiB | | | peak ≤ %s MiB | %s |", num(float64(x.InFlight)), mb(x.WindowRSS), mb(x.PeakRSS), mb(SlowRSSTarget), verdict(okm))
		if !okm {
			misses = append(misses, fmt.Sprintf("S2: the worker process's RSS peaked at %s MiB with %s jobs in flight (%s MiB in the steady state); the target is ≤ %s MiB.",
				mb(x.PeakRSS), num(float64(x.InFlight)), mb(x.WindowRSS), mb(SlowRSSTarget)))
		}
		p("| S2. worker memory per job in flight | %s KiB | | | — | — |", num(x.PerJob()/1024))
	}
	if b := r.Backlog; b != nil && len(b.Levels) > 0 {
		last := b.Levels[len(b.Levels)-1]
		limit := float64(b.PayloadBytes + BacklogTarget)
		ok := last.BytesPerJob <= limit
		p("| S3. Redis bytes per queued job, %s queued | %s B | %d B payload + %d B | %s× | ≤ payload + %d B | %s |", num(float64(last.Queued)), num(last.BytesPerJob),
			b.PayloadBytes, BacklogTarget, rx(last.BytesPerJob/limit), BacklogTarget, verdict(ok))
		if !ok {
			misses = append(misses, fmt.Sprintf("S3: a queued job takes %s bytes of Redis memory at %s queued jobs, more than its %d-byte payload + %d B (see S3 for which keys).",
				num(last.BytesPerJob), num(float64(last.Queued)), b.PayloadBytes, BacklogTarget))
		}
		lo, hi := last.BytesPerJob, last.BytesPerJob
		for _, l := range b.Levels {
			lo, hi = min(lo, l.BytesPerJob), max(hi, l.BytesPerJob)
		}
		if b.ListpackBytes > 0 {
			p("| S3. Redis bytes per queued job, %s queued, with hash-max-listpack-value %d | %s B | %s B (Redis's default, 64) | %s× | — | — |", num(float64(b.APIJobs)), ListpackValue, num(b.ListpackBytes),
				num(b.DirectBytesAtAPIJobs), rx(ratio(b.ListpackBytes, b.DirectBytesAtAPIJobs)))
		}
		p("| S3. bytes per job, largest ÷ smallest over %s–%s queued | %s B | %s B | %s× | flat | — |", num(float64(b.Levels[0].Queued)), num(float64(last.Queued)), num(hi), num(lo), rx(ratio(hi, lo)))
		p("| S3. submit p50 / p99 at %s queued vs empty | %v / %v | %v / %v | %s× (p50) | unchanged | — |", num(float64(last.Queued)), ms(last.Submit.P50), ms(last.Submit.P99),
			ms(b.EmptySubmit.P50), ms(b.EmptySubmit.P99), rx(ratio(float64(last.Submit.P50), float64(b.EmptySubmit.P50))))
		if d := b.Drain; d != nil {
			t := d.Elapsed.Round(time.Second).String()
			if !d.Drained {
				t = fmt.Sprintf("%s for %s of them (budget)", t, num(float64(d.Done)))
			}
			p("| S3. time to drain %s queued jobs, 1 worker process | %s (%s jobs/s) | | | — | — |", num(float64(d.Jobs)), t, num(d.JobsPerSec))
		}
	}
	if pk := r.Pickup; pk != nil {
		for _, f := range fractions(pk) {
			p50, p99, _ := pk.Median(f)
			p("| S4. pick-up p50 / p99 at %.0f%% of saturation (%s jobs/s) | %v / %v | | | — | — |", 100*f, num(f*pk.Saturation), p50, p99)
		}
	}
	if g := r.Growth; g != nil && len(g.Rows) > 0 {
		k, busy := growthKnee(g)
		p("| S6. cost growth: busiest process over %d rows | %s (up to %.2f CPUs) | | | — | — |", len(g.Rows), k, busy)
	}
	if t := r.Tool; t != nil {
		lo, hi, _, _ := t.PerCore()
		p("| tool: requests one core of `claudeq loadtest` generates | %s–%s req/s per CPU-second | | | — | — |", num(lo), num(hi))
	}
	return misses
}

func fractions(pk *PickupResult) []float64 {
	var fs []float64
	for _, r := range pk.Runs {
		if !slices.Contains(fs, r.Fraction) {
			fs = append(fs, r.Fraction)
		}
	}
	slices.Sort(fs)
	return fs
}

// growthKnee names the process that was busiest in most rows, and the
// most CPUs it used in one.
func growthKnee(g *GrowthResult) (string, float64) {
	count := map[string]int{}
	most := map[string]float64{}
	for _, r := range g.Rows {
		b := r.Busiest()
		count[b.Name]++
		most[b.Name] = max(most[b.Name], b.Busy)
	}
	var best string
	for n, c := range count {
		if best == "" || c > count[best] || c == count[best] && most[n] > most[best] {
			best = n
		}
	}
	return best, most[best]
}

// renderScale writes the S figures' sections.
func renderScale(p printer, r *Report) {
	if r.Workers == nil && r.Slow == nil && r.Backlog == nil && r.Pickup == nil && r.Growth == nil && r.Tool == nil {
		return
	}
	p("## Scaling (issue #9)")
	p("")
	p("The S figures put worker *processes* to work: the real worker binary (`cmd/worker`, built at the start of the run) and, for the baselines, a raw asynq server binary (`internal/bench/noopworker`), each started with the same CLAUDEQ_* settings as everything else here, registered with asynq before the queue they drain is unpaused, and stopped with SIGINT afterwards. The upstream is a `claude-sim` process (`cmd/claude-sim`). The api, the embedded FerretDB (MongoDB wire, SQLite underneath) and the load generators stay in the bench process, so its CPU is mostly FerretDB's while workers drain. CPU is read per process from /proc (10 ms ticks). S5, the interactive `/v1/messages` latency and maximum rate, is its own figure.")
	p("")
	renderWorkers(p, r)
	renderSlow(p, r)
	renderBacklog(p, r)
	renderPickup(p, r)
	renderGrowth(p, r)
	renderTool(p, r)
}

func renderWorkers(p printer, r *Report) {
	w := r.Workers
	if w == nil {
		return
	}
	p("### S1. Throughput with 1 and 2 worker processes")
	p("")
	p("%d jobs are queued through the api with the default queue paused; then N worker processes (concurrency %d each, upstream one claude-sim process at zero latency, every job persisted with its ledger entry, its budget reservation settled, its answer cached) start, and the time from unpausing to an empty queue (first pick-up seen to nothing pending, active or retrying, polled every 2 ms) is measured, for at most %v. The baseline is N raw asynq server processes with the same concurrency, queues and TaskCheckInterval draining %d no-op tasks of the same payload size (%d bytes). CPU per job is each process's CPU during the drain ÷ jobs done.",
		w.Jobs, w.Concurrency, r.Options.DrainBudget, w.BaselineJobs, w.PayloadBytes)
	p("")
	p("| rep | system | processes | jobs/s | done | time | CPU µs/job: workers | bench process (FerretDB) | redis | simulator | **all** | busy (CPUs) | other load (CPUs) | worker RSS peak (MiB) | Redis commands/job |")
	p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	reps := map[string]int{}
	for _, d := range w.Runs {
		k := fmt.Sprint(d.System, d.Procs)
		reps[k]++
		done := fmt.Sprint(d.Done)
		if !d.Drained {
			done += " (budget)"
		}
		wk, bn, rd, sm := d.CPUPerJob()
		p("| %d | %s | %d | %s | %s | %v | %s | %s | %s | %s | **%s** | %.2f | %.2f | %s | %s |", reps[k], d.System, d.Procs, num(d.JobsPerSec), done, d.Elapsed.Round(time.Millisecond),
			num(float64(wk)/1e3), num(float64(bn)/1e3), num(float64(rd)/1e3), num(float64(sm)/1e3), num(float64(wk+bn+rd+sm)/1e3), d.Busy(), d.Others(), mb(d.WorkerRSS), d.Use.PerOp(d.Done))
	}
	for _, sys := range []string{"claudeq", "baseline"} {
		for _, n := range procCounts(w) {
			if len(w.Of(sys, n)) > 0 {
				p("| median | %s | %d | **%s** | | | | | | | | | | | |", sys, n, num(w.Median(sys, n)))
			}
		}
	}
	p("")
	// Where the knee is, from the medians of the one-process runs.
	var per, wk, bn, rd, sm []float64
	for _, d := range w.Of("claudeq", 1) {
		a, b, c, e := d.CPUPerJob()
		wk, bn, rd, sm = append(wk, float64(a)), append(bn, float64(b)), append(rd, float64(c)), append(sm, float64(e))
		per = append(per, float64(a+b+c+e))
	}
	one, two := w.Median("claudeq", 1), w.Median("claudeq", 2)
	if t := Median(per); t > 0 {
		ncpu := float64(r.Machine.GOMAXPROCS)
		ceiling := ncpu / (t / 1e9)
		p("Where the knee is: a claudeq job costs %s µs of CPU in all (median of the one-process runs): %s in the worker process, %s in the bench process (FerretDB storing the job, its conversation turn and ledger entry), %s in redis-server and %s in the simulator. However many worker processes run, %d CPUs cannot finish more than %d ÷ %s µs = **%s jobs/s**. One process reached %s jobs/s (%.0f%% of that ceiling)%s. Redis used %s µs per job: it would fill one CPU only at about %s jobs/s, so on this machine the CPUs run out before Redis does.",
			num(t/1e3), num(Median(wk)/1e3), num(Median(bn)/1e3), num(Median(rd)/1e3), num(Median(sm)/1e3), int(ncpu), int(ncpu), num(t/1e3), num(ceiling), num(one), 100*one/ceiling,
			twoNote(two, one, ceiling), num(Median(rd)/1e3), num(1e9/Median(rd)))
		p("")
		var others []float64
		for _, d := range w.Runs {
			if d.System == "claudeq" {
				others = append(others, d.Others())
			}
		}
		if o := Median(others); o > 0.2 {
			p("Other processes on the machine used a median %.2f CPUs during the claudeq drains (the *other load* column), CPUs the job path could not use: the ceiling above assumes the machine to itself.", o)
			p("")
		}
		p("The ≥ %s× target for a second worker process assumes a core free for it: it holds where Redis and MongoDB run on other machines (or more cores) — there each worker process needs about %s µs of CPU per job of its own, %s jobs/s per worker core — not on %d CPUs shared by workers, FerretDB, Redis and the simulator.",
			rx(ScaleUpTarget), num(Median(wk)/1e3), num(1e9/Median(wk)), int(ncpu))
		p("")
	}
}

// twoNote describes the two-process rate against one and the ceiling.
func twoNote(two, one, ceiling float64) string {
	if two <= 0 {
		return ""
	}
	return fmt.Sprintf(", two processes %s jobs/s (%.0f%%, %s× one)", num(two), 100*two/ceiling, rx(ratio(two, one)))
}

func procCounts(w *WorkersResult) []int {
	var ns []int
	for _, d := range w.Runs {
		if !slices.Contains(ns, d.Procs) {
			ns = append(ns, d.Procs)
		}
	}
	slices.Sort(ns)
	return ns
}

func renderSlow(p printer, r *Report) {
	s := r.Slow
	if s == nil || len(s.Runs) == 0 {
		return
	}
	so := r.Options.ScaleOptions
	p("### S2. Slow upstream: jobs in flight")
	p("")
	p("The simulator (a claude-sim process) answers every call after %v, like a real model. For each N, %d × N jobs are queued through the api with the queue paused; one worker process with CLAUDEQ_WORKER_CONCURRENCY=N drains them. Throughput is jobs ÷ the time from unpausing to an empty queue; the ideal is N ÷ %v. Every 50 ms the bench samples the jobs in flight (asynq's active list), the worker's RSS (/proc VmRSS) and its open file descriptors; *steady* is the mean over the samples with ≥ 95%% of N in flight, *idle* the RSS after start-up with nothing to do, and memory per job in flight = (steady − idle) ÷ mean in flight. The time a job spends in the worker beyond the upstream call is N ÷ throughput − %v.",
		so.SlowLatency, so.SlowRounds, so.SlowLatency, so.SlowLatency)
	p("")
	p("| in flight (N) | jobs | time | jobs/s | ideal | ratio | worker time per job beyond the call | mean in flight | RSS idle / steady / peak (MiB) | per job in flight (KiB) | open fds, peak | CPU µs/job: worker | FerretDB | redis | simulator | busy (CPUs) | other load (CPUs) |")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range s.Runs {
		extra := "—"
		if x.JobsPerSec > 0 {
			extra = (time.Duration(float64(x.InFlight)/x.JobsPerSec*float64(time.Second)) - x.Latency).Round(10 * time.Millisecond).String()
		}
		others := 0.0
		if x.Elapsed > 0 && x.Machine > 0 {
			others = float64(max(0, x.Machine-x.WorkerCPU-x.BenchCPU-x.RedisCPU-x.SimCPU)) / float64(x.Elapsed)
		}
		done := num(float64(x.Done))
		if !x.Drained {
			done += " (budget)"
		}
		p("| %s | %s | %v | %s | %s | %s× | %s | %s | %s / %s / %s | %s | %d | %s | %s | %s | %s | %.2f | %.2f |", num(float64(x.InFlight)), done, x.Elapsed.Round(10*time.Millisecond),
			num(x.JobsPerSec), num(x.Ideal()), rx(ratio(x.JobsPerSec, x.Ideal())), extra, num(x.MeanActive), mb(x.IdleRSS), mb(x.WindowRSS), mb(x.PeakRSS), num(x.PerJob()/1024), x.PeakFDs,
			usPer(x.WorkerCPU, x.Done), usPer(x.BenchCPU, x.Done), usPer(x.RedisCPU, x.Done), usPer(x.SimCPU, x.Done), x.Busy(), others)
	}
	p("")
	x := s.Runs[len(s.Runs)-1]
	if x.Done > 0 {
		c := float64(x.WorkerCPU+x.BenchCPU+x.RedisCPU+x.SimCPU) / float64(x.Done) // ns per job
		ncpu := float64(r.Machine.GOMAXPROCS)
		capacity := ncpu / (c / 1e9)
		wave := time.Duration(float64(x.InFlight) * c / ncpu)
		p("Why the ratio falls as N grows: a job costs %s µs of CPU in all here (worker, FerretDB, Redis, simulator), so %d CPUs finish at most %s jobs/s; N = %s jobs in flight with a %v call need %s jobs/s. And with a fixed latency the jobs run in waves — N calls start together and come back together — so each wave's N jobs are finished (stored, settled, cached, marked done) at once, which takes about N × %s µs ÷ %d CPUs = %v before their slots take new jobs: the model %v ÷ (%v + %v) = %s× of the ideal, against %s× measured. %s",
			num(c/1e3), int(ncpu), num(capacity), num(float64(x.InFlight)), x.Latency, num(x.Ideal()), num(c/1e3), int(ncpu), wave.Round(10*time.Millisecond),
			x.Latency, x.Latency, wave.Round(10*time.Millisecond), rx(float64(x.Latency)/float64(x.Latency+wave)), rx(ratio(x.JobsPerSec, x.Ideal())), slowCPUNote(s))
		p("")
		p("What would meet the target: holding the jobs costs memory (the table), not CPU; finishing them is the limit. ≥ %s× of %s jobs/s needs the job path to finish each wave within %.0f%% of the latency — about %s CPUs at this cost per job, or a job path about %s× cheaper on these %d. The worker process's own share is %s µs per job (%.0f%% of the cost); the rest is FerretDB, Redis and the simulator, which run on other machines in production, so there more worker cores (processes or machines) buy the throughput.",
			rx(SlowTarget), num(x.Ideal()), 100*(1/SlowTarget-1), num(float64(x.InFlight)*c/1e9/(x.Latency.Seconds()*(1/SlowTarget-1))),
			num(float64(x.InFlight)*c/1e9/(x.Latency.Seconds()*(1/SlowTarget-1))/ncpu), int(ncpu), usPer(x.WorkerCPU, x.Done), 100*float64(x.WorkerCPU)/float64(x.Done)/c)
		p("")
	}
	p("Limits on jobs in flight, none of which caps N here: asynq's concurrency is CLAUDEQ_WORKER_CONCURRENCY (default 100); the go-redis pool has max(64, concurrency + 16) connections, each with 8 KiB read and write buffers (`app.RedisBufferSize`; go-redis's default of 32 KiB each made those buffers most of a worker's memory at thousands of jobs in flight); the upstream HTTP client (`upstream.DefaultHTTPClient`) has no per-host connection cap (`MaxConnsPerHost` 0) and keeps up to 1,024 idle connections per host; the MongoDB driver's pool (64 connections, `store.Connect`) is not per job, because finished jobs are written in groups; the process needs a file descriptor per upstream and per Redis connection (the peak is in the table; Go raises the soft RLIMIT_NOFILE to the hard limit at start).")
	p("")
}

func renderBacklog(p printer, r *Report) {
	b := r.Backlog
	if b == nil {
		return
	}
	p("### S3. Queue scale: Redis memory, submit latency and drain time as the backlog grows")
	p("")
	p("No worker runs while the backlog is built. Redis bytes per queued job = (INFO memory `used_memory` less the client connections' buffers (`mem_clients_normal`), with the backlog − with an empty Redis) ÷ jobs queued; the task payload (the JSON job the worker receives: request, ids, hashes) is %d bytes.", b.PayloadBytes)
	p("")
	p("Through the api (HTTP, 32 clients): %s jobs left **%s bytes per job** (submitted at %s/s). Through the in-process fill, the api's own `quota.Reserve` and `queue.Submit` on the running app's clients without HTTP (used for the large backlogs, because the api cannot submit a million jobs in a few minutes on this machine): %s bytes per job at the same count. One api-queued job's keys (`MEMORY USAGE`, which counts the key, its value and its allocator overhead, not the queue's list entry or the reservation index):",
		num(float64(b.APIJobs)), num(b.APIBytesPerJob), num(b.APIFillRate), num(b.DirectBytesAtAPIJobs))
	p("")
	p("| key | bytes |")
	p("|---|---:|")
	var sum int64
	for _, k := range b.Keys {
		p("| `%s` (%s) | %s |", k.Key, k.What, num(float64(k.Bytes)))
		sum += k.Bytes
	}
	p("| the rest: an entry in the pending list (`asynq:{default}:pending`) and in the reservation index (`cq:q:{q}:pending`), the keyspace and expiry tables | %s |", num(b.APIBytesPerJob-float64(sum)))
	p("")
	if b.ListpackBytes > 0 {
		p("Redis keeps a hash compact (a listpack) only while every value is at most `hash-max-listpack-value` bytes, 64 by default; asynq's task hash holds the whole payload in one field, so each task hash is a full hash table. With `hash-max-listpack-value %d` (`CONFIG SET` or redis.conf; it applies to hashes created after it) the same %s in-process jobs take **%s bytes per job** instead of %s: a setting worth making on a queue Redis that holds large backlogs. The figures below use Redis's defaults.",
			ListpackValue, num(float64(b.APIJobs)), num(b.ListpackBytes), num(b.DirectBytesAtAPIJobs))
		p("")
	}
	if len(b.Keys) == 3 && len(b.Levels) > 0 {
		last := b.Levels[len(b.Levels)-1]
		over := last.BytesPerJob - float64(b.PayloadBytes)
		if over > BacklogTarget {
			save := ""
			if b.ListpackBytes > 0 {
				save = fmt.Sprintf("The listpack setting saves %s B (measured above);", num(b.DirectBytesAtAPIJobs-b.ListpackBytes))
			}
			p("What it would take to meet payload + %d B: a queued job costs %s B beyond its payload, %s B too many. By key: asynq's task hash adds %s B to the payload it holds (its own fields and a hash table per task), the job state hash takes %s B and the budget reservation %s B. %s the rest would need fewer or smaller keys per job — the reservation kept in the job's state hash instead of a hash of its own (which also stores the four budget counters' key names), which would save most of its %s B.",
				BacklogTarget, num(over), num(over-BacklogTarget), num(float64(b.Keys[1].Bytes-int64(b.PayloadBytes))), num(float64(b.Keys[0].Bytes)), num(float64(b.Keys[2].Bytes)),
				firstUpper(save), num(float64(b.Keys[2].Bytes)))
			p("")
		}
	}
	p("| queued jobs | used_memory less clients (MiB) | bytes per job | ÷ (payload + %d B) | in-process fill rate (jobs/s) | submit p50 | submit p99 | submit req/s (8 clients) |", BacklogTarget)
	p("|---:|---:|---:|---:|---:|---:|---:|---:|")
	p("| 0 | %s | — | — | — | %v | %v | %s |", mb(b.Empty), ms(b.EmptySubmit.P50), ms(b.EmptySubmit.P99), num(b.EmptySubmit.RPS))
	for _, l := range b.Levels {
		p("| %s | %s | %s | %s× | %s | %v | %v | %s |", num(float64(l.Queued)), mb(l.UsedMemory), num(l.BytesPerJob), rx(l.BytesPerJob/float64(b.PayloadBytes+BacklogTarget)),
			num(l.FillRate), ms(l.Submit.P50), ms(l.Submit.P99), num(l.Submit.RPS))
	}
	p("")
	p("Memory is read first at each level; then submit latency is measured with a closed loop of 8 clients through the api (HTTP) for %v after a 200 ms warm-up. Those submits join the backlog (the next level's fill counts them), so the latency at a level is measured with that many jobs queued or a few thousand more.", r.Options.BacklogProbe)
	if len(b.Levels) > 0 {
		last := b.Levels[len(b.Levels)-1]
		if b.BudgetHit || last.Queued < int64(b.Wanted[len(b.Wanted)-1]) {
			want := b.Wanted[len(b.Wanted)-1]
			p("**The fill stopped at %s jobs**: the %v fill budget ran out before %s. At %s bytes per job, %s queued jobs would take about %s MiB of Redis memory (an extrapolation, not a measurement).",
				num(float64(last.Queued)), b.FillBudget, num(float64(want)), num(last.BytesPerJob), num(float64(want)), num(last.BytesPerJob*float64(want)/(1<<20)))
		}
	}
	p("")
	if d := b.Drain; d != nil {
		state := fmt.Sprintf("drained all %s in %v", num(float64(d.Jobs)), d.Elapsed.Round(100*time.Millisecond))
		if !d.Drained {
			state = fmt.Sprintf("handled %s of %s within the %v budget", num(float64(d.Done)), num(float64(d.Jobs)), r.Options.BacklogDrainBudget)
		}
		p("Time to drain: %s jobs queued in process (at %s/s), then one worker process (concurrency 100, a claude-sim process at zero latency) %s: **%s jobs/s**, %s over the first quarter of the jobs and %s over the last. CPU per job: worker %s µs, FerretDB %s µs, redis %s µs; all processes together %s µs over the first quarter and %s µs over the last. %s",
			num(float64(d.Jobs)), num(b.DrainFillRate), state, num(d.JobsPerSec), num(d.FirstQuarterRate), num(d.LastQuarterRate),
			usPer(d.WorkerCPU, d.Done), usPer(d.Use.Proc, d.Done), usPer(d.Use.Redis, d.Done),
			num(float64(d.FirstQuarterCPU)/1e3), num(float64(d.LastQuarterCPU)/1e3), quarterNote(*d))
		if w := r.Workers; w != nil && w.Median("claudeq", 1) > 0 {
			p("S1's one-process drain of %s jobs ran at %s jobs/s.", num(float64(w.Jobs)), num(w.Median("claudeq", 1)))
		}
		p("")
	}
}

func renderPickup(p printer, r *Report) {
	pk := r.Pickup
	if pk == nil {
		return
	}
	p("### S4. Pick-up latency under load")
	p("")
	p("The api in the bench process, one worker process (concurrency 100, TaskCheckInterval 20ms, upstream a claude-sim process), jobs submitted through the api at a fixed open-loop rate for %v; pick-up latency = `sa` − `ca` of each job's state hash (ms resolution), as in figure 3. Saturation: %s jobs/s, %s. The api shares the machine with the worker here, while S1's drain had it to itself, so 90%% of S1's rate may be more than the two together can sustain: *left* is the jobs still waiting or running when sending stopped, which grows when they cannot keep up.",
		r.Options.PickupDuration, num(pk.Saturation), pk.SatNote)
	p("")
	p("| share of saturation | offered/s | rep | sent/s | jobs | p50 | p99 | max | left when sending stopped | busy (CPUs) | other load (CPUs) |")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, f := range fractions(pk) {
		p50, p99, runs := pk.Median(f)
		for i, x := range runs {
			p("| %.0f%% | %s | %d | %s | %d | %v | %v | %v | %d | %.2f | %.2f |", 100*f, num(x.Rate), i+1, num(x.Open.Achieved), x.Jobs, x.P50, x.P99, x.Max, x.Backlog, x.Busy, x.Others)
		}
		p("| %.0f%% | | median | | | **%v** | **%v** | | | | |", 100*f, p50, p99)
	}
	p("")
}

func renderGrowth(p printer, r *Report) {
	g := r.Growth
	if g == nil || len(g.Rows) == 0 {
		return
	}
	p("### S6. How cost grows")
	p("")
	p("Each row starts from the base (one user, one upstream node, one worker process of concurrency 100, %s jobs queued) and grows one dimension 10× or 100×. A row: a fresh database with the row's users' API keys (ten users per department); the backlog beyond %s jobs queued in process (S3's fill); %s jobs submitted through the api over HTTP, spread over the users (submit rate and CPU per job of the bench process and Redis); then one worker process with the row's concurrency and nodes (one claude-sim process per node, a nodes file) drains the queue for at most %v. CPU seconds per 1,000 jobs are each process's CPU during the drain ÷ jobs done × 1,000; busy is that process's CPU ÷ drain time.",
		num(float64(g.Jobs)), num(float64(g.Jobs)), num(float64(g.Jobs)), g.Window)
	p("")
	p("| grew | users | nodes | concurrency | backlog | jobs/s drained | done | submit req/s | submit CPU µs/job (api + redis) | CPU s/1k jobs: worker | FerretDB | Redis | simulators | **all** | worker RSS peak (MiB) | Redis used_memory (MiB) | busiest (CPUs) | Redis commands/job |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
	for _, row := range g.Rows {
		c, d := row.Case, row.Drain
		parts := row.Parts()
		var all float64
		for _, x := range parts {
			all += x.PerK
		}
		b := row.Busiest()
		done := fmt.Sprint(d.Done)
		if !d.Drained {
			done += " (window)"
		}
		p("| %s | %d | %d | %d | %s | %s | %s | %s | %s | %.2f | %.2f | %.2f | %.2f | **%.2f** | %s | %s | %s %.2f | %s |", c.Dim, c.Users, c.Nodes, c.Concurrency, num(float64(c.Backlog)),
			num(d.JobsPerSec), done, num(row.SubmitRate), num(float64(row.SubmitCPU)/1e3), parts[0].PerK, parts[1].PerK, parts[2].PerK, parts[3].PerK, all,
			mb(d.WorkerRSS), mb(row.RedisMem), b.Name, b.Busy, d.Use.PerOp(d.Done))
	}
	p("")
	k, busy := growthKnee(g)
	base := g.Rows[0]
	var lines []string
	for _, row := range g.Rows[1:] {
		lines = append(lines, fmt.Sprintf("%s ×%s: %s× the base's jobs/s, %s× its CPU per job", row.Case.Dim, growthFactor(base.Case, row.Case), rx(ratio(row.Drain.JobsPerSec, base.Drain.JobsPerSec)),
			rx(ratio(totalPerK(row), totalPerK(base)))))
	}
	p("Against the base row: %s.", strings.Join(lines, "; "))
	p("")
	var redisMax, allMax float64
	var allRow GrowthRow
	for _, row := range g.Rows {
		parts := row.Parts()
		redisMax = max(redisMax, parts[2].Busy)
		var t float64
		for _, x := range parts {
			t += x.Busy
		}
		if t > allMax {
			allMax, allRow = t, row
		}
	}
	order := slices.Clone(allRow.Parts())
	slices.SortFunc(order, func(a, b GrowthPart) int { return cmpFloat(b.Busy, a.Busy) })
	var ranked []string
	for _, x := range order {
		ranked = append(ranked, fmt.Sprintf("%s %.2f", x.Name, x.Busy))
	}
	p("The knee: the busiest process in most rows is **%s** (up to %.2f CPUs). FerretDB here is the embedded MongoDB-wire server of the bench process storing every finished job (its record, conversation turn and ledger entry, written in groups) in SQLite: it stands for \"Mongo writes\". The row that kept the most CPU busy (%s ×%s, %.2f CPUs of %s) split it as %s; Redis used at most %.2f of a CPU in any row. So on this machine the job path is bounded by the CPUs the processes share, and the first to run out is %s — not Redis, which saturates only when it reaches a whole CPU.",
		k, busy, allRow.Case.Dim, growthFactor(g.Rows[0].Case, allRow.Case), allMax, r.Machine.NProc, strings.Join(ranked, ", "), redisMax, k)
	p("")
}

func totalPerK(g GrowthRow) float64 {
	var t float64
	for _, x := range g.Parts() {
		t += x.PerK
	}
	return t
}

// growthFactor says how much c grew from base ("10", "100", "0.1").
func growthFactor(base, c GrowthCase) string {
	f := 1.0
	switch c.Dim {
	case "users":
		f = float64(c.Users) / float64(base.Users)
	case "nodes":
		f = float64(c.Nodes) / float64(base.Nodes)
	case "concurrency":
		f = float64(c.Concurrency) / float64(base.Concurrency)
	case "backlog":
		f = float64(c.Backlog) / float64(base.Backlog)
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", f), "0"), ".")
}

func renderTool(p printer, r *Report) {
	t := r.Tool
	if t == nil {
		return
	}
	lo, hi, loName, hiName := t.PerCore()
	p("### The load generator: what one core generates")
	p("")
	p("`%s`: the generator of `claudeq loadtest` (async mode, submit only, the tool's cheapest request) with GOMAXPROCS=%d against a trivial server in another process that answers 202 at once; %v per run. CPU per request is the generator process's own CPU ÷ requests, so it does not depend on what else the machine does; the achieved rates do (the trivial server and the rest of the machine share the other core).", t.Command, t.GOMAXPROCS, t.Duration)
	p("")
	p("| run | target req/s | achieved req/s | errors | p99 | CPU per request | req/s per CPU-second |")
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, x := range t.Runs {
		target := "—"
		if x.Target > 0 {
			target = num(x.Target)
		}
		p("| %s | %s | %s | %d | %v | %v | %s |", x.Name, target, num(x.RPS), x.Errors, ms(x.P99), x.CPUPerRequest.Round(100*time.Nanosecond), num(x.PerCoreRPS))
	}
	p("")
	p("**One core of the tool generates %s–%s requests per CPU-second**: %s in the %s run, %s in the %s run. A paced open loop costs more per request than the unpaced loops when it falls behind its schedule (each tick that finds no idle worker starts a new one, with its own connection), which a busy machine makes happen. The api of this installation accepts a few thousand submits per second (figure 1), so one core of the tool is enough to load it; the report of every `claudeq loadtest` run gives the generator's own CPU, to check.",
		num(lo), num(hi), num(lo), loName, num(hi), hiName)
	p("")
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// slowCPUNote compares the worker's CPU per job at the lowest and the
// highest number of jobs in flight.
func slowCPUNote(s *SlowResult) string {
	a, b := s.Runs[0], s.Runs[len(s.Runs)-1]
	if len(s.Runs) < 2 || a.Done == 0 || b.Done == 0 {
		return ""
	}
	ca, cb := float64(a.WorkerCPU)/float64(a.Done), float64(b.WorkerCPU)/float64(b.Done)
	return fmt.Sprintf("Holding more jobs in flight changes the worker's own CPU per job from %s µs (N = %s) to %s µs (N = %s), %s×.",
		num(ca/1e3), num(float64(a.InFlight)), num(cb/1e3), num(float64(b.InFlight)), rx(ratio(cb, ca)))
}

// quarterNote says whether a drain's rate and CPU per job changed between
// its first and last quarter.
func quarterNote(d ProcDrain) string {
	if d.FirstQuarterRate <= 0 || d.LastQuarterRate <= 0 || d.FirstQuarterCPU <= 0 || d.LastQuarterCPU <= 0 {
		return ""
	}
	rate := d.LastQuarterRate / d.FirstQuarterRate
	cpu := float64(d.LastQuarterCPU) / float64(d.FirstQuarterCPU)
	switch {
	case rate >= 0.85 && cpu <= 1.15:
		return "The rate and the cost per job held steady through the drain."
	case cpu > 1.15:
		return fmt.Sprintf("The CPU per job grew %s× from the first quarter to the last: a cost per job that grows with the work already done (the records already stored: FerretDB's SQLite tables and indexes grow with every job).", rx(cpu))
	default:
		return fmt.Sprintf("The rate fell to %s× while the CPU per job stayed within %s×: the drain was slowed by CPU taken elsewhere (see the other load of the S1 rows), not by a cost that grows with the backlog.", rx(rate), rx(cpu))
	}
}

func firstUpper(s string) string {
	if s == "" {
		return "So"
	}
	return s
}
