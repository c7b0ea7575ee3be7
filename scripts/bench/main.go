// Command bench measures claudeq against its baselines on this machine and
// writes the report (docs/benchmarks.md under `make bench`). See package
// internal/bench for what is measured and how.
//
//	go run ./scripts/bench -out docs/benchmarks.md   # the full run, about 20 minutes
//	go run ./scripts/bench -quick -out /tmp/b.md     # smoke run, about two minutes
//	go run ./scripts/bench -only workers,slow,backlog,pickup,growth,tool -out /tmp/s.md  # issue #9's S figures
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/claudeq/claudeq/internal/bench"
)

func main() {
	if bench.IsChild() { // figure 7's simulator and gateways are this binary again
		os.Exit(bench.RunChild())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	def := bench.DefaultOptions()
	var (
		out      = flag.String("out", "", "write the Markdown report here (default: stdout)")
		quick    = flag.Bool("quick", false, "smoke run: short windows, fewer jobs, one repetition (numbers not comparable)")
		duration = flag.Duration("duration", 0, fmt.Sprintf("measured window of each submit run (default %v)", def.Duration))
		warmup   = flag.Duration("warmup", 0, fmt.Sprintf("warm-up before each submit window (default %v)", def.Warmup))
		clients  = flag.String("clients", "", "closed-loop clients of figure 1, comma-separated (default 32,64)")
		jobs     = flag.Int("jobs", 0, fmt.Sprintf("jobs drained in figure 2 (default %d)", def.Jobs))
		budget   = flag.Duration("drain-budget", 0, fmt.Sprintf("figure 2 reports the jobs done this long after the first pick-up if the queue is not empty by then (default %v)", def.DrainBudget))
		reps     = flag.Int("reps", 0, fmt.Sprintf("repetitions of every measurement (default %d)", def.Reps))
		latDur   = flag.Duration("latency-duration", 0, fmt.Sprintf("sending time of each figure-3 run (default %v)", def.LatencyDuration))
		rate     = flag.Float64("rate", 0, "figure 3's submit rate per second (default: half of figure 2's saturation, at most 1000)")
		only     = flag.String("only", "", "run only these figures, comma-separated: "+strings.Join(bench.FigureNames, ", "))
		prof     = flag.String("cpuprofile", "", "keep the CPU profiles of the extra profiled runs (submit-cN.pprof, e2e.pprof) in this directory")
		noProf   = flag.Bool("noprofile", false, "skip the extra profiled runs and the report's \"Where the time goes\"")
		pickDur  = flag.Duration("pick-duration", 0, fmt.Sprintf("figure 4: timed picks per strategy and fleet size (default %v)", def.PickDuration))
		moneyDur = flag.Duration("money-duration", 0, fmt.Sprintf("figure 6: window of each Reserve+Settle run (default %v)", def.MoneyDuration))
		procJobs = flag.Int("proc-jobs", 0, fmt.Sprintf("S1: jobs each worker-process drain handles (default %d)", def.ProcJobs))
		inflight = flag.String("slow-inflight", "", "S2: jobs in flight of each slow-upstream run, comma-separated (default 200,2000)")
		levels   = flag.String("backlog-levels", "", "S3: queued jobs at which Redis memory is measured, comma-separated (default 10000,100000,1000000)")
		msgRate  = flag.Float64("messages-rate", 0, "figure 7: open-loop rate of POST /v1/messages per second (default 1000)")
		msgConc  = flag.Int("messages-clients", 0, "figure 7: closed-loop clients of the one-core runs (default 64)")
		audRate  = flag.Float64("audit-rate", 0, fmt.Sprintf("figure 8: submit rate of the fixed-rate runs with and without the audit log (default %d)", bench.DefaultAuditRate))
	)
	flag.Parse()
	o := def
	if *quick {
		o = bench.QuickOptions()
	}
	if *duration > 0 {
		o.Duration = *duration
	}
	if *warmup > 0 {
		o.Warmup = *warmup
	}
	if *clients != "" {
		ns, err := positives("-clients", *clients)
		if err != nil {
			return err
		}
		o.Concurrency = ns
	}
	if *jobs > 0 {
		o.Jobs = *jobs
	}
	if *budget > 0 {
		o.DrainBudget = *budget
	}
	if *reps > 0 {
		o.Reps = *reps
	}
	if *latDur > 0 {
		o.LatencyDuration = *latDur
	}
	if *pickDur > 0 {
		o.PickDuration = *pickDur
	}
	if *moneyDur > 0 {
		o.MoneyDuration = *moneyDur
	}
	if *procJobs > 0 {
		o.ProcJobs = *procJobs
	}
	if *inflight != "" {
		ns, err := positives("-slow-inflight", *inflight)
		if err != nil {
			return err
		}
		o.SlowInFlight = ns
	}
	if *levels != "" {
		ns, err := positives("-backlog-levels", *levels)
		if err != nil {
			return err
		}
		o.BacklogLevels = ns
	}
	o.MessagesRate, o.MessagesClients = *msgRate, *msgConc
	o.AuditRate = *audRate
	if *noProf {
		o.Profile = false
	}
	o.LatencyRate = *rate
	if *only != "" {
		for _, f := range strings.Split(*only, ",") {
			f = strings.TrimSpace(f)
			if !slices.Contains(bench.FigureNames, f) {
				return fmt.Errorf("-only: unknown figure %q (want %s)", f, strings.Join(bench.FigureNames, ", "))
			}
			o.Figures = append(o.Figures, f)
		}
	}
	if *prof != "" {
		if err := os.MkdirAll(*prof, 0o755); err != nil {
			return err
		}
		o.ProfileDir = *prof
	}
	o.Command = strings.Join(append([]string{"go run ./scripts/bench"}, os.Args[1:]...), " ")
	o.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	r, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	w := os.Stdout
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := bench.Render(w, r); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: done in %v", time.Since(start).Round(time.Second))
	if *out != "" {
		fmt.Fprintf(os.Stderr, ", report in %s", *out)
	}
	fmt.Fprintln(os.Stderr)
	return nil
}

// positives parses a comma-separated list of positive numbers.
func positives(flag, list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive number", flag, s)
		}
		out = append(out, n)
	}
	return out, nil
}
