package quota

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// TestPartsCloseOneReservationPieceByPiece: a batch reserves its worst case
// once; each request settles or releases its own part exactly once, the
// final Release gives back the rest, and a part settled after that still
// books its cost.
func TestPartsCloseOneReservationPieceByPiece(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{UserDaily: 1000, DepartmentDaily: 5000})
	ctx := context.Background()
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "msgbatch_a", UserID: "u1", Department: "eng", Amount: 900}))

	// Only 100 left for the user while the batch holds 900.
	err := b.q.Reserve(ctx, Reservation{JobID: "job_x", UserID: "u1", Department: "eng", Amount: 101})
	require.Equal(t, claudeq.KindQuotaExceeded, claudeq.ErrorKind(err))

	require.NoError(t, b.q.SettlePart(ctx, "msgbatch_a", "msgbatch_a:r1", 300, 120))
	require.NoError(t, b.q.SettlePart(ctx, "msgbatch_a", "msgbatch_a:r1", 300, 120), "a repeated settle is a no-op")
	require.NoError(t, b.q.ReleasePart(ctx, "msgbatch_a", "msgbatch_a:r1", 300), "a release after the settle is a no-op")
	st := b.status(t, "u1", "eng")
	require.Equal(t, claudeq.Micros(120), st["user/daily"].Spent)
	require.Equal(t, claudeq.Micros(600), st["user/daily"].Reserved)
	require.Equal(t, claudeq.Micros(600), st["department/daily"].Reserved)
	require.Equal(t, claudeq.Micros(600), st["total/daily"].Reserved)
	require.Equal(t, claudeq.Micros(600), st["total/monthly"].Reserved)

	require.NoError(t, b.q.ReleasePart(ctx, "msgbatch_a", "msgbatch_a:r2", 300))
	require.NoError(t, b.q.ReleasePart(ctx, "msgbatch_a", "msgbatch_a:r2", 300))
	st = b.status(t, "u1", "eng")
	require.Equal(t, claudeq.Micros(300), st["user/daily"].Reserved)

	// A part above what is left takes only what is left.
	require.NoError(t, b.q.SettlePart(ctx, "msgbatch_a", "msgbatch_a:r3", 500, 10))
	st = b.status(t, "u1", "eng")
	require.Equal(t, claudeq.Micros(0), st["user/daily"].Reserved)
	require.Equal(t, claudeq.Micros(130), st["user/daily"].Spent)

	require.NoError(t, b.q.Release(ctx, "msgbatch_a"))
	// The set of closed parts lives as long as the record, which the
	// release gave a new expiry: a part repeated later is still a no-op.
	recTTL, err := b.rdb.TTL(ctx, b.q.resKey("msgbatch_a")).Result()
	require.NoError(t, err)
	partsTTL, err := b.rdb.TTL(ctx, b.q.partsKey("msgbatch_a")).Result()
	require.NoError(t, err)
	require.InDelta(t, recTTL.Seconds(), partsTTL.Seconds(), 1, "parts set %v, record %v", partsTTL, recTTL)
	// After the whole release, a late part books its cost and nothing else.
	require.NoError(t, b.q.SettlePart(ctx, "msgbatch_a", "msgbatch_a:r4", 100, 7))
	st = b.status(t, "u1", "eng")
	require.Equal(t, claudeq.Micros(0), st["user/daily"].Reserved)
	require.Equal(t, claudeq.Micros(137), st["user/daily"].Spent)
	require.Equal(t, claudeq.Micros(137), st["total/monthly"].Spent)

	h, err := b.q.Hold(ctx, "msgbatch_a")
	require.NoError(t, err)
	require.Equal(t, claudeq.Micros(137), h.Actual)

	// Parts of an unknown reservation are no-ops.
	require.NoError(t, b.q.SettlePart(ctx, "msgbatch_none", "p", 1, 1))
	require.Error(t, b.q.SettlePart(ctx, "", "p", 1, 1))
}

// TestPartsConcurrentNeverDoubleCount: many workers closing the same parts
// at once book each part exactly once.
func TestPartsConcurrentNeverDoubleCount(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{UserDaily: 1_000_000})
	ctx := context.Background()
	const n = 200
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "msgbatch_c", UserID: "u1", Amount: n * 10}))
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("msgbatch_c:r%d", i)
				if i%2 == 0 {
					_ = b.q.SettlePart(ctx, "msgbatch_c", id, 10, 3)
				} else {
					_ = b.q.ReleasePart(ctx, "msgbatch_c", id, 10)
				}
			}
		}()
	}
	wg.Wait()
	st := b.status(t, "u1", "")
	require.Equal(t, claudeq.Micros(0), st["user/daily"].Reserved)
	require.Equal(t, claudeq.Micros(n/2*3), st["user/daily"].Spent)
}

func TestCountRequestsAllOrNone(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	require.NoError(t, b.q.CountRequests(ctx, "k1", 10, 6))
	err := b.q.CountRequests(ctx, "k1", 10, 5)
	require.Equal(t, claudeq.KindQuotaExceeded, claudeq.ErrorKind(err))
	require.Contains(t, claudeq.ErrorMessage(err), "4 are left today and this batch has 5")
	var ex *RequestsExceeded
	require.True(t, errors.As(err, &ex))
	require.NoError(t, b.q.CountRequests(ctx, "k1", 10, 4))
	require.Error(t, b.q.CountRequest(ctx, "k1", 10), "the day's 10 are used up")
	require.NoError(t, b.q.CountRequests(ctx, "k1", 0, 100), "0 = unlimited")
}
