package job

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/webhook"
)

// Notifier enqueues the webhook of a finished job. Delivery is a task of its
// own (webhook:deliver), so a slow receiver never re-runs or re-bills the
// job. It is safe for concurrent use.
type Notifier struct {
	Client    *asynq.Client
	PublicURL string // base of result_url, e.g. https://claudeq.example.com
	MaxBody   int    // inline the result only while the body stays this small
	Schedule  webhook.Schedule
	// Retention keeps a sent delivery's TaskID taken this long, so that a
	// re-run job does not notify twice.
	Retention time.Duration
	Now       func() time.Time
}

// EventType returns the webhook event of a terminal status.
func EventType(s claudeq.Status) string {
	switch s {
	case claudeq.StatusSucceeded:
		return "job.succeeded"
	case claudeq.StatusCanceled:
		return "job.canceled"
	}
	return "job.failed"
}

// Notify enqueues the event of j if it has a webhook URL. Enqueueing the
// same job's event twice is one delivery (the TaskID is derived from the job
// and event).
func (n *Notifier) Notify(ctx context.Context, j *claudeq.Job, costUSD float64) error {
	if n == nil || j.WebhookURL == "" {
		return nil
	}
	_, err := n.enqueue(ctx, j, costUSD, "")
	return err
}

// Redeliver sends j's event again, with the same webhook-id (receivers
// de-duplicate by it), as a new task. It returns the webhook-id.
func (n *Notifier) Redeliver(ctx context.Context, j *claudeq.Job, costUSD float64) (string, error) {
	if j.WebhookURL == "" {
		return "", claudeq.Errorf(claudeq.KindInvalidRequest, "job %s has no webhook_url", j.ID)
	}
	return n.enqueue(ctx, j, costUSD, "redeliver:"+n.Now().UTC().Format("20060102T150405.000000000"))
}

func (n *Notifier) enqueue(ctx context.Context, j *claudeq.Job, costUSD float64, taskSuffix string) (string, error) {
	typ := EventType(j.Status)
	body, err := webhook.EncodeJobEvent(typ, n.Now().UTC(), webhook.JobData{
		JobID: j.ID, Status: j.Status, Model: j.Model, Usage: j.Usage, CostUSD: costUSD,
		ResultURL: strings.TrimRight(n.PublicURL, "/") + "/api/claude/jobs/" + j.ID,
		Error:     j.Error, Metadata: j.Metadata, Result: j.Result,
	}, n.MaxBody)
	if err != nil {
		return "", err
	}
	sched := n.Schedule
	if sched == nil {
		sched = webhook.DefaultSchedule
	}
	id := webhook.DeliveryID(j.ID, typ)
	opts := []asynq.Option{asynq.MaxRetry(sched.MaxRetry()), asynq.Retention(n.Retention)}
	if taskSuffix != "" {
		opts = append(opts, asynq.TaskID(id+":"+taskSuffix))
	}
	t, err := webhook.NewDeliverTask(webhook.Payload{
		DeliveryID: id, JobID: j.ID, UserID: j.UserID, URL: j.WebhookURL, EventType: typ, Event: body,
	}, opts...)
	if err != nil {
		return "", err
	}
	_, err = n.Client.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return id, nil
	}
	return id, err
}
