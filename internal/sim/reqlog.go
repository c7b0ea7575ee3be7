package sim

import (
	"encoding/json"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RequestRecord is one line of the request log (Config.RequestLog): what a
// POST /v1/messages request got. Several simulators' logs together show how
// a client retried a given request body, e.g. that it waited for
// retry-after or never repeated a request refused with a 400.
type RequestRecord struct {
	// Start and End are when the request arrived and when it ended.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Body is the FNV-1a 64 hash of the request body, in hex: the same
	// body sent again (a retry) has the same hash. Empty when the body was
	// not read (authentication failed).
	Body string `json:"body,omitempty"`
	// Status is the HTTP status sent, 0 when none was (a reset, or a
	// client that went away during a timeout fault).
	Status int `json:"status"`
	// Fault is the injected fault kind, "" for none.
	Fault string `json:"fault,omitempty"`
	// RetryAfter is the retry-after header sent, in seconds (0: none).
	RetryAfter int `json:"retry_after,omitempty"`
}

// requestLog serialises RequestRecord lines onto a writer.
type requestLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *requestLog) write(rw *recordingWriter) {
	rec := rw.rec
	rec.End = time.Now()
	rec.Status = rw.status
	if v := rw.Header().Get("Retry-After"); v != "" && rec.Status != 0 {
		rec.RetryAfter, _ = strconv.Atoi(v)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	_, _ = l.w.Write(b)
	l.mu.Unlock()
}

// recordingWriter notes the status a handler sends. Unwrap keeps
// http.ResponseController (Flush, Hijack) working through it.
type recordingWriter struct {
	http.ResponseWriter
	status int
	rec    RequestRecord
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func bodyHash(b []byte) string {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return strconv.FormatUint(h.Sum64(), 16)
}

// jitterDelay draws the random part of a request's latency.
func (s *Server) jitterDelay() time.Duration {
	if s.jitter <= 0 {
		return 0
	}
	return rand.N(s.jitter + 1)
}
