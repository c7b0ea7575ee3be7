// Package webhook sends claudeq's webhooks: signed (Standard Webhooks v1,
// see pkg/webhook), retried on a schedule, recorded attempt by attempt, and
// only to destinations the URL policy allows.
//
// The pieces:
//
//   - Policy: where webhooks may go. CheckURL validates a URL at
//     registration (https, port 443, public host, in any spelling of an IP
//     address); DialControl enforces the same rules on every address the
//     client connects to, which defeats DNS rebinding. The allow-list,
//     CLAUDEQ_WEBHOOK_ALLOW, opens private hosts, other ports and plain
//     http (syntax: ParsePolicy).
//   - NewClient / Deliverer: one signed POST through a client that resolves
//     names with an injectable Resolver, checks addresses before connect(2),
//     uses no proxy, follows no redirect and stops after 15 s. 2xx is
//     success; 3xx, 4xx, 5xx and timeouts are failures; 429 and 503 may
//     carry Retry-After; 410 asks for the endpoint to be disabled.
//   - EncodeJobEvent: the body {type, timestamp, data}, at most 20 KiB; a
//     result that does not fit is left for the receiver to fetch.
//   - Handler: the asynq handler of webhook:deliver tasks (NewDeliverTask),
//     one attempt per run, each recorded (store.Store.RecordAttempt), with
//     the Schedule's next wait carried in its error for RetryDelay.
//   - SecretStore: each owner's signing secrets in Redis, created on first
//     use and rotated with a grace period during which deliveries carry
//     both signatures.
//
// Delivery is at least once: a worker that dies after the receiver got the
// message, or a Redis outage when the task completes, sends it again with
// the same webhook-id, which receivers use to drop duplicates.
package webhook
