package job

import (
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/store"
)

// The money steps of a request, written once: every surface (jobs,
// /v1/messages, batches) and the worker reserve with Reservation and bill
// with Entry.

// Reservation is the budget reservation of request id (a job id, a batch
// id, an interactive request's id) of user in dept, for amount: its worst
// case, reserved at every scope (user, department, gateway) at once.
func Reservation(id, user, dept string, amount claudeq.Micros) quota.Reservation {
	return quota.Reservation{JobID: id, UserID: user, Department: dept, Amount: claudeq.Micros(amount)}
}

// Bill is what Entry needs to know of a priced call.
type Bill struct {
	ID         string // the ledger entry's _id and job id: the request's own
	UserID     string
	Department string
	KeyID      string
	Model      string // the model that answered
	Usage      claudeq.Usage
	Cost       claudeq.Micros
	Priced     pricing.Priced // how Cost was priced (pricing.Table.CostFor)
	Day        string         // the quota day the reservation was made on
	At         time.Time
	// Batch: billed at the batch price; Interactive: a POST /v1/messages
	// request, not a job.
	Batch, Interactive bool
}

// Entry is the ledger entry of b: unique per request id, so that a request
// is billed at most once however often it runs. It records the price-table
// entry used when it is not the answering model's own, and a fallback
// price as such.
func Entry(b Bill) *store.LedgerEntry {
	e := &store.LedgerEntry{ID: b.ID, JobID: b.ID, UserID: b.UserID, Department: b.Department, KeyID: b.KeyID,
		Model: b.Model, Usage: b.Usage, CostMicros: int64(b.Cost), Day: b.Day, At: b.At.UTC(), Batch: b.Batch,
		Interactive: b.Interactive}
	if b.Priced.Model != "" && (b.Priced.Fallback || b.Priced.Model != b.Model) {
		e.PricedAs = b.Priced.Model
	}
	if b.Priced.Fallback {
		e.PricedBy = pricing.ByFallback
	}
	return e
}
