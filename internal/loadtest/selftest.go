package loadtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// trivialBody is TrivialHandler's answer.
var trivialBody = []byte(`{"id":"job_selftest","status":"queued","status_url":"/api/claude/jobs/job_selftest"}`)

// TrivialHandler answers every request at once with 202 and a queued job:
// the cheapest possible server, to measure the generator against.
func TrivialHandler() http.Handler {
	clen := []string{strconv.Itoa(len(trivialBody))}
	ctype := []string{"application/json"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = clen
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(trivialBody)
	})
}

// SelfTestResult is what SelfTest measured: the request rates this process
// generates against a server that costs (almost) nothing.
type SelfTestResult struct {
	GOMAXPROCS int           `json:"gomaxprocs"`
	Duration   time.Duration `json:"duration_ns"` // of each run
	Runs       []SelfTestRun `json:"runs"`
}

// SelfTestRun is one run of SelfTest.
type SelfTestRun struct {
	Name     string  `json:"name"`
	Target   float64 `json:"target_rps,omitempty"` // paced runs
	RPS      float64 `json:"rps"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	// P99 is the request latency's (open loop: from the intended send).
	P99 time.Duration `json:"p99_ns"`
	// CPUPerRequest is this process's CPU time (user+system) per request;
	// 1 s / CPUPerRequest is the rate one fully used core would generate,
	// whatever else the machine is doing. 0 where it is not measured.
	CPUPerRequest time.Duration `json:"cpu_per_request_ns"`
	PerCoreRPS    float64       `json:"per_core_rps,omitempty"`
}

// SelfTest measures how many requests per second this process generates
// (async submit-only, the tool's cheapest request) against url, which
// should serve TrivialHandler from another process. Run it with the
// GOMAXPROCS to measure (the CLI sets 1: one core). It makes three runs of
// d each: an open loop as fast as 64 workers go, a closed loop of 64 users,
// and an open loop paced at half the first run's rate (does the generator
// keep its schedule?).
func SelfTest(ctx context.Context, url string, d time.Duration) (*SelfTestResult, error) {
	const workers, users = 64, 64
	res := &SelfTestResult{GOMAXPROCS: runtime.GOMAXPROCS(0), Duration: d}
	base := Config{URL: url, Key: "selftest", Mode: ModeAsync, SubmitOnly: true, Duration: d,
		PromptTokens: DefaultPromptTokens, Timeout: d + time.Minute}
	run := func(name string, c Config) (*SelfTestRun, error) {
		runtime.GC()
		cpu0 := processCPU()
		rep, err := Run(ctx, c)
		if err != nil {
			return nil, err
		}
		cpu := processCPU() - cpu0
		r := SelfTestRun{Name: name, Target: c.Rate, RPS: rep.RPS, Requests: rep.Requests, Errors: rep.Errors}
		if rep.Latency != nil {
			r.P99 = rep.Latency.P99
		}
		if cpu > 0 && rep.Requests > 0 {
			r.CPUPerRequest = cpu / time.Duration(rep.Requests)
			r.PerCoreRPS = float64(rep.Requests) / cpu.Seconds()
		}
		res.Runs = append(res.Runs, r)
		return &res.Runs[len(res.Runs)-1], nil
	}
	c := base
	c.MaxWorkers = workers
	open, err := run(fmt.Sprintf("open loop, as fast as %d workers go", workers), c)
	if err != nil {
		return nil, err
	}
	c = base
	c.Users = users
	if _, err := run(fmt.Sprintf("closed loop, %d users", users), c); err != nil {
		return nil, err
	}
	c = base
	c.Rate = max(open.RPS/2, 1)
	if _, err := run("open loop, paced at half the first rate", c); err != nil {
		return nil, err
	}
	return res, nil
}

// Markdown renders r as a table.
func (r *SelfTestResult) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## claudeq loadtest self-test: GOMAXPROCS=%d, trivial 202 server in another process, %v per run\n\n", r.GOMAXPROCS, r.Duration)
	b.WriteString("| run | target req/s | achieved req/s | errors | p99 | CPU per request | req/s per core-second |\n|---|--:|--:|--:|--:|--:|--:|\n")
	for _, x := range r.Runs {
		target := "–"
		if x.Target > 0 {
			target = fmtFloat(x.Target)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s |\n", x.Name, target, fmtFloat(x.RPS), x.Errors, fmtDur(x.P99), fmtDur(x.CPUPerRequest), fmtFloat(x.PerCoreRPS))
	}
	b.WriteString("\nAchieved rates depend on what else the machine runs (the server needs a core too); CPU per request does not.\n")
	return b.String()
}
