package quota

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redisbatch"
)

// SettleIn is Settle through b: the call joins b's next pipeline and done
// (if set) gets its error, on b's goroutine.
func (q *Quota) SettleIn(b *redisbatch.Batcher, jobID string, actual claudeq.Micros, done func(error)) {
	const op = "quota.Settle"
	if jobID == "" || actual < 0 {
		call(done, &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "settle needs a job id and a non-negative cost"})
		return
	}
	b.Go(redisbatch.Call{Script: settleScript, Keys: []string{q.resKey(jobID), q.pendingKey(), q.partsKey(jobID)},
		Args: []any{int64(actual), jobID, int64(q.opts.DoneTTL / time.Second)}, Done: result(op, done)})
}

// ReleaseIn is Release through b, as SettleIn is Settle.
func (q *Quota) ReleaseIn(b *redisbatch.Batcher, jobID string, done func(error)) {
	const op = "quota.Release"
	if jobID == "" {
		call(done, &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "release needs a job id"})
		return
	}
	b.Go(redisbatch.Call{Script: releaseScript, Keys: []string{q.resKey(jobID), q.pendingKey(), q.partsKey(jobID)},
		Args: []any{jobID, int64(q.opts.DoneTTL / time.Second)}, Done: result(op, done)})
}

func call(done func(error), err error) {
	if done != nil {
		done(err)
	}
}

func result(op string, done func(error)) func(*redis.Cmd) {
	return func(cmd *redis.Cmd) {
		if err := cmd.Err(); err != nil && err != redis.Nil {
			call(done, unavailable(op, err))
			return
		}
		call(done, nil)
	}
}
