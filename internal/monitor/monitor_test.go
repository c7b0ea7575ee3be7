package monitor_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/monitor"
	"github.com/claudeq/claudeq/internal/redistest"
)

const (
	adminKey = "cqk_admin_0123456789"
	userKey  = "cqk_user_0123456789"
	downKey  = "cqk_down_0123456789" // the key store is "down" for this one
)

func validateKey(_ context.Context, key string) (bool, error) {
	switch key {
	case adminKey:
		return true, nil
	case downKey:
		return false, errors.New("store unreachable")
	}
	return false, nil
}

var queueNames = []string{"critical", "default", "batch", "webhooks"}

type testBundle struct {
	url string
	rdb *redis.Client
	mon *monitor.Monitor
}

// setup starts an Echo server on 127.0.0.1 with the monitor mounted over a
// real Redis holding a few tasks in each of claudeq's queues.
func setup(t *testing.T, mut ...func(*monitor.Options)) *testBundle {
	t.Helper()
	rs := redistest.New(t)
	rdb := rs.Client(t)
	c := asynq.NewClientFromRedisClient(rdb)
	for i, q := range queueNames {
		for j := 0; j <= i; j++ {
			_, err := c.Enqueue(asynq.NewTask("job:run", []byte(fmt.Sprintf(`{"n":%d}`, j))), asynq.Queue(q))
			require.NoError(t, err)
		}
	}
	opts := monitor.Options{
		RedisConnOpt: asynq.RedisClientOpt{Addr: rs.Addr(), DB: rs.DB()},
		Redis:        rdb,
		ValidateKey:  validateKey,
	}
	for _, f := range mut {
		f(&opts)
	}
	mon, err := monitor.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mon.Close() })
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	mon.Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &testBundle{url: srv.URL, rdb: rdb, mon: mon}
}

// client returns a client with a cookie jar that does not follow redirects.
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func login(t *testing.T, b *testBundle, c *http.Client, next string) *http.Response {
	t.Helper()
	resp, _ := post(t, c, b.url+"/monitoring/login", url.Values{"key": {adminKey}, "next": {next}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	return resp
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == monitor.CookieName {
			return c
		}
	}
	require.Fail(t, "no session cookie", "Set-Cookie: %v", resp.Header.Values("Set-Cookie"))
	return nil
}

func sha256CSP(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := client(t)

	// A page request goes to the login form, remembering where it was going.
	resp, _ := get(t, c, b.url+"/monitoring/queues/default?page=2")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/monitoring/login?next="+url.QueryEscape("/monitoring/queues/default?page=2"), resp.Header.Get("Location"))

	// API calls and assets answer 401 / redirect, never asynqmon's data.
	resp, body := get(t, c, b.url+"/monitoring/api/queues")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.JSONEq(t, `{"type":"error","error":{"type":"authentication_error","message":"no valid monitoring session: log in at /monitoring/login"}}`, body)
	resp, _ = post(t, c, b.url+"/monitoring/api/queues/default:pause", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = get(t, c, b.url+"/monitoring/static/js/main.5adda2da.chunk.js")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	// A forged cookie is no session.
	req, err := http.NewRequest(http.MethodGet, b.url+"/monitoring/api/queues", nil)
	require.NoError(t, err)
	req.AddCookie(&http.Cookie{Name: monitor.CookieName, Value: strings.Repeat("A", 43)})
	resp, err = c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestLoginPage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := get(t, client(t), b.url+"/monitoring/login?next=%2Fmonitoring%2Fservers")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, body, `<form method="post" action="/monitoring/login">`)
	require.Contains(t, body, `name="key" type="password"`)
	require.Contains(t, body, `name="next" value="/monitoring/servers"`)
	// Self-contained: nothing is loaded from anywhere.
	require.NotContains(t, body, "http://")
	require.NotContains(t, body, "https://")
	require.NotContains(t, body, "<script")
	csp := resp.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "default-src 'none'")
	require.Contains(t, csp, "form-action 'self'")
	require.Regexp(t, `style-src 'sha256-[A-Za-z0-9+/=]+'`, csp)
	require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name string
		key  string
		code int
		msg  string
	}{
		{name: "unknown key", key: "cqk_nobody", code: http.StatusUnauthorized, msg: "not a valid admin API key"},
		{name: "key without admin scope", key: userKey, code: http.StatusUnauthorized, msg: "not a valid admin API key"},
		{name: "empty key", key: "  ", code: http.StatusBadRequest, msg: "Enter an admin API key"},
		{name: "key store down", key: downKey, code: http.StatusServiceUnavailable, msg: "cannot be checked right now"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := client(t)
			resp, body := post(t, c, b.url+"/monitoring/login", url.Values{"key": {tt.key}, "next": {"/monitoring/redis"}})
			require.Equal(t, tt.code, resp.StatusCode)
			require.Contains(t, body, tt.msg)
			require.Contains(t, body, `name="next" value="/monitoring/redis"`)
			require.Empty(t, resp.Cookies())
			resp, _ = get(t, c, b.url+"/monitoring/api/queues")
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		})
	}
}

func TestLoginFlow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := client(t)

	resp := login(t, b, c, "/monitoring/queues/default")
	require.Equal(t, "/monitoring/queues/default", resp.Header.Get("Location"))
	ck := sessionCookie(t, resp)
	require.True(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	require.False(t, ck.Secure, "plain HTTP: no Secure attribute, or the browser would drop the cookie")
	require.Equal(t, "/monitoring", ck.Path)
	require.Equal(t, int((8 * time.Hour).Seconds()), ck.MaxAge)

	// Redis holds only the token's hash, with the session's TTL.
	keys, err := b.rdb.Keys(context.Background(), "cq:{monitor}:session:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.NotContains(t, keys[0], ck.Value)
	ttl, err := b.rdb.TTL(context.Background(), keys[0]).Result()
	require.NoError(t, err)
	require.InDelta(t, (8 * time.Hour).Seconds(), ttl.Seconds(), 60)

	// asynqmon's API answers with our queues.
	resp, body := get(t, c, b.url+"/monitoring/api/queues")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var queues struct {
		Queues []struct {
			Queue   string `json:"queue"`
			Pending int    `json:"pending"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &queues), body)
	got := map[string]int{}
	for _, q := range queues.Queues {
		got[q.Queue] = q.Pending
	}
	require.Equal(t, map[string]int{"critical": 1, "default": 2, "batch": 3, "webhooks": 4}, got)

	// Task payloads (users' prompts) are not shown, only their size.
	resp, body = get(t, c, b.url+"/monitoring/api/queues/critical/pending_tasks")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var pending struct {
		Tasks []struct {
			Type    string `json:"type"`
			Payload string `json:"payload"`
		} `json:"tasks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &pending), body)
	require.Len(t, pending.Tasks, 1)
	require.Equal(t, "job:run", pending.Tasks[0].Type)
	require.Equal(t, "(7 bytes, hidden)", pending.Tasks[0].Payload)
	require.NotContains(t, body, `\"n\"`)

	// The UI page: offline (no Google Fonts), a CSP that allows exactly its
	// inline scripts, and a logout button.
	resp, body = get(t, c, b.url+"/monitoring/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, body, `<div id="root">`)
	require.NotContains(t, body, "fonts.googleapis.com")
	require.NotContains(t, body, "https://")
	require.NotContains(t, body, `rel="manifest"`)
	require.Contains(t, body, `href="/monitoring/favicon.ico"`)       // same-origin links stay
	require.Contains(t, body, `window.FLAG_ROOT_PATH="\/monitoring"`) // html/template escapes the slash in JS
	require.Contains(t, body, `action="/monitoring/logout"`)
	csp := resp.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "default-src 'self'")
	require.Contains(t, csp, "connect-src 'self'")
	require.NotContains(t, csp, "unsafe-eval")
	scriptSrc := regexp.MustCompile(`script-src ([^;]*)`).FindStringSubmatch(csp)[1]
	require.NotContains(t, scriptSrc, "unsafe-inline")
	inline := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(body, -1)
	require.Len(t, inline, 2)
	for _, s := range inline {
		require.Contains(t, scriptSrc, sha256CSP(s[1]))
	}
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	require.Equal(t, resp.ContentLength, int64(len(body)))

	// Any UI path serves the app; /monitoring goes to /monitoring/.
	resp, body = get(t, c, b.url+"/monitoring/queues/critical")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `<div id="root">`)
	require.NotContains(t, body, "fonts.googleapis.com")
	resp, _ = get(t, c, b.url+"/monitoring")
	require.Equal(t, http.StatusFound, resp.StatusCode)
	require.Equal(t, "/monitoring/", resp.Header.Get("Location"))

	// Assets pass through untouched.
	resp, body = get(t, c, b.url+"/monitoring/static/js/main.5adda2da.chunk.js")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/javascript; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Greater(t, len(body), 10_000)

	// A state-changing call from the UI works (same origin)…
	resp, _ = post(t, c, b.url+"/monitoring/api/queues/batch:pause", nil, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	// …but not one a browser marks as cross-site.
	resp, _ = post(t, c, b.url+"/monitoring/api/queues/batch:resume", nil, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	// Logout ends the session on the server, not only in the browser.
	resp, _ = post(t, c, b.url+"/monitoring/logout", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/monitoring/login", resp.Header.Get("Location"))
	cleared := sessionCookie(t, resp)
	require.Empty(t, cleared.Value)
	require.Negative(t, cleared.MaxAge)
	resp, _ = get(t, c, b.url+"/monitoring/api/queues")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	replay := client(t)
	req, err := http.NewRequest(http.MethodGet, b.url+"/monitoring/api/queues", nil)
	require.NoError(t, err)
	req.AddCookie(&http.Cookie{Name: monitor.CookieName, Value: ck.Value})
	resp, err = replay.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestShowPayloads(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *monitor.Options) { o.ShowPayloads = true })
	c := client(t)
	login(t, b, c, "")
	resp, body := get(t, c, b.url+"/monitoring/api/queues/critical/pending_tasks")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `{\"n\":0}`)
}

func TestLoginNextIsLocal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name, next, want string
	}{
		{name: "empty", next: "", want: "/monitoring/"},
		{name: "page under root", next: "/monitoring/servers", want: "/monitoring/servers"},
		{name: "query kept", next: "/monitoring/queues/default?status=pending", want: "/monitoring/queues/default?status=pending"},
		{name: "absolute URL", next: "https://evil.example/monitoring/", want: "/monitoring/"},
		{name: "scheme-relative", next: "//evil.example/monitoring/", want: "/monitoring/"},
		{name: "backslash", next: "/\\evil.example", want: "/monitoring/"},
		{name: "outside root", next: "/api/claude/usage", want: "/monitoring/"},
		{name: "dot segments", next: "/monitoring/../api/claude/usage", want: "/monitoring/"},
		{name: "prefix lookalike", next: "/monitoringevil", want: "/monitoring/"},
		{name: "javascript", next: "javascript:alert(1)", want: "/monitoring/"},
		{name: "login page", next: "/monitoring/login", want: "/monitoring/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := login(t, b, client(t), tt.next)
			require.Equal(t, tt.want, resp.Header.Get("Location"))
		})
	}
}

func TestSecureCookie(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Behind a TLS-terminating proxy that says so.
	resp, _ := post(t, client(t), b.url+"/monitoring/login", url.Values{"key": {adminKey}}, "X-Forwarded-Proto", "https")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.True(t, sessionCookie(t, resp).Secure)

	// Served over TLS directly.
	e := echo.New()
	b.mon.Register(e)
	srv := httptest.NewTLSServer(e)
	t.Cleanup(srv.Close)
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ = post(t, c, srv.URL+"/monitoring/login", url.Values{"key": {adminKey}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.True(t, sessionCookie(t, resp).Secure)
}

func TestCrossSiteLoginRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, _ := post(t, client(t), b.url+"/monitoring/login", url.Values{"key": {adminKey}}, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Empty(t, resp.Cookies())
}

func TestEndAllSessions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c1, c2 := client(t), client(t)
	login(t, b, c1, "")
	login(t, b, c2, "")
	resp, _ := get(t, c1, b.url+"/monitoring/api/queues")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, b.mon.EndAllSessions(context.Background()))
	for _, c := range []*http.Client{c1, c2} {
		resp, _ = get(t, c, b.url+"/monitoring/api/queues")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	// A new login works again.
	login(t, b, c1, "")
	resp, _ = get(t, c1, b.url+"/monitoring/api/queues")
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestSessionExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *monitor.Options) { o.SessionTTL = time.Second })
	c := client(t)
	resp := login(t, b, c, "")
	ck := sessionCookie(t, resp)
	require.Equal(t, 1, ck.MaxAge)
	// Redis expires the session: replaying the cookie past its TTL fails.
	require.Eventually(t, func() bool {
		req, err := http.NewRequest(http.MethodGet, b.url+"/monitoring/api/queues", nil)
		if err != nil {
			return false
		}
		req.AddCookie(&http.Cookie{Name: monitor.CookieName, Value: ck.Value})
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusUnauthorized
	}, 5*time.Second, 100*time.Millisecond)
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := client(t)
	login(t, b, c, "")
	// Point a second monitor at a Redis that is not there.
	dead := asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond}
	mon, err := monitor.New(monitor.Options{RedisConnOpt: dead, ValidateKey: validateKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mon.Close() })
	e := echo.New()
	mon.Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	resp, body := get(t, client(t), srv.URL+"/monitoring/api/queues")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, body) // no cookie: no Redis round trip
	resp, body = post(t, client(t), srv.URL+"/monitoring/login", url.Values{"key": {adminKey}})
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, body, "Sessions cannot be stored right now")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := monitor.New(monitor.Options{RootPath: "monitoring/"})
	require.Error(t, err)
	require.ErrorContains(t, err, "RootPath")
	require.ErrorContains(t, err, "RedisConnOpt is required")
	require.ErrorContains(t, err, "ValidateKey is required")
}

func TestMethodsOnLoginAndLogout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := client(t)
	resp, _ := get(t, c, b.url+"/monitoring/logout")
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
	req, err := http.NewRequest(http.MethodDelete, b.url+"/monitoring/login", nil)
	require.NoError(t, err)
	resp, err = c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}
