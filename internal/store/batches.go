package store

import (
	"context"
	"errors"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Message Batches: one document per batch in "batches", and the terminal
// records of a batch's requests (claudeq.Job with BatchID set) in a
// collection of their own, "batch_items_<batch id>".
//
// Why a collection per batch: on FerretDB (SQLite) every filter, _id
// equality included, scans its collection (measured: a FindOne by _id
// costs ~5 µs per document stored before it; a range or a field filter
// reads the whole collection). Reading a batch's results from a shared
// collection would read every batch's; from its own collection it reads
// exactly its own requests (10,000 in ~0.6-0.9 s), and deleting a batch is
// dropping one table (~10 ms). Records are still written as inserts with
// a unique _id (the job id), through the same group commit as jobs, so a
// re-run request cannot write a second result.

const batchesCollection = "batches"

// BatchItemsCollection names the collection of batch id's request records.
func BatchItemsCollection(id string) string { return "batch_items_" + id }

func (s *Store) batches() *mongo.Collection { return s.db.Collection(batchesCollection) }

// jobsOf returns the collection that holds job j's record.
func (s *Store) jobsOf(j *claudeq.Job) *mongo.Collection {
	if j.BatchID != "" {
		return s.db.Collection(BatchItemsCollection(j.BatchID))
	}
	return s.jobs
}

// jobsFor returns the collection that holds job id's record.
func (s *Store) jobsFor(id string) *mongo.Collection {
	if b, _, ok := claudeq.SplitBatchItemID(id); ok {
		return s.db.Collection(BatchItemsCollection(b))
	}
	return s.jobs
}

func storeDown(op string, err error) error {
	return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "batch store unavailable, try again", Err: err}
}

// CreateBatch inserts the document of a new batch.
func (s *Store) CreateBatch(ctx context.Context, b *claudeq.Batch) error {
	if _, err := s.batches().InsertOne(ctx, batchDoc(b)); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return claudeq.Errorf(claudeq.KindConflict, "batch %s exists", b.ID)
		}
		return storeDown("store.CreateBatch", err)
	}
	return nil
}

func batchDoc(b *claudeq.Batch) *claudeq.Batch {
	c := *b
	c.CreatedAt, c.ExpiresAt = c.CreatedAt.UTC(), c.ExpiresAt.UTC()
	return &c
}

// SaveBatch replaces the document of batch b (when it ends): an update by
// _id alone, of which a batch has one. A deleted batch stays deleted.
func (s *Store) SaveBatch(ctx context.Context, b *claudeq.Batch) error {
	_, err := s.batches().ReplaceOne(ctx, bson.D{{Key: "_id", Value: b.ID}}, batchDoc(b))
	if err != nil {
		return storeDown("store.SaveBatch", err)
	}
	return nil
}

// Batch returns the document of batch id, or KindNotFound.
func (s *Store) Batch(ctx context.Context, id string) (*claudeq.Batch, error) {
	var b claudeq.Batch
	err := s.batches().FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&b)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, claudeq.Errorf(claudeq.KindNotFound, "batch %s not found", id)
	}
	if err != nil {
		return nil, storeDown("store.Batch", err)
	}
	fixBatchTimes(&b)
	return &b, nil
}

func fixBatchTimes(b *claudeq.Batch) {
	b.CreatedAt, b.ExpiresAt = b.CreatedAt.UTC(), b.ExpiresAt.UTC()
	b.EndedAt, b.CancelInitiatedAt = utcp(b.EndedAt), utcp(b.CancelInitiatedAt)
}

// Batches returns the batches of userID, newest first (created_at, then id,
// both descending).
func (s *Store) Batches(ctx context.Context, userID string) ([]claudeq.Batch, error) {
	cur, err := s.batches().Find(ctx, bson.D{{Key: "user_id", Value: userID}})
	if err != nil {
		return nil, storeDown("store.Batches", err)
	}
	var out []claudeq.Batch
	if err := cur.All(ctx, &out); err != nil {
		return nil, storeDown("store.Batches", err)
	}
	for i := range out {
		fixBatchTimes(&out[i])
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

// BatchesEndedBefore returns the ids of batches that ended before t: the
// retention sweep deletes them.
func (s *Store) BatchesEndedBefore(ctx context.Context, t time.Time) ([]string, error) {
	cur, err := s.batches().Find(ctx, bson.D{{Key: "ended_at", Value: bson.D{{Key: "$lt", Value: t}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, storeDown("store.BatchesEndedBefore", err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, storeDown("store.BatchesEndedBefore", err)
	}
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.ID
	}
	return out, nil
}

// DeleteBatch removes batch id's results and then its document.
func (s *Store) DeleteBatch(ctx context.Context, id string) error {
	if err := s.db.Collection(BatchItemsCollection(id)).Drop(ctx); err != nil {
		return storeDown("store.DeleteBatch", err)
	}
	if _, err := s.batches().DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		return storeDown("store.DeleteBatch", err)
	}
	return nil
}

// SaveJobs writes terminal job records directly (not through a Committer),
// idempotently, in one bulk write per collection: a batch's canceled,
// expired or invalid requests.
func (s *Store) SaveJobs(ctx context.Context, jobs []*claudeq.Job) error {
	recs := make([]Record, len(jobs))
	for i, j := range jobs {
		recs[i] = Record{Job: j}
	}
	return errors.Join(s.write(ctx, recs)...)
}

// BatchItems calls fn with each request record of batch id, in no
// particular order, reading batchSize records per round trip. It stops at
// fn's first error.
func (s *Store) BatchItems(ctx context.Context, id string, batchSize int32, fn func(*claudeq.Job) error) error {
	cur, err := s.db.Collection(BatchItemsCollection(id)).Find(ctx, bson.D{}, options.Find().SetBatchSize(batchSize))
	if err != nil {
		return storeDown("store.BatchItems", err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var j claudeq.Job
		if err := cur.Decode(&j); err != nil {
			return storeDown("store.BatchItems", err)
		}
		if err := s.openJob(&j); err != nil {
			return err
		}
		j.CreatedAt, j.StartedAt, j.FinishedAt = utc(j.CreatedAt), utcp(j.StartedAt), utcp(j.FinishedAt)
		if err := fn(&j); err != nil {
			return err
		}
	}
	if err := cur.Err(); err != nil {
		return storeDown("store.BatchItems", err)
	}
	return nil
}
