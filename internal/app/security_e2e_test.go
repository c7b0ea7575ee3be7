package app_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/store"
)

// runLogged is e.run that also returns the process's log output.
func (e *testEnv) runLogged(roles app.Roles, over ...string) (*app.App, *lockedWriter) {
	e.t.Helper()
	a, _, logs := e.runWithLogs(roles, over...)
	return a, logs
}

// send sends a request with exactly the given headers (do() cannot send an
// empty or repeated header).
func send(t *testing.T, method, u string, body []byte, h http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	require.NoError(t, err)
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// auditRecords returns the stored audit records matching filter, waiting
// until there are at least n.
func (e *testEnv) auditRecords(t *testing.T, filter bson.D, n int) []audit.Record {
	t.Helper()
	var recs []audit.Record
	deadline := time.Now().Add(15 * time.Second)
	for {
		cur, err := e.db.Collection("audit").Find(context.Background(), filter)
		if err == nil {
			recs = nil
			if cur.All(context.Background(), &recs) == nil && len(recs) >= n {
				return recs
			}
		}
		if time.Now().After(deadline) {
			require.FailNowf(t, "audit records missing", "want %d audit records matching %v, have %d (last error: %v)", n, filter, len(recs), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// badChecksum returns key with its last character changed, which breaks its
// checksum.
func badChecksum(key string) string {
	last := key[len(key)-1]
	repl := byte('x')
	if last == repl {
		repl = 'y'
	}
	return key[:len(key)-1] + string(repl)
}

// createKey stores a key with full control over its fields.
func (e *testEnv) createKey(t *testing.T, k store.APIKey) string {
	t.Helper()
	key, id := apikey.New()
	k.ID, k.Hash, k.Prefix = id, apikey.Hash(key), apikey.Display(key)
	if k.Tier == "" {
		k.Tier = "standard"
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now().UTC()
	}
	require.NoError(t, e.store.CreateKey(context.Background(), k))
	return key
}

func TestBadAuthInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, logs := e.runLogged(app.Roles{API: true}, "CLAUDEQ_LOG_LEVEL", "debug")
	base := "http://" + a.Addr()
	chat := base + "/api/claude/chat"
	key, _ := e.key("alice", "research")
	revoked, revokedID := e.key("eve", "research")
	require.NoError(t, e.store.RevokeKey(context.Background(), revokedID, time.Now().Add(-time.Second)))
	past := time.Now().Add(-time.Minute).UTC()
	expired := e.createKey(t, store.APIKey{UserID: "mallory", Department: "research", Scopes: []string{claudeq.ScopeJobs}, ExpiresAt: &past})
	batchesOnly, _ := e.key("carol", "research", claudeq.ScopeBatches)
	body := []byte(`{"prompt":"hi"}`)
	hdr := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h[http.CanonicalHeaderKey(kv[i])] = append(h[http.CanonicalHeaderKey(kv[i])], kv[i+1])
		}
		return h
	}

	tests := []struct {
		name   string
		url    string
		header http.Header
		body   []byte
		status int
		typ    string
		msg    string
	}{
		{name: "no Authorization", header: hdr(), status: 401, typ: "authentication_error", msg: "missing API key"},
		{name: "empty Authorization", header: hdr("Authorization", ""), status: 401, typ: "authentication_error", msg: "Bearer <api key>"},
		{name: "Bearer without key", header: hdr("Authorization", "Bearer "), status: 401, typ: "authentication_error", msg: "Bearer <api key>"},
		{name: "Basic", header: hdr("Authorization", "Basic YWxpY2U6c2VjcmV0"), status: 401, typ: "authentication_error", msg: "Bearer <api key>"},
		{name: "malformed key", header: hdr("Authorization", "Bearer cqk_short"), status: 401, typ: "authentication_error", msg: "invalid API key"},
		{name: "key with a bad checksum", header: hdr("Authorization", "Bearer "+badChecksum(key)), status: 401, typ: "authentication_error", msg: "invalid API key"},
		{name: "two Authorization headers", header: hdr("Authorization", "Bearer "+key, "Authorization", "Bearer "+key), status: 401, typ: "authentication_error", msg: "exactly one"},
		{name: "two x-api-key headers", header: hdr("X-Api-Key", key, "X-Api-Key", key), status: 401, typ: "authentication_error", msg: "exactly one"},
		{name: "key in the query string", url: chat + "?api_key=" + url.QueryEscape(key), header: hdr("Authorization", "Bearer "+key), status: 401, typ: "authentication_error", msg: "rotate this key"},
		{name: "key-shaped query value", url: chat + "?token=" + url.QueryEscape(key), header: hdr(), status: 401, typ: "authentication_error", msg: "not accepted in the URL"},
		{name: "revoked key", header: hdr("Authorization", "Bearer "+revoked), status: 401, typ: "authentication_error", msg: "API key revoked"},
		{name: "expired key", header: hdr("x-api-key", expired), status: 401, typ: "authentication_error", msg: "API key expired"},
		{name: "missing scope", header: hdr("Authorization", "Bearer "+batchesOnly), status: 403, typ: "permission_error", msg: `"jobs" scope`},
		{name: "oversized body", header: hdr("Authorization", "Bearer "+key), body: []byte(`{"prompt":"` + strings.Repeat("a", 1<<20) + `"}`),
			status: 413, typ: "request_too_large", msg: "larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, b := tt.url, tt.body
			if u == "" {
				u = chat
			}
			if b == nil {
				b = body
			}
			r := send(t, "POST", u, b, tt.header)
			require.Equal(t, tt.status, r.Status, "%s", r.Body)
			requireErrorShape(t, r, tt.typ, tt.msg)
			if tt.status == 401 {
				require.Equal(t, `Bearer realm="claudeq"`, r.Header.Get("WWW-Authenticate"))
			}
		})
	}

	t.Run("oversized headers", func(t *testing.T) {
		// Go's server answers 431 itself above MaxHeaderBytes (64 KiB plus
		// its 4 KiB of slack), before any handler runs.
		conn, err := net.Dial("tcp", a.Addr())
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
		req := "GET /api/claude/health HTTP/1.1\r\nHost: x\r\nX-Filler: " + strings.Repeat("a", 80<<10) + "\r\n\r\n"
		_, _ = conn.Write([]byte(req)) // the server may close before reading it all
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	})

	// Every refusal is audited as auth_failed, with the caller where the
	// key was known; nothing ever records or logs the key in the URL.
	recs := e.auditRecords(t, bson.D{{Key: "decision", Value: audit.DecisionAuthFailed}}, 13)
	users := map[string]bool{}
	for _, r := range recs {
		require.Equal(t, "127.0.0.1", r.ClientIP)
		require.Contains(t, r.UserAgent, "Go-http-client")
		users[r.UserID] = true
	}
	require.True(t, users["eve"] && users["mallory"] && users["carol"], "revoked, expired and out-of-scope keys are audited with their user: %v", users)
	cur, err := e.db.Collection("audit").Find(context.Background(), bson.D{})
	require.NoError(t, err)
	var raw []bson.M
	require.NoError(t, cur.All(context.Background(), &raw))
	require.NotContains(t, fmt.Sprint(raw), key)
	require.NotContains(t, logs.String(), key, "the key in the URL is not logged")
	require.NotContains(t, logs.String(), url.QueryEscape(key))
}

func TestForwardedForFromUntrustedPeerKeepsTheRateLimitBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key, _ := e.key("alice", "research")
	untrusted, _ := e.run(app.Roles{API: true}, "CLAUDEQ_RATELIMIT_IP", "3/1h")
	get := func(base, xff string) response {
		return do(t, "GET", base+"/api/claude/jobs/job_none", key, nil, "X-Forwarded-For", xff)
	}
	ub := "http://" + untrusted.Addr()
	for i := range 3 {
		r := get(ub, fmt.Sprintf("198.51.100.%d", i+1))
		require.Equal(t, http.StatusNotFound, r.Status, "%s", r.Body)
		require.Equal(t, "3", r.Header.Get("RateLimit-Limit"))
		require.Equal(t, fmt.Sprint(2-i), r.Header.Get("RateLimit-Remaining"))
	}
	// A new X-Forwarded-For from the same (untrusted) peer is the same client.
	r := get(ub, "203.0.113.77")
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "rate_limit_error", "too many requests from this address")
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	require.Equal(t, "0", r.Header.Get("RateLimit-Remaining"))
	// Authentication comes after the IP limit: no key, same answer.
	require.Equal(t, http.StatusTooManyRequests, do(t, "GET", ub+"/api/claude/jobs/job_none", "", nil).Status)
	// Health checks are not limited.
	require.NotEqual(t, http.StatusTooManyRequests, do(t, "GET", ub+"/api/claude/health", "", nil).Status)

	// Behind a trusted proxy (the same Redis buckets), the header names the
	// client: another client has a bucket of its own, and this one's is
	// the one the untrusted api filled.
	trusted, _ := e.run(app.Roles{API: true}, "CLAUDEQ_RATELIMIT_IP", "3/1h", "CLAUDEQ_TRUSTED_PROXIES", "127.0.0.1/32")
	tb := "http://" + trusted.Addr()
	require.Equal(t, http.StatusNotFound, get(tb, "203.0.113.77").Status)
	require.Equal(t, http.StatusTooManyRequests, get(tb, "127.0.0.1").Status)

	recs := e.auditRecords(t, bson.D{{Key: "decision", Value: audit.DecisionRateLimited}}, 3)
	require.Equal(t, "127.0.0.1", recs[0].ClientIP)
}

func TestRateLimitsHoldAcrossTwoAPIs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	over := []string{"CLAUDEQ_RATELIMIT_TIERS", "standard=4/0,small=0/3000", "CLAUDEQ_RATELIMIT_IP", "9/1h"}
	a1, _ := e.run(app.Roles{API: true}, over...)
	a2, _ := e.run(app.Roles{API: true}, over...)
	apis := []string{"http://" + a1.Addr(), "http://" + a2.Addr()}
	key, _ := e.key("alice", "research")

	// Requests per minute of a key: 4 submissions over both replicas.
	for i := range 4 {
		r := do(t, "POST", apis[i%2]+"/api/claude/chat", key, map[string]any{"prompt": fmt.Sprintf("job %d", i)})
		require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
		require.Equal(t, "4", r.Header.Get("RateLimit-Limit"))
	}
	for _, base := range apis {
		r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "one too many"})
		require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
		requireErrorShape(t, r, "rate_limit_error", "4 requests per minute")
		require.Equal(t, "0", r.Header.Get("RateLimit-Remaining"))
		require.NotEmpty(t, r.Header.Get("RateLimit-Reset"))
		require.NotEmpty(t, r.Header.Get("Retry-After"))
	}
	// Polling does not count against the key, but against the IP: 6 so far.
	for range 3 {
		require.Equal(t, http.StatusNotFound, do(t, "GET", apis[1]+"/api/claude/jobs/job_none", key, nil).Status)
	}
	r := do(t, "GET", apis[0]+"/api/claude/jobs/job_none", key, nil)
	require.Equal(t, http.StatusTooManyRequests, r.Status, "the 10th request from this address, over both replicas")
	requireErrorShape(t, r, "rate_limit_error", "from this address")

	// Tokens per minute, on a fresh IP budget: a request's estimate is its
	// body/4 plus max_tokens.
	small := e.createKey(t, store.APIKey{UserID: "bob", Department: "research", Tier: "small", Scopes: []string{claudeq.ScopeJobs}})
	a3, _ := e.run(app.Roles{API: true}, "CLAUDEQ_RATELIMIT_TIERS", "standard=4/0,small=0/3000")
	b3 := "http://" + a3.Addr()
	require.Equal(t, http.StatusAccepted, do(t, "POST", b3+"/api/claude/chat", small, map[string]any{"prompt": "a", "max_tokens": 2000}).Status)
	r = do(t, "POST", b3+"/api/claude/chat", small, map[string]any{"prompt": "b", "max_tokens": 2000})
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "rate_limit_error", "3000 tokens per minute")
	r = do(t, "POST", b3+"/api/claude/chat", small, map[string]any{"prompt": "c", "max_tokens": 5000})
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "request_too_large", "more than the 3000 tokens per minute")
}

func TestSecurityHeadersAndCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key, _ := e.key("alice", "research")
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_TRUSTED_PROXIES", "127.0.0.1")
	base := "http://" + a.Addr()

	for _, r := range []response{
		do(t, "GET", base+"/api/claude/health", "", nil),
		do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "hi"}),
		do(t, "GET", base+"/api/claude/jobs/job_none", key, nil),
		do(t, "GET", base+"/nowhere", "", nil),
	} {
		h := r.Header
		require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
		require.Equal(t, "DENY", h.Get("X-Frame-Options"))
		require.Equal(t, "no-referrer", h.Get("Referrer-Policy"))
		require.Equal(t, "default-src 'none'; frame-ancestors 'none'", h.Get("Content-Security-Policy"))
		require.Equal(t, "no-store", h.Get("Cache-Control"))
		require.Empty(t, h.Get("Server"))
		require.Empty(t, h.Get("X-Powered-By"))
		require.Empty(t, h.Get("Strict-Transport-Security"), "no HSTS over plain http")
		require.Empty(t, h.Get("Access-Control-Allow-Origin"), "CORS is off without allowed origins")
	}
	// HSTS when a trusted proxy terminated TLS; not when anyone else says so.
	r := do(t, "GET", base+"/api/claude/health", "", nil, "X-Forwarded-Proto", "https")
	require.Equal(t, "max-age=31536000", r.Header.Get("Strict-Transport-Security"))
	b2, _ := e.run(app.Roles{API: true})
	r = do(t, "GET", "http://"+b2.Addr()+"/api/claude/health", "", nil, "X-Forwarded-Proto", "https")
	require.Empty(t, r.Header.Get("Strict-Transport-Security"))

	// The monitoring UI has its own, looser CSP (its page sets a stricter,
	// hash-based one itself) and no bearer auth: a browser login.
	r = do(t, "GET", base+"/monitoring/login", "", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Header.Get("Content-Security-Policy"), "form-action 'self'")
	require.Equal(t, "DENY", r.Header.Get("X-Frame-Options"))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + "/monitoring/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Location"), "/monitoring/login")
	admin, _ := e.key("root", "ops", claudeq.ScopeAdmin)
	resp, err = noRedirect.PostForm(base+"/monitoring/login", url.Values{"key": {key}})
	require.NoError(t, err)
	resp.Body.Close()
	require.NotEqual(t, http.StatusSeeOther, resp.StatusCode, "a key without the admin scope does not log in")
	resp, err = noRedirect.PostForm(base+"/monitoring/login", url.Values{"key": {admin}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	req, _ := http.NewRequest("GET", base+"/monitoring/api/queues", nil)
	for _, c := range resp.Cookies() {
		req.AddCookie(c)
	}
	resp, err = noRedirect.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// CORS for configured origins only; preflights need no key.
	c, _ := e.run(app.Roles{API: true}, "CLAUDEQ_CORS_ALLOWED_ORIGINS", "https://app.example.com")
	cb := "http://" + c.Addr()
	r = do(t, "OPTIONS", cb+"/api/claude/chat", "", nil, "Origin", "https://app.example.com",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	require.Equal(t, http.StatusNoContent, r.Status, "%s", r.Body)
	require.Equal(t, "https://app.example.com", r.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), "authorization")
	r = do(t, "OPTIONS", cb+"/api/claude/chat", "", nil, "Origin", "https://evil.example",
		"Access-Control-Request-Method", "POST")
	require.Empty(t, r.Header.Get("Access-Control-Allow-Origin"))
}

func TestMetricsScrapeAndAdminListener(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true, Worker: true, Scheduler: true}, "CLAUDEQ_METRICS_ADDR", "127.0.0.1:0",
		"CLAUDEQ_RATELIMIT_IP", "1000/15m")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	reader, _ := e.key("prometheus", "ops", claudeq.ScopeAdminRead)
	wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "count me"}), 15*time.Second)
	do(t, "GET", base+"/api/claude/jobs/job_none", key, nil)

	// On the api's port /metrics needs an admin:read key.
	require.Equal(t, http.StatusUnauthorized, do(t, "GET", base+"/metrics", "", nil).Status)
	require.Equal(t, http.StatusForbidden, do(t, "GET", base+"/metrics", key, nil).Status)
	r := do(t, "GET", base+"/metrics", reader, nil)
	require.Equal(t, http.StatusOK, r.Status)
	text := string(r.Body)
	require.Contains(t, text, `claudeq_http_requests_total{code="202",route="/api/claude/chat"} 1`)
	require.Contains(t, text, `claudeq_http_requests_total{code="404",route="/api/claude/jobs/:id"} 1`)
	require.Contains(t, text, `claudeq_http_request_duration_seconds_bucket{route="/api/claude/chat",le="+Inf"} 1`)
	require.Contains(t, text, `asynq_queue_size{queue="default"}`, "the scheduler role reports the queues")
	require.Contains(t, text, "claudeq_ratelimit_failopen_total 0")
	require.NotContains(t, text, "job_none", "raw paths never become labels")

	// The admin listener: /metrics without a key, /livez, /readyz.
	admin := "http://" + a.AdminAddr()
	r = do(t, "GET", admin+"/metrics", "", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, string(r.Body), `claudeq_http_requests_total{code="202",route="/api/claude/chat"}`)
	require.Equal(t, http.StatusOK, do(t, "GET", admin+"/livez", "", nil).Status)
	require.Equal(t, `{"checks":{"mongodb":"ok","redis":"ok"},"ready":true}`, strings.TrimSpace(string(do(t, "GET", admin+"/readyz", "", nil).Body)))
	require.Equal(t, http.StatusOK, do(t, "GET", base+"/readyz", "", nil).Status)

	// A worker alone has the admin listener too, without the queue metrics
	// (one role reports them).
	w, _ := e.run(app.Roles{Worker: true}, "CLAUDEQ_METRICS_ADDR", "127.0.0.1:0")
	r = do(t, "GET", "http://"+w.AdminAddr()+"/metrics", "", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, string(r.Body), "go_goroutines")
	require.NotContains(t, string(r.Body), "asynq_queue_size")

	// Rate limits fail open without Redis, and say so in the metric.
	e.redis.Kill()
	r = do(t, "GET", base+"/api/claude/jobs/job_none", key, nil)
	require.NotEqual(t, http.StatusTooManyRequests, r.Status)
	r = do(t, "GET", admin+"/metrics", "", nil)
	require.Regexp(t, `claudeq_ratelimit_failopen_total [1-9]`, string(r.Body))
	require.Equal(t, http.StatusServiceUnavailable, do(t, "GET", admin+"/readyz", "", nil).Status)
	e.redis.Restart()
}
