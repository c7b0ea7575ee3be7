package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// The bills of interactive requests (POST /v1/messages) are ledger entries
// without a job record, written through a committer that lingers.
func TestLedgerOnlyRecordsThroughALingeringCommitter(t *testing.T) {
	t.Parallel()
	s := newLedgerStore(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)
	c := s.NewCommitter(CommitterOptions{Flushers: 2, Linger: 30 * time.Millisecond})
	entry := func(i int) *LedgerEntry {
		id := fmt.Sprintf("req_%03d", i)
		return &LedgerEntry{ID: id, JobID: id, UserID: "alice", Department: "eng", Model: "claude-sonnet-5-5", Interactive: true,
			Usage: claudeq.Usage{InputTokens: 10, OutputTokens: 5}, CostMicros: 7, Day: "2026-11-05", At: at}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() { errs <- c.Commit(ctx, Record{Ledger: entry(i)}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// The same request billed again (a retried write) is a no-op.
	require.NoError(t, c.Commit(ctx, Record{Ledger: entry(0)}))
	c.Close()

	tot, err := s.LedgerSum(ctx, LedgerFilter{UserID: "alice"})
	require.NoError(t, err)
	require.Equal(t, LedgerTotals{CostMicros: 280, Tokens: 600, Requests: 40}, tot)
	n, err := s.db.Collection("jobs").CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.Zero(t, n, "no job record for an interactive request")
	e, err := s.LedgerEntry(ctx, "req_007")
	require.NoError(t, err)
	require.True(t, e.Interactive)
}
