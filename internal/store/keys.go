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
	// ExpiresAt, when set, is when the key stops working (an expiry given at
	// creation, or the end of the grace period after a rotation).
	ExpiresAt  *time.Time `bson:"expires_at,omitempty" json:"expires_at,omitempty"`
	RotatedTo  string     `bson:"rotated_to,omitempty" json:"rotated_to,omitempty"`
	LastUsedAt *time.Time `bson:"last_used_at,omitempty" json:"last_used_at,omitempty"`
	// PolicyAction overrides the content policy's action for this key:
	// block, redact or allow; empty means the department's, else the
	// default (CLAUDEQ_POLICY_ACTION).
	PolicyAction string `bson:"policy_action,omitempty" json:"policy_action,omitempty"`
	// RequestsPerDay caps the key's submits per quota day (0 = no cap).
	RequestsPerDay int `bson:"requests_per_day,omitempty" json:"requests_per_day,omitempty"`
	// OnQuota is "defer" to park over-budget jobs until the reset.
	OnQuota string `bson:"on_quota,omitempty" json:"on_quota,omitempty"`
	// WebhookURL is the default webhook of the key's jobs.
	WebhookURL string `bson:"webhook_url,omitempty" json:"webhook_url,omitempty"`
	// ChangedAt is when anything that decides what the key may do last
	// changed (revoked, rotated out, scopes or tier, its webhook
	// disabled): the apis watch it (KeysChangedSince) to drop what they
	// cached of the key.
	ChangedAt *time.Time `bson:"changed_at,omitempty" json:"changed_at,omitempty"`
}

// KeyChange is a key whose ChangedAt is recent: KeysChangedSince.
type KeyChange struct {
	ID        string    `bson:"_id"`
	Hash      string    `bson:"hash"`
	ChangedAt time.Time `bson:"changed_at"`
}

// KeysChangedSince returns the keys whose ChangedAt is after t.
func (s *Store) KeysChangedSince(ctx context.Context, t time.Time) ([]KeyChange, error) {
	cur, err := s.keys.Find(ctx, bson.D{{Key: "changed_at", Value: bson.D{{Key: "$gt", Value: t}}}},
		options.Find().SetProjection(bson.D{{Key: "hash", Value: 1}, {Key: "changed_at", Value: 1}}))
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.KeysChangedSince", Msg: "key store unavailable", Err: err}
	}
	var out []KeyChange
	if err := cur.All(ctx, &out); err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "store.KeysChangedSince", Msg: "key store unavailable", Err: err}
	}
	return out, nil
}

// changed is the $set of a change to what a key may do, at t.
func changed(t time.Time, set ...bson.E) bson.D {
	return bson.D{{Key: "$set", Value: append(bson.D{{Key: "changed_at", Value: t.UTC()}}, set...)}}
}

// UpdateKey changes key id's tier and scopes (either left as it is when
// empty). An unknown id is KindNotFound.
func (s *Store) UpdateKey(ctx context.Context, id, tier string, scopes []string, at time.Time) error {
	var set []bson.E
	if tier != "" {
		set = append(set, bson.E{Key: "tier", Value: tier})
	}
	if len(scopes) > 0 {
		set = append(set, bson.E{Key: "scopes", Value: scopes})
	}
	r, err := s.keys.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, changed(at, set...))
	if err != nil {
		return err
	}
	if r.MatchedCount == 0 {
		return claudeq.Errorf(claudeq.KindNotFound, "no key %s", id)
	}
	return nil
}

// Usable says why k cannot be used at t ("revoked", "expired"), or "".
func (k APIKey) Usable(t time.Time) string {
	switch {
	case k.RevokedAt != nil && !k.RevokedAt.After(t):
		return "revoked"
	case k.ExpiresAt != nil && !k.ExpiresAt.After(t):
		return "expired"
	}
	return ""
}

// Principal returns the caller the key stands for.
func (k APIKey) Principal() claudeq.Principal {
	return claudeq.Principal{KeyID: k.ID, UserID: k.UserID, Department: k.Department, Tier: k.Tier, Scopes: k.Scopes,
		RequestsPerDay: k.RequestsPerDay, OnQuota: k.OnQuota, WebhookURL: k.WebhookURL}
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
	now := time.Now().UTC()
	k.ChangedAt = &now
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

// Key returns the key with id, or KindNotFound.
func (s *Store) Key(ctx context.Context, id string) (APIKey, error) {
	var k APIKey
	err := s.keys.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&k)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return k, claudeq.Errorf(claudeq.KindNotFound, "no key %s", id)
	}
	return k, err
}

// RotateKey stores next, which takes over old's principal, and makes old
// expire at graceEnd (or earlier, if it expires sooner anyway).
func (s *Store) RotateKey(ctx context.Context, oldID string, next APIKey, graceEnd time.Time) error {
	old, err := s.Key(ctx, oldID)
	if err != nil {
		return err
	}
	if why := old.Usable(time.Now()); why != "" {
		return claudeq.Errorf(claudeq.KindConflict, "key %s is %s", oldID, why)
	}
	next.UserID, next.Department, next.Tier, next.Scopes = old.UserID, old.Department, old.Tier, old.Scopes
	next.PolicyAction = old.PolicyAction
	next.RequestsPerDay, next.OnQuota, next.WebhookURL = old.RequestsPerDay, old.OnQuota, old.WebhookURL
	if next.Name == "" {
		next.Name = old.Name
	}
	if err := s.CreateKey(ctx, next); err != nil {
		return err
	}
	exp := graceEnd
	if old.ExpiresAt != nil && old.ExpiresAt.Before(exp) {
		exp = *old.ExpiresAt
	}
	_, err = s.keys.UpdateOne(ctx, bson.D{{Key: "_id", Value: oldID}},
		changed(time.Now(), bson.E{Key: "expires_at", Value: exp}, bson.E{Key: "rotated_to", Value: next.ID}))
	return err
}

// TouchKeys records when keys were last used (best effort: the api flushes
// its in-memory times periodically).
func (s *Store) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	models := make([]mongo.WriteModel, 0, len(used))
	for id, t := range used {
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).
			SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "last_used_at", Value: t}}}}))
	}
	_, err := s.keys.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	return err
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
	r, err := s.keys.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, changed(time.Now(), bson.E{Key: "revoked_at", Value: t}))
	if err != nil {
		return err
	}
	if r.MatchedCount == 0 {
		return claudeq.Errorf(claudeq.KindNotFound, "no key %s", id)
	}
	return nil
}

// DisableKeyWebhook drops key id's default webhook if it is still url (its
// receiver answered 410 Gone), and returns whether it did.
func (s *Store) DisableKeyWebhook(ctx context.Context, id, url string, at time.Time) (bool, error) {
	r, err := s.keys.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "webhook_url", Value: url}},
		changed(time.Now(), bson.E{Key: "webhook_url", Value: ""}, bson.E{Key: "webhook_disabled_at", Value: at}))
	if err != nil {
		return false, err
	}
	return r.ModifiedCount > 0, nil
}
