package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/app"
)

// LatencyRun is one open-loop run of figure 3.
type LatencyRun struct {
	Open      OpenStats
	Duration  time.Duration // sending time
	Use       Usage         // during the sending time
	Jobs      int           // jobs whose pick-up latency was read
	P50, P99  time.Duration
	Max       time.Duration
	Succeeded int
}

// LatencyResult is figure 3 at one TaskCheckInterval.
type LatencyResult struct {
	Interval time.Duration
	Rate     float64
	Runs     []LatencyRun
	All      []time.Duration // every job's pick-up latency, all runs pooled
}

// Median returns the medians over the runs of their p50 and p99: the
// headline, robust to one run slowed down by a neighbour.
func (l *LatencyResult) Median() (p50, p99 time.Duration) {
	var a, b []float64
	for _, r := range l.Runs {
		a, b = append(a, float64(r.P50)), append(b, float64(r.P99))
	}
	return time.Duration(Median(a)).Round(time.Millisecond), time.Duration(Median(b)).Round(time.Millisecond)
}

// Pooled returns the p50, p99 and count of every job of every run.
func (l *LatencyResult) Pooled() (p50, p99 time.Duration, n int) {
	return Percentile(l.All, 50), Percentile(l.All, 99), len(l.All)
}

// RunLatency measures figure 3: the api and the worker in one process
// (app.Start with Roles{API, Worker}), jobs submitted through the api at a
// fixed open-loop rate for o.LatencyDuration, pick-up latency = the state
// hash's sa (set when the handler starts the job) − ca (set when the api
// accepted it), both at millisecond resolution. It runs each interval in
// intervals once per repetition, alternating their order.
func RunLatency(ctx context.Context, e *Env, o *Options, rate float64, intervals []time.Duration) ([]LatencyResult, error) {
	out := make([]LatencyResult, len(intervals))
	for i, iv := range intervals {
		out[i] = LatencyResult{Interval: iv, Rate: rate}
	}
	for rep := range o.Reps {
		for k := range intervals {
			i := k
			if rep%2 == 1 {
				i = len(intervals) - 1 - k
			}
			r, lat, err := e.latencyRun(ctx, o, rate, intervals[i])
			if err != nil {
				return nil, err
			}
			out[i].Runs = append(out[i].Runs, r)
			out[i].All = append(out[i].All, lat...)
			o.logf("latency interval=%v rate=%.0f/s rep %d/%d  p50 %v p99 %v max %v  (sent %d at %.0f/s, %d dropped, %d errors)",
				intervals[i], rate, rep+1, o.Reps, r.P50, r.P99, r.Max, r.Open.Sent, r.Open.Achieved, r.Open.Dropped, r.Open.Errors)
		}
	}
	return out, e.Flush(ctx)
}

func (e *Env) latencyRun(ctx context.Context, o *Options, rate float64, interval time.Duration) (LatencyRun, []time.Duration, error) {
	if err := e.Flush(ctx); err != nil {
		return LatencyRun{}, nil, err
	}
	db, err := e.NewDB(ctx, "latency")
	if err != nil {
		return LatencyRun{}, nil, err
	}
	a, err := e.StartApp(ctx, app.Roles{API: true, Worker: true}, db, "CLAUDEQ_TASK_CHECK_INTERVAL", interval.String())
	if err != nil {
		return LatencyRun{}, nil, err
	}
	defer func() { _ = StopApp(a) }()
	sleep(ctx, 200*time.Millisecond) // let the worker reach its idle polling
	e.settle(ctx, o)
	s := &Submitter{Client: NewHTTPClient(64), URL: "http://" + a.Addr() + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	var ids idList
	r := LatencyRun{Duration: latencyDuration(o, rate)}
	u0 := e.usage()
	r.Open = OpenLoop(ctx, rate, r.Duration, 512, func(ctx context.Context, i int64) error {
		id, err := s.Submit(ctx, i)
		if err == nil {
			ids.add(id)
		}
		return err
	})
	r.Use = e.usage().sub(u0)
	all := ids.all()
	if err := e.waitTerminal(ctx, all, time.Minute); err != nil {
		return r, nil, err
	}
	lat, succeeded, err := e.pickups(ctx, all)
	if err != nil {
		return r, nil, err
	}
	r.Jobs, r.Succeeded = len(lat), succeeded
	if len(lat) > 0 {
		r.Max = slices.Max(lat)
	}
	r.P50, r.P99 = Percentile(slices.Clone(lat), 50), Percentile(slices.Clone(lat), 99)
	return r, lat, nil
}

// latencyDuration is how long a figure-3 run sends: LatencyDuration, or
// longer at a low rate so that it sends LatencyMinJobs, at most
// LatencyMaxDur.
func latencyDuration(o *Options, rate float64) time.Duration {
	d := o.LatencyDuration
	if o.LatencyMinJobs > 0 && rate > 0 && rate*d.Seconds() < float64(o.LatencyMinJobs) {
		d = time.Duration(float64(o.LatencyMinJobs) / rate * float64(time.Second))
		if o.LatencyMaxDur > 0 {
			d = min(d, max(o.LatencyMaxDur, o.LatencyDuration))
		}
	}
	return d.Round(time.Millisecond)
}

// waitTerminal waits until every job's state is succeeded, failed or
// canceled.
func (e *Env) waitTerminal(ctx context.Context, ids []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	left := ids
	for len(left) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d jobs not finished after %v", len(left), len(ids), timeout)
		}
		var next []string
		for chunk := range slices.Chunk(left, 1000) {
			p := e.RDB.Pipeline()
			cmds := make([]*redis.StringCmd, len(chunk))
			for i, id := range chunk {
				cmds[i] = p.HGet(ctx, "cq:job:"+id, "st")
			}
			if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			for i, c := range cmds {
				switch c.Val() {
				case "succeeded", "failed", "canceled":
				default:
					next = append(next, chunk[i])
				}
			}
		}
		left = next
		if len(left) > 0 {
			sleep(ctx, 50*time.Millisecond)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// pickups returns sa − ca of every job (milliseconds resolution) and how
// many succeeded.
func (e *Env) pickups(ctx context.Context, ids []string) ([]time.Duration, int, error) {
	var lat []time.Duration
	ok := 0
	for chunk := range slices.Chunk(ids, 1000) {
		p := e.RDB.Pipeline()
		cmds := make([]*redis.SliceCmd, len(chunk))
		for i, id := range chunk {
			cmds[i] = p.HMGet(ctx, "cq:job:"+id, "ca", "sa", "st")
		}
		if _, err := p.Exec(ctx); err != nil {
			return nil, 0, err
		}
		for i, c := range cmds {
			v := c.Val()
			ca, err1 := strconv.ParseInt(str(v[0]), 10, 64)
			sa, err2 := strconv.ParseInt(str(v[1]), 10, 64)
			if err1 != nil || err2 != nil {
				return nil, 0, fmt.Errorf("job %s: no ca/sa in its state (%v)", chunk[i], v)
			}
			lat = append(lat, time.Duration(sa-ca)*time.Millisecond)
			if str(v[2]) == "succeeded" {
				ok++
			}
		}
	}
	return lat, ok, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
