// Package batch keeps the live state of Message Batches in Redis: per batch
// a small hash (owner, status, timestamps and the request counts) and the
// set of its requests still processing, plus one sorted set of the batches
// not yet retired. Every change of a request's state is one Lua call that
// moves it out of the processing set and counts it, so a count changes
// exactly once per request however often a worker re-runs it, and the last
// request to finish ends the batch.
//
// Keys (the {id} hash tag keeps a batch's keys in one Redis Cluster slot):
//
//	cq:batch:{<id>}          hash: u user, d department, k key id, wh webhook URL,
//	                         n requests, res reserved micro-USD, st status,
//	                         ca created, ea expires, ena ended, cia cancel
//	                         initiated (Unix ms), and the counts processing,
//	                         succeeded, errored, canceled, expired
//	cq:batch:{<id>}:pending  hash: custom id → reserved micro-USD, the
//	                         requests still processing
//	cq:batches:active        zset: batch id → expires at (ms), the batches
//	                         the sweeper still looks after
//
// A batch's keys expire Options.Retention after it expires; the store has
// the durable copy. State is safe for concurrent use.
package batch

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// State is the Redis side of batches.
type State struct {
	rdb       redis.UniversalClient
	retention time.Duration
}

// New returns the batch state over rdb; a batch's keys live retention
// after the batch expires (default 29 days, how long results are kept).
func New(rdb redis.UniversalClient, retention time.Duration) *State {
	if retention <= 0 {
		retention = 29 * 24 * time.Hour
	}
	return &State{rdb: rdb, retention: retention}
}

func hashKey(id string) string    { return "cq:batch:{" + id + "}" }
func pendingKey(id string) string { return "cq:batch:{" + id + "}:pending" }

const activeKey = "cq:batches:active"

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func unms(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func unavailable(op string, err error) error {
	return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "batch state unavailable, try again", Err: err, RetryAfter: 2 * time.Second}
}

// Item is a request of a batch that is still processing.
type Item struct {
	CustomID string
	Reserved int64 // its part of the batch's reservation, micro-USD
}

// Create records a new batch b whose processing requests are items (the
// others are counted in b.Counts already), in one MULTI. A batch created
// with no request processing is ended at once (b.Status says so).
func (s *State) Create(ctx context.Context, b *claudeq.Batch, items []Item) error {
	h, pk := hashKey(b.ID), pendingKey(b.ID)
	exp := b.ExpiresAt.Add(s.retention)
	fields := []any{
		"u", b.UserID, "d", b.Department, "k", b.KeyID, "wh", b.WebhookURL,
		"n", b.Requests, "res", b.ReservedMicros, "st", string(b.Status),
		"ca", ms(b.CreatedAt), "ea", ms(b.ExpiresAt),
		"processing", b.Counts.Processing, "succeeded", b.Counts.Succeeded, "errored", b.Counts.Errored,
		"canceled", b.Counts.Canceled, "expired", b.Counts.Expired,
	}
	if b.EndedAt != nil {
		fields = append(fields, "ena", ms(*b.EndedAt))
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, h, fields...)
		p.ExpireAt(ctx, h, exp)
		for i := 0; i < len(items); i += 1000 {
			chunk := items[i:min(i+1000, len(items))]
			args := make([]any, 0, 2*len(chunk))
			for _, it := range chunk {
				args = append(args, it.CustomID, it.Reserved)
			}
			p.HSet(ctx, pk, args...)
		}
		if len(items) > 0 {
			p.ExpireAt(ctx, pk, exp)
		}
		p.ZAdd(ctx, activeKey, redis.Z{Score: float64(b.ExpiresAt.UnixMilli()), Member: b.ID})
		return nil
	})
	if err != nil {
		return unavailable("batch.Create", err)
	}
	return nil
}

// Get returns the live state of batch id, or a KindNotFound error when
// Redis has none (it may still be in the store).
func (s *State) Get(ctx context.Context, id string) (*claudeq.Batch, error) {
	m, err := s.rdb.HGetAll(ctx, hashKey(id)).Result()
	if err != nil {
		return nil, unavailable("batch.Get", err)
	}
	if m["st"] == "" {
		return nil, claudeq.Errorf(claudeq.KindNotFound, "batch %s not found", id)
	}
	return fromHash(id, m), nil
}

// GetMany returns the live state of each of ids (nil where Redis has none),
// in one round trip.
func (s *State) GetMany(ctx context.Context, ids []string) ([]*claudeq.Batch, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, hashKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, unavailable("batch.GetMany", err)
	}
	out := make([]*claudeq.Batch, len(ids))
	for i, c := range cmds {
		if m := c.Val(); m["st"] != "" {
			out[i] = fromHash(ids[i], m)
		}
	}
	return out, nil
}

func fromHash(id string, m map[string]string) *claudeq.Batch {
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	b := &claudeq.Batch{
		ID: id, UserID: m["u"], Department: m["d"], KeyID: m["k"], WebhookURL: m["wh"],
		Status: claudeq.BatchStatus(m["st"]), Requests: n("n"), ReservedMicros: n("res"),
		CreatedAt: unms(m["ca"]), ExpiresAt: unms(m["ea"]),
		Counts: claudeq.BatchCounts{Processing: n("processing"), Succeeded: n("succeeded"), Errored: n("errored"),
			Canceled: n("canceled"), Expired: n("expired")},
	}
	if t := unms(m["ena"]); !t.IsZero() {
		b.EndedAt = &t
	}
	if t := unms(m["cia"]); !t.IsZero() {
		b.CancelInitiatedAt = &t
	}
	return b
}

// markScript moves one request out of the processing set and counts it.
//
// KEYS[1] batch hash, KEYS[2] pending hash. ARGV[1] custom id, ARGV[2] the
// count to add to (succeeded, errored, canceled, expired), ARGV[3] now (ms).
// Returns 0 when the request was counted before (or the batch is gone), 1
// when counted, 2 when counted and it was the last: the batch has ended.
var markScript = redis.NewScript(`
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
local left = redis.call('HINCRBY', KEYS[1], 'processing', -1)
if left <= 0 then
  redis.call('HSET', KEYS[1], 'st', 'ended')
  redis.call('HSETNX', KEYS[1], 'ena', ARGV[3])
  return 2
end
return 1
`)

// Mark is the outcome of marking one request.
type Mark int

// The outcomes of Mark.
const (
	MarkedBefore Mark = iota // counted by an earlier call: nothing changed
	Marked                   // counted now
	MarkedLast               // counted now, and the batch has ended
)

// Mark counts request customID of batch id as result r (once: a repeated
// call changes nothing) and ends the batch when it was the last one
// processing.
func (s *State) Mark(ctx context.Context, id, customID string, r claudeq.BatchResultType, now time.Time) (Mark, error) {
	switch r {
	case claudeq.ResultSucceeded, claudeq.ResultErrored, claudeq.ResultCanceled, claudeq.ResultExpired:
	default:
		return 0, claudeq.Errorf(claudeq.KindInternal, "batch.Mark: unknown result %q", r)
	}
	v, err := markScript.Run(ctx, s.rdb, []string{hashKey(id), pendingKey(id)}, customID, string(r), ms(now)).Int()
	if err != nil {
		return 0, unavailable("batch.Mark", err)
	}
	return Mark(v), nil
}

// cancelScript starts the cancel of an in-progress batch.
//
// KEYS[1] batch hash. ARGV[1] owner, ARGV[2] now (ms). Returns "" when the
// batch is unknown or someone else's, else the status before.
var cancelScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'st', 'u')
if not v[1] or v[2] ~= ARGV[1] then return '' end
if v[1] == 'in_progress' then redis.call('HSET', KEYS[1], 'st', 'canceling', 'cia', ARGV[2]) end
return v[1]
`)

// Cancel moves batch id of userID from in_progress to canceling and returns
// its status before the call; a canceling or ended batch is not changed.
// KindNotFound when Redis has no such batch of userID.
func (s *State) Cancel(ctx context.Context, id, userID string, now time.Time) (claudeq.BatchStatus, error) {
	v, err := cancelScript.Run(ctx, s.rdb, []string{hashKey(id)}, userID, ms(now)).Text()
	if err != nil {
		return "", unavailable("batch.Cancel", err)
	}
	if v == "" {
		return "", claudeq.Errorf(claudeq.KindNotFound, "batch %s not found", id)
	}
	return claudeq.BatchStatus(v), nil
}

// Pending returns up to about count requests of batch id still processing,
// from cursor (0 to start); the next cursor is 0 when the scan is done. A
// request may be returned more than once; one that stays processing for
// the whole scan is returned at least once.
func (s *State) Pending(ctx context.Context, id string, cursor uint64, count int64) ([]Item, uint64, error) {
	kv, next, err := s.rdb.HScan(ctx, pendingKey(id), cursor, "", count).Result()
	if err != nil {
		return nil, 0, unavailable("batch.Pending", err)
	}
	out := make([]Item, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		r, _ := strconv.ParseInt(kv[i+1], 10, 64)
		out = append(out, Item{CustomID: kv[i], Reserved: r})
	}
	return out, next, nil
}

// Active returns the ids of the batches not yet retired: running, or ended
// but not yet finalized.
func (s *State) Active(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.ZRange(ctx, activeKey, 0, -1).Result()
	if err != nil {
		return nil, unavailable("batch.Active", err)
	}
	return ids, nil
}

// IsActive reports whether batch id is in the active set: not yet
// retired.
func (s *State) IsActive(ctx context.Context, id string) (bool, error) {
	_, err := s.rdb.ZScore(ctx, activeKey, id).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, unavailable("batch.IsActive", err)
	}
	return true, nil
}

// Retire removes batch id from the active set: everything its end needed
// is done.
func (s *State) Retire(ctx context.Context, id string) error {
	if err := s.rdb.ZRem(ctx, activeKey, id).Err(); err != nil {
		return unavailable("batch.Retire", err)
	}
	return nil
}

// Delete removes batch id's live state.
func (s *State) Delete(ctx context.Context, id string) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, hashKey(id), pendingKey(id))
		p.ZRem(ctx, activeKey, id)
		return nil
	})
	if err != nil {
		return unavailable("batch.Delete", err)
	}
	return nil
}
