package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/redistest"
)

type testBundle struct {
	reg *prometheus.Registry
	m   *metrics.Metrics
	url string
}

func setup(t *testing.T, opts metrics.Options) *testBundle {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, opts)
	srv := httptest.NewServer(metrics.Handler(reg))
	t.Cleanup(srv.Close)
	return &testBundle{reg: reg, m: m, url: srv.URL}
}

// scrapeText GETs the handler as Prometheus does and returns the body.
func scrapeText(t *testing.T, url string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return body
}

// scrape scrapes the handler and parses the text exposition.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(scrapeText(t, url)))
	require.NoError(t, err)
	return fams
}

// find returns the metric of family name whose labels are exactly labels.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "family %s not scraped", name)
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if len(got) == len(labels) {
			match := true
			for k, v := range labels {
				if got[k] != v {
					match = false
				}
			}
			if match {
				return m
			}
		}
	}
	require.Failf(t, "series not found", "%s%v in %v", name, labels, f.GetMetric())
	return nil
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := find(t, fams, name, labels)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	require.Failf(t, "not a counter or gauge", "%s%v", name, labels)
	return 0
}

// labelValues returns every value label takes in family name.
func labelValues(fams map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	for _, m := range fams[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
				out = append(out, lp.GetValue())
			}
		}
	}
	sort.Strings(out)
	return out
}

const sonnet = "claude-sonnet-5-5"

func TestUpstreamMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{MaxUserLabels: 2})

	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", 1500*time.Millisecond, 100, "alice")
	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", 300*time.Millisecond, 20, "alice")
	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "opus", 40*time.Second, 50, "bob")
	// Users beyond MaxUserLabels (2) share "other".
	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", time.Second, 7, "carol")
	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", time.Second, 3, "dave")
	// A user seen before the bound was reached keeps its label.
	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", time.Second, 1, "bob")
	b.m.ObserveUpstream(sonnet, metrics.StatusError, "standard", 200*time.Second, 0, "alice")
	b.m.ObserveUpstream(sonnet, metrics.Status("made-up"), "standard", time.Second, 0, "alice")
	b.m.Error(claudeq.KindRateLimit, sonnet)
	b.m.Error(claudeq.KindRateLimit, sonnet)
	b.m.Error(claudeq.KindInvalidRequest, "")

	f := scrape(t, b.url)
	req := "claude_requests_total"
	require.Equal(t, 5.0, value(t, f, req, map[string]string{"model": sonnet, "status": "success", "user_type": "standard"}))
	require.Equal(t, 1.0, value(t, f, req, map[string]string{"model": sonnet, "status": "success", "user_type": "opus"}))
	require.Equal(t, 1.0, value(t, f, req, map[string]string{"model": sonnet, "status": "error", "user_type": "standard"}))
	require.Equal(t, 1.0, value(t, f, req, map[string]string{"model": sonnet, "status": "other", "user_type": "standard"}))

	tok := "claude_tokens_consumed_total"
	require.Equal(t, 120.0, value(t, f, tok, map[string]string{"model": sonnet, "user_id": "alice"}))
	require.Equal(t, 51.0, value(t, f, tok, map[string]string{"model": sonnet, "user_id": "bob"}))
	require.Equal(t, 10.0, value(t, f, tok, map[string]string{"model": sonnet, "user_id": "other"}))
	require.Equal(t, []string{"alice", "bob", "other"}, labelValues(f, tok, "user_id"))

	h := find(t, f, "claude_response_time_seconds", map[string]string{"model": sonnet}).GetHistogram()
	require.EqualValues(t, 8, h.GetSampleCount())
	require.InDelta(t, 1.5+0.3+40+1+1+1+200+1, h.GetSampleSum(), 1e-9)
	buckets := map[float64]uint64{}
	for _, bk := range h.GetBucket() {
		buckets[bk.GetUpperBound()] = bk.GetCumulativeCount()
	}
	require.EqualValues(t, 0, buckets[0.1])
	require.EqualValues(t, 1, buckets[0.5]) // 0.3 s
	require.EqualValues(t, 5, buckets[1])   // + four 1 s calls
	require.EqualValues(t, 6, buckets[2])   // + 1.5 s
	require.EqualValues(t, 7, buckets[45])  // + 40 s
	require.EqualValues(t, 7, buckets[120]) // 200 s is above the last bucket
	require.Contains(t, buckets, float64(120))

	errs := "claude_errors_total"
	require.Equal(t, 2.0, value(t, f, errs, map[string]string{"error_type": "rate_limit_error", "model": sonnet}))
	require.Equal(t, 1.0, value(t, f, errs, map[string]string{"error_type": "invalid_request_error", "model": "unknown"}))
}

func TestInflight(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	doneA1 := b.m.UpstreamStarted("node-a")
	doneA2 := b.m.UpstreamStarted("node-a")
	doneB := b.m.UpstreamStarted("node-b")
	f := scrape(t, b.url)
	require.Equal(t, 3.0, value(t, f, "claude_active_connections", nil))
	require.Equal(t, 2.0, value(t, f, "claudeq_upstream_inflight", map[string]string{"node": "node-a"}))

	doneA1()
	doneA1() // a second call changes nothing
	doneB()
	f = scrape(t, b.url)
	require.Equal(t, 1.0, value(t, f, "claude_active_connections", nil))
	require.Equal(t, 1.0, value(t, f, "claudeq_upstream_inflight", map[string]string{"node": "node-a"}))
	require.Equal(t, 0.0, value(t, f, "claudeq_upstream_inflight", map[string]string{"node": "node-b"}))
	doneA2()
	f = scrape(t, b.url)
	require.Equal(t, 0.0, value(t, f, "claude_active_connections", nil))
}

func TestGatewayMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{MaxDepartmentLabels: 1})

	// Closed-set counters are exported at zero before the first event.
	f := scrape(t, b.url)
	require.Equal(t, 0.0, value(t, f, "claudeq_quota_refusals_total", map[string]string{"scope": "total"}))
	require.Equal(t, 0.0, value(t, f, "claudeq_cache_requests_total", map[string]string{"result": "hit"}))
	require.Equal(t, 0.0, value(t, f, "claudeq_webhook_deliveries_total", map[string]string{"outcome": "failed"}))

	for range 3 {
		b.m.CacheHit()
	}
	b.m.CacheMiss()
	b.m.QuotaRefused(metrics.QuotaDepartment)
	b.m.QuotaRefused(metrics.QuotaDepartment)
	b.m.QuotaRefused(metrics.QuotaScope("nonsense"))
	b.m.AddCost("research", sonnet, 0.25)
	b.m.AddCost("research", sonnet, 0.5)
	b.m.AddCost("research", "claude-haiku-5-5", 0.125)
	b.m.AddCost("sales", sonnet, 1.25) // beyond MaxDepartmentLabels (1)
	b.m.AddCost("legal", sonnet, 2)
	b.m.AddCost("research", sonnet, -3)         // ignored: counters only grow
	b.m.AddCost("research", sonnet, math.NaN()) // ignored
	b.m.AddCost("research", sonnet, math.Inf(1))
	b.m.SetBudgetUsed(metrics.QuotaTotal, "", 0.5)
	b.m.SetBudgetUsed(metrics.QuotaTotal, "ignored", 0.75)
	b.m.SetBudgetUsed(metrics.QuotaDepartment, "research", 0.95)
	b.m.SetBudgetUsed(metrics.QuotaUser, "alice", 1) // not exported
	b.m.SetNodeHealth("node-a", metrics.NodeHealthy)
	b.m.SetNodeHealth("node-a", metrics.NodeUnhealthy)
	b.m.SetNodeHealth("node-b", metrics.NodeDegraded)
	b.m.WebhookDelivery(metrics.WebhookSuccess)
	b.m.WebhookDelivery(metrics.WebhookRetry)
	b.m.WebhookDelivery(metrics.WebhookRetry)
	b.m.BatchItems(metrics.BatchSubmitted, 5)
	b.m.BatchItems(metrics.BatchSucceeded, 3)
	b.m.BatchItems(metrics.BatchExpired, 0) // nothing
	b.m.RateLimitFailOpen()
	b.m.AuditDropped(2)
	b.m.AuditDropped(-1) // nothing
	b.m.SetAuditBacklog(7)

	f = scrape(t, b.url)
	require.Equal(t, 3.0, value(t, f, "claudeq_cache_requests_total", map[string]string{"result": "hit"}))
	require.Equal(t, 1.0, value(t, f, "claudeq_cache_requests_total", map[string]string{"result": "miss"}))
	require.Equal(t, 2.0, value(t, f, "claudeq_quota_refusals_total", map[string]string{"scope": "department"}))
	require.Equal(t, 0.0, value(t, f, "claudeq_quota_refusals_total", map[string]string{"scope": "user"}))
	require.Equal(t, 1.0, value(t, f, "claudeq_quota_refusals_total", map[string]string{"scope": "other"}))
	require.InDelta(t, 0.75, value(t, f, "claudeq_cost_usd_total", map[string]string{"department": "research", "model": sonnet}), 1e-12)
	require.InDelta(t, 0.125, value(t, f, "claudeq_cost_usd_total", map[string]string{"department": "research", "model": "claude-haiku-5-5"}), 1e-12)
	require.InDelta(t, 3.25, value(t, f, "claudeq_cost_usd_total", map[string]string{"department": "other", "model": sonnet}), 1e-12)
	budget := "claudeq_budget_used_ratio"
	require.Equal(t, 0.75, value(t, f, budget, map[string]string{"scope": "total", "department": ""}))
	require.Equal(t, 0.95, value(t, f, budget, map[string]string{"scope": "department", "department": "research"}))
	require.Len(t, f[budget].GetMetric(), 2)
	require.Equal(t, []string{"other", "research"}, labelValues(f, "claudeq_cost_usd_total", "department"))
	health := "claudeq_upstream_node_health"
	require.Equal(t, 0.0, value(t, f, health, map[string]string{"node": "node-a", "status": "healthy"}))
	require.Equal(t, 0.0, value(t, f, health, map[string]string{"node": "node-a", "status": "degraded"}))
	require.Equal(t, 1.0, value(t, f, health, map[string]string{"node": "node-a", "status": "unhealthy"}))
	require.Equal(t, 1.0, value(t, f, health, map[string]string{"node": "node-b", "status": "degraded"}))
	require.Equal(t, 1.0, value(t, f, "claudeq_webhook_deliveries_total", map[string]string{"outcome": "success"}))
	require.Equal(t, 2.0, value(t, f, "claudeq_webhook_deliveries_total", map[string]string{"outcome": "retry"}))
	require.Equal(t, 5.0, value(t, f, "claudeq_batch_items_total", map[string]string{"state": "submitted"}))
	require.Equal(t, 3.0, value(t, f, "claudeq_batch_items_total", map[string]string{"state": "succeeded"}))
	require.Equal(t, 0.0, value(t, f, "claudeq_batch_items_total", map[string]string{"state": "expired"}))
	require.Equal(t, 1.0, value(t, f, "claudeq_ratelimit_failopen_total", nil))
	require.Equal(t, 2.0, value(t, f, "claudeq_audit_dropped_total", nil))
	require.Equal(t, 7.0, value(t, f, "claudeq_audit_backlog", nil))

	// The Go and process collectors are registered.
	require.Positive(t, value(t, f, "go_goroutines", nil))
	require.Positive(t, value(t, f, "process_resident_memory_bytes", nil))
}

func TestBoundedLabelsUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{MaxUserLabels: 10})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", time.Second, 1, fmt.Sprintf("user-%d-%d", g, i))
			}
		}()
	}
	wg.Wait()
	f := scrape(t, b.url)
	users := labelValues(f, "claude_tokens_consumed_total", "user_id")
	require.Len(t, users, 11) // ten users and "other"
	require.Contains(t, users, "other")
	var total float64
	for _, m := range f["claude_tokens_consumed_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	require.Equal(t, 400.0, total) // nothing lost
	require.Equal(t, 390.0, value(t, f, "claude_tokens_consumed_total", map[string]string{"model": sonnet, "user_id": "other"}))
}

func TestLabelValuesFromData(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	b.m.ObserveUpstream(sonnet, metrics.StatusSuccess, "", time.Second, 5, "")
	b.m.AddCost("bad\xffutf8", sonnet, 1)
	b.m.AddCost(strings.Repeat("d", 500), sonnet, 1)
	f := scrape(t, b.url)
	require.Equal(t, 5.0, value(t, f, "claude_tokens_consumed_total", map[string]string{"model": sonnet, "user_id": "unknown"}))
	require.Equal(t, 1.0, value(t, f, "claude_requests_total", map[string]string{"model": sonnet, "status": "success", "user_type": "unknown"}))
	require.Equal(t, 1.0, value(t, f, "claudeq_cost_usd_total", map[string]string{"department": "bad\uFFFDutf8", "model": sonnet}))
	require.Equal(t, 1.0, value(t, f, "claudeq_cost_usd_total", map[string]string{"department": strings.Repeat("d", 128), "model": sonnet}))
}

func TestHTTPMiddleware(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	e := echo.New()
	var handled []string
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		handled = append(handled, c.Path())
		code := http.StatusInternalServerError
		var he *echo.HTTPError
		if errors.As(err, &he) {
			code = he.Code
		}
		_ = c.JSON(code, map[string]string{"type": "error"})
	}
	recoverMW := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = errors.New("panic")
				}
			}()
			return next(c)
		}
	}
	e.Use(b.m.HTTP(), recoverMW)
	e.GET("/api/claude/jobs/:id", func(c echo.Context) error {
		if c.Param("id") == "missing" {
			return echo.NewHTTPError(http.StatusNotFound)
		}
		return c.JSON(http.StatusOK, map[string]string{"id": c.Param("id")})
	})
	e.POST("/api/claude/chat", func(c echo.Context) error { return c.NoContent(http.StatusAccepted) })
	e.GET("/boom", func(c echo.Context) error { panic("boom") })
	e.GET("/silent", func(c echo.Context) error { return nil })

	do := func(method, path string) int {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code
	}
	require.Equal(t, 200, do(http.MethodGet, "/api/claude/jobs/job_1"))
	require.Equal(t, 200, do(http.MethodGet, "/api/claude/jobs/job_2"))
	require.Equal(t, 404, do(http.MethodGet, "/api/claude/jobs/missing"))
	require.Equal(t, 202, do(http.MethodPost, "/api/claude/chat"))
	require.Equal(t, 404, do(http.MethodGet, "/no/such/route/abc123"))
	require.Equal(t, 405, do(http.MethodDelete, "/api/claude/chat"))
	require.Equal(t, 500, do(http.MethodGet, "/boom"))
	require.Equal(t, 200, do(http.MethodGet, "/silent"))
	// Each error was rendered once, by the middleware.
	require.Len(t, handled, 4)

	f := scrape(t, b.url)
	reqs := "claudeq_http_requests_total"
	jobs := "/api/claude/jobs/:id"
	require.Equal(t, 2.0, value(t, f, reqs, map[string]string{"route": jobs, "code": "200"}))
	require.Equal(t, 1.0, value(t, f, reqs, map[string]string{"route": jobs, "code": "404"}))
	require.Equal(t, 1.0, value(t, f, reqs, map[string]string{"route": "/api/claude/chat", "code": "202"}))
	require.Equal(t, 1.0, value(t, f, reqs, map[string]string{"route": "/api/claude/chat", "code": "405"}))
	require.Equal(t, 1.0, value(t, f, reqs, map[string]string{"route": "unmatched", "code": "404"}))
	require.Equal(t, 1.0, value(t, f, reqs, map[string]string{"route": "/boom", "code": "500"}))
	require.Equal(t, 1.0, value(t, f, reqs, map[string]string{"route": "/silent", "code": "200"}))
	// Raw paths never become label values.
	for _, r := range labelValues(f, reqs, "route") {
		require.NotContains(t, r, "job_1")
		require.NotContains(t, r, "abc123")
	}
	h := find(t, f, "claudeq_http_request_duration_seconds", map[string]string{"route": jobs}).GetHistogram()
	require.EqualValues(t, 3, h.GetSampleCount())
}

func TestHTTPMiddlewareRecordsPanics(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	e := echo.New()
	e.Use(b.m.HTTP()) // no recover middleware inside: the panic passes through
	e.GET("/boom", func(c echo.Context) error { panic("boom") })
	require.Panics(t, func() {
		e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/boom", nil))
	})
	f := scrape(t, b.url)
	require.Equal(t, 1.0, value(t, f, "claudeq_http_requests_total", map[string]string{"route": "/boom", "code": "500"}))
}

// enqueue puts n tasks on queue.
func enqueue(t *testing.T, c *asynq.Client, queue string, n int) {
	t.Helper()
	for i := range n {
		_, err := c.Enqueue(asynq.NewTask("test:noop", []byte(fmt.Sprint(i))), asynq.Queue(queue))
		require.NoError(t, err)
	}
}

func TestQueueCollector(t *testing.T) {
	t.Parallel()
	rs := redistest.New(t)
	rdb := rs.Client(t)
	client := asynq.NewClientFromRedisClient(rdb)
	enqueue(t, client, "critical", 1)
	enqueue(t, client, "default", 3)
	enqueue(t, client, "batch", 2)
	enqueue(t, client, "webhooks", 1)
	_, err := client.Enqueue(asynq.NewTask("test:later", nil), asynq.Queue("default"), asynq.ProcessIn(time.Hour))
	require.NoError(t, err)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	require.NoError(t, insp.PauseQueue("batch"))

	b := setup(t, metrics.Options{Inspector: insp})
	f := scrape(t, b.url)
	require.Equal(t, 1.0, value(t, f, "claudeq_queue_metrics_up", nil))
	require.Equal(t, []string{"batch", "critical", "default", "webhooks"}, labelValues(f, "asynq_queue_size", "queue"))
	require.Equal(t, 1.0, value(t, f, "asynq_queue_size", map[string]string{"queue": "critical"}))
	require.Equal(t, 4.0, value(t, f, "asynq_queue_size", map[string]string{"queue": "default"}))
	enq := "asynq_tasks_enqueued_total"
	require.Equal(t, 3.0, value(t, f, enq, map[string]string{"queue": "default", "state": "pending"}))
	require.Equal(t, 1.0, value(t, f, enq, map[string]string{"queue": "default", "state": "scheduled"}))
	require.Equal(t, 2.0, value(t, f, enq, map[string]string{"queue": "batch", "state": "pending"}))
	require.Equal(t, 0.0, value(t, f, enq, map[string]string{"queue": "batch", "state": "active"}))
	require.Equal(t, 1.0, value(t, f, "asynq_queue_paused_total", map[string]string{"queue": "batch"}))
	require.Equal(t, 0.0, value(t, f, "asynq_queue_paused_total", map[string]string{"queue": "default"}))
	require.GreaterOrEqual(t, value(t, f, "asynq_queue_latency_seconds", map[string]string{"queue": "default"}), 0.0)
	require.Equal(t, 0.0, value(t, f, "asynq_tasks_processed_total", map[string]string{"queue": "default"}))
	require.Equal(t, dto.MetricType_COUNTER, f["asynq_tasks_processed_total"].GetType())
}

func TestQueueCollectorRedisDown(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: every read fails at once.
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = insp.Close() })
	b := setup(t, metrics.Options{Inspector: insp})
	f := scrape(t, b.url)
	require.Equal(t, 0.0, value(t, f, "claudeq_queue_metrics_up", nil))
	require.NotContains(t, f, "asynq_queue_size")
	// The rest of the registry is still served.
	require.Contains(t, f, "claudeq_cache_requests_total")
}

// TestSharedStateSources: with Options.NodeHealth and Options.Budgets the
// node health and budget gauges show what the sources say at each scrape,
// and nothing when a source fails, never an older value.
func TestSharedStateSources(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	nodes := []metrics.NodeHealth{{Node: "node-a", Status: metrics.NodeHealthy}, {Node: "node-b", Status: metrics.NodeExhausted}}
	budgets := []metrics.BudgetUse{
		{Scope: metrics.QuotaTotal, Ratio: 0.25},
		{Scope: metrics.QuotaDepartment, Department: "research", Ratio: 0.5},
		{Scope: metrics.QuotaDepartment, Department: "sales", Ratio: 0.7}, // beyond the bound: "other"
		{Scope: metrics.QuotaDepartment, Department: "legal", Ratio: 0.9}, // "other" shows the highest
		{Scope: metrics.QuotaUser, Department: "alice", Ratio: 1},         // not exported
	}
	var fail error
	b := setup(t, metrics.Options{
		MaxDepartmentLabels: 1,
		NodeHealth: func(ctx context.Context) ([]metrics.NodeHealth, error) {
			mu.Lock()
			defer mu.Unlock()
			return nodes, fail
		},
		Budgets: func(ctx context.Context) ([]metrics.BudgetUse, error) {
			mu.Lock()
			defer mu.Unlock()
			return budgets, fail
		},
	})
	b.m.SetNodeHealth("node-z", metrics.NodeHealthy) // replaced by the source at scrape
	f := scrape(t, b.url)
	health := "claudeq_upstream_node_health"
	require.Equal(t, []string{"node-a", "node-b"}, labelValues(f, health, "node"))
	require.Equal(t, 1.0, value(t, f, health, map[string]string{"node": "node-a", "status": "healthy"}))
	require.Equal(t, 0.0, value(t, f, health, map[string]string{"node": "node-a", "status": "exhausted"}))
	require.Equal(t, 1.0, value(t, f, health, map[string]string{"node": "node-b", "status": "exhausted"}))
	require.Equal(t, 0.0, value(t, f, health, map[string]string{"node": "node-b", "status": "healthy"}))
	budget := "claudeq_budget_used_ratio"
	require.Len(t, f[budget].GetMetric(), 3)
	require.Equal(t, 0.25, value(t, f, budget, map[string]string{"scope": "total", "department": ""}))
	require.Equal(t, 0.5, value(t, f, budget, map[string]string{"scope": "department", "department": "research"}))
	require.Equal(t, 0.9, value(t, f, budget, map[string]string{"scope": "department", "department": "other"}))

	mu.Lock()
	nodes = []metrics.NodeHealth{{Node: "node-a", Status: metrics.NodeUnhealthy}}
	budgets = budgets[:1]
	mu.Unlock()
	f = scrape(t, b.url)
	require.Equal(t, []string{"node-a"}, labelValues(f, health, "node"))
	require.Equal(t, 1.0, value(t, f, health, map[string]string{"node": "node-a", "status": "unhealthy"}))
	require.Len(t, f[budget].GetMetric(), 1)

	mu.Lock()
	fail = errors.New("redis down")
	mu.Unlock()
	f = scrape(t, b.url)
	require.NotContains(t, f, health)
	require.NotContains(t, f, budget)
	require.Contains(t, f, "claudeq_cache_requests_total", "the rest is served")
}

// TestNilMetricsRecordsNothing: components take an optional *Metrics.
func TestNilMetricsRecordsNothing(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	require.NotPanics(t, func() { driveAll(m) })
	require.NotPanics(t, func() { m.QuotaRefused(metrics.QuotaRequests); m.CacheMiss(); m.UpstreamStarted("n")() })
}

// driveAll records at least one series of every metric.
func driveAll(m *metrics.Metrics) {
	m.ObserveUpstream(sonnet, metrics.StatusSuccess, "standard", time.Second, 10, "alice")
	m.Error(claudeq.KindOverloaded, sonnet)
	m.UpstreamStarted("node-a")()
	m.CacheHit()
	m.QuotaRefused(metrics.QuotaUser)
	m.AddCost("research", sonnet, 0.01)
	m.PricedByFallback("claude-fable-5-3", "claude-fable-5")
	m.SetBudgetUsed(metrics.QuotaTotal, "", 0.1)
	m.SetNodeHealth("node-a", metrics.NodeHealthy)
	m.WebhookDelivery(metrics.WebhookSuccess)
	m.BatchItems(metrics.BatchSucceeded, 1)
	m.RateLimitFailOpen()
	m.AuditDropped(1)
	m.SetAuditBacklog(1)
	e := echo.New()
	e.Use(m.HTTP())
	e.GET("/x", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil))
}

// TestNames checks that Names lists exactly the families claudeq exports
// beside the Go, process and promhttp ones, so that dashboards and alerts
// checked against it (deployments/) query what exists.
func TestNames(t *testing.T) {
	t.Parallel()
	rs := redistest.New(t)
	rdb := rs.Client(t)
	enqueue(t, asynq.NewClientFromRedisClient(rdb), "default", 1)
	b := setup(t, metrics.Options{Inspector: asynq.NewInspectorFromRedisClient(rdb)})
	driveAll(b.m)
	f := scrape(t, b.url)
	var got []string
	for name := range f {
		if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "promhttp_") {
			got = append(got, name)
		}
	}
	sort.Strings(got)
	require.Equal(t, metrics.Names(), got)
	for _, h := range metrics.Histograms() {
		require.Equal(t, dto.MetricType_HISTOGRAM, f[h].GetType(), h)
	}
}

// knownLint is what promtool reports about asynq's own metric names, kept
// for compatibility with asynq's collector and its dashboards.
var knownLint = []string{
	`asynq_tasks_enqueued_total non-counter metrics should not have "_total" suffix`,
	`asynq_queue_paused_total non-counter metrics should not have "_total" suffix`,
}

// TestPromtoolCheckMetrics runs `promtool check metrics` (Prometheus' own
// linter) on a full scrape. promtool comes with Debian's prometheus package
// (scripts/ensure-promtool.sh installs it; make test runs it first). It
// skips without it, or fails under CLAUDEQ_REQUIRE_INTEGRATION=1 (CI) or
// CLAUDEQ_REQUIRE_PROMTOOL=1.
func TestPromtoolCheckMetrics(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		const msg = "promtool not on PATH (scripts/promtool-check.sh installs it)"
		if os.Getenv("CLAUDEQ_REQUIRE_PROMTOOL") == "1" || os.Getenv(redistest.EnvRequireIntegration) == "1" {
			t.Fatal(msg + " (CLAUDEQ_REQUIRE_INTEGRATION=1 or CLAUDEQ_REQUIRE_PROMTOOL=1)")
		}
		t.Skip(msg)
	}
	rs := redistest.New(t)
	rdb := rs.Client(t)
	enqueue(t, asynq.NewClientFromRedisClient(rdb), "default", 1)
	b := setup(t, metrics.Options{Inspector: asynq.NewInspectorFromRedisClient(rdb)})
	driveAll(b.m)
	text := scrapeText(t, b.url)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	var problems []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || slices.Contains(knownLint, line) {
			continue
		}
		problems = append(problems, line)
	}
	require.Empty(t, problems, "promtool check metrics (exit %v):\n%s", err, out)
}
