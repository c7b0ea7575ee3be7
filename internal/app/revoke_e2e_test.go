package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
)

// TestRevocationReachesEveryAPIInASecond: two api processes cache the key
// (for 10 minutes); revoked through one, it is refused by both within a
// second; a changed scope likewise; so is a revocation by the CLI's path
// (straight to the store).
func TestRevocationReachesEveryAPIInASecond(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	over := []string{"CLAUDEQ_KEY_CACHE_TTL", "10m"}
	a1, _ := e.run(app.Roles{API: true}, over...)
	a2, _ := e.run(app.Roles{API: true}, over...)
	apis := []string{"http://" + a1.Addr(), "http://" + a2.Addr()}
	admin, _ := e.key("root", "ops", claudeq.ScopeAdmin)
	status := func(base, key string) int {
		return do(t, "GET", base+"/api/claude/quota", key, nil).Status
	}
	refusedByBoth := func(key string, want int, what string) time.Duration {
		start := time.Now()
		require.Eventually(t, func() bool { return status(apis[0], key) == want && status(apis[1], key) == want },
			time.Second, 10*time.Millisecond, "%s: refused by both apis within 1 s", what)
		return time.Since(start)
	}

	key, id := e.key("alice", "research")
	for _, base := range apis {
		require.Equal(t, http.StatusOK, status(base, key), "cached by both")
	}
	r := do(t, "DELETE", apis[0]+"/admin/keys/"+id, admin, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, http.StatusUnauthorized, status(apis[0], key), "the api that revoked it refuses it at once")
	took := refusedByBoth(key, http.StatusUnauthorized, "revoked through an api")
	t.Logf("revocation reached both apis in %v", took)

	key2, id2 := e.key("bob", "research")
	for _, base := range apis {
		require.Equal(t, http.StatusOK, status(base, key2))
	}
	r = do(t, "PATCH", apis[1]+"/admin/keys/"+id2, admin, map[string]any{"scopes": []string{claudeq.ScopeBatches}})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	refusedByBoth(key2, http.StatusForbidden, "scope jobs taken away")

	key3, id3 := e.key("carol", "research")
	for _, base := range apis {
		require.Equal(t, http.StatusOK, status(base, key3))
	}
	require.NoError(t, e.store.RevokeKey(context.Background(), id3, time.Now())) // what `claudeq keys revoke` does
	refusedByBoth(key3, http.StatusUnauthorized, "revoked in the store directly")
}
