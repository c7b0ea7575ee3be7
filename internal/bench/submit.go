package bench

import (
	"context"
	"encoding/json"
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
// repetition; and figure 6's second claudeq, with budgets configured.
type SubmitResult struct {
	Concurrency       int
	PayloadBytes      int // size of the task payload both enqueue
	Subject, Baseline []LoadStats
	Budgets           []LoadStats // claudeq with BudgetSettings
	NoAudit           []LoadStats // claudeq with CLAUDEQ_AUDIT_LOG=off
}

// BudgetUSD is the daily (and monthly) budget of every scope in the
// with-budgets runs: enforced, but far more than a run can reserve (a
// submit reserves about $0.004), so that no request is refused.
const BudgetUSD = 1_000_000

// BudgetSettings configure every budget (user, department, gateway daily
// and monthly) at BudgetUSD.
var BudgetSettings = []string{
	"CLAUDEQ_QUOTA_USER_DAILY_USD", fmt.Sprint(BudgetUSD),
	"CLAUDEQ_QUOTA_DEPARTMENT_DAILY_USD", fmt.Sprint(BudgetUSD),
	"CLAUDEQ_QUOTA_TOTAL_DAILY_USD", fmt.Sprint(BudgetUSD),
	"CLAUDEQ_QUOTA_TOTAL_MONTHLY_USD", fmt.Sprint(BudgetUSD),
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
// the API key, validation, cache lookup that misses, budget reservation,
// state hash, enqueue, audit record) against BaselineAPI, on the same
// Redis, with the same HTTP client setup, no worker running, Redis flushed
// before every run; and, interleaved with them, the api with
// BudgetSettings (figure 6). Every claudeq run gets a fresh app and
// database, so that the audit records of earlier runs do not slow it down.
// The three rotate which goes first in each repetition. With
// o.ProfileDir set, one more window at the last concurrency is
// CPU-profiled (not counted) and summarised.
func RunSubmit(ctx context.Context, e *Env, o *Options) ([]SubmitResult, *ProfileSummary, error) {
	db, err := e.NewDB(ctx, "probe")
	if err != nil {
		return nil, nil, err
	}
	probe, err := e.StartApp(ctx, app.Roles{API: true}, db)
	if err != nil {
		return nil, nil, err
	}
	payload, err := e.ProbePayload(ctx, "http://"+probe.Addr())
	if serr := StopApp(probe); err == nil {
		err = serr
	}
	if err != nil {
		return nil, nil, err
	}
	cfg, err := e.Config(db)
	if err != nil {
		return nil, nil, err
	}
	bl, err := StartBaselineAPI(e.Redis.URL(), max(64, cfg.WorkerConcurrency+16), payload)
	if err != nil {
		return nil, nil, err
	}
	defer bl.Close()

	systems := []string{"claudeq", "baseline", "budgets", "noaudit"}
	var out []SubmitResult
	for _, conc := range o.Concurrency {
		r := SubmitResult{Concurrency: conc, PayloadBytes: len(payload)}
		for rep := range o.Reps {
			for k := range systems {
				name := systems[(rep+k)%len(systems)]
				var st LoadStats
				var err error
				if name == "baseline" {
					st, err = e.submitWindow(ctx, o, conc, bl.URL, "")
				} else {
					var over []string
					switch name {
					case "budgets":
						over = BudgetSettings
					case "noaudit":
						over = []string{"CLAUDEQ_AUDIT_LOG", "off"}
					}
					st, err = e.submitClaudeq(ctx, o, conc, over, "")
				}
				if err != nil {
					return nil, nil, err
				}
				switch name {
				case "claudeq":
					r.Subject = append(r.Subject, st)
				case "baseline":
					r.Baseline = append(r.Baseline, st)
				case "noaudit":
					r.NoAudit = append(r.NoAudit, st)
				default:
					r.Budgets = append(r.Budgets, st)
				}
				o.logf("submit c=%d rep %d/%d %-8s %8.0f req/s  p50 %v p99 %v  errors %d", conc, rep+1, o.Reps, name,
					st.RPS, st.P50, st.P99, st.Errors)
			}
		}
		out = append(out, r)
	}
	var prof *ProfileSummary
	if o.ProfileDir != "" && len(o.Concurrency) > 0 {
		conc := o.Concurrency[len(o.Concurrency)-1]
		path := filepath.Join(o.ProfileDir, fmt.Sprintf("submit-c%d.pprof", conc))
		st, err := e.submitClaudeq(ctx, o, conc, nil, path)
		if err != nil {
			return nil, nil, err
		}
		o.logf("submit c=%d profiled  %8.0f req/s (not counted), profile in %s", conc, st.RPS, path)
		p, err := SummarizeProfile(path, fmt.Sprintf("Submit, %d clients, no budgets (%s req/s while profiled)", conc, num(st.RPS)), SubmitStages)
		if err != nil {
			return nil, nil, err
		}
		prof = &p
	}
	return out, prof, e.Flush(ctx)
}

// submitClaudeq starts a fresh api (with the settings over, e.g.
// BudgetSettings) over a fresh database, checks that its budgets are what the run
// says, measures one window and stops it.
func (e *Env) submitClaudeq(ctx context.Context, o *Options, conc int, over []string, prof string) (LoadStats, error) {
	db, err := e.NewDB(ctx, "submit")
	if err != nil {
		return LoadStats{}, err
	}
	budgets := len(over) > 0 && over[0] == BudgetSettings[0]
	a, err := e.StartApp(ctx, app.Roles{API: true}, db, over...)
	if err != nil {
		return LoadStats{}, err
	}
	defer func() { _ = StopApp(a) }()
	base := "http://" + a.Addr()
	if err := e.checkBudget(ctx, base, budgets); err != nil {
		return LoadStats{}, err
	}
	return e.submitWindow(ctx, o, conc, base+"/api/claude/chat", prof)
}

// submitWindow flushes Redis, waits for the machine to settle and runs one
// closed-loop window against url, CPU-profiled into prof when it is set.
func (e *Env) submitWindow(ctx context.Context, o *Options, conc int, url, prof string) (LoadStats, error) {
	if err := e.Flush(ctx); err != nil {
		return LoadStats{}, err
	}
	e.settle(ctx, o)
	s := &Submitter{Client: NewHTTPClient(conc), URL: url, Key: e.Key}
	defer s.Client.CloseIdleConnections()
	stopProf := func() {}
	if prof != "" {
		stopProf = profile(prof)
	}
	st := ClosedLoop(ctx, conc, o.Warmup, o.Duration, e.usage, s.Call())
	stopProf()
	return st, ctx.Err()
}

// checkBudget asks the api at base for the bench user's budgets and fails
// unless the user's daily budget is BudgetUSD (want) or unlimited (!want):
// a misspelt setting must not make the with-budgets runs measure nothing.
func (e *Env) checkBudget(ctx context.Context, base string, want bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/claude/quota", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+e.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var q struct {
		Data []struct {
			Scope, Period string
			LimitUSD      *float64 `json:"limit_usd"`
			Unlimited     bool
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/claude/quota: status %d, %v", resp.StatusCode, err)
	}
	for _, d := range q.Data {
		if d.Scope != "user" || d.Period != "daily" {
			continue
		}
		switch {
		case want && (d.Unlimited || d.LimitUSD == nil || *d.LimitUSD != BudgetUSD):
			return fmt.Errorf("budgets: the user's daily budget is not $%d: %+v", BudgetUSD, d)
		case !want && !d.Unlimited:
			return fmt.Errorf("no budgets: the user's daily budget is limited: %+v", d)
		}
		return nil
	}
	return fmt.Errorf("GET /api/claude/quota: no user daily budget in %+v", q.Data)
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
