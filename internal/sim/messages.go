package sim

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

var (
	hdrEventStream = []string{"text/event-stream; charset=utf-8"}
	hdrNoCache     = []string{"no-cache"}
)

// handleMessages serves POST /v1/messages.
func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request, reqID string) {
	if s.reqLog != nil {
		rw := &recordingWriter{ResponseWriter: w, rec: RequestRecord{Start: time.Now()}}
		defer s.reqLog.write(rw)
		w = rw
	}
	s.requests.Add(1)
	s.window.roll(time.Now())
	s.window.requests.Add(1)
	s.enter()
	defer s.inFlight.Add(-1)

	if !s.authorized(r) {
		s.rejected.Add(1)
		s.writeError(w, reqID, http.StatusUnauthorized, errAuthentication, "invalid x-api-key")
		return
	}

	// Read the whole body first, so that net/http notices a client going
	// away (and cancels the request context) even while a fault hangs.
	buf, aerr := readBody(r)
	if aerr != nil {
		s.rejected.Add(1)
		s.writeError(w, reqID, aerr.status, aerr.typ, aerr.msg)
		return
	}
	defer putBuf(buf)
	if rw, ok := w.(*recordingWriter); ok {
		rw.rec.Body = bodyHash(*buf)
	}

	kind, ok := s.pickFault(r)
	if !ok {
		s.rejected.Add(1)
		s.writeError(w, reqID, http.StatusBadRequest, errInvalidRequest, HeaderFault+": unknown fault kind "+strconv.Quote(kind))
		return
	}
	if rw, ok := w.(*recordingWriter); ok {
		rw.rec.Fault = kind
	}
	base := time.Duration(s.latency.Load()) + s.jitterDelay()
	latency := base
	if kind != "" {
		if s.injectFault(w, r, reqID, kind) {
			return
		}
		latency += slowExtra
	}
	if v := r.Header.Get(HeaderLatency); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			s.rejected.Add(1)
			s.writeError(w, reqID, http.StatusBadRequest, errInvalidRequest, HeaderLatency+": invalid duration "+strconv.Quote(v))
			return
		}
		latency += d - base
	}

	var pr parsedRequest
	pr, aerr = parseRequest(*buf, false)
	if aerr == nil {
		aerr = s.checkModel(&pr, false)
	}
	if aerr != nil {
		s.rejected.Add(1)
		if s.log.Enabled(r.Context(), slogDebug) {
			s.log.Debug("sim: rejected request", "request_id", reqID, "status", aerr.status, "error", aerr.msg)
		}
		s.writeError(w, reqID, aerr.status, aerr.typ, aerr.msg)
		return
	}

	rep := finish(generateText(pr.hash, pr.prompt), pr.stops, pr.maxTokens)
	perToken := time.Duration(s.perToken.Load())
	var done bool
	if pr.stream {
		done = s.streamMessage(r.Context(), w, reqID, &pr, &rep, latency, perToken)
	} else {
		done = s.writeMessage(r.Context(), w, reqID, &pr, &rep, latency+perToken*time.Duration(rep.outputTokens))
	}
	if done {
		s.succeeded.Add(1)
	} else {
		s.canceled.Add(1)
	}
	if s.log.Enabled(r.Context(), slogDebug) {
		s.log.Debug("sim: message", "request_id", reqID, "model", pr.model, "stream", pr.stream,
			"input_tokens", pr.inputTokens, "output_tokens", rep.outputTokens, "stop_reason", rep.stopReason, "complete", done)
	}
}

// appendUsage appends the usage object of a message.
func appendUsage(b []byte, input, output int64) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, input, 10)
	b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":`...)
	b = strconv.AppendInt(b, output, 10)
	return append(b, `,"service_tier":"standard"}`...)
}

// appendMessageHead appends a message object up to and including
// `"content":[`.
func appendMessageHead(b []byte, id, model string) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = appendJSONString(b, model)
	return append(b, `,"content":[`...)
}

func appendStop(b []byte, rep *reply) []byte {
	b = append(b, `"stop_reason":`...)
	b = appendJSONString(b, rep.stopReason)
	b = append(b, `,"stop_sequence":`...)
	if rep.stopReason == "stop_sequence" {
		return appendJSONString(b, rep.stopSequence)
	}
	return append(b, "null"...)
}

// writeMessage writes a non-streaming reply after delay, reporting whether
// it was delivered.
func (s *Server) writeMessage(ctx context.Context, w http.ResponseWriter, reqID string, pr *parsedRequest, rep *reply, delay time.Duration) bool {
	if !sleep(ctx, delay) {
		return false
	}
	buf := getBuf()
	b := appendMessageHead(*buf, newID("msg_01", 22), pr.model)
	b = append(b, `{"type":"text","text":`...)
	b = appendJSONString(b, rep.text)
	b = append(b, `}],`...)
	b = appendStop(b, rep)
	b = append(b, `,"usage":`...)
	b = appendUsage(b, pr.inputTokens, rep.outputTokens)
	b = append(b, '}')

	s.setRateLimitHeaders(w.Header(), pr.inputTokens+rep.outputTokens, false)
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(b)
	*buf = b
	putBuf(buf)
	return err == nil && ctx.Err() == nil
}

// sseWriter writes server-sent events, flushing after each.
type sseWriter struct {
	w     http.ResponseWriter
	flush func() error
	buf   []byte
	err   error
}

func (e *sseWriter) event(name string, data func(b []byte) []byte) {
	if e.err != nil {
		return
	}
	b := append(e.buf[:0], "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = data(b)
	b = append(b, '\n', '\n')
	e.buf = b
	if _, e.err = e.w.Write(b); e.err == nil {
		e.err = e.flush()
	}
}

// streamMessage streams a reply with the Anthropic event sequence,
// reporting whether it was delivered completely.
func (s *Server) streamMessage(ctx context.Context, w http.ResponseWriter, reqID string, pr *parsedRequest, rep *reply, latency, perToken time.Duration) bool {
	if !sleep(ctx, latency) {
		return false
	}
	h := w.Header()
	h["Content-Type"] = hdrEventStream
	h["Cache-Control"] = hdrNoCache
	s.setRateLimitHeaders(h, pr.inputTokens+rep.outputTokens, false)
	w.WriteHeader(http.StatusOK)

	buf := getBuf()
	defer func() { putBuf(buf) }()
	e := &sseWriter{w: w, buf: *buf}
	if f, ok := w.(http.Flusher); ok {
		e.flush = func() error { f.Flush(); return nil }
	} else {
		rc := http.NewResponseController(w)
		e.flush = rc.Flush
	}

	id := newID("msg_01", 22)
	e.event("message_start", func(b []byte) []byte {
		b = append(b, `{"type":"message_start","message":`...)
		b = appendMessageHead(b, id, pr.model)
		b = append(b, `],"stop_reason":null,"stop_sequence":null,"usage":`...)
		b = appendUsage(b, pr.inputTokens, 1)
		return append(b, `}}`...)
	})
	e.event("content_block_start", func(b []byte) []byte {
		return append(b, `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`...)
	})
	e.event("ping", func(b []byte) []byte {
		return append(b, `{"type":"ping"}`...)
	})

	text := rep.text
	for start := 0; start < len(text) && e.err == nil; {
		end := chunkEnd(text, start)
		delta := tokensOfLen(end) - tokensOfLen(start)
		if !sleep(ctx, perToken*time.Duration(delta)) {
			return false
		}
		chunk := text[start:end]
		e.event("content_block_delta", func(b []byte) []byte {
			b = append(b, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`...)
			b = appendJSONString(b, chunk)
			return append(b, `}}`...)
		})
		start = end
	}

	e.event("content_block_stop", func(b []byte) []byte {
		return append(b, `{"type":"content_block_stop","index":0}`...)
	})
	e.event("message_delta", func(b []byte) []byte {
		b = append(b, `{"type":"message_delta","delta":{`...)
		b = appendStop(b, rep)
		b = append(b, `},"usage":{"input_tokens":`...)
		b = strconv.AppendInt(b, pr.inputTokens, 10)
		b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":`...)
		b = strconv.AppendInt(b, rep.outputTokens, 10)
		return append(b, `}}`...)
	})
	e.event("message_stop", func(b []byte) []byte {
		return append(b, `{"type":"message_stop"}`...)
	})
	*buf = e.buf
	return e.err == nil && ctx.Err() == nil
}

// wordsPerDelta is how many words each content_block_delta carries.
const wordsPerDelta = 3

// chunkEnd returns the end of the delta starting at start: up to (not
// including) the space before the wordsPerDelta+1-th word, at most 64 bytes
// unless a single word is longer.
func chunkEnd(text string, start int) int {
	spaces := 0
	for i := start + 1; i < len(text); i++ {
		if text[i] == ' ' {
			spaces++
			if spaces == wordsPerDelta || i-start >= 64 {
				return i
			}
		}
	}
	return len(text)
}

// handleCountTokens serves POST /v1/messages/count_tokens.
func (s *Server) handleCountTokens(w http.ResponseWriter, r *http.Request, reqID string) {
	if !s.authorized(r) {
		s.writeError(w, reqID, http.StatusUnauthorized, errAuthentication, "invalid x-api-key")
		return
	}
	buf, aerr := readBody(r)
	var pr parsedRequest
	if aerr == nil {
		pr, aerr = parseRequest(*buf, true)
		putBuf(buf)
	}
	if aerr == nil {
		aerr = s.checkModel(&pr, true)
	}
	if aerr != nil {
		s.writeError(w, reqID, aerr.status, aerr.typ, aerr.msg)
		return
	}
	s.setRateLimitHeaders(w.Header(), 0, false)
	b := append(make([]byte, 0, 32), `{"input_tokens":`...)
	b = strconv.AppendInt(b, pr.inputTokens, 10)
	writeJSON(w, http.StatusOK, append(b, '}'))
}
