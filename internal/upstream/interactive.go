package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redisbatch"
)

// Exchange is one interactive Messages API call (POST /v1/messages of the
// Anthropic-compatible API), sent by Fleet.Open.
type Exchange struct {
	// Model is the model id the body names; it chooses the nodes.
	Model string
	// Body is the request body, sent as it is.
	Body []byte
	// Version and Beta are the client's anthropic-version and
	// anthropic-beta headers, passed on (Version defaults to
	// DefaultAnthropicVersion).
	Version, Beta string
	// Stream is set for "stream": true: Open returns once the upstream's
	// response headers arrived, and the caller reads Reply.Body.
	Stream bool
	// MaxAttempts bounds the distinct nodes tried when a call fails, before
	// any of its answer was read, with an error worth retrying elsewhere
	// (429, 529, 5xx, connection failures, timeouts): 1 (the default) tries
	// one node; a node is never tried twice.
	MaxAttempts int
}

// DefaultAnthropicVersion is sent upstream when the client sent no
// anthropic-version header.
const DefaultAnthropicVersion = "2023-06-01"

// maxReplyBytes bounds a non-streaming answer read into memory.
const maxReplyBytes = 64 << 20

// Reply is the answer of one node to an Exchange. The caller must call
// Finish exactly once (after reading Body, for a stream) so that the
// node's in-flight count, health and latency are updated.
type Reply struct {
	// Node is the node that answered.
	Node string
	// Header holds the upstream's response headers.
	Header http.Header
	// Raw is the whole Message of a non-streaming call.
	Raw []byte
	// Body is the event stream of a streaming call.
	Body io.ReadCloser
	// Usage, Model and StopReason are read from Raw (non-streaming only).
	Usage      claudeq.Usage
	Model      string
	StopReason string

	f      *Fleet
	i      int
	adm    admission
	start  time.Time
	cancel context.CancelFunc
	ctx    context.Context
	done   atomic.Bool
	// admitted is closed once an admission made in the background (see
	// fastAdmit) has its answer in adm; nil for one made before the call.
	admitted chan struct{}
}

// Finish reports the outcome of the call to the fleet: usage is what the
// call consumed (its output tokens feed response_time), err the failure
// that cut it short (nil for success; an error event in a stream, a
// client that went away). It closes Body. Only the first call has an
// effect. It makes one Redis call; the api calls it after the answer was
// sent, off the request's path.
func (r *Reply) Finish(usage claudeq.Usage, err error) {
	if r == nil || !r.done.CompareAndSwap(false, true) {
		return
	}
	if r.Body != nil {
		_ = r.Body.Close()
	}
	lat := time.Since(r.start)
	ctx := r.ctx
	r.cancel()
	if r.admitted != nil {
		<-r.admitted
	}
	var resp *Response
	if err == nil {
		resp = &Response{Usage: usage}
	}
	f := r.f
	if f.bg == nil {
		f.finish(ctx, r.i, r.adm, resp, err, lat)
		return
	}
	c := f.finishCall(ctx, r.i, r.adm, resp, err, lat)
	f.bg.Go(redisbatch.Call{Script: finishScript, Keys: c.keys, Args: c.args, Done: func(cmd *redis.Cmd) {
		res, err := cmd.Slice()
		f.finished(r.i, c, res, err)
	}})
}

// SetBackground makes the fleet send the Redis calls of interactive calls
// (Open) that nothing waits for — the admission made in the background
// and the outcome — through b, in pipelines, instead of one round trip
// each. Finish then returns before the outcome is in Redis. Call it
// before the fleet is used.
func (f *Fleet) SetBackground(b *redisbatch.Batcher) { f.bg = b }

// Open sends an interactive call to a node chosen as Pick does, admitted
// as Call admits, and returns its answer: the whole Message, or for a
// stream the response whose Body the caller reads. An error means no
// usable answer (nothing to Finish): a *claudeq.Error classified like
// Classify's, whose Err is a *StatusError when the node answered with an
// error status. The call is bound to ctx and to the fleet's Timeout.
func (f *Fleet) Open(ctx context.Context, x Exchange) (*Reply, error) {
	est := int64(0)
	if f.anyTPM {
		est = estimateTokens(x.Body)
	}
	attempts := max(x.MaxAttempts, 1)
	var tried, exclude []string
	var lastErr error
	for range len(f.nodes) + attempts {
		if len(tried) >= attempts {
			break
		}
		i, err := f.pick(ctx, x.Model, tried, exclude)
		if err != nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, err
		}
		n := f.nodes[i]
		if slices.Contains(tried, n.cfg.Name) {
			break // only nodes that failed this call are left
		}
		var admitted chan struct{}
		var adm admission
		if fast, ok := f.fastAdmit(ctx, i); ok {
			admitted, adm = fast.admitted, fast.adm
		} else if adm, ok = f.admit(ctx, i, est); !ok {
			exclude = append(exclude, n.cfg.Name)
			continue
		}
		r, err := f.send(ctx, i, adm, admitted, x)
		if err == nil {
			return r, nil
		}
		lastErr = err
		tried = append(tried, n.cfg.Name)
		if !Temporary(err) || ctx.Err() != nil {
			break
		}
	}
	if lastErr == nil {
		lastErr = f.noUpstream(x.Model, true, 0)
	}
	return nil, lastErr
}

// send makes one attempt on node i, which admit let through. A failure is
// reported to the fleet here.
func (f *Fleet) send(ctx context.Context, i int, adm admission, admitted chan struct{}, x Exchange) (*Reply, error) {
	n := f.nodes[i]
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if f.o.Timeout > 0 {
		cctx, cancel = context.WithTimeout(ctx, f.o.Timeout)
	}
	r := &Reply{Node: n.cfg.Name, f: f, i: i, adm: adm, start: time.Now(), cancel: cancel, ctx: ctx, admitted: admitted}
	if admitted != nil {
		if f.bg != nil {
			r.admitInBackground(ctx) // queued: returns at once
		} else {
			go r.admitInBackground(ctx)
		}
	}
	fail := func(err error) (*Reply, error) {
		r.Finish(claudeq.Usage{}, err)
		return nil, err
	}
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, endpoint(n.cfg.URL, "/v1/messages"), bytes.NewReader(x.Body))
	if err != nil {
		return fail(&claudeq.Error{Kind: claudeq.KindInternal, Op: "upstream.Open", Err: err})
	}
	h := req.Header
	h["Content-Type"] = hdrJSON
	if k := n.cfg.APIKey.Reveal(); k != "" {
		h["X-Api-Key"] = []string{k}
	}
	v := x.Version
	if v == "" {
		v = DefaultAnthropicVersion
	}
	h["Anthropic-Version"] = []string{v}
	if x.Beta != "" {
		h["Anthropic-Beta"] = []string{x.Beta}
	}
	if x.Stream {
		h["Accept"] = hdrEventStream
	} else {
		h["Accept"] = hdrJSON
	}
	resp, err := f.o.HTTPClient.Do(req)
	if err != nil {
		return fail(Classify(err))
	}
	r.Header = resp.Header
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		return fail(statusError(resp.StatusCode, resp.Header, b))
	}
	if x.Stream {
		r.Body = resp.Body
		return r, nil
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 && resp.ContentLength < maxReplyBytes {
		buf.Grow(int(resp.ContentLength))
	}
	_, err = buf.ReadFrom(io.LimitReader(resp.Body, maxReplyBytes))
	_ = resp.Body.Close()
	if err != nil {
		return fail(Classify(err))
	}
	r.Raw = buf.Bytes()
	if !readMessage(r) {
		return fail(&claudeq.Error{Kind: claudeq.KindUpstream, Op: "upstream.Open", Msg: "upstream sent a malformed message"})
	}
	return r, nil
}

// readMessage reads model, stop_reason and usage from r.Raw in one pass
// over its top level (the content is skipped, not decoded). It reports
// false for an answer that is not a JSON object with a usage object.
func readMessage(r *Reply) bool {
	top := gjson.ParseBytes(r.Raw)
	if !top.IsObject() {
		return false
	}
	var usage gjson.Result
	top.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			r.Model = v.Str
		case "stop_reason":
			r.StopReason = v.Str
		case "usage":
			usage = v
		}
		return true
	})
	if !usage.IsObject() {
		return false
	}
	usage.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "input_tokens":
			r.Usage.InputTokens = v.Int()
		case "output_tokens":
			r.Usage.OutputTokens = v.Int()
		case "cache_creation_input_tokens":
			r.Usage.CacheCreationInputTokens = v.Int()
		case "cache_read_input_tokens":
			r.Usage.CacheReadInputTokens = v.Int()
		case "cache_creation":
			if v.IsObject() {
				r.Usage.CacheCreation = &claudeq.CacheCreation{
					Ephemeral5mInputTokens: v.Get("ephemeral_5m_input_tokens").Int(),
					Ephemeral1hInputTokens: v.Get("ephemeral_1h_input_tokens").Int(),
				}
			}
		}
		return true
	})
	return true
}

var (
	hdrJSON        = []string{"application/json"}
	hdrEventStream = []string{"text/event-stream"}
)

// StatusError is an error status a node answered with: its code, headers
// and (at most 64 KiB of) body, for callers that pass it on.
type StatusError struct {
	Code   int
	Header http.Header
	Body   []byte
	Type   string // error.type of the body, if any
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream answered %d %s", e.Code, e.Type)
}

// statusError classifies an error status the way Classify classifies the
// SDK's errors. Errors that are the request's fault (400, 404, 413) keep
// the node's message as it is, for the caller to see.
func statusError(code int, h http.Header, body []byte) error {
	var b struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &b)
	typ, msg := b.Error.Type, b.Error.Message
	if len(msg) > 500 {
		msg = msg[:500]
	}
	e := &claudeq.Error{Op: "upstream.call", Err: &StatusError{Code: code, Header: h, Body: body, Type: typ}, RetryAfter: retryAfter(h)}
	switch {
	case code == http.StatusTooManyRequests && spendLimit(msg):
		e.Kind, e.RetryAfter = claudeq.KindBilling, 0
	case code == http.StatusTooManyRequests:
		e.Kind = claudeq.KindRateLimit
	case code == 529:
		e.Kind = claudeq.KindOverloaded
	case code == http.StatusRequestTimeout || code == http.StatusGatewayTimeout:
		e.Kind = claudeq.KindTimeout
	case code >= 500:
		e.Kind = claudeq.KindUpstream
	case code == http.StatusUnauthorized:
		e.Kind = claudeq.KindAuthentication
	case code == http.StatusForbidden:
		e.Kind = claudeq.KindPermission
	case code == http.StatusNotFound:
		e.Kind = claudeq.KindNotFound
	case code == http.StatusRequestEntityTooLarge:
		e.Kind = claudeq.KindRequestTooLarge
	case code == http.StatusPaymentRequired:
		e.Kind = claudeq.KindBilling
	default:
		e.Kind = claudeq.KindInvalidRequest
	}
	switch e.Kind {
	case claudeq.KindInvalidRequest, claudeq.KindNotFound, claudeq.KindRequestTooLarge:
		if msg == "" {
			msg = http.StatusText(code)
		}
		e.Msg = msg
	default:
		if msg == "" {
			msg = http.StatusText(code)
		}
		if typ == "" {
			typ = e.Kind.String()
		}
		e.Msg = fmt.Sprintf("upstream %d %s: %s", code, typ, msg)
	}
	return e
}

// CountTokens forwards a count_tokens request body to a node serving model
// (chosen as Pick does; not counted in flight, not part of its health)
// and returns the node's answer.
func (f *Fleet) CountTokens(ctx context.Context, model string, body []byte, version, beta string) ([]byte, error) {
	i, err := f.pick(ctx, model, nil, nil)
	if err != nil {
		return nil, err
	}
	n := f.nodes[i]
	if f.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.o.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint(n.cfg.URL, "/v1/messages/count_tokens"), bytes.NewReader(body))
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: "upstream.CountTokens", Err: err}
	}
	req.Header["Content-Type"] = hdrJSON
	if k := n.cfg.APIKey.Reveal(); k != "" {
		req.Header["X-Api-Key"] = []string{k}
	}
	if version == "" {
		version = DefaultAnthropicVersion
	}
	req.Header["Anthropic-Version"] = []string{version}
	if beta != "" {
		req.Header["Anthropic-Beta"] = []string{beta}
	}
	resp, err := f.o.HTTPClient.Do(req)
	if err != nil {
		return nil, Classify(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, Classify(err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp.StatusCode, resp.Header, b)
	}
	return b, nil
}

// Serves reports whether some node of the fleet that is not drained may be
// sent a call for model (its list and allow-list; health is not
// considered).
func (f *Fleet) Serves(ctx context.Context, model string) bool {
	m := f.models(ctx)
	for i, n := range f.nodes {
		if n.cfg.Weight > 0 && m.servesModel(f, i, model) {
			return true
		}
	}
	return false
}

// endpoint joins a node's base URL (which may carry a path prefix) and an
// API path.
func endpoint(base, path string) string {
	return strings.TrimRight(base, "/") + path
}

// pendingAdmission is an admission running in the background.
type pendingAdmission struct {
	adm      admission
	admitted chan struct{}
}

// fastAdmit admits a call on node i without waiting for Redis when this
// process's snapshot says the node is healthy and nothing but health
// limits it (no RPM or TPM cap, no half-open trial, not response_time's
// exploration): the call goes out at once and the same admission script
// runs in the background, counting it in flight for every process. Its
// answer, which Finish waits for, says whether the call was counted (a
// node another process ejected in the last SnapshotTTL refuses it; the
// call then finishes untracked, as a call admitted while Redis was down
// does). Interactive calls save a Redis round trip this way; the
// snapshot's staleness is the one Pick already accepts.
func (f *Fleet) fastAdmit(ctx context.Context, i int) (pendingAdmission, bool) {
	n := f.nodes[i]
	s := f.snap.Load()
	if s == nil || n.cfg.RPM > 0 || n.cfg.TPM > 0 || f.o.Strategy == ResponseTime {
		return pendingAdmission{}, false
	}
	ms := f.o.Now().UnixMilli()
	if v := s.v[i]; v.state != "" || v.until > ms || v.trial {
		return pendingAdmission{}, false
	}
	f.patch(i, func(v *nodeView, _ int64) { v.inflight++ })
	p := pendingAdmission{adm: admission{minute: ms / 60_000}, admitted: make(chan struct{})}
	return p, true
}

// admitInBackground runs r's admission, then closes r.admitted: through
// the background batcher if the fleet has one, else on its own.
func (r *Reply) admitInBackground(ctx context.Context) {
	f := r.f
	if f.bg != nil {
		c := f.admitCall(r.i, 0)
		f.bg.Go(redisbatch.Call{Script: admitScript, Keys: c.keys, Args: c.args, Done: func(cmd *redis.Cmd) {
			res, err := cmd.Int64Slice()
			adm, ok := f.admitted(r.i, c, res, err)
			r.admittedAs(adm, ok)
		}})
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishWait)
	defer cancel()
	adm, ok := f.admit(ctx, r.i, 0)
	r.admittedAs(adm, ok)
}

// admittedAs records the background admission's answer and closes
// r.admitted.
func (r *Reply) admittedAs(adm admission, ok bool) {
	defer close(r.admitted)
	if !ok {
		adm.tracked, adm.trial = false, false
		r.f.patch(r.i, func(v *nodeView, _ int64) {
			if v.inflight > 0 {
				v.inflight--
			}
		})
	}
	r.adm = adm
}
