package metrics

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// Other is the label value that stands for every value outside a label's
// closed set: users beyond MaxUserLabels, departments beyond
// MaxDepartmentLabels, unknown enum values.
const Other = "other"

// Unknown is the label value of an empty model, node, user or department.
const Unknown = "unknown"

// Status is the outcome of one upstream call (label status of
// claude_requests_total).
type Status string

// The upstream call outcomes. The cause of an error is counted in
// claude_errors_total{error_type}.
const (
	StatusSuccess Status = "success"
	StatusError   Status = "error"
)

// QuotaScope is the budget that refused a reservation (label scope of
// claudeq_quota_refusals_total).
type QuotaScope string

// The budgets a reservation is checked against.
const (
	QuotaUser       QuotaScope = "user"       // the user's daily budget
	QuotaDepartment QuotaScope = "department" // the department's daily budget
	QuotaTotal      QuotaScope = "total"      // the gateway's total budget (daily or monthly)
	// QuotaRequests is a key's daily request cap (requests_per_day), not
	// a budget of money; its refusals are counted all the same.
	QuotaRequests QuotaScope = "requests"
)

// WebhookOutcome is the outcome of one webhook delivery attempt (label
// outcome of claudeq_webhook_deliveries_total).
type WebhookOutcome string

// The outcomes of a webhook delivery attempt.
const (
	WebhookSuccess WebhookOutcome = "success" // the receiver answered 2xx
	WebhookRetry   WebhookOutcome = "retry"   // failed; another attempt follows
	WebhookFailed  WebhookOutcome = "failed"  // failed for good: retries exhausted or a permanent refusal
)

// BatchState is what happened to a batch item (label state of
// claudeq_batch_items_total). The terminal states are the Message Batches
// API's result types.
type BatchState string

// The batch item states.
const (
	BatchSubmitted BatchState = "submitted"
	BatchSucceeded BatchState = "succeeded"
	BatchErrored   BatchState = "errored"
	BatchCanceled  BatchState = "canceled"
	BatchExpired   BatchState = "expired"
)

// NodeStatus is the health of an upstream node (label status of
// claudeq_upstream_node_health).
type NodeStatus string

// The node health states, as the balancer shares them in Redis.
const (
	NodeHealthy   NodeStatus = "healthy"
	NodeDegraded  NodeStatus = "degraded"
	NodeUnhealthy NodeStatus = "unhealthy"
	NodeExhausted NodeStatus = "exhausted" // out of credit or over a spend limit
)

var (
	statuses        = set(StatusSuccess, StatusError)
	quotaScopes     = set(QuotaUser, QuotaDepartment, QuotaTotal, QuotaRequests)
	webhookOutcomes = set(WebhookSuccess, WebhookRetry, WebhookFailed)
	batchStates     = set(BatchSubmitted, BatchSucceeded, BatchErrored, BatchCanceled, BatchExpired)
	nodeStatuses    = []NodeStatus{NodeHealthy, NodeDegraded, NodeUnhealthy, NodeExhausted}
)

func set[T ~string](vs ...T) map[T]struct{} {
	m := make(map[T]struct{}, len(vs))
	for _, v := range vs {
		m[v] = struct{}{}
	}
	return m
}

// enum returns v when it is in the closed set, else Other: a caller that
// converts an arbitrary string into an enum type still cannot add series.
func enum[T ~string](v T, closed map[T]struct{}) string {
	if _, ok := closed[v]; ok {
		return string(v)
	}
	return Other
}

// maxLabelLen caps a label value taken from data (user ids, department
// names): longer values are cut, invalid UTF-8 is repaired (the client
// library panics on it).
const maxLabelLen = 128

func clean(v string) string {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	if len(v) > maxLabelLen {
		v = v[:maxLabelLen]
		for !utf8.ValidString(v) {
			v = v[:len(v)-1]
		}
	}
	return v
}

// bounded hands out a label value to the first max distinct values it sees
// and Other to every later one, for labels whose values grow with the data
// (user ids, departments). Values keep their label for the life of the
// process: a series never changes meaning between scrapes. Empty values are
// recorded as Unknown and take no slot. It is safe for concurrent use.
type bounded struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

func newBounded(max int) *bounded {
	return &bounded{max: max, seen: make(map[string]struct{})}
}

func (b *bounded) value(v string) string {
	if v == "" {
		return Unknown
	}
	v = clean(v)
	b.mu.RLock()
	_, ok := b.seen[v]
	n := len(b.seen)
	b.mu.RUnlock()
	if ok {
		return v
	}
	if n >= b.max {
		return Other
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[v]; ok {
		return v
	}
	if len(b.seen) >= b.max {
		return Other
	}
	b.seen[v] = struct{}{}
	return v
}
