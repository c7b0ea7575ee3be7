package api

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// TestAutoRoutesToTheNearestServedTier: model "auto" picks a tier by the
// prompt; when no node serves that tier it takes the nearest one served,
// cheaper first, never above the key's tier.
func TestAutoRoutesToTheNearestServedTier(t *testing.T) {
	t.Parallel()
	noHaiku := claudeq.NewCatalog([]claudeq.Model{{ID: "claude-sonnet-5-5"}, {ID: "claude-opus-5-5"}}, nil)
	opusOnly := claudeq.NewCatalog([]claudeq.Model{{ID: "claude-opus-5-5"}}, nil)
	all := claudeq.NewCatalog([]claudeq.Model{{ID: "claude-haiku-5-5"}, {ID: "claude-sonnet-5-5"}, {ID: "claude-opus-5-5"}}, nil)
	tests := []struct {
		name       string
		cat        *claudeq.Catalog
		want, key  string
		wantID     string // "" = none
		wantFamily string
	}{
		{name: "served", cat: all, want: "sonnet", key: "standard", wantID: "claude-sonnet-5-5", wantFamily: "sonnet"},
		{name: "cheaper first", cat: all, want: "opus", key: "sonnet", wantID: "claude-sonnet-5-5", wantFamily: "sonnet"},
		{name: "haiku not served: the next dearer", cat: noHaiku, want: "haiku", key: "standard", wantID: "claude-sonnet-5-5", wantFamily: "sonnet"},
		{name: "never above the key's tier", cat: opusOnly, want: "haiku", key: "sonnet", wantID: ""},
		{name: "up to the key's tier", cat: opusOnly, want: "haiku", key: "opus", wantID: "claude-opus-5-5", wantFamily: "opus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, fam, ok := nearestServed(tt.cat, tt.want, tt.key)
			require.Equal(t, tt.wantID != "", ok)
			require.Equal(t, tt.wantID, m.ID)
			require.Equal(t, tt.wantFamily, fam)
		})
	}
}
