package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// maxBody is how much of a response body is kept (a job or a Message,
// whose text can be long: 64,000 tokens are about 256 KB); the rest is read
// and dropped. Of an event stream only error answers are kept
// (maxStreamBody); the stream itself is parsed as it is read.
const (
	maxBody       = 4 << 20
	maxStreamBody = 64 << 10
)

// initialWorkers is the open loop's initial pool of vegeta workers.
const initialWorkers = 256

// anthropicVersion is sent with /v1/messages requests.
const anthropicVersion = "2023-06-01"

// runner is one run of Run.
type runner struct {
	cfg    Config
	ctx    context.Context // the run's: Timeout and the caller's cancellation
	client *http.Client
	gen    *generator
	rec    *recorder
	hooks  *hookReceiver

	url      string      // the primary request's URL
	jobsURL  string      // async: GET jobsURL+id
	header   http.Header // the primary request's headers (shared, read only)
	waitJobs bool
	jobs     sync.WaitGroup // async waits started by the open loop
	streams  sync.Map       // open-loop stream mode: X-Vegeta-Seq → *sseState
}

// Run runs the load test c describes and returns its report. It returns an
// error only for an invalid Config or when it cannot start; failed requests
// are counted in the report. The run stops at Config.Timeout or when ctx
// is done; the report then covers what happened until then.
func Run(ctx context.Context, c Config) (*Report, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()

	r := &runner{cfg: c, ctx: runCtx, waitJobs: c.Mode == ModeAsync && !c.SubmitOnly}
	hookURL := ""
	if c.Webhook {
		if r.hooks, err = startHookReceiver(); err != nil {
			return nil, err
		}
		defer r.hooks.close()
		hookURL = r.hooks.url
	}
	r.gen = newGenerator(c, hookURL)
	r.header = http.Header{"Content-Type": {"application/json"}}
	switch c.Mode {
	case ModeAsync:
		r.url = c.URL + "/api/claude/chat"
		r.jobsURL = c.URL + "/api/claude/jobs/"
		r.header.Set("Authorization", "Bearer "+c.Key)
	default:
		r.url = c.URL + "/v1/messages"
		r.header.Set("x-api-key", c.Key)
		r.header.Set("anthropic-version", anthropicVersion)
		if c.Mode == ModeStream {
			r.header.Set("Accept", "text/event-stream")
		}
	}
	r.client = c.Client
	if r.client == nil {
		r.client = newClient(c)
		defer r.client.CloseIdleConnections() // Run may be called again and again
	}

	cpu0 := processCPU()
	started := time.Now()
	r.rec = newRecorder(started, r.waitJobs)
	stopProgress := startProgress(c, r)
	if c.OpenLoop() {
		r.openLoop()
	} else {
		r.closedLoop()
	}
	r.jobs.Wait()
	elapsed := time.Since(started)
	stopProgress()

	rep := r.report(started, elapsed)
	if cpu := processCPU() - cpu0; cpu0 > 0 && cpu > 0 {
		rep.GeneratorCPU = cpu
	}
	rep.Interrupted = ctx.Err() != nil
	rep.TimedOut = !rep.Interrupted && runCtx.Err() != nil && rep.ErrorTypes["unfinished"] > 0
	return rep, nil
}

// newClient returns the default client: keep-alive connections without
// limit, no proxy (a proxy from the environment would carry the load
// elsewhere), no redirects, and — unless AllowRemote — a dialer that
// connects to loopback addresses only.
func newClient(c Config) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !c.AllowRemote {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil || !IsLoopback(host) {
				return fmt.Errorf("loadtest: refusing to connect to %s: %w", address, ErrRemote)
			}
			return nil
		}
	}
	return &http.Client{
		Timeout: c.RequestTimeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         d.DialContext,
			MaxIdleConnsPerHost: 10000,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// closedLoop runs Users users, each sending its requests back to back.
func (r *runner) closedLoop() {
	var stopAt time.Time
	if r.cfg.Duration > 0 {
		stopAt = r.rec.t0.Add(r.cfg.Duration)
	}
	var wg sync.WaitGroup
	for range r.cfg.Users {
		wg.Go(func() {
			for i := 0; r.cfg.RequestsPerUser == 0 || i < r.cfg.RequestsPerUser; i++ {
				if r.ctx.Err() != nil || (!stopAt.IsZero() && !time.Now().Before(stopAt)) {
					return
				}
				body, _ := r.gen.next()
				r.one(body)
			}
		})
	}
	wg.Wait()
}

// one sends one request, waits for its job in async mode, and records it.
func (r *runner) one(body []byte) {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		panic(err) // the URL was validated
	}
	req.Header = r.header.Clone()
	s := sample{start: time.Now()}
	var st *sseState
	var resp []byte
	res, err := r.client.Do(req)
	if err == nil {
		s.status = res.StatusCode
		rd := io.Reader(res.Body)
		if r.cfg.Mode == ModeStream && res.StatusCode == http.StatusOK {
			st = &sseState{}
			rd = &sseReader{r: res.Body, st: st}
		}
		if st != nil {
			_, err = io.Copy(io.Discard, rd)
		} else {
			resp, err = readBody(rd)
		}
		_ = res.Body.Close()
	}
	s.end = time.Now()
	errMsg := ""
	if err != nil {
		errMsg = err.Error()
	}
	if id := r.primary(&s, resp, errMsg, st); id != "" {
		r.waitJob(id, &s)
	}
	r.rec.add(s)
}

// readBody reads up to maxBody bytes of rd and drops the rest.
func readBody(rd io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(rd, maxBody))
	if err == nil {
		_, err = io.Copy(io.Discard, rd)
	}
	return b, err
}

// primary classifies the outcome of a primary request (s.status set, 0 if
// errMsg says why there was no response) and returns the id of a job to
// wait for, if any.
func (r *runner) primary(s *sample, body []byte, errMsg string, st *sseState) (jobID string) {
	if s.status == 0 {
		s.errType = r.transportError(errMsg)
		return ""
	}
	switch r.cfg.Mode {
	case ModeAsync:
		return r.submitted(s, body)
	case ModeSync:
		if s.status != http.StatusOK {
			s.errType = httpError(s.status, body)
		} else if !isMessage(body) {
			s.errType = "bad_response"
		} else {
			s.accepted = true
		}
	case ModeStream:
		switch {
		case s.status != http.StatusOK:
			s.errType = httpError(s.status, body)
		case st == nil || (!st.sawEvent && !st.stopped):
			s.errType = "bad_response"
		case st.errType != "":
			s.errType = "stream:" + st.errType
		case !st.stopped:
			s.errType = "stream_incomplete"
		default:
			s.accepted = true
			if !st.firstDelta.IsZero() {
				s.ttft = max(st.firstDelta.Sub(s.start), time.Microsecond)
			}
		}
	}
	return ""
}

// transportError names a failure without an HTTP response; everything the
// run's end cut short is "unfinished".
func (r *runner) transportError(msg string) string {
	if r.ctx.Err() != nil {
		return "unfinished"
	}
	return classifyTransport(msg)
}

// openLoop sends at Rate for Duration through vegeta's attacker. Every
// latency is measured from the hit's intended time on the pacer's
// schedule: the attack's start plus (seq+1) intervals (vegeta's constant
// pacer sends hit n at (n+1)·interval).
func (r *runner) openLoop() {
	var interval time.Duration
	pacer := &startPacer{Pacer: vegeta.ConstantPacer{}} // Rate 0: as fast as MaxWorkers go
	if r.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / r.cfg.Rate)
		pacer.Pacer = vegeta.ConstantPacer{Freq: 1, Per: interval}
	}
	client := *r.client
	base := client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	rt := &runTransport{base: base, ctx: r.ctx}
	if r.cfg.Mode == ModeStream {
		rt.streams = &r.streams
	}
	client.Transport = rt
	keep := int64(maxBody)
	if r.cfg.Mode == ModeStream {
		keep = maxStreamBody
	}
	opts := []func(*vegeta.Attacker){vegeta.Client(&client), vegeta.MaxBody(keep)}
	// vegeta starts another worker whenever a tick finds none waiting. On a
	// busy core that happens in every catch-up burst (the woken workers
	// have not run yet), and the workers, connections and stacks to scan
	// grow until the generator collapses. A pool of initialWorkers absorbs
	// the bursts; more are still started for requests really in flight.
	workers := initialWorkers
	if r.cfg.MaxWorkers > 0 {
		workers = min(workers, r.cfg.MaxWorkers)
		opts = append(opts, vegeta.MaxWorkers(uint64(r.cfg.MaxWorkers)))
	}
	opts = append(opts, vegeta.Workers(uint64(workers)))
	atk := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(r.ctx, func() { atk.Stop() })
	defer stop()

	targeter := func(t *vegeta.Target) error {
		t.Method = http.MethodPost
		t.URL = r.url
		t.Body, _ = r.gen.next()
		t.Header = r.header
		return nil
	}
	for res := range atk.Attack(targeter, pacer, r.cfg.Duration, "") {
		s := sample{start: res.Timestamp, sent: res.Timestamp, end: res.End(), status: int(res.Code)}
		if b := pacer.began.Load(); interval > 0 && b != nil {
			s.start = b.Add(time.Duration(res.Seq+1) * interval)
		}
		var st *sseState
		if rt.streams != nil {
			if v, ok := rt.streams.LoadAndDelete(strconv.FormatUint(res.Seq, 10)); ok {
				st = v.(*sseState)
			}
		}
		// vegeta sets Code once the body was read: without it, Error says
		// what failed.
		errMsg := ""
		if res.Code == 0 {
			errMsg = res.Error
		}
		if id := r.primary(&s, res.Body, errMsg, st); id != "" {
			r.jobs.Go(func() {
				r.waitJob(id, &s)
				r.rec.add(s)
			})
			continue
		}
		r.rec.add(s)
	}
}

// startPacer records when the attack began: the attacker calls Pace first
// with hits 0 and the time elapsed since it began.
type startPacer struct {
	vegeta.Pacer
	began atomic.Pointer[time.Time]
}

func (p *startPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if p.began.Load() == nil {
		b := time.Now().Add(-elapsed)
		p.began.Store(&b)
	}
	return p.Pacer.Pace(elapsed, hits)
}

// runTransport ties vegeta's requests (which carry no context) to the run's
// context, so that the run's end cancels what is in flight, and in stream
// mode watches the event stream of successful responses as vegeta reads it.
type runTransport struct {
	base    http.RoundTripper
	ctx     context.Context
	streams *sync.Map
}

func (t *runTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(t.ctx, cancel)
	done := func() { stop(); cancel() }
	res, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		done()
		return nil, err
	}
	b := &runBody{rc: res.Body, done: done}
	if t.streams != nil && res.StatusCode == http.StatusOK {
		b.st = &sseState{}
		t.streams.Store(req.Header.Get("X-Vegeta-Seq"), b.st)
	}
	res.Body = b
	return res, nil
}

type runBody struct {
	rc   io.ReadCloser
	st   *sseState
	done func()
	once sync.Once
}

func (b *runBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.st != nil && n > 0 {
		b.st.feed(p[:n])
	}
	return n, err
}

func (b *runBody) Close() error {
	err := b.rc.Close()
	b.once.Do(b.done)
	return err
}
