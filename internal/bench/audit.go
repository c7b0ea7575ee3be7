package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// AuditLatency is figure 8's second half: what the audit log does to one
// submit's latency at a fixed rate well below saturation (the closed loop
// of the first half measures what it does to the most a machine submits).
// The api with its audit log and with CLAUDEQ_AUDIT_LOG=off, interleaved,
// each at Rate for Options.Duration in an open loop.
type AuditLatency struct {
	Rate    float64
	On, Off []RateStats
}

// RateStats is one open-loop window with the response times of its calls.
type RateStats struct {
	OpenStats
	OK            int
	P50, P90, P99 time.Duration
	Use           Usage
}

// AuditLatencyTarget: p50 and p99 of a submit with the audit log are at
// most this multiple of those without it (beyond it, the log slows the
// submit path measurably; below it is run-to-run noise on this machine).
const AuditLatencyTarget = 1.10

// DefaultAuditRate is the rate of figure 8's fixed-rate runs: about a
// quarter of what one api submits at saturation here (figure 1).
const DefaultAuditRate = 500

// runAuditLatency measures o.Reps pairs of fixed-rate windows.
func runAuditLatency(ctx context.Context, e *Env, o *Options) (*AuditLatency, error) {
	rate := o.AuditRate
	if rate <= 0 {
		rate = DefaultAuditRate
	}
	r := &AuditLatency{Rate: rate}
	for rep := range o.Reps {
		for k := range 2 {
			on := (rep+k)%2 == 0
			var over []string
			if !on {
				over = []string{"CLAUDEQ_AUDIT_LOG", "off"}
			}
			st, err := e.submitAtRate(ctx, o, rate, over)
			if err != nil {
				return nil, err
			}
			name := "on"
			if on {
				r.On = append(r.On, st)
			} else {
				r.Off, name = append(r.Off, st), "off"
			}
			o.logf("submit at %.0f/s rep %d/%d audit %-3s  p50 %v p90 %v p99 %v  sent %d errors %d", rate, rep+1, o.Reps, name,
				st.P50, st.P90, st.P99, st.Sent, st.Errors)
		}
	}
	return r, e.Flush(ctx)
}

// submitAtRate starts a fresh api (with the settings over) over a fresh
// database and submits to it at rate for o.Duration after o.Warmup.
func (e *Env) submitAtRate(ctx context.Context, o *Options, rate float64, over []string) (RateStats, error) {
	a, base, _, err := e.StartAPI(ctx, "audit", over...)
	if err != nil {
		return RateStats{}, err
	}
	defer func() { _ = StopApp(a) }()
	if err := e.Flush(ctx); err != nil {
		return RateStats{}, err
	}
	e.settle(ctx, o)
	s := &Submitter{Client: NewHTTPClient(256), URL: base + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	call := s.Call()
	_ = OpenLoop(ctx, rate, o.Warmup, 256, call) // warm-up: connections, caches, the writer's first append
	var mu sync.Mutex
	var lat []time.Duration
	timed := func(ctx context.Context, i int64) error {
		t0 := time.Now()
		if err := call(ctx, i); err != nil {
			return err
		}
		d := time.Since(t0)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return nil
	}
	before := e.usage()
	st := RateStats{OpenStats: OpenLoop(ctx, rate, o.Duration, 256, timed)}
	st.Use = e.usage().sub(before)
	st.OK = len(lat)
	st.P50, st.P90, st.P99 = Percentile(lat, 50), Percentile(lat, 90), Percentile(lat, 99)
	if st.OK == 0 {
		return st, fmt.Errorf("submit at %.0f/s: no call succeeded (%s)", rate, st.FirstErr)
	}
	return st, ctx.Err()
}

func rateP(l []RateStats, f func(RateStats) time.Duration) time.Duration {
	xs := make([]float64, len(l))
	for i, s := range l {
		xs[i] = float64(f(s))
	}
	return time.Duration(Median(xs))
}
