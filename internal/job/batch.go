package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/batch"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/webhook"
)

// A Message Batch's requests run as ordinary jobs (job:run on the batch
// queue, Payload.BatchID set) through JobHandler. What is particular to
// them lives here:
//
//   - the batch reserved the worst case of all its requests at once, under
//     its own id; each request closes its part of that reservation
//     (quota.SettlePart / ReleasePart) when it ends;
//   - each request is counted once in the batch's live state
//     (batch.State.Mark), and the last one ends the batch;
//   - an ended batch is finalized: the rest of its reservation released,
//     its document saved, its batch.ended webhook sent, and it is retired
//     from the sweeper's set;
//   - the sweeper (batch:sweep) cancels the queued requests of a canceling
//     batch, expires those of a batch past its expires_at, finalizes what
//     a crash left unfinalized, and deletes batches past retention.
//
// Every step is idempotent, so a re-run (asynq delivers at least once, a
// sweep may overlap another) changes nothing twice.

// TypeBatchSweep is the task type of the batch sweeper.
const TypeBatchSweep = "batch:sweep"

// BatchSweepPayload names the batch to sweep; empty: every active batch,
// and the retention of ended ones.
type BatchSweepPayload struct {
	BatchID string `json:"batch_id,omitempty"`
}

// NewBatchSweepTask returns a batch:sweep task for one batch (a cancel, a
// batch that ended at submit), on the critical queue, enqueued once per
// reason.
func NewBatchSweepTask(batchID, reason string) *asynq.Task {
	b, _ := json.Marshal(BatchSweepPayload{BatchID: batchID})
	return asynq.NewTask(TypeBatchSweep, b, asynq.TaskID(TypeBatchSweep+":"+reason+":"+batchID),
		asynq.Queue(queue.Critical), asynq.MaxRetry(25), asynq.Timeout(30*time.Minute), asynq.Retention(time.Hour))
}

// BatchStore is what batches need of the durable store.
type BatchStore interface {
	SaveJobs(ctx context.Context, jobs []*claudeq.Job) error
	SaveBatch(ctx context.Context, b *claudeq.Batch) error
	BatchesEndedBefore(ctx context.Context, t time.Time) ([]string, error)
	DeleteBatch(ctx context.Context, id string) error
}

// PartQuota closes the parts of a batch's reservation (quota.Quota).
type PartQuota interface {
	SettlePart(ctx context.Context, resID, partID string, reserved, actual claudeq.Micros) error
	ReleasePart(ctx context.Context, resID, partID string, reserved claudeq.Micros) error
	Release(ctx context.Context, jobID string) error
}

// Batches handles what batch requests do beyond a job, and runs
// batch:sweep tasks. It is safe for concurrent use.
type Batches struct {
	State    *batch.State
	Store    BatchStore
	Queue    *queue.Queue
	Quota    PartQuota // nil: no budgets
	Notifier *Notifier // nil: no batch.ended webhook
	Now      func() time.Time
	Logger   *slog.Logger
	// IdempotencyTTL is how long a canceled or expired request's job state
	// stays in Redis.
	IdempotencyTTL time.Duration
	// Retention is how long an ended batch and its results are kept.
	// Default 29 days.
	Retention time.Duration
}

// ItemEnded closes the part of the reservation of batch request p whose
// terminal record j is durable, counts it in its batch, and finalizes the
// batch when it was the last request.
func (b *Batches) ItemEnded(ctx context.Context, p *Payload, j *claudeq.Job) error {
	if b.Quota != nil {
		var err error
		// Settled when billed: a succeeded item, or a failed one whose
		// attempt was billed (its worker stopped after the ledger entry).
		if j.Status == claudeq.StatusSucceeded || j.CostMicros > 0 {
			err = b.Quota.SettlePart(ctx, p.BatchID, p.ID, claudeq.Micros(p.EstimateMicros), claudeq.Micros(j.CostMicros))
		} else {
			err = b.Quota.ReleasePart(ctx, p.BatchID, p.ID, claudeq.Micros(p.EstimateMicros))
		}
		if err != nil {
			return Infra(err)
		}
	}
	m, err := b.State.Mark(ctx, p.BatchID, p.CustomID, claudeq.BatchResultOf(j), b.Now().UTC())
	if err != nil {
		return Infra(err)
	}
	if m == batch.MarkedLast {
		b.finalizeOrLeave(ctx, p.BatchID)
	}
	return nil
}

// finalizeOrLeave finalizes an ended batch; a failure is left to the
// sweeper, which finalizes every ended batch it still has.
func (b *Batches) finalizeOrLeave(ctx context.Context, id string) {
	if err := b.Finalize(ctx, id); err != nil {
		b.Logger.Warn("finalizing an ended batch failed; the sweeper will", "batch_id", id, "err", err)
	}
}

// Finalize does what the end of batch id needs, once it has ended:
// release what its reservation still holds, save its document, enqueue its
// batch.ended webhook, retire it from the sweeper's set. Idempotent; a
// batch that has not ended is left alone.
func (b *Batches) Finalize(ctx context.Context, id string) error {
	bt, err := b.State.Get(ctx, id)
	if claudeq.ErrorKind(err) == claudeq.KindNotFound {
		return b.State.Retire(ctx, id)
	}
	if err != nil {
		return err
	}
	if bt.Status != claudeq.BatchEnded {
		return nil
	}
	if b.Quota != nil {
		if err := b.Quota.Release(ctx, id); err != nil {
			return err
		}
	}
	if err := b.Store.SaveBatch(ctx, bt); err != nil {
		return err
	}
	if err := b.Notifier.NotifyBatch(ctx, bt); err != nil {
		return err
	}
	if err := b.State.Retire(ctx, id); err != nil {
		return err
	}
	b.Logger.Info("batch ended", "batch_id", id, "succeeded", bt.Counts.Succeeded, "errored", bt.Counts.Errored,
		"canceled", bt.Counts.Canceled, "expired", bt.Counts.Expired)
	return nil
}

// ProcessTask implements asynq.Handler for batch:sweep.
func (b *Batches) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p BatchSweepPayload
	if len(t.Payload()) > 0 {
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("batch:sweep: bad payload: %v: %w", err, asynq.SkipRetry)
		}
	}
	ids := []string{p.BatchID}
	if p.BatchID == "" {
		var err error
		if ids, err = b.State.Active(ctx); err != nil {
			return Infra(err)
		}
	}
	var errs []error
	for _, id := range ids {
		if err := b.sweep(ctx, id); err != nil {
			b.Logger.Warn("batch sweep failed; will retry", "batch_id", id, "err", err)
			errs = append(errs, err)
		}
	}
	if p.BatchID == "" {
		if err := b.retire(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Infra(err)
	}
	return nil
}

// sweep moves batch id along: finalize it when ended, cancel its queued
// requests when canceling, expire them when past expires_at.
func (b *Batches) sweep(ctx context.Context, id string) error {
	bt, err := b.State.Get(ctx, id)
	if claudeq.ErrorKind(err) == claudeq.KindNotFound {
		return b.State.Retire(ctx, id)
	}
	if err != nil {
		return err
	}
	switch {
	case bt.Status == claudeq.BatchEnded:
		return b.Finalize(ctx, id)
	case bt.Status == claudeq.BatchCanceling:
		return b.Drain(ctx, bt, claudeq.ResultCanceled)
	case !b.Now().Before(bt.ExpiresAt):
		return b.Drain(ctx, bt, claudeq.ResultExpired)
	}
	return nil
}

// Drain ends every request of bt that is still queued (or waiting for a
// retry) with result r, canceled or expired: its job state is flipped to
// canceled (so that a worker that picks up its task leaves it alone), its
// task deleted, its record written, its part of the reservation released,
// and it is counted. Requests already running finish on their own.
func (b *Batches) Drain(ctx context.Context, bt *claudeq.Batch, r claudeq.BatchResultType) error {
	msg := "the batch was canceled before this request was processed"
	if r == claudeq.ResultExpired {
		msg = "the batch expired (24 h after it was created) before this request was processed"
	}
	insp := b.Queue.Inspector()
	var cursor uint64
	drained := 0
	for {
		items, next, err := b.State.Pending(ctx, bt.ID, cursor, 500)
		if err != nil {
			return err
		}
		now := b.Now().UTC()
		var ours []batch.Item
		for _, it := range items {
			id := claudeq.BatchItemID(bt.ID, it.CustomID)
			prev, err := b.Queue.Cancel(ctx, id, bt.UserID, now)
			switch {
			case claudeq.ErrorKind(err) == claudeq.KindNotFound:
				ours = append(ours, it) // no job state: never queued, or long gone
			case err != nil:
				return err
			case prev == claudeq.StatusQueued || prev == claudeq.StatusCanceled:
				ours = append(ours, it)
			}
		}
		if len(ours) > 0 {
			jobs := make([]*claudeq.Job, len(ours))
			for i, it := range ours {
				id := claudeq.BatchItemID(bt.ID, it.CustomID)
				// Gone, running (a worker took it a moment ago and will find
				// it canceled) or never enqueued: nothing to delete then.
				_ = insp.DeleteTask(queue.Batch, id)
				jobs[i] = &claudeq.Job{ID: id, Kind: claudeq.JobBatch, Status: claudeq.StatusCanceled, UserID: bt.UserID,
					Department: bt.Department, KeyID: bt.KeyID, BatchID: bt.ID, CustomID: it.CustomID,
					Error: &claudeq.JobError{Type: string(r), Message: msg}, CreatedAt: bt.CreatedAt, FinishedAt: &now}
			}
			if err := b.Store.SaveJobs(ctx, jobs); err != nil {
				return err
			}
			for i, it := range ours {
				p := &Payload{ID: jobs[i].ID, BatchID: bt.ID, CustomID: it.CustomID, EstimateMicros: it.Reserved}
				if err := b.ItemEnded(ctx, p, jobs[i]); err != nil {
					return err
				}
				if err := b.Queue.Finish(ctx, jobs[i].ID, claudeq.StatusCanceled, now, "", b.IdempotencyTTL); err != nil {
					return err
				}
			}
			drained += len(ours)
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if drained > 0 {
		b.Logger.Info("batch requests ended unprocessed", "batch_id", bt.ID, "result", r, "requests", drained)
	}
	return nil
}

// retire deletes batches that ended more than Retention ago, results and
// all.
func (b *Batches) retire(ctx context.Context) error {
	ret := b.Retention
	if ret <= 0 {
		ret = 29 * 24 * time.Hour
	}
	ids, err := b.Store.BatchesEndedBefore(ctx, b.Now().Add(-ret))
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := b.Store.DeleteBatch(ctx, id); err != nil {
			return err
		}
		if err := b.State.Delete(ctx, id); err != nil {
			return err
		}
	}
	if len(ids) > 0 {
		b.Logger.Info("batches past retention deleted", "batches", len(ids))
	}
	return nil
}

// ReconcileReservation closes the reservation of batch id when the batch
// is over (ended, or unknown to Redis); a running batch keeps it. For the
// reconciler, which must never release a running batch's reservation.
func (b *Batches) ReconcileReservation(ctx context.Context, id string) error {
	bt, err := b.State.Get(ctx, id)
	switch {
	case claudeq.ErrorKind(err) == claudeq.KindNotFound:
	case err != nil:
		return err
	case bt.Status != claudeq.BatchEnded:
		return nil
	}
	if b.Quota == nil {
		return nil
	}
	return b.Quota.Release(ctx, id)
}

// NotifyBatch enqueues the batch.ended event of bt if it has a webhook URL;
// enqueueing it twice is one delivery.
func (n *Notifier) NotifyBatch(ctx context.Context, bt *claudeq.Batch) error {
	if n == nil || bt.WebhookURL == "" {
		return nil
	}
	c := bt.Counts
	body, err := json.Marshal(webhook.Event{Type: webhook.EventBatchEnded, Timestamp: n.Now().UTC(), Data: webhook.BatchData{
		BatchID: bt.ID, ProcessingStatus: string(bt.Status),
		RequestCounts: webhook.RequestCounts{Processing: c.Processing, Succeeded: c.Succeeded, Errored: c.Errored,
			Canceled: c.Canceled, Expired: c.Expired},
		ResultsURL: BatchResultsURL(n.PublicURL, bt.ID),
	}})
	if err != nil {
		return err
	}
	sched := n.Schedule
	if sched == nil {
		sched = webhook.DefaultSchedule
	}
	t, err := webhook.NewDeliverTask(webhook.Payload{
		DeliveryID: webhook.DeliveryID(bt.ID, webhook.EventBatchEnded), JobID: bt.ID, UserID: bt.UserID,
		URL: bt.WebhookURL, EventType: webhook.EventBatchEnded, Event: body,
	}, asynq.MaxRetry(sched.MaxRetry()), asynq.Retention(n.Retention))
	if err != nil {
		return err
	}
	_, err = n.Client.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// BatchResultsURL is where the results of batch id are read.
func BatchResultsURL(publicURL, id string) string {
	return strings.TrimRight(publicURL, "/") + "/v1/messages/batches/" + id + "/results"
}
