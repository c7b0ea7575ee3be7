package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/hibiken/asynq"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/queue"
)

// SubmitResult is figure 1 at one concurrency: closed-loop submit
// throughput of the real api and of the minimal baseline, one entry per
// repetition.
type SubmitResult struct {
	Concurrency       int
	PayloadBytes      int // size of the task payload both enqueue
	Subject, Baseline []LoadStats
}

// BaselineAPI is the submit baseline: an Echo server whose only route
// enqueues a fixed payload with asynq.Client.Enqueue, without reading the
// request, over a Redis client configured like the app's.
type BaselineAPI struct {
	URL    string
	stop   func()
	rdb    *redis.Client
	client *asynq.Client
}

// StartBaselineAPI serves the baseline on a free port. poolSize is the
// go-redis pool size (the app uses max(64, worker concurrency+16)).
func StartBaselineAPI(redisURL string, poolSize int, payload []byte) (*BaselineAPI, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	opt.PoolSize = poolSize
	b := &BaselineAPI{rdb: redis.NewClient(opt)}
	b.client = asynq.NewClientFromRedisClient(b.rdb)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/api/claude/chat", func(c echo.Context) error {
		info, err := b.client.EnqueueContext(c.Request().Context(), asynq.NewTask("bench:noop", payload), asynq.Queue(queue.Default))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusAccepted, map[string]any{"id": info.ID, "status": "queued"})
	})
	base, stop, err := serve(e)
	if err != nil {
		_ = b.rdb.Close()
		return nil, err
	}
	b.URL, b.stop = base+"/api/claude/chat", stop
	return b, nil
}

// Close stops the server.
func (b *BaselineAPI) Close() {
	b.stop()
	_ = b.rdb.Close()
}

// ProbePayload submits one job through the api at base and returns the
// payload of the task it queued (the size the baseline must match). It
// flushes Redis afterwards.
func (e *Env) ProbePayload(ctx context.Context, base string) ([]byte, error) {
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	s := &Submitter{Client: NewHTTPClient(1), URL: base + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	if _, err := s.Submit(ctx, 1_000_000); err != nil { // a 7-digit i, as in the middle of a run
		return nil, err
	}
	// asynq's client registers a queue in asynq:queues once per process,
	// and an earlier FLUSHALL may have removed it; the inspector needs it.
	if err := e.RDB.SAdd(ctx, "asynq:queues", queue.Default).Err(); err != nil {
		return nil, err
	}
	ins := asynq.NewInspectorFromRedisClient(e.RDB)
	ts, err := ins.ListPendingTasks(queue.Default, asynq.PageSize(1))
	if err != nil {
		return nil, err
	}
	if len(ts) != 1 {
		return nil, fmt.Errorf("probe: %d pending tasks after one submit", len(ts))
	}
	return ts[0].Payload, e.Flush(ctx)
}

// RunSubmit measures figure 1 at each concurrency: the real api (auth with
// the API key, validation, cache lookup that misses, state hash, enqueue)
// against BaselineAPI, on the same Redis, with the same HTTP client setup,
// no worker running, Redis flushed before every run. Subject and baseline
// alternate which goes first in each repetition.
func RunSubmit(ctx context.Context, e *Env, o *Options) ([]SubmitResult, error) {
	db, err := e.NewDB(ctx, "submit")
	if err != nil {
		return nil, err
	}
	a, err := e.StartApp(ctx, app.Roles{API: true}, db)
	if err != nil {
		return nil, err
	}
	defer func() { _ = StopApp(a) }()
	payload, err := e.ProbePayload(ctx, "http://"+a.Addr())
	if err != nil {
		return nil, err
	}
	cfg, err := e.Config(db)
	if err != nil {
		return nil, err
	}
	bl, err := StartBaselineAPI(e.Redis.URL(), max(64, cfg.WorkerConcurrency+16), payload)
	if err != nil {
		return nil, err
	}
	defer bl.Close()

	var out []SubmitResult
	for _, conc := range o.Concurrency {
		r := SubmitResult{Concurrency: conc, PayloadBytes: len(payload)}
		for rep := range o.Reps {
			for k := range 2 {
				subject := (rep+k)%2 == 0
				url, name := "http://"+a.Addr()+"/api/claude/chat", "claudeq"
				if !subject {
					url, name = bl.URL, "baseline"
				}
				if err := e.Flush(ctx); err != nil {
					return nil, err
				}
				e.settle(ctx, o)
				s := &Submitter{Client: NewHTTPClient(conc), URL: url, Key: e.Key}
				var stopProf func()
				if subject && rep == 0 && o.ProfileDir != "" {
					stopProf = profile(filepath.Join(o.ProfileDir, fmt.Sprintf("submit-c%d.pprof", conc)))
				}
				st := ClosedLoop(ctx, conc, o.Warmup, o.Duration, e.usage, s.Call())
				if stopProf != nil {
					stopProf()
				}
				s.Client.CloseIdleConnections()
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if subject {
					r.Subject = append(r.Subject, st)
				} else {
					r.Baseline = append(r.Baseline, st)
				}
				o.logf("submit c=%d rep %d/%d %-8s %8.0f req/s  p50 %v p99 %v  errors %d", conc, rep+1, o.Reps, name,
					st.RPS, st.P50, st.P99, st.Errors)
			}
		}
		out = append(out, r)
	}
	return out, e.Flush(ctx)
}

// profile starts a CPU profile into path and returns its stop function (a
// no-op when the profile cannot be started).
func profile(path string) func() {
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
