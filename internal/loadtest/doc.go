// Package loadtest is claudeq's load generator (issue 9), the engine behind
// `claudeq loadtest`. Benchmarks call [Run] directly with a [Config] and read
// the [Report]; the CLI only maps flags onto Config and renders the Report
// ([Report.WriteMarkdown], [Report.WriteJSON], [Report.WriteHTML]).
//
// Three modes:
//
//   - async: POST /api/claude/chat, then poll GET /api/claude/jobs/{id}
//     (or wait for the job's webhook) until the job ends. Measured: submit
//     latency, end-to-end completion (submit to observed end), and, from the
//     job's own timestamps, queue wait (started_at − created_at) and
//     processing (finished_at − started_at).
//   - sync: POST /v1/messages (Anthropic shape, x-api-key), latency.
//   - stream: POST /v1/messages with "stream": true; time to first token
//     (the first content_block_delta event) and total time.
//
// Two loops:
//
//   - closed: Users goroutines each send RequestsPerUser requests back to
//     back (a user's next request starts when its previous one — in async
//     mode its job — ended). Latency is measured from the actual send, so a
//     slow server slows the senders down (coordinated omission is inherent
//     to a closed loop).
//   - open: requests are sent at Rate per second for Duration, whatever the
//     server does, through vegeta's attacker and pacer. Every latency is
//     measured from the request's intended send time on the pacer's
//     schedule, not from when a worker got around to sending it, so a
//     stalled generator or server shows up in the percentiles instead of
//     being hidden (no coordinated omission).
//
// Latencies go into HDR histograms with microsecond resolution. The run is
// bounded: sending stops at Duration or after the last request, and
// Config.Timeout bounds everything, including the wait for async jobs.
// URLs that are not loopback are refused unless Config.AllowRemote is set.
package loadtest
