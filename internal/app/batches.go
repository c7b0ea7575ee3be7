package app

import (
	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/batch"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/job"
)

// newBatches builds the batch side shared by the api (create, cancel) and
// the worker (batch requests, batch:sweep): the live state in Redis, the
// durable copy in the store, parts of the batch's one reservation.
func (a *App) newBatches(cfg config.Config, o Options, n *job.Notifier) *job.Batches {
	b := &job.Batches{
		State: batch.New(a.rdb, cfg.Batches.Retention), Store: a.Store, Queue: a.Queue, Notifier: n,
		Now: o.Now, Logger: o.Logger, IdempotencyTTL: cfg.IdempotencyTTL, Retention: cfg.Batches.Retention,
	}
	if a.Money.Quota != nil {
		b.Quota = a.Money.Quota
	}
	return b
}

// mountBatches adds the Message Batches API to the api.
func (a *App) mountBatches(cfg config.Config, b *job.Batches) {
	a.API.MountBatches(api.BatchDeps{State: b.State, Store: a.Store, Batches: b, Options: api.BatchOptions{
		MaxRequests: cfg.Batches.MaxRequests, MaxBytes: cfg.Batches.MaxBytes, Expiry: cfg.Batches.Expiry, PublicURL: cfg.PublicURL,
	}})
}
