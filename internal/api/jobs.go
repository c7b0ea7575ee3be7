package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/claudeq/claudeq/internal/job"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/quota"
)

type chatBody struct {
	Prompt         *string         `json:"prompt"`
	Messages       json.RawMessage `json:"messages"`
	Model          string          `json:"model"`
	MaxTokens      *int            `json:"max_tokens"`
	Temperature    *float64        `json:"temperature"`
	TopP           *float64        `json:"top_p"`
	TopK           *int            `json:"top_k"`
	StopSequences  []string        `json:"stop_sequences"`
	System         json.RawMessage `json:"system"`
	SessionID      string          `json:"session_id"`
	Metadata       map[string]any  `json:"metadata"`
	Cache          *bool           `json:"cache"`
	WebhookURL     string          `json:"webhook_url"`
	FallbackModels []string        `json:"fallback_models"`
}

type analyzeBody struct {
	Content      string         `json:"content"`
	Task         string         `json:"task"`
	Instructions string         `json:"instructions"`
	Model        string         `json:"model"`
	MaxTokens    *int           `json:"max_tokens"`
	Temperature  *float64       `json:"temperature"`
	SessionID    string         `json:"session_id"`
	Metadata     map[string]any `json:"metadata"`
	Cache        *bool          `json:"cache"`
	WebhookURL   string         `json:"webhook_url"`
}

// analyzePrompts are the purpose-built system prompts of /analyze.
var analyzePrompts = map[string]string{
	"summarize": "You summarize documents. Give a faithful, concise summary of the content: the main points first, then important details. Do not add facts that are not in the content.",
	"review":    "You are a careful reviewer. Review the content for correctness, clarity, risks and omissions. List concrete issues by severity, each with a suggested fix.",
	"classify":  "You classify content. Answer with the single best category on the first line, then one sentence of justification. Use the categories given in the instructions when there are any.",
	"extract":   "You extract structured information. Return the entities, facts, dates and figures found in the content as a JSON object, and nothing else.",
	"sentiment": "You analyse sentiment. Answer with one of positive, negative, neutral or mixed on the first line, a confidence from 0 to 1 on the second, then a short explanation.",
}

// jobSpec is a validated job, ready to queue.
type jobSpec struct {
	kind        string
	req         claudeq.MessageRequest
	sessionID   string
	metadata    map[string]any
	cacheBody   *bool
	webhook     string
	fallback    []string
	routeReason string
	model       claudeq.Model // what req.Model resolved to: its limits
	requested   string        // the model name asked for, when it is not req.Model
}

// resolved records the model a job runs on and, when the caller named it
// otherwise (an alias, an undated id), the name asked for.
func (spec *jobSpec) resolved(asked string, m claudeq.Model) {
	spec.req.Model, spec.model, spec.requested = m.ID, m, ""
	if asked != "" && asked != m.ID {
		spec.requested = asked
	}
}

func (s *Server) chat(c echo.Context) error {
	spec, err := s.parseChat(c)
	if err != nil {
		return err
	}
	return s.submit(c, spec)
}

// parseChat reads and validates a chat body.
func (s *Server) parseChat(c echo.Context) (jobSpec, error) {
	var b chatBody
	if err := s.readJSON(c, &b); err != nil {
		return jobSpec{}, err
	}
	spec := jobSpec{kind: claudeq.JobChat, sessionID: b.SessionID, metadata: b.Metadata, cacheBody: b.Cache, webhook: b.WebhookURL}
	cat := s.catalog(c.Request().Context())
	for i, fm := range b.FallbackModels {
		m, ok := cat.Resolve(fm)
		if !ok {
			return jobSpec{}, &claudeq.Error{Kind: claudeq.KindNotFound, Op: "api.parseChat",
				Msg: "fallback_models." + itoa(i) + ": " + claudeq.ErrorMessage(unknownModel(cat, fm))}
		}
		spec.fallback = append(spec.fallback, m.ID)
	}
	auto := strings.EqualFold(b.Model, "auto")
	var m claudeq.Model
	var err error
	if !auto {
		if m, err = s.model(cat, b.Model); err != nil {
			return jobSpec{}, err
		}
	}
	switch {
	case b.Prompt != nil && len(b.Messages) > 0:
		return jobSpec{}, claudeq.Errorf(claudeq.KindInvalidRequest, "prompt, messages: send one of them, not both")
	case b.Prompt != nil:
		if strings.TrimSpace(*b.Prompt) == "" {
			return jobSpec{}, claudeq.Errorf(claudeq.KindInvalidRequest, "prompt: must not be empty")
		}
		spec.req.Messages, _ = json.Marshal([]map[string]string{{"role": "user", "content": *b.Prompt}})
	case len(b.Messages) > 0 && string(b.Messages) != "null":
		if spec.req.Messages, err = checkMessages(b.Messages); err != nil {
			return jobSpec{}, err
		}
	default:
		return jobSpec{}, claudeq.Errorf(claudeq.KindInvalidRequest, "prompt: required (or messages, for several turns)")
	}
	if spec.req.System, err = checkSystem(b.System); err != nil {
		return jobSpec{}, err
	}
	if err := checkSampling(b.Temperature, b.TopP, b.TopK); err != nil {
		return jobSpec{}, err
	}
	for i, ss := range b.StopSequences {
		if ss == "" {
			return jobSpec{}, fieldErr("stop_sequences."+itoa(i), "must not be empty")
		}
	}
	spec.req.Temperature, spec.req.TopP, spec.req.TopK, spec.req.StopSequences = b.Temperature, b.TopP, b.TopK, b.StopSequences
	spec.resolved(cmp.Or(b.Model, s.opt.DefaultModel), m)
	if auto {
		// Score with the requested output size, then check it against the
		// chosen model.
		spec.req.MaxTokens = s.opt.DefaultMaxTokens
		if b.MaxTokens != nil {
			spec.req.MaxTokens = *b.MaxTokens
		}
		if err := s.route(c, cat, &spec); err != nil {
			return jobSpec{}, err
		}
	}
	if spec.req.MaxTokens, err = checkMaxTokens(b.MaxTokens, s.opt.DefaultMaxTokens, spec.model); err != nil {
		return jobSpec{}, err
	}
	return spec, nil
}

func (s *Server) analyze(c echo.Context) error {
	var b analyzeBody
	if err := s.readJSON(c, &b); err != nil {
		return err
	}
	if strings.TrimSpace(b.Content) == "" {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "content: required")
	}
	sys, ok := analyzePrompts[b.Task]
	if !ok {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "task: must be one of summarize, review, classify, extract, sentiment")
	}
	if len(b.Instructions) > 0 {
		sys += "\n\nInstructions from the user: " + b.Instructions
	}
	m, err := s.model(s.catalog(c.Request().Context()), b.Model)
	if err != nil {
		return err
	}
	if err := checkSampling(b.Temperature, nil, nil); err != nil {
		return err
	}
	spec := jobSpec{kind: claudeq.JobAnalyze, sessionID: b.SessionID, metadata: b.Metadata, cacheBody: b.Cache, webhook: b.WebhookURL}
	spec.resolved(cmp.Or(b.Model, s.opt.DefaultModel), m)
	spec.req.Temperature, spec.req.System = b.Temperature, jsonString(sys)
	spec.req.Messages, _ = json.Marshal([]map[string]string{{"role": "user", "content": b.Content}})
	if spec.req.MaxTokens, err = checkMaxTokens(b.MaxTokens, s.opt.DefaultMaxTokens, m); err != nil {
		return err
	}
	return s.submit(c, spec)
}

// submit answers from the cache or queues the job.
func (s *Server) submit(c echo.Context, spec jobSpec) error {
	if spec.webhook == "" {
		spec.webhook = principalOf(c).WebhookURL // the key's default webhook
	}
	if err := checkSession(spec.sessionID); err != nil {
		return err
	}
	if err := checkMetadata(spec.metadata); err != nil {
		return err
	}
	if spec.webhook != "" {
		if err := s.wh.Policy.CheckURL(spec.webhook); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	p := principalOf(c)
	now := s.now().UTC().Truncate(time.Millisecond)

	body, err := json.Marshal(spec.req)
	if err != nil {
		return err
	}
	if err := checkContext(spec.model, pricing.EstimateInputTokens(body), ""); err != nil {
		return err
	}
	// Content policy: block (400 content_policy_violation), redact before
	// anything is stored or sent upstream, or allow; audited by kind.
	if body, err = s.applyPolicy(c, body); err != nil {
		return err
	}
	md, _ := json.Marshal(spec.metadata)
	rh := sha256.Sum256([]byte(spec.kind + "\x00" + spec.sessionID + "\x00" + string(md) + "\x00" + cacheFlag(spec.cacheBody) + "\x00" + spec.webhook + "\x00" + string(body)))
	reqHash := hex.EncodeToString(rh[:])
	if rec := auditRecord(c); rec != nil {
		rec.RequestHash, rec.Model = reqHash, spec.req.Model
	}

	id := randomID("job_", 15)
	idemKey := c.Request().Header.Get("Idempotency-Key")
	// healing: the key's job is queued, and its task may be missing (the
	// submit that created the job died between its two steps). The request
	// goes on to queue.Submit, which puts the task back (idempotently, by
	// TaskID) and answers as a replay; it is not counted or charged again.
	healing := false
	if idemKey != "" {
		if len(idemKey) > 255 || strings.ContainsFunc(idemKey, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "Idempotency-Key: 1 to 255 printable ASCII characters")
		}
		h := sha256.Sum256([]byte(p.UserID + "\x00" + idemKey))
		id = "job_" + strings.ToLower(b32.EncodeToString(h[:15]))
		if st, err := s.q.State(ctx, id); err == nil {
			if st.Status != claudeq.StatusQueued || st.UserID != p.UserID || st.RequestHash != reqHash {
				return s.replay(c, st, reqHash)
			}
			healing, now = true, st.CreatedAt
		} else if claudeq.ErrorKind(err) != claudeq.KindNotFound {
			return err
		}
	}

	if p.RequestsPerDay > 0 && s.money.Quota != nil && !healing {
		if err := s.money.Quota.CountRequest(ctx, p.KeyID, p.RequestsPerDay); err != nil {
			s.countRefusal(err)
			return err
		}
	}
	read, write := cacheModes(spec.cacheBody, c.Request().Header.Get("Cache-Control"))
	if spec.webhook != "" || healing {
		read = false // a job with a webhook always runs, so that its event is sent; a queued job is not answered from the cache
	}
	var cacheKey string
	if s.c.Enabled() && (read || write) {
		cacheKey = cache.Key(p.UserID, body)
	}
	if read && cacheKey != "" {
		hit, err := s.c.Get(ctx, cacheKey)
		if err == nil && hit != nil {
			s.metrics.CacheHit()
			st := queue.State{ID: id, UserID: p.UserID, Status: claudeq.StatusSucceeded, Kind: spec.kind, Model: spec.req.Model,
				RequestedModel: spec.requested, RequestHash: reqHash, CacheKey: cacheKey, CreatedAt: now, FinishedAt: now}
			if err := s.q.PutDone(ctx, st, min(s.opt.IdempotencyTTL, max(s.opt.CacheTTL, time.Minute))); err != nil {
				return err
			}
			return c.JSON(http.StatusOK, s.viewCached(&st, hit))
		}
		s.metrics.CacheMiss() // a failed read goes upstream too
		if err != nil {
			s.log.Warn("cache read failed; going upstream", "request_id", requestID(c), "err", err)
		}
	}
	if !write {
		cacheKey = ""
	}
	if !healing {
		if err := s.admit(ctx); err != nil {
			return err
		}
	}
	_, cost, _, err := s.estimate(spec, body, now)
	if err != nil {
		return err
	}
	var deferUntil time.Time
	if err := s.reserve(ctx, p, id, cost); err != nil {
		var ex *quota.Exceeded
		if p.OnQuota != "defer" || !errors.As(err, &ex) {
			s.countRefusal(err)
			return err
		}
		// The key parks over-budget jobs until the budget resets; the
		// worker reserves then.
		deferUntil = ex.ResetsAt
	}
	payload, err := json.Marshal(job.Payload{
		ID: id, Kind: spec.kind, UserID: p.UserID, Department: p.Department, UserType: p.Tier, KeyID: p.KeyID,
		SessionID: spec.sessionID, Metadata: spec.metadata, Request: body, RequestHash: reqHash,
		CacheKey: cacheKey, CreatedAt: now, WebhookURL: spec.webhook, FallbackModels: s.fallbacks(c.Request().Context(), spec),
		RouteReason: spec.routeReason, Deferred: !deferUntil.IsZero(), EstimateMicros: int64(cost), RequestedModel: spec.requested,
	})
	if err != nil {
		return err
	}
	opts := []asynq.Option{job.MaxRetry(s.opt.JobMaxRetries), asynq.Timeout(s.opt.JobTimeout)}
	ttl := s.opt.JobStateTTL
	if !deferUntil.IsZero() {
		// asynq keeps whole seconds: a second late rather than early.
		opts = append(opts, asynq.ProcessAt(deferUntil.Add(time.Second)))
		ttl += time.Until(deferUntil)
		c.Response().Header().Set("X-Claudeq-Deferred-Until", deferUntil.UTC().Format(time.RFC3339))
	}
	st, err := s.q.Submit(ctx, queue.Submission{
		State: queue.State{ID: id, UserID: p.UserID, Kind: spec.kind, Model: spec.req.Model, RequestedModel: spec.requested,
			RequestHash: reqHash, CreatedAt: now},
		Payload: payload, TTL: ttl, Options: opts,
	})
	if errors.Is(err, queue.ErrExists) {
		return s.replay(c, st, reqHash)
	}
	if err != nil {
		if !healing { // the reservation of a healed job is its original's
			s.release(id)
		}
		return err
	}
	return s.accepted(c, st)
}

// backlog caches the length of the queue for backlogTTL, so that a busy
// api asks Redis about ten times a second, not once per submit.
type backlog struct {
	mu sync.Mutex
	n  int64
	at time.Time
}

const backlogTTL = 100 * time.Millisecond

// queueFullRetryAfter is the Retry-After of a submit refused because the
// queue is full.
const queueFullRetryAfter = 5 * time.Second

// admit refuses a new job while MaxQueued jobs wait in the queue: load the
// workers cannot take is shed at the door (503, Retry-After) instead of
// filling Redis. A replayed Idempotency-Key and a cache hit are answered
// before this check; Redis failing here lets the submit go on (it fails
// on its own if Redis is down).
func (s *Server) admit(ctx context.Context) error {
	if s.opt.MaxQueued <= 0 {
		return nil
	}
	now := time.Now()
	s.queued.mu.Lock()
	n, fresh := s.queued.n, now.Sub(s.queued.at) < backlogTTL
	s.queued.mu.Unlock()
	if !fresh {
		var err error
		if n, err = s.q.Backlog(ctx, queue.Default); err != nil {
			return nil
		}
		s.queued.mu.Lock()
		s.queued.n, s.queued.at = n, now
		s.queued.mu.Unlock()
	}
	if n >= int64(s.opt.MaxQueued) {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.admit", RetryAfter: queueFullRetryAfter,
			Msg: "too many jobs are waiting in the queue; try again later"}
	}
	return nil
}

func (s *Server) accepted(c echo.Context, st *queue.State) error {
	url := "/api/claude/jobs/" + st.ID
	c.Response().Header().Set("Location", url)
	return c.JSON(http.StatusAccepted, map[string]any{"id": st.ID, "status": st.Status, "status_url": url})
}

// replay answers a repeated Idempotency-Key: the same job, or 422 when the
// body differs.
func (s *Server) replay(c echo.Context, st *queue.State, reqHash string) error {
	if st.UserID != principalOf(c).UserID {
		return claudeq.Errorf(claudeq.KindConflict, "Idempotency-Key conflict")
	}
	if st.RequestHash != reqHash {
		return claudeq.Errorf(claudeq.KindUnprocessable, "Idempotency-Key was used with a different request body")
	}
	c.Response().Header().Set("Idempotent-Replayed", "true")
	if !st.Status.Terminal() {
		return s.accepted(c, st)
	}
	v, err := s.view(c.Request().Context(), st)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func cacheFlag(b *bool) string {
	if b != nil && !*b {
		return "nocache"
	}
	return ""
}

// cacheModes decides whether a request may read and write the cache:
// "cache": false and Cache-Control: no-store do neither; Cache-Control:
// no-cache skips the read but stores the fresh answer.
func cacheModes(body *bool, cc string) (read, write bool) {
	read, write = true, true
	if body != nil && !*body {
		return false, false
	}
	for _, d := range strings.Split(strings.ToLower(cc), ",") {
		switch strings.TrimSpace(d) {
		case "no-store":
			read, write = false, false
		case "no-cache":
			read = false
		}
	}
	return read, write
}

// jobView is the job as the API shows it.
type jobView struct {
	ID       string            `json:"id"`
	Status   claudeq.Status    `json:"status"`
	Kind     string            `json:"kind,omitempty"`
	Model    string            `json:"model"`
	Cached   bool              `json:"cached"`
	Result   json.RawMessage   `json:"result"`
	Text     string            `json:"text,omitempty"`
	Usage    *claudeq.Usage    `json:"usage"`
	Error    *claudeq.JobError `json:"error"`
	Attempts int               `json:"attempts"`
	Nodes    []string          `json:"nodes,omitempty"`
	// RequestedModel is the model name the caller asked for, when it is
	// not Model: an alias ("opus"), an undated id, or the model a
	// fallback model answered instead of.
	RequestedModel string `json:"requested_model,omitempty"`
	// PricedBy says how the cost was priced: "table", or "fallback" for a
	// model the price table lacks (priced as the dearest of its family);
	// PricedAs names the price-table entry used.
	PricedBy    string         `json:"priced_by,omitempty"`
	PricedAs    string         `json:"priced_as,omitempty"`
	RouteReason string         `json:"route_reason,omitempty"`
	CostUSD     *float64       `json:"cost_usd"`
	SessionID   string         `json:"session_id,omitempty"`
	Metadata    map[string]any `json:"metadata,omitempty"`
	CreatedAt   *time.Time     `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at"`
	FinishedAt  *time.Time     `json:"finished_at"`
	StatusURL   string         `json:"status_url"`
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Server) viewCached(st *queue.State, msg []byte) jobView {
	v := s.viewState(st)
	v.Cached, v.Result = true, msg
	var m struct {
		Content json.RawMessage `json:"content"`
		Usage   claudeq.Usage   `json:"usage"`
	}
	if json.Unmarshal(msg, &m) == nil {
		v.Text, v.Usage = job.Text(m.Content), &m.Usage
	}
	return v
}

func (s *Server) viewState(st *queue.State) jobView {
	v := jobView{ID: st.ID, Status: st.Status, Kind: st.Kind, Model: st.Model, RequestedModel: st.RequestedModel, Attempts: st.Attempts,
		CreatedAt: tp(st.CreatedAt), StartedAt: tp(st.StartedAt), FinishedAt: tp(st.FinishedAt),
		StatusURL: "/api/claude/jobs/" + st.ID}
	if st.LastError != "" && !st.Status.Terminal() {
		v.Error = &claudeq.JobError{Type: "retrying", Message: st.LastError}
	}
	if st.Status == claudeq.StatusCanceled {
		v.Error = &claudeq.JobError{Type: "canceled", Message: "job canceled before it ran"}
	}
	if st.Status == claudeq.StatusFailed && st.LastError == job.ErrQueueLost {
		// Failed by the reconciler: Redis holds the only record of it.
		v.Error = &claudeq.JobError{Type: job.ErrQueueLost, Message: "the job's task was lost from the queue (Redis lost writes it had acknowledged, " +
			"or the submit failed after the job's state was written); it did not finish; submit it again"}
	}
	return v
}

func viewJob(j *claudeq.Job) jobView {
	v := jobView{ID: j.ID, Status: j.Status, Kind: j.Kind, Model: j.Model, Cached: j.Cached, Result: j.Result,
		Usage: j.Usage, Error: j.Error, Attempts: j.Attempts, SessionID: j.SessionID, Metadata: j.Metadata,
		Nodes: j.Nodes, RequestedModel: j.RequestedModel, RouteReason: j.RouteReason, CostUSD: usd(j.CostMicros),
		PricedBy: j.PricedBy, PricedAs: j.PricedAs,
		CreatedAt: tp(j.CreatedAt), StartedAt: j.StartedAt, FinishedAt: j.FinishedAt, StatusURL: "/api/claude/jobs/" + j.ID}
	if len(j.Result) > 0 {
		var m struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(j.Result, &m) == nil {
			v.Text = job.Text(m.Content)
		}
	}
	return v
}

// view returns the fullest view of a job whose live state is st.
func (s *Server) view(ctx context.Context, st *queue.State) (jobView, error) {
	if !st.Status.Terminal() {
		return s.viewState(st), nil
	}
	if st.CacheKey != "" && st.Attempts == 0 {
		if msg, err := s.c.Get(ctx, st.CacheKey); err == nil && msg != nil {
			return s.viewCached(st, msg), nil
		}
	}
	j, err := s.st.Job(ctx, st.ID)
	if err != nil {
		if claudeq.ErrorKind(err) == claudeq.KindNotFound {
			return s.viewState(st), nil // terminal in Redis, not yet written (a canceled job)
		}
		return jobView{}, err
	}
	return viewJob(j), nil
}

func (s *Server) getJob(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	p := principalOf(c)
	st, err := s.q.State(ctx, id)
	switch {
	case err == nil:
		if st.UserID != p.UserID && st.UserID != "" {
			return claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
		}
		v, err := s.view(ctx, st)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, v)
	case claudeq.ErrorKind(err) != claudeq.KindNotFound:
		return err
	}
	j, err := s.st.Job(ctx, id)
	if err != nil {
		return err
	}
	if j.UserID != p.UserID {
		return claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
	}
	return c.JSON(http.StatusOK, viewJob(j))
}

func (s *Server) cancelJob(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	p := principalOf(c)
	prev, err := s.q.Cancel(ctx, id, p.UserID, s.now())
	if err != nil {
		if claudeq.ErrorKind(err) != claudeq.KindNotFound {
			return err
		}
		j, jerr := s.st.Job(ctx, id)
		if jerr != nil || j.UserID != p.UserID {
			return claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
		}
		return claudeq.Errorf(claudeq.KindConflict, "job %s already %s", id, j.Status)
	}
	switch prev {
	case claudeq.StatusQueued:
		st, err := s.q.State(ctx, id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, s.viewState(st))
	case claudeq.StatusRunning:
		return claudeq.Errorf(claudeq.KindConflict, "job %s is running and can no longer be canceled", id)
	default:
		return claudeq.Errorf(claudeq.KindConflict, "job %s already %s", id, prev)
	}
}

func (s *Server) purgeCache(c echo.Context) error {
	n, err := s.c.Purge(c.Request().Context(), principalOf(c).UserID)
	if err != nil {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.purgeCache", Msg: "cache unavailable, try again", Err: err}
	}
	return c.JSON(http.StatusOK, map[string]any{"deleted": n})
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// fallbacks returns the request's fallback models, else the configured ones
// for its model.
func (s *Server) fallbacks(ctx context.Context, spec jobSpec) []string {
	if len(spec.fallback) > 0 {
		return spec.fallback
	}
	cat := s.catalog(ctx)
	for from, tos := range s.opt.FallbackModels {
		if m, ok := cat.Resolve(from); ok && m.ID == spec.req.Model {
			var out []string
			for _, to := range tos {
				if fm, ok := cat.Resolve(to); ok {
					out = append(out, fm.ID)
				}
			}
			return out
		}
	}
	return nil
}

func usd(micros int64) *float64 {
	v := float64(micros) / 1e6
	return &v
}

func jsonBody(v any) ([]byte, error) { return json.Marshal(v) }
