package store

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Message is one turn of a conversation as stored: the text of the turn.
type Message struct {
	Role    string    `bson:"role" json:"role"`
	Content string    `bson:"content" json:"content"`
	JobID   string    `bson:"job_id" json:"job_id"`
	At      time.Time `bson:"at" json:"at"`
}

// Turn is what one finished job adds to its conversation.
type Turn struct {
	JobID     string
	UserID    string
	SessionID string // empty: the job is a conversation of its own
	Model     string
	Messages  []Message
	Tokens    int64
	At        time.Time
	// Rerun marks the turn of a job that may have run before (a worker
	// died, or Redis lost the completion mark): its session turn is checked
	// for before it is appended.
	Rerun bool
}

// Conversation is the stored document: user_id, session_id, messages,
// model_used, tokens_consumed, created_at, updated_at (the fields the
// conversations collection had from the start, which reports read).
type Conversation struct {
	ID             string    `bson:"_id" json:"id"`
	UserID         string    `bson:"user_id" json:"user_id"`
	SessionID      string    `bson:"session_id,omitempty" json:"session_id,omitempty"`
	Messages       []Message `bson:"messages" json:"messages"`
	ModelUsed      string    `bson:"model_used" json:"model_used"`
	TokensConsumed int64     `bson:"tokens_consumed" json:"tokens_consumed"`
	JobIDs         []string  `bson:"job_ids" json:"job_ids"`
	CreatedAt      time.Time `bson:"created_at" json:"created_at"`
	UpdatedAt      time.Time `bson:"updated_at" json:"updated_at"`
}

// ConversationID is the document id of a turn's conversation: one per user
// and session, or the job's own id when there is no session.
func ConversationID(userID, sessionID, jobID string) string {
	if sessionID == "" {
		return "job:" + jobID
	}
	return "session:" + userID + ":" + sessionID
}

// Conversations returns the conversations whose ids are given, for tests and
// the usage report.
func (s *Store) Conversations(ctx context.Context, filter bson.D) ([]Conversation, error) {
	cur, err := s.convs.Find(ctx, filter)
	if err != nil {
		return nil, err
	}
	var out []Conversation
	if err := cur.All(ctx, &out); err != nil {
		return nil, err
	}
	if err := s.openConversations(out); err != nil {
		return nil, err
	}
	return out, nil
}
