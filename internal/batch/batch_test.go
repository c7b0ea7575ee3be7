package batch

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redistest"
)

func newBatch(id string, n int, invalid int64) (*claudeq.Batch, []Item) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	b := &claudeq.Batch{ID: id, UserID: "alice", Department: "eng", KeyID: "k1", Status: claudeq.BatchInProgress,
		Requests: int64(n) + invalid, ReservedMicros: int64(n) * 10, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
		Counts: claudeq.BatchCounts{Processing: int64(n), Errored: invalid}}
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{CustomID: fmt.Sprintf("r%d", i), Reserved: 10}
	}
	return b, items
}

func TestMarkCountsEachRequestOnceAndEndsTheBatch(t *testing.T) {
	t.Parallel()
	s := New(redistest.New(t).Client(t), 0)
	ctx := context.Background()
	b, items := newBatch("msgbatch_t1", 2500, 3)
	require.NoError(t, s.Create(ctx, b, items))

	got, err := s.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, b.Counts, got.Counts)
	require.Equal(t, claudeq.BatchInProgress, got.Status)
	require.Equal(t, b.CreatedAt, got.CreatedAt)
	require.Equal(t, "k1", got.KeyID)

	// Four workers race over every request; each is counted once, and
	// exactly one call sees the batch end.
	var mu sync.Mutex
	counts := map[Mark]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, it := range items {
				r := claudeq.ResultSucceeded
				if i%10 == 0 {
					r = claudeq.ResultErrored
				}
				m, err := s.Mark(ctx, b.ID, it.CustomID, r, time.Now())
				require.NoError(t, err)
				mu.Lock()
				counts[m]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, counts[MarkedLast])
	require.Equal(t, 2499, counts[Marked])
	got, err = s.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, claudeq.BatchEnded, got.Status)
	require.NotNil(t, got.EndedAt)
	require.Equal(t, claudeq.BatchCounts{Succeeded: 2250, Errored: 250 + 3}, got.Counts)
	require.Equal(t, got.Requests, got.Counts.Total())
	left, _, err := s.Pending(ctx, b.ID, 0, 100)
	require.NoError(t, err)
	require.Empty(t, left)
}

func TestCancelAndPending(t *testing.T) {
	t.Parallel()
	s := New(redistest.New(t).Client(t), 0)
	ctx := context.Background()
	b, items := newBatch("msgbatch_t2", 50, 0)
	require.NoError(t, s.Create(ctx, b, items))

	_, err := s.Cancel(ctx, b.ID, "mallory", time.Now())
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err), "someone else's batch is not found")
	prev, err := s.Cancel(ctx, b.ID, "alice", time.Now())
	require.NoError(t, err)
	require.Equal(t, claudeq.BatchInProgress, prev)
	prev, err = s.Cancel(ctx, b.ID, "alice", time.Now())
	require.NoError(t, err)
	require.Equal(t, claudeq.BatchCanceling, prev)
	got, err := s.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, claudeq.BatchCanceling, got.Status)
	require.NotNil(t, got.CancelInitiatedAt)

	seen := map[string]int64{}
	var cur uint64
	for {
		page, next, err := s.Pending(ctx, b.ID, cur, 7)
		require.NoError(t, err)
		for _, it := range page {
			seen[it.CustomID] = it.Reserved
		}
		if cur = next; cur == 0 {
			break
		}
	}
	require.Len(t, seen, 50)
	require.Equal(t, int64(10), seen["r7"])

	ids, err := s.Active(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{b.ID}, ids)
	active, err := s.IsActive(ctx, b.ID)
	require.NoError(t, err)
	require.True(t, active)
	require.NoError(t, s.Retire(ctx, b.ID))
	active, err = s.IsActive(ctx, b.ID)
	require.NoError(t, err)
	require.False(t, active)
	ids, err = s.Active(ctx)
	require.NoError(t, err)
	require.Empty(t, ids)
	require.NoError(t, s.Delete(ctx, b.ID))
	_, err = s.Get(ctx, b.ID)
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))
}
