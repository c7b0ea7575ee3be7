// Package job is the life of a request, shared by the api (which admits
// jobs and batch requests) and the worker (which runs them): the job:run
// task's payload, the error classes that decide what asynq does next, the
// webhook notifier, the batch lifecycle, and the keeper of answers that
// were paid for and not yet billed. It imports no surface (api) and no
// worker code (task); both import it.
package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// Payload is the message of a job:run task: everything the worker needs,
// so that a queued job costs one asynq task and a small state hash.
type Payload struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	UserID      string          `json:"user_id"`
	Department  string          `json:"department,omitempty"`
	UserType    string          `json:"user_type,omitempty"` // the key's tier: user_type of the upstream metrics
	KeyID       string          `json:"key_id,omitempty"`
	SessionID   string          `json:"session_id,omitempty"`
	Metadata    map[string]any  `json:"metadata,omitempty"`
	Request     json.RawMessage `json:"request"` // canonical Messages API body, sent upstream as is
	RequestHash string          `json:"request_hash"`
	CacheKey    string          `json:"cache_key,omitempty"` // "" = do not write the cache
	WebhookURL  string          `json:"webhook_url,omitempty"`
	// FallbackModels answer, in order, when the requested model is
	// overloaded or has no healthy node.
	FallbackModels []string `json:"fallback_models,omitempty"`
	RouteReason    string   `json:"route_reason,omitempty"`
	// RequestedModel is the model name the caller asked for when it is not
	// the request's model (an alias, an undated id): shown on the job.
	RequestedModel string `json:"requested_model,omitempty"`
	// Deferred marks a job parked until its budget reset: the worker
	// reserves EstimateMicros before running it.
	Deferred       bool      `json:"deferred,omitempty"`
	EstimateMicros int64     `json:"estimate_micros,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	// BatchID and CustomID make the job a request of a Message Batch: it
	// is billed at the batch price against its share (EstimateMicros) of
	// the batch's reservation, and counted in its batch (Batches).
	BatchID  string `json:"batch_id,omitempty"`
	CustomID string `json:"custom_id,omitempty"`
}

// infraError marks a failure of our own stores (Redis, MongoDB): the job is
// retried without using up one of its retries, so an outage of any length
// loses no job.
type infraError struct{ err error }

func (e infraError) Error() string { return e.err.Error() }
func (e infraError) Unwrap() error { return e.err }

// Infra wraps err as a store failure.
func Infra(err error) error { return infraError{err} }

// waitError marks an attempt that found no healthy upstream node: the job
// waits for one without using up a retry (for JobHandler.NoUpstreamWait).
type waitError struct{ err error }

func (e waitError) Error() string { return e.err.Error() }
func (e waitError) Unwrap() error { return e.err }

// MaxRetry is the asynq.MaxRetry of a job task whose job may be retried
// jobMaxRetries times (CLAUDEQ_JOB_MAX_RETRIES): one more than that. The
// handler ends the job itself once those retries are used up; the spare
// one keeps asynq from archiving a job whose last counted attempt met a
// store outage or a fleet without a healthy node (errors that use up no
// retry, but that asynq v0.26 archives all the same once a task's retries
// are spent).
func MaxRetry(jobMaxRetries int) asynq.Option { return asynq.MaxRetry(jobMaxRetries + 1) }

// IsFailure is asynq's Config.IsFailure: store outages, and a fleet with no
// healthy node for a while, do not count against a job's retries.
func IsFailure(err error) bool {
	var ie infraError
	var we waitError
	return !errors.As(err, &ie) && !errors.As(err, &we)
}

// Wait marks an attempt that found no healthy upstream node: the job waits
// for one without using up a retry.
func Wait(err error) error { return waitError{err} }

// ErrWorkerLost is the error of a job whose attempts all died with their
// worker.
const ErrWorkerLost = "worker_lost"

// ErrQueueLost is the error of a job whose task vanished from the queue
// while its state still said queued: Redis lost writes it had
// acknowledged (killed or restarted without a durable append-only file).
const ErrQueueLost = "queue_lost"

// Text returns the text of a Messages API content value: the string itself,
// or the text blocks of an array joined, with other blocks named in
// brackets.
func Text(content json.RawMessage) string {
	content = bytes.TrimSpace(content)
	if len(content) == 0 {
		return ""
	}
	if content[0] == '"' {
		var s string
		_ = json.Unmarshal(content, &s)
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(content, &blocks); err != nil {
		return ""
	}
	var b strings.Builder
	for i, bl := range blocks {
		if i > 0 {
			b.WriteString("\n")
		}
		if bl.Type == "text" {
			b.WriteString(bl.Text)
		} else {
			b.WriteString("[" + bl.Type + "]")
		}
	}
	return b.String()
}
