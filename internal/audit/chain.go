package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// Config configures a Chain.
type Config struct {
	// DB holds the collections "audit" and "audit_anchors". Required.
	DB *mongo.Database
	// Redis, if set, carries the append lease and the chain head (keys
	// Prefix+"lease" and Prefix+"head"); nil makes every append optimistic
	// (see the package documentation). Use the queue Redis (noeviction).
	Redis redis.UniversalClient
	// Prefix starts the Redis keys. Default "claudeq:audit:".
	Prefix string
	// Key, if set, makes hashes HMAC-SHA-256 under it, so that a chain
	// cannot be rewritten without it. CLAUDEQ_AUDIT_HMAC_KEY (base64, 32
	// bytes or more); default none (plain SHA-256). Every process that
	// writes or verifies must use the same key; changing it breaks
	// verification of older records.
	Key []byte
	// LeaseTTL bounds how long one writer may hold the append lease; it
	// should exceed a batch insert comfortably. Default 5s.
	LeaseTTL time.Duration
	// Logger gets warnings (lease fallbacks). Default: discard.
	Logger *slog.Logger
	// Now is the clock for record and anchor times. Default time.Now.
	Now func() time.Time
}

// Chain is the audit log in MongoDB. It appends, anchors and verifies. It
// is safe for concurrent use, and any number of Chains in any number of
// processes may append to the same database at once.
type Chain struct {
	cfg     Config
	records *mongo.Collection
	anchors *mongo.Collection
	h       hasher
	lastLog atomic.Int64
	// redisDownUntil (unix nanos) skips the lease for a while after Redis
	// failed, so that a Redis outage costs one failed call per
	// redisRetryAfter, not one per batch.
	redisDownUntil atomic.Int64
}

const redisRetryAfter = 5 * time.Second

// New returns a Chain over cfg.DB. Call EnsureIndexes once at start.
func New(cfg Config) (*Chain, error) {
	if cfg.DB == nil {
		return nil, errors.New("audit: Config.DB is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "claudeq:audit:"
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if n := len(cfg.Key); n > 0 && n < 16 {
		return nil, fmt.Errorf("audit: HMAC key is %d bytes; use at least 32", n)
	}
	return &Chain{
		cfg:     cfg,
		records: cfg.DB.Collection("audit"),
		anchors: cfg.DB.Collection("audit_anchors"),
		h:       hasher{key: cfg.Key},
	}, nil
}

// EnsureIndexes creates the unique index on EventID. Idempotent.
func (c *Chain) EnsureIndexes(ctx context.Context) error {
	_, err := c.records.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "eid", Value: 1}}, Options: options.Index().SetUnique(true).SetName("eid_unique"),
	})
	if err != nil {
		return fmt.Errorf("audit: create index: %w", err)
	}
	return nil
}

// Head is a position in the chain: the last record's Seq and Hash (0 and the
// genesis hash for an empty chain).
type Head struct {
	Seq  int64
	Hash string
}

func (h Head) String() string { return strconv.FormatInt(h.Seq, 10) + ":" + h.Hash }

func parseHead(s string) (Head, bool) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 0 || len(hash) != 64 {
		return Head{}, false
	}
	return Head{Seq: n, Hash: hash}, true
}

// storedHead reads the last record from MongoDB.
func (c *Chain) storedHead(ctx context.Context) (Head, error) {
	var r struct {
		Seq  int64  `bson:"_id"`
		Hash string `bson:"hash"`
	}
	err := c.records.FindOne(ctx, bson.D{},
		options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}}).SetProjection(bson.D{{Key: "hash", Value: 1}})).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Head{Hash: genesis}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("audit: read chain head: %w", err)
	}
	return Head{Seq: r.Seq, Hash: r.Hash}, nil
}

// leaseScript takes the lease if it is free and returns {1, head}, else
// {0, lease pttl}.
var leaseScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return {1, redis.call('GET', KEYS[2]) or ''}
end
return {0, redis.call('PTTL', KEYS[1])}`)

// releaseScript moves the head forward (never back) and drops the lease if
// it is still ours.
var releaseScript = redis.NewScript(`
if ARGV[2] ~= '' then
	local cur = redis.call('GET', KEYS[2])
	local seq = -1
	if cur then seq = tonumber(string.match(cur, '^(%d+):')) or -1 end
	if tonumber(ARGV[2]) > seq then redis.call('SET', KEYS[2], ARGV[3]) end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`)

// lease takes the append lease, waiting while another writer holds it. It
// returns the head Redis knows (ok=false if none), and a release function
// that records the new head. On a Redis error it returns err and the caller
// goes on without the lease.
func (c *Chain) lease(ctx context.Context) (head Head, ok bool, release func(Head), err error) {
	keys := []string{c.cfg.Prefix + "lease", c.cfg.Prefix + "head"}
	token := newEventID()
	wait := time.Millisecond
	for {
		v, err := leaseScript.Run(ctx, c.cfg.Redis, keys, token, c.cfg.LeaseTTL.Milliseconds()).Slice()
		if err != nil {
			return Head{}, false, nil, err
		}
		if len(v) == 2 && v[0] == int64(1) {
			s, _ := v[1].(string)
			head, ok = parseHead(s)
			release = func(h Head) {
				seq, val := "", ""
				if h.Seq > 0 {
					seq, val = strconv.FormatInt(h.Seq, 10), h.String()
				}
				// Not under ctx: the lease must be released even when the
				// batch ran out of time.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				defer cancel()
				if err := releaseScript.Run(rctx, c.cfg.Redis, keys, token, seq, val).Err(); err != nil {
					c.warn("audit: release the append lease", err)
				}
			}
			return head, ok, release, nil
		}
		// Someone else is appending: wait a little (they hold it for one
		// batch), with jitter so waiters do not stampede.
		d := wait + rand.N(wait)
		select {
		case <-ctx.Done():
			return Head{}, false, nil, ctx.Err()
		case <-time.After(d):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

func (c *Chain) warn(msg string, err error) {
	now := time.Now().UnixNano()
	if last := c.lastLog.Load(); now-last > int64(10*time.Second) && c.lastLog.CompareAndSwap(last, now) {
		c.cfg.Logger.Warn(msg, "err", err)
	}
}

// Append adds records to the chain and returns once they are stored, in
// order, or with the error that stopped it (some may then be stored; a retry
// with the same records does not store them twice, since they keep their
// EventIDs). It is the synchronous path for rare events, such as an admin
// action from the CLI; request paths use a Writer. recs are normalized and
// get their chain fields set in place.
func (c *Chain) Append(ctx context.Context, recs ...*Record) error {
	now := c.cfg.Now()
	for _, r := range recs {
		normalize(r, now)
	}
	_, err := c.commit(ctx, recs)
	return err
}

// maxAttempts bounds how often one commit recomputes its batch after losing
// a race; the Writer retries the rest later.
const maxAttempts = 32

// commit appends recs (normalized) in order and returns those it did not
// store. See the package documentation for the protocol.
func (c *Chain) commit(ctx context.Context, recs []*Record) ([]*Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	var head Head
	known := false
	var release func(Head)
	if c.cfg.Redis != nil && time.Now().UnixNano() >= c.redisDownUntil.Load() {
		h, ok, rel, err := c.lease(ctx)
		switch {
		case err == nil:
			head, known, release = h, ok, rel
		case ctx.Err() != nil:
			return recs, ctx.Err()
		default:
			c.redisDownUntil.Store(time.Now().Add(redisRetryAfter).UnixNano())
			c.warn("audit: Redis unavailable, appending without the lease", err)
		}
	}
	rest, last, err := c.appendRecords(ctx, head, known, recs)
	if release != nil {
		release(last) // a zero last leaves the Redis head as it is
	}
	return rest, err
}

// appendRecords inserts recs on head (read from MongoDB if !known), racing
// other writers as the package documentation describes. It returns the
// records not stored and the last head it stored.
func (c *Chain) appendRecords(ctx context.Context, head Head, known bool, recs []*Record) (rest []*Record, last Head, err error) {
	for attempt := 0; ; attempt++ {
		if !known {
			if head, err = c.storedHead(ctx); err != nil {
				return recs, last, err
			}
			known = true
		}
		n, ierr := c.insert(ctx, head, recs)
		if n > 0 {
			head = Head{Seq: recs[n-1].Seq, Hash: recs[n-1].Hash}
			last = head
			recs = recs[n:]
		}
		if ierr == nil {
			return nil, last, nil
		}
		if !mongo.IsDuplicateKeyError(ierr) {
			return recs, last, fmt.Errorf("audit: insert: %w", ierr)
		}
		if attempt >= maxAttempts {
			return recs, last, fmt.Errorf("audit: insert: gave up after %d races for the chain head: %w", attempt, ierr)
		}
		// Another writer took our sequence number, or a record of ours is
		// already stored (an earlier attempt whose outcome we did not see).
		if recs, err = c.dropStored(ctx, recs); err != nil {
			return recs, last, err
		}
		if len(recs) == 0 {
			return nil, last, nil
		}
		known = false
	}
}

// insert chains recs on head and inserts them in order; it returns how many
// were stored before an error.
func (c *Chain) insert(ctx context.Context, head Head, recs []*Record) (int, error) {
	docs := make([]bson.Raw, len(recs))
	prev := head
	for i, r := range recs {
		r.Seq = prev.Seq + 1
		r.PrevHash = prev.Hash
		r.Hash = c.h.sum(r, r.PrevHash)
		prev = Head{Seq: r.Seq, Hash: r.Hash}
		doc, err := r.document()
		if err != nil {
			return 0, err
		}
		docs[i] = doc
	}
	for done := 0; done < len(docs); done += insertChunk {
		chunk := docs[done:min(done+insertChunk, len(docs))]
		if n, err := c.insertDocs(ctx, chunk); err != nil {
			return done + n, err
		}
	}
	return len(recs), nil
}

// insertDocs inserts docs, in order, with one insert command and returns
// how many were stored before the first error: a mongo.WriteException for a
// document the server refused (IsDuplicateKeyError tells a lost race),
// else the command's error (none stored, as far as we know).
//
// It is the insert command itself rather than InsertMany, because the
// documents are already encoded and have their _id: InsertMany would
// encode each again and decode its _id, which was a third of the audit
// log's CPU. The write concern is majority, whatever the client's. What
// InsertMany adds that this does not is one transparent
// retry of a retryable error; a failed batch is retried by the Writer, and
// a batch that was stored although the reply was lost is recognised then
// (see appendRecords).
func (c *Chain) insertDocs(ctx context.Context, docs []bson.Raw) (int, error) {
	aidx, arr := bsoncore.AppendArrayStart(nil)
	for i, d := range docs {
		arr = bsoncore.AppendDocumentElement(arr, strconv.Itoa(i), d)
	}
	arr, err := bsoncore.AppendArrayEnd(arr, aidx)
	if err != nil {
		return 0, err
	}
	cmd := bson.D{
		{Key: "insert", Value: c.records.Name()},
		{Key: "documents", Value: bson.RawValue{Type: bson.TypeArray, Value: arr}},
		{Key: "ordered", Value: true},
		// Whatever the URI says: an acknowledged audit record must
		// survive a failover.
		{Key: "writeConcern", Value: bson.D{{Key: "w", Value: "majority"}}},
	}
	var reply struct {
		N           int `bson:"n"`
		WriteErrors []struct {
			Index   int    `bson:"index"`
			Code    int    `bson:"code"`
			Message string `bson:"errmsg"`
		} `bson:"writeErrors"`
		WriteConcernError *struct {
			Code    int    `bson:"code"`
			Message string `bson:"errmsg"`
		} `bson:"writeConcernError"`
	}
	if err := c.records.Database().RunCommand(ctx, cmd).Decode(&reply); err != nil {
		return 0, err
	}
	if len(reply.WriteErrors) > 0 {
		we := reply.WriteErrors[0]
		return we.Index, mongo.WriteException{WriteErrors: mongo.WriteErrors{{Index: we.Index, Code: we.Code, Message: we.Message}}}
	}
	if wce := reply.WriteConcernError; wce != nil {
		// Stored, but not as durably as asked: report it, so that the
		// batch is retried; its records are then found stored.
		return 0, fmt.Errorf("write concern: %s (code %d)", wce.Message, wce.Code)
	}
	return len(docs), nil
}

// insertChunk caps the records of one insert command. FerretDB splits an
// insert into batches of 100 and, after a write error in one, goes on with
// the next even when the insert is ordered (MongoDB stops at the first
// error): a duplicate key on a stale head then stored later records past a
// gap in the chain (TestStaleRedisHeadLargeBatch). Within one of its
// batches it stops at the first error, as it should.
const insertChunk = 100

// dropStored removes from recs those whose EventID is already in the chain.
func (c *Chain) dropStored(ctx context.Context, recs []*Record) ([]*Record, error) {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.EventID
	}
	cur, err := c.records.Find(ctx, bson.D{{Key: "eid", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "eid", Value: 1}}))
	if err != nil {
		return recs, fmt.Errorf("audit: look up stored events: %w", err)
	}
	var found []struct {
		EventID string `bson:"eid"`
	}
	if err := cur.All(ctx, &found); err != nil {
		return recs, fmt.Errorf("audit: look up stored events: %w", err)
	}
	if len(found) == 0 {
		return recs, nil
	}
	stored := make(map[string]bool, len(found))
	for _, f := range found {
		stored[f.EventID] = true
	}
	out := recs[:0:0]
	for _, r := range recs {
		if !stored[r.EventID] {
			out = append(out, r)
		}
	}
	return out, nil
}
