package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/ratelimit"
	"github.com/claudeq/claudeq/internal/secure"
)

// TypeAuditAnchor is the scheduler's periodic task that checks the audit
// records written since the last anchor and stores a new anchor
// (CLAUDEQ_AUDIT_ANCHOR_INTERVAL).
const TypeAuditAnchor = "audit:anchor"

// security is the part of an App about encryption at rest, the audit log,
// metrics, the api's hardening and the admin listener. It is embedded in
// App.
type security struct {
	// Registry is the process's one Prometheus registry; Metrics records
	// into it (set for every role, for handlers' typed calls).
	Registry *prometheus.Registry
	Metrics  *metrics.Metrics
	// AuditChain is the audit log; Audit writes to it in the background
	// (api and worker roles, nil in a scheduler-only process).
	AuditChain *audit.Chain
	Audit      *audit.Writer

	secure   *secure.Secure
	limiter  *ratelimit.Limiter
	policy   *policy.Policy
	monitor  MonitorUI
	adminSrv *http.Server
	adminLn  net.Listener
}

// initSecurity sets up, for every role, encryption at rest on the store,
// the metrics registry (with the asynq queue collector in the scheduler
// role, so that one role reports the queues) and the audit chain; the
// audit writer for the api and worker roles; and the api's hardening,
// limiter and content policy for the api role.
func (a *App) initSecurity(ctx context.Context, o Options) error {
	cfg := a.cfg
	ring := cfg.EncryptionRing()
	switch {
	case ring == nil && cfg.EncryptionRequired:
		return errors.New("CLAUDEQ_ENCRYPTION_REQUIRED is set but CLAUDEQ_ENCRYPTION_KEYS is empty: " +
			"give it kid:base64key (32 random bytes, e.g. openssl rand -base64 32)")
	case ring == nil:
		o.Logger.Warn("CLAUDEQ_ENCRYPTION_KEYS is not set: job results and conversations are stored in plaintext")
	default:
		a.Store.SetKeyRing(ring)
		o.Logger.Info("encryption at rest", "keys", ring)
	}

	a.Registry = prometheus.NewRegistry()
	mo := metrics.Options{Logger: o.Logger}
	if o.Roles.Scheduler {
		// State every process shares is reported by one role, read at
		// scrape: the queues, node health and budgets (metrics.go).
		mo.Inspector = asynq.NewInspectorFromRedisClient(a.rdb)
		mo.NodeHealth, mo.Budgets = a.nodeHealth, a.budgetUse
	}
	a.Metrics = metrics.New(a.Registry, mo)

	chain, err := audit.New(audit.Config{DB: a.Store.DB(), Redis: a.rdb, Key: cfg.AuditKey(), Logger: o.Logger, Now: o.Now})
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if err := chain.EnsureIndexes(ctx); err != nil {
		return fmt.Errorf("mongodb at CLAUDEQ_MONGO_URI: %w", err)
	}
	a.AuditChain = chain
	if !cfg.AuditLog && (o.Roles.API || o.Roles.Worker) {
		o.Logger.Warn("CLAUDEQ_AUDIT_LOG=off: requests and admin actions are not audited")
	}
	if cfg.AuditLog && (o.Roles.API || o.Roles.Worker) {
		a.Audit, err = chain.NewWriter(audit.WriterOptions{Buffer: cfg.AuditBuffer, BlockTimeout: cfg.AuditBlockTimeout,
			FlushInterval: cfg.AuditFlushInterval, SpillDir: cfg.AuditSpillDir, Logger: o.Logger})
		if err != nil {
			return fmt.Errorf("CLAUDEQ_AUDIT_SPILL_DIR: %w", err)
		}
	}

	if !o.Roles.API {
		return nil
	}
	if a.secure, err = secure.New(cfg.SecureConfig()); err != nil {
		return err
	}
	a.limiter, err = ratelimit.New(a.rdb, ratelimit.Config{
		IP: cfg.RateLimitIP, DisableIP: cfg.RateLimitIP == (ratelimit.Rate{}),
		Tiers: cfg.RateLimitTiers, DefaultTier: cfg.RateLimitDefaultTier, KeyFailOpen: cfg.RateLimitKeyFailOpen,
		Logger: o.Logger,
		OnError: func(_ string, failedOpen bool, _ error) {
			if failedOpen {
				a.Metrics.RateLimitFailOpen()
			}
		},
	})
	if err != nil {
		return err
	}
	if a.policy, err = policy.New(cfg.PolicyConfig()); err != nil {
		return err
	}
	return nil
}

// apiSecurity is the api's Security.
func (a *App) apiSecurity() api.Security {
	return api.Security{
		Secure: a.secure, Limiter: a.limiter,
		Policy: a.policy, PolicyAction: a.cfg.PolicyAction, PolicyDepartments: a.cfg.PolicyDepartments,
		Audit: a.Audit, AuditChain: a.AuditChain,
		Metrics: a.Metrics, MetricsHandler: metrics.Handler(a.Registry),
	}
}

// mountMonitor mounts the asynq UI at /monitoring on the api, behind a
// browser login that accepts only keys with the admin scope; the api's
// bearer-key auth is not in front of it (CLAUDEQ_MONITORING).
func (a *App) mountMonitor(o Options) error {
	if a.cfg.Monitoring == "off" {
		return nil
	}
	conn, err := asynq.ParseRedisURI(a.cfg.RedisURL.Reveal())
	if err != nil {
		return fmt.Errorf("CLAUDEQ_REDIS_URL: %w", err)
	}
	if o.Monitor == nil {
		// A binary built without the UI (asynqmon's assets are a third of
		// a binary's size): only cmd/api and claudeq dev pass it.
		o.Logger.Warn("this binary has no /monitoring UI (CLAUDEQ_MONITORING is ignored); run the api binary for it")
		return nil
	}
	a.monitor, err = o.Monitor(MonitorSpec{
		RedisConnOpt: conn, Redis: a.rdb, ValidateKey: a.API.ValidateAdminKey,
		ReadOnly: a.cfg.Monitoring == "read-only", Logger: o.Logger,
	})
	if err != nil {
		return err
	}
	a.API.Mount(a.monitor)
	return nil
}

// MonitorSpec is what the /monitoring UI is made from (internal/monitor's
// Options, which see).
type MonitorSpec struct {
	RedisConnOpt asynq.RedisConnOpt
	Redis        redis.UniversalClient
	ValidateKey  func(ctx context.Context, key string) (bool, error)
	ReadOnly     bool
	Logger       *slog.Logger
}

// MonitorUI is the /monitoring UI as the api mounts it (*monitor.Monitor).
type MonitorUI interface {
	api.Mounter
	Close() error
}

// startAdmin opens the admin listener (CLAUDEQ_METRICS_ADDR), for every
// role: /metrics without a key, /livez (the process answers) and /readyz
// (Redis and MongoDB answer).
func (a *App) startAdmin(o Options) error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("CLAUDEQ_METRICS_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(a.Registry))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	a.adminLn = ln
	a.adminSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn)}
	go func() {
		if err := a.adminSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("admin listener stopped", "err", err)
		}
	}()
	o.Logger.Info("admin listener (metrics, livez, readyz)", "addr", ln.Addr().String())
	return nil
}

// AdminAddr returns the admin listener's address ("" without
// CLAUDEQ_METRICS_ADDR).
func (a *App) AdminAddr() string {
	if a.adminLn == nil {
		return ""
	}
	return a.adminLn.Addr().String()
}

func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"redis": "ok", "mongodb": "ok"}
	code := http.StatusOK
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		checks["redis"], code = "unavailable", http.StatusServiceUnavailable
	}
	if err := a.Store.Ping(ctx); err != nil {
		checks["mongodb"], code = "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": code == http.StatusOK, "checks": checks})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// stopSecurity closes the admin listener, the monitor and the audit writer
// (after the api and the worker stopped, so that their last records are
// in it). Audit records that cannot be written within a few seconds are
// spilled to CLAUDEQ_AUDIT_SPILL_DIR for the next start, or reported lost
// in the log.
func (a *App) stopSecurity(ctx context.Context) {
	if a.adminSrv != nil {
		if err := a.adminSrv.Shutdown(ctx); err != nil {
			a.log.Warn("admin listener shutdown", "err", err)
		}
	}
	if a.monitor != nil {
		if err := a.monitor.Close(); err != nil {
			a.log.Warn("monitor close", "err", err)
		}
	}
	if a.Audit != nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := a.Audit.Close(actx); err != nil {
			a.log.Error("audit log: records lost at shutdown", "err", err)
		}
	}
}

// anchorHandler runs TypeAuditAnchor tasks.
type anchorHandler struct {
	chain *audit.Chain
	log   *slog.Logger
}

// ProcessTask anchors the chain. A broken chain is logged at error level
// and not retried (an anchor never vouches for a broken chain; retrying does
// not mend it); a store error is retried.
func (h *anchorHandler) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	an, err := h.chain.Anchor(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "chain is broken") {
			h.log.Error("audit log: chain is broken; not anchored (run claudeq audit verify)", "err", err)
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		return err
	}
	if an.Seq > 0 {
		// A copy of each anchor outside MongoDB (the log) makes rewriting
		// the chain detectable even by someone who can rewrite both
		// collections.
		h.log.Info("audit log anchored", "seq", an.Seq, "hash", an.Hash)
	}
	return nil
}

// auditAnchor returns the worker's handler of TypeAuditAnchor.
func (a *App) auditAnchor(o Options) asynq.Handler {
	return &anchorHandler{chain: a.AuditChain, log: o.Logger}
}
