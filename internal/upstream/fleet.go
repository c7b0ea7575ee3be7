package upstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redisbatch"
)

// Balancing strategies for FleetOptions.Strategy.
const (
	// RoundRobin rotates over the eligible nodes with one shared Redis
	// counter (INCR per Pick), so every process takes its turn in the same
	// rotation.
	RoundRobin = "round_robin"
	// WeightedRandom draws a node with probability proportional to its
	// Weight. It needs no shared state beyond health.
	WeightedRandom = "weighted_random"
	// LeastConnections picks the node with the fewest calls in flight
	// across all processes, relative to its Weight; ties are broken at
	// random.
	LeastConnections = "least_connections"
	// ResponseTime picks the node with the lowest decaying average (EWMA)
	// of latency per output token, times (in-flight + 1) so that a fast
	// node is not buried. A node without a measurement, or whose last one
	// is older than 30 s, is explored first: one call per process measures
	// it, and nothing else goes to it meanwhile.
	ResponseTime = "response_time"
)

// Defaults of FleetOptions.
const (
	DefaultStrategy         = LeastConnections
	DefaultKeyPrefix        = "{claudeq:upstream}:"
	DefaultFailureThreshold = 5
	DefaultFailureWindow    = 30 * time.Second
	DefaultCooldown         = 30 * time.Second
	DefaultProbeFailures    = 2
	DefaultSnapshotTTL      = 200 * time.Millisecond
)

// DefaultRateLimitWait is how long a node rests after a 429 that carries
// no retry-after.
const DefaultRateLimitWait = time.Second

const (
	ewmaAlpha = 0.3 // weight of the newest sample in the latency EWMA
	// rtStaleAfter: a node whose last response_time measurement (or
	// exploration) is older than this is explored: tried first, by one
	// call per process, so that a node slow once is not shunned for ever.
	rtStaleAfter = 30 * time.Second
	latencyKeep  = 100 // response times kept per node for p50/p95
	slowFactor   = 3   // degraded when p95 > slowFactor × fleet median p50
	slowSamples  = 10  // samples a node needs before it can be called slow
	finishWait   = 5 * time.Second
)

// FleetOptions configures a Fleet. Zero values take the documented
// defaults; only Redis is required.
type FleetOptions struct {
	// Strategy is round_robin, weighted_random, least_connections or
	// response_time (default least_connections: LLM calls vary from
	// milliseconds to minutes, so counting them balances best).
	Strategy string
	// Redis holds the state shared by every process (required). The
	// scripts touch several keys at once, so on Redis Cluster KeyPrefix
	// must contain a hash tag ({…}), as the default does.
	Redis redis.UniversalClient
	// KeyPrefix prefixes every key (default "{claudeq:upstream}:"). Fleets
	// that share a prefix share health, counters and rotation.
	KeyPrefix string
	// HTTPClient carries the calls (default DefaultHTTPClient()).
	HTTPClient *http.Client
	// Timeout bounds one call and one probe (0: only the caller's context).
	Timeout time.Duration
	// FailureThreshold failures (529, 5xx, timeouts, connection errors,
	// 401/403) within FailureWindow mark a node unhealthy (default 5).
	FailureThreshold int
	// FailureWindow is the sliding window of FailureThreshold (default 30s).
	FailureWindow time.Duration
	// Cooldown is how long an unhealthy node gets no request before its
	// half-open trial (default 30s).
	Cooldown time.Duration
	// ProbeFailures consecutive failed probes mark a node unhealthy
	// (default 2).
	ProbeFailures int
	// SnapshotTTL is how long Pick reuses the shared state it read from
	// Redis (default 200ms; negative: read on every Pick). It runs on the
	// monotonic clock, not Now. A process's own changes are applied to its
	// snapshot at once; other processes' after at most SnapshotTTL.
	SnapshotTTL time.Duration
	// InFlightTTL is how long a process may stay silent before the
	// in-flight counts it left are discarded as those of a crashed process
	// (default max(2×Timeout, 2m); 30m without Timeout). It must exceed
	// the longest call.
	InFlightTTL time.Duration
	// Now is the clock of cooldowns, windows, minutes and timestamps
	// (default time.Now). Latencies are always measured on the monotonic
	// clock.
	Now func() time.Time
	// Logger receives health transitions and Redis trouble (default:
	// discard).
	Logger *slog.Logger
	// Builtin is the model list that stands in for a node's own (GET
	// /v1/models) until a probe has read it, or when the node answers
	// without one. Empty: such a node is sent any model its allow-list
	// admits, and adds nothing to Catalog.
	Builtin []claudeq.Model
	// Aliases pin alias names to model ids in Catalog (CLAUDEQ_MODEL_ALIASES);
	// a family name not pinned names the family's newest served model.
	Aliases map[string]string
	// CatalogTTL is how long the model lists read from Redis are reused
	// (default DefaultCatalogTTL, 2 s): a list a probe changed reaches every
	// process within it.
	CatalogTTL time.Duration
	// OnStart, if set, is called with the node's name just before a call
	// is sent to it (after admission), and the function it returns just
	// after the answer (or failure) came back: for per-node in-flight
	// metrics. It must not block. Probes are not calls.
	OnStart func(node string) (done func())
}

func (o *FleetOptions) validate() []error {
	var errs []error
	switch o.Strategy {
	case "", RoundRobin, WeightedRandom, LeastConnections, ResponseTime:
	default:
		errs = append(errs, fmt.Errorf("strategy: %q: use round_robin, weighted_random, least_connections or response_time", o.Strategy))
	}
	if o.Redis == nil {
		errs = append(errs, errors.New("redis: required: health and counters are shared through it"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", o.Timeout}, {"failure window", o.FailureWindow}, {"cooldown", o.Cooldown}, {"in-flight TTL", o.InFlightTTL}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v: must not be negative", d.name, d.v))
		}
	}
	if o.FailureThreshold < 0 {
		errs = append(errs, fmt.Errorf("failure threshold: %d: must not be negative", o.FailureThreshold))
	}
	if o.ProbeFailures < 0 {
		errs = append(errs, fmt.Errorf("probe failures: %d: must not be negative", o.ProbeFailures))
	}
	return errs
}

func (o *FleetOptions) defaults() {
	if o.Strategy == "" {
		o.Strategy = DefaultStrategy
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.HTTPClient == nil {
		o.HTTPClient = DefaultHTTPClient()
	}
	if o.FailureThreshold == 0 {
		o.FailureThreshold = DefaultFailureThreshold
	}
	if o.FailureWindow == 0 {
		o.FailureWindow = DefaultFailureWindow
	}
	if o.Cooldown == 0 {
		o.Cooldown = DefaultCooldown
	}
	if o.ProbeFailures == 0 {
		o.ProbeFailures = DefaultProbeFailures
	}
	if o.SnapshotTTL == 0 {
		o.SnapshotTTL = DefaultSnapshotTTL
	}
	if o.InFlightTTL == 0 {
		o.InFlightTTL = 30 * time.Minute
		if o.Timeout > 0 {
			o.InFlightTTL = max(2*o.Timeout, 2*time.Minute)
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CatalogTTL <= 0 {
		o.CatalogTTL = DefaultCatalogTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Fleet balances calls over upstream nodes and keeps their health. It is
// safe for concurrent use, and several Fleets (in many processes) that
// share a Redis and a KeyPrefix act as one: see the package documentation
// for what is shared and why it converges.
type Fleet struct {
	o        FleetOptions
	rdb      redis.UniversalClient
	inst     string // this Fleet's id in the shared in-flight counts
	nodes    []*fleetNode
	byName   map[string]int
	names    []string
	anyTPM   bool
	trialTTL time.Duration

	kRR, kInflight, kInstances, kUsage, kModels string

	snap      atomic.Pointer[snapshot]
	mu        sync.Mutex // serialises snapshot writers
	refreshMu sync.Mutex // one refresh at a time
	rrLocal   atomic.Int64
	lastWarn  atomic.Int64
	bg        *redisbatch.Batcher // interactive.go: SetBackground

	mods   atomic.Pointer[fleetModels] // models.go
	modsMu sync.Mutex                  // one refresh at a time
}

type fleetNode struct {
	cfg                         NodeConfig
	client                      *Client
	kNode, kFails, kLat, kTrial string
}

// snapshot is an immutable view of the shared routing state; writers swap
// in a patched copy.
type snapshot struct {
	taken  time.Time // monotonic, for SnapshotTTL
	minute int64     // the UTC minute rpm and tpm count
	v      []nodeView
}

type nodeView struct {
	state    string
	until    int64 // ms
	ewma     float64
	samples  int64
	inflight int64
	rpm, tpm int64
	trial    bool
	seenAt   int64 // ms of the last latency sample or exploration
}

// explore reports whether response_time should try the node to measure it.
func (v *nodeView) explore(ms int64) bool {
	return ms-v.seenAt > rtStaleAfter.Milliseconds()
}

// NewFleet returns a Fleet of nodes. It reports every problem with nodes
// and o at once. It does not touch Redis.
func NewFleet(nodes []NodeConfig, o FleetOptions) (*Fleet, error) {
	errs := validateNodes(nodes)
	errs = append(errs, o.validate()...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("upstream fleet: %w", errors.Join(errs...))
	}
	o.defaults()
	var id [6]byte
	_, _ = rand.Read(id[:])
	f := &Fleet{
		o:          o,
		rdb:        o.Redis,
		inst:       hex.EncodeToString(id[:]),
		byName:     make(map[string]int, len(nodes)),
		kRR:        o.KeyPrefix + "rr",
		kInflight:  o.KeyPrefix + "inflight",
		kInstances: o.KeyPrefix + "instances",
		kUsage:     o.KeyPrefix + "usage:",
		kModels:    o.KeyPrefix + "models",
		trialTTL:   time.Minute,
	}
	if o.Timeout > 0 {
		f.trialTTL = o.Timeout + 5*time.Second
	}
	f.o.Builtin = slices.Clone(o.Builtin)
	for i, nc := range nodes {
		nc.Models = slices.Clone(nc.Models)
		p := o.KeyPrefix
		f.nodes = append(f.nodes, &fleetNode{
			cfg:    nc,
			client: New(Node{Name: nc.Name, BaseURL: nc.URL, APIKey: nc.APIKey.Reveal()}, o.HTTPClient, o.Timeout),
			kNode:  p + "node:" + nc.Name,
			kFails: p + "fails:" + nc.Name,
			kLat:   p + "lat:" + nc.Name,
			kTrial: p + "trial:" + nc.Name,
		})
		f.byName[nc.Name] = i
		f.names = append(f.names, nc.Name)
		f.anyTPM = f.anyTPM || nc.TPM > 0
	}
	return f, nil
}

// Names returns the node names in configuration order.
func (f *Fleet) Names() []string { return slices.Clone(f.names) }

// Strategy returns the balancing strategy in use.
func (f *Fleet) Strategy() string { return f.o.Strategy }

// Pick returns the node the next call for model would go to, without
// calling it or counting it in flight (round_robin does advance the shared
// rotation). Only nodes whose health admits traffic, that serve model and
// are not drained are considered; nodes in avoid are used only when no
// other is left. It fails with KindNoUpstream when no node can serve.
func (f *Fleet) Pick(ctx context.Context, model string, avoid []string) (string, error) {
	i, err := f.pick(ctx, model, avoid, nil)
	if err != nil {
		return "", err
	}
	return f.names[i], nil
}

// Call sends body (a Messages API request for model) to a node chosen as
// Pick does, and returns the answer, the node's name and the error
// classified by Classify. Pass in avoid the nodes that failed the previous
// attempts of the same job. The outcome feeds the node's shared health.
// When no node can serve, the error is a *claudeq.Error of kind
// KindNoUpstream whose RetryAfter is the time until the earliest cooldown
// ends (0 if none), and no node is named.
func (f *Fleet) Call(ctx context.Context, model string, body []byte, avoid []string) (*Response, string, error) {
	est := int64(0)
	if f.anyTPM {
		est = estimateTokens(body)
	}
	var exclude []string
	for range len(f.nodes) + 1 {
		i, err := f.pick(ctx, model, avoid, exclude)
		if err != nil {
			return nil, "", err
		}
		n := f.nodes[i]
		adm, ok := f.admit(ctx, i, est)
		if !ok {
			exclude = append(exclude, n.cfg.Name)
			continue
		}
		var done func()
		if f.o.OnStart != nil {
			done = f.o.OnStart(n.cfg.Name)
		}
		start := time.Now()
		resp, err := n.client.Messages(ctx, body)
		lat := time.Since(start)
		if done != nil {
			done()
		}
		f.finish(ctx, i, adm, resp, err, lat)
		return resp, n.cfg.Name, err
	}
	return nil, "", f.noUpstream(model, true, 0)
}

// pick chooses a node index. exclude holds nodes refused at admission
// during this Call: they are never used again by it.
func (f *Fleet) pick(ctx context.Context, model string, avoid, exclude []string) (int, error) {
	s := f.view(ctx)
	ms := f.o.Now().UnixMilli()
	minute := ms / 60_000
	// Preferred candidates fill buf from the front, avoided ones from the
	// back; both keep configuration order (round_robin relies on it).
	var stack [64]int
	buf := stack[:]
	if len(f.nodes) > len(stack) {
		buf = make([]int, len(f.nodes))
	}
	nPref, nFall := 0, 0
	serving := false
	var earliest int64
	mods := f.models(ctx)
	for i, n := range f.nodes {
		if n.cfg.Weight == 0 || !mods.servesModel(f, i, model) {
			continue
		}
		serving = true
		v := &s.v[i]
		if v.until > ms {
			if earliest == 0 || v.until < earliest {
				earliest = v.until
			}
			continue
		}
		if (v.trial && v.state == stateUnhealthy) || (len(exclude) > 0 && slices.Contains(exclude, n.cfg.Name)) {
			continue
		}
		if minute == s.minute && ((n.cfg.RPM > 0 && v.rpm >= int64(n.cfg.RPM)) || (n.cfg.TPM > 0 && v.tpm >= int64(n.cfg.TPM))) {
			continue
		}
		if len(avoid) > 0 && slices.Contains(avoid, n.cfg.Name) {
			nFall++
			buf[len(buf)-nFall] = i
		} else {
			buf[nPref] = i
			nPref++
		}
	}
	cand := buf[:nPref]
	if nPref == 0 {
		cand = buf[len(buf)-nFall:]
		slices.Reverse(cand)
	}
	if len(cand) == 0 {
		var wait time.Duration
		if earliest > 0 {
			wait = time.Duration(earliest-ms) * time.Millisecond
		}
		return 0, f.noUpstream(model, serving, wait)
	}
	if len(cand) == 1 {
		return cand[0], nil
	}
	return f.choose(ctx, s, cand, ms), nil
}

func (f *Fleet) noUpstream(model string, serving bool, wait time.Duration) error {
	m := model
	if m == "" {
		m = "(any)"
	}
	msg := "no healthy upstream for model " + m
	if !serving {
		msg = "no upstream node serves model " + m
	}
	return &claudeq.Error{Kind: claudeq.KindNoUpstream, Op: "upstream.Pick", Msg: msg, RetryAfter: wait}
}

func (f *Fleet) choose(ctx context.Context, s *snapshot, cand []int, ms int64) int {
	switch f.o.Strategy {
	case RoundRobin:
		n := f.incrRR(ctx)
		return cand[int(n%int64(len(cand)))]
	case WeightedRandom:
		total := 0
		for _, i := range cand {
			total += f.nodes[i].cfg.Weight
		}
		r := mrand.IntN(total)
		for _, i := range cand {
			if r -= f.nodes[i].cfg.Weight; r < 0 {
				return i
			}
		}
		return cand[len(cand)-1]
	case LeastConnections:
		// Minimum of in-flight ÷ weight, compared without division; then
		// a uniform draw among the ties (one random number).
		best, ties := cand[0], 0
		for _, i := range cand {
			a := s.v[i].inflight * int64(f.nodes[best].cfg.Weight)
			b := s.v[best].inflight * int64(f.nodes[i].cfg.Weight)
			switch {
			case a < b:
				best, ties = i, 1
			case a == b:
				ties++
			}
		}
		if ties > 1 {
			k := mrand.IntN(ties)
			for _, i := range cand {
				if s.v[i].inflight*int64(f.nodes[best].cfg.Weight) == s.v[best].inflight*int64(f.nodes[i].cfg.Weight) {
					if k == 0 {
						return i
					}
					k--
				}
			}
		}
		return best
	default: // ResponseTime
		stale := func(i int) bool { return s.v[i].explore(ms) }
		untried := 0
		for _, i := range cand {
			if stale(i) {
				untried++
			}
		}
		if untried > 0 {
			k := mrand.IntN(untried)
			for _, i := range cand {
				if stale(i) {
					if k == 0 {
						return i
					}
					k--
				}
			}
		}
		score := func(i int) float64 {
			if s.v[i].samples == 0 {
				return math.Inf(1) // being explored: no measurement yet
			}
			return s.v[i].ewma * float64(s.v[i].inflight+1)
		}
		best, bestScore, ties := cand[0], score(cand[0]), 0
		for _, i := range cand {
			switch sc := score(i); {
			case sc < bestScore:
				best, bestScore, ties = i, sc, 1
			case sc == bestScore:
				ties++
			}
		}
		if ties > 1 {
			k := mrand.IntN(ties)
			for _, i := range cand {
				if score(i) == bestScore {
					if k == 0 {
						return i
					}
					k--
				}
			}
		}
		return best
	}
}

// incrRR advances the shared rotation, falling back to a local counter
// while Redis is unreachable. It returns a value ≥ 0.
func (f *Fleet) incrRR(ctx context.Context) int64 {
	n, err := f.rdb.Incr(ctx, f.kRR).Result()
	if err != nil {
		f.warn("round-robin counter unavailable; rotating locally", err)
		n = f.rrLocal.Add(1)
	}
	if n <= 0 {
		return 0
	}
	return n - 1
}

// view returns the routing snapshot, refreshed from Redis once it is older
// than SnapshotTTL. While one goroutine refreshes, the others use the old
// snapshot. If Redis fails, the last snapshot (or an all-healthy one) is
// used for another SnapshotTTL: routing fails open, logged.
func (f *Fleet) view(ctx context.Context) *snapshot {
	s := f.snap.Load()
	if s != nil && f.o.SnapshotTTL > 0 && time.Since(s.taken) < f.o.SnapshotTTL {
		return s
	}
	if s != nil {
		if !f.refreshMu.TryLock() {
			return s
		}
	} else {
		f.refreshMu.Lock()
		if s = f.snap.Load(); s != nil {
			f.refreshMu.Unlock()
			return s
		}
	}
	defer f.refreshMu.Unlock()
	ns, err := f.fetch(ctx)
	if err != nil {
		f.warn("shared upstream state unavailable; routing on the last known state", err)
		ns = &snapshot{taken: time.Now(), v: make([]nodeView, len(f.nodes))}
		if s != nil {
			ns.minute, ns.v = s.minute, s.v
		}
	}
	f.mu.Lock()
	f.snap.Store(ns)
	f.mu.Unlock()
	return ns
}

// fetch reads the shared state: one EVALSHA.
func (f *Fleet) fetch(ctx context.Context) (*snapshot, error) {
	now := f.o.Now()
	ms := now.UnixMilli()
	minute := ms / 60_000
	n := len(f.nodes)
	keys := make([]string, 0, 3+2*n)
	keys = append(keys, f.kInflight, f.kInstances, f.usageKey(minute))
	for _, nd := range f.nodes {
		keys = append(keys, nd.kNode)
	}
	for _, nd := range f.nodes {
		keys = append(keys, nd.kTrial)
	}
	args := make([]any, 0, 3+n)
	args = append(args, ms, ms-f.o.InFlightTTL.Milliseconds(), f.inst)
	for _, nd := range f.nodes {
		args = append(args, nd.cfg.Name)
	}
	taken := time.Now()
	res, err := snapshotScript.Run(ctx, f.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("read upstream state: %w", err)
	}
	if len(res) != n {
		return nil, fmt.Errorf("read upstream state: %d values for %d nodes", len(res), n)
	}
	s := &snapshot{taken: taken, minute: minute, v: make([]nodeView, n)}
	for i, line := range res {
		var fl [9]string
		for j := range fl {
			fl[j], line, _ = strings.Cut(line, " ")
		}
		s.v[i] = nodeView{
			state:    fl[0],
			until:    toInt(fl[1]),
			ewma:     toFloat(fl[2]),
			samples:  toInt(fl[3]),
			inflight: max(toInt(fl[4]), 0),
			rpm:      toInt(fl[5]),
			tpm:      toInt(fl[6]),
			trial:    fl[7] == "1",
			seenAt:   toInt(fl[8]),
		}
		if s.v[i].state != stateUnhealthy && s.v[i].state != stateExhausted {
			s.v[i].state = "" // no allocation kept for the common case
		}
	}
	return s, nil
}

func (f *Fleet) usageKey(minute int64) string {
	return f.kUsage + strconv.FormatInt(minute, 10)
}

// patch applies fn to node i of the current snapshot (copy on write), so
// that this process sees its own changes before the next refresh.
func (f *Fleet) patch(i int, fn func(v *nodeView, minute int64)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.snap.Load()
	if old == nil {
		return
	}
	ns := &snapshot{taken: old.taken, minute: old.minute, v: slices.Clone(old.v)}
	fn(&ns.v[i], ns.minute)
	f.snap.Store(ns)
}

// admission is what admit learned about a call it let through.
type admission struct {
	tracked bool  // counted in flight in Redis
	trial   bool  // the node's half-open trial
	minute  int64 // the UTC minute charged for RPM/TPM
	est     int64 // tokens charged for TPM
}

// admit checks node i against the authoritative shared state and counts
// the call in flight. ok is false when the node must not get the call.
// When Redis fails, the call is let through untracked (fail open).
func (f *Fleet) admit(ctx context.Context, i int, est int64) (admission, bool) {
	c := f.admitCall(i, est)
	res, err := admitScript.Run(ctx, f.rdb, c.keys, c.args...).Int64Slice()
	return f.admitted(i, c, res, err)
}

// admitArgs is one admission script call and what its outcome needs.
type admitArgs struct {
	keys    []string
	args    []any
	adm     admission
	ms      int64
	explore bool
}

func (f *Fleet) admitCall(i int, est int64) admitArgs {
	n := f.nodes[i]
	ms := f.o.Now().UnixMilli()
	minute := ms / 60_000
	if n.cfg.TPM == 0 {
		est = 0
	}
	adm := admission{minute: minute, est: est}
	explore := false
	if s := f.snap.Load(); s != nil && f.o.Strategy == ResponseTime {
		explore = s.v[i].explore(ms)
	}
	return admitArgs{keys: []string{n.kNode, n.kTrial, f.kInflight, f.kInstances, f.usageKey(minute)},
		args: []any{ms, n.cfg.Name, f.inst, n.cfg.RPM, n.cfg.TPM, est, f.trialTTL.Milliseconds(), b01(explore)},
		adm:  adm, ms: ms, explore: explore}
}

// admitted applies the admission script's answer (res, err) for call c.
func (f *Fleet) admitted(i int, c admitArgs, res []int64, err error) (admission, bool) {
	n, adm, ms, explore, est, minute := f.nodes[i], c.adm, c.ms, c.explore, c.adm.est, c.adm.minute
	if err != nil || len(res) != 2 {
		f.warn("upstream admission unavailable; calling without shared accounting", err)
		adm.est = 0
		return adm, true
	}
	code, x := res[0], res[1]
	switch {
	case code >= 0:
		adm.tracked, adm.trial = true, x == 1
		f.patch(i, func(v *nodeView, snapMinute int64) {
			v.inflight = code
			if explore {
				v.seenAt = ms
			}
			v.trial = v.trial || adm.trial
			if minute == snapMinute {
				v.rpm++
				v.tpm += est
			}
		})
		return adm, true
	case code == -1:
		f.patch(i, func(v *nodeView, _ int64) { v.until = x })
	case code == -2:
		f.patch(i, func(v *nodeView, _ int64) { v.state, v.trial = stateUnhealthy, true })
	case code == -3:
		f.patch(i, func(v *nodeView, _ int64) { v.rpm = max(v.rpm, int64(n.cfg.RPM)) })
	case code == -4:
		f.patch(i, func(v *nodeView, _ int64) { v.tpm = max(v.tpm, int64(n.cfg.TPM)) })
	}
	return adm, false
}

// Outcomes of a call, as the finish script knows them.
const (
	outcomeOK      = "ok"
	outcomeFail    = "fail"
	outcomeRate    = "rate"
	outcomeBill    = "bill"
	outcomeNeutral = "neutral"

	stateUnhealthy = "unhealthy"
	stateExhausted = "exhausted"
)

// outcome maps a call's result onto its effect on the node's health.
// untilMs is set for rate and bill.
func (f *Fleet) outcome(ctx context.Context, err error, now time.Time) (o string, untilMs int64) {
	if err == nil {
		return outcomeOK, 0
	}
	if ctx.Err() != nil {
		return outcomeNeutral, 0 // the caller gave up; not the node's fault
	}
	switch claudeq.ErrorKind(err) {
	case claudeq.KindRateLimit:
		d := claudeq.RetryAfter(err)
		if d <= 0 {
			d = DefaultRateLimitWait
		}
		return outcomeRate, now.Add(d).UnixMilli()
	case claudeq.KindBilling:
		var ae *anthropic.Error
		if errors.As(err, &ae) && ae.Response != nil {
			if d := retryAfter(ae.Response.Header); d > 0 {
				return outcomeBill, now.Add(d).UnixMilli()
			}
		}
		y, m, _ := now.UTC().Date()
		return outcomeBill, time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	case claudeq.KindOverloaded, claudeq.KindUpstream, claudeq.KindTimeout, claudeq.KindUnavailable,
		claudeq.KindInternal, claudeq.KindAuthentication, claudeq.KindPermission:
		return outcomeFail, 0
	default: // the request's fault: invalid, not found, too large, …
		return outcomeNeutral, 0
	}
}

// finish reports a call's outcome: one EVALSHA, run even when ctx is done
// so that the in-flight count is always given back.
func (f *Fleet) finish(ctx context.Context, i int, adm admission, resp *Response, callErr error, lat time.Duration) {
	c := f.finishCall(ctx, i, adm, resp, callErr, lat)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishWait)
	defer cancel()
	res, err := finishScript.Run(rctx, f.rdb, c.keys, c.args...).Slice()
	f.finished(i, c, res, err)
}

// finishArgs is one finish script call and what its outcome needs.
type finishArgs struct {
	keys []string
	args []any
	adm  admission
	now  time.Time
	msg  string
}

func (f *Fleet) finishCall(ctx context.Context, i int, adm admission, resp *Response, callErr error, lat time.Duration) finishArgs {
	n := f.nodes[i]
	now := f.o.Now()
	o, until := f.outcome(ctx, callErr, now)
	var outTokens, tpmFix int64
	if resp != nil {
		outTokens = resp.Usage.OutputTokens
		if adm.est > 0 {
			tpmFix = resp.Usage.Total() - adm.est
		}
	} else {
		tpmFix = -adm.est
	}
	msg := ""
	if callErr != nil {
		msg = claudeq.ErrorMessage(callErr)
		if len(msg) > 200 {
			msg = msg[:200]
		}
	}
	var fid [6]byte
	_, _ = rand.Read(fid[:])
	return finishArgs{keys: []string{n.kNode, n.kFails, n.kLat, n.kTrial, f.kInflight, f.kInstances, f.usageKey(adm.minute)},
		args: []any{now.UnixMilli(), n.cfg.Name, f.inst, o, lat.Microseconds(), outTokens, until,
			f.o.FailureWindow.Milliseconds(), f.o.FailureThreshold, f.o.Cooldown.Milliseconds(), ewmaAlpha,
			b01(adm.trial), b01(adm.tracked), tpmFix, msg, strconv.FormatInt(now.UnixMilli(), 10) + ":" + hex.EncodeToString(fid[:])},
		adm: adm, now: now, msg: msg}
}

// finished applies the finish script's answer (res, err) for call c.
func (f *Fleet) finished(i int, c finishArgs, res []any, err error) {
	n, adm, now, msg := f.nodes[i], c.adm, c.now, c.msg
	if err != nil || len(res) != 6 {
		f.warn("reporting an upstream outcome failed", err)
		return
	}
	f.patch(i, func(v *nodeView, _ int64) {
		if tot := toInt(res[0]); tot >= 0 {
			v.inflight = tot
		} else if adm.tracked && v.inflight > 0 {
			v.inflight--
		}
		v.state, v.until = str(res[1]), toInt(res[2])
		if samples := toInt(res[4]); samples != v.samples {
			v.ewma, v.samples, v.seenAt = toFloat(res[3]), samples, now.UnixMilli()
		}
		if adm.trial {
			v.trial = false
		}
	})
	f.logEvent(n.cfg.Name, str(res[5]), time.UnixMilli(toInt(res[2])), msg)
}

func (f *Fleet) logEvent(node, event string, until time.Time, msg string) {
	log := f.o.Logger
	switch event {
	case "ejected":
		log.Warn("upstream node unhealthy", "node", node, "until", until, "err", msg)
	case "reopened":
		log.Warn("upstream node failed its trial; unhealthy again", "node", node, "until", until, "err", msg)
	case "recovered":
		log.Info("upstream node healthy again", "node", node)
	case "exhausted":
		log.Error("upstream node out of credit or over its spend limit", "node", node, "until", until, "err", msg)
	case "cooling":
		log.Debug("upstream node rate limited", "node", node, "until", until)
	}
}

// warn logs a Redis problem at most once every 10 seconds per Fleet.
func (f *Fleet) warn(msg string, err error) {
	now := time.Now().UnixNano()
	last := f.lastWarn.Load()
	if now-last < int64(10*time.Second) || !f.lastWarn.CompareAndSwap(last, now) {
		return
	}
	f.o.Logger.Warn("upstream: "+msg, "err", err)
}

// estimateTokens guesses a request's tokens before it runs, for TPM:
// max_tokens plus a quarter of the request's bytes.
func estimateTokens(body []byte) int64 {
	var r struct {
		MaxTokens int64 `json:"max_tokens"`
	}
	_ = json.Unmarshal(body, &r)
	return max(r.MaxTokens, 0) + int64(len(body)/4)
}

func b01(b bool) int {
	if b {
		return 1
	}
	return 0
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return n
		}
		if fl, err := strconv.ParseFloat(x, 64); err == nil {
			return int64(fl)
		}
	}
	return 0
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case string:
		fl, _ := strconv.ParseFloat(x, 64)
		return fl
	}
	return 0
}
