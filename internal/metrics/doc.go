// Package metrics holds claudeq's Prometheus metrics: one
// *prometheus.Registry per process, passed in (no promauto, no globals), and
// typed methods so that callers cannot invent label values.
//
// # Metrics
//
// The names and labels dashboards of the first design already query are
// kept (claude_*, without the q):
//
//	claude_requests_total{model,status,user_type}      counter   upstream calls by outcome
//	claude_response_time_seconds{model}                histogram upstream latency, 0.1 s … 120 s
//	claude_active_connections                          gauge     upstream calls in flight in this process
//	claude_tokens_consumed_total{model,user_id}        counter   tokens (all classes) per model and user
//	claude_errors_total{error_type,model}              counter   failed upstream calls (and jobs that found no node) by error type
//
// and claudeq's own:
//
//	claudeq_cache_requests_total{result}               counter   response-cache lookups: hit | miss
//	claudeq_quota_refusals_total{scope}                counter   requests refused: user | department | total | requests
//	claudeq_cost_usd_total{department,model}           counter   settled cost in US dollars
//	claudeq_budget_used_ratio{scope,department}        gauge     share of a daily budget used: total | department
//	claudeq_upstream_inflight{node}                    gauge     upstream calls in flight per node
//	claudeq_upstream_node_health{node,status}          gauge     1 for the node's status (healthy | degraded | unhealthy | exhausted), 0 for the others
//	claudeq_webhook_deliveries_total{outcome}          counter   webhook attempts: success | retry | failed
//	claudeq_batch_items_total{state}                   counter   batch items: submitted | succeeded | errored | canceled | expired
//	claudeq_http_requests_total{route,code}            counter   api requests by Echo route template and status
//	claudeq_http_request_duration_seconds{route}       histogram api latency by route template
//	claudeq_ratelimit_failopen_total                   counter   requests let through because the limiter's Redis failed
//	claudeq_audit_dropped_total                        counter   audit records dropped (backlog full)
//	claudeq_audit_backlog                              gauge     audit records waiting to be written
//
// With Options.NodeHealth and Options.Budgets set, the node health and
// budget gauges are read from those sources at every scrape (the state
// every process shares, reported by one role); see docs/operations.md for
// which role records what.
//
// With Options.Inspector set, the asynq queue metrics are exported too
// (asynq_queue_size, asynq_queue_latency_seconds, asynq_tasks_enqueued_total
// …, see [QueueCollector]), plus the Go runtime (go_*) and process
// (process_*) collectors, always.
//
// # Label values
//
// Every label value comes from a closed set, so that the number of series
// stays bounded whatever callers send:
//
//   - status, result, scope, outcome, state and error_type are typed enums
//     ([Status], [QuotaScope], [WebhookOutcome], [BatchState],
//     [NodeStatus], claudeq.Kind); a value outside its set is recorded as
//     "other".
//   - route is Echo's route template ("/api/claude/jobs/:id"), never the raw
//     path; requests that match no route share "unmatched". code is the
//     numeric HTTP status.
//   - model and node come from configuration (the model catalog, the
//     upstream nodes); they grow only when an operator adds models or nodes,
//     and are capped all the same (Options.MaxModelLabels,
//     Options.MaxNodeLabels).
//   - user_id, department and user_type grow with the customer base: the
//     first Options.MaxUserLabels (MaxDepartmentLabels, MaxUserTypeLabels)
//     distinct values get their own label, every later one is recorded as
//     "other". Each label value is a time series held in memory by every
//     Prometheus server and every dashboard query, so an unbounded user_id
//     would let the number of users decide the monitoring system's memory;
//     per-user accounting that must be exact lives in the ledger (MongoDB),
//     not here.
//
// Metrics is safe for concurrent use.
package metrics
