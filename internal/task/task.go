// Package task holds claudeq's asynq task types, their payloads and their
// handlers: the worker side of a job.
package task

import (
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/queue"
)

// Task types (noun:verb).
const (
	TypeJobRun    = queue.TypeJobRun
	TypeRetention = "maintenance:retention"
	TypeReconcile = "maintenance:reconcile"
	TypeProbe     = "upstream:probe"
)

// RetryDelay returns asynq's RetryDelayFunc: jittered exponential backoff
// from base to max, never sooner than an upstream's retry-after.
func RetryDelay(base, max time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration {
		d := base
		for i := 0; i < n && d < max; i++ {
			d *= 2
		}
		if d > max {
			d = max
		}
		// Full jitter over the upper half keeps retries spread out.
		d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
		// asynq keeps retry times in whole seconds and may run a task up to
		// a second before the delay ends: add a second so that a retry
		// never comes before the upstream's retry-after.
		if ra := claudeq.RetryAfter(err); ra > 0 && ra+time.Second > d {
			d = ra + time.Second
		}
		return d
	}
}
