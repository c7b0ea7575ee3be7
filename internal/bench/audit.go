package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/store"
)

// AuditLatency is figure 8's second half: what the audit log does to one
// submit's latency at a fixed rate well below saturation (the closed loop
// of the first half measures what it does to the most a machine submits).
// The api with its audit log and with CLAUDEQ_AUDIT_LOG=off, interleaved,
// each at Rate for Options.Duration in an open loop.
type AuditLatency struct {
	Rate    float64
	On, Off []RateStats
	// Loaded is the control: the api without its audit log while a
	// "storeload" process appends Rate records a second to its store
	// through the same writer (see AuditOneCore.Loaded).
	Loaded []RateStats
}

// RateStats is one open-loop window with the response times of its calls.
type RateStats struct {
	OpenStats
	OK            int
	P50, P90, P99 time.Duration
	Use           Usage
	APICPU        time.Duration // CPU of the api process per successful call, when it is a process of its own
}

// AuditLatencyTarget: p50 and p99 of a submit with the audit log are at
// most this multiple of those without it (beyond it, the log slows the
// submit path measurably; below it is run-to-run noise on this machine).
const AuditLatencyTarget = 1.10

// DefaultAuditRate is the rate of figure 8's fixed-rate runs: about a
// quarter of what one api submits at saturation here (figure 1).
const DefaultAuditRate = 500

// runAuditLatency measures o.Reps rounds of fixed-rate windows, one per arm.
func runAuditLatency(ctx context.Context, e *Env, o *Options) (*AuditLatency, error) {
	rate := o.AuditRate
	if rate <= 0 {
		rate = DefaultAuditRate
	}
	r := &AuditLatency{Rate: rate}
	err := auditArms(o.Reps, func(rep int, name string) error {
		var over []string
		if name != armOn {
			over = []string{"CLAUDEQ_AUDIT_LOG", "off"}
		}
		st, err := e.submitAtRate(ctx, o, rate, over, name == armControl)
		if err != nil {
			return err
		}
		switch name {
		case armOn:
			r.On = append(r.On, st)
		case armOff:
			r.Off = append(r.Off, st)
		default:
			r.Loaded = append(r.Loaded, st)
		}
		o.logf("submit at %.0f/s rep %d/%d audit %-7s  p50 %v p90 %v p99 %v  sent %d errors %d", rate, rep+1, o.Reps, name,
			st.P50, st.P90, st.P99, st.Sent, st.Errors)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, e.Flush(ctx)
}

// The arms of figure 8's comparisons: the audit log on, off, and off
// while a storeload process gives the store the same work (the control).
const (
	armOn      = "on"
	armOff     = "off"
	armControl = "control"
)

// auditArms calls run for reps rounds of the three arms, rotating which
// goes first.
func auditArms(reps int, run func(rep int, arm string) error) error {
	arms := []string{armOn, armOff, armControl}
	for rep := range reps {
		for k := range arms {
			if err := run(rep, arms[(rep+k)%len(arms)]); err != nil {
				return err
			}
		}
	}
	return nil
}

// submitAtRate starts a fresh api (with the settings over) over a fresh
// database and submits to it at rate for o.Duration after o.Warmup; with
// load, a storeload process appends rate audit records a second to that
// database meanwhile.
func (e *Env) submitAtRate(ctx context.Context, o *Options, rate float64, over []string, load bool) (RateStats, error) {
	a, base, db, err := e.StartAPI(ctx, "audit", over...)
	if err != nil {
		return RateStats{}, err
	}
	defer func() { _ = StopApp(a) }()
	var start func() (func(), error)
	if load {
		start = func() (func(), error) {
			env := []string{fmt.Sprintf("%s=%g", storeLoadRateEnv, rate)}
			for k, v := range e.Settings(db) {
				env = append(env, k+"="+v)
			}
			c, err := launchChild(ctx, e.Dir, "storeload", nil, env...)
			if err != nil {
				return nil, err
			}
			return c.stop, nil
		}
	}
	return e.rateWindow(ctx, o, base, rate, 0, nil, start)
}

// rateWindow flushes Redis, waits for the machine to settle and submits to
// the api at base at rate for o.Duration after o.Warmup. With pid > 0 it
// also measures that process's CPU per successful submit; wrap, when set,
// wraps the submit call (to count them); start, when set, runs once the
// machine is idle, before the warm-up, and what it returns at the end.
func (e *Env) rateWindow(ctx context.Context, o *Options, base string, rate float64, pid int, wrap func(Call) Call, start func() (func(), error)) (RateStats, error) {
	if err := e.Flush(ctx); err != nil {
		return RateStats{}, err
	}
	e.settle(ctx, o)
	if start != nil {
		stop, err := start()
		if err != nil {
			return RateStats{}, err
		}
		defer stop()
	}
	s := &Submitter{Client: NewHTTPClient(256), URL: base + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	call := s.Call()
	if wrap != nil {
		call = wrap(call)
	}
	_ = OpenLoop(ctx, rate, o.Warmup, 256, call) // warm-up: connections, caches, the writer's first append
	var mu sync.Mutex
	var lat []time.Duration
	timed := func(ctx context.Context, i int64) error {
		t0 := time.Now()
		if err := call(ctx, i); err != nil {
			return err
		}
		d := time.Since(t0)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return nil
	}
	before, cpu0 := e.usage(), pidCPU(pid)
	st := RateStats{OpenStats: OpenLoop(ctx, rate, o.Duration, 256, timed)}
	st.Use = e.usage().sub(before)
	st.OK = len(lat)
	if pid > 0 && st.OK > 0 {
		st.APICPU = (pidCPU(pid) - cpu0) / time.Duration(st.OK)
	}
	st.P50, st.P90, st.P99 = Percentile(lat, 50), Percentile(lat, 90), Percentile(lat, 99)
	if st.OK == 0 {
		return st, fmt.Errorf("submit at %.0f/s: no call succeeded (%s)", rate, st.FirstErr)
	}
	return st, ctx.Err()
}

// AuditOneCore is figure 8's third part: the api as a process of its own
// (the bench binary started again as "gateway-on", which is app.Run with
// the api role, as cmd/api runs it) with GOMAXPROCS=1, pinned to CPU 0,
// while redis-server and the bench process (the load generator) are
// pinned to the other CPUs, and the audit store, a FerretDB process of
// its own, runs there too at idle priority (SCHED_IDLE, `chrt -i 0`;
// nice 19 where chrt is missing): it uses
// what CPU the others leave, as MongoDB on a machine of its own would not
// take CPU from the request path. This measures the api's own cost of its
// audit log (building, hashing and queueing a record, the writer's
// batches and inserts) apart from the store's. Each repetition starts a
// fresh api over a fresh database for each side, measures the most it
// submits in a closed loop, then the latency at a fixed rate, stops it
// (the writer flushes) and counts the audit records stored against the
// submits answered.
type AuditOneCore struct {
	How     string // how the processes were placed
	Pinned  bool   // false: taskset or a second CPU is missing, GOMAXPROCS=1 only
	Clients int
	Rate    float64
	On, Off []OneCoreRun
	// Loaded is the control: the api without its audit log while a
	// "storeload" child appends the same kind of records to the same
	// store, through the same writer, as fast as the store takes them in
	// the closed loop and at Rate in the fixed-rate window.
	Loaded []OneCoreRun
}

// OneCoreRun is one api process's two windows.
type OneCoreRun struct {
	Max    LoadStats
	MaxCPU time.Duration // the api process's CPU per submit in Max
	Fixed  RateStats     // Fixed.APICPU: the same at the fixed rate
	// Answered counts every submit the api accepted (warm-ups included);
	// Stored, the request records in its audit log after it stopped (in
	// the control, those the storeload child appended).
	Answered, Stored int64
	log              string // the end of the api's log
}

// runAuditOneCore measures o.Reps rounds of api processes, one per arm
// (audit log on, off, and the control), rotating which goes first.
func runAuditOneCore(ctx context.Context, e *Env, o *Options) (*AuditOneCore, error) {
	r := &AuditOneCore{Clients: 64, Rate: o.AuditRate}
	if n := len(o.Concurrency); n > 0 {
		r.Clients = o.Concurrency[n-1]
	}
	if r.Rate <= 0 {
		r.Rate = DefaultAuditRate
	}
	cpus, rest := "", ""
	prio := strings.Join(idlePriority(), " ")
	if haveTaskset() == nil && runtime.NumCPU() >= 2 {
		mine := allowedCPUs()
		cpus, r.Pinned = "0", true
		rest = fmt.Sprintf("1-%d", runtime.NumCPU()-1)
		if runtime.NumCPU() == 2 {
			rest = "1"
		}
		for _, pid := range []int{e.Redis.PID(), pidSelf()} {
			if err := pin(pid, rest); err != nil {
				return nil, err
			}
		}
		defer func() {
			_ = pin(pidSelf(), mine)
			_ = pin(e.Redis.PID(), mine)
		}()
		r.How = fmt.Sprintf("the api with GOMAXPROCS=1 pinned to CPU %s (`taskset -c %s`); redis-server and the bench process (the load generator) pinned to CPU %s (`taskset -a -p -c %s`); the audit store, a FerretDB process of its own, on CPU %s at idle priority (`%s taskset -c %s`)", cpus, cpus, rest, rest, rest, prio, rest)
	} else {
		r.How = fmt.Sprintf("the api with GOMAXPROCS=1, not pinned (taskset or a second CPU is missing): it shares the cores with redis-server, the load generator and the audit store (a FerretDB process of its own, `%s`)", prio)
	}
	mongo, err := e.startStore(ctx, rest)
	if err != nil {
		return nil, err
	}
	defer mongo.stop()
	var loadWrap []string
	if r.Pinned {
		loadWrap = append(idlePriority(), "taskset", "-c", rest)
	} else {
		loadWrap = idlePriority()
	}
	err = auditArms(o.Reps, func(rep int, name string) error {
		var over, load []string
		switch name {
		case armOff:
			over = []string{"CLAUDEQ_AUDIT_LOG", "off"}
		case armControl:
			over, load = []string{"CLAUDEQ_AUDIT_LOG", "off"}, loadWrap
		}
		run, err := e.oneCoreRun(ctx, o, mongo.URL, cpus, r.Clients, r.Rate, over, load)
		if err != nil {
			return err
		}
		switch name {
		case armOn:
			r.On = append(r.On, run)
			if run.Stored < run.Answered {
				return fmt.Errorf("api on one core, rep %d: %d submits answered, only %d audit records stored; the api's log ends:\n%s", rep+1, run.Answered, run.Stored, run.log)
			}
		case armOff:
			r.Off = append(r.Off, run)
		default:
			r.Loaded = append(r.Loaded, run)
		}
		o.logf("submit, api on one core, rep %d/%d audit %-7s  %d clients %.0f req/s (api CPU %v/req)  at %.0f/s p50 %v p99 %v (api CPU %v/req)  answered %d, audit records %d",
			rep+1, o.Reps, name, r.Clients, run.Max.RPS, run.MaxCPU, r.Rate, run.Fixed.P50, run.Fixed.P99, run.Fixed.APICPU, run.Answered, run.Stored)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, e.Flush(ctx)
}

// oneCoreRun starts a fresh api process over a fresh database on the
// MongoDB server at uri (with the settings over) on cpus, measures its two
// windows, stops it and counts its audit records. With load set (the
// command prefix it runs under), a storeload child appends audit records
// to the same database during each window: as fast as it can in the
// closed loop, at rate in the fixed-rate one.
func (e *Env) oneCoreRun(ctx context.Context, o *Options, uri, cpus string, clients int, rate float64, over, load []string) (OneCoreRun, error) {
	var run OneCoreRun
	db, err := e.newDBAt(ctx, uri, "audit1")
	if err != nil {
		return run, err
	}
	env := []string{"GOMAXPROCS=1"}
	for k, v := range e.Settings(db, append([]string{"CLAUDEQ_MONGO_URI", uri}, over...)...) {
		env = append(env, k+"="+v)
	}
	startLoad := func(perSec float64) func() (func(), error) {
		if load == nil {
			return nil
		}
		return func() (func(), error) {
			c, err := launchChild(ctx, e.Dir, "storeload", load, append(slices.Clone(env), fmt.Sprintf("%s=%g", storeLoadRateEnv, perSec))...)
			if err != nil {
				return nil, err
			}
			return c.stop, nil
		}
	}
	api, err := startChild(ctx, e.Dir, "gateway-on", cpus, env...)
	if err != nil {
		return run, err
	}
	defer api.stop()
	if err := e.Flush(ctx); err != nil {
		return run, err
	}
	e.settle(ctx, o)
	stopLoad := func() {}
	if start := startLoad(0); start != nil {
		if stopLoad, err = start(); err != nil {
			return run, err
		}
		defer stopLoad() // on an early return; stopping twice is a no-op
	}
	var answered atomic.Int64
	counted := func(c Call) Call {
		return func(ctx context.Context, i int64) error {
			err := c(ctx, i)
			if err == nil {
				answered.Add(1)
			}
			return err
		}
	}
	s := &Submitter{Client: NewHTTPClient(clients), URL: api.URL + "/api/claude/chat", Key: e.Key}
	call := counted(s.Call())
	_ = ClosedLoop(ctx, clients, 0, o.Warmup, e.usage, call) // warm-up
	n := 0
	c := e.procCPU(api.pid(), 0, func() int {
		run.Max = ClosedLoop(ctx, clients, 0, o.Duration, e.usage, call)
		n = run.Max.OK
		return n
	})
	s.Client.CloseIdleConnections()
	stopLoad()
	run.MaxCPU = c.Gateway
	if n == 0 {
		return run, fmt.Errorf("submit to the api on one core: no call succeeded (%s)", run.Max.FirstErr)
	}
	if run.Fixed, err = e.rateWindow(ctx, o, api.URL, rate, api.pid(), counted, startLoad(rate)); err != nil {
		return run, err
	}
	api.stop() // a graceful shutdown: the audit writer appends what it holds
	run.Answered = answered.Load()
	run.log = api.logTail(10)
	mdb, off, err := store.Connect(ctx, uri, db)
	if err != nil {
		return run, err
	}
	defer func() { _ = off(context.WithoutCancel(ctx)) }()
	run.Stored, err = mdb.Collection("audit").CountDocuments(ctx, bson.M{"kind": audit.KindRequest})
	return run, err
}

// idlePriority is the command prefix that runs a child at idle CPU
// priority: SCHED_IDLE (`chrt -i 0`), which any ordinary task preempts at
// once when it wakes, or else nice 19, which on an EEVDF kernel may still
// run out its time slice before a woken task gets the CPU.
func idlePriority() []string {
	if _, err := exec.LookPath("chrt"); err == nil {
		return []string{"chrt", "-i", "0"}
	}
	return []string{"nice", "-n", "19"}
}

// startStore starts a FerretDB process of its own at idle priority, on
// cpus (empty: anywhere), with its data in a fresh directory: a store whose
// CPU never delays the measured processes, as MongoDB on a machine of its
// own would not.
func (e *Env) startStore(ctx context.Context, cpus string) (*child, error) {
	wrap := idlePriority()
	if cpus != "" {
		wrap = append(wrap, "taskset", "-c", cpus)
	}
	dir, err := os.MkdirTemp(e.Dir, "store-")
	if err != nil {
		return nil, err
	}
	return launchChild(ctx, e.Dir, "mongo", wrap, childMongoDirEnv+"="+filepath.Join(dir, "mongo"))
}

func rateP(l []RateStats, f func(RateStats) time.Duration) time.Duration {
	xs := make([]float64, len(l))
	for i, s := range l {
		xs[i] = float64(f(s))
	}
	return time.Duration(Median(xs))
}
