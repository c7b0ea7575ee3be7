package secure

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

func mustNew(t *testing.T, cfg Config) *Secure {
	t.Helper()
	s, err := New(cfg)
	require.NoError(t, err)
	return s
}

func prefixes(t *testing.T, spec string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(spec)
	require.NoError(t, err)
	return p
}

// server is an Echo with the middlewares and an error handler that answers
// claudeq errors with their message, as the api's does.
func server(t *testing.T, s *Secure) *echo.Echo {
	t.Helper()
	e := echo.New()
	e.IPExtractor = s.IPExtractor()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		code := http.StatusInternalServerError
		if claudeq.ErrorKind(err) == claudeq.KindAuthentication {
			code = http.StatusUnauthorized
		}
		_ = c.String(code, claudeq.ErrorMessage(err))
	}
	e.Pre(s.CORS())
	e.Use(s.Headers(), s.RefuseQueryKeys())
	e.GET("/ip", func(c echo.Context) error { return c.String(http.StatusOK, c.RealIP()) })
	e.POST("/v1/messages", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	e.GET("/monitoring/*", func(c echo.Context) error {
		c.Response().Header().Set("Server", "asynqmon")
		c.Response().Header().Set("Cache-Control", "max-age=60")
		return c.String(http.StatusOK, "ui")
	})
	return e
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	s := mustNew(t, Config{TrustedProxies: prefixes(t, "10.0.0.0/8, 192.0.2.10")})
	none := mustNew(t, Config{})
	tests := []struct {
		name   string
		s      *Secure
		remote string
		xff    []string
		realIP string
		want   string
	}{
		{name: "no proxy header", s: s, remote: "203.0.113.5:1000", want: "203.0.113.5"},
		{name: "spoofed XFF from an untrusted peer", s: s, remote: "203.0.113.5:1000", xff: []string{"1.2.3.4"}, want: "203.0.113.5"},
		{name: "spoofed X-Real-IP from an untrusted peer", s: s, remote: "203.0.113.5:1000", realIP: "1.2.3.4", want: "203.0.113.5"},
		{name: "trusted proxy", s: s, remote: "10.1.2.3:1000", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "trusted single address", s: s, remote: "192.0.2.10:1000", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "address next to the trusted one", s: s, remote: "192.0.2.11:1000", xff: []string{"198.51.100.7"}, want: "192.0.2.11"},
		{name: "client prepends a fake hop", s: s, remote: "10.1.2.3:1000", xff: []string{"1.2.3.4, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "two trusted hops", s: s, remote: "10.1.2.3:1000", xff: []string{"198.51.100.7, 10.9.9.9"}, want: "198.51.100.7"},
		{name: "several headers", s: s, remote: "10.1.2.3:1000", xff: []string{"1.2.3.4", "198.51.100.7"}, want: "198.51.100.7"},
		{name: "garbage from the proxy falls back to the peer", s: s, remote: "10.1.2.3:1000", xff: []string{"nonsense"}, want: "10.1.2.3"},
		{name: "ipv4-mapped peer on a dual-stack listener", s: s, remote: "[::ffff:10.1.2.3]:1000", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "ipv6 client", s: s, remote: "10.1.2.3:1000", xff: []string{"2001:db8::1"}, want: "2001:db8::1"},
		{name: "private peer is not trusted by default", s: none, remote: "10.1.2.3:1000", xff: []string{"198.51.100.7"}, want: "10.1.2.3"},
		{name: "loopback peer is not trusted by default", s: none, remote: "127.0.0.1:1000", xff: []string{"198.51.100.7"}, want: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/ip", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if tt.realIP != "" {
				r.Header.Set("X-Real-IP", tt.realIP)
			}
			require.Equal(t, tt.want, tt.s.ClientIP(r))
			w := httptest.NewRecorder()
			server(t, tt.s).ServeHTTP(w, r)
			require.Equal(t, tt.want, w.Body.String(), "c.RealIP() agrees")
		})
	}
}

func TestHeaders(t *testing.T) {
	t.Parallel()
	s := mustNew(t, Config{
		TrustedProxies: prefixes(t, "10.0.0.0/8"),
		PathCSP:        map[string]string{"/monitoring": MonitoringCSP},
	})
	tests := []struct {
		name      string
		path      string
		remote    string
		tls       bool
		proto     string
		wantHSTS  bool
		wantCSP   string
		wantCache string
	}{
		{name: "plain http", path: "/ip", remote: "203.0.113.5:1", wantCSP: DefaultCSP, wantCache: "no-store"},
		{name: "direct tls", path: "/ip", remote: "203.0.113.5:1", tls: true, wantHSTS: true, wantCSP: DefaultCSP, wantCache: "no-store"},
		{name: "https via trusted proxy", path: "/ip", remote: "10.0.0.1:1", proto: "https", wantHSTS: true, wantCSP: DefaultCSP, wantCache: "no-store"},
		{name: "spoofed proto from untrusted peer", path: "/ip", remote: "203.0.113.5:1", proto: "https", wantCSP: DefaultCSP, wantCache: "no-store"},
		{name: "http via trusted proxy", path: "/ip", remote: "10.0.0.1:1", proto: "http", wantCSP: DefaultCSP, wantCache: "no-store"},
		{name: "mixed proto chain", path: "/ip", remote: "10.0.0.1:1", proto: "http, https", wantCSP: DefaultCSP, wantCache: "no-store"},
		{name: "monitoring UI", path: "/monitoring/queues", remote: "203.0.113.5:1", wantCSP: MonitoringCSP, wantCache: "max-age=60"},
		{name: "prefix is a path segment", path: "/monitoringx", remote: "203.0.113.5:1", wantCSP: DefaultCSP, wantCache: "no-store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			r.RemoteAddr = tt.remote
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			w := httptest.NewRecorder()
			server(t, s).ServeHTTP(w, r)
			h := w.Header()
			require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
			require.Equal(t, "DENY", h.Get("X-Frame-Options"))
			require.Equal(t, "no-referrer", h.Get("Referrer-Policy"))
			require.Equal(t, tt.wantCSP, h.Get("Content-Security-Policy"))
			require.Equal(t, tt.wantCache, h.Get("Cache-Control"))
			require.Empty(t, h.Values("Server"))
			if tt.wantHSTS {
				require.Equal(t, "max-age=31536000", h.Get("Strict-Transport-Security"))
			} else {
				require.Empty(t, h.Get("Strict-Transport-Security"))
			}
		})
	}

	// Errors get the headers too (404 from Echo's router).
	r := httptest.NewRequest(http.MethodGet, "/nope", nil)
	w := httptest.NewRecorder()
	server(t, s).ServeHTTP(w, r)
	require.Equal(t, DefaultCSP, w.Header().Get("Content-Security-Policy"))

	sub := mustNew(t, Config{HSTSIncludeSubdomains: true})
	r = httptest.NewRequest(http.MethodGet, "/ip", nil)
	r.TLS = &tls.ConnectionState{}
	w = httptest.NewRecorder()
	server(t, sub).ServeHTTP(w, r)
	require.Equal(t, "max-age=31536000; includeSubDomains", w.Header().Get("Strict-Transport-Security"))
}

func TestRefuseQueryKeys(t *testing.T) {
	t.Parallel()
	s := mustNew(t, Config{})
	tests := []struct {
		name   string
		target string
		want   int
		param  string
	}{
		{name: "clean", target: "/ip?limit=10", want: http.StatusOK},
		{name: "api_key", target: "/ip?api_key=cqk_abc", want: http.StatusUnauthorized, param: "api_key"},
		{name: "key", target: "/ip?limit=1&key=whatever", want: http.StatusUnauthorized, param: "key"},
		{name: "case-insensitive", target: "/ip?API_KEY=x", want: http.StatusUnauthorized, param: "API_KEY"},
		{name: "escaped name", target: "/ip?api%5Fkey=x", want: http.StatusUnauthorized, param: "api_key"},
		{name: "empty value still refused", target: "/ip?key=", want: http.StatusUnauthorized, param: "key"},
		{name: "key-shaped value anywhere", target: "/ip?q=cqk_0123456789", want: http.StatusUnauthorized, param: "q"},
		{name: "anthropic key value", target: "/ip?x=sk-ant-api03-xyz", want: http.StatusUnauthorized, param: "x"},
		{name: "keys in the path are not params", target: "/ip?monkey=1", want: http.StatusOK},
		{name: "a key as a bare name", target: "/ip?cqk_0123456789", want: http.StatusUnauthorized, param: "(a key written as the parameter's name)"},
		{name: "a key as a name with a value", target: "/ip?limit=1&sk-ant-api03-xyz=1", want: http.StatusUnauthorized, param: "(a key written as the parameter's name)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			w := httptest.NewRecorder()
			server(t, s).ServeHTTP(w, r)
			require.Equal(t, tt.want, w.Code, w.Body.String())
			if tt.want != http.StatusOK {
				require.Contains(t, w.Body.String(), "API keys are not accepted in the URL")
				require.Contains(t, w.Body.String(), `"`+tt.param+`"`)
				require.Contains(t, w.Body.String(), "rotate this key")
				require.NotContains(t, w.Body.String(), "cqk_")
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "no query", in: "/v1/messages", want: "/v1/messages"},
		{name: "harmless", in: "/jobs?limit=10&after_id=x", want: "/jobs?limit=10&after_id=x"},
		{name: "named params", in: "/x?a=1&api_key=cqk_secret&key=s2&b=2", want: "/x?a=1&api_key=REDACTED&key=REDACTED&b=2"},
		{name: "key-shaped value", in: "/x?token2=sk-ant-secret", want: "/x?token2=REDACTED"},
		{name: "escaped", in: "/x?API%5FKEY=s%20x", want: "/x?API%5FKEY=REDACTED"},
		{name: "no value", in: "/x?key&y", want: "/x?key&y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := url.Parse(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, RedactURL(u))
		})
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	on := mustNew(t, Config{AllowedOrigins: []string{"https://app.example.com"}})
	off := mustNew(t, Config{})
	tests := []struct {
		name       string
		s          *Secure
		method     string
		origin     string
		wantOrigin string
	}{
		{name: "off: no headers", s: off, method: http.MethodPost, origin: "https://app.example.com"},
		{name: "off: preflight gets nothing", s: off, method: http.MethodOptions, origin: "https://app.example.com"},
		{name: "allowed origin", s: on, method: http.MethodPost, origin: "https://app.example.com", wantOrigin: "https://app.example.com"},
		{name: "allowed preflight", s: on, method: http.MethodOptions, origin: "https://app.example.com", wantOrigin: "https://app.example.com"},
		{name: "other origin", s: on, method: http.MethodPost, origin: "https://evil.example.net"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(tt.method, "/v1/messages", nil)
			r.Header.Set("Origin", tt.origin)
			if tt.method == http.MethodOptions {
				r.Header.Set("Access-Control-Request-Method", http.MethodPost)
				r.Header.Set("Access-Control-Request-Headers", "x-api-key, content-type")
			}
			w := httptest.NewRecorder()
			server(t, tt.s).ServeHTTP(w, r)
			require.Equal(t, tt.wantOrigin, w.Header().Get("Access-Control-Allow-Origin"))
			require.Empty(t, w.Header().Get("Access-Control-Allow-Credentials"))
			if tt.wantOrigin != "" && tt.method == http.MethodOptions {
				require.Equal(t, http.StatusNoContent, w.Code)
				require.Contains(t, w.Header().Get("Access-Control-Allow-Headers"), "X-Api-Key")
			}
			if tt.wantOrigin != "" && tt.method == http.MethodPost {
				require.Contains(t, w.Header().Get("Access-Control-Expose-Headers"), "Retry-After")
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "csp path", cfg: Config{PathCSP: map[string]string{"monitoring": "x"}}, want: "must start with /"},
		{name: "origin with path", cfg: Config{AllowedOrigins: []string{"https://a.example.com/app"}}, want: "CORS origin"},
		{name: "origin without scheme", cfg: Config{AllowedOrigins: []string{"a.example.com"}}, want: "CORS origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := ParsePrefixes("10.0.0.0/33, nope")
	require.ErrorContains(t, err, "10.0.0.0/33")
	require.ErrorContains(t, err, `"nope"`)
	p, err := ParsePrefixes("10.1.2.3/8 ::ffff:192.0.2.1\n2001:db8::/32")
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"},
		[]string{p[0].String(), p[1].String(), p[2].String()})
}
