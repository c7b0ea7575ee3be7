package loadtest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// httpError names an error response: its Anthropic error type
// ({"type":"error","error":{"type":...}}), else http_<status>.
func httpError(status int, body []byte) string {
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && validKind(e.Error.Type) {
		return e.Error.Type
	}
	return "http_" + strconv.Itoa(status)
}

// validKind accepts short identifiers only, so that a server cannot grow
// the report with arbitrary text.
func validKind(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// classifyTransport names a failure that left no HTTP response, from its
// message (vegeta hands errors over as strings).
func classifyTransport(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, ErrRemote.Error()):
		return "refused_remote"
	case strings.Contains(m, "timeout") || strings.Contains(m, "deadline exceeded"):
		return "timeout"
	case strings.Contains(m, "connection refused"):
		return "connection_refused"
	case strings.Contains(m, "connection reset"):
		return "connection_reset"
	case strings.Contains(m, "broken pipe"):
		return "broken_pipe"
	case strings.Contains(m, "eof"):
		return "eof"
	case strings.Contains(m, "canceled"):
		return "canceled"
	default:
		return "transport_error"
	}
}

// isMessage reports whether body is an Anthropic Message.
func isMessage(body []byte) bool {
	var m struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(body, &m) == nil && m.Type == "message"
}

// sseState follows an Anthropic event stream as it is read: the time of
// the first content_block_delta, whether message_stop came, and the type of
// an error event.
type sseState struct {
	line       []byte // the current line, up to maxLine bytes
	inError    bool   // the last event line was "event: error"
	sawEvent   bool
	firstDelta time.Time
	stopped    bool
	errType    string
}

const maxLine = 4 << 10

// feed processes the next bytes of the stream.
func (s *sseState) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxLine - len(s.line); room > 0 {
			s.line = append(s.line, chunk[:min(room, len(chunk))]...)
		}
		if i < 0 {
			return
		}
		s.onLine(bytes.TrimSuffix(s.line, []byte{'\r'}))
		s.line = s.line[:0]
		p = p[i+1:]
	}
}

func (s *sseState) onLine(l []byte) {
	if v, ok := bytes.CutPrefix(l, []byte("event:")); ok {
		s.sawEvent = true
		s.onEvent(string(bytes.TrimSpace(v)))
		return
	}
	v, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok {
		return
	}
	v = bytes.TrimSpace(v)
	// Streams without event lines: the data's leading {"type":"..."}.
	if t, ok := bytes.CutPrefix(v, []byte(`{"type":"`)); ok {
		if j := bytes.IndexByte(t, '"'); j > 0 {
			s.sawEvent = true
			s.onEvent(string(t[:j]))
		}
	}
	if s.inError && s.errType == "" {
		s.errType = "unknown"
		var e struct {
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if json.Unmarshal(v, &e) == nil && validKind(e.Error.Type) {
			s.errType = e.Error.Type
		}
	}
}

func (s *sseState) onEvent(name string) {
	switch name {
	case "content_block_delta":
		if s.firstDelta.IsZero() {
			s.firstDelta = time.Now()
		}
	case "message_stop":
		s.stopped = true
	case "error":
		s.inError = true
	}
}

// sseReader feeds what it reads to st.
type sseReader struct {
	r  interface{ Read([]byte) (int, error) }
	st *sseState
}

func (r *sseReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.st.feed(p[:n])
	}
	return n, err
}
