package sim

import (
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

const slogDebug = slog.LevelDebug

// Anthropic error types.
const (
	errInvalidRequest = "invalid_request_error"
	errAuthentication = "authentication_error"
	errNotFound       = "not_found_error"
	errTooLarge       = "request_too_large"
	errRateLimit      = "rate_limit_error"
	errAPI            = "api_error"
	errOverloaded     = "overloaded_error"
	errTimeout        = "timeout_error"
)

// Simulated organisation rate limits, reported in anthropic-ratelimit-*
// headers. They are never enforced (use Fault429 for that).
const (
	requestsPerMinute = 4000
	tokensPerMinute   = 2_000_000
)

// rateWindow tracks approximate usage within the current wall-clock minute
// for the anthropic-ratelimit-* headers.
type rateWindow struct {
	minute   atomic.Int64
	requests atomic.Int64
	tokens   atomic.Int64
	reset    atomic.Pointer[[]string] // RFC 3339 start of the next minute
}

// roll resets the counters when a new minute starts and returns the reset
// header value. Races at the minute boundary only make the numbers a little
// approximate.
func (rw *rateWindow) roll(now time.Time) []string {
	m := now.Unix() / 60
	if old := rw.minute.Load(); old != m && rw.minute.CompareAndSwap(old, m) {
		rw.requests.Store(0)
		rw.tokens.Store(0)
		v := []string{time.Unix((m+1)*60, 0).UTC().Format(time.RFC3339)}
		rw.reset.Store(&v)
	}
	if p := rw.reset.Load(); p != nil {
		return *p
	}
	return []string{time.Unix((m+1)*60, 0).UTC().Format(time.RFC3339)}
}

var (
	hdrRequestsLimit = []string{strconv.Itoa(requestsPerMinute)}
	hdrTokensLimit   = []string{strconv.Itoa(tokensPerMinute)}
	hdrJSON          = []string{"application/json"}
	hdrZero          = []string{"0"}
)

// setRateLimitHeaders sets the anthropic-ratelimit-* headers, charging
// tokens to the current window. exhausted reports zero remaining requests.
func (s *Server) setRateLimitHeaders(h http.Header, tokens int64, exhausted bool) {
	if _, done := h["Anthropic-Ratelimit-Requests-Limit"]; done {
		return
	}
	reset := s.window.roll(time.Now())
	reqs := s.window.requests.Load()
	used := s.window.tokens.Add(tokens)
	h["Anthropic-Ratelimit-Requests-Limit"] = hdrRequestsLimit
	if exhausted || reqs >= requestsPerMinute {
		h["Anthropic-Ratelimit-Requests-Remaining"] = hdrZero
	} else {
		h["Anthropic-Ratelimit-Requests-Remaining"] = []string{strconv.FormatInt(requestsPerMinute-reqs, 10)}
	}
	h["Anthropic-Ratelimit-Requests-Reset"] = reset
	h["Anthropic-Ratelimit-Tokens-Limit"] = hdrTokensLimit
	h["Anthropic-Ratelimit-Tokens-Remaining"] = []string{strconv.FormatInt(max(tokensPerMinute-used, 0), 10)}
	h["Anthropic-Ratelimit-Tokens-Reset"] = reset
}

// writeError writes an Anthropic-shaped error response with the rate-limit
// headers.
func (s *Server) writeError(w http.ResponseWriter, reqID string, status int, typ, msg string) {
	s.setRateLimitHeaders(w.Header(), 0, false)
	s.writeErrorBody(w, reqID, status, typ, msg)
}

// writeErrorBody writes {"type":"error","error":{...},"request_id":...}.
func (s *Server) writeErrorBody(w http.ResponseWriter, reqID string, status int, typ, msg string) {
	buf := getBuf()
	b := append(*buf, `{"type":"error","error":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `},"request_id":`...)
	b = appendJSONString(b, reqID)
	b = append(b, '}')
	writeJSON(w, status, b)
	*buf = b
	putBuf(buf)
}

// writeJSON writes b as a complete application/json response.
func writeJSON(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte {
	b := bufPool.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

func putBuf(b *[]byte) {
	if cap(*b) <= 1<<20 {
		bufPool.Put(b)
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. Like the Anthropic
// API it leaves <, > and & unescaped; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns prefix followed by n random alphanumeric characters.
func newID(prefix string, n int) string {
	b := make([]byte, len(prefix)+n)
	copy(b, prefix)
	var x uint64
	for i := len(prefix); i < len(b); i++ {
		if (i-len(prefix))%10 == 0 {
			x = rand.Uint64()
		}
		b[i] = idAlphabet[x%62]
		x /= 62
	}
	return string(b)
}
