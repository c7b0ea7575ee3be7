package app_test

import (
	"bytes"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/store"
)

// scrape GETs a Prometheus endpoint as Prometheus does (text format) and
// parses it with Prometheus' own parser.
func scrape(t *testing.T, url, key string) metricSet {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	return metricSet{t: t, fams: fams}
}

type metricSet struct {
	t    *testing.T
	fams map[string]*dto.MetricFamily
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// get returns the value of the series of name whose labels are exactly
// labels (a histogram's sample count); the series must exist.
func (s metricSet) get(name string, labels map[string]string) float64 {
	s.t.Helper()
	for _, m := range s.fams[name].GetMetric() {
		if got := labelsOf(m); len(got) == len(labels) {
			match := true
			for k, v := range labels {
				match = match && got[k] == v
			}
			if match {
				return metricValue(m)
			}
		}
	}
	require.Failf(s.t, "series not scraped", "%s%v; have %v", name, labels, s.series(name))
	return 0
}

// series lists the series of name as "label=value,…" → value.
func (s metricSet) series(name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.fams[name].GetMetric() {
		var ks []string
		for k, v := range labelsOf(m) {
			ks = append(ks, k+"="+v)
		}
		sort.Strings(ks)
		key := ""
		for i, k := range ks {
			if i > 0 {
				key += ","
			}
			key += k
		}
		out[key] = metricValue(m)
	}
	return out
}

// tokensOf sums every token class of a job's usage.
func tokensOf(j map[string]any) float64 {
	u := j["usage"].(map[string]any)
	var n float64
	for _, k := range []string{"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} {
		if v, ok := u[k].(float64); ok {
			n += v
		}
	}
	return n
}

// TestMetricsCountWhatJobsDid runs the api, a worker and the scheduler as
// separate processes would (each its own registry and admin listener),
// drives jobs through successes, an upstream failure that is retried, one
// that fails the job, a cache hit, quota refusals and a webhook delivery,
// and checks every metric's value against what the jobs, the ledger and
// the receiver say.
func TestMetricsCountWhatJobsDid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rcv := newReceiver(t)
	// A failure stays in the node's failure window for the whole test
	// (the window is CLAUDEQ_NODE_COOLDOWN), so its health is stable.
	over := []string{"CLAUDEQ_METRICS_ADDR", "127.0.0.1:0", "CLAUDEQ_WEBHOOK_ALLOW", "http://127.0.0.1",
		"CLAUDEQ_NODE_COOLDOWN", "10m"}
	apiApp, _ := e.run(app.Roles{API: true}, over...)
	worker, _ := e.run(app.Roles{Worker: true}, over...)
	sched, _ := e.run(app.Roles{Scheduler: true}, over...)
	base := "http://" + apiApp.Addr()
	apiMetrics := "http://" + apiApp.AdminAddr() + "/metrics"
	workerMetrics := "http://" + worker.AdminAddr() + "/metrics"
	schedMetrics := "http://" + sched.AdminAddr() + "/metrics"

	alice, _ := e.key("alice", "research")
	bob, _ := e.key("bob", "sales")
	carol, _ := e.key("carol", "research")
	admin, _ := e.key("root", "ops", "admin")
	put := func(path string, usd string) {
		r := do(t, "PUT", base+"/admin/quotas/"+path, admin, map[string]any{"daily_usd": usd})
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	}
	put("total/-", "100")
	put("department/research", "10")
	put("user/carol", "0.001")
	r := do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "dave", "department": "sales", "requests_per_day": 1})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	dave := r.json(t)["key"].(string)
	sec := do(t, "GET", base+"/api/claude/webhooks/secret", bob, nil)
	require.Equal(t, http.StatusOK, sec.Status, "%s", sec.Body)
	var secrets []string
	for _, s := range sec.json(t)["secrets"].([]any) {
		secrets = append(secrets, s.(string))
	}
	rcv.setSecrets(secrets...)

	// Before any call the node is healthy and nothing is booked.
	s := scrape(t, schedMetrics, "")
	require.Equal(t, map[string]float64{"node=default,status=healthy": 1, "node=default,status=degraded": 0,
		"node=default,status=unhealthy": 0, "node=default,status=exhausted": 0}, s.series("claudeq_upstream_node_health"))
	require.Equal(t, map[string]float64{"department=,scope=total": 0}, s.series("claudeq_budget_used_ratio"))

	// One job at a time, so that each scripted fault meets the job meant.
	run := func(key string, body map[string]any) map[string]any {
		t.Helper()
		return wait(t, base, key, submit(t, base, key, body), 30*time.Second)
	}
	var succeeded []map[string]any
	// 1. A success, then 2. the same request again: answered by the cache.
	j := run(alice, map[string]any{"prompt": "What do metrics measure?"})
	require.Equal(t, "succeeded", j["status"])
	succeeded = append(succeeded, j)
	r = do(t, "POST", base+"/api/claude/chat", alice, map[string]any{"prompt": "What do metrics measure?"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, true, r.json(t)["cached"])
	// 3. The upstream is overloaded once (529): the job retries and succeeds.
	e.sim.Script("529")
	j = run(bob, map[string]any{"prompt": "Retry me"})
	require.Equal(t, "succeeded", j["status"])
	require.EqualValues(t, 2, j["attempts"])
	succeeded = append(succeeded, j)
	// 4. The upstream refuses the request (400): the job fails.
	e.sim.Script("400")
	j = run(alice, map[string]any{"prompt": "Refuse me"})
	require.Equal(t, "failed", j["status"])
	require.Equal(t, "invalid_request_error", j["error"].(map[string]any)["type"])
	// 5. A slow call is in flight on the worker, and its webhook is
	// delivered once it succeeded.
	e.sim.SetLatency(2*time.Second, 0)
	id := submit(t, base, bob, map[string]any{"prompt": "Notify me", "webhook_url": rcv.url})
	require.Eventually(t, func() bool {
		w := scrape(t, workerMetrics, "")
		return w.get("claude_active_connections", nil) == 1 && w.get("claudeq_upstream_inflight", map[string]string{"node": "default"}) == 1
	}, 30*time.Second, 20*time.Millisecond, "the call is in flight on the worker's only node")
	e.sim.SetLatency(0, 0)
	j = wait(t, base, bob, id, 30*time.Second)
	require.Equal(t, "succeeded", j["status"])
	succeeded = append(succeeded, j)
	require.Eventually(t, func() bool { u, _, _, _ := rcv.events(); return u == 1 }, 30*time.Second, 20*time.Millisecond)
	// 6. Over carol's budget: refused at submit, no call.
	r = do(t, "POST", base+"/api/claude/chat", carol, map[string]any{"prompt": "Too expensive", "model": "opus", "max_tokens": 4000})
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "quota_exceeded", "user carol")
	// 7. Dave may send one request a day: the second is refused.
	j = run(dave, map[string]any{"prompt": "My one request", "cache": false})
	require.Equal(t, "succeeded", j["status"])
	succeeded = append(succeeded, j)
	r = do(t, "POST", base+"/api/claude/chat", dave, map[string]any{"prompt": "One too many", "cache": false})
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "quota_exceeded", "requests for today")

	mdl := succeeded[0]["model"].(string)
	for _, j := range succeeded {
		require.Equal(t, mdl, j["model"])
	}
	tokens := map[string]float64{}
	users := []string{"alice", "bob", "bob", "dave"} // of succeeded, in order
	for i, j := range succeeded {
		tokens[users[i]] += tokensOf(j)
	}
	ctx := t.Context()
	ledger := map[string]float64{}
	for _, d := range []string{"research", "sales"} {
		tot, err := e.store.LedgerSum(ctx, store.LedgerFilter{Department: d})
		require.NoError(t, err)
		require.Positive(t, tot.CostMicros)
		ledger[d] = float64(tot.CostMicros) / 1e6
	}
	require.EqualValues(t, 4, e.count("ledger", bson.D{}), "four jobs billed")

	// The worker: every upstream call, its outcome, tokens, errors, cost,
	// in-flight back to zero, and the webhook delivery.
	w := scrape(t, workerMetrics, "")
	require.Equal(t, map[string]float64{
		"model=" + mdl + ",status=success,user_type=standard": 4, // jobs 1, 3 (second attempt), 5, 7
		"model=" + mdl + ",status=error,user_type=standard":   2, // the 529 and the 400
	}, w.series("claude_requests_total"))
	require.Equal(t, map[string]float64{
		"error_type=overloaded_error,model=" + mdl:      1,
		"error_type=invalid_request_error,model=" + mdl: 1,
	}, w.series("claude_errors_total"))
	require.Equal(t, 6.0, w.get("claude_response_time_seconds", map[string]string{"model": mdl}), "one observation per call")
	require.Equal(t, map[string]float64{
		"model=" + mdl + ",user_id=alice": tokens["alice"],
		"model=" + mdl + ",user_id=bob":   tokens["bob"],
		"model=" + mdl + ",user_id=dave":  tokens["dave"],
	}, w.series("claude_tokens_consumed_total"))
	cost := w.series("claudeq_cost_usd_total")
	require.Len(t, cost, 2)
	require.InDelta(t, ledger["research"], cost["department=research,model="+mdl], 1e-9)
	require.InDelta(t, ledger["sales"], cost["department=sales,model="+mdl], 1e-9)
	require.Equal(t, 0.0, w.get("claude_active_connections", nil))
	require.Equal(t, 0.0, w.get("claudeq_upstream_inflight", map[string]string{"node": "default"}))
	require.Equal(t, map[string]float64{"outcome=success": 1, "outcome=retry": 0, "outcome=failed": 0},
		w.series("claudeq_webhook_deliveries_total"))
	require.Equal(t, map[string]float64{"result=hit": 0, "result=miss": 0}, w.series("claudeq_cache_requests_total"),
		"the cache is read at submit, in the api")

	// The api: cache lookups and refusals by scope. Misses: jobs 1, 3 and
	// 4 and carol's refused request (the webhook job and dave's skip the
	// cache; the request cap refuses before the lookup).
	a := scrape(t, apiMetrics, "")
	require.Equal(t, map[string]float64{"result=hit": 1, "result=miss": 4}, a.series("claudeq_cache_requests_total"))
	require.Equal(t, map[string]float64{"scope=user": 1, "scope=requests": 1, "scope=department": 0, "scope=total": 0},
		a.series("claudeq_quota_refusals_total"))
	require.Empty(t, a.series("claude_requests_total"), "no upstream call from the api")
	// The api's own /metrics (admin:read key) is the same registry.
	withKey := scrape(t, base+"/metrics", admin)
	require.Equal(t, a.series("claudeq_cache_requests_total"), withKey.series("claudeq_cache_requests_total"))
	require.Equal(t, a.series("claudeq_quota_refusals_total"), withKey.series("claudeq_quota_refusals_total"))

	// The scheduler: the shared state. The 529 counts against the node
	// (degraded while it is in the failure window); the 400 was the
	// request's fault. Budgets: (spent + reserved) / limit, all settled.
	s = scrape(t, schedMetrics, "")
	require.Equal(t, map[string]float64{"node=default,status=healthy": 0, "node=default,status=degraded": 1,
		"node=default,status=unhealthy": 0, "node=default,status=exhausted": 0}, s.series("claudeq_upstream_node_health"))
	budget := s.series("claudeq_budget_used_ratio")
	require.Len(t, budget, 2, "sales has no budget: no ratio; %v", budget)
	require.InDelta(t, (ledger["research"]+ledger["sales"])/100, budget["department=,scope=total"], 1e-9)
	require.InDelta(t, ledger["research"]/10, budget["department=research,scope=department"], 1e-9)
	require.Equal(t, 1.0, s.get("claudeq_queue_metrics_up", nil))
	require.Empty(t, s.series("claude_requests_total"), "no upstream call from the scheduler")
}
