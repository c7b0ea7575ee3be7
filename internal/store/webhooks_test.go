package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/mongotest"
	"github.com/claudeq/claudeq/internal/store"
)

func TestWebhookAttempts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := store.New(mongotest.DB(t))
	require.NoError(t, s.EnsureWebhookIndexes(ctx))
	require.NoError(t, s.EnsureWebhookIndexes(ctx), "idempotent")

	t0 := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	attempts := []store.Attempt{
		// Inserted out of order: Attempts sorts by time.
		{ID: "a3", DeliveryID: "msg_1", JobID: "job_1", UserID: "u1", URL: "https://h.example/x", Attempt: 3, At: t0.Add(5*time.Minute + 5*time.Second), Status: 200, LatencyMS: 12},
		{ID: "a1", DeliveryID: "msg_1", JobID: "job_1", UserID: "u1", URL: "https://h.example/x", Attempt: 1, At: t0, Status: 0, LatencyMS: 15000, Error: "timeout"},
		{ID: "a2", DeliveryID: "msg_1", JobID: "job_1", UserID: "u1", URL: "https://h.example/x", Attempt: 2, At: t0.Add(5 * time.Second), Status: 503, LatencyMS: 40, Error: "receiver answered 503"},
		{ID: "b1", DeliveryID: "msg_2", JobID: "job_2", UserID: "u2", URL: "https://i.example/y", Attempt: 1, At: t0.Add(time.Second), Status: 204, LatencyMS: 7},
	}
	for _, a := range attempts {
		require.NoError(t, s.RecordAttempt(ctx, a))
	}
	// A recorder retried after a lost reply inserts the same attempt again.
	require.NoError(t, s.RecordAttempt(ctx, attempts[0]))

	tests := []struct {
		name  string
		jobID string
		want  []string
	}{
		{name: "sorted by time", jobID: "job_1", want: []string{"a1", "a2", "a3"}},
		{name: "other job", jobID: "job_2", want: []string{"b1"}},
		{name: "unknown job", jobID: "job_3", want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := s.Attempts(t.Context(), tt.jobID)
			require.NoError(t, err)
			ids := []string{}
			for _, a := range got {
				ids = append(ids, a.ID)
			}
			require.Equal(t, tt.want, ids)
		})
	}

	got, err := s.Attempts(ctx, "job_1")
	require.NoError(t, err)
	require.Equal(t, attempts[1], got[0], "every field round-trips")
	require.Equal(t, time.UTC, got[0].At.Location())
}

func TestDeleteAttemptsBefore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := store.New(mongotest.DB(t))
	require.NoError(t, s.EnsureWebhookIndexes(ctx))
	t0 := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	for i := range 4 {
		require.NoError(t, s.RecordAttempt(ctx, store.Attempt{
			ID: fmt.Sprint("a", i), DeliveryID: "msg_1", JobID: "job_1", Attempt: i + 1, At: t0.Add(time.Duration(i) * time.Hour),
		}))
	}
	n, err := s.DeleteAttemptsBefore(ctx, t0.Add(90*time.Minute))
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	got, err := s.Attempts(ctx, "job_1")
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "a2", got[0].ID)
}
