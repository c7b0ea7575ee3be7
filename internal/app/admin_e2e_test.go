package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
)

func TestAdminKeysLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, stop := e.run(app.Roles{API: true})
	base := "http://" + a.Addr()
	admin, _ := e.key("root", "ops", "admin")
	reader, _ := e.key("auditor", "ops", "admin:read")
	user, _ := e.key("alice", "research")
	e.key("idle", "research")

	// Only admins reach /admin; admin:read only reads.
	r0 := do(t, "GET", base+"/admin/keys", user, nil)
	require.Equal(t, http.StatusForbidden, r0.Status)
	requireErrorShape(t, r0, "permission_error", `lacks the "admin:read" scope`)
	r0 = do(t, "POST", base+"/admin/keys", user, map[string]any{"user_id": "bob", "department": "sales"})
	require.Equal(t, http.StatusForbidden, r0.Status)
	requireErrorShape(t, r0, "permission_error", `lacks the "admin" scope`) // what the change needs, not the read scope
	require.Equal(t, http.StatusOK, do(t, "GET", base+"/admin/keys", reader, nil).Status)
	r := do(t, "POST", base+"/admin/keys", reader, map[string]any{"user_id": "bob", "department": "sales"})
	require.Equal(t, http.StatusForbidden, r.Status)
	requireErrorShape(t, r, "permission_error", `"admin" scope`)

	r = do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "bob", "department": "sales", "scopes": []string{"jobs"}})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	bob := r.json(t)["key"].(string)
	bobID := r.json(t)["data"].(map[string]any)["id"].(string)
	require.NotContains(t, r.json(t)["data"], "hash")
	submit(t, base, bob, map[string]any{"prompt": "hello from bob"})

	r = do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "bob", "department": "sales", "scopes": []string{"root"}})
	require.Equal(t, http.StatusBadRequest, r.Status)
	requireErrorShape(t, r, "invalid_request_error", `unknown scope "root"`)

	// Rotation: the new key works at once, the old one until the grace ends.
	r = do(t, "POST", base+"/admin/keys/"+bobID+"/rotate?grace=1s", admin, nil)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	bob2 := r.json(t)["key"].(string)
	submit(t, base, bob2, map[string]any{"prompt": "hello from bob's new key"})
	submit(t, base, bob, map[string]any{"prompt": "old key during grace"})
	require.Eventually(t, func() bool {
		r := do(t, "POST", base+"/api/claude/chat", bob, map[string]any{"prompt": "old key after grace"})
		return r.Status == http.StatusUnauthorized
	}, 5*time.Second, 100*time.Millisecond)
	r = do(t, "POST", base+"/api/claude/chat", bob, map[string]any{"prompt": "old key after grace"})
	requireErrorShape(t, r, "authentication_error", "API key expired")

	// Revocation.
	bob2ID := do(t, "GET", base+"/admin/keys", admin, nil).json(t)["data"].([]any)[0].(map[string]any)["id"].(string)
	require.Equal(t, http.StatusOK, do(t, "DELETE", base+"/admin/keys/"+bob2ID, admin, nil).Status)
	r = do(t, "POST", base+"/api/claude/chat", bob2, map[string]any{"prompt": "revoked"})
	require.Equal(t, http.StatusUnauthorized, r.Status)
	requireErrorShape(t, r, "authentication_error", "API key revoked")

	// Last-used times are flushed to the store (at shutdown at the latest).
	stop()
	require.EqualValues(t, 1, e.count("api_keys", bson.D{{Key: "user_id", Value: "idle"}, {Key: "last_used_at", Value: bson.D{{Key: "$exists", Value: false}}}}), "an unused key has no last-used time")
	require.EqualValues(t, 1, e.count("api_keys", bson.D{{Key: "user_id", Value: "alice"}, {Key: "last_used_at", Value: bson.D{{Key: "$exists", Value: true}}}}))
	require.GreaterOrEqual(t, e.count("api_keys", bson.D{{Key: "user_id", Value: "bob"}, {Key: "last_used_at", Value: bson.D{{Key: "$exists", Value: true}}}}), int64(2))
}
