package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// LedgerEntry is the bill of one call: one entry per job, written through
// Record.Ledger in the same group commit as the job record and before it.
// The ledger is the durable truth behind the Redis quota counters, which
// can be rebuilt from it (LedgerSpentByUser).
type LedgerEntry struct {
	// ID is the _id: the job id (the default when empty), so that a job is
	// billed at most once however often it runs.
	ID         string `bson:"_id" json:"id"`
	JobID      string `bson:"job_id" json:"job_id"`
	UserID     string `bson:"user_id" json:"user_id"`
	Department string `bson:"department" json:"department"`
	KeyID      string `bson:"key_id,omitempty" json:"key_id,omitempty"`
	// Model is the model that answered.
	Model string `bson:"model" json:"model"`
	// PricedAs is the price-table entry applied when it is not Model's own
	// (a dated id priced as its base, an unknown id priced by fallback);
	// PricedBy is "fallback" for the latter (pricing.ByFallback).
	PricedAs string        `bson:"priced_as,omitempty" json:"priced_as,omitempty"`
	PricedBy string        `bson:"priced_by,omitempty" json:"priced_by,omitempty"`
	Usage    claudeq.Usage `bson:"usage" json:"usage"`
	// Tokens is Usage.Total(), stored so that one $sum can add it; filled
	// in on insert when zero.
	Tokens     int64 `bson:"tokens" json:"tokens"`
	CostMicros int64 `bson:"cost_micros" json:"cost_micros"`
	Batch      bool  `bson:"batch" json:"batch"`
	// Interactive marks the bill of a POST /v1/messages request, whose ID
	// and JobID are the request id (req_…).
	Interactive bool `bson:"interactive,omitempty" json:"interactive,omitempty"`
	// Day is the quota day of the job's reservation (YYYY-MM-DD in the
	// quota time zone), the day its cost counts against.
	Day string    `bson:"day" json:"day"`
	At  time.Time `bson:"at" json:"at"`
}

const ledgerCollection = "ledger"

func (s *Store) ledger() *mongo.Collection { return s.db.Collection(ledgerCollection) }

// ledgerDoc returns the document to insert for e, or an error for an entry
// that must not be written (an empty _id would "bill" every later job as a
// duplicate).
func ledgerDoc(e *LedgerEntry) (*LedgerEntry, error) {
	c := *e
	if c.ID == "" {
		c.ID = c.JobID
	}
	if c.ID == "" || c.UserID == "" || c.Day == "" {
		return nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: "store.write", Msg: "job store write failed",
			Err: fmt.Errorf("ledger entry needs a job id, a user id and a day: %+v", *e)}
	}
	if c.Tokens == 0 {
		c.Tokens = c.Usage.Total()
	}
	c.At = c.At.UTC()
	return &c, nil
}

// EnsureLedgerIndexes creates the ledger's indexes: (user_id, day),
// (department, day) and (day). Idempotent.
func (s *Store) EnsureLedgerIndexes(ctx context.Context) error {
	// One CreateOne per index: FerretDB v1.24 panics on a CreateMany whose
	// indexes exist already.
	for _, keys := range []bson.D{
		{{Key: "user_id", Value: 1}, {Key: "day", Value: 1}},
		{{Key: "department", Value: 1}, {Key: "day", Value: 1}},
		{{Key: "day", Value: 1}},
	} {
		if _, err := s.ledger().Indexes().CreateOne(ctx, mongo.IndexModel{Keys: keys}); err != nil {
			return err
		}
	}
	return nil
}

// SaveLedger writes one ledger entry directly (not through a Committer),
// idempotently: an entry whose _id exists counts as written.
func (s *Store) SaveLedger(ctx context.Context, e *LedgerEntry) error {
	return s.write(ctx, []Record{{Ledger: e}})[0]
}

// LedgerEntry returns the ledger entry of job jobID, or KindNotFound (the
// reconciler settles a stale reservation of a terminal job to its cost).
func (s *Store) LedgerEntry(ctx context.Context, jobID string) (*LedgerEntry, error) {
	var e LedgerEntry
	err := s.ledger().FindOne(ctx, bson.D{{Key: "_id", Value: jobID}}).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, claudeq.Errorf(claudeq.KindNotFound, "no ledger entry for job %s", jobID)
	}
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.LedgerEntry", Msg: "ledger unavailable", Err: err}
	}
	e.At = e.At.UTC()
	return &e, nil
}

// LedgerFilter selects ledger entries; empty fields select everything.
type LedgerFilter struct {
	UserID     string
	Department string
	KeyID      string
	Model      string
	From, To   string // quota days, YYYY-MM-DD, both inclusive
}

func (f LedgerFilter) match() bson.D {
	m := bson.D{}
	for _, c := range []struct{ field, v string }{
		{"user_id", f.UserID}, {"department", f.Department}, {"key_id", f.KeyID}, {"model", f.Model},
	} {
		if c.v != "" {
			m = append(m, bson.E{Key: c.field, Value: c.v})
		}
	}
	if f.From != "" || f.To != "" {
		r := bson.D{}
		if f.From != "" {
			r = append(r, bson.E{Key: "$gte", Value: f.From})
		}
		if f.To != "" {
			r = append(r, bson.E{Key: "$lte", Value: f.To})
		}
		m = append(m, bson.E{Key: "day", Value: r})
	}
	return m
}

// LedgerTotals are sums over ledger entries.
type LedgerTotals struct {
	CostMicros int64 `json:"cost_micros"`
	Tokens     int64 `json:"tokens"`
	Requests   int64 `json:"requests"`
}

// DaySum is one day of LedgerDaily.
type DaySum struct {
	Day string `json:"day"`
	LedgerTotals
}

// ModelSum is one model of LedgerByModel.
type ModelSum struct {
	Model string `json:"model"`
	LedgerTotals
}

// UserSpent is what one user spent within one department on a day.
type UserSpent struct {
	UserID     string
	Department string
	CostMicros int64
}

// The three sums of LedgerTotals. FerretDB computes only the first
// accumulator of a $group (it silently returns 0 for the others), so each
// sum is its own aggregation.
var ledgerSums = []struct {
	expr any
	set  func(t *LedgerTotals, v int64)
}{
	{"$cost_micros", func(t *LedgerTotals, v int64) { t.CostMicros = v }},
	{"$tokens", func(t *LedgerTotals, v int64) { t.Tokens = v }},
	{1, func(t *LedgerTotals, v int64) { t.Requests = v }},
}

// sumBy runs one aggregation: entries matching match, grouped by group
// (a field path, a document of field paths, or nil for all), with a single
// $sum of expr. It returns each group's raw _id and sum.
func (s *Store) sumBy(ctx context.Context, op string, match bson.D, group, expr any) ([]bson.RawValue, []int64, error) {
	pipe := mongo.Pipeline{
		{{Key: "$match", Value: match}},
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: group}, {Key: "v", Value: bson.D{{Key: "$sum", Value: expr}}}}}},
	}
	cur, err := s.ledger().Aggregate(ctx, pipe)
	if err != nil {
		return nil, nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "ledger unavailable", Err: err}
	}
	defer cur.Close(ctx)
	var ids []bson.RawValue
	var sums []int64
	for cur.Next(ctx) {
		var row struct {
			ID bson.RawValue `bson:"_id"`
			V  bson.RawValue `bson:"v"`
		}
		if err := cur.Decode(&row); err != nil {
			return nil, nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: op, Err: err}
		}
		v, err := rawInt(row.V)
		if err != nil {
			return nil, nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: op, Err: err}
		}
		ids, sums = append(ids, row.ID), append(sums, v)
	}
	if err := cur.Err(); err != nil {
		return nil, nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "ledger unavailable", Err: err}
	}
	return ids, sums, nil
}

// rawInt reads a $sum result, which a server may return as int32, int64
// or an integral double.
func rawInt(v bson.RawValue) (int64, error) {
	switch v.Type {
	case bson.TypeInt32:
		return int64(v.Int32()), nil
	case bson.TypeInt64:
		return v.Int64(), nil
	case bson.TypeDouble:
		f := v.Double()
		if f != float64(int64(f)) {
			return 0, fmt.Errorf("ledger sum %v is not an integer", f)
		}
		return int64(f), nil
	case bson.TypeNull, 0:
		return 0, nil
	}
	return 0, fmt.Errorf("ledger sum of type %s", v.Type)
}

// totalsBy runs the three sums grouped by a string field path ("" for all)
// and merges them per group value.
func (s *Store) totalsBy(ctx context.Context, op string, f LedgerFilter, field string) (map[string]*LedgerTotals, error) {
	var group any
	if field != "" {
		group = "$" + field
	}
	out := map[string]*LedgerTotals{}
	for _, sum := range ledgerSums {
		ids, vals, err := s.sumBy(ctx, op, f.match(), group, sum.expr)
		if err != nil {
			return nil, err
		}
		for i, id := range ids {
			k, _ := id.StringValueOK()
			t := out[k]
			if t == nil {
				t = &LedgerTotals{}
				out[k] = t
			}
			sum.set(t, vals[i])
		}
	}
	return out, nil
}

// LedgerSum returns the cost, tokens and number of entries selected by f.
func (s *Store) LedgerSum(ctx context.Context, f LedgerFilter) (LedgerTotals, error) {
	m, err := s.totalsBy(ctx, "store.LedgerSum", f, "")
	if err != nil {
		return LedgerTotals{}, err
	}
	var t LedgerTotals
	for _, v := range m { // at most one group
		t = *v
	}
	return t, nil
}

// LedgerDaily returns the totals per quota day of the entries selected by
// f, oldest day first; days without entries are absent.
func (s *Store) LedgerDaily(ctx context.Context, f LedgerFilter) ([]DaySum, error) {
	m, err := s.totalsBy(ctx, "store.LedgerDaily", f, "day")
	if err != nil {
		return nil, err
	}
	out := make([]DaySum, 0, len(m))
	for day, t := range m {
		out = append(out, DaySum{Day: day, LedgerTotals: *t})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Day < out[j].Day })
	return out, nil
}

// LedgerByModel returns the totals per model of the entries selected by f,
// costliest first.
func (s *Store) LedgerByModel(ctx context.Context, f LedgerFilter) ([]ModelSum, error) {
	m, err := s.totalsBy(ctx, "store.LedgerByModel", f, "model")
	if err != nil {
		return nil, err
	}
	out := make([]ModelSum, 0, len(m))
	for model, t := range m {
		out = append(out, ModelSum{Model: model, LedgerTotals: *t})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CostMicros != out[j].CostMicros {
			return out[i].CostMicros > out[j].CostMicros
		}
		return out[i].Model < out[j].Model
	})
	return out, nil
}

// LedgerSpentByUser returns each (user, department) pair's cost on a quota
// day, sorted: the input of quota.Rebuild.
func (s *Store) LedgerSpentByUser(ctx context.Context, day string) ([]UserSpent, error) {
	ids, vals, err := s.sumBy(ctx, "store.LedgerSpentByUser", bson.D{{Key: "day", Value: day}},
		bson.D{{Key: "u", Value: "$user_id"}, {Key: "d", Value: "$department"}}, "$cost_micros")
	if err != nil {
		return nil, err
	}
	out := make([]UserSpent, 0, len(ids))
	for i, id := range ids {
		var k struct {
			U string `bson:"u"`
			D string `bson:"d"`
		}
		if err := id.Unmarshal(&k); err != nil {
			return nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: "store.LedgerSpentByUser", Err: err}
		}
		out = append(out, UserSpent{UserID: k.U, Department: k.D, CostMicros: vals[i]})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].UserID != out[j].UserID {
			return out[i].UserID < out[j].UserID
		}
		return out[i].Department < out[j].Department
	})
	return out, nil
}
