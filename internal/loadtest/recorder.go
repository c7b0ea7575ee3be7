package loadtest

import (
	"math"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms count microseconds from 1 µs to histMax.
const (
	histMax        = int64(time.Hour / time.Microsecond)
	histSigFigs    = 3   // 0.1 % resolution for the run's histograms
	tlSigFigs      = 2   // 1 % for the timeline's, which are many
	maxTimeline    = 300 // timeline buckets at most (≈ 26 KB each, 52 KB in async mode)
	timelineStart  = 100 * time.Millisecond
	histogramBins  = 40
	maxErrorKinds  = 64 // distinct error types kept; the rest count as "other"
	otherErrorKind = "other"
)

func newHist(sig int) *hdrhistogram.Histogram { return hdrhistogram.New(1, histMax, sig) }

func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	_ = h.RecordValue(min(max(us, 1), histMax))
}

// sample is the outcome of one request of the run.
type sample struct {
	start  time.Time // intended send time (open loop) or actual (closed)
	sent   time.Time // actual send time (for the achieved rate)
	end    time.Time // the primary response was complete (or failed)
	status int       // HTTP status of the primary request; 0: none
	// accepted: the primary request succeeded, its latency counts (an
	// async submit can be accepted and its job fail later).
	accepted bool
	errType  string // "" = the request succeeded (in async mode: its job)
	ttft     time.Duration

	// Async.
	waited            bool      // the job's end was waited for
	jobEnd            time.Time // when its end was observed
	cached            bool      // answered from the cache at submit
	queue, processing time.Duration
	timestamps        bool // queue and processing are known
}

// recorder aggregates samples; it is safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	t0      time.Time
	e2eMode bool // async mode waiting for jobs

	requests, successes, errors, cacheHits int64
	polls                                  int64
	errTypes                               map[string]int64
	status                                 map[int]int64
	pollErrs                               map[string]int64

	lat, ttft, e2e, queue, proc *hdrhistogram.Histogram

	// first and last send; last primary response; last completion (job
	// end included).
	first, lastStart, lastResp, lastEnd time.Time

	width   time.Duration
	buckets []*tlBucket
}

type tlBucket struct {
	requests, errors int64
	lat, e2e         *hdrhistogram.Histogram
}

func newRecorder(t0 time.Time, e2eMode bool) *recorder {
	return &recorder{
		t0: t0, e2eMode: e2eMode, width: timelineStart,
		errTypes: map[string]int64{}, status: map[int]int64{}, pollErrs: map[string]int64{},
		lat: newHist(histSigFigs), ttft: newHist(histSigFigs), e2e: newHist(histSigFigs),
		queue: newHist(histSigFigs), proc: newHist(histSigFigs),
	}
}

func countKind(m map[string]int64, k string) {
	if _, ok := m[k]; !ok && len(m) >= maxErrorKinds {
		k = otherErrorKind
	}
	m[k]++
}

func (r *recorder) add(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if s.status != 0 {
		r.status[s.status]++
	}
	sent := s.sent
	if sent.IsZero() {
		sent = s.start
	}
	if r.first.IsZero() || sent.Before(r.first) {
		r.first = sent
	}
	if sent.After(r.lastStart) {
		r.lastStart = sent
	}
	if s.end.After(r.lastResp) {
		r.lastResp = s.end
	}
	end := s.end
	if s.waited && s.jobEnd.After(end) {
		end = s.jobEnd
	}
	if end.After(r.lastEnd) {
		r.lastEnd = end
	}
	b := r.bucket(s.start)
	b.requests++
	if s.accepted {
		record(r.lat, s.end.Sub(s.start))
		record(b.lat, s.end.Sub(s.start))
	}
	if s.errType != "" {
		r.errors++
		b.errors++
		countKind(r.errTypes, s.errType)
		return
	}
	r.successes++
	if s.ttft > 0 {
		record(r.ttft, s.ttft)
	}
	if s.cached {
		r.cacheHits++
	}
	if s.waited {
		d := s.jobEnd.Sub(s.start)
		record(r.e2e, d)
		if b.e2e == nil {
			b.e2e = newHist(tlSigFigs)
		}
		record(b.e2e, d)
		if s.timestamps {
			record(r.queue, s.queue)
			record(r.proc, s.processing)
		}
	}
}

func (r *recorder) polled() {
	r.mu.Lock()
	r.polls++
	r.mu.Unlock()
}

func (r *recorder) pollError(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	countKind(r.pollErrs, kind)
}

// bucket returns the timeline bucket of a request sent at t, halving the
// timeline's resolution when it would grow beyond maxTimeline buckets.
func (r *recorder) bucket(t time.Time) *tlBucket {
	i := max(int(t.Sub(r.t0)/r.width), 0)
	for i >= maxTimeline {
		merged := make([]*tlBucket, 0, maxTimeline)
		for j := 0; j < len(r.buckets); j += 2 {
			a := r.buckets[j]
			if j+1 < len(r.buckets) {
				a = mergeBuckets(a, r.buckets[j+1])
			}
			merged = append(merged, a)
		}
		r.buckets = merged
		r.width *= 2
		i = int(t.Sub(r.t0) / r.width)
	}
	for len(r.buckets) <= i {
		r.buckets = append(r.buckets, &tlBucket{lat: newHist(tlSigFigs)})
	}
	return r.buckets[i]
}

func mergeBuckets(a, b *tlBucket) *tlBucket {
	a.requests += b.requests
	a.errors += b.errors
	a.lat.Merge(b.lat)
	if b.e2e != nil {
		if a.e2e == nil {
			a.e2e = newHist(tlSigFigs)
		}
		a.e2e.Merge(b.e2e)
	}
	return a
}

// liveStats is what the progress bar shows.
type liveStats struct {
	done, errors int64
	p50, p99     time.Duration
}

func (r *recorder) live() liveStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.lat
	if r.e2eMode {
		h = r.e2e
	}
	return liveStats{
		done: r.requests, errors: r.errors,
		p50: us(h.ValueAtQuantile(50)), p99: us(h.ValueAtQuantile(99)),
	}
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

// summarize returns the summary of h, nil when it is empty.
func summarize(h *hdrhistogram.Histogram) *LatencySummary {
	if h.TotalCount() == 0 {
		return nil
	}
	s := &LatencySummary{
		Count: h.TotalCount(),
		Min:   us(h.Min()),
		Mean:  time.Duration(h.Mean() * float64(time.Microsecond)),
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P95:   us(h.ValueAtQuantile(95)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
	s.Bins = bins(h, histogramBins)
	return s
}

// bins regroups h into at most n log-spaced bins between its minimum and
// maximum (empty bins included, so that they plot as gaps).
func bins(h *hdrhistogram.Histogram, n int) []HistBin {
	lo, hi := float64(h.Min()), float64(h.Max())
	if lo < 1 {
		lo = 1
	}
	if hi <= lo {
		return []HistBin{{From: us(int64(lo)), To: us(int64(hi)), Count: h.TotalCount()}}
	}
	ratio := math.Log(hi / lo)
	out := make([]HistBin, n)
	edge := func(k int) float64 { return lo * math.Exp(ratio*float64(k)/float64(n)) }
	for k := range out {
		out[k] = HistBin{From: time.Duration(edge(k) * float64(time.Microsecond)), To: time.Duration(edge(k+1) * float64(time.Microsecond))}
	}
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		mid := math.Min(math.Max((float64(b.From)+float64(b.To))/2, lo), hi)
		k := min(int(float64(n)*math.Log(mid/lo)/ratio), n-1)
		out[k].Count += b.Count
	}
	return out
}
