package upstream_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/upstream"
)

// builtin stands in for claudeq's built-in model list.
var builtin = []claudeq.Model{
	{ID: "claude-opus-4-8", DisplayName: "Claude Opus 4.8", MaxInputTokens: 1_000_000, MaxOutputTokens: 128_000},
	{ID: "claude-haiku-4-5", DisplayName: "Claude Haiku 4.5", MaxInputTokens: 200_000, MaxOutputTokens: 64_000},
}

func ids(c *claudeq.Catalog) []string {
	var out []string
	for _, m := range c.Models() {
		out = append(out, m.ID)
	}
	slices.Sort(out)
	return out
}

func msgBody(model string) []byte {
	return []byte(`{"model":"` + model + `","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`)
}

// TestCatalogFollowsTheNodes: the served models are the union of what the
// nodes list, read by probes; calls go only to a node that lists their
// model; a model a node drops is gone after its next probe, in every
// process sharing the Redis.
func TestCatalogFollowsTheNodes(t *testing.T) {
	t.Parallel()
	b := setup(t,
		sim.Config{Catalog: []claudeq.Model{{ID: "claude-opus-4-8"}, {ID: "claude-fable-5-3", DisplayName: "Claude Fable 5.3", MaxOutputTokens: 32_000}}},
		sim.Config{Models: []string{"claude-haiku-4-5-20251001"}},
	)
	ctx := context.Background()
	f := b.fleet(t, upstream.FleetOptions{Builtin: builtin, Aliases: map[string]string{"fast": "claude-haiku-4-5"}})
	other := b.fleet(t, upstream.FleetOptions{Builtin: builtin, CatalogTTL: 20 * time.Millisecond})

	// Before any probe the built-in list stands in for every node.
	require.Equal(t, []string{"claude-haiku-4-5", "claude-opus-4-8"}, ids(f.Catalog(ctx)))
	_, err := f.Pick(ctx, "claude-fable-5-3", nil)
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))

	for _, n := range []string{"a", "b"} {
		require.NoError(t, f.Probe(ctx, n))
	}
	cat := f.Catalog(ctx)
	require.Equal(t, []string{"claude-fable-5-3", "claude-haiku-4-5-20251001", "claude-opus-4-8"}, ids(cat), "this process sees its probes at once")
	m, ok := cat.Resolve("claude-fable-5-3")
	require.True(t, ok)
	require.Equal(t, claudeq.Model{ID: "claude-fable-5-3", DisplayName: "Claude Fable 5.3", CreatedAt: m.CreatedAt, MaxOutputTokens: 32_000}, m, "the node's own limits")
	m, ok = cat.Resolve("claude-haiku-4-5-20251001")
	require.True(t, ok)
	require.Equal(t, int64(64_000), m.MaxOutputTokens, "a limit the node did not report comes from the built-in entry of the undated id")
	m, ok = cat.Resolve("fast")
	require.True(t, ok, "a pinned alias resolves through the snapshot")
	require.Equal(t, "claude-haiku-4-5-20251001", m.ID)
	require.Eventually(t, func() bool {
		return slices.Equal(ids(other.Catalog(ctx)), ids(cat))
	}, 5*time.Second, 10*time.Millisecond, "another process sees them within its CatalogTTL")

	// Calls for a model go only to the node listing it.
	for range 6 {
		resp, node, err := f.Call(ctx, "claude-fable-5-3", msgBody("claude-fable-5-3"), nil)
		require.NoError(t, err)
		require.Equal(t, "a", node)
		require.NotEmpty(t, resp.Raw)
		_, node, err = f.Call(ctx, "claude-haiku-4-5-20251001", msgBody("claude-haiku-4-5-20251001"), nil)
		require.NoError(t, err)
		require.Equal(t, "b", node)
	}
	require.True(t, f.Serves(ctx, "claude-opus-4-8"))
	require.False(t, f.Serves(ctx, "claude-opus-4-7"))

	nodes, err := f.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, upstream.ModelsFromNode, nodes[0].ModelsSource)
	require.ElementsMatch(t, []string{"claude-opus-4-8", "claude-fable-5-3"}, nodes[0].ModelsServed)
	require.False(t, nodes[0].ModelsAt.IsZero())

	// Node a drops a model: gone after its next probe.
	b.sims["a"].SetModels([]claudeq.Model{{ID: "claude-opus-4-8"}})
	require.True(t, f.Serves(ctx, "claude-fable-5-3"), "not before the probe")
	require.NoError(t, f.Probe(ctx, "a"))
	require.False(t, f.Serves(ctx, "claude-fable-5-3"))
	_, _, err = f.Call(ctx, "claude-fable-5-3", msgBody("claude-fable-5-3"), nil)
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err))
	require.Eventually(t, func() bool {
		_, ok := other.Catalog(ctx).Resolve("claude-fable-5-3")
		return !ok
	}, 5*time.Second, 10*time.Millisecond)
}

// TestCatalogAllowListAndNoList: a node's allow-list cuts its list; a node
// that answers GET /v1/models without a list (404) keeps the built-in one;
// a node that cannot be reached keeps the last list it gave.
func TestCatalogAllowListAndNoList(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{Models: []string{"claude-opus-4-8", "claude-opus-4-7", "claude-fable-5-3"}})
	noList := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"type":"error","error":{"type":"not_found_error","message":"Not Found"}}`))
	}))
	t.Cleanup(noList.Close)
	b.nodes[0].Models = []string{"claude-opus-*"}
	b.nodes = append(b.nodes, upstream.NodeConfig{Name: "proxy", URL: noList.URL, APIKey: "k", Weight: 1})
	ctx := context.Background()
	f := b.fleet(t, upstream.FleetOptions{Builtin: builtin})
	require.NoError(t, f.Probe(ctx, "a"))
	require.NoError(t, f.Probe(ctx, "proxy"), "a node without a list is still up")
	require.Equal(t, []string{"claude-haiku-4-5", "claude-opus-4-7", "claude-opus-4-8"}, ids(f.Catalog(ctx)),
		"a: its opus models (the allow-list drops fable); proxy: the built-in list")
	nodes, err := f.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, upstream.ModelsBuiltin, nodes[1].ModelsSource)
	require.ElementsMatch(t, []string{"claude-opus-4-8", "claude-haiku-4-5"}, nodes[1].ModelsServed)

	noList.Close() // now unreachable: the probe fails and the last list stays
	require.Error(t, f.Probe(ctx, "proxy"))
	require.Contains(t, ids(f.Catalog(ctx)), "claude-haiku-4-5")
}
