package app_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
)

func TestBadInputGetsAnthropicErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_MAX_BODY_BYTES", "4096")
	base := "http://" + a.Addr()
	key, keyID := e.key("alice", "research")
	revoked, revokedID := e.key("eve", "research")
	require.NoError(t, e.store.RevokeKey(context.Background(), revokedID, time.Now().Add(-time.Second)))
	_ = keyID
	noScope, _ := e.key("carol", "research", "batches")

	chat := base + "/api/claude/chat"
	tests := []struct {
		name    string
		key     string
		path    string // default /api/claude/chat
		body    any
		headers []string
		status  int
		typ     string
		msg     string
	}{
		{name: "malformed JSON", key: key, body: `{"prompt": "hi"`, status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "syntax error", key: key, body: `{"prompt": hi}`, status: 400, typ: "invalid_request_error", msg: "malformed JSON at byte"},
		{name: "trailing data", key: key, body: `{"prompt": "hi"} {"x":1}`, status: 400, typ: "invalid_request_error", msg: "data after the JSON object"},
		{name: "unknown field", key: key, body: `{"prompt": "hi", "promt": "typo"}`, status: 400, typ: "invalid_request_error", msg: `"promt": unknown field`},
		{name: "wrong type", key: key, body: `{"prompt": "hi", "max_tokens": "ten"}`, status: 400, typ: "invalid_request_error", msg: "max_tokens: expected a number"},
		{name: "null body", key: key, body: `null`, status: 400, typ: "invalid_request_error", msg: "JSON object"},
		{name: "empty body", key: key, body: ``, status: 400, typ: "invalid_request_error", msg: "empty"},
		{name: "array body", key: key, body: `[1,2]`, status: 400, typ: "invalid_request_error", msg: "JSON object"},
		{name: "invalid UTF-8", key: key, body: []byte("{\"prompt\": \"\xff\xfe\"}"), status: 400, typ: "invalid_request_error", msg: "UTF-8"},
		{name: "missing prompt", key: key, body: `{"model": "haiku"}`, status: 400, typ: "invalid_request_error", msg: "prompt: required"},
		{name: "empty prompt", key: key, body: `{"prompt": "  "}`, status: 400, typ: "invalid_request_error", msg: "prompt: must not be empty"},
		{name: "prompt and messages", key: key, body: `{"prompt": "a", "messages": [{"role":"user","content":"b"}]}`, status: 400, typ: "invalid_request_error", msg: "not both"},
		{name: "bad role", key: key, body: `{"messages": [{"role":"system","content":"b"}]}`, status: 400, typ: "invalid_request_error", msg: "messages.0.role"},
		{name: "empty messages", key: key, body: `{"messages": []}`, status: 400, typ: "invalid_request_error", msg: "messages: at least one"},
		{name: "max_tokens zero", key: key, body: `{"prompt": "hi", "max_tokens": 0}`, status: 400, typ: "invalid_request_error", msg: "max_tokens: must be greater than 0"},
		{name: "max_tokens negative", key: key, body: `{"prompt": "hi", "max_tokens": -5}`, status: 400, typ: "invalid_request_error", msg: "max_tokens"},
		{name: "max_tokens above model limit", key: key, body: `{"prompt": "hi", "model": "haiku", "max_tokens": 10000000}`, status: 400, typ: "invalid_request_error", msg: "above claude-haiku-5-5's limit"},
		{name: "unknown model", key: key, body: `{"prompt": "hi", "model": "gpt-5"}`, status: 404, typ: "not_found_error", msg: "model: gpt-5 is not served here (no upstream node lists it); GET /v1/models lists"},
		{name: "a field name in another case", key: key, body: `{"prompt": "hi", "MODEL": "opus"}`, status: 400, typ: "invalid_request_error", msg: "MODEL: unknown field (field names are case-sensitive: model)"},
		{name: "a field given twice", key: key, body: `{"prompt": "hi", "model": "haiku", "model": "opus"}`, status: 400, typ: "invalid_request_error", msg: "model: appears more than once"},
		{name: "analyze: a field name in another case", key: key, path: "/api/claude/analyze", body: `{"content": "hi", "task": "summarize", "Model": "opus"}`, status: 400, typ: "invalid_request_error", msg: "Model: unknown field (field names are case-sensitive: model)"},
		{name: "analyze: a field given twice", key: key, path: "/api/claude/analyze", body: `{"content": "hi", "task": "summarize", "task": "review"}`, status: 400, typ: "invalid_request_error", msg: "task: appears more than once"},
		{name: "max_tokens above the model's limit", key: key, body: `{"prompt": "hi", "model": "claude-haiku-4-5", "max_tokens": 64001}`, status: 400, typ: "invalid_request_error", msg: "max_tokens: 64001 is above claude-haiku-4-5's limit of 64000"},
		{name: "temperature out of range", key: key, body: `{"prompt": "hi", "temperature": 3}`, status: 400, typ: "invalid_request_error", msg: "temperature"},
		{name: "body too large", key: key, body: `{"prompt": "` + strings.Repeat("a", 5000) + `"}`, status: 413, typ: "request_too_large", msg: "larger than 4096 bytes"},
		{name: "wrong content type", key: key, body: `{"prompt": "hi"}`, headers: []string{"Content-Type", "text/plain"}, status: 415, typ: "unsupported_media_type", msg: "application/json"},
		{name: "no key", body: `{"prompt": "hi"}`, status: 401, typ: "authentication_error", msg: "missing API key"},
		{name: "bad key", key: "cqk_notarealkeyatall", body: `{"prompt": "hi"}`, status: 401, typ: "authentication_error", msg: "invalid API key"},
		{name: "unknown well-formed key", key: strings.Replace(key, key[10:14], "AAAA", 1), body: `{"prompt": "hi"}`, status: 401, typ: "authentication_error", msg: "invalid API key"},
		{name: "basic auth", body: `{"prompt": "hi"}`, headers: []string{"Authorization", "Basic dXNlcjpwYXNz"}, status: 401, typ: "authentication_error", msg: "Bearer"},
		{name: "revoked key", key: revoked, body: `{"prompt": "hi"}`, status: 401, typ: "authentication_error", msg: "revoked"},
		{name: "missing scope", key: noScope, body: `{"prompt": "hi"}`, status: 403, typ: "permission_error", msg: `"jobs" scope`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := chat
			if tt.path != "" {
				u = base + tt.path
			}
			r := do(t, "POST", u, tt.key, tt.body, tt.headers...)
			require.Equal(t, tt.status, r.Status, "%s", r.Body)
			requireErrorShape(t, r, tt.typ, tt.msg)
			if tt.status == 401 {
				require.Equal(t, `Bearer realm="claudeq"`, r.Header.Get("WWW-Authenticate"))
			}
		})
	}

	t.Run("x-api-key is accepted", func(t *testing.T) {
		t.Parallel()
		r := do(t, "POST", chat, "", `{"prompt":"via x-api-key"}`, "x-api-key", key)
		require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	})
	t.Run("unknown route", func(t *testing.T) {
		t.Parallel()
		r := do(t, "GET", base+"/api/claude/nope", key, nil)
		require.Equal(t, http.StatusNotFound, r.Status)
		requireErrorShape(t, r, "not_found_error", "no such route")
	})
}

func TestRedisDownAtSubmitIs503(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true})
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	submit(t, base, key, map[string]any{"prompt": "before the outage"})

	e.redis.Kill()
	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "during the outage"})
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "service_unavailable", "try again")
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	h := do(t, "GET", base+"/api/claude/health", "", nil)
	require.Equal(t, http.StatusServiceUnavailable, h.Status)
	require.Equal(t, "unavailable", h.json(t)["checks"].(map[string]any)["redis"].(map[string]any)["status"])

	e.redis.Restart()
	require.Eventually(t, func() bool {
		return do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "after the outage"}).Status == http.StatusAccepted
	}, 10*time.Second, 100*time.Millisecond)
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.run(app.Roles{API: true})
	base := "http://" + a.Addr()
	// No worker yet: alive, not ready.
	h := do(t, "GET", base+"/api/claude/health", "", nil)
	require.Equal(t, http.StatusServiceUnavailable, h.Status, "%s", h.Body)
	m := h.json(t)
	require.Equal(t, true, m["live"])
	require.Equal(t, "no worker is running", m["checks"].(map[string]any)["workers"].(map[string]any)["error"])
	e.run(app.Roles{Worker: true})
	require.Eventually(t, func() bool { return do(t, "GET", base+"/api/claude/health", "", nil).Status == http.StatusOK },
		10*time.Second, 100*time.Millisecond)
}
