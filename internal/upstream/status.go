package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Node statuses reported by Fleet.Nodes.
const (
	// StatusHealthy: the node takes traffic and nothing is wrong.
	StatusHealthy = "healthy"
	// StatusDegraded: the node takes traffic, but it failed recently (below
	// the threshold), failed a probe, is slow (p95 over 3× the fleet's
	// median p50, with at least 10 samples on two nodes or more), or is
	// cooling down after a 429 (no traffic until CooldownUntil).
	StatusDegraded = "degraded"
	// StatusUnhealthy: the node failed FailureThreshold times within
	// FailureWindow (or ProbeFailures probes in a row). It gets no traffic
	// until CooldownUntil, then one trial request at a time (HalfOpen).
	StatusUnhealthy = "unhealthy"
	// StatusExhausted: the node reported a spend or usage limit; it gets
	// no traffic until CooldownUntil (the start of the next UTC month, or
	// the retry-after it sent).
	StatusExhausted = "exhausted"
)

// NodeStatus is a node as the admin API shows it. Durations marshal as
// nanoseconds. It is a plain value.
type NodeStatus struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Status string `json:"status"` // healthy | degraded | unhealthy | exhausted
	// HalfOpen is true when an unhealthy node's cooldown is over and it
	// takes one trial request at a time.
	HalfOpen bool `json:"half_open"`
	// InFlight counts calls in flight on the node across all processes.
	InFlight int64 `json:"in_flight"`
	// Failures counts node failures within the failure window.
	Failures int64 `json:"failures"`
	// ProbeFailures counts consecutive failed probes.
	ProbeFailures int64 `json:"probe_failures"`
	// LastCheck is when the node last answered a call or a probe.
	LastCheck time.Time `json:"last_check"`
	// P50 and P95 are over the last 100 successful calls.
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	// LatencyPerToken is the decaying average latency per output token,
	// what response_time compares (0: not measured yet).
	LatencyPerToken time.Duration `json:"latency_per_token"`
	// ProbeLatency is the latency of the last probe.
	ProbeLatency time.Duration `json:"probe_latency"`
	// CooldownUntil is when the node takes traffic again, if later than
	// now (zero otherwise).
	CooldownUntil time.Time `json:"cooldown_until"`
	// Requests and Errors count finished calls and node failures (429 and
	// spend limits included, bad requests not) since the state was created.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// LastError is the caller-safe message of the last node failure.
	LastError string   `json:"last_error,omitempty"`
	Weight    int      `json:"weight"`
	Models    []string `json:"models,omitempty"` // the allow-list (NodeConfig.Models)
	// ModelsServed are the ids the node is sent calls for: its list (or the
	// built-in one), cut to the allow-list; empty with ModelsSource "" when
	// no list is known (any model the allow-list admits).
	ModelsServed []string `json:"models_served"`
	// ModelsSource says where that list came from: ModelsFromNode or
	// ModelsBuiltin.
	ModelsSource string `json:"models_source,omitempty"`
	// ModelsAt is when a probe last read the node's list (zero: never).
	ModelsAt time.Time `json:"models_at,omitzero"`
}

// Nodes returns the status of every node, in configuration order, read
// from Redis in one round trip.
func (f *Fleet) Nodes(ctx context.Context) ([]NodeStatus, error) {
	now := f.o.Now()
	ms := now.UnixMilli()
	pipe := f.rdb.Pipeline()
	n := len(f.nodes)
	hs := make([]*redis.MapStringStringCmd, n)
	fails := make([]*redis.IntCmd, n)
	lats := make([]*redis.StringSliceCmd, n)
	from := "(" + strconv.FormatInt(ms-f.o.FailureWindow.Milliseconds(), 10)
	for i, nd := range f.nodes {
		hs[i] = pipe.HGetAll(ctx, nd.kNode)
		fails[i] = pipe.ZCount(ctx, nd.kFails, from, "+inf")
		lats[i] = pipe.LRange(ctx, nd.kLat, 0, latencyKeep-1)
	}
	inflight := pipe.HMGet(ctx, f.kInflight, f.names...)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, claudeq.E(claudeq.KindUnavailable, "upstream.Nodes", "node status unavailable", err)
	}
	counts := inflight.Val()
	mods := f.models(ctx)
	out := make([]NodeStatus, n)
	p50s := make([]time.Duration, 0, n)
	for i, nd := range f.nodes {
		h := hs[i].Val()
		st := NodeStatus{
			Name: nd.cfg.Name, URL: nd.cfg.URL, Weight: nd.cfg.Weight, Models: slices.Clone(nd.cfg.Models),
			Failures:        fails[i].Val(),
			ProbeFailures:   toInt(h["probe_fails"]),
			Requests:        toInt(h["requests"]),
			Errors:          toInt(h["errors"]),
			LastError:       h["last_error"],
			LatencyPerToken: time.Duration(toFloat(h["ewma"]) * float64(time.Microsecond)),
			ProbeLatency:    time.Duration(toInt(h["probe_us"])) * time.Microsecond,
			ModelsServed:    []string{},
			ModelsSource:    mods.source[i],
			ModelsAt:        mods.at[i],
		}
		if c := mods.nodes[i]; c != nil {
			for _, m := range c.Models() {
				st.ModelsServed = append(st.ModelsServed, m.ID)
			}
		}
		if i < len(counts) {
			st.InFlight = max(toInt(counts[i]), 0)
		}
		if c := toInt(h["check"]); c > 0 {
			st.LastCheck = time.UnixMilli(c).UTC()
		}
		until := toInt(h["until"])
		if until > ms {
			st.CooldownUntil = time.UnixMilli(until).UTC()
		}
		switch state := h["state"]; {
		case state == stateExhausted && until > ms:
			st.Status = StatusExhausted
		case state == stateUnhealthy:
			st.Status = StatusUnhealthy
			st.HalfOpen = until <= ms
		case until > ms || st.Failures > 0 || st.ProbeFailures > 0:
			st.Status = StatusDegraded
		default:
			st.Status = StatusHealthy
		}
		st.P50, st.P95 = percentiles(lats[i].Val())
		if len(lats[i].Val()) >= slowSamples {
			p50s = append(p50s, st.P50)
		}
		out[i] = st
	}
	if len(p50s) >= 2 {
		slices.Sort(p50s)
		median := p50s[len(p50s)/2]
		if len(p50s)%2 == 0 {
			median = (p50s[len(p50s)/2-1] + p50s[len(p50s)/2]) / 2
		}
		for i := range out {
			if out[i].Status == StatusHealthy && len(lats[i].Val()) >= slowSamples && out[i].P95 > slowFactor*median {
				out[i].Status = StatusDegraded
			}
		}
	}
	return out, nil
}

// percentiles returns the nearest-rank p50 and p95 of latencies in µs.
func percentiles(us []string) (p50, p95 time.Duration) {
	if len(us) == 0 {
		return 0, 0
	}
	v := make([]int64, 0, len(us))
	for _, s := range us {
		v = append(v, toInt(s))
	}
	slices.Sort(v)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return time.Duration(v[max(i, 0)]) * time.Microsecond
	}
	return rank(0.50), rank(0.95)
}

// Probe checks a node with GET /v1/models, which costs nothing, and
// records the result in the shared state: last check, probe latency,
// consecutive probe failures, and the node's model list (every page; see
// Catalog). ProbeFailures failures in a row mark the
// node unhealthy; a success clears an unhealthy state that probes set
// (one set by failed calls waits for its half-open trial, since listing
// models says little about answering them). Connection errors, timeouts,
// 5xx, 529, 401 and 403 are failures; other answers prove the node
// reachable. Probe returns the failure, nil on success, a KindNotFound
// error for an unknown node, and records nothing when ctx is canceled.
func (f *Fleet) Probe(ctx context.Context, node string) error {
	i, ok := f.byName[node]
	if !ok {
		return claudeq.Errorf(claudeq.KindNotFound, "no upstream node %q", node)
	}
	n := f.nodes[i]
	start := time.Now()
	list, err := n.client.Models(ctx)
	lat := time.Since(start)
	if errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	listErr := err
	if err != nil && (errors.Is(err, errNoList) || probeReachable(err)) {
		err = nil
	}
	msg := ""
	if err != nil {
		msg = claudeq.ErrorMessage(err)
	}
	now := f.o.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishWait)
	defer cancel()
	res, rerr := probeScript.Run(rctx, f.rdb, []string{n.kNode},
		now.UnixMilli(), b01(err == nil), lat.Microseconds(), f.o.ProbeFailures, f.o.Cooldown.Milliseconds(), msg).Slice()
	if rerr == nil && len(res) != 3 {
		rerr = fmt.Errorf("unexpected reply %v", res)
	}
	if rerr != nil {
		return errors.Join(err, claudeq.E(claudeq.KindUnavailable, "upstream.Probe", "recording the probe failed", fmt.Errorf("node %s: %w", node, rerr)))
	}
	state, until := str(res[0]), toInt(res[1])
	f.patch(i, func(v *nodeView, _ int64) { v.state, v.until = state, until })
	f.logEvent(node, str(res[2]), time.UnixMilli(until), msg)
	if merr := f.recordModels(rctx, i, list, listErr); merr != nil {
		return errors.Join(err, claudeq.E(claudeq.KindUnavailable, "upstream.Probe", "recording the model list failed", fmt.Errorf("node %s: %w", node, merr)))
	}
	return err
}

// probeReachable reports whether a probe error still proves the node up
// and its key valid.
func probeReachable(err error) bool {
	switch claudeq.ErrorKind(err) {
	case claudeq.KindRateLimit, claudeq.KindBilling, claudeq.KindNotFound, claudeq.KindInvalidRequest, claudeq.KindRequestTooLarge:
		return true
	}
	return false
}
