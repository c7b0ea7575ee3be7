package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Figure 7: the Anthropic-compatible API (POST /v1/messages,
// non-streaming, response cache off) against calling the simulator
// directly:
//
//   - added latency at concurrency 1 (closed loop, one client);
//   - added p50 and p99 at a fixed open-loop rate (vegeta, 1,000/s);
//   - the most requests per second when the gateway and the simulator
//     share one core, against the simulator alone on that core.
//
// Each is measured with the gateway's auth, budgets (quota reserve and
// settle, pricing, ledger) and audit on — the api role as cmd/api runs
// it — and again with them off (gatewayOff). The simulator and the
// gateways are processes of their own (see RunChild).

// The targets of figure 7.
const (
	MsgDirect = iota // the simulator itself
	MsgOn            // through the gateway, everything on
	MsgOff           // through the gateway, auth, budgets and audit off
	MsgProxy         // through a bare Go reverse proxy (httputil.ReverseProxy): the floor
	msgTargets
)

// MsgTargetNames name the targets in the report.
var MsgTargetNames = [msgTargets]string{"simulator directly", "claudeq, auth+quota+audit on", "claudeq, auth+quota+audit off", "bare reverse proxy (floor)"}

// Targets of figure 7.
const (
	MsgAddedP50On  = 400 * time.Microsecond  // added p50 at concurrency 1, everything on
	MsgAddedP50Off = 100 * time.Microsecond  // added p50 at concurrency 1, everything off
	MsgAddedP99    = 3 * time.Millisecond    // added p99 at the open-loop rate
	MsgMaxRatio    = 0.3                     // gateway+simulator on one core ≥ this × the simulator alone
	msgTimeout     = 10 * time.Second        // per request
	msgOpenWorkers = 64                      // vegeta's initial workers
	msgWarmup      = 1500 * time.Millisecond // before each target's first window
)

// OpenLatency is one open-loop run.
type OpenLatency struct {
	Sent, OK int
	FirstErr string
	Achieved float64 // requests started per second
	P50, P99 time.Duration
	Max      time.Duration
}

// MessagesResult is figure 7.
type MessagesResult struct {
	BodyBytes int
	Rate      float64
	C1        [msgTargets][]LoadStats   // concurrency 1
	C1CPU     [msgTargets][]ProcCPU     // CPU per request of each process during C1's windows
	Open      [msgTargets][]OpenLatency // at Rate
	// Max: the simulator alone on one core, then each gateway with the
	// simulator on that core.
	Max        [msgTargets][]LoadStats
	MaxCPU     [msgTargets][]ProcCPU // CPU per request of each process during Max's windows
	MaxClients int
	Pinning    string // how the one-core runs were set up
	Profile    *ProfileSummary
}

// ProcCPU is the CPU time per request the processes of figure 7 used in a
// window.
type ProcCPU struct {
	Gateway, Sim, Bench, Redis time.Duration
}

// procCPU measures the CPU of the gateway (pid 0 for none) and simulator
// processes, the bench process and redis-server around fn, per request.
func (e *Env) procCPU(gw, sm int, fn func() int) ProcCPU {
	g0, s0, b0, r0 := pidCPU(gw), pidCPU(sm), selfCPU(), e.Redis.CPU()
	n := fn()
	if n <= 0 {
		return ProcCPU{}
	}
	d := time.Duration(n)
	c := ProcCPU{Sim: (pidCPU(sm) - s0) / d, Bench: (selfCPU() - b0) / d, Redis: (e.Redis.CPU() - r0) / d}
	if gw > 0 {
		c.Gateway = (pidCPU(gw) - g0) / d
	}
	return c
}

// MessagesBody is the body of the i-th request: a distinct prompt (the
// response cache is off anyway), haiku, at most 64 output tokens.
func MessagesBody(i int64) []byte {
	return fmt.Appendf(nil, `{"model":"claude-haiku-5-5","max_tokens":64,"messages":[{"role":"user","content":"Benchmark request %d: name three uses of a message queue, briefly."}]}`, i)
}

// messagesCall posts MessagesBody(i) to base and expects 200.
func messagesCall(client *http.Client, base, key string) Call {
	url := base + "/v1/messages"
	return func(ctx context.Context, i int64) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(MessagesBody(i)))
		if err != nil {
			return err
		}
		req.Header["Content-Type"] = []string{"application/json"}
		req.Header["Anthropic-Version"] = []string{"2023-06-01"}
		req.Header["X-Api-Key"] = []string{key}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil
	}
}

// RunMessages measures figure 7.
func RunMessages(ctx context.Context, e *Env, o *Options) (*MessagesResult, error) {
	r := &MessagesResult{BodyBytes: len(MessagesBody(1)), Rate: o.MessagesRate, MaxClients: o.MessagesClients}
	if r.Rate <= 0 {
		r.Rate = 1000
	}
	if r.MaxClients <= 0 {
		r.MaxClients = 64
	}
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	db, err := e.NewDB(ctx, "messages")
	if err != nil {
		return nil, err
	}
	// Latency: nothing pinned, default GOMAXPROCS; the gateway's store a
	// process of its own at idle priority.
	store, err := e.startStore(ctx, "")
	if err != nil {
		return nil, err
	}
	defer store.stop()
	ldb, err := e.newDBAt(ctx, store.URL, "messages")
	if err != nil {
		return nil, err
	}
	sm, err := startChild(ctx, e.Dir, "sim", "")
	if err != nil {
		return nil, err
	}
	gw, err := e.startGateways(ctx, ldb, store.URL, sm.URL, "", nil)
	if err != nil {
		sm.stop()
		return nil, err
	}
	bases := [msgTargets]string{sm.URL, gw[MsgOn].URL, gw[MsgOff].URL, gw[MsgProxy].URL}
	client := NewHTTPClient(512)
	client.Timeout = msgTimeout
	for t := range msgTargets {
		_ = Drive(ctx, 4, 400, messagesCall(client, bases[t], e.Key)) // connections, key cache, JIT of the scripts
	}
	for rep := range o.Reps {
		for k := range msgTargets {
			t := (k + rep) % msgTargets
			e.settle(ctx, o)
			gpid := 0
			if t != MsgDirect {
				gpid = gw[t].pid()
			}
			var st LoadStats
			_ = ClosedLoop(ctx, 1, 0, o.Warmup, e.usage, messagesCall(client, bases[t], e.Key)) // warm-up
			cpu := e.procCPU(gpid, sm.pid(), func() int {
				st = ClosedLoop(ctx, 1, 0, o.Duration, e.usage, messagesCall(client, bases[t], e.Key))
				return st.OK
			})
			r.C1[t] = append(r.C1[t], st)
			r.C1CPU[t] = append(r.C1CPU[t], cpu)
			o.logf("messages c=1 %-32s rep %d/%d  p50 %v p99 %v  %.0f req/s  CPU/req gateway %v sim %v bench %v redis %v  redis/req %s (%d errors %s)",
				MsgTargetNames[t], rep+1, o.Reps, st.P50, st.P99, st.RPS, cpu.Gateway, cpu.Sim, cpu.Bench, cpu.Redis, st.Use.PerOp(st.OK), st.Errors, st.FirstErr)
		}
	}
	for rep := range o.Reps {
		for k := range msgTargets {
			t := (k + rep) % msgTargets
			e.settle(ctx, o)
			ol := openLoopVegeta(ctx, bases[t], e.Key, r.Rate, o.LatencyDuration)
			r.Open[t] = append(r.Open[t], ol)
			o.logf("messages %.0f/s %-32s rep %d/%d  p50 %v p99 %v max %v  (%d sent at %.0f/s, %d ok %s)",
				r.Rate, MsgTargetNames[t], rep+1, o.Reps, ol.P50, ol.P99, ol.Max, ol.Sent, ol.Achieved, ol.OK, ol.FirstErr)
		}
	}
	client.CloseIdleConnections()
	gw.stop()
	sm.stop()

	if o.ProfileDir != "" { // Run sets it when Profile is on
		p, err := e.profileGateway(ctx, o, db, r.MaxClients)
		if err != nil {
			return nil, err
		}
		r.Profile = p
	}

	r.Max, r.MaxCPU, r.Pinning, err = e.maxOnOneCore(ctx, o, db, r.MaxClients)
	if err != nil {
		return nil, err
	}
	return r, e.Flush(ctx)
}

// gateways are the children in front of the simulator, by target.
type gateways [msgTargets]*child

func (g gateways) stop() {
	for _, c := range g {
		c.stop()
	}
}

// startGateways starts gateway-on (against database db of the MongoDB server at mongoURI), gateway-off and
// the bare proxy, all calling the simulator at simURL, on cpus, with env
// added.
func (e *Env) startGateways(ctx context.Context, db, mongoURI, simURL, cpus string, env []string) (gateways, error) {
	var gw gateways
	on := e.Settings(db, "CLAUDEQ_MONGO_URI", mongoURI, "CLAUDEQ_UPSTREAM_URL", simURL, "CLAUDEQ_CACHE_TTL", "0s", "CLAUDEQ_MONITORING", "off")
	var onEnv []string
	for k, v := range on {
		onEnv = append(onEnv, k+"="+v)
	}
	var err error
	if gw[MsgOn], err = startChild(ctx, e.Dir, "gateway-on", cpus, append(onEnv, env...)...); err != nil {
		return gw, err
	}
	off := []string{"CLAUDEQ_REDIS_URL=" + e.Redis.URL(), "CLAUDEQ_UPSTREAM_URL=" + simURL}
	if gw[MsgOff], err = startChild(ctx, e.Dir, "gateway-off", cpus, append(off, env...)...); err != nil {
		gw.stop()
		return gw, err
	}
	if gw[MsgProxy], err = startChild(ctx, e.Dir, "proxy", cpus, append(off, env...)...); err != nil {
		gw.stop()
		return gw, err
	}
	return gw, nil
}

// openLoopVegeta sends MessagesBody requests at rate for dur with vegeta
// (constant pacing, keep-alive, no coordinated omission) and returns the
// latency of the successful ones.
func openLoopVegeta(ctx context.Context, base, key string, rate float64, dur time.Duration) OpenLatency {
	var mu sync.Mutex
	var seq int64
	hdr := http.Header{"Content-Type": {"application/json"}, "Anthropic-Version": {"2023-06-01"}, "X-Api-Key": {key}}
	tr := func(t *vegeta.Target) error {
		mu.Lock()
		seq++
		i := seq
		mu.Unlock()
		t.Method, t.URL, t.Body, t.Header = http.MethodPost, base+"/v1/messages", MessagesBody(i), hdr
		return nil
	}
	atk := vegeta.NewAttacker(vegeta.Timeout(msgTimeout), vegeta.KeepAlive(true), vegeta.HTTP2(false),
		vegeta.Workers(msgOpenWorkers), vegeta.MaxWorkers(4096), vegeta.Connections(4096), vegeta.Redirects(0))
	var lat []time.Duration
	var out OpenLatency
	start := time.Now()
	var last time.Time
	res := atk.Attack(tr, vegeta.Rate{Freq: int(rate), Per: time.Second}, dur, "messages")
	for {
		select {
		case <-ctx.Done():
			atk.Stop()
		case x, ok := <-res:
			if !ok {
				out.Achieved = float64(out.Sent) / max(last.Sub(start).Seconds(), 1e-9)
				if len(lat) > 0 {
					out.Max = slices.Max(lat)
				}
				out.P50, out.P99 = Percentile(lat, 50), Percentile(lat, 99)
				return out
			}
			out.Sent++
			last = x.Timestamp
			if x.Code == http.StatusOK && x.Error == "" {
				out.OK++
				lat = append(lat, x.Latency)
			} else if out.FirstErr == "" {
				out.FirstErr = fmt.Sprintf("%d %s %s", x.Code, x.Error, bytes.TrimSpace(x.Body))
			}
			continue
		}
		break
	}
	for range res {
	}
	return out
}

// profileGateway CPU-profiles a gateway-on process through one closed-loop
// window of MessagesClients clients and summarises the profile.
func (e *Env) profileGateway(ctx context.Context, o *Options, db string, conc int) (*ProfileSummary, error) {
	sm, err := startChild(ctx, e.Dir, "sim", "")
	if err != nil {
		return nil, err
	}
	defer sm.stop()
	path := filepath.Join(o.ProfileDir, "messages-gateway.pprof")
	on := e.Settings(db, "CLAUDEQ_UPSTREAM_URL", sm.URL, "CLAUDEQ_CACHE_TTL", "0s", "CLAUDEQ_MONITORING", "off")
	var env []string
	for k, v := range on {
		env = append(env, k+"="+v)
	}
	gw, err := startChild(ctx, e.Dir, "gateway-on", "", append(env, childProfileEnv+"="+path, "GOMAXPROCS=1")...)
	if err != nil {
		return nil, err
	}
	client := NewHTTPClient(conc)
	client.Timeout = msgTimeout
	st := ClosedLoop(ctx, conc, o.Warmup, o.Duration, e.usage, messagesCall(client, gw.URL, e.Key))
	client.CloseIdleConnections()
	gw.stop()
	o.logf("messages profiled gateway-on, %d clients: %.0f req/s (not counted), profile in %s", conc, st.RPS, path)
	p, err := SummarizeProfile(path, fmt.Sprintf("POST /v1/messages, gateway process alone, auth+quota+audit on, %d clients (%s req/s while profiled)", conc, num(st.RPS)), MessagesStages)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// maxOnOneCore measures the most requests per second: the simulator alone
// on CPU 0, then each gateway with the simulator on CPU 0, every process
// with GOMAXPROCS=1, while this process (the load generator, FerretDB) and
// redis-server are moved to the other CPUs. Without taskset or a second
// CPU, only GOMAXPROCS=1 applies, and the report says so.
func (e *Env) maxOnOneCore(ctx context.Context, o *Options, db string, clients int) ([msgTargets][]LoadStats, [msgTargets][]ProcCPU, string, error) {
	var out [msgTargets][]LoadStats
	var cpu [msgTargets][]ProcCPU
	cpus, rest, how := "", "", ""
	mine := allowedCPUs()
	if haveTaskset() == nil && runtime.NumCPU() >= 2 {
		cpus, rest = "0", fmt.Sprintf("1-%d", runtime.NumCPU()-1)
		if runtime.NumCPU() == 2 {
			rest = "1"
		}
		if err := pin(e.Redis.PID(), rest); err != nil {
			return out, cpu, "", err
		}
		if err := pin(pidSelf(), rest); err != nil {
			return out, cpu, "", err
		}
		defer func() {
			_ = pin(pidSelf(), mine)
			_ = pin(e.Redis.PID(), mine)
		}()
		how = fmt.Sprintf("the simulator and the gateway each with GOMAXPROCS=1, both pinned to CPU %s with `taskset -c %s`; "+
			"the load generator (%d closed-loop clients), FerretDB (in the bench process) and redis-server pinned to CPU %s with `taskset -a -p -c %s`",
			cpus, cpus, clients, rest, rest)
	} else {
		how = fmt.Sprintf("GOMAXPROCS=1 for the simulator and the gateway, not pinned (taskset or a second CPU is missing): the processes may use more than one core in all; %d closed-loop clients", clients)
	}
	env := []string{"GOMAXPROCS=1"}
	sm, err := startChild(ctx, e.Dir, "sim", cpus, env...)
	if err != nil {
		return out, cpu, how, err
	}
	defer sm.stop()
	gw, err := e.startGateways(ctx, db, e.Mongo, sm.URL, cpus, env)
	if err != nil {
		return out, cpu, how, err
	}
	defer gw.stop()
	bases := [msgTargets]string{sm.URL, gw[MsgOn].URL, gw[MsgOff].URL, gw[MsgProxy].URL}
	client := NewHTTPClient(clients)
	client.Timeout = msgTimeout
	defer client.CloseIdleConnections()
	for t := range msgTargets {
		_ = Drive(ctx, clients, 20*clients, messagesCall(client, bases[t], e.Key))
	}
	for rep := range o.Reps {
		for k := range msgTargets {
			t := (k + rep) % msgTargets
			e.settle(ctx, o)
			gpid := 0
			if t != MsgDirect {
				gpid = gw[t].pid()
			}
			_ = ClosedLoop(ctx, clients, 0, o.Warmup, e.usage, messagesCall(client, bases[t], e.Key)) // warm-up
			var st LoadStats
			c := e.procCPU(gpid, sm.pid(), func() int {
				st = ClosedLoop(ctx, clients, 0, o.Duration, e.usage, messagesCall(client, bases[t], e.Key))
				return st.OK
			})
			out[t], cpu[t] = append(out[t], st), append(cpu[t], c)
			o.logf("messages max, one core: %-32s rep %d/%d  %.0f req/s  p50 %v  CPU/req gateway %v sim %v bench %v redis %v  (%d errors %s)",
				MsgTargetNames[t], rep+1, o.Reps, st.RPS, st.P50, c.Gateway, c.Sim, c.Bench, c.Redis, st.Errors, st.FirstErr)
		}
	}
	return out, cpu, how, nil
}

// MessagesStages are the parts of the profiled gateway's CPU time.
var MessagesStages = []Stage{
	{Name: "api: HTTP server goroutines", Match: []string{"net/http.(*conn).serve"}},
	{Name: "· net/http outside the router (reading requests, writing responses)", Match: []string{"net/http.(*conn).serve"},
		Except: []string{"github.com/labstack/echo/v4.(*Echo).ServeHTTP"}},
	{Name: "· middleware (metrics, request id, security headers, audit record, auth)", Match: []string{"github.com/labstack/echo/v4.(*Echo).ServeHTTP"},
		Except: []string{"github.com/claudeq/claudeq/internal/api.(*Server).messages"}},
	{Name: "· messages handler", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).messages"}},
	{Name: "·· body read and validation", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).readV1Body", "github.com/claudeq/claudeq/internal/api.(*Server).parseV1"}},
	{Name: "·· content policy (sensitive-data scan)", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).applyPolicy"}},
	{Name: "·· worst-case estimate and budget reservation", Match: []string{"github.com/claudeq/claudeq/internal/pricing.", "github.com/claudeq/claudeq/internal/quota.(*Quota).Reserve"},
		Except: []string{"github.com/claudeq/claudeq/internal/api.(*Server).afterward"}},
	{Name: "·· upstream call through the fleet (Fleet.Open: pick, admit, HTTP round trip)", Match: []string{"github.com/claudeq/claudeq/internal/upstream.(*Fleet).Open"}},
	{Name: "·· writing the answer", Match: []string{"github.com/labstack/echo/v4.(*Response).Write", "github.com/labstack/echo/v4.(*Response).Flush"}},
	{Name: "after the answer (fleet outcome, ledger, settlement), off the request's path", Match: []string{"github.com/claudeq/claudeq/internal/api.(*Server).afterward.func1"}},
	{Name: "audit log: hash chain and batched inserts (client side)", Match: []string{"github.com/claudeq/claudeq/internal/audit."},
		Except: []string{"net/http.(*conn).serve"}},
	{Name: "store: batched ledger writes (Committer, client side)", Match: []string{"github.com/claudeq/claudeq/internal/store.(*Committer)."}},
	{Name: "upstream HTTP client transport (connection loops)", Match: []string{"net/http.(*persistConn)."}},
	{Name: "all Redis round trips (go-redis, any caller)", Match: []string{"github.com/redis/go-redis/v9."}},
	{Name: "MongoDB driver (connection pool, wire protocol)", Match: []string{"go.mongodb.org/mongo-driver/"}},
	{Name: "garbage collector (background marking)", Match: []string{"runtime.gcBgMarkWorker"}},
}

// AddedMedian returns the median over the repetitions of target t's
// statistic minus the direct target's, paired by repetition.
func addedMedian(sub, base []time.Duration) time.Duration {
	n := min(len(sub), len(base))
	xs := make([]float64, n)
	for i := range n {
		xs[i] = float64(sub[i] - base[i])
	}
	return time.Duration(Median(xs))
}

func c1P50(st []LoadStats) []time.Duration {
	out := make([]time.Duration, len(st))
	for i, s := range st {
		out[i] = s.P50
	}
	return out
}

func openP(ol []OpenLatency, p99 bool) []time.Duration {
	out := make([]time.Duration, len(ol))
	for i, s := range ol {
		out[i] = s.P50
		if p99 {
			out[i] = s.P99
		}
	}
	return out
}

// CPURatio is the one-core ratio computed from CPU time instead of
// requests: what the simulator alone costs a request on the core, divided
// by what the gateway and the simulator together cost it, medians over the
// repetitions. It is the throughput ratio one core would give if that core
// were the only bottleneck (the measured ratio also depends on the load
// generator, Redis and FerretDB keeping up on the other CPUs).
func (r *MessagesResult) CPURatio(t int) float64 {
	var alone, both []float64
	for _, c := range r.MaxCPU[MsgDirect] {
		alone = append(alone, float64(c.Sim))
	}
	for _, c := range r.MaxCPU[t] {
		both = append(both, float64(c.Gateway+c.Sim))
	}
	return ratio(Median(alone), Median(both))
}

// Added returns figure 7's headline numbers for target t (MsgOn, MsgOff):
// the added p50 at concurrency 1, the added p50 and p99 at the open-loop
// rate, and the one-core throughput ratio.
func (r *MessagesResult) Added(t int) (c1, p50, p99 time.Duration, oneCore float64) {
	c1 = addedMedian(c1P50(r.C1[t]), c1P50(r.C1[MsgDirect]))
	p50 = addedMedian(openP(r.Open[t], false), openP(r.Open[MsgDirect], false))
	p99 = addedMedian(openP(r.Open[t], true), openP(r.Open[MsgDirect], true))
	oneCore = ratio(Median(rps(r.Max[t])), Median(rps(r.Max[MsgDirect])))
	return
}

func pidSelf() int { return os.Getpid() }
