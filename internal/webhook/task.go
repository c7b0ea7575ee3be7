package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/queue"
)

// TypeDeliver is the asynq task type of one webhook delivery (all its
// attempts). It is a task of its own, on queue.Webhooks: a delivery never
// re-runs the job that produced it.
const TypeDeliver = "webhook:deliver"

// TaskTimeout bounds one run of a webhook:deliver task (secrets lookup,
// one attempt, recording it).
const TaskTimeout = 2 * time.Minute

// Payload is the message of a webhook:deliver task.
type Payload struct {
	DeliveryID string          `json:"delivery_id"` // webhook-id and asynq TaskID; see DeliveryID
	JobID      string          `json:"job_id,omitempty"`
	UserID     string          `json:"user_id"` // whose secrets sign it
	URL        string          `json:"url"`
	EventType  string          `json:"event_type,omitempty"` // for logs
	Event      json.RawMessage `json:"event"`                // the body, sent and signed as is
}

// DeliveryID returns the webhook-id of the event typ of subject (a job or
// batch id): deterministic, so that enqueueing the same event twice (a
// re-run worker) gives the same asynq TaskID and one delivery, and opaque
// ("msg_" + 32 hex digits), whatever characters the subject id holds.
func DeliveryID(subject, typ string) string {
	h := sha256.Sum256([]byte(subject + "\x00" + typ))
	return "msg_" + hex.EncodeToString(h[:16])
}

// NewDeliverTask returns the webhook:deliver task for p, with TaskID =
// p.DeliveryID, queue queue.Webhooks, MaxRetry DefaultSchedule.MaxRetry()
// (7) and Timeout TaskTimeout. opts come last and override these (pass
// asynq.MaxRetry(s.MaxRetry()) for another schedule s).
func NewDeliverTask(p Payload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.DeliveryID == "" || p.UserID == "" || p.URL == "" || len(p.Event) == 0 {
		return nil, fmt.Errorf("webhook: NewDeliverTask: delivery_id, user_id, url and event are required")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	o := []asynq.Option{
		asynq.TaskID(p.DeliveryID), asynq.Queue(queue.Webhooks),
		asynq.MaxRetry(DefaultSchedule.MaxRetry()), asynq.Timeout(TaskTimeout),
	}
	return asynq.NewTask(TypeDeliver, b, append(o, opts...)...), nil
}

// Attempt is the record of one delivery attempt. Its fields match
// store.Attempt one for one, so a store.Attempt converts from it directly:
// store.Attempt(a).
type Attempt struct {
	ID         string // unique per attempt (UUIDv7)
	DeliveryID string // webhook-id
	JobID      string
	UserID     string
	URL        string
	Attempt    int       // 1-based
	At         time.Time // when the attempt started
	Status     int       // HTTP status, 0 when no response
	LatencyMS  int64
	Error      string // "" on success
}

// Recorder keeps delivery attempts (store.Store, through RecorderFunc).
type Recorder interface {
	RecordAttempt(ctx context.Context, a Attempt) error
}

// RecorderFunc adapts a function to Recorder.
type RecorderFunc func(ctx context.Context, a Attempt) error

// RecordAttempt calls f.
func (f RecorderFunc) RecordAttempt(ctx context.Context, a Attempt) error { return f(ctx, a) }

// Handler runs webhook:deliver tasks: one attempt per run, recorded, and an
// error carrying the schedule's next wait so that asynq retries (see
// RetryDelay). It is safe for concurrent use once built; do not change its
// fields afterwards.
type Handler struct {
	// Secrets returns the signing secrets of a user (SecretStore.Secrets).
	// Required.
	Secrets func(ctx context.Context, userID string) ([]string, error)
	// Deliverer sends the message. Required.
	Deliverer *Deliverer
	// Recorder keeps every attempt; nil records nothing. A recording
	// failure is logged and does not fail the delivery (retrying would
	// send the message again).
	Recorder Recorder
	// Schedule is the retry schedule; nil means DefaultSchedule. The
	// handler gives up (asynq.SkipRetry) after len(Schedule) attempts,
	// whatever the task's MaxRetry.
	Schedule Schedule
	// OnGone, if set, is called when the receiver answers 410 Gone: the
	// endpoint should be disabled. Its error is logged.
	OnGone func(ctx context.Context, p Payload) error
	// InfraRetry is the wait after our own store failed (secrets lookup);
	// zero means 10 s. Such errors satisfy IsInfra.
	InfraRetry time.Duration
	// Now is the clock of attempt records; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics counts every attempt by outcome (success, retry, failed);
	// nil counts nothing. A run that made no attempt (secrets unavailable)
	// is not counted.
	Metrics *metrics.Metrics
}

// infraError marks a failure of our own stores: no attempt was made, so it
// should not use up one of the delivery's retries.
type infraError struct{ err error }

func (e infraError) Error() string { return e.err.Error() }
func (e infraError) Unwrap() error { return e.err }

// IsInfra reports whether err is a webhook handler failure of our own
// stores, made before any attempt. Combine it into asynq's IsFailure so
// that an outage does not use up a delivery's retries:
//
//	IsFailure: func(err error) bool { return job.IsFailure(err) && !webhook.IsInfra(err) }
func IsInfra(err error) bool {
	var ie infraError
	return errors.As(err, &ie)
}

// ProcessTask implements asynq.Handler.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p Payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.DeliveryID == "" || p.URL == "" || p.UserID == "" {
		return fmt.Errorf("%s: bad payload: %v: %w", TypeDeliver, err, asynq.SkipRetry)
	}
	log := h.logger().With("task_id", p.DeliveryID, "job_id", p.JobID, "user_id", p.UserID)
	schedule := h.Schedule
	if schedule == nil {
		schedule = DefaultSchedule
	}
	retried, _ := asynq.GetRetryCount(ctx)
	n := retried + 1

	secrets, err := h.Secrets(ctx, p.UserID)
	if err != nil || len(secrets) == 0 {
		if err == nil {
			err = errors.New("no secret")
		}
		wait := h.InfraRetry
		if wait <= 0 {
			wait = 10 * time.Second
		}
		return infraError{&claudeq.Error{Kind: claudeq.KindUnavailable, Op: "webhook.Handler", Msg: "webhook secrets unavailable", Err: err, RetryAfter: wait}}
	}

	at := h.now()
	res := h.Deliverer.Deliver(ctx, Delivery{ID: p.DeliveryID, URL: p.URL, Secrets: secrets, Body: p.Event})
	h.record(ctx, log, p, n, at, res)

	if res.Err == nil {
		h.Metrics.WebhookDelivery(metrics.WebhookSuccess)
		log.Debug("webhook delivered", "attempt", n, "status", res.Status, "latency", res.Latency)
		return nil
	}
	if res.Disable {
		h.Metrics.WebhookDelivery(metrics.WebhookFailed)
		log.Warn("webhook endpoint gone (410): giving up and disabling it", "url", p.URL)
		if h.OnGone != nil {
			if err := h.OnGone(context.WithoutCancel(ctx), p); err != nil {
				log.Error("disable webhook endpoint", "err", err)
			}
		}
		return fmt.Errorf("%s: %w: %w", TypeDeliver, res.Err, asynq.SkipRetry)
	}
	if claudeq.ErrorKind(res.Err) == claudeq.KindInvalidRequest {
		// The URL no longer passes the policy: retrying cannot help.
		h.Metrics.WebhookDelivery(metrics.WebhookFailed)
		log.Warn("webhook URL refused by policy; giving up", "err", res.Err)
		return fmt.Errorf("%s: %w: %w", TypeDeliver, res.Err, asynq.SkipRetry)
	}
	next, ok := schedule.Next(n)
	if !ok {
		h.Metrics.WebhookDelivery(metrics.WebhookFailed)
		log.Warn("webhook delivery failed for the last time; giving up", "attempt", n, "err", res.Err)
		return fmt.Errorf("%s: attempt %d of %d: %w: %w", TypeDeliver, n, len(schedule), res.Err, asynq.SkipRetry)
	}
	next = max(next, res.RetryAfter, time.Millisecond) // 0 would read as "no delay given"
	h.Metrics.WebhookDelivery(metrics.WebhookRetry)
	log.Info("webhook delivery failed; will retry", "attempt", n, "status", res.Status, "retry_in", next, "err", res.Err)
	return &claudeq.Error{
		Kind:       claudeq.KindUpstream,
		Op:         "webhook.Handler",
		Msg:        fmt.Sprintf("attempt %d failed", n),
		Err:        res.Err,
		RetryAfter: next,
	}
}

func (h *Handler) record(ctx context.Context, log *slog.Logger, p Payload, n int, at time.Time, res Result) {
	if h.Recorder == nil {
		return
	}
	a := Attempt{
		ID: uuid.Must(uuid.NewV7()).String(), DeliveryID: p.DeliveryID, JobID: p.JobID, UserID: p.UserID,
		URL: p.URL, Attempt: n, At: at.UTC(), Status: res.Status, LatencyMS: res.Latency.Milliseconds(),
	}
	if res.Err != nil {
		a.Error = claudeq.ErrorMessage(res.Err)
		if a.Error == "internal error" {
			a.Error = res.Err.Error()
		}
		if len(a.Error) > 1024 {
			a.Error = strings.ToValidUTF8(a.Error[:1024], "")
		}
	}
	// The attempt happened: record it even if the task's context ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := h.Recorder.RecordAttempt(rctx, a); err != nil {
		log.Error("record webhook attempt", "attempt", n, "err", err)
	}
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.New(slog.DiscardHandler)
}
