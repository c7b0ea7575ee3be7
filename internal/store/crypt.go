package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/crypt"
)

// Encryption at rest: with a key ring (SetKeyRing), a job's result and the
// content of every conversation message are stored as crypt ciphertexts
// ("enc:v1:<kid>:…"), each bound to its place by its additional data
// (jobAAD, messageAAD), so that a ciphertext copied into another record
// does not decrypt. Reads decrypt; a field that is not a ciphertext is a
// record from before encryption was turned on and is returned as it is.
// Everything else (ids, users, models, usage, timestamps) stays readable
// for queries, retention and reports.

// SetKeyRing makes the store encrypt results and conversation messages
// under r's current key and decrypt them under any of its keys; nil stores
// plaintext (and cannot read ciphertexts). Call it before the store is
// used.
func (s *Store) SetKeyRing(r *crypt.Ring) { s.ring = r }

// KeyRing returns the ring set with SetKeyRing.
func (s *Store) KeyRing() *crypt.Ring { return s.ring }

// DB returns the database, for collaborators that keep their own
// collections in it (the audit log).
func (s *Store) DB() *mongo.Database { return s.db }

func jobAAD(id string) []byte { return []byte("jobs/" + id + "/result") }

func messageAAD(convID string, m Message) []byte {
	return []byte("conversations/" + convID + "/" + m.JobID + "/" + m.Role)
}

// seal encrypts s under aad. crypto/rand does not fail (Go 1.24+), which
// is Encrypt's only error, so a failure here is a broken process.
func (s *Store) seal(plain string, aad []byte) string {
	if s.ring == nil || plain == "" || crypt.IsEncrypted(plain) {
		return plain
	}
	out, err := s.ring.Encrypt([]byte(plain), aad)
	if err != nil {
		panic(fmt.Sprintf("store: encrypt: %v", err))
	}
	return out
}

// open decrypts v if it is a ciphertext.
func (s *Store) open(op, v string, aad []byte) (string, error) {
	if !crypt.IsEncrypted(v) {
		return v, nil
	}
	if s.ring == nil {
		return "", &claudeq.Error{Kind: claudeq.KindInternal, Op: op,
			Err: errors.New("record is encrypted but no key ring is configured (CLAUDEQ_ENCRYPTION_KEYS)")}
	}
	b, err := s.ring.Decrypt(v, aad)
	if err != nil {
		return "", &claudeq.Error{Kind: claudeq.KindInternal, Op: op, Err: err}
	}
	return string(b), nil
}

// sealJob encrypts the result of a job document made by jobDoc.
func (s *Store) sealJob(doc *claudeq.Job) *claudeq.Job {
	doc.ResultJSON = s.seal(doc.ResultJSON, jobAAD(doc.ID))
	return doc
}

// openJob decrypts a job read from the store and sets its Result.
func (s *Store) openJob(j *claudeq.Job) error {
	if j.ResultJSON == "" {
		return nil
	}
	plain, err := s.open("store.Job", j.ResultJSON, jobAAD(j.ID))
	if err != nil {
		return err
	}
	j.ResultJSON, j.Result = plain, []byte(plain)
	return nil
}

// sealTurn returns t with its messages' contents encrypted.
func (s *Store) sealTurn(t *Turn) *Turn {
	if s.ring == nil {
		return t
	}
	c := *t
	c.Messages = make([]Message, len(t.Messages))
	id := ConversationID(t.UserID, t.SessionID, t.JobID)
	for i, m := range t.Messages {
		m.Content = s.seal(m.Content, messageAAD(id, m))
		c.Messages[i] = m
	}
	return &c
}

// openConversations decrypts the messages of convs in place.
func (s *Store) openConversations(convs []Conversation) error {
	for i := range convs {
		for k, m := range convs[i].Messages {
			plain, err := s.open("store.Conversations", m.Content, messageAAD(convs[i].ID, m))
			if err != nil {
				return err
			}
			convs[i].Messages[k].Content = plain
		}
	}
	return nil
}

// ReencryptStats counts what ReencryptAll did.
type ReencryptStats struct {
	JobsScanned          int64 `json:"jobs_scanned"`
	JobsReencrypted      int64 `json:"jobs_reencrypted"`
	ConversationsScanned int64 `json:"conversations_scanned"`
	MessagesReencrypted  int64 `json:"messages_reencrypted"`
}

// ReencryptAll rewrites, in batches of batch records, every job result and
// conversation message that is not encrypted under the ring's current key:
// ciphertexts under older keys (after a rotation: new key first in
// CLAUDEQ_ENCRYPTION_KEYS, old ones after it) and plaintext written before
// encryption was turned on. Afterwards the old keys can be dropped.
// progress, if not nil, is called after each batch. It is idempotent and
// safe to run while workers write: job records are never updated, and
// conversation messages are only appended, so each update touches a field
// nothing else writes.
func (s *Store) ReencryptAll(ctx context.Context, batch int, progress func(ReencryptStats)) (ReencryptStats, error) {
	var st ReencryptStats
	if s.ring == nil {
		return st, errors.New("store: no key ring to encrypt with (set CLAUDEQ_ENCRYPTION_KEYS)")
	}
	if batch <= 0 {
		batch = 500
	}
	stale := func(v string) bool { return v != "" && (!crypt.IsEncrypted(v) || s.ring.NeedsRotation(v)) }
	report := func() {
		if progress != nil {
			progress(st)
		}
	}

	cur, err := s.jobs.Find(ctx, bson.D{{Key: "result", Value: bson.D{{Key: "$exists", Value: true}}}},
		options.Find().SetProjection(bson.D{{Key: "result", Value: 1}}).SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(int32(batch)))
	if err != nil {
		return st, fmt.Errorf("store: scan jobs: %w", err)
	}
	var models []mongo.WriteModel
	flushJobs := func() error {
		if len(models) == 0 {
			return nil
		}
		if _, err := s.jobs.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("store: rewrite job results: %w", err)
		}
		st.JobsReencrypted += int64(len(models))
		models = models[:0]
		report()
		return nil
	}
	for cur.Next(ctx) {
		var d struct {
			ID     string `bson:"_id"`
			Result string `bson:"result"`
		}
		if err := cur.Decode(&d); err != nil {
			_ = cur.Close(ctx)
			return st, fmt.Errorf("store: scan jobs: %w", err)
		}
		st.JobsScanned++
		if !stale(d.Result) {
			continue
		}
		plain, err := s.open("store.ReencryptAll", d.Result, jobAAD(d.ID))
		if err != nil {
			_ = cur.Close(ctx)
			return st, fmt.Errorf("job %s: %w", d.ID, err)
		}
		// By _id alone: job records are insert-only, and on FerretDB a
		// filter on more than _id scans the collection.
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: d.ID}}).
			SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "result", Value: s.seal(plain, jobAAD(d.ID))}}}}))
		if len(models) >= batch {
			if err := flushJobs(); err != nil {
				_ = cur.Close(ctx)
				return st, err
			}
		}
	}
	err = cur.Err()
	_ = cur.Close(ctx)
	if err != nil {
		return st, fmt.Errorf("store: scan jobs: %w", err)
	}
	if err := flushJobs(); err != nil {
		return st, err
	}

	cur, err = s.convs.Find(ctx, bson.D{},
		options.Find().SetProjection(bson.D{{Key: "messages", Value: 1}}).SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(int32(batch)))
	if err != nil {
		return st, fmt.Errorf("store: scan conversations: %w", err)
	}
	defer cur.Close(ctx)
	pending := 0
	flushConvs := func() error {
		if len(models) == 0 {
			return nil
		}
		if _, err := s.convs.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("store: rewrite conversation messages: %w", err)
		}
		st.MessagesReencrypted += int64(pending)
		models, pending = models[:0], 0
		report()
		return nil
	}
	for cur.Next(ctx) {
		var c Conversation
		if err := cur.Decode(&c); err != nil {
			return st, fmt.Errorf("store: scan conversations: %w", err)
		}
		st.ConversationsScanned++
		var set bson.D
		for i, m := range c.Messages {
			if !stale(m.Content) {
				continue
			}
			plain, err := s.open("store.ReencryptAll", m.Content, messageAAD(c.ID, m))
			if err != nil {
				return st, fmt.Errorf("conversation %s: %w", c.ID, err)
			}
			m.Content = plain
			// Messages are only ever appended, so index i is this message
			// for good.
			set = append(set, bson.E{Key: "messages." + strconv.Itoa(i) + ".content", Value: s.seal(plain, messageAAD(c.ID, m))})
		}
		if len(set) == 0 {
			continue
		}
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: c.ID}}).
			SetUpdate(bson.D{{Key: "$set", Value: set}}))
		pending += len(set)
		if len(models) >= batch {
			if err := flushConvs(); err != nil {
				return st, err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return st, fmt.Errorf("store: scan conversations: %w", err)
	}
	return st, flushConvs()
}
