package audit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Anchor is a checkpoint of the chain: the Seq and Hash of a record at the
// time it was taken. Anchors live in the audit_anchors collection (_id =
// Seq, so two schedulers anchoring the same head store it once).
type Anchor struct {
	Seq  int64     `bson:"_id" json:"seq"`
	Hash string    `bson:"hash" json:"hash"`
	Time time.Time `bson:"time" json:"time"`
}

// Report is the outcome of Verify.
type Report struct {
	// Checked is how many records were read and found intact, in order
	// from 1.
	Checked int64 `json:"checked"`
	// FirstBroken is the Seq of the first record that is missing or does
	// not check out; nil when the chain is intact.
	FirstBroken *int64 `json:"first_broken,omitempty"`
	// Reason says what is wrong with it; empty when intact.
	Reason string `json:"reason,omitempty"`
	// Head is the last Seq stored; Anchors how many anchors were checked.
	Head    int64 `json:"head"`
	Anchors int   `json:"anchors"`
}

// OK reports whether the chain is intact.
func (r Report) OK() bool { return r.FirstBroken == nil }

func (r *Report) broken(seq int64, format string, args ...any) {
	r.FirstBroken = &seq
	r.Reason = fmt.Sprintf(format, args...)
}

// checkpoint is something outside a record that vouches for the record at
// Seq: an anchor or the Redis head.
type checkpoint struct {
	Head
	what   string
	anchor bool
}

// Verify walks the whole chain from record 1 and reports the first record
// that is missing (a gap in Seq, or a tail shorter than an anchor or the
// Redis head), altered (its hash does not match its fields), out of place
// (its PrevHash is not the previous record's hash) or rewritten (its hash
// differs from an anchor's or the Redis head's). An error means the check
// could not run (store unavailable), not that the chain is broken.
//
// It is safe to run while writers append: it checks the records that
// existed when it started.
func (c *Chain) Verify(ctx context.Context) (Report, error) {
	// Read what vouches for the chain before the chain itself: everything it
	// names was stored before it was written.
	cps, err := c.checkpoints(ctx, 0)
	if err != nil {
		return Report{}, err
	}
	head, err := c.storedHead(ctx)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Head: head.Seq}
	err = c.check(ctx, 0, genesis, head.Seq, cps, &rep)
	return rep, err
}

// check walks records from+1 … to and then checks that no checkpoint lies
// beyond the last record read.
func (c *Chain) check(ctx context.Context, from int64, prevHash string, to int64, cps []checkpoint, rep *Report) error {
	last, err := c.walk(ctx, from, prevHash, to, cps, rep)
	if err != nil || !rep.OK() {
		return err
	}
	for _, cp := range cps {
		if cp.Seq > last {
			rep.broken(last+1, "records %d to %d are missing: the log ends at %d but %s is at %d", last+1, cp.Seq, last, cp.what, cp.Seq)
			return nil
		}
	}
	return nil
}

// checkpoints returns the anchors with Seq > after, and the Redis head, in
// Seq order.
func (c *Chain) checkpoints(ctx context.Context, after int64) ([]checkpoint, error) {
	var out []checkpoint
	if c.cfg.Redis != nil {
		s, err := c.cfg.Redis.Get(ctx, c.cfg.Prefix+"head").Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			// Verification still checks every record and anchor; only the
			// tail check against Redis is lost.
			c.warn("audit: verify without the Redis head", err)
		default:
			if h, ok := parseHead(s); ok && h.Seq > after {
				out = append(out, checkpoint{Head: h, what: "the chain head in Redis"})
			}
		}
	}
	cur, err := c.anchors.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("audit: read anchors: %w", err)
	}
	var anchors []Anchor
	if err := cur.All(ctx, &anchors); err != nil {
		return nil, fmt.Errorf("audit: read anchors: %w", err)
	}
	for _, a := range anchors {
		out = append(out, checkpoint{Head: Head{a.Seq, a.Hash}, anchor: true,
			what: fmt.Sprintf("the anchor of %s", a.Time.UTC().Format(time.RFC3339))})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// walk checks records from+1 … to, the first linking to prevHash, and the
// checkpoints among them. It returns the last Seq it read (from when none),
// and counts into rep.
func (c *Chain) walk(ctx context.Context, from int64, prevHash string, to int64, cps []checkpoint, rep *Report) (int64, error) {
	cur, err := c.records.Find(ctx,
		bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: from}, {Key: "$lte", Value: to}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(1000))
	if err != nil {
		return from, fmt.Errorf("audit: read records: %w", err)
	}
	defer cur.Close(ctx)
	want, prev := from+1, prevHash
	for cur.Next(ctx) {
		var r Record
		if err := cur.Decode(&r); err != nil {
			var seq struct {
				Seq int64 `bson:"_id"`
			}
			_ = cur.Decode(&seq)
			rep.broken(seq.Seq, "record %d cannot be decoded: %v", seq.Seq, err)
			return want - 1, nil
		}
		switch {
		case r.Seq != want:
			if want == r.Seq-1 {
				rep.broken(want, "record %d is missing", want)
			} else {
				rep.broken(want, "records %d to %d are missing", want, r.Seq-1)
			}
			return want - 1, nil
		case r.PrevHash != prev:
			rep.broken(r.Seq, "record %d does not follow record %d: its prev_hash is not that record's hash (records were reordered, replaced or rewritten)", r.Seq, r.Seq-1)
			return want - 1, nil
		case c.h.sum(&r, r.PrevHash) != r.Hash:
			rep.broken(r.Seq, "record %d was altered: its hash does not match its contents", r.Seq)
			return want - 1, nil
		}
		for len(cps) > 0 && cps[0].Seq <= r.Seq {
			if cps[0].Seq == r.Seq && cps[0].Hash != r.Hash {
				rep.broken(r.Seq, "record %d does not match %s: the chain up to it was rewritten", r.Seq, cps[0].what)
				return want - 1, nil
			}
			if cps[0].anchor {
				rep.Anchors++
			}
			cps = cps[1:]
		}
		rep.Checked++
		prev = r.Hash
		want++
	}
	if err := cur.Err(); err != nil {
		return want - 1, fmt.Errorf("audit: read records: %w", err)
	}
	return want - 1, nil
}

// Anchor checks the records written since the last anchor and, if they are
// intact, stores a new anchor at the current head, which it returns (Seq 0
// for an empty chain, when nothing is stored). If the records since the last
// anchor do not check out, it stores nothing and returns an error naming the
// first broken record: an anchor never vouches for a broken chain. Log the
// returned anchor too: a copy outside MongoDB makes rewriting detectable even
// by someone who can rewrite both collections.
//
// Run it periodically from the scheduler; concurrent runs are harmless.
func (c *Chain) Anchor(ctx context.Context) (Anchor, error) {
	var prev Anchor
	err := c.anchors.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}})).Decode(&prev)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return Anchor{}, fmt.Errorf("audit: read last anchor: %w", err)
	}
	if prev.Seq == 0 {
		prev.Hash = genesis
	}
	cps, err := c.checkpoints(ctx, prev.Seq)
	if err != nil {
		return Anchor{}, err
	}
	head, err := c.storedHead(ctx)
	if err != nil {
		return Anchor{}, err
	}
	if head.Seq < prev.Seq {
		return Anchor{}, fmt.Errorf("audit: chain is broken at %d: the log ends at %d but the last anchor is at %d", head.Seq+1, head.Seq, prev.Seq)
	}
	// Check the segment since the previous anchor, linking to it.
	if prev.Seq > 0 {
		var start Record
		if err := c.records.FindOne(ctx, bson.D{{Key: "_id", Value: prev.Seq}}).Decode(&start); err != nil {
			if errors.Is(err, mongo.ErrNoDocuments) {
				return Anchor{}, fmt.Errorf("audit: chain is broken at %d: the anchored record is missing", prev.Seq)
			}
			return Anchor{}, fmt.Errorf("audit: read anchored record: %w", err)
		}
		if start.Hash != prev.Hash {
			return Anchor{}, fmt.Errorf("audit: chain is broken at %d: record %d does not match its anchor", prev.Seq, prev.Seq)
		}
	}
	var rep Report
	if err := c.check(ctx, prev.Seq, prev.Hash, head.Seq, cps, &rep); err != nil {
		return Anchor{}, err
	}
	if !rep.OK() {
		return Anchor{}, fmt.Errorf("audit: chain is broken at %d: %s", *rep.FirstBroken, rep.Reason)
	}
	if head.Seq == 0 {
		return Anchor{}, nil
	}
	if head.Seq == prev.Seq {
		return prev, nil
	}
	a := Anchor{Seq: head.Seq, Hash: head.Hash, Time: c.cfg.Now().UTC().Truncate(time.Millisecond)}
	if _, err := c.anchors.InsertOne(ctx, a); err != nil && !mongo.IsDuplicateKeyError(err) {
		return Anchor{}, fmt.Errorf("audit: store anchor: %w", err)
	}
	return a, nil
}
