package sim

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Request headers understood by the simulator on POST /v1/messages.
const (
	// HeaderFault forces a fault kind (a Fault* constant) for this request,
	// taking precedence over Script and FaultRate. "ok" forces a normal reply.
	HeaderFault = "x-sim-fault"
	// HeaderRetryAfter overrides Config.RetryAfter for an injected 429, in
	// seconds (a non-negative number; the response header is rounded up).
	HeaderRetryAfter = "x-sim-retry-after"
	// HeaderLatency overrides the fixed latency (Config.Latency) for this
	// request, as a Go duration ("250ms").
	HeaderLatency = "x-sim-latency"
)

// Fault kinds, usable in Config.Faults, Server.Script and the HeaderFault
// request header.
const (
	// FaultNone means a normal reply (Script and HeaderFault only).
	FaultNone = "ok"
	// Fault429 answers 429 rate_limit_error with a retry-after header.
	Fault429 = "429"
	// Fault529 answers 529 overloaded_error.
	Fault529 = "529"
	// Fault500 answers 500 api_error.
	Fault500 = "500"
	// FaultTimeout hangs for Config.Timeout (or until the request context is
	// done), then answers 504 timeout_error.
	FaultTimeout = "timeout"
	// FaultReset closes the connection without any response; the client sees
	// a connection reset or EOF. Without a hijackable connection (HTTP/2,
	// httptest.ResponseRecorder) the handler panics with http.ErrAbortHandler.
	FaultReset = "reset"
	// FaultSlow adds 2s of latency to an otherwise normal reply.
	FaultSlow = "slow"
	// FaultSpendLimit answers 429 rate_limit_error saying the workspace
	// spend limit was reached, without retry-after (and x-should-retry: false).
	FaultSpendLimit = "spend_limit"
	// Fault400 answers 400 invalid_request_error.
	Fault400 = "400"
	// Fault401 answers 401 authentication_error.
	Fault401 = "401"
)

// slowExtra is the latency added by FaultSlow.
const slowExtra = 2 * time.Second

// faultKinds indexes Server.faultCounts.
var faultKinds = [...]string{
	FaultNone, Fault429, Fault529, Fault500, FaultTimeout, FaultReset,
	FaultSlow, FaultSpendLimit, Fault400, Fault401,
}

const numFaultKinds = len(faultKinds)

func faultIndex(kind string) int {
	for i, k := range faultKinds {
		if k == kind {
			return i
		}
	}
	return -1
}

// IsFault reports whether kind is a known fault kind (a Fault* constant).
func IsFault(kind string) bool { return faultIndex(kind) >= 0 }

// pickFault decides the fault for a /v1/messages request: the HeaderFault
// header first, then the script queue, then a FaultRate draw. It returns ""
// for a normal reply and ok=false if the header names an unknown kind.
func (s *Server) pickFault(r *http.Request) (kind string, ok bool) {
	if h := r.Header.Get(HeaderFault); h != "" {
		if !IsFault(h) {
			return h, false
		}
		if h == FaultNone {
			return "", true
		}
		return h, true
	}

	s.scriptMu.Lock()
	if len(s.script) > 0 {
		kind = s.script[0]
		s.script[0] = ""
		s.script = s.script[1:]
		s.scriptMu.Unlock()
		if kind == FaultNone {
			kind = ""
		}
		return kind, true
	}
	s.scriptMu.Unlock()

	rate := math.Float64frombits(s.faultRate.Load())
	if rate <= 0 {
		return "", true
	}
	s.rngMu.Lock()
	hit := rate >= 1 || s.rng.Float64() < rate
	if hit {
		kind = s.drawSet[s.rng.IntN(len(s.drawSet))]
	}
	s.rngMu.Unlock()
	return kind, true
}

// injectFault answers r with the given error fault. It returns false for
// kinds that do not end the request (FaultSlow), true otherwise.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, reqID, kind string) bool {
	s.faultCounts[faultIndex(kind)].Add(1)
	if s.log.Enabled(r.Context(), slogDebug) {
		s.log.Debug("sim: injecting fault", "fault", kind, "request_id", reqID)
	}
	h := w.Header()
	switch kind {
	case FaultSlow:
		return false
	case Fault429:
		ra := s.retryAfter
		if v := r.Header.Get(HeaderRetryAfter); v != "" {
			secs, err := strconv.ParseFloat(v, 64)
			if err == nil && secs >= 0 && !math.IsInf(secs, 0) {
				ra = time.Duration(secs * float64(time.Second))
			}
		}
		h["Retry-After"] = []string{strconv.FormatInt(int64(math.Ceil(ra.Seconds())), 10)}
		h["X-Should-Retry"] = []string{"true"}
		s.setRateLimitHeaders(h, 0, true)
		s.writeErrorBody(w, reqID, http.StatusTooManyRequests, errRateLimit,
			"This request would exceed the rate limit for your organization of 4,000 requests per minute. "+
				"For details, refer to: https://docs.claude.com/en/api/rate-limits. "+
				"You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.")
	case FaultSpendLimit:
		h["X-Should-Retry"] = []string{"false"}
		s.writeError(w, reqID, http.StatusTooManyRequests, errRateLimit,
			"You have reached your specified workspace API usage limits. "+
				"You will regain access on "+nextMonth(time.Now())+" at 00:00 UTC.")
	case Fault529:
		h["X-Should-Retry"] = []string{"true"}
		s.writeError(w, reqID, 529, errOverloaded, "Overloaded")
	case Fault500:
		h["X-Should-Retry"] = []string{"true"}
		s.writeError(w, reqID, http.StatusInternalServerError, errAPI, "Internal server error")
	case Fault400:
		s.writeError(w, reqID, http.StatusBadRequest, errInvalidRequest, "Simulated invalid request (x-sim-fault)")
	case Fault401:
		s.writeError(w, reqID, http.StatusUnauthorized, errAuthentication, "invalid x-api-key")
	case FaultTimeout:
		if !sleep(r.Context(), s.timeout) {
			return true // client gone; nobody to answer
		}
		s.writeError(w, reqID, http.StatusGatewayTimeout, errTimeout, "Request timed out")
	case FaultReset:
		resetConnection(w)
	}
	return true
}

// resetConnection drops the client connection without writing a response.
// On HTTP/1.x the connection is hijacked and closed with SO_LINGER=0 so the
// client sees a TCP reset; otherwise the handler aborts (http.ErrAbortHandler),
// which makes net/http close the connection or reset the stream.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// nextMonth returns the first day of the month after t, as YYYY-MM-DD.
func nextMonth(t time.Time) string {
	y, m, _ := t.UTC().Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
}
