package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/devkit"
)

// runDev starts claudeq dev on dir and returns its base URL, its printed
// banner and a stop function.
func runDev(t *testing.T, env map[string]string) (string, *lockedWriter, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &lockedWriter{w: &bytes.Buffer{}}, &lockedWriter{w: &bytes.Buffer{}}
	ready := make(chan *app.App, 1)
	done := make(chan error, 1)
	go func() { done <- devkit.RunDev(ctx, config.Map(env), out, logs, func(a *app.App) { ready <- a }) }()
	var a *app.App
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("dev: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("dev did not start\n%s", logs.String())
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done, logs.String())
	}
	t.Cleanup(stop)
	return "http://" + a.Addr(), out, stop
}

var keyLine = regexp.MustCompile(`(?m)^    (\S+)$`)

func TestDevModeRunsEverythingAndKeepsData(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CLAUDEQ_DATA_DIR": t.TempDir(), "CLAUDEQ_HTTP_ADDR": "127.0.0.1:0"}
	base, out, stop := runDev(t, env)
	banner := out.String()
	require.Contains(t, banner, "SIMULATOR")
	require.Contains(t, banner, "curl -s "+base+"/api/claude/chat")
	m := keyLine.FindStringSubmatch(banner)
	require.NotNil(t, m, banner)
	key := m[1]

	id := submit(t, base, key, map[string]any{"prompt": "Say hello", "model": "haiku"})
	j := wait(t, base, key, id, 20*time.Second)
	require.Equal(t, "succeeded", j["status"])
	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "Say hello", "model": "haiku"})
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, true, r.json(t)["cached"])
	require.Equal(t, http.StatusOK, do(t, "GET", base+"/api/claude/health", "", nil).Status)
	stop()

	// A restart on the same data dir keeps the key, the jobs and the cache.
	base2, out2, _ := runDev(t, env)
	require.Equal(t, key, keyLine.FindStringSubmatch(out2.String())[1])
	j2 := do(t, "GET", base2+"/api/claude/jobs/"+id, key, nil)
	require.Equal(t, http.StatusOK, j2.Status, "%s", j2.Body)
	require.Equal(t, j["text"], j2.json(t)["text"])
	r = do(t, "POST", base2+"/api/claude/chat", key, map[string]any{"prompt": "Say hello", "model": "haiku"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, true, r.json(t)["cached"])
}

func TestDevModeTakesTheGivenKey(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CLAUDEQ_DATA_DIR": t.TempDir(), "CLAUDEQ_HTTP_ADDR": "127.0.0.1:0", "CLAUDEQ_DEV_API_KEY": "my dev key!"}
	base, out, _ := runDev(t, env)
	require.Contains(t, out.String(), "    my dev key!\n")
	r := do(t, "POST", base+"/api/claude/chat", "", map[string]any{"prompt": "hi"}, "x-api-key", "my dev key!")
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
}

// claudeCodeBetas is the anthropic-beta header of Claude Code 2.1's first
// request (captured through a logging proxy).
const claudeCodeBetas = "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13," +
	"context-management-2025-06-27,prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,effort-2025-11-24"

// claudeCodeBody is a request of the shape Claude Code sends: its default
// model, system blocks with cache_control, about 70 KB of tool
// definitions, metadata, adaptive thinking, context_management and
// output_config.
func claudeCodeBody(t *testing.T, model string, stream bool) []byte {
	t.Helper()
	var tools []map[string]any
	for i := range 24 {
		props := map[string]any{}
		for j := range 12 {
			props[fmt.Sprintf("param_%d", j)] = map[string]any{"type": "string",
				"description": strings.Repeat(fmt.Sprintf("What parameter %d of tool %d means, and when to set it. ", j, i), 3)}
		}
		tools = append(tools, map[string]any{"name": fmt.Sprintf("Tool%d", i),
			"description": strings.Repeat("Use this tool to read, search or edit files in the user's project. ", 12),
			"input_schema": map[string]any{"type": "object", "properties": props, "required": []string{"param_0"}, "additionalProperties": false,
				"$schema": "http://json-schema.org/draft-07/schema#"}})
	}
	b, err := json.Marshal(map[string]any{
		"model": model,
		"messages": []map[string]any{{"role": "user", "content": []map[string]any{
			{"type": "text", "text": "<system-reminder>This is a reminder.</system-reminder>"},
			{"type": "text", "text": "Explain what this repository does.", "cache_control": map[string]any{"type": "ephemeral"}},
		}}},
		"system": []map[string]any{
			{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": map[string]any{"type": "ephemeral"}},
			{"type": "text", "text": strings.Repeat("You are an interactive CLI tool that helps users with software engineering tasks. ", 40),
				"cache_control": map[string]any{"type": "ephemeral"}},
		},
		"tools":              tools,
		"metadata":           map[string]any{"user_id": "user_0123456789abcdef_account_00000000-0000-0000-0000-000000000000_session_11111111-1111-1111-1111-111111111111"},
		"max_tokens":         32000,
		"thinking":           map[string]any{"type": "adaptive"},
		"context_management": map[string]any{"edits": []map[string]any{{"type": "clear_thinking_20251015", "keep": "all"}}},
		"output_config":      map[string]any{"effort": "high"},
		"stream":             stream,
	})
	require.NoError(t, err)
	require.Greater(t, len(b), 60_000, "about 70 KB, as Claude Code sends")
	return b
}

// TestDevModeServesClaudeCode: with no configuration at all, claudeq dev
// answers Claude Code's first request (its default model, the ?beta=true
// query, eight betas, the new body fields, streaming; then the same
// without stream, as Claude Code retries) and a dated snapshot id.
func TestDevModeServesClaudeCode(t *testing.T) {
	t.Parallel()
	base, out, _ := runDev(t, map[string]string{"CLAUDEQ_DATA_DIR": t.TempDir(), "CLAUDEQ_HTTP_ADDR": "127.0.0.1:0"})
	key := keyLine.FindStringSubmatch(out.String())[1]
	headers := []string{"anthropic-version", "2023-06-01", "anthropic-beta", claudeCodeBetas, "x-app", "cli",
		"User-Agent", "claude-cli/2.1.0 (external, cli)", "x-api-key", key, "Authorization", ""}

	r := do(t, "POST", base+"/v1/messages?beta=true", "", claudeCodeBody(t, "claude-opus-4-8", true), headers...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, "text/event-stream", strings.Split(r.Header.Get("Content-Type"), ";")[0])
	events := regexp.MustCompile(`(?m)^event: (\S+)$`).FindAllStringSubmatch(string(r.Body), -1)
	var names []string
	for _, ev := range events {
		names = append(names, ev[1])
	}
	require.Equal(t, "message_start", names[0], "%s", r.Body)
	require.Contains(t, names, "content_block_delta")
	require.Equal(t, "message_stop", names[len(names)-1])
	require.Contains(t, string(r.Body), `"model":"claude-opus-4-8"`)

	r = do(t, "POST", base+"/v1/messages?beta=true", "", claudeCodeBody(t, "claude-opus-4-8", false), headers...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, "message", r.json(t)["type"])

	// A dated snapshot id, as SDK users pin them.
	r = do(t, "POST", base+"/v1/messages?beta=true", "", claudeCodeBody(t, "claude-haiku-4-5-20251001", false), headers...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, "claude-haiku-4-5-20251001", r.json(t)["model"])
	r = do(t, "GET", base+"/v1/models?limit=100", "", nil, headers...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Contains(t, string(r.Body), `"id":"claude-opus-4-8"`)
}
