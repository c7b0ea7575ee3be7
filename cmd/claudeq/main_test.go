package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/mongotest"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/store"
)

func TestKeysCreateListRevoke(t *testing.T) {
	t.Parallel()
	db := mongotest.DB(t)
	env := config.Map(map[string]string{"CLAUDEQ_MONGO_URI": mongotest.URI(t), "CLAUDEQ_MONGO_DATABASE": db.Name()})
	cli := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, env, &out, &errb)
		return out.String(), errb.String(), err
	}

	out, info, err := cli("keys", "create", "--user", "alice", "--department", "research", "--tier", "opus", "--admin")
	require.NoError(t, err)
	key := strings.TrimSpace(out)
	require.True(t, apikey.WellFormed(key), key)
	require.Contains(t, info, "shown only this once")

	// Only the hash is stored, with the key's principal.
	s := store.New(db)
	k, err := s.KeyByHash(context.Background(), apikey.Hash(key))
	require.NoError(t, err)
	require.Equal(t, "alice", k.UserID)
	require.Equal(t, "research", k.Department)
	require.Equal(t, "opus", k.Tier)
	require.ElementsMatch(t, []string{"jobs", "batches", "admin"}, k.Scopes)
	require.Nil(t, k.RevokedAt)

	out, _, err = cli("keys", "list")
	require.NoError(t, err)
	require.Contains(t, out, k.ID)
	require.Contains(t, out, "alice")
	require.NotContains(t, out, key, "a key is never listed")

	// Rotation: a new key for the same principal; the old one expires after the grace.
	out, info, err = cli("keys", "rotate", k.ID, "--grace", "1h")
	require.NoError(t, err)
	rotated := strings.TrimSpace(out)
	require.Contains(t, info, "replacing "+k.ID)
	k2, err := s.KeyByHash(context.Background(), apikey.Hash(rotated))
	require.NoError(t, err)
	require.Equal(t, "alice", k2.UserID)
	require.ElementsMatch(t, k.Scopes, k2.Scopes)
	old, err := s.Key(context.Background(), k.ID)
	require.NoError(t, err)
	require.NotNil(t, old.ExpiresAt)
	require.WithinDuration(t, time.Now().Add(time.Hour), *old.ExpiresAt, time.Minute)
	require.Equal(t, k2.ID, old.RotatedTo)

	_, _, err = cli("keys", "create", "--user", "carol", "--department", "d", "--scopes", "jobs,root")
	require.ErrorContains(t, err, `unknown scope "root"`)
	out, _, err = cli("keys", "create", "--user", "carol", "--department", "d", "--scopes", "admin:read", "--expires-in", "48h")
	require.NoError(t, err)
	k3, err := s.KeyByHash(context.Background(), apikey.Hash(strings.TrimSpace(out)))
	require.NoError(t, err)
	require.Equal(t, []string{"admin:read"}, k3.Scopes)
	require.WithinDuration(t, time.Now().Add(48*time.Hour), *k3.ExpiresAt, time.Minute)

	_, _, err = cli("keys", "revoke", k.ID)
	require.NoError(t, err)
	k, err = s.KeyByHash(context.Background(), apikey.Hash(key))
	require.NoError(t, err)
	require.NotNil(t, k.RevokedAt)

	_, _, err = cli("keys", "revoke", "key_nope")
	require.ErrorContains(t, err, "no key key_nope")
	_, _, err = cli("keys", "create", "--user", "bob")
	require.ErrorContains(t, err, "--user and --department are required")
}

func TestKeysNeedAStore(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"keys", "list"}, config.Map(map[string]string{"CLAUDEQ_DATA_DIR": t.TempDir()}), &out, &errb)
	require.ErrorContains(t, err, "set CLAUDEQ_MONGO_URI, or start `claudeq dev`")
}

func TestQuotaSetShowRebuild(t *testing.T) {
	t.Parallel()
	db := mongotest.DB(t)
	rs := redistest.New(t)
	env := config.Map(map[string]string{"CLAUDEQ_MONGO_URI": mongotest.URI(t), "CLAUDEQ_MONGO_DATABASE": db.Name(), "CLAUDEQ_REDIS_URL": rs.URL()})
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, env, &out, &errb)
		return out.String() + errb.String(), err
	}
	out, err := cli("quota", "set", "user", "alice", "--daily-usd", "25")
	require.NoError(t, err)
	require.Contains(t, out, "user alice: daily $25.00")
	_, err = cli("quota", "set", "user", "alice", "--monthly-usd", "5")
	require.ErrorContains(t, err, "only the total budget")

	// The ledger says alice spent $1.50 today; rebuild the counters from it.
	today := time.Now().UTC().Format(time.DateOnly)
	for i, c := range []int64{1_000_000, 500_000} {
		_, err := db.Collection("ledger").InsertOne(context.Background(), store.LedgerEntry{
			ID: fmt.Sprintf("job_%d", i), JobID: fmt.Sprintf("job_%d", i), UserID: "alice", Department: "research",
			Model: "claude-sonnet-5-5", CostMicros: c, Day: today, At: time.Now()})
		require.NoError(t, err)
	}
	out, err = cli("quota", "rebuild", "--day", today)
	require.NoError(t, err, out)
	require.Contains(t, out, "1 users, $1.50 spent")
	out, err = cli("quota", "show", "--user", "alice", "--department", "research")
	require.NoError(t, err)
	require.Regexp(t, `user\s+daily\s+alice\s+\$25.00\s+\$1.50\s+\$0.00\s+\$23.50`, out)
}
