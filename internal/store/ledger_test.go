package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/mongotest"
)

func newLedgerStore(t *testing.T) *Store {
	t.Helper()
	s := New(mongotest.DB(t))
	require.NoError(t, s.EnsureLedgerIndexes(context.Background()))
	return s
}

func finishedJob(id, user string, at time.Time) *claudeq.Job {
	return &claudeq.Job{ID: id, Kind: claudeq.JobChat, Status: claudeq.StatusSucceeded, UserID: user, Model: "claude-sonnet-5-5",
		CreatedAt: at, FinishedAt: &at}
}

func TestLedgerBillsOnce(t *testing.T) {
	t.Parallel()
	s := newLedgerStore(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)
	c := s.NewCommitter(CommitterOptions{MaxBatch: 8, Flushers: 4})
	defer c.Close()
	entry := func(cost int64) *LedgerEntry {
		return &LedgerEntry{JobID: "job-1", UserID: "alice", Department: "eng", Model: "claude-sonnet-5-5",
			Usage: claudeq.Usage{InputTokens: 100, OutputTokens: 50}, CostMicros: cost, Day: "2026-11-05", At: at}
	}
	// A job re-run by at-least-once delivery commits its record again, possibly
	// concurrently and with a different cost: the first bill stands.
	require.NoError(t, c.Commit(ctx, Record{Job: finishedJob("job-1", "alice", at), Ledger: entry(700)}))
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Commit(ctx, Record{Job: finishedJob("job-1", "alice", at), Ledger: entry(999)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sum, err := s.LedgerSum(ctx, LedgerFilter{})
	require.NoError(t, err)
	require.Equal(t, LedgerTotals{CostMicros: 700, Tokens: 150, Requests: 1}, sum)
	e, err := s.LedgerEntry(ctx, "job-1")
	require.NoError(t, err)
	require.Equal(t, "job-1", e.ID)
	require.Equal(t, int64(150), e.Tokens)
	require.Equal(t, at, e.At)
	_, err = s.LedgerEntry(ctx, "job-2")
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))
}

func TestLedgerFailureKeepsJobOpen(t *testing.T) {
	t.Parallel()
	s := newLedgerStore(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)
	// An entry that cannot be written (no user) fails the record, and the job
	// record — the terminal mark — is not written, so the job runs again.
	errs := s.write(ctx, []Record{
		{Job: finishedJob("bad", "alice", at), Ledger: &LedgerEntry{JobID: "bad", Day: "2026-11-05"},
			Turn: &Turn{JobID: "bad", UserID: "alice", At: at}},
		{Job: finishedJob("good", "alice", at), Ledger: &LedgerEntry{JobID: "good", UserID: "alice", Day: "2026-11-05", CostMicros: 5}},
	})
	require.Error(t, errs[0])
	require.NoError(t, errs[1])
	_, err := s.Job(ctx, "bad")
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))
	convs, err := s.Conversations(ctx, bson.D{})
	require.NoError(t, err)
	require.Empty(t, convs)
	_, err = s.Job(ctx, "good")
	require.NoError(t, err)
}

func TestLedgerQueries(t *testing.T) {
	t.Parallel()
	s := newLedgerStore(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 4, 10, 0, 0, 0, time.UTC)
	entries := []LedgerEntry{
		{JobID: "a", UserID: "alice", Department: "eng", KeyID: "k1", Model: "claude-sonnet-5-5", Usage: claudeq.Usage{InputTokens: 100, OutputTokens: 10}, CostMicros: 1000, Day: "2026-11-04"},
		{JobID: "b", UserID: "alice", Department: "eng", KeyID: "k1", Model: "claude-haiku-5-5", Usage: claudeq.Usage{InputTokens: 200, CacheReadInputTokens: 50}, CostMicros: 30, Day: "2026-11-04", Batch: true},
		{JobID: "c", UserID: "alice", Department: "eng", KeyID: "k2", Model: "claude-sonnet-5-5", Usage: claudeq.Usage{OutputTokens: 1000}, CostMicros: 10_000, Day: "2026-11-05"},
		{JobID: "d", UserID: "bob", Department: "eng", Model: "claude-opus-5-5", Usage: claudeq.Usage{InputTokens: 1, OutputTokens: 1}, CostMicros: 24, Day: "2026-11-05"},
		{JobID: "e", UserID: "carol", Department: "ops", Model: "claude-sonnet-5-5", Usage: claudeq.Usage{InputTokens: 5000}, CostMicros: 10_000, Day: "2026-11-06"},
		{JobID: "f", UserID: "bob", Department: "ops", Model: "claude-opus-9", PricedAs: "claude-sonnet-5-5", Usage: claudeq.Usage{InputTokens: 10}, CostMicros: 20, Day: "2026-11-05"},
	}
	recs := make([]Record, len(entries))
	for i := range entries {
		entries[i].At = at.Add(time.Duration(i) * time.Hour)
		recs[i] = Record{Job: finishedJob(entries[i].JobID, entries[i].UserID, at), Ledger: &entries[i]}
	}
	for _, err := range s.write(ctx, recs) {
		require.NoError(t, err)
	}

	sums := []struct {
		name string
		f    LedgerFilter
		want LedgerTotals
	}{
		{name: "everything", f: LedgerFilter{}, want: LedgerTotals{CostMicros: 21_074, Tokens: 110 + 250 + 1000 + 2 + 5000 + 10, Requests: 6}},
		{name: "one user", f: LedgerFilter{UserID: "alice"}, want: LedgerTotals{CostMicros: 11_030, Tokens: 1360, Requests: 3}},
		{name: "one user, one day", f: LedgerFilter{UserID: "alice", From: "2026-11-05", To: "2026-11-05"}, want: LedgerTotals{CostMicros: 10_000, Tokens: 1000, Requests: 1}},
		{name: "department", f: LedgerFilter{Department: "ops"}, want: LedgerTotals{CostMicros: 10_020, Tokens: 5010, Requests: 2}},
		{name: "key", f: LedgerFilter{KeyID: "k1"}, want: LedgerTotals{CostMicros: 1030, Tokens: 360, Requests: 2}},
		{name: "model", f: LedgerFilter{Model: "claude-sonnet-5-5"}, want: LedgerTotals{CostMicros: 21_000, Tokens: 6110, Requests: 3}},
		{name: "from", f: LedgerFilter{From: "2026-11-05"}, want: LedgerTotals{CostMicros: 20_044, Tokens: 6012, Requests: 4}},
		{name: "to", f: LedgerFilter{To: "2026-11-04"}, want: LedgerTotals{CostMicros: 1030, Tokens: 360, Requests: 2}},
		{name: "nothing", f: LedgerFilter{UserID: "dave"}, want: LedgerTotals{}},
	}
	for _, tt := range sums {
		t.Run("sum/"+tt.name, func(t *testing.T) {
			got, err := s.LedgerSum(ctx, tt.f)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	daily := []struct {
		name string
		f    LedgerFilter
		want []DaySum
	}{
		{name: "all days", f: LedgerFilter{}, want: []DaySum{
			{Day: "2026-11-04", LedgerTotals: LedgerTotals{CostMicros: 1030, Tokens: 360, Requests: 2}},
			{Day: "2026-11-05", LedgerTotals: LedgerTotals{CostMicros: 10_044, Tokens: 1012, Requests: 3}},
			{Day: "2026-11-06", LedgerTotals: LedgerTotals{CostMicros: 10_000, Tokens: 5000, Requests: 1}},
		}},
		{name: "department eng", f: LedgerFilter{Department: "eng", From: "2026-11-05"}, want: []DaySum{
			{Day: "2026-11-05", LedgerTotals: LedgerTotals{CostMicros: 10_024, Tokens: 1002, Requests: 2}},
		}},
		{name: "none", f: LedgerFilter{From: "2027-01-01"}, want: []DaySum{}},
	}
	for _, tt := range daily {
		t.Run("daily/"+tt.name, func(t *testing.T) {
			got, err := s.LedgerDaily(ctx, tt.f)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	byModel, err := s.LedgerByModel(ctx, LedgerFilter{UserID: "bob"})
	require.NoError(t, err)
	require.Equal(t, []ModelSum{
		{Model: "claude-opus-5-5", LedgerTotals: LedgerTotals{CostMicros: 24, Tokens: 2, Requests: 1}},
		{Model: "claude-opus-9", LedgerTotals: LedgerTotals{CostMicros: 20, Tokens: 10, Requests: 1}},
	}, byModel)

	spent, err := s.LedgerSpentByUser(ctx, "2026-11-05")
	require.NoError(t, err)
	require.Equal(t, []UserSpent{
		{UserID: "alice", Department: "eng", CostMicros: 10_000},
		{UserID: "bob", Department: "eng", CostMicros: 24},
		{UserID: "bob", Department: "ops", CostMicros: 20},
	}, spent)
}
