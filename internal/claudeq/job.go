package claudeq

import (
	"encoding/json"
	"time"
)

// Status is the life-cycle state of a job.
type Status string

// The states of a job. A job moves queued → running → succeeded|failed, may
// go back from running to queued while it waits for a retry, and may be
// canceled while queued.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
)

// Terminal reports whether no further change can happen to a job in state s.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCanceled
}

// Job kinds: which endpoint created the job.
const (
	JobChat    = "chat"
	JobAnalyze = "analyze"
)

// Job is one prompt job. The durable copy, written once the job is terminal,
// lives in the store; while it is queued or running its state lives in Redis.
type Job struct {
	ID          string          `json:"id" bson:"_id"`
	Kind        string          `json:"kind" bson:"kind"`
	Status      Status          `json:"status" bson:"status"`
	UserID      string          `json:"user_id" bson:"user_id"`
	Department  string          `json:"department,omitempty" bson:"department,omitempty"`
	KeyID       string          `json:"-" bson:"key_id,omitempty"`
	Model       string          `json:"model" bson:"model"`
	SessionID   string          `json:"session_id,omitempty" bson:"session_id,omitempty"`
	Metadata    map[string]any  `json:"metadata,omitempty" bson:"metadata,omitempty"`
	RequestHash string          `json:"-" bson:"request_hash,omitempty"`
	Result      json.RawMessage `json:"result,omitempty" bson:"-"`
	ResultJSON  string          `json:"-" bson:"result,omitempty"`
	Usage       *Usage          `json:"usage,omitempty" bson:"usage,omitempty"`
	Cached      bool            `json:"cached" bson:"cached"`
	Error       *JobError       `json:"error,omitempty" bson:"error,omitempty"`
	Attempts    int             `json:"attempts" bson:"attempts"`
	WebhookURL  string          `json:"webhook_url,omitempty" bson:"webhook_url,omitempty"`
	// Nodes are the upstream nodes the job's attempts went to, in order.
	Nodes []string `json:"nodes,omitempty" bson:"nodes,omitempty"`
	// RequestedModel is the model name the caller asked for when it is not
	// Model: an alias ("opus"), an undated id, or the model a fallback
	// model answered instead of.
	RequestedModel string `json:"requested_model,omitempty" bson:"requested_model,omitempty"`
	// PricedBy says how CostMicros was priced: "table", or "fallback" for
	// a model the price table lacks (priced as the dearest of its family,
	// or of all); PricedAs is the price-table entry used. Empty when not
	// billed.
	PricedBy string `json:"priced_by,omitempty" bson:"priced_by,omitempty"`
	PricedAs string `json:"priced_as,omitempty" bson:"priced_as,omitempty"`
	// RouteReason says why model "auto" chose Model.
	RouteReason string `json:"route_reason,omitempty" bson:"route_reason,omitempty"`
	// CostMicros is the billed cost in micro-USD.
	CostMicros int64 `json:"-" bson:"cost_micros"`
	// BatchID and CustomID are set on a request of a Message Batch; its
	// record lives with the batch's other results (store.Store).
	BatchID    string     `json:"batch_id,omitempty" bson:"batch_id,omitempty"`
	CustomID   string     `json:"custom_id,omitempty" bson:"custom_id,omitempty"`
	CreatedAt  time.Time  `json:"created_at" bson:"created_at"`
	StartedAt  *time.Time `json:"started_at" bson:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at" bson:"finished_at,omitempty"`
}

// JobError is the caller-safe error of a failed or canceled job.
type JobError struct {
	Type    string `json:"type" bson:"type"`
	Message string `json:"message" bson:"message"`
}

// Usage is the token usage of one call, in the Anthropic shape.
type Usage struct {
	InputTokens              int64          `json:"input_tokens" bson:"input_tokens"`
	OutputTokens             int64          `json:"output_tokens" bson:"output_tokens"`
	CacheCreationInputTokens int64          `json:"cache_creation_input_tokens" bson:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64          `json:"cache_read_input_tokens" bson:"cache_read_input_tokens"`
	CacheCreation            *CacheCreation `json:"cache_creation,omitempty" bson:"cache_creation,omitempty"`
}

// CacheCreation splits cache-write tokens by cache lifetime (they are
// priced differently).
type CacheCreation struct {
	Ephemeral5mInputTokens int64 `json:"ephemeral_5m_input_tokens" bson:"ephemeral_5m_input_tokens"`
	Ephemeral1hInputTokens int64 `json:"ephemeral_1h_input_tokens" bson:"ephemeral_1h_input_tokens"`
}

// Total returns every token the call consumed, all classes included.
func (u Usage) Total() int64 {
	return u.InputTokens + u.OutputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// Principal is the authenticated caller behind an API key.
type Principal struct {
	KeyID      string
	UserID     string
	Department string
	Tier       string
	Scopes     []string
	// RequestsPerDay caps the key's submits per quota day (0 = no cap).
	RequestsPerDay int
	// OnQuota is "defer" to park a job that would exceed a budget until the
	// budget resets, instead of refusing it.
	OnQuota string
	// WebhookURL is the key's default webhook for jobs that name none.
	WebhookURL string
}

// Scopes a key can carry.
const (
	ScopeJobs    = "jobs"
	ScopeBatches = "batches"
	ScopeAdmin   = "admin"
	// ScopeAdminRead allows the admin routes that only read (GET).
	ScopeAdminRead = "admin:read"
)

// KnownScopes lists every scope, for validation.
var KnownScopes = []string{ScopeJobs, ScopeBatches, ScopeAdmin, ScopeAdminRead}

// Has reports whether p carries scope; admin implies every scope and
// admin:read is implied by admin.
func (p Principal) Has(scope string) bool {
	for _, s := range p.Scopes {
		if s == scope || s == ScopeAdmin {
			return true
		}
	}
	return false
}

// MessageRequest is the body claudeq sends upstream: a Messages API request.
// Messages, System, Tools, ToolChoice and Thinking stay raw JSON (in
// canonical form once validated) so that no content shape is lost.
type MessageRequest struct {
	Model         string          `json:"model"`
	MaxTokens     int             `json:"max_tokens"`
	Messages      json.RawMessage `json:"messages"`
	System        json.RawMessage `json:"system,omitempty"`
	Temperature   *float64        `json:"temperature,omitempty"`
	TopP          *float64        `json:"top_p,omitempty"`
	TopK          *int            `json:"top_k,omitempty"`
	StopSequences []string        `json:"stop_sequences,omitempty"`
	Tools         json.RawMessage `json:"tools,omitempty"`
	ToolChoice    json.RawMessage `json:"tool_choice,omitempty"`
	Thinking      json.RawMessage `json:"thinking,omitempty"`
}
