// Package secure holds the api's HTTP hardening as Echo middleware:
// security response headers, client-IP extraction behind trusted proxies,
// refusal of API keys in URLs (and redaction of URLs for logs), and CORS
// that is off unless origins are configured.
//
// Typical wiring in the api:
//
//	sec, err := secure.New(secure.Config{TrustedProxies: proxies, AllowedOrigins: origins})
//	e.IPExtractor = sec.IPExtractor() // c.RealIP() is now safe to rate-limit and audit on
//	e.Use(sec.Headers(), sec.CORS(), sec.RefuseQueryKeys())
//
// Client IP: X-Forwarded-For is honoured only when the direct peer
// (RemoteAddr) is inside one of Config.TrustedProxies; the client is then
// the right-most address in the chain that is not itself a trusted proxy
// (Echo's ExtractIPFromXFFHeader with its default trust of private, loopback
// and link-local ranges turned off). Otherwise X-Forwarded-For and
// X-Real-IP are ignored and the peer address is the client: anyone can send
// those headers. Make the outermost proxy overwrite, not append to, a
// client-supplied X-Forwarded-For where it can.
//
// A Secure is immutable and safe for concurrent use.
package secure

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// DefaultCSP is the Content-Security-Policy of API responses: JSON needs no
// sources, and no one may frame it.
const DefaultCSP = "default-src 'none'; frame-ancestors 'none'"

// MonitoringCSP is a CSP that lets the asynqmon UI (/monitoring) run: its
// own scripts (one inline), styles and the Google fonts it loads, API calls
// to itself; still no framing, no plugins, no foreign forms.
const MonitoringCSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; " +
	"style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src 'self' data: https://fonts.gstatic.com; " +
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// DefaultKeyParams are the query parameters RefuseQueryKeys refuses and
// RedactURL blanks, compared case-insensitively.
var DefaultKeyParams = []string{"api_key", "apikey", "api-key", "x-api-key", "x_api_key", "key", "access_token", "auth", "authorization"}

// keyPrefixes mark a value as an API key wherever it appears: claudeq's own
// keys and Anthropic's.
var keyPrefixes = []string{"cqk_", "sk-ant-"}

// Config configures the middlewares. Zero fields take the defaults.
type Config struct {
	// TrustedProxies are the proxies (CIDRs) whose X-Forwarded-For and
	// X-Forwarded-Proto are believed. CLAUDEQ_TRUSTED_PROXIES,
	// comma-separated CIDRs or addresses (see ParsePrefixes); default none:
	// the peer address is the client.
	TrustedProxies []netip.Prefix
	// HSTSMaxAge is the Strict-Transport-Security max-age, sent on HTTPS
	// responses only. CLAUDEQ_HSTS_MAX_AGE, default 8760h (a year); a
	// negative value sends none.
	HSTSMaxAge time.Duration
	// HSTSIncludeSubdomains adds includeSubDomains. CLAUDEQ_HSTS_INCLUDE_SUBDOMAINS,
	// default false (it binds every subdomain of the host, so it is the
	// domain owner's decision).
	HSTSIncludeSubdomains bool
	// CSP is the Content-Security-Policy of every response. Default
	// DefaultCSP.
	CSP string
	// PathCSP overrides CSP for paths under a prefix, the longest prefix
	// winning, e.g. {"/monitoring": MonitoringCSP}. A prefix matches the path
	// itself and paths below it ("/monitoring", "/monitoring/queues"), not
	// "/monitoringx".
	PathCSP map[string]string
	// AllowedOrigins turn CORS on for these origins ("https://app.example.com",
	// or "*" for any). CLAUDEQ_CORS_ALLOWED_ORIGINS, comma-separated; default
	// none: no CORS headers, so browsers refuse cross-origin calls.
	// Credentials (cookies) are never allowed: the API authenticates by header.
	AllowedOrigins []string
	// KeyParams are the query parameters that must not carry an API key.
	// Default DefaultKeyParams.
	KeyParams []string
	// AllowCaching, when false (the default), sets "Cache-Control: no-store"
	// on every response that does not set its own Cache-Control: prompts and
	// results must not linger in shared caches.
	AllowCaching bool
}

// Secure builds the middlewares of a Config.
type Secure struct {
	cfg       Config
	trusted   []netip.Prefix
	extractor echo.IPExtractor
	prefixes  []string // PathCSP keys, longest first
	keyParams map[string]bool
}

// New validates cfg and returns its middlewares.
func New(cfg Config) (*Secure, error) {
	if cfg.HSTSMaxAge == 0 {
		cfg.HSTSMaxAge = 365 * 24 * time.Hour
	}
	if cfg.CSP == "" {
		cfg.CSP = DefaultCSP
	}
	if cfg.KeyParams == nil {
		cfg.KeyParams = DefaultKeyParams
	}
	var errs []error
	for p := range cfg.PathCSP {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("secure: CSP path %q must start with /", p))
		}
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			errs = append(errs, fmt.Errorf("secure: CORS origin %q: want scheme://host[:port] or *", o))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Secure{cfg: cfg, keyParams: map[string]bool{}}
	for _, p := range cfg.TrustedProxies {
		s.trusted = append(s.trusted, canonical(p))
	}
	for p := range cfg.PathCSP {
		s.prefixes = append(s.prefixes, strings.TrimSuffix(p, "/"))
	}
	sort.Slice(s.prefixes, func(i, j int) bool { return len(s.prefixes[i]) > len(s.prefixes[j]) })
	for _, k := range cfg.KeyParams {
		s.keyParams[strings.ToLower(k)] = true
	}
	s.extractor = echo.ExtractIPDirect()
	if len(s.trusted) > 0 {
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, p := range s.trusted {
			opts = append(opts, echo.TrustIPRange(&net.IPNet{
				IP:   p.Addr().AsSlice(),
				Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
			}))
		}
		s.extractor = echo.ExtractIPFromXFFHeader(opts...)
	}
	return s, nil
}

// ParsePrefixes parses CLAUDEQ_TRUSTED_PROXIES: comma- or space-separated
// CIDRs ("10.0.0.0/8", "fd00::/8") or single addresses ("192.0.2.10",
// taken as /32 or /128). An IPv4-mapped range ("::ffff:10.0.0.0/104") is
// taken in IPv4 form (10.0.0.0/8), as peers are compared unmapped.
func ParsePrefixes(spec string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, f := range strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("trusted proxy %q: %w", f, err))
				continue
			}
			out = append(out, canonical(p))
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("trusted proxy %q: want a CIDR or an IP address", f))
			continue
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}

// canonical masks p and writes an IPv4-mapped range in IPv4 form: peers are
// compared unmapped, and Echo's X-Forwarded-For check reads a mapped range
// as IPv4 too.
func canonical(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() { // masking kept the ::ffff, so Bits ≥ 96
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// IPExtractor returns the Echo IPExtractor for the trusted proxies (the peer
// address when there are none). Set it as e.IPExtractor; c.RealIP() then
// returns the client address.
func (s *Secure) IPExtractor() echo.IPExtractor { return s.extractor }

// ClientIP returns the client address of r, as IPExtractor does.
func (s *Secure) ClientIP(r *http.Request) string { return s.extractor(r) }

// peerTrusted reports whether the direct peer of r is a trusted proxy.
func (s *Secure) peerTrusted(r *http.Request) bool {
	if len(s.trusted) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// IsHTTPS reports whether r reached us over HTTPS: TLS on this connection,
// or a trusted proxy saying so in X-Forwarded-Proto (every value "https";
// the header of an untrusted peer is ignored).
func (s *Secure) IsHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	vals := r.Header.Values(echo.HeaderXForwardedProto)
	if len(vals) == 0 || !s.peerTrusted(r) {
		return false
	}
	for _, v := range vals {
		for p := range strings.SplitSeq(v, ",") {
			if !strings.EqualFold(strings.TrimSpace(p), "https") {
				return false
			}
		}
	}
	return true
}

// CSPFor returns the Content-Security-Policy for path.
func (s *Secure) CSPFor(path string) string {
	for _, p := range s.prefixes {
		if path == p || strings.HasPrefix(path, p+"/") || p == "" {
			return s.cfg.PathCSP[p]
		}
	}
	return s.cfg.CSP
}

// Headers sets the security headers on every response: X-Content-Type-Options
// nosniff, X-Frame-Options DENY, Referrer-Policy no-referrer, the CSP of the
// path, Strict-Transport-Security on HTTPS requests only (IsHTTPS), and
// Cache-Control no-store unless the handler sets its own or AllowCaching. It
// removes any Server and X-Powered-By header before the response is written.
func (s *Secure) Headers() echo.MiddlewareFunc {
	hsts := ""
	if s.cfg.HSTSMaxAge > 0 {
		hsts = "max-age=" + strconv.FormatInt(int64(s.cfg.HSTSMaxAge/time.Second), 10)
		if s.cfg.HSTSIncludeSubdomains {
			hsts += "; includeSubDomains"
		}
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r, res := c.Request(), c.Response()
			h := res.Header()
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Content-Security-Policy", s.CSPFor(r.URL.Path))
			if hsts != "" && s.IsHTTPS(r) {
				h.Set("Strict-Transport-Security", hsts)
			}
			res.Before(func() {
				h.Del("Server")
				h.Del("X-Powered-By")
				if !s.cfg.AllowCaching && h.Get("Cache-Control") == "" {
					h.Set("Cache-Control", "no-store")
				}
			})
			return next(c)
		}
	}
}

// RefuseQueryKeys refuses a request that carries an API key in its URL: a
// query parameter named like one of Config.KeyParams (any value), or any
// query value that looks like a claudeq or Anthropic key. The key may
// already sit in a proxy's access log, so the error (KindAuthentication,
// 401) says to rotate it. Put it before authentication.
func (s *Secure) RefuseQueryKeys() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if name, ok := s.keyInQuery(c.Request().URL.RawQuery); ok {
				return &claudeq.Error{Kind: claudeq.KindAuthentication, Op: "secure.RefuseQueryKeys",
					Msg: fmt.Sprintf("API keys are not accepted in the URL (query parameter %q): URLs are written to logs and browser history. "+
						"Send the key in the Authorization: Bearer or x-api-key header, and rotate this key, as it may have been logged.", name)}
			}
			return next(c)
		}
	}
}

// keyInQuery returns the first parameter of raw that carries an API key.
func (s *Secure) keyInQuery(raw string) (string, bool) {
	if raw == "" {
		return "", false
	}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		name, val, _ := strings.Cut(part, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if keyShaped(name) {
			return "(a key written as the parameter's name)", true
		}
		if s.sensitive(name, val) {
			return name, true
		}
	}
	return "", false
}

// keyShaped reports whether s (unescaped) looks like an API key.
func keyShaped(s string) bool {
	return slices.ContainsFunc(keyPrefixes, func(p string) bool { return strings.HasPrefix(strings.TrimSpace(s), p) })
}

func (s *Secure) sensitive(name, rawVal string) bool {
	if s.keyParams[strings.ToLower(name)] {
		return true
	}
	v, err := url.QueryUnescape(rawVal)
	if err != nil {
		v = rawVal
	}
	return keyShaped(v)
}

// RedactURL returns u's path and query for logging, with the value of every
// sensitive parameter (a KeyParams name, or a key-shaped value) replaced by
// REDACTED; the order and other parameters are kept.
func (s *Secure) RedactURL(u *url.URL) string {
	out := u.EscapedPath()
	if u.RawQuery == "" {
		return out
	}
	parts := strings.Split(u.RawQuery, "&")
	for i, part := range parts {
		name, val, hasVal := strings.Cut(part, "=")
		n, err := url.QueryUnescape(name)
		if err != nil {
			n = name
		}
		switch {
		case keyShaped(n):
			parts[i] = "REDACTED"
		case hasVal && s.sensitive(n, val):
			parts[i] = name + "=REDACTED"
		}
	}
	return out + "?" + strings.Join(parts, "&")
}

// RedactURL is Secure.RedactURL with DefaultKeyParams, for code without a
// Secure at hand.
func RedactURL(u *url.URL) string {
	s, _ := New(Config{})
	return s.RedactURL(u)
}

// CORS returns the CORS middleware for Config.AllowedOrigins, or a no-op
// when there are none (browsers then refuse cross-origin calls). It allows
// the methods and headers of the API (Authorization, x-api-key,
// anthropic-version, anthropic-beta, Idempotency-Key, Content-Type) and
// exposes request-id, the RateLimit headers and Retry-After. Register it with
// e.Pre (or e.Use) before authentication, so that preflight requests, which
// carry no credentials, are answered.
func (s *Secure) CORS() echo.MiddlewareFunc {
	if len(s.cfg.AllowedOrigins) == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins: s.cfg.AllowedOrigins,
		AllowMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete},
		AllowHeaders: []string{echo.HeaderAuthorization, "X-Api-Key", echo.HeaderContentType,
			"Anthropic-Version", "Anthropic-Beta", "Idempotency-Key"},
		ExposeHeaders: []string{"Request-Id", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
			echo.HeaderRetryAfter, echo.HeaderLocation},
		MaxAge: 600,
	})
}
