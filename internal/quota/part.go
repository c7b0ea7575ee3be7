package quota

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// One reservation for many calls: a Message Batch reserves the worst case
// of all its requests at once, under the batch id (Reserve), and each
// request then closes its own part of it as it finishes (SettlePart,
// ReleasePart). Release of the whole reservation, once every request is
// done, gives back what the parts left (rounding, or requests that never
// ran).
//
// Each part is closed at most once: the part ids already closed are kept in
// a set beside the reservation record (<p>:res:<id>:parts), which expires
// with it: a part sets its expiry to the record's, and Settle and Release,
// which give the record a new one, give the set the same (the record's
// field p says it has one).

func (q *Quota) partsKey(resID string) string { return q.resKey(resID) + ":parts" }

// partScript closes one part of a reservation.
//
// KEYS[1] reservation record, KEYS[2] its parts set. ARGV[1] part id,
// ARGV[2] the part's reserved amount, ARGV[3] actual cost to book as spent
// ("0" for a release).
//
// While the reservation is held, up to ARGV[2] (never more than is left)
// leaves reserved and the record's amount; actual joins spent either way,
// even after the whole reservation was released: the call happened, and the
// counters must agree with the ledger. Returns "missing" (no record: no-op),
// "done" (part closed before: no-op) or the record's state.
var partScript = redis.NewScript(luaHGetAll + `
local rec = hgetall(KEYS[1])
local st = rec.state
if not st then return 'missing' end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 'done' end
if not rec.p then redis.call('HSET', KEYS[1], 'p', '1') end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
local take = 0
if st == 'held' then
  take = math.min(tonumber(ARGV[2]), tonumber(rec.amount or '0'))
  if take < 0 then take = 0 end
end
local takes = string.format('%d', take)
if take > 0 then redis.call('HINCRBY', KEYS[1], 'amount', '-' .. takes) end
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], 'actual', ARGV[3]) end
for i = 1, tonumber(rec.n or '0') do
  local k = rec['k' .. i]
  if k then
    local lost = take == 0
    if take > 0 and redis.call('HINCRBY', k, 'r', '-' .. takes) < 0 then
      redis.call('HSET', k, 'r', 0)
      lost = true
    end
    if ARGV[3] ~= '0' then redis.call('HINCRBY', k, 's', ARGV[3]) end
    if lost then redis.call('EXPIREAT', k, rec['e' .. i]) end
  end
end
return st
`)

// SettlePart books the actual cost of one part (partID, e.g. a batch
// request's job id) of reservation resID: up to reserved leaves the reserved
// counters and actual joins the spent ones, on the reservation's day. A
// part is settled or released once; later calls are no-ops. Redis errors
// are KindUnavailable; retry.
func (q *Quota) SettlePart(ctx context.Context, resID, partID string, reserved, actual claudeq.Micros) error {
	return q.part(ctx, "quota.SettlePart", resID, partID, reserved, actual)
}

// ReleasePart gives back the reserved amount of one part of reservation
// resID (its call failed or never ran). A part is settled or released once.
func (q *Quota) ReleasePart(ctx context.Context, resID, partID string, reserved claudeq.Micros) error {
	return q.part(ctx, "quota.ReleasePart", resID, partID, reserved, 0)
}

func (q *Quota) part(ctx context.Context, op, resID, partID string, reserved, actual claudeq.Micros) error {
	if resID == "" || partID == "" || reserved < 0 || actual < 0 {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "a part needs a reservation id, a part id and non-negative amounts"}
	}
	err := partScript.Run(ctx, q.rdb, []string{q.resKey(resID), q.partsKey(resID)}, partID, int64(reserved), int64(actual)).Err()
	if err != nil {
		return unavailable(op, err)
	}
	return nil
}

// countManyScript counts n requests against a daily limit, all or none.
//
// KEYS[1] the counter. ARGV[1] limit, ARGV[2] expiry (unix s), ARGV[3] n.
// Returns {1, count} when counted, {0, count} when they do not fit.
var countManyScript = redis.NewScript(`
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v + tonumber(ARGV[3]) > tonumber(ARGV[1]) then return {0, v} end
v = redis.call('INCRBY', KEYS[1], ARGV[3])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return {1, v}
`)

// CountRequests is CountRequest for n requests at once (a Message Batch):
// all of them are counted, or none when they do not fit in what is left of
// today's limit (KindQuotaExceeded wrapping *RequestsExceeded).
func (q *Quota) CountRequests(ctx context.Context, keyID string, limit, n int) error {
	const op = "quota.CountRequests"
	if limit <= 0 || n <= 0 {
		return nil
	}
	now := q.opts.Now()
	resets := q.ResetsAt(now)
	res, err := countManyScript.Run(ctx, q.rdb, []string{q.reqKey(q.Day(now), keyID)}, limit, resets.Add(q.opts.Retention).Unix(), n).Slice()
	if err != nil {
		return unavailable(op, err)
	}
	if ok, _ := res[0].(int64); ok == 1 {
		return nil
	}
	used, _ := res[1].(int64)
	ex := &RequestsExceeded{KeyID: keyID, Limit: limit, ResetsAt: resets}
	return &claudeq.Error{Kind: claudeq.KindQuotaExceeded, Op: op, Err: ex, RetryAfter: resets.Sub(now),
		Msg: fmt.Sprintf("this API key may send %d requests a day: %d are left today and this batch has %d; resets at %s",
			limit, max(0, int64(limit)-used), n, resets.Format(time.RFC3339))}
}
