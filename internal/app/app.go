// Package app wires claudeq's roles (api, worker, scheduler) from a
// config.Config, starts them and stops them in reverse order. The binaries
// in cmd/ and claudeq dev are thin shells around it; end-to-end tests start
// the same roles on :0.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/redisbatch"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/task"
	"github.com/claudeq/claudeq/internal/upstream"
	"github.com/claudeq/claudeq/internal/webhook"
)

// Roles says which parts a process runs.
type Roles struct {
	API, Worker, Scheduler bool
}

// Options are what Start needs beyond the configuration.
type Options struct {
	Roles    Roles
	Logger   *slog.Logger
	Now      func() time.Time // default time.Now
	Upstream task.Upstream    // default: one node from CLAUDEQ_UPSTREAM_URL/_API_KEY
	// Monitor makes the /monitoring UI for the api role (monitor.New
	// through monitor.Plug); nil: the api serves none. Only binaries that
	// serve it pass it, so that the others do not link asynqmon.
	Monitor func(MonitorSpec) (MonitorUI, error)
}

// App is a running set of roles.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	rdb      *redis.Client
	crdb     *redis.Client
	mongoOff func(context.Context) error
	Store    *store.Store
	Queue    *queue.Queue
	Fleet    *upstream.Fleet
	Money    api.Money
	commit   *store.Committer
	icommit  *store.Committer    // interactive requests' ledger entries: messages.go
	ibatch   *redisbatch.Batcher // interactive requests' background Redis calls: messages.go
	srv      *asynq.Server
	httpSrv  *http.Server
	ln       net.Listener
	schedOff context.CancelFunc
	schedWG  chan struct{}
	bgOff    context.CancelFunc
	bgWG     chan struct{}
	keeper   *job.Keeper // answers paid for and not yet billed (worker)
	owedOff  context.CancelFunc
	owedWG   chan struct{}
	keepOff  context.CancelFunc
	keepWG   chan struct{}
	API      *api.Server

	// a.Metrics, a.Registry, a.Audit, a.AuditChain …: security.go
	security
}

// KeepFlushInterval is how often a worker tries to move the answers it
// holds (Redis and the store both down when they arrived) to either.
const KeepFlushInterval = 500 * time.Millisecond

// Keeper returns the worker's keeper of answers not yet billed (nil
// without the worker role).
func (a *App) Keeper() *job.Keeper { return a.keeper }

// RedisBufferSize is the read and the write buffer of each connection of
// the app's Redis clients.
const RedisBufferSize = 8 << 10

// Start connects to Redis and MongoDB and starts the requested roles.
func Start(ctx context.Context, cfg config.Config, o Options) (_ *App, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &App{cfg: cfg, log: o.Logger}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = a.Shutdown(sctx)
		}
	}()
	ropt, err := redis.ParseURL(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("CLAUDEQ_REDIS_URL: %w", err)
	}
	ropt.PoolSize = max(64, cfg.WorkerConcurrency+16)
	// go-redis gives every connection a 32 KiB read and a 32 KiB write
	// buffer. A worker holding thousands of jobs in flight opens about a
	// connection per job finishing at once, so those buffers were most of
	// its memory; job state, payloads and answers are a few KiB, and a
	// larger value is still read whole, only in more than one read.
	ropt.ReadBufferSize, ropt.WriteBufferSize = RedisBufferSize, RedisBufferSize
	a.rdb = redis.NewClient(ropt)
	a.crdb = a.rdb
	if cfg.CacheRedisURL != "" && cfg.CacheRedisURL != cfg.RedisURL {
		copt, err := redis.ParseURL(cfg.CacheRedisURL.Reveal())
		if err != nil {
			return nil, fmt.Errorf("CLAUDEQ_CACHE_REDIS_URL: %w", err)
		}
		copt.ReadBufferSize, copt.WriteBufferSize = RedisBufferSize, RedisBufferSize
		a.crdb = redis.NewClient(copt)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.rdb.Ping(pctx).Err(); err != nil {
		return nil, fmt.Errorf("redis at CLAUDEQ_REDIS_URL not reachable: %w", err)
	}
	db, off, err := store.Connect(pctx, cfg.MongoURI.Reveal(), cfg.MongoDatabase)
	if err != nil {
		return nil, fmt.Errorf("CLAUDEQ_MONGO_URI: %w", err)
	}
	a.mongoOff = off
	a.Store = store.New(db)
	if err := a.Store.EnsureIndexes(pctx); err != nil {
		return nil, fmt.Errorf("mongodb at CLAUDEQ_MONGO_URI: %w", err)
	}
	if err := a.initSecurity(pctx, o); err != nil { // encryption, metrics, audit, limits, policy: security.go
		return nil, err
	}
	a.Queue = queue.New(a.rdb)
	money, err := newMoney(cfg, a.rdb, o.Now)
	if err != nil {
		return nil, err
	}
	a.Money = money
	ch := cache.New(a.crdb, cfg.CacheTTL)
	notifier := &job.Notifier{Client: a.Queue.Client(), PublicURL: cfg.PublicURL, MaxBody: cfg.WebhookMaxBytes,
		Schedule: cfg.WebhookSchedule, Retention: cfg.IdempotencyTTL, Now: o.Now}
	secrets := webhook.NewSecretStore(a.rdb, o.Now)
	batches := a.newBatches(cfg, o, notifier) // batches.go

	nodes := cfg.Nodes
	if len(nodes) == 0 {
		nodes = []upstream.NodeConfig{{Name: "default", URL: cfg.UpstreamURL, APIKey: claudeq.Secret(cfg.UpstreamAPIKey.Reveal()), Weight: 1}}
	}
	a.Fleet, err = upstream.NewFleet(nodes, upstream.FleetOptions{
		Strategy: cfg.Balancer, Redis: a.rdb, HTTPClient: upstream.DefaultHTTPClient(), Timeout: cfg.UpstreamTimeout,
		FailureThreshold: cfg.NodeFailures, FailureWindow: cfg.NodeCooldown, Cooldown: cfg.NodeCooldown,
		Now: o.Now, Logger: o.Logger, OnStart: a.Metrics.UpstreamStarted,
		Builtin: a.Money.Pricing.Catalog(), Aliases: cfg.ModelAliases,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream nodes: %w", err)
	}

	if o.Roles.Worker {
		var up task.Upstream = a.Fleet
		if o.Upstream != nil {
			up = o.Upstream
		} else if len(cfg.Nodes) == 0 && cfg.UpstreamAPIKey == "" {
			return nil, errors.New("CLAUDEQ_UPSTREAM_API_KEY (or CLAUDEQ_NODES_FILE) is required for the worker (claudeq dev uses a simulator instead)")
		}
		a.commit = a.Store.NewCommitter(store.CommitterOptions{Logger: o.Logger})
		a.keeper = &job.Keeper{Redis: a.Queue, Store: a.Store, Now: o.Now, Logger: o.Logger}
		kctx, stop := context.WithCancel(context.Background())
		a.keepOff, a.keepWG = stop, make(chan struct{})
		go func() {
			defer close(a.keepWG)
			a.keeper.Run(kctx, KeepFlushInterval)
		}()
		mux := asynq.NewServeMux()
		mux.Handle(task.TypeJobRun, &task.JobHandler{
			Queue: a.Queue, Store: a.Store, Committer: a.commit, Cache: ch, Upstream: up, Keeper: a.keeper,
			Now: o.Now, Logger: o.Logger, IdempotencyTTL: cfg.IdempotencyTTL, NoUpstreamWait: cfg.NoUpstreamWait, Notifier: notifier,
			Pricing: a.Money.Pricing, Quota: a.Money.Quota, Metrics: a.Metrics, Batches: batches,
		})
		mux.Handle(webhook.TypeDeliver, &webhook.Handler{
			Secrets:   secrets.Secrets,
			Deliverer: webhook.NewDeliverer(webhook.Config{Policy: cfg.WebhookAllow, Timeout: cfg.WebhookTimeout, Now: o.Now}),
			Recorder: webhook.RecorderFunc(func(ctx context.Context, at webhook.Attempt) error {
				return a.Store.RecordAttempt(ctx, store.Attempt(at))
			}),
			Schedule: cfg.WebhookSchedule,
			OnGone: func(ctx context.Context, p webhook.Payload) error {
				// 410 Gone disables the endpoint: this event stops here, and
				// a key whose default webhook it is loses it.
				keyID := ""
				if claudeq.IsBatchID(p.JobID) {
					b, err := a.Store.Batch(ctx, p.JobID)
					if err != nil {
						return err
					}
					keyID = b.KeyID
				} else {
					j, err := a.Store.Job(ctx, p.JobID)
					if err != nil {
						return err
					}
					keyID = j.KeyID
				}
				off, err := a.Store.DisableKeyWebhook(ctx, keyID, p.URL, o.Now().UTC())
				o.Logger.Warn("webhook receiver answered 410 Gone: endpoint disabled", "job_id", p.JobID, "key_default_disabled", off)
				return err
			},
			Now: o.Now, Logger: o.Logger, Metrics: a.Metrics,
		})
		mux.Handle(task.TypeRetention, &task.RetentionHandler{Store: a.Store, Retention: cfg.Retention, Now: o.Now, Logger: o.Logger})
		mux.Handle(task.TypeReconcile, &task.ReconcileHandler{Queue: a.Queue, Store: a.Store, Now: o.Now, Logger: o.Logger,
			Quota: a.Money.Quota, StaleAfter: cfg.QuotaReconcileAfter, Ledger: a.Store, Batches: batches, Notifier: notifier,
			Outbox: a.Queue, LedgerWriter: a.Store})
		mux.Handle(job.TypeBatchSweep, batches)
		mux.Handle(task.TypeProbe, &task.ProbeHandler{Fleet: a.Fleet, Logger: o.Logger})
		mux.Handle(TypeAuditAnchor, a.auditAnchor(o))
		a.srv = queue.NewServer(a.rdb, queue.ServerOptions{
			Concurrency: cfg.WorkerConcurrency, TaskCheckInterval: cfg.TaskCheckInterval,
			DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval, ShutdownTimeout: cfg.ShutdownTimeout,
			RetryDelay: retryDelay(cfg), Logger: o.Logger,
			IsFailure: func(err error) bool { return job.IsFailure(err) && !webhook.IsInfra(err) },
		})
		if err := a.srv.Start(mux); err != nil {
			return nil, fmt.Errorf("start worker: %w", err)
		}
		o.Logger.Info("worker started", "concurrency", cfg.WorkerConcurrency)
	}

	if o.Roles.Scheduler {
		sctx, stop := context.WithCancel(context.Background())
		a.schedOff, a.schedWG = stop, make(chan struct{})
		go func() {
			defer close(a.schedWG)
			a.schedule(sctx, o.Now)
		}()
		o.Logger.Info("scheduler started", "retention", cfg.Retention, "every", cfg.RetentionInterval)
	}

	if o.Roles.API {
		interactive := a.interactive(o) // the Anthropic-compatible API: messages.go
		a.API = api.New(api.Deps{
			Queue: a.Queue, Store: a.Store, Cache: ch, Models: a.Fleet, Logger: o.Logger, Now: o.Now,
			Options: api.Options{
				MaxBodyBytes: cfg.MaxBodyBytes, DefaultModel: cfg.DefaultModel, DefaultMaxTokens: cfg.DefaultMaxTokens,
				KeyCacheTTL: cfg.KeyCacheTTL, IdempotencyTTL: cfg.IdempotencyTTL, CacheTTL: cfg.CacheTTL,
				JobMaxRetries: cfg.JobMaxRetries, JobTimeout: cfg.JobTimeout, FallbackModels: cfg.FallbackModels,
				MaxQueued: cfg.MaxQueuedJobs,
			},
			Webhooks: api.Webhooks{Policy: cfg.WebhookAllow, Secrets: secrets, Notifier: notifier, Grace: cfg.WebhookSecretGrace},
			Fleet:    a.Fleet,
			Money:    a.Money,
			Security: a.apiSecurity(),

			Interactive: interactive,
		})
		a.mountBatches(cfg, batches) // /v1/messages/batches: batches.go
		if err := a.mountMonitor(o); err != nil {
			return nil, err
		}
		a.ln, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("CLAUDEQ_HTTP_ADDR: %w", err)
		}
		a.httpSrv = &http.Server{
			Handler:           a.API,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			WriteTimeout:      10 * time.Minute,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		}
		go func() {
			if err := a.httpSrv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Logger.Error("http server stopped", "err", err)
			}
		}()
		octx, ostop := context.WithCancel(context.Background())
		a.owedOff, a.owedWG = ostop, make(chan struct{})
		go func() {
			defer close(a.owedWG)
			var wg sync.WaitGroup
			wg.Go(func() { a.API.WatchKeys(octx, cfg.KeyWatchInterval) })
			a.API.RunOwed(octx, KeepFlushInterval)
			wg.Wait()
		}()
		bctx, stop := context.WithCancel(context.Background())
		a.bgOff, a.bgWG = stop, make(chan struct{})
		go func() {
			defer close(a.bgWG)
			t := time.NewTicker(30 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-bctx.Done():
					return
				case <-t.C:
					fctx, cancel := context.WithTimeout(bctx, 10*time.Second)
					if err := a.API.FlushKeyUse(fctx); err != nil {
						o.Logger.Warn("recording key use failed", "err", err)
					}
					cancel()
				}
			}
		}()
		o.Logger.Info("api listening", "addr", a.ln.Addr().String())
	}
	if err := a.startAdmin(o); err != nil {
		return nil, err
	}
	return a, nil
}

// retryDelay is the worker's asynq RetryDelayFunc: webhook deliveries follow
// their schedule, jobs a jittered exponential backoff.
func retryDelay(cfg config.Config) asynq.RetryDelayFunc {
	jobs := task.RetryDelay(cfg.RetryBase, cfg.RetryMax)
	hooks := cfg.WebhookSchedule.RetryDelayFunc()
	return func(n int, err error, t *asynq.Task) time.Duration {
		if t.Type() == webhook.TypeDeliver {
			return hooks(n, err, t)
		}
		return jobs(n, err, t)
	}
}

// Addr returns the api's listening address ("" without the api role).
func (a *App) Addr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Redis returns the queue Redis client.
func (a *App) Redis() *redis.Client { return a.rdb }

// periodic is one task the scheduler enqueues every period.
type periodic struct {
	typ     string
	every   time.Duration
	payload []byte
	id      string // distinguishes tasks of one type (a probe per node)
}

// schedule enqueues each periodic task once per period. The TaskID names the
// period and the task is retained for the period, so any number of
// schedulers enqueue it once.
func (a *App) schedule(ctx context.Context, now func() time.Time) {
	entries := []periodic{
		{typ: task.TypeRetention, every: a.cfg.RetentionInterval},
		{typ: task.TypeReconcile, every: a.cfg.ReconcileInterval},
		{typ: TypeAuditAnchor, every: a.cfg.AuditAnchorInterval},
		{typ: job.TypeBatchSweep, every: a.cfg.Batches.SweepInterval},
	}
	for _, n := range a.Fleet.Names() {
		b, _ := json.Marshal(task.ProbePayload{Node: n})
		entries = append(entries, periodic{typ: task.TypeProbe, every: a.cfg.HealthInterval, payload: b, id: n})
	}
	done := make(chan struct{}, len(entries))
	for _, p := range entries {
		go func() {
			defer func() { done <- struct{}{} }()
			a.runPeriodic(ctx, now, p)
		}()
	}
	for range entries {
		<-done
	}
}

func (a *App) runPeriodic(ctx context.Context, now func() time.Time, p periodic) {
	for {
		t := now()
		_, err := a.Queue.Client().EnqueueContext(ctx, asynq.NewTask(p.typ, p.payload),
			asynq.TaskID(task.PeriodTaskID(p.typ+":"+p.id, t, p.every)), asynq.Queue(queue.Critical),
			asynq.Retention(p.every), asynq.MaxRetry(3), asynq.Timeout(min(p.every, time.Minute)))
		switch {
		case err == nil:
			a.log.Debug("periodic task enqueued", "type", p.typ)
		case errors.Is(err, asynq.ErrTaskIDConflict):
		case ctx.Err() == nil:
			a.log.Warn("enqueue periodic task failed", "type", p.typ, "err", err)
		}
		next := t.Truncate(p.every).Add(p.every).Sub(t)
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			next = min(next, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// Shutdown stops the roles in reverse order of start: no new requests, no
// new periodic tasks, in-flight jobs finish (or go back to the queue after
// the shutdown timeout), pending writes land, connections close.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	if a.httpSrv != nil {
		if err := a.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.API != nil {
		if err := a.API.Drain(ctx); err != nil { // interactive requests' ledger entries and settlements
			errs = append(errs, err)
		}
	}
	if a.ibatch != nil {
		if err := a.ibatch.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.owedOff != nil { // after the settlements above: theirs may be owed now
		a.owedOff()
		<-a.owedWG
		a.API.FinishOwed(ctx)
	}
	if a.icommit != nil {
		a.icommit.Close()
	}
	if a.bgOff != nil {
		a.bgOff()
		<-a.bgWG
		if err := a.API.FlushKeyUse(ctx); err != nil {
			a.log.Warn("recording key use failed", "err", err)
		}
	}
	if a.schedOff != nil {
		a.schedOff()
		<-a.schedWG
	}
	if a.srv != nil {
		a.srv.Shutdown()
	}
	if a.keepOff != nil { // after the jobs: their last answers may be held
		a.keepOff()
		<-a.keepWG
	}
	if a.commit != nil {
		a.commit.Close()
	}
	a.stopSecurity(ctx) // admin listener, monitor, audit writer: security.go
	if a.crdb != nil && a.crdb != a.rdb {
		_ = a.crdb.Close()
	}
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
	if a.mongoOff != nil {
		if err := a.mongoOff(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
