package store

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// webhookAttempts is the collection of webhook delivery attempts.
const webhookAttempts = "webhook_attempts"

// Attempt is the record of one webhook delivery attempt. Its fields match
// webhook.Attempt one for one, so the worker converts with
// store.Attempt(a).
type Attempt struct {
	ID         string    `bson:"_id" json:"id"`
	DeliveryID string    `bson:"delivery_id" json:"delivery_id"` // the webhook-id, the same on every retry
	JobID      string    `bson:"job_id" json:"job_id"`
	UserID     string    `bson:"user_id" json:"-"`
	URL        string    `bson:"url" json:"url"`
	Attempt    int       `bson:"attempt" json:"attempt"` // 1-based
	At         time.Time `bson:"at" json:"at"`
	Status     int       `bson:"status" json:"status"` // HTTP status, 0 when no response
	LatencyMS  int64     `bson:"latency_ms" json:"latency_ms"`
	Error      string    `bson:"error,omitempty" json:"error,omitempty"`
}

// EnsureWebhookIndexes creates the indexes of webhook_attempts: by job (the
// attempts of a job, in order) and by time (the retention sweep).
// Idempotent.
func (s *Store) EnsureWebhookIndexes(ctx context.Context) error {
	// One CreateOne per index: FerretDB v1.24 panics on a CreateMany
	// whose indexes exist already.
	for _, keys := range []bson.D{
		{{Key: "job_id", Value: 1}, {Key: "at", Value: 1}},
		{{Key: "at", Value: 1}},
	} {
		if _, err := s.db.Collection(webhookAttempts).Indexes().CreateOne(ctx, mongo.IndexModel{Keys: keys}); err != nil {
			return err
		}
	}
	return nil
}

// RecordAttempt inserts a. Recording the same attempt (same ID) twice is
// not an error: the first record stands.
func (s *Store) RecordAttempt(ctx context.Context, a Attempt) error {
	a.At = a.At.UTC()
	_, err := s.db.Collection(webhookAttempts).InsertOne(ctx, a)
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.RecordAttempt", Msg: "webhook attempt store unavailable", Err: err}
	}
	return nil
}

// Attempts returns the delivery attempts of job jobID, oldest first (by
// time, then attempt number). Callers check that the job is the caller's.
func (s *Store) Attempts(ctx context.Context, jobID string) ([]Attempt, error) {
	cur, err := s.db.Collection(webhookAttempts).Find(ctx, bson.D{{Key: "job_id", Value: jobID}},
		options.Find().SetSort(bson.D{{Key: "at", Value: 1}, {Key: "attempt", Value: 1}, {Key: "_id", Value: 1}}))
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.Attempts", Msg: "webhook attempt store unavailable", Err: err}
	}
	out := []Attempt{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.Attempts", Msg: "webhook attempt store unavailable", Err: err}
	}
	for i := range out {
		out[i].At = out[i].At.UTC()
	}
	return out, nil
}

// DeleteAttemptsBefore removes attempts made before t: the retention sweep
// (FerretDB has no TTL indexes).
func (s *Store) DeleteAttemptsBefore(ctx context.Context, t time.Time) (int64, error) {
	r, err := s.db.Collection(webhookAttempts).DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: t}}}})
	if err != nil {
		return 0, err
	}
	return r.DeletedCount, nil
}
