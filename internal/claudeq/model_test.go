package claudeq_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

// lineup is what a node might list today: undated and dated ids, several
// generations per family, and a family the built-in list does not know.
var lineup = []claudeq.Model{
	{ID: "claude-opus-4-8", CreatedAt: day("2026-05-28")},
	{ID: "claude-opus-5", CreatedAt: day("2026-07-24")},
	{ID: "claude-opus-5-5", CreatedAt: day("2026-09-22")},
	{ID: "claude-sonnet-4-5-20250929", CreatedAt: day("2025-09-29")},
	{ID: "claude-sonnet-5-5", CreatedAt: day("2026-09-28")},
	{ID: "claude-haiku-4-5-20251001", CreatedAt: day("2025-10-15")},
	{ID: "claude-fable-5-1", CreatedAt: day("2026-09-01")},
	{ID: "claude-fable-5-2", CreatedAt: day("2026-11-09")},
	{ID: "claude-3-5-sonnet-20241022", CreatedAt: day("2024-10-22")},
	{ID: "claude-nova-1"},
}

func TestCatalogResolve(t *testing.T) {
	t.Parallel()
	cat := claudeq.NewCatalog(lineup, nil)
	pinned := claudeq.NewCatalog(lineup, map[string]string{"Sonnet": "Claude-Sonnet-4-5-20250929", "fast": "claude-haiku-4-5-20251001", "gone": "claude-opus-9", "big": "fable"})
	variants := claudeq.NewCatalog([]claudeq.Model{{ID: "claude-opus-4-8-fast"}, {ID: "claude-opus-4-8"},
		{ID: "claude-sonnet-4-20250514-v1:0"}, {ID: "claude-sonnet-4-5-20250929-v1:0"}}, nil)
	tests := []struct {
		name   string
		cat    *claudeq.Catalog
		in     string
		wantID string // "" = not served
	}{
		{name: "listed id", cat: cat, in: "claude-opus-4-8", wantID: "claude-opus-4-8"},
		{name: "family alias: the newest version (5.5 above 5 above 4.8)", cat: cat, in: "opus", wantID: "claude-opus-5-5"},
		{name: "aliases in any case", cat: cat, in: "Opus", wantID: "claude-opus-5-5"},
		{name: "sonnet: 5.5 above the dated 4.5 and the old-style 3.5", cat: cat, in: "sonnet", wantID: "claude-sonnet-5-5"},
		{name: "haiku: the only one, dated", cat: cat, in: "haiku", wantID: "claude-haiku-4-5-20251001"},
		{name: "fable", cat: cat, in: "fable", wantID: "claude-fable-5-2"},
		{name: "a family nothing serves", cat: cat, in: "mythos", wantID: ""},
		{name: "undated id of a listed snapshot", cat: cat, in: "claude-haiku-4-5", wantID: "claude-haiku-4-5-20251001"},
		{name: "dated id of a listed undated id: the id asked for", cat: cat, in: "claude-opus-4-8-20260528", wantID: "claude-opus-4-8-20260528"},
		{name: "another snapshot of a listed dated id is not served", cat: cat, in: "claude-haiku-4-5-20260101", wantID: ""},
		{name: "ids are exact", cat: cat, in: "Claude-Opus-4-8", wantID: ""},
		{name: "unknown", cat: cat, in: "claude-opus-9", wantID: ""},
		{name: "a model of no family", cat: cat, in: "claude-nova-1", wantID: "claude-nova-1"},

		{name: "a family not pinned still floats", cat: pinned, in: "opus", wantID: "claude-opus-5-5"},
		{name: "a pinned name of one's own", cat: pinned, in: "FAST", wantID: "claude-haiku-4-5-20251001"},
		{name: "a pin to a model nobody serves", cat: pinned, in: "gone", wantID: ""},
		{name: "a pin in another case is lower-cased", cat: pinned, in: "sonnet", wantID: "claude-sonnet-4-5-20250929"},
		{name: "a pin to a family", cat: pinned, in: "big", wantID: "claude-fable-5-2"},
		{name: "the plain model before its variant", cat: variants, in: "opus", wantID: "claude-opus-4-8"},
		{name: "a date inside the id is no version", cat: variants, in: "sonnet", wantID: "claude-sonnet-4-5-20250929-v1:0"},
		{name: "empty", cat: cat, in: "", wantID: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, ok := tt.cat.Resolve(tt.in)
			require.Equal(t, tt.wantID != "", ok, "%+v", m)
			require.Equal(t, tt.wantID, m.ID)
		})
	}
	id, ok := pinned.Pinned("SONNET")
	require.True(t, ok)
	require.Equal(t, "claude-sonnet-4-5-20250929", id)
	require.Equal(t, []string{"big", "fable", "fast", "haiku", "opus", "sonnet"}, pinned.Aliases(), "a pin that resolves to nothing is not offered")
	require.Equal(t, 10, cat.Len())
	require.Equal(t, "claude-sonnet-5-5", cat.Models()[0].ID, "newest first: version, then release date")
}

func TestFamilyAndSnapshot(t *testing.T) {
	t.Parallel()
	for id, fam := range map[string]string{
		"claude-opus-4-8": "opus", "claude-3-5-sonnet-20241022": "sonnet", "claude-mythos-5-2": "mythos",
		"claude-fable-5-2": "fable", "claude-haiku-4-5-20251001": "haiku", "claude-nova-1": "", "gpt-5": "",
	} {
		require.Equal(t, fam, claudeq.FamilyOf(id), id)
	}
	for id, want := range map[string]struct {
		base  string
		dated bool
	}{
		"claude-haiku-4-5-20251001": {"claude-haiku-4-5", true},
		"claude-opus-4-8":           {"claude-opus-4-8", false},
		"claude-opus-4-1234567":     {"claude-opus-4-1234567", false},
		"claude-opus-4-2026052x":    {"claude-opus-4-2026052x", false},
		"20251001":                  {"20251001", false},
	} {
		base, dated := claudeq.SnapshotBase(id)
		require.Equal(t, want.base, base, id)
		require.Equal(t, want.dated, dated, id)
	}
	require.True(t, claudeq.Newer(claudeq.Model{ID: "claude-opus-5"}, claudeq.Model{ID: "claude-opus-4-8"}))
	require.True(t, claudeq.Newer(claudeq.Model{ID: "claude-opus-5-5"}, claudeq.Model{ID: "claude-opus-5"}))
	require.True(t, claudeq.Newer(claudeq.Model{ID: "claude-haiku-4-5-20260101"}, claudeq.Model{ID: "claude-haiku-4-5-20251001"}), "same version: the later snapshot")
	require.False(t, claudeq.Newer(claudeq.Model{ID: "claude-opus-4-8"}, claudeq.Model{ID: "claude-opus-4-8"}))
}

func TestCatalogServes(t *testing.T) {
	t.Parallel()
	node := claudeq.NewCatalog([]claudeq.Model{{ID: "claude-opus-4-8"}, {ID: "claude-haiku-4-5-20251001"}}, nil)
	require.True(t, node.Serves("claude-opus-4-8"))
	require.True(t, node.Serves("claude-opus-4-8-20260528"), "a snapshot of a listed id")
	require.True(t, node.Serves("claude-haiku-4-5-20251001"))
	require.False(t, node.Serves("claude-haiku-4-5"), "an undated name the node does not list")
	require.False(t, node.Serves("claude-opus-4-7"))
}
