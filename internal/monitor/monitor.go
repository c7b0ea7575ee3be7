package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// DefaultRootPath is where the UI is mounted unless Options.RootPath says
// otherwise.
const DefaultRootPath = "/monitoring"

// DefaultSessionTTL is how long a browser session lasts after login.
const DefaultSessionTTL = 8 * time.Hour

// Options configure New.
type Options struct {
	// RootPath is the URL path of the UI, without a trailing slash.
	// Default "/monitoring".
	RootPath string
	// RedisConnOpt is the queue Redis that asynqmon inspects (asynq's own
	// connection options, e.g. from asynq.ParseRedisURI(CLAUDEQ_REDIS_URL);
	// Sentinel and Cluster options work too). Required.
	RedisConnOpt asynq.RedisConnOpt
	// Redis stores the browser sessions; the queue Redis fits (it must not
	// evict keys). Default: a client made from RedisConnOpt, closed by Close.
	Redis redis.UniversalClient
	// ValidateKey reports whether key is a valid, unrevoked API key with the
	// admin scope. It returns false and a nil error for an unknown, revoked
	// or non-admin key, and an error only when the check could not be made
	// (the key store is down). Required.
	ValidateKey func(ctx context.Context, key string) (isAdmin bool, err error)
	// SessionTTL is how long a session lasts after login. Default 8h.
	SessionTTL time.Duration
	// SecureCookie sets the Secure attribute on the session cookie on
	// every response, for deployments that terminate TLS in front of the
	// api without setting X-Forwarded-Proto. Default false: Secure only
	// when the login request came over TLS or with X-Forwarded-Proto: https.
	SecureCookie bool
	// ReadOnly makes asynqmon refuse every request but GET (no pausing,
	// deleting or running tasks from the UI). Default false.
	ReadOnly bool
	// ShowPayloads shows task payloads and results in the UI. They hold
	// users' prompts and Claude's answers, so by default the UI shows only
	// their size: operators manage queues, they do not read conversations.
	ShowPayloads bool
	// PrometheusAddress, when set, lets asynqmon draw queue charts from that
	// Prometheus server (the api queries it, not the browser). Default none.
	PrometheusAddress string
	// Logger receives login and session events. Default: discard.
	Logger *slog.Logger
}

func (o *Options) validate() error {
	var errs []error
	if o.RootPath == "" {
		o.RootPath = DefaultRootPath
	}
	o.RootPath = strings.TrimSuffix(o.RootPath, "/")
	if !strings.HasPrefix(o.RootPath, "/") || path.Clean(o.RootPath) != o.RootPath || o.RootPath == "" {
		errs = append(errs, fmt.Errorf("monitor: RootPath %q must be a clean absolute path such as /monitoring", o.RootPath))
	}
	if o.RedisConnOpt == nil {
		errs = append(errs, errors.New("monitor: RedisConnOpt is required"))
	}
	if o.ValidateKey == nil {
		errs = append(errs, errors.New("monitor: ValidateKey is required"))
	}
	if o.SessionTTL < 0 {
		errs = append(errs, fmt.Errorf("monitor: SessionTTL %v is negative", o.SessionTTL))
	}
	if o.SessionTTL == 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Monitor is the /monitoring handler: login, logout and asynqmon behind a
// session. It is safe for concurrent use.
type Monitor struct {
	opt       Options
	root      string // "/monitoring"
	ui        *asynqmon.HTTPHandler
	sessions  *sessions
	ownsRedis redis.UniversalClient // closed by Close when we made it
	log       *slog.Logger
}

// New returns the monitor. Close releases its Redis connections.
func New(opts Options) (*Monitor, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m := &Monitor{opt: opts, root: opts.RootPath, log: opts.Logger}
	rdb := opts.Redis
	if rdb == nil {
		c, ok := opts.RedisConnOpt.MakeRedisClient().(redis.UniversalClient)
		if !ok {
			return nil, fmt.Errorf("monitor: unsupported RedisConnOpt %T", opts.RedisConnOpt)
		}
		rdb, m.ownsRedis = c, c
	}
	m.sessions = &sessions{rdb: rdb, ttl: opts.SessionTTL}
	uo := asynqmon.Options{
		RootPath:          opts.RootPath,
		RedisConnOpt:      opts.RedisConnOpt,
		ReadOnly:          opts.ReadOnly,
		PrometheusAddress: opts.PrometheusAddress,
	}
	if !opts.ShowPayloads {
		uo.PayloadFormatter = asynqmon.PayloadFormatterFunc(hidden)
		uo.ResultFormatter = asynqmon.ResultFormatterFunc(hidden)
	}
	m.ui = asynqmon.New(uo)
	return m, nil
}

// hidden stands for a payload or result the UI does not show.
func hidden(_ string, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return fmt.Sprintf("(%d bytes, hidden)", len(b))
}

// Close releases the Redis connections the monitor opened.
func (m *Monitor) Close() error {
	err := m.ui.Close()
	if m.ownsRedis != nil {
		err = errors.Join(err, m.ownsRedis.Close())
	}
	return err
}

// RootPath returns the path the UI is mounted on, e.g. "/monitoring".
func (m *Monitor) RootPath() string { return m.root }

// Register mounts the monitor on e: RootPath and everything under it, for
// every method. The routes take Echo's middleware (request id, metrics)
// like any other; the api's bearer-key auth must not be in front of them,
// since the monitor authenticates by its session cookie.
func (m *Monitor) Register(e *echo.Echo) {
	h := echo.WrapHandler(m)
	e.Any(m.root, h)
	e.Any(m.root+"/*", h)
}

// EndAllSessions ends every monitoring session at once (e.g. after an
// admin key leaked): every browser must log in again.
func (m *Monitor) EndAllSessions(ctx context.Context) error {
	return m.sessions.endAll(ctx)
}

func (m *Monitor) loginPath() string  { return m.root + "/login" }
func (m *Monitor) logoutPath() string { return m.root + "/logout" }
func (m *Monitor) apiPrefix() string  { return m.root + "/api/" }

// ServeHTTP implements http.Handler for RootPath and the paths under it.
func (m *Monitor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p != m.root && !strings.HasPrefix(p, m.root+"/") {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")

	switch p {
	case m.loginPath():
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			m.loginForm(w, r, http.StatusOK, "", m.safeNext(r.URL.Query().Get("next")))
		case http.MethodPost:
			m.login(w, r)
		default:
			h.Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
		return
	case m.logoutPath():
		if r.Method != http.MethodPost {
			h.Set("Allow", "POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		m.logout(w, r)
		return
	}

	if !safeMethod(r.Method) && crossSite(r) {
		m.deny(w, r, http.StatusForbidden, "permission_error", "cross-site requests are refused")
		return
	}
	ok, err := m.sessions.check(r.Context(), sessionToken(r))
	if err != nil {
		m.log.Warn("monitor: session check failed", "err", err)
		m.deny(w, r, http.StatusServiceUnavailable, "service_unavailable", "cannot check the session right now, try again")
		return
	}
	if !ok {
		m.unauthenticated(w, r)
		return
	}
	if p == m.root && safeMethod(r.Method) {
		http.Redirect(w, r, m.root+"/", http.StatusFound)
		return
	}
	if strings.HasPrefix(p, m.apiPrefix()) {
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Cache-Control", "no-store")
		m.ui.ServeHTTP(w, r)
		return
	}
	m.serveUI(w, r)
}

// unauthenticated sends a page request to the login form and answers an
// API request (or any non-GET) with 401.
func (m *Monitor) unauthenticated(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, m.apiPrefix()) || !safeMethod(r.Method) {
		m.deny(w, r, http.StatusUnauthorized, "authentication_error",
			"no valid monitoring session: log in at "+m.loginPath())
		return
	}
	http.Redirect(w, r, m.loginPath()+"?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

// deny answers in the Anthropic error shape, as the rest of the api does.
func (m *Monitor) deny(w http.ResponseWriter, _ *http.Request, code int, typ, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Cookie realm="claudeq monitoring"`)
	}
	if code == http.StatusServiceUnavailable {
		h.Set("Retry-After", "2")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
}

// safeNext returns next when it is a path under the root (no scheme, no
// host, not the login or logout page), else the UI's home: the login form
// never redirects anywhere else.
func (m *Monitor) safeNext(next string) string {
	home := m.root + "/"
	if next == "" || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return home
	}
	clean := path.Clean(u.Path)
	if clean != m.root && !strings.HasPrefix(clean, m.root+"/") {
		return home
	}
	if clean == m.loginPath() || clean == m.logoutPath() || clean == m.root {
		return home
	}
	if strings.HasSuffix(u.Path, "/") {
		clean += "/"
	}
	out := (&url.URL{Path: clean, RawQuery: u.RawQuery}).RequestURI()
	if strings.HasPrefix(out, "//") {
		return home
	}
	return out
}

func safeMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// crossSite reports whether a browser marked the request as coming from
// another site. Requests without the header (curl, older browsers) pass:
// they carry no ambient cookie across sites anyway (SameSite=Strict).
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	return false
}

// secure reports whether the session cookie gets the Secure attribute.
func (m *Monitor) secure(r *http.Request) bool {
	return m.opt.SecureCookie || r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
