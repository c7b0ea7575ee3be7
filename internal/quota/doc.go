// Package quota enforces spending budgets in Redis so that no budget is
// ever exceeded, whatever the concurrency: the api reserves the worst-case
// cost of a call before dispatching it, the worker settles the reservation
// to the real cost afterwards (or releases it when the call failed).
//
// # Budgets
//
// Four budgets, in integer micro-dollars ([claudeq.Micros]), 0 meaning unlimited:
// the daily budget of each user, of each department, of the whole gateway,
// and the monthly budget of the whole gateway. Defaults come from
// [Options]; [Quota.SetLimit] stores per-id overrides in Redis.
//
// # Days
//
// Days (and months) are calendar days in Options.Location, read from an
// injectable clock. Every counter lives in a key named after its day or
// month and expires Options.Retention after that period ends; nothing is
// ever zeroed in place, so "the daily reset" is simply the date changing
// and needs no scheduler job (two schedulers cannot reset twice, because
// there is nothing to reset). [Quota.ResetsAt] says when the next day
// starts.
//
// A reservation belongs to the day it was made: settling it moves its
// amount from reserved to spent on that day's counters even when the
// settle happens after midnight.
//
// # Guarantees
//
// Reserve is one Lua script: it reads spent and reserved of every scope,
// and only if spent + reserved + amount ≤ limit holds for each of them does
// it add the amount to every reserved counter and record the reservation
// (keyed by job id). Redis runs scripts one at a time, so at every instant
// spent + reserved ≤ limit for every scope, as long as each settle's actual
// cost is at most its reservation — which pricing.Table.Estimate
// guarantees when the prompt's token count is not underestimated.
//
// When a call costs more than was reserved (only possible when the input
// token count was underestimated: the output is capped by max_tokens, which
// the estimate prices in full), Settle still records the real cost, so
// spent can pass the limit by at most the sum of those differences over the
// jobs running at that moment; the next reservations are then refused
// until the day changes. Settle never refuses: the money was already spent.
//
// Reserve, Settle and Release are idempotent per job id: a reservation
// record remembers its state (held, settled, released) until
// Options.DoneTTL after it ends, so a repeated Reserve is a no-op, a second
// Settle changes nothing, and a Release after a Settle changes nothing.
// A Settle after a Release still books the real cost as spent, because the
// call did happen (see [Quota.Settle]).
//
// Redis errors are KindUnavailable: money fails closed, a request whose
// reservation cannot be made is refused.
//
// # Redis keys
//
// Every key starts with Options.Prefix, "cq:q:{q}" by default. The {q} hash
// tag puts them all in one Redis Cluster slot, which the scripts need
// (Settle and Release reach the counters named in the reservation record).
//
//	<p>:day:<YYYY-MM-DD>:user:<user>   hash {s: spent, r: reserved}, user daily
//	<p>:day:<YYYY-MM-DD>:dept:<dept>   hash {s, r}, department daily
//	<p>:day:<YYYY-MM-DD>:total         hash {s, r}, gateway daily
//	<p>:month:<YYYY-MM>:total          hash {s, r}, gateway monthly
//	<p>:day:<YYYY-MM-DD>:scopes        set of that day's user and dept keys (for Rebuild)
//	<p>:day:<YYYY-MM-DD>:req:<key id>  string, requests of an API key that day
//	<p>:res:<job id>                   hash, the reservation record
//	<p>:res:<job id>:parts             set, the parts closed of a reservation shared by many calls (part.go)
//	<p>:pending                        zset job id → reservation time (ms), held ones only
//	<p>:limits                         hash of overrides: user:<id>, department:<id>, total:daily, total:monthly
//
// Day keys expire Retention after their day ends, month keys Retention
// after their month ends, a reservation record with its day's keys (or
// DoneTTL after it was settled or released).
//
// Quota is safe for concurrent use.
package quota
