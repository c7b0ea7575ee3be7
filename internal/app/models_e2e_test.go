package app_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/sim"
)

// The models claudeq serves are the ones its upstream nodes list (#19):
// a model a node adds works at once, whatever claudeq's built-in list
// says; one it drops is refused; one the price table lacks is billed, never
// at zero.

// served lists GET /v1/models as a client sees it, every page; nil when
// the list changed between two pages (an after_id no longer in it).
func served(t *testing.T, c *anthropic.Client) []string {
	t.Helper()
	var ids []string
	iter := c.Models.ListAutoPaging(context.Background(), anthropic.ModelListParams{Limit: anthropic.Int(2)})
	for iter.Next() {
		ids = append(ids, iter.Current().ID)
	}
	if err := iter.Err(); err != nil {
		require.Contains(t, err.Error(), "after_id")
		return nil
	}
	return ids
}

func TestModelsComeFromTheNodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// One node of its own, serving a lineup the built-in list does not
	// match: today's Claude Code default, a model absent from the price
	// table (with output limit of its own), and a dated haiku id.
	sims, nodes := e.withNodes(1, sim.Config{Catalog: []claudeq.Model{
		{ID: "claude-opus-4-8"},
		{ID: "claude-fable-5-3", DisplayName: "Claude Fable 5.3", CreatedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
			MaxInputTokens: 1_000_000, MaxOutputTokens: 32_000},
		{ID: "claude-haiku-4-5-20251001"},
	}})
	node := sims[0]
	a, _ := e.run(app.Roles{API: true, Worker: true, Scheduler: true}, "CLAUDEQ_NODES_FILE", nodes, "CLAUDEQ_HEALTH_INTERVAL", "1s",
		"CLAUDEQ_METRICS_ADDR", "127.0.0.1:0")
	base := "http://" + a.Addr()
	key, _ := e.key("mona", "research")
	c := sdk(base, option.WithAPIKey(key))
	ctx := context.Background()

	want := []string{"claude-fable-5-3", "claude-opus-4-8", "claude-haiku-4-5-20251001"} // newest first
	require.Eventually(t, func() bool { return slices.Equal(served(t, c), want) }, 30*time.Second, 100*time.Millisecond,
		"GET /v1/models lists exactly what the node serves once it has been probed; last %v", served(t, c))
	m, err := c.Models.Get(ctx, "claude-fable-5-3", anthropic.ModelGetParams{})
	require.NoError(t, err)
	require.Equal(t, "Claude Fable 5.3", m.DisplayName)
	require.Equal(t, int64(32_000), m.MaxTokens, "the node's own limit")
	m, err = c.Models.Get(ctx, "haiku", anthropic.ModelGetParams{})
	require.NoError(t, err)
	require.Equal(t, "claude-haiku-4-5-20251001", m.ID, "an alias resolves to the newest served model of its family")
	require.Equal(t, int64(64_000), m.MaxTokens, "a limit the node did not report comes from the built-in entry")

	params := func(model string) anthropic.MessageNewParams {
		p := chatParams("Which model is this?", 64)
		p.Model = anthropic.Model(model)
		return p
	}
	for _, model := range []string{"claude-opus-4-8", "claude-fable-5-3", "claude-haiku-4-5-20251001", "claude-haiku-4-5"} {
		t.Run(model, func(t *testing.T) {
			msg, err := c.Messages.New(ctx, params(model))
			require.NoError(t, err, "non-streaming")
			require.NotEmpty(t, msg.Content)

			stream := c.Messages.NewStreaming(ctx, params(model))
			var acc anthropic.Message
			for stream.Next() {
				require.NoError(t, acc.Accumulate(stream.Current()))
			}
			require.NoError(t, stream.Err(), "streaming")
			require.NotEmpty(t, acc.StopReason, "the stream ran to its message_delta")
			require.NotEmpty(t, acc.Content)

			id := submit(t, base, key, map[string]any{"prompt": "Which model is this?", "model": model, "max_tokens": 64, "cache": false})
			j := wait(t, base, key, id, 30*time.Second)
			require.Equal(t, "succeeded", j["status"], "%v", j)
			require.Greater(t, j["cost_usd"].(float64), 0.0, "billed, never at zero")
		})
	}

	// The job that asked for a family name shows both names; the model
	// absent from the price table is billed as the dearest fable, and says
	// so.
	id := submit(t, base, key, map[string]any{"prompt": "Which model is this?", "model": "haiku"})
	j := wait(t, base, key, id, 30*time.Second)
	require.Equal(t, "succeeded", j["status"], "%v", j)
	require.Equal(t, "haiku", j["requested_model"])
	require.Equal(t, "claude-haiku-4-5-20251001", j["model"])
	require.Equal(t, "table", j["priced_by"])
	require.Equal(t, "claude-haiku-4-5", j["priced_as"], "a dated id is priced as its base entry")

	id = submit(t, base, key, map[string]any{"prompt": "Which model is this?", "model": "fable"})
	j = wait(t, base, key, id, 30*time.Second)
	require.Equal(t, "succeeded", j["status"], "%v", j)
	require.Equal(t, "claude-fable-5-3", j["model"], "fable is the newest served fable")
	require.Equal(t, "fallback", j["priced_by"])
	require.Equal(t, "claude-fable-5", j["priced_as"])
	u := j["usage"].(map[string]any)
	in, out := int64(u["input_tokens"].(float64)), int64(u["output_tokens"].(float64))
	require.InDelta(t, float64(in*10+out*50)/1e6, j["cost_usd"].(float64), 1e-6, "fable 5 prices: $10 in, $50 out per million")
	fallbackCount := func() float64 {
		s := scrape(t, "http://"+a.AdminAddr()+"/metrics", "")
		return s.get("claudeq_model_priced_by_fallback_total", map[string]string{"model": "claude-fable-5-3"})
	}
	require.GreaterOrEqual(t, fallbackCount(), 4.0, "one per billed fable call: a job, a plain and a streamed request, and this job")

	// Limits: refused at submit, before anything is queued, reserved or sent.
	before := node.Stats().Requests
	r := do(t, "POST", base+"/v1/messages", key, `{"model":"claude-fable-5-3","max_tokens":40000,"messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "invalid_request_error", "limit of 32000")
	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "hi", "model": "claude-fable-5-3", "max_tokens": 40000})
	require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "invalid_request_error", "limit of 32000")
	long := strings.Repeat("word ", 180_000) // about 225,000 tokens by the estimate: above haiku 4.5's 200,000
	r = do(t, "POST", base+"/v1/messages", key, map[string]any{"model": "claude-haiku-4-5-20251001", "max_tokens": 16,
		"messages": []map[string]any{{"role": "user", "content": long}}})
	require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "invalid_request_error", "context window of 200000 tokens")
	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": long, "model": "haiku"})
	require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "invalid_request_error", "context window")
	require.Equal(t, before, node.Stats().Requests, "nothing reached the node")

	// The node drops a model: refused after the next probe, naming the
	// model and where the served ones are listed.
	node.SetModels([]claudeq.Model{{ID: "claude-opus-4-8"}, {ID: "claude-haiku-4-5-20251001"}})
	require.Eventually(t, func() bool { return !slices.Contains(served(t, c), "claude-fable-5-3") }, 30*time.Second, 100*time.Millisecond)
	_, err = c.Messages.New(ctx, params("claude-fable-5-3"))
	var ae *anthropic.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusNotFound, ae.StatusCode)
	require.Contains(t, ae.Error(), "claude-fable-5-3")
	require.Contains(t, ae.Error(), "GET /v1/models")
	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "hi", "model": "claude-fable-5-3"})
	require.Equal(t, http.StatusNotFound, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "not_found_error", "GET /v1/models")
	r = do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "hi", "model": "fable"})
	require.Equal(t, http.StatusNotFound, r.Status, "no fable is served any more: %s", r.Body)
}

// TestModelAliasesArePinned: CLAUDEQ_MODEL_ALIASES pins an alias; a pin to
// a model nobody serves is refused with a message that says so.
func TestModelAliasesArePinned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all("CLAUDEQ_MODEL_ALIASES", "sonnet=claude-sonnet-4-6, fast=claude-haiku-4-5, gone=claude-opus-9")
	key, _ := e.key("pia", "research")
	for alias, id := range map[string]string{"sonnet": "claude-sonnet-4-6", "fast": "claude-haiku-4-5", "opus": "claude-opus-5-5"} {
		j := wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "hi", "model": alias}), 30*time.Second)
		require.Equal(t, "succeeded", j["status"], "%v", j)
		require.Equal(t, id, j["model"], alias)
		require.Equal(t, alias, j["requested_model"])
	}
	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "hi", "model": "gone"})
	require.Equal(t, http.StatusNotFound, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "not_found_error", "pinned to claude-opus-9 (CLAUDEQ_MODEL_ALIASES)")
}
