// Package sim implements a simulated Anthropic Messages API upstream.
//
// The real Claude API is not reachable from dev, test and benchmark
// environments, so [Server] stands in for it. It speaks the wire format of
// the Anthropic API closely enough for the official Go SDK
// (github.com/anthropics/anthropic-sdk-go) to be used against it unchanged:
//
//   - POST /v1/messages (optionally ?beta=true), non-streaming and streaming
//     (server-sent events with the exact Anthropic event sequence);
//   - POST /v1/messages/count_tokens;
//   - GET /v1/models and GET /v1/models/{model_id}.
//
// Replies are deterministic: the same request (model, system prompt and
// messages) always yields the same text, whether streamed or not. The text
// starts with "Simulated reply to: " and an excerpt of the last user message,
// followed by filler words drawn from a fixed word list by a generator seeded
// with the FNV-1a hash of the canonical request. Its length is derived from
// the same hash (about 20 to 200 tokens) and capped at max_tokens.
//
// Tokens are counted with a fixed heuristic, see [CountTokens]: every piece of
// text counts ceil(len(utf8 bytes)/4) tokens. Input tokens are the sum over
// the system prompt, every message content block and the JSON of the tool
// definitions; output tokens are the tokens of the generated text.
//
// Faults can be injected to exercise retry and failover logic: scripted with
// [Server.Script], drawn at random with [Config.FaultRate], or forced per
// request with the [HeaderFault] request header (see the Fault* constants).
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
)

// Config configures a [Server]. The zero value is usable: no latency, no
// faults, no authentication and the default model list.
type Config struct {
	// Latency is a fixed delay before the response starts (default 0).
	Latency time.Duration
	// LatencyJitter adds a random delay, uniform in [0, LatencyJitter], to
	// Latency for each request (default 0: none). Latency 1s with jitter 2s
	// gives handlers taking 1–3 s.
	LatencyJitter time.Duration
	// PerTokenLatency is added per output token (default 0). For streaming
	// responses it is spread between the content deltas.
	PerTokenLatency time.Duration
	// FaultRate is the probability (0..1) of an injected fault per
	// /v1/messages request. Values outside 0..1 are clamped.
	FaultRate float64
	// Faults lists the fault kinds FaultRate draws from, uniformly (default
	// "429", "529", "500", "timeout", "reset"). Any Fault* constant except
	// FaultNone is allowed; New panics on an unknown kind (see IsFault).
	Faults []string
	// RetryAfter is the retry-after sent with injected 429 faults (default
	// 1s). The header carries whole seconds, rounded up.
	RetryAfter time.Duration
	// Timeout is how long a "timeout" fault hangs before answering 504
	// (default 30s). The hang ends early when the request context is done.
	Timeout time.Duration
	// Seed seeds the random generator used for fault draws (0 = time-based).
	Seed int64
	// APIKey, if non-empty, must be presented in the x-api-key header or as
	// "Authorization: Bearer <key>"; otherwise requests fail with 401
	// authentication_error.
	APIKey string
	// Models lists the served model IDs (default DefaultModels). Requests for
	// other models fail with 404 not_found_error; a dated snapshot of a
	// listed id (claude-haiku-4-5-20251001 for claude-haiku-4-5) is served,
	// as the real API serves its snapshots. GET /v1/models reports each
	// model's display name, release date and limits from claudeq's price
	// table when it lists the id.
	Models []string
	// Catalog, when set, is the served list with display names, dates and
	// limits of its own (fields left zero are filled as for Models); it
	// takes precedence over Models. SetModels replaces it at runtime.
	Catalog []claudeq.Model
	// Logger receives debug logs per request (default: discard).
	Logger *slog.Logger
	// RequestLog, if set, receives one JSON line (a [RequestRecord]) per
	// POST /v1/messages request when it ends, in one Write call each, so
	// that an *os.File keeps every line of a simulator killed with
	// SIGKILL. Writes are serialised. Default nil: no log.
	RequestLog io.Writer
}

// DefaultModels returns the model IDs served when Config.Models is empty:
// every model of claudeq's built-in model list (the price table's
// catalog), so that the gateway's dev mode serves today's lineup.
func DefaultModels() []string {
	cat := pricing.Default().Catalog()
	slices.SortStableFunc(cat, func(a, b claudeq.Model) int { return b.CreatedAt.Compare(a.CreatedAt) }) // newest first, as the API lists them
	ids := make([]string, len(cat))
	for i, m := range cat {
		ids[i] = m.ID
	}
	return ids
}

// Stats is a snapshot of a [Server]'s counters.
type Stats struct {
	// Requests counts all POST /v1/messages requests received.
	Requests int64
	// Succeeded counts /v1/messages requests answered with a complete 200
	// response (including those delayed by a "slow" fault).
	Succeeded int64
	// Rejected counts /v1/messages requests refused without an injected fault:
	// authentication failures, invalid requests and unknown models.
	Rejected int64
	// Canceled counts /v1/messages requests whose client went away before
	// the response was complete (outside of injected faults).
	Canceled int64
	// Faults counts injected faults by kind ("429", "timeout", "slow", ...).
	// Kinds never injected are absent.
	Faults map[string]int64
	// InFlight is the number of /v1/messages requests being served now.
	InFlight int64
	// MaxInFlight is the highest InFlight seen since the server was created.
	MaxInFlight int64
}

// Server is the simulated Anthropic API. It implements [http.Handler] and is
// safe for concurrent use. Create it with [New].
type Server struct {
	log        *slog.Logger
	apiKey     string
	retryAfter time.Duration
	timeout    time.Duration
	drawSet    []string

	models atomic.Pointer[modelSet]

	jitter time.Duration
	reqLog *requestLog // nil: no request log

	latency   atomic.Int64  // time.Duration
	perToken  atomic.Int64  // time.Duration
	faultRate atomic.Uint64 // math.Float64bits

	rngMu sync.Mutex
	rng   *rand.Rand

	scriptMu sync.Mutex
	script   []string

	requests    atomic.Int64
	succeeded   atomic.Int64
	rejected    atomic.Int64
	canceled    atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	faultCounts [numFaultKinds]atomic.Int64

	window rateWindow
}

// New returns a Server configured by cfg, with defaults applied to zero
// fields. It panics if cfg.Faults contains an unknown fault kind.
func New(cfg Config) *Server {
	s := &Server{
		log:        cfg.Logger,
		apiKey:     cfg.APIKey,
		retryAfter: cfg.RetryAfter,
		timeout:    cfg.Timeout,
		jitter:     max(cfg.LatencyJitter, 0),
	}
	if cfg.RequestLog != nil {
		s.reqLog = &requestLog{w: cfg.RequestLog}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.retryAfter <= 0 {
		s.retryAfter = time.Second
	}
	if s.timeout <= 0 {
		s.timeout = 30 * time.Second
	}
	faults := cfg.Faults
	if len(faults) == 0 {
		faults = []string{Fault429, Fault529, Fault500, FaultTimeout, FaultReset}
	}
	for _, f := range faults {
		if !IsFault(f) || f == FaultNone || f == "" {
			panic(fmt.Sprintf("sim: unknown fault kind %q in Config.Faults", f))
		}
	}
	s.drawSet = append([]string(nil), faults...)

	models := cfg.Catalog
	if len(models) == 0 {
		models = idsToModels(cfg.Models)
	}
	s.SetModels(models)

	seed := cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	s.rng = rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))

	s.SetLatency(cfg.Latency, cfg.PerTokenLatency)
	s.SetFaultRate(cfg.FaultRate)
	return s
}

// SetFaultRate changes the fault probability (clamped to 0..1) at runtime.
func (s *Server) SetFaultRate(r float64) {
	if math.IsNaN(r) || r < 0 {
		r = 0
	}
	if r > 1 {
		r = 1
	}
	s.faultRate.Store(math.Float64bits(r))
}

// SetLatency changes the fixed and per-output-token latency at runtime.
// Negative values are treated as zero.
func (s *Server) SetLatency(fixed, perToken time.Duration) {
	s.latency.Store(int64(max(fixed, 0)))
	s.perToken.Store(int64(max(perToken, 0)))
}

// Script queues faults consumed by the next /v1/messages requests, one per
// request in order, before FaultRate applies. "" or FaultNone ("ok") means a
// normal reply. Requests carrying the HeaderFault header do not consume the
// queue. Script panics on an unknown fault kind.
func (s *Server) Script(faults ...string) {
	for _, f := range faults {
		if f != "" && !IsFault(f) {
			panic(fmt.Sprintf("sim: unknown fault kind %q in Script", f))
		}
	}
	s.scriptMu.Lock()
	s.script = append(s.script, faults...)
	s.scriptMu.Unlock()
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:    s.requests.Load(),
		Succeeded:   s.succeeded.Load(),
		Rejected:    s.rejected.Load(),
		Canceled:    s.canceled.Load(),
		InFlight:    s.inFlight.Load(),
		MaxInFlight: s.maxInFlight.Load(),
		Faults:      make(map[string]int64),
	}
	for i := range s.faultCounts {
		if n := s.faultCounts[i].Load(); n > 0 {
			st.Faults[faultKinds[i]] = n
		}
	}
	return st
}

// ServeHTTP implements [http.Handler].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newID("req_011C", 20)
	w.Header()["Request-Id"] = []string{reqID}

	switch r.URL.Path {
	case "/v1/messages":
		if r.Method != http.MethodPost {
			s.methodNotAllowed(w, reqID, http.MethodPost)
			return
		}
		s.handleMessages(w, r, reqID)
	case "/v1/messages/count_tokens":
		if r.Method != http.MethodPost {
			s.methodNotAllowed(w, reqID, http.MethodPost)
			return
		}
		s.handleCountTokens(w, r, reqID)
	case "/v1/models":
		if r.Method != http.MethodGet {
			s.methodNotAllowed(w, reqID, http.MethodGet)
			return
		}
		s.handleModels(w, r, reqID)
	default:
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/models/"); ok && id != "" {
			if r.Method != http.MethodGet {
				s.methodNotAllowed(w, reqID, http.MethodGet)
				return
			}
			s.handleModel(w, r, reqID, id)
			return
		}
		s.writeError(w, reqID, http.StatusNotFound, errNotFound, "Not Found")
	}
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, reqID, allow string) {
	w.Header().Set("Allow", allow)
	s.writeError(w, reqID, http.StatusMethodNotAllowed, errInvalidRequest, "Method Not Allowed")
}

// authorized reports whether r carries the configured API key, if any.
func (s *Server) authorized(r *http.Request) bool {
	if s.apiKey == "" {
		return true
	}
	if r.Header.Get("X-Api-Key") == s.apiKey {
		return true
	}
	const bearer = "Bearer "
	auth := r.Header.Get("Authorization")
	return len(auth) > len(bearer) && auth[:len(bearer)] == bearer && auth[len(bearer):] == s.apiKey
}

func (s *Server) enter() {
	n := s.inFlight.Add(1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			return
		}
	}
}

// sleep waits for d or until ctx is done, reporting whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Listen starts an HTTP server for a new Server (configured by cfg) on addr,
// such as "127.0.0.1:0". It returns the Server, its base URL
// ("http://host:port") and a function that stops the HTTP server; the
// function is idempotent and waits up to a second for in-flight requests.
func Listen(addr string, cfg Config) (*Server, string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", nil, fmt.Errorf("sim: listen: %w", err)
	}
	s := New(cfg)
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("sim: serve", "err", err)
		}
	}()
	var once sync.Once
	closeFn := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
			}
			<-done
		})
	}
	return s, "http://" + ln.Addr().String(), closeFn, nil
}
