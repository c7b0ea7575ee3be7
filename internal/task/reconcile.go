package task

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/claudeq/claudeq/internal/job"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/store"
)

// JobSaver writes a terminal job record directly.
type JobSaver interface {
	JobStore
	SaveJob(ctx context.Context, j *claudeq.Job) error
}

// ReconcileHandler runs maintenance:reconcile tasks. asynq archives a task
// whose every attempt ended with its worker dying (a crash uses up a retry
// and no handler runs to say so); without this sweep such a job would stay
// "running" forever. The sweep gives each one a terminal failed record.
type ReconcileHandler struct {
	Queue  *queue.Queue
	Store  JobSaver
	Now    func() time.Time
	Logger *slog.Logger
	// Quota, when set, also has its stale reservations reconciled: a
	// reservation older than StaleAfter whose job finished is settled to the
	// job's cost (or released), and one whose job vanished is released.
	Quota      StaleQuota
	StaleAfter time.Duration
	// Ledger, when set, is asked about a reservation that has no job: an
	// interactive request (POST /v1/messages) whose api died after its
	// ledger entry was written but before it settled is settled to the
	// entry's cost instead of released.
	Ledger LedgerReader
	// Notifier, when set, sends the job.failed webhook of a job failed
	// here whose webhook URL is known (worker_lost; a queue_lost job's URL
	// was lost with its task).
	Notifier *job.Notifier
	// Batches, when set, ends lost batch requests in their batch and
	// decides over batch reservations, which are never released while
	// their batch runs.
	Batches *job.Batches
	// Outbox and LedgerWriter, when set, write the ledger entries that
	// answered interactive requests left in the Redis outbox (the store
	// was down, and their api stopped before it came back) before any
	// reservation is decided over.
	Outbox       OwedLedger
	LedgerWriter LedgerSaver
}

// OwedLedger is the outbox of ledger entries the store did not take when
// their request was answered (queue.Queue).
type OwedLedger interface {
	OwedLedger(ctx context.Context) (map[string][]byte, error)
	PaidLedger(ctx context.Context, id string) error
}

// LedgerSaver writes one ledger entry, idempotently (store.Store).
type LedgerSaver interface {
	SaveLedger(ctx context.Context, e *store.LedgerEntry) error
}

// payOwed writes the entries waiting in the ledger outbox and drops them
// from it.
func (h *ReconcileHandler) payOwed(ctx context.Context) error {
	if h.Outbox == nil || h.LedgerWriter == nil {
		return nil
	}
	owed, err := h.Outbox.OwedLedger(ctx)
	if err != nil {
		return err
	}
	for id, b := range owed {
		var e store.LedgerEntry
		if err := json.Unmarshal(b, &e); err != nil || e.ID != id {
			h.Logger.Error("a ledger entry in the outbox cannot be read; left there", "id", id, "err", err)
			continue
		}
		if err := h.LedgerWriter.SaveLedger(ctx, &e); err != nil {
			return err
		}
		if err := h.Outbox.PaidLedger(ctx, id); err != nil {
			return err
		}
		h.Logger.Warn("wrote a ledger entry its api could not", "request_id", id, "user_id", e.UserID, "cost_micros", e.CostMicros)
	}
	return nil
}

// LedgerReader finds the ledger entry billed under an id.
type LedgerReader interface {
	LedgerEntry(ctx context.Context, id string) (*store.LedgerEntry, error)
}

// StaleQuota lists and closes reservations.
type StaleQuota interface {
	Quota
	Stale(ctx context.Context, olderThan time.Duration) ([]string, error)
	Hold(ctx context.Context, jobID string) (quota.Hold, error)
}

// ProcessTask implements asynq.Handler.
func (h *ReconcileHandler) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	insp := h.Queue.Inspector()
	fixed := 0
	for _, qname := range []string{queue.Critical, queue.Default, queue.Batch} {
		for page := 1; ; page++ {
			tasks, err := insp.ListArchivedTasks(qname, asynq.PageSize(100), asynq.Page(page))
			if err != nil {
				if errors.Is(err, asynq.ErrQueueNotFound) {
					break
				}
				return job.Infra(err)
			}
			for _, ti := range tasks {
				if ti.Type != TypeJobRun {
					continue
				}
				done, err := h.reconcile(ctx, ti)
				if err != nil {
					return job.Infra(err)
				}
				if done {
					fixed++
				}
			}
			if len(tasks) < 100 {
				break
			}
		}
	}
	if fixed > 0 {
		h.Logger.Warn("reconciled jobs whose workers were lost", "jobs", fixed)
	}
	return h.reconcileQuota(ctx)
}

// reconcileQuota closes reservations whose jobs ended without settling them
// (a worker killed between its write and its settle, Redis restarted) or
// vanished, so that no reservation is leaked.
func (h *ReconcileHandler) reconcileQuota(ctx context.Context) error {
	if err := h.payOwed(ctx); err != nil {
		return job.Infra(err)
	}
	if h.Quota == nil {
		return nil
	}
	ids, err := h.Quota.Stale(ctx, h.StaleAfter)
	if err != nil {
		return job.Infra(err)
	}
	settled, released, lost := 0, 0, 0
	for _, id := range ids {
		if claudeq.IsBatchID(id) {
			if h.Batches != nil {
				if err := h.Batches.ReconcileReservation(ctx, id); err != nil {
					return job.Infra(err)
				}
			}
			continue
		}
		j, err := h.Store.Job(ctx, id)
		switch {
		case err == nil && (j.Status == claudeq.StatusSucceeded || j.CostMicros > 0): // billed (a failed job with a cost: worker_lost after a billed attempt)
			err = h.Quota.Settle(ctx, id, quotaMicros(j.CostMicros))
			settled++
		case err == nil:
			err = h.Quota.Release(ctx, id)
			released++
		case claudeq.ErrorKind(err) == claudeq.KindNotFound:
			st, serr := h.Queue.State(ctx, id)
			switch {
			case serr == nil && !st.Status.Terminal():
				failed, ferr := h.failLost(ctx, st)
				if ferr != nil {
					return job.Infra(ferr)
				}
				if !failed {
					continue // still queued or running (a long backlog)
				}
				lost++ // its job is failed now; its reservation is closed below
			case serr != nil && claudeq.ErrorKind(serr) != claudeq.KindNotFound:
				return job.Infra(serr)
			}
			e, lerr := h.billed(ctx, id)
			switch {
			case lerr != nil:
				return job.Infra(lerr)
			case e != nil:
				err = h.Quota.Settle(ctx, id, quotaMicros(e.CostMicros))
				settled++
			default:
				err = h.Quota.Release(ctx, id)
				released++
			}
		}
		if err != nil {
			return job.Infra(err)
		}
	}
	if settled+released+lost > 0 {
		h.Logger.Warn("reconciled stale reservations", "settled", settled, "released", released, "jobs_lost_from_queue", lost)
	}
	return nil
}

// failLost fails the job of a stale reservation when the queue no longer
// holds its task, so that neither the job nor its reservation waits
// forever. Only the Redis state is failed (its LastError job.ErrQueueLost,
// which the API shows for the state's 24 h), and only if it did not move
// (FailLost): a worker that starts the job after that does not run it.
// The caller then closes the reservation as for any job that is gone:
// settled to the ledger's entry if an attempt was billed, else released.
//
// No record is written to the store: such a state is most often what a
// submit that failed leaves behind (Redis died between the job's state
// and its enqueue, so the client got 503 and the clean-up failed too);
// with appendfsync always it is the only way, since Redis then loses no
// acknowledged enqueue. A job that did get its 202 and whose task Redis
// lost (appendfsync everysec) is told by its state when polled.
//
// Only a queued job qualifies. Redis persists writes in order, so losing
// the tail of them can lose an enqueue after the job's state was created,
// but not a task a worker had already taken: a running job's task is in
// asynq's active list, and asynq gives it back when its worker is gone. A
// running job without a task would mean its worker still has it.
func (h *ReconcileHandler) failLost(ctx context.Context, st *queue.State) (bool, error) {
	if st.Status != claudeq.StatusQueued {
		return false, nil
	}
	has, err := h.Queue.HasTask(ctx, st.ID)
	if err != nil || has {
		return false, err
	}
	ok, err := h.Queue.FailLost(ctx, st, h.Now().UTC(), 24*time.Hour, job.ErrQueueLost)
	if err != nil || !ok {
		return false, err
	}
	h.Logger.Warn("job failed: its task was lost from the queue (or its submit failed)", "job_id", st.ID)
	return true, nil
}

// billed returns job id's ledger entry: an attempt that was answered and
// billed although the job did not finish (its record's write failed, or
// its worker stopped before it). Nil when there is none.
func (h *ReconcileHandler) billed(ctx context.Context, id string) (*store.LedgerEntry, error) {
	if h.Ledger == nil {
		return nil, nil
	}
	e, err := h.Ledger.LedgerEntry(ctx, id)
	if claudeq.ErrorKind(err) == claudeq.KindNotFound {
		return nil, nil
	}
	return e, err
}

func (h *ReconcileHandler) reconcile(ctx context.Context, ti *asynq.TaskInfo) (bool, error) {
	var p job.Payload
	if err := json.Unmarshal(ti.Payload, &p); err != nil || p.ID == "" {
		return false, nil
	}
	st, err := h.Queue.State(ctx, p.ID)
	if err == nil && st.Status.Terminal() {
		return false, nil
	}
	if err != nil && claudeq.ErrorKind(err) != claudeq.KindNotFound {
		return false, err
	}
	if _, err := h.Store.Job(ctx, p.ID); err == nil {
		return false, nil
	} else if claudeq.ErrorKind(err) != claudeq.KindNotFound {
		return false, err
	}
	now := h.Now().UTC()
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(p.Request, &req)
	// The ledger entry is written before the job record: an attempt whose
	// worker stopped between the two was billed.
	billed, err := h.billed(ctx, p.ID)
	if err != nil {
		return false, err
	}
	msg := "every attempt ended with its worker stopping (crash or kill) before the job finished; "
	if billed != nil {
		msg += "an attempt was answered and billed before its worker stopped, but its answer was lost; "
	}
	j := &claudeq.Job{
		ID: p.ID, Kind: p.Kind, Status: claudeq.StatusFailed, UserID: p.UserID, Department: p.Department, KeyID: p.KeyID,
		Model: req.Model, SessionID: p.SessionID, Metadata: p.Metadata, RequestHash: p.RequestHash,
		Attempts: ti.Retried + 1, CreatedAt: p.CreatedAt.UTC(), FinishedAt: &now, BatchID: p.BatchID, CustomID: p.CustomID,
		WebhookURL: p.WebhookURL,
		Error:      &claudeq.JobError{Type: job.ErrWorkerLost, Message: msg + "last error: " + ti.LastErr},
	}
	if billed != nil {
		j.CostMicros, j.Usage = billed.CostMicros, &billed.Usage
	}
	if err := h.Store.SaveJob(ctx, j); err != nil {
		return false, err
	}
	if p.BatchID != "" {
		if h.Batches != nil {
			if err := h.Batches.ItemEnded(ctx, &p, j); err != nil {
				return false, err
			}
		}
	} else if h.Quota != nil {
		closeRes := func() error { return h.Quota.Release(ctx, p.ID) }
		if billed != nil {
			closeRes = func() error { return h.Quota.Settle(ctx, p.ID, quotaMicros(billed.CostMicros)) }
		}
		if err := closeRes(); err != nil {
			return false, err
		}
	}
	if err := h.Notifier.Notify(ctx, j, 0); err != nil {
		return false, err
	}
	h.Logger.Warn("job failed: worker lost", "job_id", p.ID, "attempts", j.Attempts, "billed", billed != nil)
	return true, h.Queue.Finish(ctx, p.ID, claudeq.StatusFailed, now, "", 24*time.Hour)
}
