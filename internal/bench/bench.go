// Package bench measures claudeq against minimal baselines on one machine,
// in one run, and renders the result as docs/benchmarks.md
// (scripts/bench is the command; `make bench` runs it).
//
// Each figure puts claudeq (the subject) next to a baseline that does the
// irreducible part of the same work with the same infrastructure, run
// interleaved with it, a few times, and reports medians and the ratio of
// medians: the machines it runs on are small and noisy, so absolute numbers
// vary from run to run while ratios stay comparable.
//
//  1. Submit throughput: POST /api/claude/chat (auth, validation, cache
//     lookup, state hash, enqueue) against an Echo handler that only
//     enqueues a task of the same payload size. Closed loop, no worker.
//  2. End-to-end jobs/s: K queued jobs drained by the worker role (upstream
//     simulator at zero latency, FerretDB persistence) against a raw asynq
//     server draining K no-op tasks.
//  3. Enqueue-to-pick-up latency, p50 and p99, at half the saturation rate
//     of figure 2, open loop, with the configured 20 ms TaskCheckInterval
//     and with asynq's default 1 s.
//  4. Balancer pick cost: upstream.Fleet.Pick in a tight loop, per
//     strategy, with 3 and 50 nodes, against one Redis round trip.
//  5. End-to-end jobs/s with three simulator nodes against figure 2's one
//     (interleaved with figure 2's runs).
//  6. Money: quota Reserve+Settle pairs per second against two no-op Lua
//     round trips, and figure 1 with budgets configured against without
//     (interleaved with figure 1's runs).
//  7. The Anthropic-compatible API: POST /v1/messages through the gateway
//     against calling the simulator directly — added latency at
//     concurrency 1 and at 1,000 requests/s open loop, and the most
//     requests/s with gateway and simulator on one core — with auth,
//     budgets and audit on and off (messages.go; the simulator and the
//     gateways run as child processes, see RunChild).
//
// The S figures of issue #9 (worker processes, slow upstream, queue
// scale, pick-up under load, cost growth, the load generator's rate) run
// the worker, the simulator and the CLI as child processes: see scale.go.
//
// After the measured runs, one extra submit window and one extra drain are
// CPU-profiled (not counted), and the report says where their time went.
//
// Everything runs in this process except redis-server, which is started
// as a child on a free 127.0.0.1 port without persistence and killed at
// the end. No traffic leaves 127.0.0.1.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Options shape a run.
type Options struct {
	Duration        time.Duration // measured window of each submit run
	Warmup          time.Duration // before each submit window
	Concurrency     []int         // closed-loop clients of figure 1
	Jobs            int           // K of figure 2
	DrainBudget     time.Duration // figure 2 stops waiting for a drain this long after the first pick-up
	Reps            int           // repetitions of every measurement
	LatencyDuration time.Duration // open-loop sending time of each figure-3 run…
	LatencyMinJobs  int           // …or longer, until this many jobs are sent…
	LatencyMaxDur   time.Duration // …but not longer than this
	LatencyRate     float64       // figure 3's rate; 0: half of figure 2's median, capped
	LatencyCap      float64       // cap of the derived rate
	MachineIdleWait time.Duration // before each run, wait at most this long for other processes to go quiet
	PickDuration    time.Duration // figure 4: measured picks of each strategy and node count
	FleetNodes      int           // figure 5: simulator nodes of the fleet run
	MoneyDuration   time.Duration // figure 6: measured window of each Reserve+Settle run
	MoneyClients    int           // figure 6: goroutines calling Reserve+Settle
	MessagesRate    float64       // figure 7: open-loop rate of POST /v1/messages; 0: 1000/s
	MessagesClients int           // figure 7: closed-loop clients of the one-core runs and the profile; 0: 64
	AuditRate       float64       // figure 8: submit rate of the fixed-rate runs; 0: DefaultAuditRate
	Profile         bool          // profile one extra submit window and drain, and summarise them in the report
	Figures         []string      // see FigureNames; empty: all
	ProfileDir      string        // when set, the CPU profiles are written here (and Profile is implied)
	Command         string        // how the run was started, for the report
	Log             io.Writer     // progress lines; nil: none
	ScaleOptions                  // the S figures of issue #9 (scale.go)
}

// DefaultOptions is `make bench`: about twenty minutes on two cores.
func DefaultOptions() Options {
	return Options{Duration: 5 * time.Second, Warmup: time.Second, Concurrency: []int{32, 64}, Jobs: 5000, DrainBudget: 20 * time.Second, Reps: 3,
		LatencyDuration: 5 * time.Second, LatencyMinJobs: 60, LatencyMaxDur: 12 * time.Second, LatencyCap: 1000,
		MachineIdleWait: 5 * time.Second, PickDuration: time.Second, FleetNodes: 3, MoneyDuration: 3 * time.Second, MoneyClients: 64,
		Profile: true, ScaleOptions: DefaultScaleOptions()}
}

// QuickOptions is a smoke run of every figure in about two minutes; its
// numbers are not worth comparing.
func QuickOptions() Options {
	return Options{Duration: time.Second, Warmup: 300 * time.Millisecond, Concurrency: []int{32}, Jobs: 1000, DrainBudget: 10 * time.Second, Reps: 1,
		LatencyDuration: 2 * time.Second, LatencyMinJobs: 20, LatencyMaxDur: 4 * time.Second, LatencyCap: 1000,
		MachineIdleWait: time.Second, PickDuration: 200 * time.Millisecond, FleetNodes: 3, MoneyDuration: 500 * time.Millisecond, MoneyClients: 64,
		ScaleOptions: QuickScaleOptions()}
}

// FigureNames are the figures -only accepts: submit (1, with figure 6's
// submit-with-budgets runs), e2e (2), latency (3), pick (4), fleet (5, with
// figure 2's claudeq runs as its one-node side), money (6's Reserve+Settle),
// messages (7, POST /v1/messages against the simulator), audit (8's
// fixed-rate and api-on-one-core parts; its closed loop comes with submit).
var FigureNames = []string{"submit", "e2e", "latency", "pick", "fleet", "money", "messages", "audit"}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

func (o *Options) wants(fig string) bool {
	if len(o.Figures) == 0 {
		return true
	}
	for _, f := range o.Figures {
		if f == fig {
			return true
		}
	}
	return false
}

// Intervals are the TaskCheckIntervals of figure 3: claudeq's default and
// asynq's.
var Intervals = []time.Duration{20 * time.Millisecond, time.Second}

// Report is everything a run measured.
type Report struct {
	Machine  Machine
	Options  Options
	Submit   []SubmitResult
	Audit    *AuditLatency // figure 8's fixed-rate part
	AuditAPI *AuditOneCore // figure 8's api-on-one-core part
	E2E      *E2EResult
	Latency  []LatencyResult
	Pick     *PickResult
	Money    *MoneyResult
	Messages *MessagesResult  // figure 7
	Profiles []ProfileSummary // where the time of the profiled runs went
	RateNote string           // how figure 3's rate was chosen
	Warnings int              // warnings and errors the app logged during the run
	FirstLog []string         // the distinct ones, with their counts
	Started  time.Time
	Took     time.Duration

	ScaleReport // the S figures of issue #9 (scale.go)
}

// Run starts the environment, runs the chosen figures and returns their
// report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Reps < 1 {
		o.Reps = 1
	}
	r := &Report{Options: o, Started: time.Now()}
	e, err := NewEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	r.Machine = ReadMachine(e.Redis.Version)
	o.logf("bench: redis-server %s at %s, FerretDB at %s, simulator at %s", r.Machine.Redis, e.Redis.Addr, e.Mongo, e.SimURL)

	if o.ProfileDir == "" && o.Profile {
		o.ProfileDir = filepath.Join(e.Dir, "profiles")
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	if o.wants("submit") {
		var prof *ProfileSummary
		if r.Submit, prof, err = RunSubmit(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figure 1 (submit): %w", err)
		}
		if prof != nil {
			r.Profiles = append(r.Profiles, *prof)
		}
	}
	if o.wants("audit") {
		if r.Audit, err = runAuditLatency(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figure 8 (audit log, fixed rate): %w", err)
		}
		if r.AuditAPI, err = runAuditOneCore(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figure 8 (audit log, api on one core): %w", err)
		}
	}
	if o.wants("e2e") || o.wants("fleet") {
		var prof *ProfileSummary
		if r.E2E, prof, err = RunE2E(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figures 2 and 5 (end to end): %w", err)
		}
		if prof != nil {
			r.Profiles = append(r.Profiles, *prof)
		}
	}
	if o.wants("pick") {
		if r.Pick, err = RunPick(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figure 4 (balancer pick): %w", err)
		}
	}
	if o.wants("money") {
		if r.Money, err = RunMoney(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figure 6 (reserve and settle): %w", err)
		}
	}
	if o.wants("messages") {
		if r.Messages, err = RunMessages(ctx, e, &o); err != nil {
			return nil, fmt.Errorf("figure 7 (POST /v1/messages): %w", err)
		}
	}
	if o.wants("latency") {
		rate := o.LatencyRate
		switch {
		case rate > 0:
			r.RateNote = fmt.Sprintf("%.0f/s, set with -rate", rate)
		case r.E2E != nil && len(r.E2E.Subject) > 0:
			sat := Median(jobsPerSec(r.E2E.Subject))
			rate = sat / 2
			r.RateNote = fmt.Sprintf("half of figure 2's median claudeq saturation (%.0f jobs/s)", sat)
			if o.LatencyCap > 0 && rate > o.LatencyCap {
				rate = o.LatencyCap
				r.RateNote += fmt.Sprintf(", capped at %.0f/s", o.LatencyCap)
			}
		default:
			rate = 200
			r.RateNote = "200/s: figure 2 was not run, so its saturation rate is unknown"
		}
		if r.Latency, err = RunLatency(ctx, e, &o, rate, Intervals); err != nil {
			return nil, fmt.Errorf("figure 3 (latency): %w", err)
		}
	}
	if err := runScale(ctx, e, &o, r); err != nil {
		return nil, err
	}
	r.Warnings, r.FirstLog = e.Log.Counts()
	r.Took = time.Since(r.Started)
	return r, nil
}

func jobsPerSec(ds []DrainStats) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.JobsPerSec
	}
	return out
}

// Machine describes where a run happened.
type Machine struct {
	NProc      string
	GOMAXPROCS int
	CPU        string
	RAM        string
	Kernel     string
	Go         string
	Redis      string
	Commit     string
	TempDir    string // where FerretDB keeps its SQLite files, and its file system
	Date       time.Time
}

// ReadMachine collects the machine's description (Linux sources; fields it
// cannot read are "unknown").
func ReadMachine(redisVersion string) Machine {
	m := Machine{GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(), Date: time.Now().UTC(),
		NProc: fmt.Sprint(runtime.NumCPU()), CPU: "unknown", RAM: "unknown", Kernel: runtime.GOOS, Redis: redisVersion, Commit: "unknown"}
	if out, err := exec.Command("nproc").Output(); err == nil {
		m.NProc = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb); err == nil {
					m.RAM = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.Commit += " + uncommitted changes"
		}
	}
	m.TempDir = os.TempDir()
	if out, err := exec.Command("stat", "-f", "-c", "%T", m.TempDir).Output(); err == nil {
		m.TempDir += " (" + strings.TrimSpace(string(out)) + ")"
	}
	if v := strings.Fields(redisVersion); len(v) >= 3 {
		m.Redis = strings.TrimPrefix(v[2], "v=")
	}
	return m
}
