package store

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Record is everything one finished job writes to the store.
type Record struct {
	// Job is the terminal job record. It is nil only for the bill of an
	// interactive request (POST /v1/messages), which writes Ledger alone.
	Job  *claudeq.Job
	Turn *Turn // the conversation turn, for succeeded jobs
	// Ledger is the billing entry of a job whose upstream call was billed.
	// It is inserted before the job record (the terminal mark); a
	// duplicate _id means it was billed before and counts as success.
	Ledger *LedgerEntry
}

// CommitterOptions shapes group commit.
type CommitterOptions struct {
	// MaxBatch caps the records in one bulk write. Default 256.
	MaxBatch int
	// Flushers is how many bulk writes may be in flight at once. Default 4.
	Flushers int
	// Timeout bounds one bulk write. Default 10s.
	Timeout time.Duration
	// Linger is how long a flusher waits for more records after the first
	// before writing (at most MaxBatch): larger batches, fewer writes, each
	// record durable up to Linger later. Default 0: write at once, batching
	// only what arrived during the previous write.
	Linger time.Duration
	Logger *slog.Logger
}

// Committer batches records from many concurrent jobs into few bulk writes
// (group commit): each caller of Commit waits until its record is durable,
// while the records that arrive during one write go out together in the
// next. It is safe for concurrent use.
type Committer struct {
	s    *Store
	opts CommitterOptions
	in   chan *pending
	wg   sync.WaitGroup
	once sync.Once
}

type pending struct {
	rec  Record
	done chan error
}

// NewCommitter starts a committer over s. Close stops it.
func (s *Store) NewCommitter(opts CommitterOptions) *Committer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Flushers <= 0 {
		opts.Flushers = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Committer{s: s, opts: opts, in: make(chan *pending, opts.MaxBatch*opts.Flushers)}
	for range opts.Flushers {
		c.wg.Add(1)
		go c.flusher()
	}
	return c
}

// Commit writes rec and returns once it is durable, or with the error that
// kept it from being written (the caller retries the job later).
func (c *Committer) Commit(ctx context.Context, rec Record) error {
	p := &pending{rec: rec, done: make(chan error, 1)}
	select {
	case c.in <- p:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The write may still land; the job's re-run finds it.
		return ctx.Err()
	}
}

// Close waits for the records already handed in and stops the flushers.
// Commit must not be called after Close.
func (c *Committer) Close() {
	c.once.Do(func() { close(c.in) })
	c.wg.Wait()
}

func (c *Committer) flusher() {
	defer c.wg.Done()
	batch := make([]*pending, 0, c.opts.MaxBatch)
	for p := range c.in {
		batch = append(batch[:0], p)
		if c.opts.Linger > 0 {
			batch = c.linger(batch)
		}
	drain:
		for len(batch) < c.opts.MaxBatch {
			select {
			case q, ok := <-c.in:
				if !ok {
					break drain
				}
				batch = append(batch, q)
			default:
				break drain
			}
		}
		recs := make([]Record, len(batch))
		for i, q := range batch {
			recs[i] = q.rec
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
		errs := c.s.write(ctx, recs)
		cancel()
		for i, q := range batch {
			q.done <- errs[i]
		}
	}
}

// linger adds to batch the records that arrive within Linger, up to
// MaxBatch (or until the committer closes).
func (c *Committer) linger(batch []*pending) []*pending {
	t := time.NewTimer(c.opts.Linger)
	defer t.Stop()
	for len(batch) < c.opts.MaxBatch {
		select {
		case q, ok := <-c.in:
			if !ok {
				return batch
			}
			batch = append(batch, q)
		case <-t.C:
			return batch
		}
	}
	return batch
}

// write stores recs with one bulk write per collection and returns one error
// per record. A duplicate-key error means the write was applied before (a
// re-run job) and counts as success.
func (s *Store) write(ctx context.Context, recs []Record) []error {
	errs := make([]error, len(recs))
	// Ledger entries first: the job record is the terminal mark, so a job
	// is never terminal without its bill; a crash in between re-runs the
	// job, whose ledger insert is then a duplicate, i.e. a no-op.
	var ledgerModels []mongo.WriteModel
	var ledgerIdx []int
	for i, r := range recs {
		if r.Ledger != nil {
			doc, err := ledgerDoc(r.Ledger)
			if err != nil {
				errs[i] = err
				continue
			}
			ledgerModels = append(ledgerModels, mongo.NewInsertOneModel().SetDocument(doc))
			ledgerIdx = append(ledgerIdx, i)
		}
	}
	if len(ledgerModels) > 0 {
		res := bulkErrors(s.ledger().BulkWrite(ctx, ledgerModels, options.BulkWrite().SetOrdered(false)))
		for k, e := range res(len(ledgerModels)) {
			if e != nil {
				errs[ledgerIdx[k]] = e
			}
		}
	}
	var jobModels []mongo.WriteModel
	var jobIdx []int
	var jobColl []*mongo.Collection
	var convModels []mongo.WriteModel
	var convIdx []int
	for i, r := range recs {
		if r.Job == nil {
			continue // a ledger entry alone (an interactive request)
		}
		// An insert, not an upsert: the first terminal record of a job wins
		// and a re-run cannot overwrite it.
		jobModels = append(jobModels, mongo.NewInsertOneModel().SetDocument(s.sealJob(jobDoc(r.Job))))
		jobIdx = append(jobIdx, i)
		jobColl = append(jobColl, s.jobsOf(r.Job))
		if r.Turn != nil && errs[i] == nil {
			if r.Turn.Rerun && r.Turn.SessionID != "" {
				done, err := s.applied(ctx, r.Turn)
				if err != nil {
					errs[i] = &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.write", Msg: "job store unavailable", Err: err}
					continue
				}
				if done {
					continue
				}
			}
			convModels = append(convModels, turnModel(s.sealTurn(r.Turn)))
			convIdx = append(convIdx, i)
		}
	}
	// Conversations first: a job record is the terminal mark, so it must be
	// written last; a crash in between re-runs the job, whose turn is then a
	// no-op thanks to the job_ids guard.
	if len(convModels) > 0 {
		res := bulkErrors(s.convs.BulkWrite(ctx, convModels, options.BulkWrite().SetOrdered(false)))
		for k, e := range res(len(convModels)) {
			if e != nil {
				errs[convIdx[k]] = e
			}
		}
	}
	// Skip the job record of any record whose ledger entry or turn failed.
	// One bulk write per collection: jobs, and each batch's own.
	byColl := map[string][]int{}
	var order []*mongo.Collection
	for k := range jobModels {
		if errs[jobIdx[k]] != nil {
			continue
		}
		name := jobColl[k].Name()
		if _, ok := byColl[name]; !ok {
			order = append(order, jobColl[k])
		}
		byColl[name] = append(byColl[name], k)
	}
	for _, coll := range order {
		ks := byColl[coll.Name()]
		jm := make([]mongo.WriteModel, len(ks))
		for n, k := range ks {
			jm[n] = jobModels[k]
		}
		res := bulkErrors(coll.BulkWrite(ctx, jm, options.BulkWrite().SetOrdered(false)))
		for n, e := range res(len(jm)) {
			if e != nil {
				errs[jobIdx[ks[n]]] = e
			}
		}
	}
	return errs
}

func bulkErrors(_ *mongo.BulkWriteResult, err error) func(n int) []error {
	return func(n int) []error {
		out := make([]error, n)
		if err == nil {
			return out
		}
		var bwe mongo.BulkWriteException
		if errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0 {
			for _, we := range bwe.WriteErrors {
				if we.Index >= 0 && we.Index < n && !mongo.IsDuplicateKeyError(we) {
					out[we.Index] = &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.write", Msg: "job store write failed", Err: we}
				}
			}
			return out
		}
		if mongo.IsDuplicateKeyError(err) {
			return out
		}
		for i := range out {
			out[i] = &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.write", Msg: "job store unavailable", Err: err}
		}
		return out
	}
}

func jobDoc(j *claudeq.Job) *claudeq.Job {
	c := *j
	if len(c.Result) > 0 {
		c.ResultJSON = string(c.Result)
	}
	if c.BatchID != "" {
		// A batch request's record keeps what its result line and a re-run
		// need: FerretDB's cost per document grows with its fields
		// (measured: reading 10,000 full records took ~4 s, lean ones ~1.2
		// s). The usage is in the answer and in the ledger.
		c.Usage, c.StartedAt, c.RequestHash, c.Nodes, c.Department, c.KeyID = nil, nil, "", nil, "", ""
	}
	return &c
}

// turnModel is the write of one conversation turn. On FerretDB only inserts
// are fast (measured: ~10,000 inserts/s, ~150 updates/s, and an update whose
// filter is more than _id scans the whole collection), so a job without a
// session inserts its own conversation, and a session's turn is an update
// by _id alone. Exactly once: a repeated insert is a duplicate key; a
// session turn of a re-run job is checked first (see applied).
func turnModel(t *Turn) mongo.WriteModel {
	id := ConversationID(t.UserID, t.SessionID, t.JobID)
	if t.SessionID == "" {
		return mongo.NewInsertOneModel().SetDocument(Conversation{
			ID: id, UserID: t.UserID, Messages: t.Messages, ModelUsed: t.Model, TokensConsumed: t.Tokens,
			JobIDs: []string{t.JobID}, CreatedAt: t.At, UpdatedAt: t.At,
		})
	}
	return mongo.NewUpdateOneModel().
		SetFilter(bson.D{{Key: "_id", Value: id}}).
		SetUpdate(bson.D{
			{Key: "$push", Value: bson.D{
				{Key: "messages", Value: bson.D{{Key: "$each", Value: t.Messages}}},
				{Key: "job_ids", Value: t.JobID},
			}},
			{Key: "$inc", Value: bson.D{{Key: "tokens_consumed", Value: t.Tokens}}},
			{Key: "$set", Value: bson.D{{Key: "model_used", Value: t.Model}, {Key: "updated_at", Value: t.At}}},
			{Key: "$setOnInsert", Value: bson.D{
				{Key: "user_id", Value: t.UserID},
				{Key: "session_id", Value: t.SessionID},
				{Key: "created_at", Value: t.At},
			}},
		}).SetUpsert(true)
}

// applied reports whether a re-run job's session turn is already in its
// conversation. Only re-runs ask: asynq runs one attempt of a job at a time,
// so nothing else appends this job's turn meanwhile.
func (s *Store) applied(ctx context.Context, t *Turn) (bool, error) {
	var c struct {
		JobIDs []string `bson:"job_ids"`
	}
	err := s.convs.FindOne(ctx, bson.D{{Key: "_id", Value: ConversationID(t.UserID, t.SessionID, t.JobID)}}).Decode(&c)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return slices.Contains(c.JobIDs, t.JobID), nil
}
