package metrics

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Defaults of Options.
const (
	DefaultMaxUserLabels       = 100
	DefaultMaxDepartmentLabels = 100
	DefaultMaxUserTypeLabels   = 20
	DefaultMaxModelLabels      = 50
	DefaultMaxNodeLabels       = 50
)

// Options configure New. The zero value is ready to use.
type Options struct {
	// MaxUserLabels is how many distinct user ids get their own user_id
	// label on claude_tokens_consumed_total; later users are counted under
	// "other". Default 100 (zero); negative means every user is "other".
	MaxUserLabels int
	// MaxDepartmentLabels is the same bound for the department label of
	// claudeq_cost_usd_total. Default 100; negative means none.
	MaxDepartmentLabels int
	// MaxUserTypeLabels bounds the user_type label (a key's tier, set by
	// operators). Default 20; negative means none.
	MaxUserTypeLabels int
	// MaxModelLabels bounds the model label. Models come from the catalog,
	// so the bound is only a guard. Default 50; negative means none.
	MaxModelLabels int
	// MaxNodeLabels bounds the node label. Nodes come from configuration,
	// so the bound is only a guard. Default 50; negative means none.
	MaxNodeLabels int
	// Inspector, when set, registers a QueueCollector that reads the asynq
	// queues at every scrape. Register it in one role only (the scheduler,
	// say): every process that does reports the same queues.
	Inspector *asynq.Inspector
	// NodeHealth, when set, is read at every scrape and replaces what
	// SetNodeHealth recorded: claudeq_upstream_node_health then shows the
	// health every process shares (the balancer's state in Redis), not
	// what this process last saw. Set it in one role only, as Inspector.
	NodeHealth func(ctx context.Context) ([]NodeHealth, error)
	// Budgets, when set, is read at every scrape and replaces what
	// SetBudgetUsed recorded (claudeq_budget_used_ratio), likewise.
	Budgets func(ctx context.Context) ([]BudgetUse, error)
	// Logger receives collection errors. Default: discard.
	Logger *slog.Logger
}

// NodeHealth is one upstream node's health, for Options.NodeHealth.
type NodeHealth struct {
	Node   string
	Status NodeStatus
}

// BudgetUse is the share of one daily budget that is spent or reserved
// (0–1, above 1 when overspent), for Options.Budgets: Scope QuotaTotal
// with Department "", or QuotaDepartment; other scopes are ignored.
type BudgetUse struct {
	Scope      QuotaScope
	Department string
	Ratio      float64
}

// sourceTimeout bounds one read of Options.NodeHealth or Options.Budgets.
const sourceTimeout = 5 * time.Second

func orDefault(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Buckets of claude_response_time_seconds: an LLM call takes from a tenth
// of a second (a short cached-prompt answer) to minutes (long outputs).
var responseTimeBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120}

// Buckets of claudeq_http_request_duration_seconds: most api requests
// answer in milliseconds (submit, poll); POST /v1/messages waits for the
// model.
var httpBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// Metrics records claudeq's metrics into one registry. It is safe for
// concurrent use. A nil *Metrics records nothing: every method is a no-op
// on it, so that components take an optional one.
type Metrics struct {
	requests       *prometheus.CounterVec
	responseTime   *prometheus.HistogramVec
	active         prometheus.Gauge
	tokens         *prometheus.CounterVec
	errors         *prometheus.CounterVec
	cache          *prometheus.CounterVec
	quota          *prometheus.CounterVec
	cost           *prometheus.CounterVec
	pricedFB       *prometheus.CounterVec
	budget         *prometheus.GaugeVec
	inflight       *prometheus.GaugeVec
	nodeHealth     *prometheus.GaugeVec
	webhooks       *prometheus.CounterVec
	batchItems     *prometheus.CounterVec
	httpRequests   *prometheus.CounterVec
	httpDuration   *prometheus.HistogramVec
	failOpen       prometheus.Counter
	auditDropped   prometheus.Counter
	auditBacklog   prometheus.Gauge
	log            *slog.Logger
	fallbackWarned sync.Map // model → true: PricedByFallback warned
	users, depts   *bounded
	userTypes      *bounded
	models, nodes  *bounded
}

// New registers claudeq's metrics, the Go runtime and process collectors
// and, with opts.Inspector, the asynq queue collector on reg, and returns
// the recorder. It panics if reg already holds any of them (a wiring bug:
// one registry per process, one New per registry).
func New(reg *prometheus.Registry, opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		log: opts.Logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_requests_total",
			Help: "Calls to the Claude API by model, outcome and caller tier (user_type).",
		}, []string{"model", "status", "user_type"}),
		responseTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "claude_response_time_seconds",
			Help:    "Duration of calls to the Claude API, successful or not.",
			Buckets: responseTimeBuckets,
		}, []string{"model"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "claude_active_connections",
			Help: "Calls to the Claude API in flight in this process.",
		}),
		// user_id grows with the customer base: bounded by MaxUserLabels,
		// the rest is "other" (see the package documentation for why).
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_tokens_consumed_total",
			Help: "Tokens consumed (input, output and cache) by model and user; users beyond the label bound are \"other\".",
		}, []string{"model", "user_id"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_errors_total",
			Help: "Errors by claudeq error type and model.",
		}, []string{"error_type", "model"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_cache_requests_total",
			Help: "Response-cache lookups by result (hit or miss).",
		}, []string{"result"}),
		quota: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_quota_refusals_total",
			Help: "Requests refused because a budget would be exceeded, by the budget's scope.",
		}, []string{"scope"}),
		// department grows with the organisation: bounded by
		// MaxDepartmentLabels. model is bounded by the catalog.
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_cost_usd_total",
			Help: "Settled cost of upstream calls in US dollars by department and model; departments beyond the label bound are \"other\".",
		}, []string{"department", "model"}),
		// model: the served models without a price (bounded by
		// MaxModelLabels, like every model label).
		pricedFB: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_model_priced_by_fallback_total",
			Help: "Calls billed for a model the price table lacks, priced as the dearest model of its family (or of all): add the model's price (CLAUDEQ_PRICING_FILE).",
		}, []string{"model"}),
		budget: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "claudeq_budget_used_ratio",
			Help: "Share of a daily budget spent or reserved (1 = exhausted), for the total budget (department=\"\") and per department.",
		}, []string{"scope", "department"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "claudeq_upstream_inflight",
			Help: "Calls in flight per upstream node in this process.",
		}, []string{"node"}),
		nodeHealth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "claudeq_upstream_node_health",
			Help: "Health of each upstream node: 1 for its current status, 0 for the others.",
		}, []string{"node", "status"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome.",
		}, []string{"outcome"}),
		batchItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_batch_items_total",
			Help: "Message batch items by state: submitted, then one terminal state each.",
		}, []string{"state"}),
		// route is an Echo route template (closed by the code), never a path.
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudeq_http_requests_total",
			Help: "HTTP requests by Echo route template and status code.",
		}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "claudeq_http_request_duration_seconds",
			Help:    "HTTP request duration by Echo route template.",
			Buckets: httpBuckets,
		}, []string{"route"}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "claudeq_ratelimit_failopen_total",
			Help: "Requests let through without a rate-limit check because the limiter's Redis failed.",
		}),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "claudeq_audit_dropped_total",
			Help: "Audit records dropped because the backlog was full.",
		}),
		auditBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "claudeq_audit_backlog",
			Help: "Audit records waiting to be written.",
		}),
		users:     newBounded(orDefault(opts.MaxUserLabels, DefaultMaxUserLabels)),
		depts:     newBounded(orDefault(opts.MaxDepartmentLabels, DefaultMaxDepartmentLabels)),
		userTypes: newBounded(orDefault(opts.MaxUserTypeLabels, DefaultMaxUserTypeLabels)),
		models:    newBounded(orDefault(opts.MaxModelLabels, DefaultMaxModelLabels)),
		nodes:     newBounded(orDefault(opts.MaxNodeLabels, DefaultMaxNodeLabels)),
	}
	var budget, nodeHealth prometheus.Collector = m.budget, m.nodeHealth
	if opts.Budgets != nil {
		budget = &refreshed{vec: m.budget, what: "budgets", log: opts.Logger,
			fill: func(ctx context.Context) error { return m.fillBudgets(ctx, opts.Budgets) }}
	}
	if opts.NodeHealth != nil {
		nodeHealth = &refreshed{vec: m.nodeHealth, what: "upstream node health", log: opts.Logger,
			fill: func(ctx context.Context) error { return m.fillNodeHealth(ctx, opts.NodeHealth) }}
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.responseTime, m.active, m.tokens, m.errors,
		m.cache, m.quota, m.cost, m.pricedFB, budget, m.inflight, nodeHealth, m.webhooks, m.batchItems,
		m.httpRequests, m.httpDuration, m.failOpen, m.auditDropped, m.auditBacklog,
	)
	// Counters with a small closed label set start at zero, so that rate()
	// and absent-series alerts work before the first event.
	for s := range quotaScopes {
		m.quota.WithLabelValues(string(s))
	}
	m.cache.WithLabelValues("hit")
	m.cache.WithLabelValues("miss")
	for o := range webhookOutcomes {
		m.webhooks.WithLabelValues(string(o))
	}
	for s := range batchStates {
		m.batchItems.WithLabelValues(string(s))
	}
	if opts.Inspector != nil {
		reg.MustRegister(NewQueueCollector(opts.Inspector, opts.Logger))
	}
	return m
}

// Handler returns the /metrics handler for reg (the Prometheus text or
// OpenMetrics format, as the scraper asks). Errors collecting one metric are
// reported in the response and the rest is served.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg, // promhttp_metric_handler_errors_total
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	})
}

// ObserveUpstream records one finished call to the Claude API: its outcome
// and tier of the caller (user_type) in claude_requests_total, its duration
// in claude_response_time_seconds and, when tokens > 0, the tokens it
// consumed for userID in claude_tokens_consumed_total. model is the resolved
// model id; userID beyond Options.MaxUserLabels is counted as "other".
// Record the error's type with Error as well when status is StatusError.
func (m *Metrics) ObserveUpstream(model string, status Status, userType string, d time.Duration, tokens int64, userID string) {
	if m == nil {
		return
	}
	model = m.models.value(model)
	m.requests.WithLabelValues(model, enum(status, statuses), m.userTypes.value(userType)).Inc()
	m.responseTime.WithLabelValues(model).Observe(d.Seconds())
	if tokens > 0 {
		m.tokens.WithLabelValues(model, m.users.value(userID)).Add(float64(tokens))
	}
}

// Error counts one error of kind for model in claude_errors_total; model
// may be empty when the request never got as far as choosing one.
func (m *Metrics) Error(kind claudeq.Kind, model string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(kind.String(), m.models.value(model)).Inc()
}

// UpstreamStarted marks a call to the Claude API through node as in
// flight (claude_active_connections, claudeq_upstream_inflight) and
// returns the function that marks it finished. Calling done more than once
// has no further effect.
func (m *Metrics) UpstreamStarted(node string) (done func()) {
	if m == nil {
		return func() {}
	}
	g := m.inflight.WithLabelValues(m.nodes.value(node))
	g.Inc()
	m.active.Inc()
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			g.Dec()
			m.active.Dec()
		}
	}
}

// CacheHit counts a response-cache lookup that found an answer.
func (m *Metrics) CacheHit() {
	if m != nil {
		m.cache.WithLabelValues("hit").Inc()
	}
}

// CacheMiss counts a response-cache lookup that found none.
func (m *Metrics) CacheMiss() {
	if m != nil {
		m.cache.WithLabelValues("miss").Inc()
	}
}

// QuotaRefused counts a request refused because the budget of scope would
// be exceeded.
func (m *Metrics) QuotaRefused(scope QuotaScope) {
	if m == nil {
		return
	}
	m.quota.WithLabelValues(enum(scope, quotaScopes)).Inc()
}

// AddCost adds the settled cost of a call to model, in US dollars, to
// department's total. Departments beyond Options.MaxDepartmentLabels are
// counted as "other". Zero, negative, infinite and NaN amounts are ignored
// (a counter only grows): record settled costs, never reservations.
func (m *Metrics) AddCost(department, model string, usd float64) {
	if m == nil || !(usd > 0) || math.IsInf(usd, 1) {
		return
	}
	m.cost.WithLabelValues(m.depts.value(department), m.models.value(model)).Add(usd)
}

// PricedByFallback counts a call of model billed at a fallback price
// (pricing.ByFallback), as pricedAs: record it once the bill is durable.
// The first one of each model in this process is also logged as a
// warning, so that an operator adds the model's price.
func (m *Metrics) PricedByFallback(model, pricedAs string) {
	if m == nil {
		return
	}
	m.pricedFB.WithLabelValues(m.models.value(model)).Inc()
	if _, seen := m.fallbackWarned.LoadOrStore(model, true); !seen {
		m.log.Warn("a served model has no price: billed as the dearest model of its family (or of all); add its price with CLAUDEQ_PRICING_FILE",
			"model", model, "priced_as", pricedAs)
	}
}

// SetBudgetUsed records the share (0–1, above 1 when overspent) of a daily
// budget that is spent or reserved: scope QuotaTotal with department "",
// or QuotaDepartment with the department (bounded like AddCost's). Per-user
// budgets are not exported (user ids would make the series unbounded) and
// QuotaUser is ignored. The alert "budget near exhaustion" reads it.
func (m *Metrics) SetBudgetUsed(scope QuotaScope, department string, ratio float64) {
	if m == nil || math.IsNaN(ratio) {
		return
	}
	switch scope {
	case QuotaTotal:
		m.budget.WithLabelValues(string(QuotaTotal), "").Set(ratio)
	case QuotaDepartment:
		m.budget.WithLabelValues(string(QuotaDepartment), m.depts.value(department)).Set(ratio)
	}
}

// SetNodeHealth records node's current health: 1 on its status series, 0
// on the others.
func (m *Metrics) SetNodeHealth(node string, status NodeStatus) {
	if m == nil {
		return
	}
	n := m.nodes.value(node)
	for _, s := range nodeStatuses {
		v := 0.0
		if s == status {
			v = 1
		}
		m.nodeHealth.WithLabelValues(n, string(s)).Set(v)
	}
}

// WebhookDelivery counts one webhook delivery attempt by outcome.
func (m *Metrics) WebhookDelivery(outcome WebhookOutcome) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(enum(outcome, webhookOutcomes)).Inc()
}

// BatchItems counts n batch items that reached state.
func (m *Metrics) BatchItems(state BatchState, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.batchItems.WithLabelValues(enum(state, batchStates)).Add(float64(n))
}

// RateLimitFailOpen counts a request let through because the rate
// limiter's Redis failed (rate limits fail open, on purpose).
func (m *Metrics) RateLimitFailOpen() {
	if m != nil {
		m.failOpen.Inc()
	}
}

// AuditDropped counts n audit records dropped.
func (m *Metrics) AuditDropped(n int) {
	if m != nil && n > 0 {
		m.auditDropped.Add(float64(n))
	}
}

// SetAuditBacklog records how many audit records wait to be written.
func (m *Metrics) SetAuditBacklog(n int) {
	if m != nil {
		m.auditBacklog.Set(float64(n))
	}
}

// fillNodeHealth records the health src reports for every node.
func (m *Metrics) fillNodeHealth(ctx context.Context, src func(context.Context) ([]NodeHealth, error)) error {
	nodes, err := src(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		m.SetNodeHealth(n.Node, n.Status)
	}
	return nil
}

// fillBudgets records the budget use src reports. Departments beyond the
// label bound share "other", which shows the highest of their ratios (the
// one an alert cares about).
func (m *Metrics) fillBudgets(ctx context.Context, src func(context.Context) ([]BudgetUse, error)) error {
	uses, err := src(ctx)
	if err != nil {
		return err
	}
	type series struct{ scope, dept string }
	top := make(map[series]float64, len(uses))
	for _, u := range uses {
		var k series
		switch u.Scope {
		case QuotaTotal:
			k = series{string(QuotaTotal), ""}
		case QuotaDepartment:
			k = series{string(QuotaDepartment), m.depts.value(u.Department)}
		default:
			continue
		}
		if math.IsNaN(u.Ratio) {
			continue
		}
		if v, ok := top[k]; !ok || u.Ratio > v {
			top[k] = u.Ratio
		}
	}
	for k, v := range top {
		m.budget.WithLabelValues(k.scope, k.dept).Set(v)
	}
	return nil
}

// refreshed is a gauge vector refilled from a source at every scrape: its
// series are exactly what the source reports now (none when it fails), so
// a value never outlives the state it describes.
type refreshed struct {
	mu   sync.Mutex // one refill and collection at a time
	vec  *prometheus.GaugeVec
	fill func(ctx context.Context) error
	what string
	log  *slog.Logger
}

// Describe implements prometheus.Collector.
func (r *refreshed) Describe(ch chan<- *prometheus.Desc) { r.vec.Describe(ch) }

// Collect implements prometheus.Collector.
func (r *refreshed) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vec.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	if err := r.fill(ctx); err != nil {
		r.log.Warn("collect "+r.what, "err", err)
		r.vec.Reset()
	}
	r.vec.Collect(ch)
}

// observeHTTP records one answered HTTP request.
func (m *Metrics) observeHTTP(route string, code int, d time.Duration) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(d.Seconds())
}

// Names returns the names of the metric families claudeq exports beside
// the go_* and process_* ones, sorted: what dashboards and alerts may
// query. Histograms add _bucket, _sum and _count series to their name.
func Names() []string {
	return []string{
		"asynq_queue_latency_seconds",
		"asynq_queue_memory_usage_approx_bytes",
		"asynq_queue_paused_total",
		"asynq_queue_size",
		"asynq_tasks_enqueued_total",
		"asynq_tasks_failed_total",
		"asynq_tasks_processed_total",
		"claude_active_connections",
		"claude_errors_total",
		"claude_requests_total",
		"claude_response_time_seconds",
		"claude_tokens_consumed_total",
		"claudeq_audit_backlog",
		"claudeq_audit_dropped_total",
		"claudeq_batch_items_total",
		"claudeq_budget_used_ratio",
		"claudeq_cache_requests_total",
		"claudeq_cost_usd_total",
		"claudeq_http_request_duration_seconds",
		"claudeq_http_requests_total",
		"claudeq_model_priced_by_fallback_total",
		"claudeq_queue_metrics_up",
		"claudeq_quota_refusals_total",
		"claudeq_ratelimit_failopen_total",
		"claudeq_upstream_inflight",
		"claudeq_upstream_node_health",
		"claudeq_webhook_deliveries_total",
	}
}

// Histograms returns the names among Names that are histograms.
func Histograms() []string {
	return []string{"claude_response_time_seconds", "claudeq_http_request_duration_seconds"}
}
