package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/ratelimit"
	"github.com/claudeq/claudeq/internal/secure"
)

// Security are the api's hardening, accounting and observability
// collaborators. Every field is optional: nil turns its feature off (Metrics
// then records into a registry nobody scrapes).
type Security struct {
	// Secure provides the security headers, the client IP behind trusted
	// proxies, the refusal of keys in URLs and CORS. Without it the client
	// IP is the TCP peer and none of the rest applies.
	Secure *secure.Secure
	// Limiter applies the per-IP limit to /api/claude/* before
	// authentication and the per-key limits (by tier) to submissions
	// (POST) right after it.
	Limiter *ratelimit.Limiter
	// Policy is the content policy for prompts; PolicyAction its default
	// action ("" = redact), PolicyDepartments the per-department ones. A
	// key's own policy_action wins over both.
	Policy            *policy.Policy
	PolicyAction      policy.Action
	PolicyDepartments map[string]policy.Action
	// Audit receives one record per request to /api/*, /admin/* and /v1/*
	// and one per admin action; AuditChain answers GET /admin/audit/verify.
	Audit      *audit.Writer
	AuditChain *audit.Chain
	// Metrics records HTTP metrics (outermost middleware) and is there for
	// handlers' typed calls; MetricsHandler serves GET /metrics to keys with
	// the admin:read scope.
	Metrics        *metrics.Metrics
	MetricsHandler http.Handler
}

// hardening is Security as the Server holds it.
type hardening struct {
	sec            *secure.Secure
	limiter        *ratelimit.Limiter
	policy         *policy.Policy
	defaultPolicy  policy.Action
	policyDepts    map[string]policy.Action
	auditLog       *audit.Writer
	auditChain     *audit.Chain
	metrics        *metrics.Metrics // never nil
	metricsHandler http.Handler
	auditRefused   *atomic.Int64 // unix nanoseconds of the last refusal logged
}

func newHardening(d Security) hardening {
	h := hardening{sec: d.Secure, limiter: d.Limiter, policy: d.Policy, defaultPolicy: d.PolicyAction,
		policyDepts: d.PolicyDepartments, auditLog: d.Audit, auditChain: d.AuditChain, metrics: d.Metrics,
		metricsHandler: d.MetricsHandler, auditRefused: new(atomic.Int64)}
	if h.defaultPolicy == "" {
		h.defaultPolicy = policy.Redact
	}
	if h.metrics == nil {
		h.metrics = metrics.New(prometheus.NewRegistry(), metrics.Options{})
	}
	return h
}

// Context keys of the values security.go keeps per request.
const (
	ctxAudit       = "audit"
	ctxKeyPolicy   = "key_policy_action"
	ctxRateTokens  = "ratelimit_tokens"
	ctxPolicyKinds = "policy_kinds"
)

// use installs the middleware chain, outermost first: metrics (which
// renders errors, so it sees the final status), request id, security
// headers, CORS (answers preflights before any authentication), the audit
// record, panic recovery, the refusal of API keys in URLs. It also sets the
// IP extractor: without trusted proxies the TCP peer is the client, whatever
// X-Forwarded-For says (Echo's default would believe it).
func (s *Server) use(e *echo.Echo) {
	var mw []echo.MiddlewareFunc
	mw = append(mw, s.metrics.HTTP(), s.requestID)
	e.IPExtractor = echo.ExtractIPDirect()
	if s.sec != nil {
		e.IPExtractor = s.sec.IPExtractor()
		mw = append(mw, s.sec.Headers(), s.sec.CORS())
	}
	mw = append(mw, s.auditRequests, s.recover)
	if s.sec != nil {
		mw = append(mw, s.sec.RefuseQueryKeys())
	}
	e.Use(mw...)
}

// mountOps adds the operational routes: GET /metrics (admin:read key),
// /livez, /readyz and GET /admin/audit/verify.
func (s *Server) mountOps(e *echo.Echo) {
	if s.metricsHandler != nil {
		e.GET("/metrics", echo.WrapHandler(s.metricsHandler), s.auth(claudeq.ScopeAdminRead))
	}
	e.GET("/livez", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	e.GET("/admin/audit/verify", s.verifyAudit, s.auth(claudeq.ScopeAdminRead))
}

// readyz answers 200 when Redis and MongoDB answer, else 503: the api can
// take requests. Unlike /api/claude/health it does not need a worker, so a
// load balancer does not drop every api while the workers are away.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"redis": "ok", "mongodb": "ok"}
	code := http.StatusOK
	if err := s.q.Ping(ctx); err != nil {
		checks["redis"], code = "unavailable", http.StatusServiceUnavailable
	}
	if err := s.st.Ping(ctx); err != nil {
		checks["mongodb"], code = "unavailable", http.StatusServiceUnavailable
	}
	return c.JSON(code, map[string]any{"ready": code == http.StatusOK, "checks": checks})
}

// limitIP applies the per-client-IP limit (c.RealIP(), which honours only
// trusted proxies). It fails open when Redis is down, which
// claudeq_ratelimit_failopen_total counts.
func (s *Server) limitIP(next echo.HandlerFunc) echo.HandlerFunc {
	if s.limiter == nil {
		return next
	}
	return s.limiter.IPMiddleware(nil)(next)
}

// limitKey applies the per-key limits of the key's tier to submissions
// (POST): one request, and the estimated tokens of a prompt (see
// estimateTokens). Reads such as polling a job count only against the
// per-IP limit. Put it right after auth.
func (s *Server) limitKey(next echo.HandlerFunc) echo.HandlerFunc {
	if s.limiter == nil {
		return next
	}
	return func(c echo.Context) error {
		if c.Request().Method != http.MethodPost {
			return next(c)
		}
		p := principalOf(c)
		tokens := s.estimateTokens(c)
		d := s.limiter.CheckKey(c.Request().Context(), p.KeyID, p.Tier, tokens)
		d.SetHeader(c.Response().Header())
		if err := d.Err(); err != nil {
			return err
		}
		c.Set(ctxRateTokens, tokens)
		return next(c)
	}
}

// estimateTokens estimates the tokens a submission will use, for the
// tokens-per-minute limit: a quarter of the body's bytes as input, plus
// max_tokens (or the default) as output. Bodies without prompt, messages or
// content count 0. The body is read here and put back for the handler; one
// larger than MaxBodyBytes counts 0 and the handler refuses it.
func (s *Server) estimateTokens(c echo.Context) int {
	r := c.Request()
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength > s.opt.MaxBodyBytes {
		return 0
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, s.opt.MaxBodyBytes+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if err != nil || int64(len(buf)) > s.opt.MaxBodyBytes {
		return 0
	}
	var b struct {
		MaxTokens *int            `json:"max_tokens"`
		Prompt    json.RawMessage `json:"prompt"`
		Messages  json.RawMessage `json:"messages"`
		Content   json.RawMessage `json:"content"`
	}
	if json.Unmarshal(buf, &b) != nil || (b.Prompt == nil && b.Messages == nil && b.Content == nil) {
		return 0
	}
	out := s.opt.DefaultMaxTokens
	if b.MaxTokens != nil && *b.MaxTokens > 0 {
		out = *b.MaxTokens
	}
	return (len(buf)+3)/4 + out
}

// rateLimitTokens returns the tokens the per-key limiter charged this
// request (0 when none), for a later Limiter.Settle with the real usage.
func rateLimitTokens(c echo.Context) int {
	n, _ := c.Get(ctxRateTokens).(int)
	return n
}

// audited reports whether requests to path get an audit record: the API,
// the admin routes and the Messages API, not health checks, metrics or the
// monitoring UI.
func audited(path string) bool {
	switch {
	case path == "/api/claude/health":
		return false
	case strings.HasPrefix(path, "/api/"), path == "/admin", strings.HasPrefix(path, "/admin/"), strings.HasPrefix(path, "/v1/"):
		return true
	}
	return false
}

// auditRecord returns the audit record of the request being served, for
// handlers to add what only they know: RequestHash, Model, PolicyKinds
// (Tokens and CostMicros stay 0 here; the worker knows them). It is never
// nil: without an audit log it is a scratch record.
func auditRecord(c echo.Context) *audit.Record {
	if r, ok := c.Get(ctxAudit).(*audit.Record); ok {
		return r
	}
	r := &audit.Record{}
	c.Set(ctxAudit, r)
	return r
}

// decision maps the outcome of a request to an audit decision.
func decision(err error) string {
	if err == nil {
		return audit.DecisionAllowed
	}
	var ce *claudeq.Error
	if errors.As(err, &ce) && ce.Op == "ratelimit" {
		return audit.DecisionRateLimited // including a token estimate above the tier's TPM (413)
	}
	switch claudeq.ErrorKind(err) {
	case claudeq.KindAuthentication, claudeq.KindPermission:
		return audit.DecisionAuthFailed
	case claudeq.KindRateLimit:
		return audit.DecisionRateLimited
	case claudeq.KindQuotaExceeded, claudeq.KindBilling:
		return audit.DecisionQuota
	case claudeq.KindContentPolicy:
		return audit.DecisionPolicy
	}
	// Other errors (invalid input, not found, store down) passed every
	// gate: the decision was to allow; the outcome is in the logs.
	return audit.DecisionAllowed
}

// auditRequests writes one audit record per audited request, after it was
// handled: who (user, key, client IP, user agent), what (request hash and
// model, set by the handler) and the decision. Its EventID is the request
// id, so that the record, the logs and the error body share it. Room for
// the record is reserved before the request is handled: when the audit
// buffer stays full and cannot spill, the request is refused with 503
// (Retry-After 1s) before anything is done, rather than served
// unaudited; refusals are logged and counted in
// claudeq_audit_dropped_total.
func (s *Server) auditRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if s.auditLog == nil || !audited(r.URL.Path) {
			return next(c)
		}
		ticket, terr := s.auditLog.Reserve()
		if terr != nil {
			s.metrics.AuditDropped(1)
			// Under overload this is every request: one line per 10 s, the
			// metric counts them all.
			now := time.Now().UnixNano()
			if last := s.auditRefused.Load(); now-last > int64(10*time.Second) && s.auditRefused.CompareAndSwap(last, now) {
				s.log.Error("audit: no room for requests' records; refusing them (claudeq_audit_dropped_total counts them)",
					"request_id", requestID(c), "err", terr)
			}
			return terr
		}
		defer ticket.Cancel() // a panic in next: give the room back
		rec := &audit.Record{EventID: requestID(c), Kind: audit.KindRequest, Time: s.now(),
			ClientIP: c.RealIP(), UserAgent: r.UserAgent()}
		c.Set(ctxAudit, rec)
		err := next(c)
		if p := principalOf(c); p.KeyID != "" {
			rec.UserID, rec.KeyID = p.UserID, p.KeyID
		}
		rec.Decision = decision(err)
		if kinds, ok := c.Get(ctxPolicyKinds).(policy.Summary); ok && rec.PolicyKinds == nil {
			rec.PolicyKinds = kinds
		}
		if lerr := ticket.Log(*rec); lerr != nil { // only at shutdown without a spill directory
			s.metrics.AuditDropped(1)
			s.log.Error("audit: request not recorded", "request_id", requestID(c), "err", lerr)
			if !c.Response().Committed {
				return lerr
			}
		}
		s.metrics.SetAuditBacklog(s.auditLog.Stats().Buffered)
		return err
	}
}

// auditAdmin records an admin action (audit.ActionKeyCreated, …) on
// target by the caller.
func (s *Server) auditAdmin(c echo.Context, action, target string) {
	if s.auditLog == nil {
		return
	}
	p := principalOf(c)
	r := c.Request()
	rec := audit.Record{EventID: requestID(c) + ":" + action, Kind: audit.KindAdmin, Time: s.now(),
		UserID: p.UserID, KeyID: p.KeyID, ClientIP: c.RealIP(), UserAgent: r.UserAgent(),
		Decision: audit.DecisionAllowed, Action: action, Target: target}
	if err := s.auditLog.Log(rec); err != nil {
		s.metrics.AuditDropped(1)
		s.log.Error("audit: admin action not recorded", "request_id", requestID(c), "action", action, "target", target, "err", err)
	}
}

func (s *Server) verifyAudit(c echo.Context) error {
	if s.auditChain == nil {
		return claudeq.Errorf(claudeq.KindNotFound, "the audit log is not configured")
	}
	rep, err := s.auditChain.Verify(c.Request().Context())
	if err != nil {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.verifyAudit", Msg: "audit store unavailable", Err: err}
	}
	return c.JSON(http.StatusOK, map[string]any{"ok": rep.OK(), "report": rep})
}

// policyAction returns the content-policy action for the caller: the key's
// own policy_action, else its department's (CLAUDEQ_POLICY_DEPARTMENTS),
// else the default (CLAUDEQ_POLICY_ACTION).
func (s *Server) policyAction(c echo.Context) policy.Action {
	if a, ok := c.Get(ctxKeyPolicy).(string); ok && policy.Action(a).Valid() {
		return policy.Action(a)
	}
	if a, ok := s.policyDepts[principalOf(c).Department]; ok {
		return a
	}
	return s.defaultPolicy
}

// applyPolicy applies the content policy to a Messages API request body
// ("system" and "messages") with the caller's action: it returns the body
// to send on (redacted, or unchanged), or a KindContentPolicy error (400
// content_policy_violation) when the action is block and something was
// found. What was found (kinds and counts, never the text) goes into the
// request's audit record. Without a policy it returns body unchanged.
func (s *Server) applyPolicy(c echo.Context, body []byte) ([]byte, error) {
	if s.policy == nil {
		return body, nil
	}
	out, sum, err := s.policy.ApplyMessages(body, s.policyAction(c))
	if len(sum) > 0 {
		c.Set(ctxPolicyKinds, sum)
		auditRecord(c).PolicyKinds = sum
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateAdminKey reports whether key is a usable API key with the admin
// scope, for the monitoring UI's login: false and nil for an unknown,
// revoked, expired or non-admin key, an error only when the key store
// cannot be asked.
func (s *Server) ValidateAdminKey(ctx context.Context, key string) (bool, error) {
	v, err := s.lookup(ctx, key)
	switch {
	case err == nil:
		return v.p.Has(claudeq.ScopeAdmin), nil // true only for the admin scope itself
	case claudeq.ErrorKind(err) == claudeq.KindAuthentication:
		return false, nil
	default:
		return false, err
	}
}

// Mounter mounts routes on the api's Echo: the monitoring UI
// (monitor.Monitor), which authenticates by its own session cookie and so
// stays outside the bearer-key groups.
type Mounter interface {
	Register(e *echo.Echo)
}

// Mount mounts m's routes. Call it before the api serves.
func (s *Server) Mount(m Mounter) { m.Register(s.e) }
