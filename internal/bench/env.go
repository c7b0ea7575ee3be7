package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/devmongo"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
)

// Env is one installation for the whole run: a fresh redis-server, an
// embedded FerretDB with its data in a temporary directory, the simulated
// upstream at zero latency, and one API key.
type Env struct {
	Dir    string
	Redis  *RedisServer
	RDB    *redis.Client // for flushing and polling, not used by the measured code
	Mongo  string        // MongoDB URI
	Sim    *sim.Server
	SimURL string
	Key    string // a valid API key, present in every database NewDB creates
	Log    *CountingHandler

	keyID     string
	mongoStop func()
	simStop   func()
	mu        sync.Mutex
	dbs       int
	sims      []string // URLs of the extra simulators of NodesFile
	simStops  []func()
}

// NewEnv starts the servers. Close stops them and removes the directory.
func NewEnv(ctx context.Context) (_ *Env, err error) {
	dir, err := os.MkdirTemp("", "claudeq-bench-")
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, Log: &CountingHandler{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.Redis, err = StartRedis(dir); err != nil {
		return nil, err
	}
	e.RDB = redis.NewClient(&redis.Options{Addr: e.Redis.Addr, PoolSize: 8})
	if e.Mongo, e.mongoStop, err = devmongo.Start(ctx, filepath.Join(dir, "mongo"), slog.New(errorsTo{w: os.Stderr})); err != nil {
		return nil, err
	}
	if e.Sim, e.SimURL, e.simStop, err = sim.Listen("127.0.0.1:0", sim.Config{}); err != nil {
		return nil, err
	}
	e.Key, e.keyID = apikey.New()
	return e, nil
}

// Close stops everything NewEnv started.
func (e *Env) Close() {
	for _, stop := range e.simStops {
		stop()
	}
	if e.simStop != nil {
		e.simStop()
	}
	if e.RDB != nil {
		_ = e.RDB.Close()
	}
	if e.mongoStop != nil {
		e.mongoStop()
	}
	e.Redis.Stop()
	_ = os.RemoveAll(e.Dir)
}

// Flush empties Redis (FLUSHALL).
func (e *Env) Flush(ctx context.Context) error { return e.RDB.FlushAll(ctx).Err() }

// Settle waits until this process and redis-server are nearly idle (under
// 10% of a CPU over 250 ms), for at most 30 s, so that work left over from
// the previous run (FerretDB finishing writes its client gave up on, the
// garbage collector) does not slow down the next; then, for at most
// machine, until the rest of the machine is too. It reports whether both
// settled.
func (e *Env) Settle(ctx context.Context, machine time.Duration) bool {
	const window = 250 * time.Millisecond
	quiet := func(max time.Duration, load func(Usage) time.Duration) bool {
		deadline := time.Now().Add(max)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			u0 := e.usage()
			sleep(ctx, window)
			if load(e.usage().sub(u0)) < window/10 {
				return true
			}
		}
		return false
	}
	ours := quiet(30*time.Second, func(u Usage) time.Duration { return u.Proc + u.Redis })
	if machine <= 0 {
		return ours
	}
	return quiet(machine, func(u Usage) time.Duration { return u.Machine }) && ours
}

func (e *Env) settle(ctx context.Context, o *Options) {
	if !e.Settle(ctx, o.MachineIdleWait) {
		o.logf("bench: the machine did not become idle; measuring anyway")
	}
}

// NewDB creates a fresh database with the store's indexes and the env's API
// key, and returns its name. Every measured run gets its own, so that runs
// do not slow each other down by growing one SQLite file.
func (e *Env) NewDB(ctx context.Context, prefix string) (string, error) {
	return e.newDBAt(ctx, e.Mongo, prefix)
}

// newDBAt is NewDB on the MongoDB server at uri.
func (e *Env) newDBAt(ctx context.Context, uri, prefix string) (string, error) {
	e.mu.Lock()
	e.dbs++
	name := fmt.Sprintf("%s_%d", prefix, e.dbs)
	e.mu.Unlock()
	db, off, err := store.Connect(ctx, uri, name)
	if err != nil {
		return "", err
	}
	defer func() { _ = off(context.WithoutCancel(ctx)) }()
	st := store.New(db)
	if err := st.EnsureIndexes(ctx); err != nil {
		return "", err
	}
	err = st.CreateKey(ctx, store.APIKey{ID: e.keyID, Hash: apikey.Hash(e.Key), Prefix: e.Key[:8], UserID: "bench",
		Department: "bench", Tier: "standard", Scopes: []string{claudeq.ScopeJobs}, CreatedAt: time.Now().UTC()})
	return name, err
}

// Settings returns the CLAUDEQ_* settings of the runs against database db,
// with overrides (key, value, key, value…). Everything not named here is
// the production default (worker concurrency 100, key cache 30s, cache 1h…).
func (e *Env) Settings(db string, over ...string) map[string]string {
	m := map[string]string{
		"CLAUDEQ_HTTP_ADDR":           "127.0.0.1:0",
		"CLAUDEQ_REDIS_URL":           e.Redis.URL(),
		"CLAUDEQ_MONGO_URI":           e.Mongo,
		"CLAUDEQ_MONGO_DATABASE":      db,
		"CLAUDEQ_UPSTREAM_URL":        e.SimURL,
		"CLAUDEQ_UPSTREAM_API_KEY":    "sim-key",
		"CLAUDEQ_TASK_CHECK_INTERVAL": "20ms",
		"CLAUDEQ_SHUTDOWN_TIMEOUT":    "10s",
		"CLAUDEQ_LOG_LEVEL":           "warn",
		// The bench measures the job path, not the per-key and per-IP rate
		// limiters: their defaults (600 requests a minute per key, 1000
		// per 15 minutes per address) would answer most requests with 429.
		// With 0/0 and off the limiter makes no Redis call.
		"CLAUDEQ_RATELIMIT_TIERS": "standard=0/0",
		"CLAUDEQ_RATELIMIT_IP":    "off",
		SimKeyVar:                 "sim-key",
	}
	for i := 0; i+1 < len(over); i += 2 {
		m[over[i]] = over[i+1]
	}
	return m
}

// SimKeyVar is the variable the nodes files of NodesFile take their API
// key from (Settings defines it), as a real nodes file would.
const SimKeyVar = "BENCH_SIM_KEY"

// NodesFile writes a CLAUDEQ_NODES_FILE of n simulator nodes of weight 1
// and returns its path: the env's simulator first, then others started
// here, every one at zero latency on 127.0.0.1, each its own HTTP server.
func (e *Env) NodesFile(n int) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	urls := []string{e.SimURL}
	for len(e.sims) < n-1 {
		_, url, stop, err := sim.Listen("127.0.0.1:0", sim.Config{})
		if err != nil {
			return "", err
		}
		e.sims, e.simStops = append(e.sims, url), append(e.simStops, stop)
	}
	urls = append(urls, e.sims[:n-1]...)
	var b strings.Builder
	b.WriteString("nodes:\n")
	for i, u := range urls {
		fmt.Fprintf(&b, "  - name: node%d\n    url: %s\n    api_key: ${%s}\n    weight: 1\n", i, u, SimKeyVar)
	}
	path := filepath.Join(e.Dir, fmt.Sprintf("nodes-%d.yaml", n))
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// Config loads the configuration of Settings.
func (e *Env) Config(db string, over ...string) (config.Config, error) {
	return config.Load(config.Map(e.Settings(db, over...)))
}

// StartApp starts roles against database db with Settings(db, over...).
// Warnings and errors are counted in e.Log, not printed.
func (e *Env) StartApp(ctx context.Context, roles app.Roles, db string, over ...string) (*app.App, error) {
	cfg, err := e.Config(db, over...)
	if err != nil {
		return nil, err
	}
	return app.Start(ctx, cfg, app.Options{Roles: roles, Logger: slog.New(e.Log)})
}

// StartAPI starts an api role over a fresh database named after prefix,
// with the settings over, and returns it, its base URL and the database.
// Stop it with StopApp.
func (e *Env) StartAPI(ctx context.Context, prefix string, over ...string) (*app.App, string, string, error) {
	db, err := e.NewDB(ctx, prefix)
	if err != nil {
		return nil, "", "", err
	}
	a, err := e.StartApp(ctx, app.Roles{API: true}, db, over...)
	if err != nil {
		return nil, "", "", err
	}
	return a, "http://" + a.Addr(), db, nil
}

// StopApp shuts a down.
func StopApp(a *app.App) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return a.Shutdown(ctx)
}

// serve serves h on a fresh 127.0.0.1 port with the api's server timeouts,
// and returns its base URL and a stop function.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		WriteTimeout: 10 * time.Minute, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}

// errorsTo is a slog.Handler that prints errors to w and drops the rest.
// Unlike slog.TextHandler, its WithAttrs formats nothing: FerretDB derives
// a logger with the command's attributes for every operation, and eager
// formatting of those would cost the measured process several percent of
// its CPU for records that are never printed.
type errorsTo struct {
	w     io.Writer
	attrs []slog.Attr
	group string
}

func (h errorsTo) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h errorsTo) Handle(ctx context.Context, r slog.Record) error {
	var th slog.Handler = slog.NewTextHandler(h.w, nil)
	th = th.WithAttrs(h.attrs)
	if h.group != "" {
		th = th.WithGroup(h.group)
	}
	return th.Handle(ctx, r)
}

func (h errorsTo) WithAttrs(as []slog.Attr) slog.Handler {
	if h.group != "" {
		return h // attributes inside a group are dropped; errors are rare
	}
	h.attrs = append(slices.Clip(h.attrs), as...)
	return h
}

func (h errorsTo) WithGroup(name string) slog.Handler {
	if h.group == "" {
		h.group = name
	}
	return h
}

// CountingHandler is a slog.Handler that counts warnings and errors and
// keeps the first few distinct messages with their counts, so that a run
// that logged trouble says so in the report instead of printing a flood.
type CountingHandler struct {
	mu    sync.Mutex
	n     int
	first []string       // distinct messages, in order of first appearance
	count map[string]int // by message
	attrs map[string]string
}

// Enabled implements slog.Handler: only warnings and errors.
func (h *CountingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

// Handle implements slog.Handler.
func (h *CountingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	msg := r.Level.String() + " " + r.Message
	if h.count == nil {
		h.count, h.attrs = map[string]int{}, map[string]string{}
	}
	if _, seen := h.count[msg]; !seen && len(h.first) < 5 {
		h.first = append(h.first, msg)
		var s string
		r.Attrs(func(a slog.Attr) bool {
			s += " " + a.String()
			return true
		})
		h.attrs[msg] = s
	}
	h.count[msg]++
	return nil
}

// WithAttrs implements slog.Handler.
func (h *CountingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup implements slog.Handler.
func (h *CountingHandler) WithGroup(string) slog.Handler { return h }

// Counts returns how many warnings and errors were logged, and the first
// few distinct messages, each with how often it was logged and the
// attributes of its first occurrence.
func (h *CountingHandler) Counts() (int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.first))
	for i, m := range h.first {
		out[i] = fmt.Sprintf("%d× %s%s", h.count[m], m, h.attrs[m])
	}
	return h.n, out
}
