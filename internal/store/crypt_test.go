package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/mongotest"
)

func ring(t *testing.T, spec string) *crypt.Ring {
	t.Helper()
	r, err := crypt.ParseKeys(spec)
	require.NoError(t, err)
	return r
}

// raw returns a document as MongoDB holds it.
func raw(t *testing.T, s *Store, coll, id string) bson.M {
	t.Helper()
	var m bson.M
	require.NoError(t, s.db.Collection(coll).FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&m))
	return m
}

// field returns key of a nested document (bson.D when decoded into bson.M).
func field(doc any, key string) any {
	for _, e := range doc.(bson.D) {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

func succeeded(id, user, result string, at time.Time) *claudeq.Job {
	j := finishedJob(id, user, at)
	j.Result = []byte(result)
	return j
}

func turn(jobID, user, session, prompt, answer string, at time.Time) *Turn {
	return &Turn{JobID: jobID, UserID: user, SessionID: session, Model: "claude-sonnet-5-5", Tokens: 10, At: at,
		Messages: []Message{{Role: "user", Content: prompt, JobID: jobID, At: at}, {Role: "assistant", Content: answer, JobID: jobID, At: at}}}
}

func TestEncryptionAtRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := mongotest.DB(t)
	k1, k2 := crypt.GenerateKey(), crypt.GenerateKey()
	old := ring(t, "k1:"+k1)
	at := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC).Truncate(time.Millisecond)

	// Records from before encryption was turned on.
	plain := New(db)
	require.NoError(t, plain.write(ctx, []Record{{Job: succeeded("job-plain", "alice", `{"text":"legacy answer"}`, at),
		Turn: turn("job-plain", "alice", "s1", "legacy prompt", "legacy answer", at)}})[0])

	s := New(db)
	s.SetKeyRing(old)
	const result = `{"content":[{"type":"text","text":"the secret answer"}]}`
	require.NoError(t, s.write(ctx, []Record{{Job: succeeded("job-1", "alice", result, at),
		Turn: turn("job-1", "alice", "s1", "the secret prompt", "the secret answer", at)}})[0])
	require.NoError(t, s.write(ctx, []Record{{Job: succeeded("job-2", "bob", `{"n":2}`, at),
		Turn: turn("job-2", "bob", "", "bob's prompt", "bob's answer", at)}})[0])

	// At rest: ciphertexts, nothing of the text.
	doc := raw(t, s, "jobs", "job-1")
	require.Contains(t, doc["result"], crypt.Prefix+"k1:")
	require.NotContains(t, doc["result"], "secret")
	conv := raw(t, s, "conversations", ConversationID("alice", "s1", ""))
	msgs := conv["messages"].(bson.A)
	require.Len(t, msgs, 4)
	require.Equal(t, "legacy prompt", field(msgs[0], "content"), "old plaintext stays as it was")
	require.Contains(t, field(msgs[2], "content"), crypt.Prefix+"k1:")
	require.NotContains(t, field(msgs[2], "content"), "secret")

	// Read back: plaintext, old records included.
	j, err := s.Job(ctx, "job-1")
	require.NoError(t, err)
	require.JSONEq(t, result, string(j.Result))
	j, err = s.Job(ctx, "job-plain")
	require.NoError(t, err)
	require.JSONEq(t, `{"text":"legacy answer"}`, string(j.Result))
	convs, err := s.Conversations(ctx, bson.D{{Key: "session_id", Value: "s1"}})
	require.NoError(t, err)
	require.Len(t, convs, 1)
	var texts []string
	for _, m := range convs[0].Messages {
		texts = append(texts, m.Content)
	}
	require.Equal(t, []string{"legacy prompt", "legacy answer", "the secret prompt", "the secret answer"}, texts)

	// A ciphertext moved to another record does not decrypt there.
	_, err = s.db.Collection("jobs").UpdateOne(ctx, bson.D{{Key: "_id", Value: "job-2"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "result", Value: doc["result"]}}}})
	require.NoError(t, err)
	_, err = s.Job(ctx, "job-2")
	require.ErrorIs(t, err, crypt.ErrAuth)
	_, err = s.db.Collection("jobs").DeleteOne(ctx, bson.D{{Key: "_id", Value: "job-2"}})
	require.NoError(t, err)

	// Without the key, a ciphertext is an error, never returned as is.
	_, err = plain.Job(ctx, "job-1")
	require.Error(t, err)
	require.Equal(t, claudeq.KindInternal, claudeq.ErrorKind(err))

	// Rotation: the new key first, the old one after it; everything is
	// re-encrypted under the new key (legacy plaintext too) and stays
	// readable; then the old key can go.
	rotated := New(db)
	rotated.SetKeyRing(ring(t, "k2:"+k2+",k1:"+k1))
	var batches int
	st, err := rotated.ReencryptAll(ctx, 1, func(ReencryptStats) { batches++ })
	require.NoError(t, err)
	require.Equal(t, ReencryptStats{JobsScanned: 2, JobsReencrypted: 2, ConversationsScanned: 2, MessagesReencrypted: 6}, st)
	require.GreaterOrEqual(t, batches, 4, "one flush per batch of one record")
	again, err := rotated.ReencryptAll(ctx, 10, nil)
	require.NoError(t, err)
	require.Zero(t, again.JobsReencrypted+again.MessagesReencrypted, "idempotent")
	require.Contains(t, raw(t, s, "jobs", "job-1")["result"], crypt.Prefix+"k2:")
	require.Contains(t, raw(t, s, "jobs", "job-plain")["result"], crypt.Prefix+"k2:")
	for _, m := range raw(t, s, "conversations", ConversationID("alice", "s1", ""))["messages"].(bson.A) {
		require.Contains(t, field(m, "content"), crypt.Prefix+"k2:")
	}
	onlyNew := New(db)
	onlyNew.SetKeyRing(ring(t, "k2:"+k2))
	j, err = onlyNew.Job(ctx, "job-1")
	require.NoError(t, err)
	require.JSONEq(t, result, string(j.Result))
	convs, err = onlyNew.Conversations(ctx, bson.D{{Key: "session_id", Value: "s1"}})
	require.NoError(t, err)
	require.Equal(t, "the secret answer", convs[0].Messages[3].Content)
	require.Equal(t, "legacy prompt", convs[0].Messages[0].Content)
}
