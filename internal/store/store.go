// Package store is claudeq's MongoDB adapter: durable job records,
// conversations and API keys. It stays inside what FerretDB (the
// MongoDB-wire server of dev mode and tests) does correctly: no
// transactions, no TTL indexes, and "exactly once" is an insert or upsert
// guarded by a unique _id, never a read-then-update.
//
// Store and Committer are safe for concurrent use.
package store

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/crypt"
)

// Store reads and writes the durable state.
type Store struct {
	db    *mongo.Database
	jobs  *mongo.Collection
	convs *mongo.Collection
	keys  *mongo.Collection
	ring  *crypt.Ring // encrypts results and messages at rest; nil: plaintext (crypt.go)
}

// New returns a store over db.
func New(db *mongo.Database) *Store {
	return &Store{
		db:    db,
		jobs:  db.Collection("jobs"),
		convs: db.Collection("conversations"),
		keys:  db.Collection("api_keys"),
	}
}

// Connect dials uri and returns the named database and a close function.
// The driver gets no client-wide timeout (FerretDB mishandles it): callers
// pass per-call contexts.
func Connect(ctx context.Context, uri, database string) (*mongo.Database, func(context.Context) error, error) {
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMaxPoolSize(64))
	if err != nil {
		return nil, nil, err
	}
	return c.Database(database), c.Disconnect, nil
}

// EnsureIndexes creates the indexes the store relies on. Idempotent.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	if _, err := s.keys.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "hash", Value: 1}}, Options: options.Index().SetUnique(true),
	}); err != nil {
		return err
	}
	if _, err := s.keys.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "changed_at", Value: 1}}}); err != nil {
		return err
	}
	if _, err := s.jobs.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "finished_at", Value: 1}}}); err != nil {
		return err
	}
	if _, err := s.convs.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "user_id", Value: 1}, {Key: "updated_at", Value: -1}}}); err != nil {
		return err
	}
	if err := s.EnsureWebhookIndexes(ctx); err != nil {
		return err
	}
	return s.EnsureLedgerIndexes(ctx)
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.db.Client().Ping(ctx, nil)
}

// Job returns the durable record of job id, or a KindNotFound error. The
// record of a batch request (claudeq.BatchItemID) is read from its batch's
// collection.
func (s *Store) Job(ctx context.Context, id string) (*claudeq.Job, error) {
	var j claudeq.Job
	err := s.jobsFor(id).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&j)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
	}
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.Job", Msg: "job store unavailable", Err: err}
	}
	if err := s.openJob(&j); err != nil {
		return nil, err
	}
	j.CreatedAt, j.StartedAt, j.FinishedAt = utc(j.CreatedAt), utcp(j.StartedAt), utcp(j.FinishedAt)
	return &j, nil
}

// SaveJob writes a terminal job record directly (not through a Committer),
// idempotently.
func (s *Store) SaveJob(ctx context.Context, j *claudeq.Job) error {
	return s.write(ctx, []Record{{Job: j}})[0]
}

// DeleteJobsFinishedBefore removes finished job records older than t: the
// retention sweep (FerretDB has no TTL indexes).
func (s *Store) DeleteJobsFinishedBefore(ctx context.Context, t time.Time) (int64, error) {
	r, err := s.jobs.DeleteMany(ctx, bson.D{{Key: "finished_at", Value: bson.D{{Key: "$lt", Value: t}}}})
	if err != nil {
		return 0, err
	}
	return r.DeletedCount, nil
}

// DeleteConversationsUpdatedBefore removes conversations untouched since t.
func (s *Store) DeleteConversationsUpdatedBefore(ctx context.Context, t time.Time) (int64, error) {
	r, err := s.convs.DeleteMany(ctx, bson.D{{Key: "updated_at", Value: bson.D{{Key: "$lt", Value: t}}}})
	if err != nil {
		return 0, err
	}
	return r.DeletedCount, nil
}

func utc(t time.Time) time.Time { return t.UTC() }

func utcp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
