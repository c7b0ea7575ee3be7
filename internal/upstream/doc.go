// Package upstream calls Claude: one official-SDK client per upstream node,
// with the SDK's own retries off (the queue owns retries), the
// classification of upstream failures into claudeq error kinds, and a
// Fleet that balances calls over several nodes and keeps their health.
//
// # Nodes
//
// LoadNodes reads the node list (name, URL, API key, weight, model
// allow-list, RPM/TPM) from YAML; NewFleet builds a Fleet from it.
//
// # Shared state
//
// Every worker and api process builds its own Fleet; Fleets that share a
// Redis and a KeyPrefix behave as one balancer. Shared in Redis (prefix
// "{claudeq:upstream}:" by default, one hash tag so Lua works on Cluster):
//
//	node:{name}     hash: health (state, reason, until), counters
//	                (requests, errors), latency EWMA per output token,
//	                probe results, last error — see scripts.go
//	fails:{name}    zset: node failures in the sliding window (score ms)
//	lat:{name}      list: the last 100 response times in µs (LPUSH+LTRIM)
//	trial:{name}    string: the half-open trial slot (SET NX PX)
//	inflight        hash: {name} → calls in flight on the node, and
//	                {name}|{instance} → this Fleet's share of them
//	instances       zset: Fleet instance → last time it touched Redis (ms)
//	usage:{minute}  hash: {name}|r requests and {name}|t tokens started in
//	                that UTC minute (RPM/TPM), expires after 2 minutes
//	rr              string: the shared round-robin counter (INCR)
//
// Why it converges:
//
//   - Health changes only inside Lua scripts (admit, finish, probe), each
//     atomic on Redis, so outcomes reported at once by many processes never
//     overwrite each other; every process then reads the same state.
//   - Pick reads a snapshot of all nodes with one EVALSHA and reuses it for
//     SnapshotTTL (200 ms), patched at once with this process's own changes.
//     A stale snapshot can only propose a node: Call admits it with a
//     script against the live state, which refuses a node that is cooling,
//     whose trial is taken or that is over its RPM/TPM, and the Fleet then
//     picks another. So "no request during a cooldown" holds across
//     processes, not just within SnapshotTTL.
//   - In-flight counts are incremented and decremented by the same
//     instance, per instance. A crashed process never decrements: once it
//     has been silent for InFlightTTL (longer than any call), the next
//     snapshot read subtracts its share and forgets it, so the counts
//     return to the truth instead of drifting upwards for ever.
//   - Failure windows, cooldowns and RPM minutes are timestamps compared
//     with the caller's clock, and old entries are trimmed or expire.
//   - The EWMA is updated inside the finish script (no lost update); it
//     forgets old samples geometrically (alpha 0.3).
//
// If Redis is unreachable, routing fails open: the last snapshot (or an
// all-healthy view) is used, calls go through untracked, and the problem is
// logged at most every 10 s.
//
// # Health rules
//
//   - 200: latency recorded; during a half-open trial the node is healthy
//     again and its failure window is cleared.
//   - 429 (rate_limit_error): the node gets no request until now +
//     retry-after (retry-after-ms or retry-after; 1 s when absent). Its
//     status reads degraded, with CooldownUntil.
//   - 429 or 402 saying a spend/usage limit or credit balance was reached
//     (KindBilling): exhausted until the start of the next UTC month, or
//     until the retry-after the upstream sent.
//   - 529, 5xx, timeouts, connection errors, and 401/403 (the node's own key
//     is bad): a failure in the sliding window; FailureThreshold failures
//     within FailureWindow make the node unhealthy until now + Cooldown.
//     After the cooldown the node is half-open: the admit script hands out
//     exactly one trial slot (SET NX PX, released when the trial ends or
//     after Timeout+5 s if its process dies). Success: healthy. Failure:
//     unhealthy for another Cooldown. Failures of calls that were in flight
//     before the node was ejected count in the window but move nothing.
//   - 400 invalid_request_error, 404, 413 and other request errors, and
//     calls the caller canceled: the request's fault; counted as a request,
//     never against the node.
//   - Probes: ProbeFailures failed probes in a row make the node unhealthy
//     (reason probe); a successful probe clears it at once. A node ejected
//     by failed calls is cleared only by its half-open trial.
//   - degraded: healthy by the above, but with failures in the window, a
//     failed probe, a 429 cooldown, or a p95 above 3× the fleet's median p50
//     (nodes with at least 10 samples, two nodes or more). Degraded nodes
//     keep their traffic; it is a signal for operators.
//
// # Limits
//
// RPM is enforced exactly per UTC minute by the admit script. TPM is
// enforced on an estimate (max_tokens + request bytes ÷ 4) charged at
// admission and corrected to the real usage (all token classes) when the
// call ends; a single request larger than TPM is still admitted in an
// otherwise empty minute.
package upstream
