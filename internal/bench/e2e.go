package bench

import (
	"context"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/store"
)

// DrainStats is one drain of a pre-filled queue.
type DrainStats struct {
	Jobs       int           // queued
	Done       int           // handled within the budget
	Drained    bool          // all of them
	Elapsed    time.Duration // first pick-up seen → queue empty (or the budget)
	JobsPerSec float64       // Done / Elapsed
	// The rates over the first and the last quarter of Done: a drop means
	// a cost per job that grows with the jobs already done.
	FirstQuarterRate, LastQuarterRate float64
	Use                               Usage // used during Elapsed
	Succeeded                         int   // jobs that ended succeeded (the baseline's no-op tasks all count)
	Persisted                         int64
	FillRate                          float64 // how fast the queue was filled, per second (not a measured figure)
}

// E2EResult is figure 2, and figure 5 (Fleet against Subject).
type E2EResult struct {
	Jobs              int
	Concurrency       int
	TaskCheckInterval time.Duration
	PayloadBytes      int
	Subject, Baseline []DrainStats
	// Figure 5: the worker with FleetNodes simulator nodes (a nodes file,
	// FleetStrategy), interleaved with Subject, whose one node is
	// CLAUDEQ_UPSTREAM_URL; empty when not run.
	Fleet         []DrainStats
	FleetNodes    int
	FleetStrategy string
}

// asynq v0.26's key names of queue q (internal/base). Drain checks the
// pending count against what it enqueued, so a change of schema fails
// loudly instead of measuring nothing.
func pendingKey(q string) string { return "asynq:{" + q + "}:pending" }

type depth struct{ pending, active, retry, scheduled, archived int64 }

func (e *Env) depth(ctx context.Context, q string) (depth, error) {
	p := e.RDB.Pipeline()
	c := []*redis.IntCmd{
		p.LLen(ctx, pendingKey(q)),
		p.LLen(ctx, "asynq:{"+q+"}:active"),
		p.ZCard(ctx, "asynq:{"+q+"}:retry"),
		p.ZCard(ctx, "asynq:{"+q+"}:scheduled"),
		p.ZCard(ctx, "asynq:{"+q+"}:archived"),
	}
	if _, err := p.Exec(ctx); err != nil {
		return depth{}, err
	}
	return depth{c[0].Val(), c[1].Val(), c[2].Val(), c[3].Val(), c[4].Val()}, nil
}

// drain calls start (which starts a worker over the k tasks waiting on the
// default queue) and times from the first pick-up (pending below k) to the
// queue being empty (nothing pending, active, waiting for a retry or
// scheduled), polling every 2 ms. It gives up waiting budget after the
// first pick-up and then reports the jobs done so far (Drained false).
func (e *Env) drain(ctx context.Context, k int, budget time.Duration, start func() error) (DrainStats, error) {
	d, err := e.depth(ctx, queue.Default)
	if err != nil {
		return DrainStats{}, err
	}
	if d.pending != int64(k) {
		return DrainStats{}, fmt.Errorf("drain: %d tasks pending, want %d (asynq key schema changed?)", d.pending, k)
	}
	type point struct {
		t    time.Time
		done int64
	}
	type result struct {
		s   DrainStats
		err error
	}
	res := make(chan result, 1)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var t0 time.Time
		var c0 Usage
		var pts []point
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		startBy := time.Now().Add(30 * time.Second)
		for {
			select {
			case <-pctx.Done():
				res <- result{err: pctx.Err()}
				return
			case <-tick.C:
			}
			d, err := e.depth(pctx, queue.Default)
			if err != nil {
				continue
			}
			now := time.Now()
			if t0.IsZero() {
				if d.pending == int64(k) {
					if now.After(startBy) {
						res <- result{err: errors.New("drain: no task picked up within 30s")}
						return
					}
					continue
				}
				t0, c0 = now, e.usage()
			}
			left := d.pending + d.active + d.retry + d.scheduled
			pts = append(pts, point{now, int64(k) - left})
			if left > 0 && now.Sub(t0) < budget {
				continue
			}
			el := now.Sub(t0)
			s := DrainStats{Jobs: k, Done: int(int64(k) - left), Drained: left == 0, Elapsed: el, Use: e.usage().sub(c0)}
			s.JobsPerSec = float64(s.Done) / el.Seconds()
			// The rate over the first and the last quarter of the jobs done:
			// equal for a cost per job that does not grow with the work done.
			q1, q3 := int64(s.Done)/4, int64(s.Done)*3/4
			for _, p := range pts {
				if p.done >= q1 && q1 > 0 {
					s.FirstQuarterRate = float64(p.done) / p.t.Sub(t0).Seconds()
					break
				}
			}
			for _, p := range pts {
				if p.done >= q3 && q3 > 0 {
					if dt := now.Sub(p.t).Seconds(); dt > 0 {
						s.LastQuarterRate = float64(int64(s.Done)-p.done) / dt
					}
					break
				}
			}
			res <- result{s: s}
			return
		}
	}()
	if err := start(); err != nil {
		cancel()
		<-res
		return DrainStats{}, err
	}
	r := <-res
	return r.s, r.err
}

// RunE2E measures figure 2: K jobs queued through the api with no worker
// running, then the worker role (app.Start with Roles{Worker: true}:
// simulator at zero latency, FerretDB persistence, cache writes, budget
// settlement) drains them; against a raw asynq server with the same
// concurrency, queues and TaskCheckInterval draining K no-op tasks of the
// same payload size. With figure 5 wanted, the same worker with
// o.FleetNodes simulator nodes drains K jobs too, interleaved. The systems
// rotate which goes first in each repetition. With o.ProfileDir set, one
// more one-node drain is CPU-profiled (not counted) and summarised.
func RunE2E(ctx context.Context, e *Env, o *Options) (*E2EResult, *ProfileSummary, error) {
	api, base, fillDB, err := e.StartAPI(ctx, "fill")
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = StopApp(api) }()
	payload, err := e.ProbePayload(ctx, base)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := e.Config(fillDB)
	if err != nil {
		return nil, nil, err
	}
	res := &E2EResult{Jobs: o.Jobs, Concurrency: cfg.WorkerConcurrency, TaskCheckInterval: cfg.TaskCheckInterval, PayloadBytes: len(payload)}
	systems := []string{"claudeq"}
	if o.wants("e2e") {
		systems = append(systems, "baseline")
	}
	var fleetOver []string
	if o.wants("fleet") && o.FleetNodes > 1 {
		nodes, err := e.NodesFile(o.FleetNodes)
		if err != nil {
			return nil, nil, err
		}
		fleetOver = []string{"CLAUDEQ_NODES_FILE", nodes}
		fcfg, err := e.Config(fillDB, fleetOver...)
		if err != nil {
			return nil, nil, err
		}
		if len(fcfg.Nodes) != o.FleetNodes {
			return nil, nil, fmt.Errorf("nodes file: %d nodes configured, want %d", len(fcfg.Nodes), o.FleetNodes)
		}
		res.FleetNodes, res.FleetStrategy = len(fcfg.Nodes), fcfg.Balancer
		systems = append(systems, "fleet")
	}
	for rep := range o.Reps {
		for k := range systems {
			name := systems[(rep+k)%len(systems)]
			if err := e.Flush(ctx); err != nil {
				return nil, nil, err
			}
			var st DrainStats
			var err error
			switch name {
			case "claudeq":
				st, err = e.drainSubject(ctx, o, base, "")
			case "fleet":
				st, err = e.drainSubject(ctx, o, base, "", fleetOver...)
			default:
				st, err = e.drainBaseline(ctx, o, payload)
			}
			if err != nil {
				return nil, nil, err
			}
			switch name {
			case "claudeq":
				res.Subject = append(res.Subject, st)
			case "fleet":
				res.Fleet = append(res.Fleet, st)
				name = fmt.Sprintf("%d nodes", res.FleetNodes)
			default:
				res.Baseline = append(res.Baseline, st)
			}
			o.logf("e2e K=%d rep %d/%d %-8s %8.0f jobs/s  (%d done in %v, drained %v; quarters %.0f → %.0f jobs/s; CPU %v proc, %v redis; %d succeeded, %d persisted)",
				o.Jobs, rep+1, o.Reps, name, st.JobsPerSec, st.Done, st.Elapsed.Round(time.Millisecond), st.Drained, st.FirstQuarterRate, st.LastQuarterRate,
				st.Use.Proc.Round(time.Millisecond), st.Use.Redis, st.Succeeded, st.Persisted)
		}
	}
	var prof *ProfileSummary
	if o.ProfileDir != "" {
		if err := e.Flush(ctx); err != nil {
			return nil, nil, err
		}
		path := filepath.Join(o.ProfileDir, "e2e.pprof")
		st, err := e.drainSubject(ctx, o, base, path)
		if err != nil {
			return nil, nil, err
		}
		o.logf("e2e K=%d profiled %8.0f jobs/s (not counted), profile in %s", o.Jobs, st.JobsPerSec, path)
		p, err := SummarizeProfile(path, fmt.Sprintf("End to end, %d jobs, one node (%s jobs/s while profiled)", o.Jobs, num(st.JobsPerSec)), E2EStages)
		if err != nil {
			return nil, nil, err
		}
		prof = &p
	}
	return res, prof, e.Flush(ctx)
}

// drainSubject fills the queue through the api at base, then times the
// worker role (started with the settings over) draining it; with prof
// set, the drain is CPU-profiled into it.
func (e *Env) drainSubject(ctx context.Context, o *Options, base string, prof string, over ...string) (DrainStats, error) {
	s := &Submitter{Client: NewHTTPClient(32), URL: base + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	var ids idList
	t0 := time.Now()
	if err := Drive(ctx, 32, o.Jobs, func(ctx context.Context, i int64) error {
		id, err := s.Submit(ctx, i)
		if err == nil {
			ids.add(id)
		}
		return err
	}); err != nil {
		return DrainStats{}, fmt.Errorf("fill: %w", err)
	}
	fill := float64(o.Jobs) / time.Since(t0).Seconds()
	db, err := e.NewDB(ctx, "e2e")
	if err != nil {
		return DrainStats{}, err
	}
	e.settle(ctx, o)
	var w *app.App
	stopProf := func() {}
	if prof != "" {
		stopProf = profile(prof)
	}
	st, err := e.drain(ctx, o.Jobs, o.DrainBudget, func() error {
		var err error
		w, err = e.StartApp(ctx, app.Roles{Worker: true}, db, over...)
		return err
	})
	stopProf()
	if w != nil {
		if serr := StopApp(w); err == nil {
			err = serr
		}
	}
	if err != nil {
		return DrainStats{}, err
	}
	st.FillRate = fill
	counts, err := e.statuses(ctx, ids.all())
	if err != nil {
		return DrainStats{}, err
	}
	st.Succeeded = counts["succeeded"]
	if st.Persisted, err = e.countJobs(ctx, db); err != nil {
		return DrainStats{}, err
	}
	switch {
	case counts["failed"] > 0:
		return st, fmt.Errorf("e2e: %d of %d jobs failed (%v)", counts["failed"], o.Jobs, counts)
	case st.Drained && (st.Succeeded != o.Jobs || st.Persisted != int64(o.Jobs)):
		return st, fmt.Errorf("e2e: %d of %d jobs succeeded (%v), %d persisted", st.Succeeded, o.Jobs, counts, st.Persisted)
	case st.Persisted < int64(st.Done) || st.Succeeded < st.Done:
		// Jobs handled in the window must be durable and marked.
		return st, fmt.Errorf("e2e: %d jobs done in the window but %d succeeded (%v), %d persisted", st.Done, st.Succeeded, counts, st.Persisted)
	}
	return st, nil
}

// drainBaseline enqueues K no-op tasks of the payload's size with a plain
// asynq client, then times a raw asynq server draining them.
func (e *Env) drainBaseline(ctx context.Context, o *Options, payload []byte) (DrainStats, error) {
	cfg, err := e.Config("unused")
	if err != nil {
		return DrainStats{}, err
	}
	opt, err := redis.ParseURL(e.Redis.URL())
	if err != nil {
		return DrainStats{}, err
	}
	opt.PoolSize = max(64, cfg.WorkerConcurrency+16)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c := asynq.NewClientFromRedisClient(rdb)
	t0 := time.Now()
	if err := Drive(ctx, 32, o.Jobs, func(ctx context.Context, i int64) error {
		_, err := c.EnqueueContext(ctx, asynq.NewTask("bench:noop", payload), asynq.Queue(queue.Default),
			job.MaxRetry(cfg.JobMaxRetries), asynq.Timeout(cfg.JobTimeout))
		return err
	}); err != nil {
		return DrainStats{}, fmt.Errorf("fill: %w", err)
	}
	fill := float64(o.Jobs) / time.Since(t0).Seconds()
	e.settle(ctx, o)
	var srv *asynq.Server
	var handled atomic.Int64
	mux := asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		handled.Add(1)
		return nil
	})
	st, err := e.drain(ctx, o.Jobs, o.DrainBudget, func() error {
		srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: cfg.WorkerConcurrency, Queues: queue.Weights,
			TaskCheckInterval: cfg.TaskCheckInterval, DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
			ShutdownTimeout: cfg.ShutdownTimeout,
			Logger:          queue.NewLogger(slog.New(e.Log)), LogLevel: asynq.WarnLevel,
		})
		return srv.Start(mux)
	})
	if srv != nil {
		srv.Shutdown()
	}
	if err != nil {
		return DrainStats{}, err
	}
	st.FillRate = fill
	st.Succeeded = int(handled.Load())
	if st.Succeeded < st.Done || st.Drained && st.Succeeded != o.Jobs {
		return st, fmt.Errorf("baseline: %d tasks handled, %d done", st.Succeeded, st.Done)
	}
	return st, nil
}

// statuses returns how many of the jobs are in each status, from their
// state hashes.
func (e *Env) statuses(ctx context.Context, ids []string) (map[string]int, error) {
	out := map[string]int{}
	for chunk := range slices.Chunk(ids, 1000) {
		p := e.RDB.Pipeline()
		cmds := make([]*redis.StringCmd, len(chunk))
		for i, id := range chunk {
			cmds[i] = p.HGet(ctx, "cq:job:"+id, "st")
		}
		if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for _, c := range cmds {
			out[c.Val()]++
		}
	}
	return out, nil
}

func (e *Env) countJobs(ctx context.Context, db string) (int64, error) {
	d, off, err := store.Connect(ctx, e.Mongo, db)
	if err != nil {
		return 0, err
	}
	defer func() { _ = off(context.WithoutCancel(ctx)) }()
	return d.Collection("jobs").CountDocuments(ctx, bson.D{})
}
