package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/tidwall/gjson"

	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/job"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/ratelimit"
	"github.com/claudeq/claudeq/internal/redisbatch"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/upstream"
)

// The Anthropic-compatible API (docs/anthropic-api.md): POST /v1/messages,
// streaming or not, served directly by the api process through the job
// path's gates (auth, rate limit, content policy, budgets, cache, the
// fleet, audit, the ledger) but without the queue; POST
// /v1/messages/count_tokens; GET /v1/models and /v1/models/{id}.

// Interactive are the collaborators of the Anthropic-compatible API. Without
// Upstream the /v1 routes answer 500 api_error.
type Interactive struct {
	// Upstream is the fleet (upstream.Fleet).
	Upstream Messenger
	// Background, when set, carries the Redis calls nobody waits for (the
	// settlement or release of a reservation) in pipelines.
	Background *redisbatch.Batcher
	// Committer writes the ledger entry of each billed request through
	// group commit (store.Committer); nil: nothing is written.
	Committer Committer
	// CommitAttempts is how often a ledger write is tried on the request's
	// way out before the entry is owed (owed.go: kept and retried, and
	// put in Outbox); default 5: 2 s each at most, with 1.5 s of backoff
	// in all.
	CommitAttempts int
	// Outbox keeps owed ledger entries durably while the store is down
	// (queue.Queue); nil: they wait in this process only.
	Outbox Outbox
	// Anonymous, for benchmarks only (no configuration sets it), turns
	// authentication off on these routes: every request runs as this
	// principal.
	Anonymous *claudeq.Principal
}

// Messenger sends interactive calls to the upstream nodes.
type Messenger interface {
	Open(ctx context.Context, x upstream.Exchange) (*upstream.Reply, error)
	CountTokens(ctx context.Context, model string, body []byte, version, beta string) ([]byte, error)
}

// Committer makes records durable (store.Committer).
type Committer interface {
	Commit(ctx context.Context, rec store.Record) error
}

// background tracks the work a request leaves behind once its answer is
// sent (the fleet's outcome, the ledger, the settlement, the cache), so
// that shutdown can wait for it.
type background struct{ wg sync.WaitGroup }

// Drain waits until the work interactive requests left behind is done, or
// ctx ends. Call it after the HTTP server stopped and before the
// committer closes.
func (s *Server) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.bg.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mountMessages adds the Anthropic-compatible routes. Each route carries
// its middleware (not a /v1 group) so that other /v1 routes are free to
// choose theirs.
func (s *Server) mountMessages(e *echo.Echo) {
	mw := []echo.MiddlewareFunc{s.anthropicErrors, s.limitIP, s.auth(claudeq.ScopeJobs)}
	if p := s.ia.Anonymous; p != nil {
		mw[2] = func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				c.Set("principal", *p)
				return next(c)
			}
		}
	}
	e.POST("/v1/messages", s.messages, mw...)
	e.POST("/v1/messages/count_tokens", s.countTokens, mw...)
	e.GET("/v1/models", s.listModels, mw...)
	e.GET("/v1/models/:id", s.getModel, mw...)
}

// v1Request is what the gateway reads of a Messages API body; everything
// else is passed upstream as it is.
type v1Request struct {
	model, maxTokens, messages, stream gjson.Result
}

// v1Fields reads the top-level fields the gateway needs, in one pass over
// the body. Malformed JSON is refused, and so is a repeated key among
// these fields: parsers disagree on which copy wins, and a body could be
// priced as one model and run as another.
func v1Fields(body []byte) (v1Request, error) {
	var r v1Request
	if !gjson.ValidBytes(body) {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return r, jsonError(err) // says where
		}
		return r, claudeq.Errorf(claudeq.KindInvalidRequest, "malformed JSON")
	}
	var dup string
	gjson.ParseBytes(body).ForEach(func(k, v gjson.Result) bool {
		var dst *gjson.Result
		switch k.Str {
		case "model":
			dst = &r.model
		case "max_tokens":
			dst = &r.maxTokens
		case "messages":
			dst = &r.messages
		case "stream":
			dst = &r.stream
		default:
			return true
		}
		if dst.Exists() {
			dup = k.Str
			return false
		}
		*dst = v
		return true
	})
	if dup != "" {
		return r, claudeq.Errorf(claudeq.KindInvalidRequest, "%s: appears more than once", dup)
	}
	return r, nil
}

// v1Call is a validated Messages API request.
type v1Call struct {
	body        []byte // as sent upstream
	model       claudeq.Model
	maxTokens   int
	stream      bool
	inputTokens int64 // estimated from body (pricing.EstimateInputTokens); 0 for count_tokens
}

// readV1Body reads a JSON request body of at most MaxBodyBytes: 413
// request_too_large above it, 400 for another Content-Type, invalid UTF-8,
// or anything but a JSON object.
func (s *Server) readV1Body(c echo.Context) ([]byte, error) {
	r := c.Request()
	if mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
		return nil, claudeq.Errorf(claudeq.KindUnsupportedMediaType, "Content-Type must be application/json")
	}
	if r.ContentLength > s.opt.MaxBodyBytes {
		return nil, claudeq.Errorf(claudeq.KindRequestTooLarge, "request body is larger than %d bytes", s.opt.MaxBodyBytes)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), r.Body, s.opt.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if asMaxBytes(err, &mbe) {
			return nil, claudeq.Errorf(claudeq.KindRequestTooLarge, "request body is larger than %d bytes", s.opt.MaxBodyBytes)
		}
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "could not read the request body")
	}
	body := buf.Bytes()
	if !utf8.Valid(body) {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "request body is not valid UTF-8")
	}
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "request body must be a JSON object")
	}
	return body, nil
}

// parseV1 validates what the gateway needs of a Messages API body: model
// (served by a node, usable by the key), max_tokens (1 to the model's
// limit), messages (a non-empty array), stream (a boolean) and, unless
// countOnly, the prompt's estimated size against the model's context
// window. A model given by alias (or an undated id whose snapshot a node
// lists) is replaced by its id in the body sent upstream.
func (s *Server) parseV1(c echo.Context, body []byte, countOnly bool) (v1Call, error) {
	r, err := v1Fields(body)
	if err != nil {
		return v1Call{}, err
	}
	var call v1Call
	absent := func(v gjson.Result) bool { return !v.Exists() || v.Type == gjson.Null }
	if absent(r.model) {
		return call, claudeq.Errorf(claudeq.KindInvalidRequest, "model: field required")
	}
	name := r.model.Str
	if r.model.Type != gjson.String || name == "" {
		return call, claudeq.Errorf(claudeq.KindInvalidRequest, "model: expected a non-empty string")
	}
	m, err := s.v1Model(c, s.catalog(c.Request().Context()), name)
	if err != nil {
		return call, err
	}
	call.model = m
	if !countOnly {
		if absent(r.maxTokens) {
			return call, claudeq.Errorf(claudeq.KindInvalidRequest, "max_tokens: field required")
		}
		n, err := strconv.Atoi(r.maxTokens.Raw)
		switch {
		case r.maxTokens.Type != gjson.Number || err != nil:
			return call, claudeq.Errorf(claudeq.KindInvalidRequest, "max_tokens: expected an integer")
		case n < 1:
			return call, claudeq.Errorf(claudeq.KindInvalidRequest, "max_tokens: must be greater than 0")
		case m.MaxOutputTokens > 0 && int64(n) > m.MaxOutputTokens:
			return call, claudeq.Errorf(claudeq.KindInvalidRequest, "max_tokens: %d is above %s's limit of %d", n, m.ID, m.MaxOutputTokens)
		}
		call.maxTokens = n
		switch r.stream.Type {
		case gjson.True:
			call.stream = true
		case gjson.False, gjson.Null:
		default:
			if r.stream.Exists() {
				return call, claudeq.Errorf(claudeq.KindInvalidRequest, "stream: expected a boolean")
			}
		}
	}
	if absent(r.messages) {
		return call, claudeq.Errorf(claudeq.KindInvalidRequest, "messages: field required")
	}
	if !r.messages.IsArray() || len(strings.TrimSpace(r.messages.Raw[1:])) < 2 {
		// "[" then at least one element and "]"
		return call, claudeq.Errorf(claudeq.KindInvalidRequest, "messages: expected a non-empty array of messages")
	}
	call.body = body
	if name != m.ID {
		if call.body, err = replaceModel(body, m.ID); err != nil {
			return call, claudeq.Errorf(claudeq.KindInvalidRequest, "malformed JSON")
		}
	}
	if !countOnly {
		call.inputTokens = pricing.EstimateInputTokens(call.body)
		if err := checkContext(m, call.inputTokens, c.Request().Header.Get("anthropic-beta")); err != nil {
			return call, err
		}
	}
	return call, nil
}

// replaceModel returns body with "model" set to id (the other fields kept,
// key order may change).
func replaceModel(body []byte, id string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	m["model"] = jsonString(id)
	return json.Marshal(m)
}

// v1Model resolves a model name (id, dated snapshot or alias) for the
// caller: 404 not_found_error when no node serves it, 403
// permission_error above the key's tier (a key whose tier is a family
// name, e.g. sonnet, may use that family and the cheaper ones).
func (s *Server) v1Model(c echo.Context, cat *claudeq.Catalog, name string) (claudeq.Model, error) {
	m, ok := cat.Resolve(name)
	if !ok {
		return m, unknownModel(cat, name)
	}
	if !tierAllows(principalOf(c).Tier, m.Family()) {
		return m, claudeq.Errorf(claudeq.KindPermission, "model: this API key may use models up to the %s tier, not %s", strings.ToLower(principalOf(c).Tier), m.ID)
	}
	return m, nil
}

// checkKeyLimit applies the key's rate limits (one request, tokens
// estimated as for jobs) and sets their headers: RateLimit-* and the
// anthropic-ratelimit-* pair of the limit closest to running out.
func (s *Server) checkKeyLimit(c echo.Context, tokens int) error {
	if s.limiter == nil {
		return nil
	}
	p := principalOf(c)
	d := s.limiter.CheckKey(c.Request().Context(), p.KeyID, p.Tier, tokens)
	h := c.Response().Header()
	d.SetHeader(h)
	if d.Limit > 0 && !d.FailedOpen {
		kind := "requests"
		if d.Scope == ratelimit.ScopeKeyTokens {
			kind = "tokens"
		}
		h.Set("anthropic-ratelimit-"+kind+"-limit", strconv.Itoa(d.Limit))
		h.Set("anthropic-ratelimit-"+kind+"-remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("anthropic-ratelimit-"+kind+"-reset", s.now().Add(d.Reset).UTC().Format(time.RFC3339))
	}
	if err := d.Err(); err != nil {
		return err
	}
	c.Set(ctxRateTokens, tokens)
	return nil
}

// messages serves POST /v1/messages.
func (s *Server) messages(c echo.Context) error {
	if s.ia.Upstream == nil {
		return claudeq.Errorf(claudeq.KindInternal, "no upstream configured")
	}
	body, err := s.readV1Body(c)
	if err != nil {
		return err
	}
	call, err := s.parseV1(c, body, false)
	if err != nil {
		return err
	}
	if err := s.checkKeyLimit(c, (len(call.body)+3)/4+call.maxTokens); err != nil {
		return err
	}
	// Content policy: block (400), redact before anything is sent
	// upstream, or allow; audited by kind.
	sent := call.body
	if call.body, err = s.applyPolicy(c, call.body); err != nil {
		return err
	}
	if len(call.body) != len(sent) || &call.body[0] != &sent[0] {
		call.inputTokens = pricing.EstimateInputTokens(call.body) // redacted: the reservation prices what is sent
	}
	rec := auditRecord(c)
	rec.Model = call.model.ID
	if s.auditLog != nil {
		h := sha256.Sum256(call.body)
		rec.RequestHash = hex.EncodeToString(h[:])
	}

	ctx := c.Request().Context()
	p := principalOf(c)
	if p.RequestsPerDay > 0 && s.quota() != nil {
		if err := s.quota().CountRequest(ctx, p.KeyID, p.RequestsPerDay); err != nil {
			return err
		}
	}
	hdr := c.Request().Header
	beta := hdr.Get("anthropic-beta")

	// The cache answers repeated non-streaming requests (same key scheme
	// as jobs: tenant and the exact upstream request, beta header
	// included); a hit is not billed.
	var cacheKey string
	if !call.stream && s.c.Enabled() {
		read, write := cacheModes(nil, hdr.Get("Cache-Control"))
		if read || write {
			kb := call.body
			if beta != "" {
				kb = append(append(bytes.Clone(call.body), "\x00anthropic-beta:"...), beta...)
			}
			cacheKey = cache.Key(p.UserID, kb)
		}
		if read && cacheKey != "" {
			if hit, err := s.c.Get(ctx, cacheKey); err == nil && hit != nil {
				s.metrics.CacheHit()
				c.Response().Header().Set("x-claudeq-cache", "hit")
				return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, hit)
			} else if err != nil {
				s.log.Warn("cache read failed; going upstream", "request_id", requestID(c), "err", err)
			}
			s.metrics.CacheMiss()
		}
		if !write {
			cacheKey = ""
		}
	}

	// Reserve the worst case under the request id; settled to the real
	// cost once the answer is known, released if there is none.
	id := requestID(c)
	reservedAt := s.now()
	if s.money.Pricing != nil && s.quota() != nil {
		cost, _, err := s.money.Pricing.Estimate(call.model.ID, call.inputTokens, int64(call.maxTokens), false, reservedAt)
		if err != nil {
			return err
		}
		if err := s.quota().Reserve(ctx, job.Reservation(id, p.UserID, p.Department, cost)); err != nil {
			if claudeq.ErrorKind(err) == claudeq.KindUnavailable {
				s.failed(c, call, err) // the reservation may have been made: release it
			}
			return err
		}
	}
	x := upstream.Exchange{Model: call.model.ID, Body: call.body, Version: hdr.Get("anthropic-version"), Beta: beta,
		Stream: call.stream, MaxAttempts: 2}
	if call.stream {
		return s.streamMessages(c, call, x, reservedAt)
	}
	start := time.Now()
	reply, err := s.ia.Upstream.Open(ctx, x)
	if err != nil {
		s.failed(c, call, err)
		return err
	}
	model := reply.Model
	if model == "" {
		model = call.model.ID
	}
	cost, priced := s.price(model, call.model.ID, reply.Usage, reservedAt)
	rec.Tokens, rec.CostMicros = reply.Usage.Total(), cost

	resp := c.Response()
	setReplyHeaders(resp.Header(), reply)
	resp.Header()["Content-Type"] = []string{echo.MIMEApplicationJSON}
	resp.Header()["Content-Length"] = []string{strconv.Itoa(len(reply.Raw))}
	resp.WriteHeader(http.StatusOK)
	_, werr := resp.Write(reply.Raw)
	resp.Flush()

	s.afterward(c, call, reply, reply.Usage, model, cost, priced, reservedAt, time.Since(start), cacheKey, werr)
	return nil
}

// setReplyHeaders passes on which node answered and its request id.
func setReplyHeaders(h http.Header, r *upstream.Reply) {
	h["X-Claudeq-Node"] = []string{r.Node}
	if id := r.Header.Get("request-id"); id != "" {
		h["X-Claudeq-Upstream-Request-Id"] = []string{id}
	}
}

// price returns the cost of usage on model, the model that answered
// (pricing.Table.CostFor); 0 without pricing. A request whose cost cannot
// be computed (usage reported negative) is logged and billed 0: the answer
// was already given.
func (s *Server) price(model, requested string, u claudeq.Usage, at time.Time) (int64, pricing.Priced) {
	if s.money.Pricing == nil {
		return 0, pricing.Priced{}
	}
	cost, priced, err := s.money.Pricing.CostFor(model, requested, u, false, at)
	if err != nil {
		s.log.Error("pricing an interactive request failed; billed 0", "model", model, "err", err)
		return 0, priced
	}
	return int64(cost), priced
}

// failed releases the reservation of a request that got no answer and
// counts the error.
func (s *Server) failed(c echo.Context, call v1Call, err error) {
	s.metrics.Error(claudeq.ErrorKind(err), call.model.ID)
	if s.quota() == nil {
		return
	}
	id, q := requestID(c), s.quota()
	if b := s.ia.Background; b != nil {
		q.ReleaseIn(b, id, func(err error) {
			if err != nil {
				s.log.Warn("releasing a reservation failed; the reconciler will", "request_id", id, "err", err)
			}
		})
		return
	}
	s.bg.wg.Add(1)
	go func() {
		defer s.bg.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := q.Release(ctx, id); err != nil {
			s.log.Warn("releasing a reservation failed; the reconciler will", "request_id", id, "err", err)
		}
	}()
}

// afterward does, off the request's path, what follows an answer: the
// fleet learns the outcome, the ledger gets its entry (exactly once: its
// _id is the request id), the reservation is settled to the cost, and a
// non-streaming answer is cached. callErr is what cut a stream short (a
// client gone, an error event), nil for a complete answer.
func (s *Server) afterward(c echo.Context, call v1Call, reply *upstream.Reply, u claudeq.Usage, model string, cost int64, priced pricing.Priced,
	reservedAt time.Time, took time.Duration, cacheKey string, callErr error) {
	p := principalOf(c)
	id := requestID(c)
	status := metrics.StatusSuccess
	if callErr != nil {
		status = metrics.StatusError
	}
	s.metrics.ObserveUpstream(model, status, p.Tier, took, u.Total(), p.UserID)
	s.metrics.AddCost(p.Department, model, float64(cost)/1e6)
	if priced.Fallback && u.Total() > 0 {
		s.metrics.PricedByFallback(model, priced.Model)
	}
	var entry *store.LedgerEntry
	if s.money.Pricing != nil && u.Total() > 0 {
		day := reservedAt.UTC().Format(time.DateOnly)
		if s.quota() != nil {
			day = s.quota().Day(reservedAt)
		}
		entry = job.Entry(job.Bill{ID: id, UserID: p.UserID, Department: p.Department, KeyID: p.KeyID, Model: model,
			Usage: u, Cost: claudeq.Micros(cost), Priced: priced, Day: day, At: s.now(), Interactive: true})
	}
	var raw []byte
	if cacheKey != "" && callErr == nil {
		raw = reply.Raw
	}
	s.bg.wg.Add(1)
	go func() {
		defer s.bg.wg.Done()
		reply.Finish(u, nodeError(callErr))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if entry != nil && s.ia.Committer != nil && !s.commitLedger(ctx, entry) {
			s.oweLedger(ctx, entry)
		}
		if q := s.quota(); q != nil {
			logErr := func(err error) {
				if err != nil {
					s.oweSettle(id, claudeq.Micros(cost))
				}
			}
			if b := s.ia.Background; b != nil {
				q.SettleIn(b, id, claudeq.Micros(cost), logErr)
			} else {
				logErr(q.Settle(ctx, id, claudeq.Micros(cost)))
			}
		}
		if raw != nil {
			if err := s.c.Put(ctx, p.UserID, cacheKey, raw, s.now()); err != nil {
				s.log.Warn("cache write failed", "request_id", id, "err", err)
			}
		}
	}()
}

// commitAttemptWait bounds one attempt of commitLedger.
const commitAttemptWait = 2 * time.Second

// commitLedger writes a ledger entry through group commit, retrying with
// backoff; a duplicate _id counts as written. It reports whether the entry
// is written.
func (s *Server) commitLedger(ctx context.Context, e *store.LedgerEntry) bool {
	attempts := s.ia.CommitAttempts
	if attempts <= 0 {
		attempts = 5
	}
	wait := 100 * time.Millisecond
	var err error
	for i := range attempts {
		// A store that is down makes the driver wait for a server for 30
		// s: an attempt gets 2, and the entry is owed after the last one.
		c, cancel := context.WithTimeout(ctx, commitAttemptWait)
		err = s.ia.Committer.Commit(c, store.Record{Ledger: e})
		cancel()
		if err == nil {
			return true
		}
		if i == attempts-1 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		if ctx.Err() != nil {
			break
		}
		wait *= 2
	}
	s.log.Warn("writing an interactive request's ledger entry failed", "request_id", e.ID, "err", err)
	return false
}

// quota returns the budgets (nil: none).
func (s *Server) quota() *quota.Quota { return s.money.Quota }

// opClientGone is the Op of the error that ends a stream whose client went
// away.
const opClientGone = "api.stream.client"

// nodeError is what a call's outcome says about the node that answered it:
// a client that hung up mid-stream is no failure of the node, which was
// answering (its health, cooldown and error count stay as they were).
func nodeError(callErr error) error {
	var e *claudeq.Error
	if errors.As(callErr, &e) && e.Op == opClientGone {
		return nil
	}
	return callErr
}
