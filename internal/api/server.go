// Package api is claudeq's HTTP surface: Echo routes, middleware and
// handlers. It authenticates, validates, answers from the cache, and puts
// jobs on the queue; the workers do the rest. errors.go owns the one table
// from error kind to HTTP status, and every error leaves in the Anthropic
// shape.
package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"github.com/claudeq/claudeq/internal/job"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/upstream"
	"github.com/claudeq/claudeq/internal/webhook"
)

// Store is what the api needs of the durable store.
type Store interface {
	Job(ctx context.Context, id string) (*claudeq.Job, error)
	Ping(ctx context.Context) error
	KeyByHash(ctx context.Context, hash string) (store.APIKey, error)
	Key(ctx context.Context, id string) (store.APIKey, error)
	Keys(ctx context.Context) ([]store.APIKey, error)
	CreateKey(ctx context.Context, k store.APIKey) error
	RevokeKey(ctx context.Context, id string, t time.Time) error
	RotateKey(ctx context.Context, oldID string, next store.APIKey, graceEnd time.Time) error
	TouchKeys(ctx context.Context, used map[string]time.Time) error
	UpdateKey(ctx context.Context, id, tier string, scopes []string, at time.Time) error
	KeysChangedSince(ctx context.Context, t time.Time) ([]store.KeyChange, error)
	Attempts(ctx context.Context, jobID string) ([]store.Attempt, error)
}

// Webhooks is what the api needs for webhook callbacks.
type Webhooks struct {
	Policy   *webhook.Policy      // who may be called back
	Secrets  *webhook.SecretStore // per-user signing secrets
	Notifier *job.Notifier        // redelivery
	Grace    time.Duration        // default grace of a secret rotation
}

// Options are the api's settings; see config.Config for their meaning and
// defaults.
type Options struct {
	MaxBodyBytes     int64
	DefaultModel     string
	DefaultMaxTokens int
	KeyCacheTTL      time.Duration
	IdempotencyTTL   time.Duration
	CacheTTL         time.Duration
	JobStateTTL      time.Duration // how long a queued job's state lives; default 7 days
	JobMaxRetries    int
	JobTimeout       time.Duration
	MaxQueued        int                 // jobs waiting in the queue beyond which submits get 503; 0: no limit
	FallbackModels   map[string][]string // model → fallbacks, for requests that name none
}

// Deps are the api's collaborators.
type Deps struct {
	Queue *queue.Queue
	Store Store
	Cache *cache.Cache
	// Models is the catalog of served models (upstream.Fleet); nil: no
	// model is served.
	Models   Models
	Logger   *slog.Logger
	Now      func() time.Time
	Options  Options
	Webhooks Webhooks
	Fleet    Fleet
	Money    Money
	// Interactive serves the Anthropic-compatible API (/v1/messages…):
	// messages.go.
	Interactive Interactive
	// Security: hardening, rate limits, content policy (d.Policy), audit
	// (d.Audit) and metrics (d.Metrics); see security.go.
	Security
}

// Models gives the models the gateway serves now: what its upstream nodes
// list (upstream.Fleet.Catalog).
type Models interface {
	Catalog(ctx context.Context) *claudeq.Catalog
}

// FixedModels serves the models of c, whatever the nodes list: for tests
// and benchmarks.
func FixedModels(c *claudeq.Catalog) Models { return fixedModels{c} }

type fixedModels struct{ c *claudeq.Catalog }

func (f fixedModels) Catalog(context.Context) *claudeq.Catalog { return f.c }

// catalog returns the served models now.
func (s *Server) catalog(ctx context.Context) *claudeq.Catalog {
	if s.models == nil {
		return claudeq.NewCatalog(nil, nil)
	}
	return s.models.Catalog(ctx)
}

// Fleet reports the upstream nodes' health.
type Fleet interface {
	Nodes(ctx context.Context) ([]upstream.NodeStatus, error)
}

// Server is the api. It is safe for concurrent use.
type Server struct {
	e      *echo.Echo
	q      *queue.Queue
	st     Store
	c      *cache.Cache
	models Models
	log    *slog.Logger
	now    func() time.Time
	opt    Options
	keys   *keyCache
	used   lastUsed
	wh     Webhooks
	fl     Fleet
	money  Money
	ledger Ledger
	queued backlog
	ia     Interactive
	bg     background // work requests leave behind: Drain
	owed   owed       // what answered requests could not write yet: owed.go

	// s.policy, s.metrics, s.limiter, s.auditLog …: security.go
	hardening
}

// New returns the api with its routes.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Options.JobStateTTL == 0 {
		d.Options.JobStateTTL = 7 * 24 * time.Hour
	}
	if d.Options.IdempotencyTTL == 0 {
		d.Options.IdempotencyTTL = 24 * time.Hour
	}
	if d.Options.MaxBodyBytes == 0 {
		d.Options.MaxBodyBytes = 1 << 20
	}
	s := &Server{q: d.Queue, st: d.Store, c: d.Cache, models: d.Models, log: d.Logger, now: d.Now, opt: d.Options,
		keys: newKeyCache(d.Options.KeyCacheTTL), wh: d.Webhooks, fl: d.Fleet, money: d.Money, ia: d.Interactive}
	if l, ok := d.Store.(Ledger); ok {
		s.ledger = l
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	s.hardening = newHardening(d.Security)
	s.use(e) // metrics, request id, security headers, CORS, audit, recover, no keys in URLs: security.go
	s.e = e

	e.GET("/api/claude/health", s.health)
	g := e.Group("/api/claude", s.limitIP, s.auth(claudeq.ScopeJobs), s.limitKey)
	g.POST("/chat", s.chat)
	g.POST("/analyze", s.analyze)
	g.GET("/jobs/:id", s.getJob)
	g.DELETE("/jobs/:id", s.cancelJob)
	g.DELETE("/cache", s.purgeCache)
	g.GET("/jobs/:id/webhooks", s.jobWebhooks)
	g.POST("/jobs/:id/webhooks/redeliver", s.redeliver)
	g.GET("/webhooks/secret", s.webhookSecret)
	g.POST("/estimate", s.estimateHandler)
	g.GET("/quota", s.quotaHandler)
	g.GET("/usage", s.usageHandler)
	g.POST("/webhooks/secret/rotate", s.rotateWebhookSecret)

	ad := e.Group("/admin", s.auth(claudeq.ScopeAdminRead), s.adminWrites)
	ad.GET("/keys", s.listKeys)
	ad.POST("/keys", s.createKey)
	ad.DELETE("/keys/:id", s.revokeKey)
	ad.POST("/keys/:id/rotate", s.rotateKey)
	ad.PATCH("/keys/:id", s.updateKey)
	ad.GET("/nodes", s.nodes)
	ad.GET("/usage", s.adminUsage)
	ad.GET("/quotas/:scope/:id", s.getLimit)
	ad.PUT("/quotas/:scope/:id", s.putLimit)
	s.mountMessages(e) // /v1/messages, /v1/messages/count_tokens, /v1/models: messages.go
	s.mountOps(e)      // /metrics, /livez, /readyz, /admin/audit/verify: security.go
	return s
}

// Echo returns the Echo instance, for mounting more routes.
func (s *Server) Echo() *echo.Echo { return s.e }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.e.ServeHTTP(w, r) }

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func randomID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + strings.ToLower(b32.EncodeToString(b))
}

func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := randomID("req_", 15)
		c.Set("request_id", id)
		c.Response().Header().Set("request-id", id)
		return next(c)
	}
}

func requestID(c echo.Context) string {
	id, _ := c.Get("request_id").(string)
	return id
}

func (s *Server) recover(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic in handler", "request_id", requestID(c), "path", c.Path(), "panic", r)
				err = &claudeq.Error{Kind: claudeq.KindInternal, Op: "api.recover"}
			}
		}()
		return next(c)
	}
}

// readJSON reads a JSON body of at most MaxBodyBytes into v.
func (s *Server) readJSON(c echo.Context, v any) error {
	r := c.Request()
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
		return claudeq.Errorf(claudeq.KindUnsupportedMediaType, "Content-Type must be application/json")
	}
	if r.ContentLength > s.opt.MaxBodyBytes {
		return claudeq.Errorf(claudeq.KindRequestTooLarge, "request body is larger than %d bytes", s.opt.MaxBodyBytes)
	}
	body, err := readAll(http.MaxBytesReader(c.Response(), r.Body, s.opt.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if asMaxBytes(err, &mbe) {
			return claudeq.Errorf(claudeq.KindRequestTooLarge, "request body is larger than %d bytes", s.opt.MaxBodyBytes)
		}
		return claudeq.Errorf(claudeq.KindInvalidRequest, "could not read the request body")
	}
	return decodeStrict(body, v)
}
