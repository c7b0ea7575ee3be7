package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/mongotest"
)

// TestBatchItemsLiveInTheirBatchsCollection: a batch request's record goes
// through the same group commit as jobs, into its batch's own collection,
// once (a re-run's second commit is a no-op), encrypted at rest like a
// job's, and is found by its job id and by scanning its batch.
func TestBatchItemsLiveInTheirBatchsCollection(t *testing.T) {
	t.Parallel()
	db := mongotest.DB(t)
	s := New(db)
	s.SetKeyRing(ring(t, "k1:"+crypt.GenerateKey()))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	b := &claudeq.Batch{ID: "msgbatch_s1", UserID: "alice", Status: claudeq.BatchInProgress, Requests: 3,
		Counts: claudeq.BatchCounts{Processing: 3}, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	require.NoError(t, s.CreateBatch(ctx, b))
	require.Equal(t, claudeq.KindConflict, claudeq.ErrorKind(s.CreateBatch(ctx, b)))

	c := s.NewCommitter(CommitterOptions{MaxBatch: 4})
	defer c.Close()
	item := func(cid string, st claudeq.Status) *claudeq.Job {
		return &claudeq.Job{ID: claudeq.BatchItemID(b.ID, cid), Kind: claudeq.JobBatch, Status: st, UserID: "alice",
			BatchID: b.ID, CustomID: cid, Result: []byte(`{"type":"message","content":[{"type":"text","text":"secret answer"}]}`),
			CreatedAt: now, FinishedAt: &now}
	}
	var wg sync.WaitGroup
	for range 3 { // a re-run commits again, concurrently
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, c.Commit(ctx, Record{Job: item("a-1", claudeq.StatusSucceeded)}))
			require.NoError(t, c.Commit(ctx, Record{Job: &claudeq.Job{ID: "job_plain", Status: claudeq.StatusSucceeded, UserID: "alice", CreatedAt: now, FinishedAt: &now}}))
		}()
	}
	wg.Wait()
	require.NoError(t, s.SaveJobs(ctx, []*claudeq.Job{item("b_2", claudeq.StatusCanceled), item("c", claudeq.StatusFailed)}))
	require.NoError(t, s.SaveJobs(ctx, []*claudeq.Job{item("c", claudeq.StatusFailed)}), "idempotent")

	n, err := db.Collection(BatchItemsCollection(b.ID)).CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	n, err = db.Collection("jobs").CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "only the plain job is in jobs")
	var raw bson.M
	require.NoError(t, db.Collection(BatchItemsCollection(b.ID)).FindOne(ctx, bson.D{{Key: "_id", Value: "msgbatch_s1:a-1"}}).Decode(&raw))
	require.NotContains(t, raw["result"], "secret answer", "encrypted at rest")

	j, err := s.Job(ctx, "msgbatch_s1:a-1")
	require.NoError(t, err)
	require.Equal(t, "a-1", j.CustomID)
	require.Contains(t, string(j.Result), "secret answer")

	got := map[string]claudeq.Status{}
	require.NoError(t, s.BatchItems(ctx, b.ID, 2, func(j *claudeq.Job) error { got[j.CustomID] = j.Status; return nil }))
	require.Equal(t, map[string]claudeq.Status{"a-1": claudeq.StatusSucceeded, "b_2": claudeq.StatusCanceled, "c": claudeq.StatusFailed}, got)

	ended := now.Add(time.Minute)
	b.Status, b.EndedAt, b.Counts = claudeq.BatchEnded, &ended, claudeq.BatchCounts{Succeeded: 1, Canceled: 1, Errored: 1}
	require.NoError(t, s.SaveBatch(ctx, b))
	other := &claudeq.Batch{ID: "msgbatch_s2", UserID: "alice", Status: claudeq.BatchInProgress, CreatedAt: now.Add(time.Second), ExpiresAt: now.Add(24 * time.Hour)}
	require.NoError(t, s.CreateBatch(ctx, other))
	list, err := s.Batches(ctx, "alice")
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "msgbatch_s2", list[0].ID, "newest first")
	require.Equal(t, claudeq.BatchEnded, list[1].Status)
	require.Equal(t, ended, *list[1].EndedAt)
	old, err := s.BatchesEndedBefore(ctx, ended.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"msgbatch_s1"}, old)

	require.NoError(t, s.DeleteBatch(ctx, b.ID))
	_, err = s.Batch(ctx, b.ID)
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))
	_, err = s.Job(ctx, "msgbatch_s1:a-1")
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))
}
