package config

import (
	"fmt"
	"time"
)

// Batches is the part of Config about the Message Batches API
// (/v1/messages/batches, docs/batches.md). Each field names its
// environment variable and default; the defaults are Anthropic's limits.
type Batches struct {
	// MaxRequests caps the requests of one batch.
	// CLAUDEQ_BATCH_MAX_REQUESTS, default 100000.
	MaxRequests int
	// MaxBytes caps the body of a batch create.
	// CLAUDEQ_BATCH_MAX_BYTES, default 268435456 (256 MiB).
	MaxBytes int64
	// Expiry is how long after its creation a batch's unprocessed requests
	// expire. CLAUDEQ_BATCH_EXPIRY, default 24h.
	Expiry time.Duration
	// Retention is how long an ended batch and its results are kept, then
	// deleted. CLAUDEQ_BATCH_RETENTION, default 696h (29 days).
	Retention time.Duration
	// SweepInterval is how often the scheduler sweeps batches: expires
	// requests past expires_at, cancels what a lost cancel left queued,
	// finalizes ended batches, deletes those past retention.
	// CLAUDEQ_BATCH_SWEEP_INTERVAL, default 1m.
	SweepInterval time.Duration
}

func (l *loader) batches() Batches {
	b := Batches{
		MaxRequests:   int(l.int("CLAUDEQ_BATCH_MAX_REQUESTS", 100_000, 1)),
		MaxBytes:      l.int("CLAUDEQ_BATCH_MAX_BYTES", 256<<20, 1024),
		Expiry:        l.dur("CLAUDEQ_BATCH_EXPIRY", 24*time.Hour),
		Retention:     l.dur("CLAUDEQ_BATCH_RETENTION", 29*24*time.Hour),
		SweepInterval: l.dur("CLAUDEQ_BATCH_SWEEP_INTERVAL", time.Minute),
	}
	if b.Expiry == 0 {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_BATCH_EXPIRY: must be positive"))
	}
	if b.SweepInterval == 0 {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_BATCH_SWEEP_INTERVAL: must be positive"))
	}
	return b
}
