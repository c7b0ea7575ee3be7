package loadtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is the outcome of a run. Durations are time.Duration (JSON:
// integer nanoseconds, fields named *_ns); latencies are measured with
// microsecond resolution.
type Report struct {
	// What ran.
	Mode            Mode          `json:"mode"`
	Loop            string        `json:"loop"` // "closed" or "open"
	URL             string        `json:"url"`
	Users           int           `json:"users,omitempty"`
	RequestsPerUser int           `json:"requests_per_user,omitempty"`
	Rate            float64       `json:"rate,omitempty"`
	Duration        time.Duration `json:"duration_ns,omitempty"`
	MaxWorkers      int           `json:"max_workers,omitempty"`
	PollInterval    time.Duration `json:"poll_interval_ns,omitempty"`
	Webhook         bool          `json:"webhook,omitempty"`
	SubmitOnly      bool          `json:"submit_only,omitempty"`
	Model           string        `json:"model"`
	MaxTokens       int           `json:"max_tokens"`
	Prompts         string        `json:"prompts"` // "file (N prompts)" or the size distribution
	CacheRatio      float64       `json:"cache_ratio"`
	GOMAXPROCS      int           `json:"gomaxprocs"`

	// When.
	Started time.Time `json:"started"`
	// Elapsed is the wall time of the whole run, the wait for jobs included.
	Elapsed time.Duration `json:"elapsed_ns"`

	// Requests counts the requests sent (in async mode: jobs submitted);
	// each is a success or an error.
	Requests  int64 `json:"requests"`
	Successes int64 `json:"successes"`
	Errors    int64 `json:"errors"`
	// ErrorTypes counts errors by type: the Anthropic error type of an
	// error response (rate_limit_error, api_error, …, or http_NNN when the
	// body has none), a transport failure (timeout, connection_refused,
	// connection_reset, eof, transport_error), bad_response, in stream mode
	// stream_incomplete and stream:<type> for an error event, in async mode
	// job_failed:<type>, job_canceled and poll_http_NNN (a poll refused for
	// good); unfinished for what the timeout or an interrupt cut short.
	ErrorTypes map[string]int64 `json:"errors_by_type"`
	// StatusCodes counts the HTTP status of every request that got one
	// (async: the submit's).
	StatusCodes map[int]int64 `json:"status_codes"`
	// Polls counts the job reads (GET /api/claude/jobs/{id}) the run made:
	// load on the service on top of Requests (outstanding jobs ÷ poll
	// interval per second; the webhook mode needs one per job).
	Polls int64 `json:"polls,omitempty"`
	// PollErrors counts transient failures of job polls (retried).
	PollErrors map[string]int64 `json:"poll_errors,omitempty"`
	// CacheRepeats counts requests that repeated an earlier one
	// (CacheRatio); CacheHits the async submits answered 200 from the cache.
	CacheRepeats int64 `json:"cache_repeats"`
	CacheHits    int64 `json:"cache_hits"`

	// RPS is the achieved request rate. Open loop: the send rate, requests
	// over the time from the first to the last send. Closed loop: requests
	// over the time from the first send to the last response (the submit's
	// in async mode).
	RPS float64 `json:"rps"`
	// Throughput is successes per second from the first send to the last
	// completion (for async: of the last job).
	Throughput float64 `json:"throughput"`

	// Latency is that of the request itself, successful ones only: the
	// submit (async), the whole call (sync), the whole stream (stream).
	// Open loop: from the intended send time.
	Latency *LatencySummary `json:"latency,omitempty"`
	// TTFT is the time to the first content_block_delta (stream).
	TTFT *LatencySummary `json:"ttft,omitempty"`
	// EndToEnd is from the send of the submit to the observed end of the
	// job (async, succeeded jobs; precision: the poll interval).
	EndToEnd *LatencySummary `json:"end_to_end,omitempty"`
	// QueueWait (started_at − created_at) and Processing (finished_at −
	// started_at) come from the job's timestamps: succeeded jobs that were
	// not cache hits.
	QueueWait  *LatencySummary `json:"queue_wait,omitempty"`
	Processing *LatencySummary `json:"processing,omitempty"`

	// Timeline has the requests by intended send time, in buckets of
	// TimelineWidth (100 ms, doubled as often as needed to keep ≤ 300).
	TimelineWidth time.Duration   `json:"timeline_width_ns"`
	Timeline      []TimelinePoint `json:"timeline"`

	// GeneratorCPU is the CPU time (user and system) this process used
	// during the run: the generator's own when it runs as `claudeq
	// loadtest`. Divided by Elapsed, it says how many cores the generator
	// kept busy, to compare with GOMAXPROCS (is the tool the bottleneck?)
	// and with the rate one core generates (`claudeq loadtest --self-test`).
	// Zero where it is not measured.
	GeneratorCPU time.Duration `json:"generator_cpu_ns,omitempty"`

	// TimedOut: Config.Timeout cut the run short; Interrupted: its context
	// was canceled. What was cut counts as "unfinished".
	TimedOut    bool `json:"timed_out,omitempty"`
	Interrupted bool `json:"interrupted,omitempty"`
}

// LatencySummary is the distribution of one latency.
type LatencySummary struct {
	Count int64         `json:"count"`
	Min   time.Duration `json:"min_ns"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
	// Bins is the histogram in log-spaced bins from Min to Max.
	Bins []HistBin `json:"bins,omitempty"`
}

// HistBin is one histogram bin: Count values in [From, To).
type HistBin struct {
	From  time.Duration `json:"from_ns"`
	To    time.Duration `json:"to_ns"`
	Count int64         `json:"count"`
}

// TimelinePoint is one bucket of the timeline: the requests whose send was
// due in [T, T+width) from the start.
type TimelinePoint struct {
	T        time.Duration `json:"t_ns"`
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"`
	// Latency of the accepted requests.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
	// End-to-end of the succeeded jobs (async).
	E2EP50 time.Duration `json:"e2e_p50_ns,omitempty"`
	E2EP99 time.Duration `json:"e2e_p99_ns,omitempty"`
	E2EMax time.Duration `json:"e2e_max_ns,omitempty"`
}

func (r *runner) report(started time.Time, elapsed time.Duration) *Report {
	c := r.cfg
	rep := &Report{
		Mode: c.Mode, Loop: "closed", URL: c.URL, Users: c.Users, RequestsPerUser: c.RequestsPerUser,
		Rate: c.Rate, Duration: c.Duration, MaxWorkers: c.MaxWorkers,
		Webhook: c.Webhook, SubmitOnly: c.SubmitOnly, Model: c.Model, MaxTokens: c.MaxTokens,
		CacheRatio: c.CacheRatio, GOMAXPROCS: runtime.GOMAXPROCS(0),
		Started: started, Elapsed: elapsed,
	}
	if c.OpenLoop() {
		rep.Loop = "open"
	}
	if c.Mode == ModeAsync && !c.SubmitOnly {
		rep.PollInterval = c.PollInterval
	}
	if len(c.Prompts) > 0 {
		rep.Prompts = fmt.Sprintf("file (%d prompts)", len(c.Prompts))
	} else {
		rep.Prompts = "generated, tokens " + c.PromptTokens.String()
	}
	_, rep.CacheRepeats = r.gen.counts()

	rc := r.rec
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rep.Requests, rep.Successes, rep.Errors, rep.CacheHits = rc.requests, rc.successes, rc.errors, rc.cacheHits
	rep.Polls = rc.polls
	rep.ErrorTypes = maps.Clone(rc.errTypes)
	rep.StatusCodes = maps.Clone(rc.status)
	if len(rc.pollErrs) > 0 {
		rep.PollErrors = maps.Clone(rc.pollErrs)
	}
	if rep.Loop == "open" {
		if span := rc.lastStart.Sub(rc.first); rep.Requests > 1 && span > 0 {
			rep.RPS = float64(rep.Requests-1) / span.Seconds()
		}
	} else if span := rc.lastResp.Sub(rc.first); span > 0 {
		rep.RPS = float64(rep.Requests) / span.Seconds()
	}
	if span := rc.lastEnd.Sub(rc.first); span > 0 {
		rep.Throughput = float64(rep.Successes) / span.Seconds()
	}
	rep.Latency = summarize(rc.lat)
	rep.TTFT = summarize(rc.ttft)
	rep.EndToEnd = summarize(rc.e2e)
	rep.QueueWait = summarize(rc.queue)
	rep.Processing = summarize(rc.proc)
	rep.TimelineWidth = rc.width
	for i, b := range rc.buckets {
		p := TimelinePoint{T: time.Duration(i) * rc.width, Requests: b.requests, Errors: b.errors}
		if b.lat.TotalCount() > 0 {
			p.P50, p.P99, p.Max = us(b.lat.ValueAtQuantile(50)), us(b.lat.ValueAtQuantile(99)), us(b.lat.Max())
		}
		if b.e2e != nil && b.e2e.TotalCount() > 0 {
			p.E2EP50, p.E2EP99, p.E2EMax = us(b.e2e.ValueAtQuantile(50)), us(b.e2e.ValueAtQuantile(99)), us(b.e2e.Max())
		}
		rep.Timeline = append(rep.Timeline, p)
	}
	return rep
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// namedSummary is a latency row of the rendered reports.
type namedSummary struct {
	Name string
	S    *LatencySummary
}

// summaries lists the report's latencies in display order.
func (r *Report) summaries() []namedSummary {
	first := "latency"
	switch {
	case r.Mode == ModeAsync:
		first = "submit"
	case r.Mode == ModeStream:
		first = "total"
	}
	var out []namedSummary
	for _, n := range []namedSummary{
		{first, r.Latency}, {"time to first token", r.TTFT}, {"end-to-end", r.EndToEnd},
		{"queue wait", r.QueueWait}, {"processing", r.Processing},
	} {
		if n.S != nil {
			out = append(out, n)
		}
	}
	return out
}

// Title describes the run in one line.
func (r *Report) Title() string {
	var load string
	switch {
	case r.Loop == "closed":
		load = fmt.Sprintf("closed loop, %d users", r.Users)
		if r.RequestsPerUser > 0 {
			load += fmt.Sprintf(" × %d requests", r.RequestsPerUser)
		}
		if r.Duration > 0 {
			load += fmt.Sprintf(", at most %v", r.Duration)
		}
	case r.Rate > 0:
		load = fmt.Sprintf("open loop, %s req/s for %v", fmtFloat(r.Rate), r.Duration)
	default:
		load = fmt.Sprintf("open loop, as fast as %d workers go for %v", r.MaxWorkers, r.Duration)
	}
	mode := string(r.Mode)
	switch {
	case r.SubmitOnly:
		mode += " (submit only)"
	case r.Webhook:
		mode += " (webhook)"
	case r.Mode == ModeAsync:
		mode += fmt.Sprintf(" (poll every %v)", r.PollInterval)
	}
	return fmt.Sprintf("claudeq loadtest: %s, %s → %s", mode, load, r.URL)
}

// overview is the summary table's rows.
func (r *Report) overview() [][2]string {
	rows := [][2]string{
		{"requests", strconv.FormatInt(r.Requests, 10)},
		{"successes", fmt.Sprintf("%d (%s)", r.Successes, pct(r.Successes, r.Requests))},
		{"errors", fmt.Sprintf("%d (%s)", r.Errors, pct(r.Errors, r.Requests))},
		{"achieved rate", fmtFloat(r.RPS) + " req/s"},
		{"throughput", fmtFloat(r.Throughput) + " successes/s"},
		{"elapsed", fmtDur(r.Elapsed)},
		{"prompts", fmt.Sprintf("%s, model %s, max_tokens %d", r.Prompts, r.Model, r.MaxTokens)},
	}
	if r.Polls > 0 {
		rows = append(rows, [2]string{"job polls", fmt.Sprintf("%d (%s per job)", r.Polls, fmtFloat(float64(r.Polls)/float64(max(r.Requests, 1))))})
	}
	if r.CacheRatio > 0 || r.CacheHits > 0 {
		v := fmt.Sprintf("%d repeats (ratio %s)", r.CacheRepeats, fmtFloat(r.CacheRatio))
		if r.Mode == ModeAsync {
			v += fmt.Sprintf(", %d cache hits at submit", r.CacheHits)
		}
		rows = append(rows, [2]string{"cache", v})
	}
	if r.GeneratorCPU > 0 && r.Elapsed > 0 {
		cores := r.GeneratorCPU.Seconds() / r.Elapsed.Seconds()
		v := fmt.Sprintf("%s, %s cores on average of GOMAXPROCS %d", fmtDur(r.GeneratorCPU), fmtFloat(cores), r.GOMAXPROCS)
		if cores >= 0.8*float64(max(r.GOMAXPROCS, 1)) {
			v += ": the generator was nearly saturated and may have held the rate down; run it with more cores or on another machine"
		}
		rows = append(rows, [2]string{"generator CPU", v})
	}
	if r.TimedOut {
		rows = append(rows, [2]string{"note", "the timeout cut the run short"})
	}
	if r.Interrupted {
		rows = append(rows, [2]string{"note", "interrupted"})
	}
	return rows
}

// WriteMarkdown writes the report as Markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", r.Title())
	b.WriteString("| | |\n|---|---|\n")
	for _, row := range r.overview() {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], row[1])
	}
	if s := r.summaries(); len(s) > 0 {
		b.WriteString("\n| latency | count | p50 | p90 | p95 | p99 | max |\n|---|--:|--:|--:|--:|--:|--:|\n")
		for _, n := range s {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", n.Name, n.S.Count,
				fmtDur(n.S.P50), fmtDur(n.S.P90), fmtDur(n.S.P95), fmtDur(n.S.P99), fmtDur(n.S.Max))
		}
	}
	if len(r.ErrorTypes) > 0 {
		b.WriteString("\n| error | count |\n|---|--:|\n")
		for _, kv := range sortedCounts(r.ErrorTypes) {
			fmt.Fprintf(&b, "| %s | %d |\n", kv.k, kv.n)
		}
	}
	if len(r.StatusCodes) > 0 {
		b.WriteString("\n| HTTP status | count |\n|---|--:|\n")
		for _, c := range slices.Sorted(maps.Keys(r.StatusCodes)) {
			fmt.Fprintf(&b, "| %d | %d |\n", c, r.StatusCodes[c])
		}
	}
	if len(r.PollErrors) > 0 {
		b.WriteString("\n| poll error (retried) | count |\n|---|--:|\n")
		for _, kv := range sortedCounts(r.PollErrors) {
			fmt.Fprintf(&b, "| %s | %d |\n", kv.k, kv.n)
		}
	}
	if r.Loop == "open" && r.Rate > 0 {
		b.WriteString("\nLatencies are measured from each request's intended send time (no coordinated omission).\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

type kindCount struct {
	k string
	n int64
}

func sortedCounts(m map[string]int64) []kindCount {
	out := make([]kindCount, 0, len(m))
	for k, n := range m {
		out = append(out, kindCount{k, n})
	}
	slices.SortFunc(out, func(a, b kindCount) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.k, b.k)) })
	return out
}

func pct(n, of int64) string {
	if of == 0 {
		return "–"
	}
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 1, 64) + " %"
}

func fmtFloat(f float64) string {
	switch {
	case f >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 10:
		return strconv.FormatFloat(f, 'f', 1, 64)
	default:
		return strconv.FormatFloat(f, 'f', 2, 64)
	}
}

// fmtDur renders d with microsecond precision at most.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d.Microseconds())/1e3, 'f', 3, 64) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s"
	default:
		return d.Round(time.Millisecond).String()
	}
}
