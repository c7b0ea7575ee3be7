package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/upstream"
)

// streamMessages serves POST /v1/messages with "stream": true: the node's
// server-sent events are passed to the client as they arrive, one write and
// one flush per event, never buffered beyond one event. Passing by, the
// message_start and message_delta usage and the size of the content deltas
// are read, to bill the usage the stream reported at its end, or, when it
// was cut short (the client went away, an error event, the node broke
// off), the input tokens and the output sent so far (the larger of the
// last reported output_tokens and the delta text at 4 bytes a token).
func (s *Server) streamMessages(c echo.Context, call v1Call, x upstream.Exchange, reservedAt time.Time) error {
	ctx := c.Request().Context()
	start := time.Now()
	reply, err := s.ia.Upstream.Open(ctx, x)
	if err != nil {
		s.failed(c, call, err)
		return err
	}
	resp := c.Response()
	h := resp.Header()
	setReplyHeaders(h, reply)
	h["Content-Type"] = []string{"text/event-stream; charset=utf-8"}
	h["Cache-Control"] = []string{"no-cache"}
	h["X-Accel-Buffering"] = []string{"no"} // tell proxies in front not to buffer
	resp.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(resp.Writer)
	clientErr := rc.Flush()

	var acc streamUsage
	rd := sseReader{r: bufio.NewReaderSize(reply.Body, 16<<10)}
	var callErr error
	for clientErr == nil {
		ev, rerr := rd.next()
		if len(ev) > 0 && rerr == nil {
			name, data := parseEvent(ev)
			if name != "content_block_delta" {
				acc.observe(name, data) // usage is what the node reports, whoever reads it
			}
			if _, clientErr = resp.Write(ev); clientErr == nil {
				clientErr = rc.Flush()
			}
			if clientErr == nil && name == "content_block_delta" {
				acc.observe(name, data) // output counts once it was sent
			}
			if name == "error" && callErr == nil {
				callErr = acc.streamErr()
			}
			continue
		}
		if rerr == nil {
			continue
		}
		switch {
		case ctx.Err() != nil:
			clientErr = ctx.Err()
		case errors.Is(rerr, io.EOF) && (acc.stopped || callErr != nil):
			// the end of the stream
		default:
			// The node broke off: say so in the stream's own terms.
			if callErr == nil {
				callErr = &claudeq.Error{Kind: claudeq.KindUpstream, Op: "api.stream", Msg: "the upstream stream ended early", Err: rerr}
				if !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
					callErr = upstream.Classify(rerr)
				}
			}
			b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{
				"type": "api_error", "message": claudeq.ErrorMessage(callErr)}})
			if _, err := resp.Write(append(append([]byte("event: error\ndata: "), b...), '\n', '\n')); err == nil {
				_ = rc.Flush()
			}
		}
		break
	}
	if clientErr != nil && callErr == nil {
		callErr = &claudeq.Error{Kind: claudeq.KindUnavailable, Op: opClientGone, Msg: "the client went away", Err: clientErr}
	}
	u := acc.final()
	model := acc.model
	if model == "" {
		model = call.model.ID
	}
	cost, priced := s.price(model, call.model.ID, u, reservedAt)
	rec := auditRecord(c)
	rec.Tokens, rec.CostMicros = u.Total(), cost
	s.afterward(c, call, reply, u, model, cost, priced, reservedAt, time.Since(start), "", callErr)
	return nil
}

// sseReader splits a server-sent event stream into events.
type sseReader struct {
	r   *bufio.Reader
	buf []byte
}

// next returns the next event, its lines as sent with the blank line that
// ends it. The slice is valid until the next call. At the end of the
// stream it returns io.EOF (an unterminated last event is dropped).
func (e *sseReader) next() ([]byte, error) {
	e.buf = e.buf[:0]
	lineStart := 0
	for {
		part, err := e.r.ReadSlice('\n')
		e.buf = append(e.buf, part...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(bytes.TrimSpace(e.buf)) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(bytes.TrimSpace(e.buf[lineStart:])) == 0 {
			if lineStart == 0 {
				e.buf = e.buf[:0] // blank lines between events
				continue
			}
			return e.buf, nil
		}
		lineStart = len(e.buf)
	}
}

// parseEvent returns an event's name and data (data lines joined by
// newlines; the first line only, without copying, in the usual case of
// one).
func parseEvent(ev []byte) (name string, data []byte) {
	var extra [][]byte
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexByte(ev, '\n'); i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		line = bytes.TrimRight(line, "\r")
		switch {
		case bytes.HasPrefix(line, []byte("event:")):
			name = string(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(line[len("data:"):], []byte(" "))
			if data == nil {
				data = d
			} else {
				extra = append(extra, d)
			}
		}
	}
	if len(extra) > 0 {
		data = bytes.Join(append([][]byte{data}, extra...), []byte("\n"))
	}
	return name, data
}

// streamUsage accumulates what a stream reported and sent.
type streamUsage struct {
	u          claudeq.Usage
	model      string
	deltaBytes int64 // text, thinking and partial JSON sent in content deltas
	reported   bool  // a message_delta (cumulative usage) was seen
	stopped    bool  // message_stop was seen
	errType    string
	errMsg     string
}

func (a *streamUsage) observe(name string, data []byte) {
	switch name {
	case "message_start":
		var m struct {
			Message struct {
				Model string        `json:"model"`
				Usage claudeq.Usage `json:"usage"`
			} `json:"message"`
		}
		if json.Unmarshal(data, &m) == nil {
			a.model, a.u = m.Message.Model, m.Message.Usage
		}
	case "content_block_delta":
		var d struct {
			Delta struct {
				Text        string `json:"text"`
				Thinking    string `json:"thinking"`
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
		}
		if json.Unmarshal(data, &d) == nil {
			a.deltaBytes += int64(len(d.Delta.Text) + len(d.Delta.Thinking) + len(d.Delta.PartialJSON))
		}
	case "message_delta":
		var d struct {
			Usage struct {
				InputTokens              *int64                 `json:"input_tokens"`
				OutputTokens             *int64                 `json:"output_tokens"`
				CacheCreationInputTokens *int64                 `json:"cache_creation_input_tokens"`
				CacheReadInputTokens     *int64                 `json:"cache_read_input_tokens"`
				CacheCreation            *claudeq.CacheCreation `json:"cache_creation"`
			} `json:"usage"`
		}
		if json.Unmarshal(data, &d) != nil {
			return
		}
		a.reported = true
		set := func(dst *int64, v *int64) {
			if v != nil {
				*dst = *v
			}
		}
		set(&a.u.InputTokens, d.Usage.InputTokens)
		set(&a.u.OutputTokens, d.Usage.OutputTokens)
		set(&a.u.CacheCreationInputTokens, d.Usage.CacheCreationInputTokens)
		set(&a.u.CacheReadInputTokens, d.Usage.CacheReadInputTokens)
		if d.Usage.CacheCreation != nil {
			a.u.CacheCreation = d.Usage.CacheCreation
		}
	case "message_stop":
		a.stopped = true
	case "error":
		var e struct {
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		a.errType, a.errMsg = e.Error.Type, e.Error.Message
	}
}

// final is the usage to bill: as reported by the last message_delta, or,
// for a stream cut short before it, the input of message_start and the
// output sent so far.
func (a *streamUsage) final() claudeq.Usage {
	u := a.u
	if !a.reported {
		u.OutputTokens = max(u.OutputTokens, (a.deltaBytes+3)/4)
	}
	return u
}

// streamErr is the error an error event reported, for the fleet's health.
func (a *streamUsage) streamErr() error {
	k := claudeq.KindFromString(a.errType)
	if k == claudeq.KindInternal && a.errType != "api_error" {
		k = claudeq.KindUpstream
	}
	return &claudeq.Error{Kind: k, Op: "upstream.call", Msg: "error event: " + a.errType + ": " + a.errMsg}
}
