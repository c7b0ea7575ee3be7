package webhook

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Schedule is the retry schedule of a delivery: element i is the wait
// before attempt i+1, counted from the failure of attempt i (element 0, the
// wait before the first attempt, is normally 0). len(s) is the number of
// attempts; after the last one the delivery is given up. A Schedule is
// read-only once in use, and then safe for concurrent use.
type Schedule []time.Duration

// DefaultSchedule is Svix's: immediately, then 5 s, 5 min, 30 min, 2 h,
// 5 h, 10 h and 10 h — 8 attempts over about 28 hours.
var DefaultSchedule = Schedule{
	0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// ParseSchedule parses a comma-separated list of Go durations, e.g.
// "0,5s,5m,30m,2h,5h,10h,10h" (DefaultSchedule). An empty string is
// DefaultSchedule.
func ParseSchedule(s string) (Schedule, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultSchedule, nil
	}
	var out Schedule
	for _, f := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("webhook schedule: %q is not a duration ≥ 0", f)
		}
		out = append(out, d)
	}
	return out, nil
}

// Scale returns a copy of s with every wait multiplied by f: tests
// compress the schedule (DefaultSchedule.Scale(1.0/3600) turns hours into
// seconds).
func (s Schedule) Scale(f float64) Schedule {
	out := make(Schedule, len(s))
	for i, d := range s {
		out[i] = time.Duration(float64(d) * f)
	}
	return out
}

// MaxRetry is the asynq MaxRetry of a task following s: len(s)-1.
func (s Schedule) MaxRetry() int { return max(len(s)-1, 0) }

// Next returns the wait after attempt n (1-based) failed, and false when n
// was the last attempt.
func (s Schedule) Next(n int) (time.Duration, bool) {
	if n < 1 || n >= len(s) {
		return 0, false
	}
	return s[n], true
}

// RetryDelayFunc returns an asynq.RetryDelayFunc for webhook:deliver tasks:
// the delay the handler put in its error (the schedule's next wait, or the
// receiver's Retry-After when longer), else — for a crashed attempt, or a
// handler that returned no delay — the next wait of s after retry n.
func (s Schedule) RetryDelayFunc() asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration {
		if d, ok := NextDelay(err); ok {
			return d
		}
		if d, ok := s.Next(n + 1); ok {
			return d
		}
		if len(s) > 0 {
			return s[len(s)-1]
		}
		return time.Minute
	}
}

// RetryDelay is DefaultSchedule.RetryDelayFunc(): an
// asynq.RetryDelayFunc-compatible helper for webhook:deliver tasks.
// Combine it into the server's RetryDelayFunc by task type:
//
//	if t.Type() == webhook.TypeDeliver {
//		return webhook.RetryDelay(n, err, t)
//	}
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	return defaultRetryDelay(n, err, t)
}

var defaultRetryDelay = DefaultSchedule.RetryDelayFunc()

// NextDelay returns the wait the webhook handler asked for in err: its
// RetryAfter (a *claudeq.Error in the chain), when it has one.
func NextDelay(err error) (time.Duration, bool) {
	var e *claudeq.Error
	if !errors.As(err, &e) {
		return 0, false
	}
	if d := claudeq.RetryAfter(err); d > 0 {
		return d, true
	}
	return 0, false
}
