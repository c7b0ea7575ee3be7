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

// APIKey is a stored API key: only the SHA-256 of the secret is kept.
type APIKey struct {
	ID         string     `bson:"_id" json:"id"`
	Hash       string     `bson:"hash" json:"-"`
	Prefix     string     `bson:"prefix" json:"prefix"` // first characters, to recognise a key in lists
	Name       string     `bson:"name,omitempty" json:"name,omitempty"`
	UserID     string     `bson:"user_id" json:"user_id"`
	Department string     `bson:"department" json:"department"`
	Tier       string     `bson:"tier" json:"tier"`
	Scopes     []string   `bson:"scopes" json:"scopes"`
	CreatedAt  time.Time  `bson:"created_at" json:"created_at"`
	RevokedAt  *time.Time `bson:"revoked_at,omitempty" json:"revoked_at,omitempty"`
}

// Principal returns the caller the key stands for.
func (k APIKey) Principal() claudeq.Principal {
	return claudeq.Principal{KeyID: k.ID, UserID: k.UserID, Department: k.Department, Tier: k.Tier, Scopes: k.Scopes}
}

// CreateKey stores k. A key whose hash exists already is a KindConflict.
func (s *Store) CreateKey(ctx context.Context, k APIKey) error {
	_, err := s.keys.InsertOne(ctx, k)
	if mongo.IsDuplicateKeyError(err) {
		return claudeq.Errorf(claudeq.KindConflict, "key exists")
	}
	return err
}

// PutKey stores k, replacing the key with the same id (dev mode's key).
func (s *Store) PutKey(ctx context.Context, k APIKey) error {
	_, err := s.keys.ReplaceOne(ctx, bson.D{{Key: "_id", Value: k.ID}}, k, options.Replace().SetUpsert(true))
	return err
}

// KeyByHash returns the key with the given SHA-256 hex hash, or KindNotFound.
func (s *Store) KeyByHash(ctx context.Context, hash string) (APIKey, error) {
	var k APIKey
	err := s.keys.FindOne(ctx, bson.D{{Key: "hash", Value: hash}}).Decode(&k)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return k, claudeq.Errorf(claudeq.KindNotFound, "no such key")
	}
	if err != nil {
		return k, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.KeyByHash", Msg: "key store unavailable", Err: err}
	}
	return k, nil
}

// Keys lists every key, newest first.
func (s *Store) Keys(ctx context.Context) ([]APIKey, error) {
	cur, err := s.keys.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "created_at", Value: -1}}))
	if err != nil {
		return nil, err
	}
	var out []APIKey
	err = cur.All(ctx, &out)
	return out, err
}

// RevokeKey marks key id revoked at t. An unknown id is KindNotFound.
func (s *Store) RevokeKey(ctx context.Context, id string, t time.Time) error {
	r, err := s.keys.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "revoked_at", Value: t}}}})
	if err != nil {
		return err
	}
	if r.MatchedCount == 0 {
		return claudeq.Errorf(claudeq.KindNotFound, "no key %s", id)
	}
	return nil
}
