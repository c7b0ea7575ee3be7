package store

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// The stash: upstream answers that were paid for but whose job could not be
// billed yet because Redis was down (a worker keeps them in Redis when it
// can: queue.Queue.Stash). The job's next attempt takes the answer from
// here instead of calling Claude again; the retention sweep removes what
// nobody came back for. Answers are encrypted like job results.

const stashCollection = "stash"

type stashDoc struct {
	ID   string    `bson:"_id"`
	Data string    `bson:"data"`
	At   time.Time `bson:"at"`
}

func stashAAD(id string) []byte { return []byte("stash/" + id) }

// StashAnswer keeps data (an upstream answer) for job id, replacing an
// earlier one. Idempotent.
func (s *Store) StashAnswer(ctx context.Context, id string, data []byte, at time.Time) error {
	doc := stashDoc{ID: id, Data: s.seal(string(data), stashAAD(id)), At: at.UTC()}
	_, err := s.db.Collection(stashCollection).ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, doc, options.Replace().SetUpsert(true))
	if err != nil {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.StashAnswer", Msg: "store unavailable", Err: err}
	}
	return nil
}

// StashedAnswer returns the answer kept for job id, nil when there is none,
// and a KindUnavailable error when the store cannot be asked.
func (s *Store) StashedAnswer(ctx context.Context, id string) ([]byte, error) {
	var doc stashDoc
	err := s.db.Collection(stashCollection).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.StashedAnswer", Msg: "store unavailable", Err: err}
	}
	plain, err := s.open("store.StashedAnswer", doc.Data, stashAAD(id))
	if err != nil {
		return nil, err
	}
	return []byte(plain), nil
}

// DropStash removes the answer kept for job id (none is not an error).
func (s *Store) DropStash(ctx context.Context, id string) error {
	_, err := s.db.Collection(stashCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	return err
}

// DeleteStashesBefore removes answers kept since before t: the retention
// sweep.
func (s *Store) DeleteStashesBefore(ctx context.Context, t time.Time) (int64, error) {
	r, err := s.db.Collection(stashCollection).DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: t}}}})
	if err != nil {
		return 0, err
	}
	return r.DeletedCount, nil
}
