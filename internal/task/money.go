package task

import (
	"context"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/store"
)

// Quota is the budget side of a job: its reservation, made at submit, is
// settled to the real cost or released.
type Quota interface {
	Hold(ctx context.Context, jobID string) (quota.Hold, error)
	Settle(ctx context.Context, jobID string, actual claudeq.Micros) error
	Release(ctx context.Context, jobID string) error
	Day(t time.Time) string
}

// Reserver books a deferred job's budget when it finally runs.
type Reserver interface {
	Reserve(ctx context.Context, r quota.Reservation) error
}

// reserveDeferred books the budget of a job parked until its budget reset.
// Still over budget (another job took it first): park it again until the
// next reset, without using up a retry.
func (h *JobHandler) reserveDeferred(ctx context.Context, p *job.Payload) error {
	r, ok := h.Quota.(Reserver)
	if !p.Deferred || !ok {
		return nil
	}
	err := r.Reserve(ctx, job.Reservation(p.ID, p.UserID, p.Department, claudeq.Micros(p.EstimateMicros)))
	if err == nil {
		return nil
	}
	if qerr := h.Queue.Requeue(context.WithoutCancel(ctx), p.ID, "deferred until the budget resets", ""); qerr != nil {
		return job.Infra(qerr)
	}
	return job.Infra(err) // a quota error carries RetryAfter = until the reset
}

// Pricer prices real usage.
type Pricer interface {
	CostFor(answered, requested string, u claudeq.Usage, batch bool, at time.Time) (claudeq.Micros, pricing.Priced, error)
}

// bill prices a succeeded job and returns its ledger entry (nil without
// pricing): j.Model is the model that answered, requested the one the
// request asked for. The entry lands on the day its reservation was made,
// so a job reserved at 23:59:59 and finished after midnight is billed to
// that day.
func (h *JobHandler) bill(ctx context.Context, p *job.Payload, j *claudeq.Job, requested string) (*store.LedgerEntry, error) {
	if h.Pricing == nil || j.Usage == nil {
		return nil, nil
	}
	batch := p.BatchID != "" // billed at the batch price
	cost, priced, err := h.Pricing.CostFor(j.Model, requested, *j.Usage, batch, *j.FinishedAt)
	if err != nil {
		// Every model has a price; only usage the upstream reported
		// negative gets here. Never bill zero silently: retry later.
		return nil, err
	}
	j.CostMicros = int64(cost)
	j.PricedBy, j.PricedAs = priced.By(), priced.Model
	day := ""
	if h.Quota != nil {
		if hold, err := h.Quota.Hold(ctx, reservationOf(p)); err == nil {
			day = hold.Day
		} else if claudeq.ErrorKind(err) != claudeq.KindNotFound {
			return nil, job.Infra(err)
		}
		if day == "" {
			day = h.Quota.Day(p.CreatedAt)
		}
	}
	return job.Entry(job.Bill{ID: p.ID, UserID: p.UserID, Department: p.Department, KeyID: p.KeyID, Model: j.Model,
		Usage: *j.Usage, Cost: cost, Priced: priced, Day: day, At: *j.FinishedAt, Batch: batch}), nil
}

// reservationOf names the reservation job p is billed against: its own,
// or its batch's.
func reservationOf(p *job.Payload) string {
	if p.BatchID != "" {
		return p.BatchID
	}
	return p.ID
}

// settle closes a finished job's reservation: to its cost when it
// succeeded, released otherwise; a batch request closes its part of the
// batch's reservation and is counted in its batch. Idempotent, so a re-run
// calls it again.
func (h *JobHandler) settle(ctx context.Context, p *job.Payload, j *claudeq.Job) error {
	if p.BatchID != "" {
		if h.Batches == nil {
			return fmt.Errorf("job %s is a batch request but the worker has no batch handling", p.ID)
		}
		return h.Batches.ItemEnded(ctx, p, j)
	}
	if h.Quota == nil {
		return nil
	}
	var err error
	if j.Status == claudeq.StatusSucceeded {
		err = h.Quota.Settle(ctx, j.ID, claudeq.Micros(j.CostMicros))
	} else {
		err = h.Quota.Release(ctx, j.ID)
	}
	if err != nil {
		return job.Infra(err)
	}
	return nil
}

func quotaMicros(m int64) claudeq.Micros { return claudeq.Micros(m) }
