package app_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/store"
)

func TestAuditTrailAndVerify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all("CLAUDEQ_AUDIT_ANCHOR_INTERVAL", "1s", "CLAUDEQ_RATELIMIT_TIERS", "standard=2/0")
	key, keyID := e.key("alice", "research")
	admin, adminID := e.key("root", "ops", claudeq.ScopeAdmin)

	health := do(t, "GET", base+"/api/claude/health", "", nil)
	require.Equal(t, http.StatusOK, health.Status)
	wait(t, base, key, submit(t, base, key, map[string]any{"prompt": "audited"}, "User-Agent", "audit-test/1.0"), 15*time.Second)
	require.Equal(t, http.StatusUnauthorized, do(t, "POST", base+"/api/claude/chat", "cqk_bogus", map[string]any{"prompt": "x"}).Status)
	submit(t, base, key, map[string]any{"prompt": "second"})
	require.Equal(t, http.StatusTooManyRequests, do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "third"}).Status)
	r := do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "bob", "department": "sales", "policy_action": "shred"})
	require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "invalid_request_error", "policy_action")
	r = do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "bob", "department": "sales", "policy_action": "block"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	require.Equal(t, "block", r.json(t)["data"].(map[string]any)["policy_action"])
	bobID := r.json(t)["data"].(map[string]any)["id"].(string)
	require.Equal(t, http.StatusOK, do(t, "DELETE", base+"/admin/keys/"+bobID, admin, nil).Status)

	allowed := e.auditRecords(t, bson.D{{Key: "decision", Value: audit.DecisionAllowed}, {Key: "user_agent", Value: "audit-test/1.0"}}, 1)[0]
	require.Equal(t, audit.KindRequest, allowed.Kind)
	require.Equal(t, "alice", allowed.UserID)
	require.Equal(t, keyID, allowed.KeyID)
	require.Equal(t, "127.0.0.1", allowed.ClientIP)
	require.True(t, strings.HasPrefix(allowed.EventID, "req_"), "the request id links the record to the logs and the error body")
	failed := e.auditRecords(t, bson.D{{Key: "decision", Value: audit.DecisionAuthFailed}}, 1)[0]
	require.Empty(t, failed.UserID)
	limited := e.auditRecords(t, bson.D{{Key: "decision", Value: audit.DecisionRateLimited}}, 1)[0]
	require.Equal(t, keyID, limited.KeyID)
	created := e.auditRecords(t, bson.D{{Key: "action", Value: audit.ActionKeyCreated}}, 1)[0]
	require.Equal(t, audit.KindAdmin, created.Kind)
	require.Equal(t, adminID, created.KeyID)
	require.Equal(t, bobID, created.Target)
	require.Len(t, e.auditRecords(t, bson.D{{Key: "action", Value: audit.ActionKeyRevoked}, {Key: "target", Value: bobID}}, 1), 1)
	// One writer appends in order: the health check, before every record
	// above, would be there too if it were audited.
	require.EqualValues(t, 0, e.count("audit", bson.D{{Key: "eid", Value: health.Header.Get("request-id")}}))
	require.EqualValues(t, 1, e.count("audit", bson.D{{Key: "eid", Value: allowed.EventID}}))

	// The scheduler anchors; the admin API verifies the whole chain.
	var rep map[string]any
	require.Eventually(t, func() bool {
		r := do(t, "GET", base+"/admin/audit/verify", admin, nil)
		if r.Status != http.StatusOK {
			return false
		}
		rep = r.json(t)
		return rep["ok"] == true && rep["report"].(map[string]any)["anchors"].(float64) >= 1
	}, 20*time.Second, 200*time.Millisecond, "verified and anchored: %v", rep)
	require.Equal(t, http.StatusForbidden, do(t, "GET", base+"/admin/audit/verify", key, nil).Status)

	// Tampering shows.
	_, err := e.db.Collection("audit").UpdateOne(context.Background(), bson.D{{Key: "_id", Value: 2}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "decision", Value: "allowed"}, {Key: "client_ip", Value: "10.9.9.9"}}}})
	require.NoError(t, err)
	rep = do(t, "GET", base+"/admin/audit/verify", admin, nil).json(t)
	require.Equal(t, false, rep["ok"])
	require.EqualValues(t, 2, rep["report"].(map[string]any)["first_broken"])
}

func TestAuditStoreDownRequestsSucceedAndRecordsLandLater(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOwnMongo())
	spill := t.TempDir()
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_KEY_CACHE_TTL", "10m", "CLAUDEQ_AUDIT_SPILL_DIR", spill,
		"CLAUDEQ_AUDIT_BUFFER", "2", "CLAUDEQ_AUDIT_BLOCK_TIMEOUT", "1ms")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	require.Equal(t, http.StatusNotFound, do(t, "GET", base+"/api/claude/jobs/job_none", key, nil).Status) // caches the key
	e.auditRecords(t, bson.D{{Key: "user_id", Value: "alice"}}, 1)

	e.mongoSv.Stop()
	const n = 20
	for i := range n {
		submit(t, base, key, map[string]any{"prompt": "while the audit store is down", "metadata": map[string]any{"i": i}})
	}
	spilled := func() int {
		files, _ := filepath.Glob(filepath.Join(spill, "audit-spill-*.jsonl"))
		return len(files)
	}
	require.Positive(t, spilled(), "the backlog went to disk")

	e.mongoSv.Start()
	recs := e.auditRecords(t, bson.D{{Key: "user_id", Value: "alice"}}, n+1)
	require.Len(t, recs, n+1, "every record once")
	require.Eventually(t, func() bool { return spilled() == 0 }, 15*time.Second, 100*time.Millisecond, "replayed spill files are removed")
	c, err := audit.New(audit.Config{DB: e.db, Redis: e.redis.Client(t)})
	require.NoError(t, err)
	rep, err := c.Verify(context.Background())
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep)
	require.EqualValues(t, n+1, rep.Checked)
}

// Without room for the audit record (the buffer full while the store is
// down, no spill directory) a request is refused before it is served: every
// submit answered 202 has its record, and no refused one has a job.
func TestAuditFullRefusesRequestsInsteadOfServingThemUnaudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOwnMongo())
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_KEY_CACHE_TTL", "10m",
		"CLAUDEQ_AUDIT_BUFFER", "3", "CLAUDEQ_AUDIT_BLOCK_TIMEOUT", "1ms")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	require.Equal(t, http.StatusNotFound, do(t, "GET", base+"/api/claude/jobs/job_none", key, nil).Status) // caches the key
	e.auditRecords(t, bson.D{{Key: "user_id", Value: "alice"}}, 1)

	e.mongoSv.Stop()
	var accepted, refused []string
	for i := range 12 {
		r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "while the audit store is down", "metadata": map[string]any{"i": i}})
		switch r.Status {
		case http.StatusAccepted:
			accepted = append(accepted, r.json(t)["id"].(string))
		case http.StatusServiceUnavailable:
			requireErrorShape(t, r, "service_unavailable", "audit log is overloaded")
			require.Equal(t, "1", r.Header.Get("Retry-After"))
			refused = append(refused, r.Header.Get("request-id"))
		default:
			t.Fatalf("submit %d: status %d: %s", i, r.Status, r.Body)
		}
	}
	require.NotEmpty(t, accepted)
	require.NotEmpty(t, refused, "a buffer of 3 cannot hold 12 records")

	e.mongoSv.Start()
	recs := e.auditRecords(t, bson.D{{Key: "user_id", Value: "alice"}}, len(accepted)+1)
	require.Len(t, recs, len(accepted)+1, "every accepted submit recorded once")
	for _, id := range refused {
		require.EqualValues(t, 0, e.count("audit", bson.D{{Key: "eid", Value: id}}))
	}
	for _, id := range accepted {
		require.Equal(t, http.StatusOK, do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).Status)
	}
}

func TestEncryptionAtRestEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k1, k2 := crypt.GenerateKey(), crypt.GenerateKey()
	all := app.Roles{API: true, Worker: true, Scheduler: true}
	a, stop := e.run(all, "CLAUDEQ_ENCRYPTION_KEYS", "k1:"+k1)
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	const secret = "the launch code is pelican"
	id := submit(t, base, key, map[string]any{"prompt": secret, "session_id": "s-enc", "cache": false})
	j := wait(t, base, key, id, 15*time.Second)
	require.Equal(t, "succeeded", j["status"])
	text := j["text"].(string)
	require.NotEmpty(t, text)

	rawJob := func(id string) string {
		var m bson.M
		require.NoError(t, e.db.Collection("jobs").FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&m))
		return m["result"].(string)
	}
	rawConv := func() string {
		var m bson.M
		require.NoError(t, e.db.Collection("conversations").FindOne(context.Background(),
			bson.D{{Key: "_id", Value: store.ConversationID("alice", "s-enc", "")}}).Decode(&m))
		b, err := bson.MarshalExtJSON(m, false, false)
		require.NoError(t, err)
		return string(b)
	}
	require.True(t, strings.HasPrefix(rawJob(id), crypt.Prefix+"k1:"), rawJob(id))
	require.NotContains(t, rawJob(id), text[:20])
	require.Contains(t, rawConv(), crypt.Prefix+"k1:")
	require.NotContains(t, rawConv(), "pelican")
	require.NotContains(t, rawConv(), text[:20])
	got := do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)
	require.Equal(t, text, got["text"])
	require.Equal(t, "message", got["result"].(map[string]any)["type"])
	stop()

	// Rotation, step 1: the new key first, the old one after it. Old
	// records stay readable; new ones use the new key.
	a, stop = e.run(all, "CLAUDEQ_ENCRYPTION_KEYS", "k2:"+k2+",k1:"+k1)
	base = "http://" + a.Addr()
	require.Equal(t, text, do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)["text"])
	id2 := submit(t, base, key, map[string]any{"prompt": "after the rotation", "session_id": "s-enc", "cache": false})
	require.Equal(t, "succeeded", wait(t, base, key, id2, 15*time.Second)["status"])
	require.True(t, strings.HasPrefix(rawJob(id2), crypt.Prefix+"k2:"))
	stop()

	// Step 2: re-encrypt what is left under k1 (claudeq keys
	// rotate-data-key), then drop k1.
	r, err := crypt.ParseKeys("k2:" + k2 + ",k1:" + k1)
	require.NoError(t, err)
	s := store.New(e.db)
	s.SetKeyRing(r)
	st, err := s.ReencryptAll(context.Background(), 100, nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, st.JobsReencrypted)
	require.EqualValues(t, 2, st.MessagesReencrypted)
	a, _ = e.run(all, "CLAUDEQ_ENCRYPTION_KEYS", "k2:"+k2)
	base = "http://" + a.Addr()
	require.Equal(t, text, do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)["text"])
	require.Equal(t, "succeeded", do(t, "GET", base+"/api/claude/jobs/"+id2, key, nil).json(t)["status"])
	require.True(t, strings.HasPrefix(rawJob(id), crypt.Prefix+"k2:"))

	// A production process refuses to start without keys when they are
	// required.
	err = app.Run(context.Background(), app.Options{Roles: app.Roles{API: true}}, e.getenv("CLAUDEQ_ENCRYPTION_REQUIRED", "1"), io.Discard, nil)
	require.ErrorContains(t, err, "CLAUDEQ_ENCRYPTION_KEYS is empty")
}

func TestDevModeEncryptsAuditsAndCanLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"CLAUDEQ_DATA_DIR": dir, "CLAUDEQ_HTTP_ADDR": "127.0.0.1:0", "CLAUDEQ_RATELIMIT_IP": "6/1m"}
	base, out, stop := runDev(t, env)
	require.Contains(t, out.String(), "encryption at rest: generated a key in "+filepath.Join(dir, crypt.DevKeyFile))
	fi, err := os.Stat(filepath.Join(dir, crypt.DevKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	key := keyLine.FindStringSubmatch(out.String())[1]

	id := submit(t, base, key, map[string]any{"prompt": "dev secret", "cache": false})
	var j map[string]any
	require.Eventually(t, func() bool {
		r := do(t, "GET", base+"/api/claude/jobs/"+id, key, nil)
		j = r.json(t)
		return r.Status == http.StatusOK && j["status"] == "succeeded"
	}, 20*time.Second, 500*time.Millisecond)
	var rep map[string]any
	require.Eventually(t, func() bool {
		rep = do(t, "GET", base+"/admin/audit/verify", key, nil).json(t)
		return rep["ok"] == true && rep["report"].(map[string]any)["checked"].(float64) >= 2
	}, 10*time.Second, 500*time.Millisecond, "%v", rep)
	// The embedded Redis runs the rate limiter's Lua too.
	var last response
	for range 6 {
		last = do(t, "GET", base+"/api/claude/jobs/"+id, key, nil)
	}
	require.Equal(t, http.StatusTooManyRequests, last.Status, "%s", last.Body)
	stop()

	delete(env, "CLAUDEQ_RATELIMIT_IP") // the bucket is in the Redis snapshot
	base, out, _ = runDev(t, env)
	require.Contains(t, out.String(), "encryption at rest: key from")
	require.Equal(t, j["text"], do(t, "GET", base+"/api/claude/jobs/"+id, key, nil).json(t)["text"])
}
