package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/mongotest"
	"github.com/claudeq/claudeq/internal/store"
)

func cliWith(env map[string]string) func(args ...string) (string, string, error) {
	return func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, config.Map(env), &out, &errb)
		return out.String(), errb.String(), err
	}
}

func TestCLIKeyActionsAreAuditedAndVerified(t *testing.T) {
	t.Parallel()
	db := mongotest.DB(t)
	env := map[string]string{"CLAUDEQ_MONGO_URI": mongotest.URI(t), "CLAUDEQ_MONGO_DATABASE": db.Name(), "USER": "ops-alice",
		"CLAUDEQ_AUDIT_HMAC_KEY": crypt.GenerateKey()}
	cli := cliWith(env)

	_, _, err := cli("keys", "create", "--user", "bob", "--department", "sales", "--policy-action", "shred")
	require.ErrorContains(t, err, "--policy-action")
	_, _, err = cli("keys", "create", "--user", "bob", "--department", "sales", "--policy-action", "block")
	require.NoError(t, err)
	s := store.New(db)
	keys, err := s.Keys(context.Background())
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, "block", keys[0].PolicyAction)
	_, _, err = cli("keys", "rotate", keys[0].ID, "--grace", "1h")
	require.NoError(t, err)
	_, _, err = cli("keys", "revoke", keys[0].ID)
	require.NoError(t, err)

	var recs []audit.Record
	cur, err := db.Collection("audit").Find(context.Background(), bson.D{})
	require.NoError(t, err)
	require.NoError(t, cur.All(context.Background(), &recs))
	require.Len(t, recs, 3)
	var actions []string
	for _, r := range recs {
		require.Equal(t, audit.KindAdmin, r.Kind)
		require.Equal(t, "cli:ops-alice", r.UserID)
		actions = append(actions, r.Action)
	}
	require.Equal(t, []string{audit.ActionKeyCreated, audit.ActionKeyRotated, audit.ActionKeyRevoked}, actions)
	require.Equal(t, keys[0].ID, recs[2].Target)

	out, _, err := cli("audit", "verify")
	require.NoError(t, err)
	require.Contains(t, out, "audit log intact: 3 records checked")

	// Writers use an HMAC key: without it the hashes do not check out.
	noKey := map[string]string{"CLAUDEQ_MONGO_URI": env["CLAUDEQ_MONGO_URI"], "CLAUDEQ_MONGO_DATABASE": db.Name()}
	out, _, err = cliWith(noKey)("audit", "verify", "--json")
	require.Error(t, err)
	require.Contains(t, out, `"first_broken": 1`)

	// Someone with database access edits a record: verify names it and fails.
	_, err = db.Collection("audit").UpdateOne(context.Background(), bson.D{{Key: "_id", Value: 2}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "target", Value: "key_innocent"}}}})
	require.NoError(t, err)
	out, _, err = cli("audit", "verify")
	require.Error(t, err)
	require.Contains(t, out, "BROKEN at record 2")
}

func TestCLIRotateDataKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := mongotest.DB(t)
	k1, k2 := crypt.GenerateKey(), crypt.GenerateKey()
	old, err := crypt.ParseKeys("k1:" + k1)
	require.NoError(t, err)
	s := store.New(db)
	s.SetKeyRing(old)
	at := time.Now().UTC().Truncate(time.Millisecond)
	for _, id := range []string{"job-a", "job-b", "job-c"} {
		require.NoError(t, s.SaveJob(ctx, &claudeq.Job{ID: id, Kind: claudeq.JobChat, Status: claudeq.StatusSucceeded, UserID: "alice",
			Model: "claude-sonnet-5-5", Result: []byte(`{"text":"answer of ` + id + `"}`), CreatedAt: at, FinishedAt: &at}))
	}

	env := map[string]string{"CLAUDEQ_MONGO_URI": mongotest.URI(t), "CLAUDEQ_MONGO_DATABASE": db.Name(),
		"CLAUDEQ_ENCRYPTION_KEYS": "k2:" + k2 + ",k1:" + k1}
	out, progress, err := cliWith(env)("keys", "rotate-data-key", "--batch", "2")
	require.NoError(t, err)
	require.Contains(t, out, `encrypted under key "k2" (3 job results`)
	require.Equal(t, 2, strings.Count(progress, "re-encrypted"), "one line per batch of 2")

	var raw bson.M
	require.NoError(t, db.Collection("jobs").FindOne(ctx, bson.D{{Key: "_id", Value: "job-b"}}).Decode(&raw))
	require.True(t, strings.HasPrefix(raw["result"].(string), crypt.Prefix+"k2:"), raw["result"])
	onlyNew, err := crypt.ParseKeys("k2:" + k2)
	require.NoError(t, err)
	s2 := store.New(db)
	s2.SetKeyRing(onlyNew)
	j, err := s2.Job(ctx, "job-b")
	require.NoError(t, err)
	require.JSONEq(t, `{"text":"answer of job-b"}`, string(j.Result))

	_, _, err = cliWith(map[string]string{"CLAUDEQ_MONGO_URI": mongotest.URI(t), "CLAUDEQ_MONGO_DATABASE": db.Name()})("keys", "rotate-data-key")
	require.ErrorContains(t, err, "CLAUDEQ_ENCRYPTION_KEYS is empty")
}
