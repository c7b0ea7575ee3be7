package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/batch"
	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/quota"
)

// The Message Batches API (/v1/messages/batches), as Anthropic's: create,
// get, list, cancel, delete, results (JSONL). Each request of a batch
// becomes a job on the batch queue, served by our workers through the job
// path; docs/batches.md describes the whole life of a batch.

// BatchStore is what the batches API needs of the durable store.
type BatchStore interface {
	CreateBatch(ctx context.Context, b *claudeq.Batch) error
	Batch(ctx context.Context, id string) (*claudeq.Batch, error)
	Batches(ctx context.Context, userID string) ([]claudeq.Batch, error)
	SaveJobs(ctx context.Context, jobs []*claudeq.Job) error
	DeleteBatch(ctx context.Context, id string) error
	BatchItems(ctx context.Context, id string, batchSize int32, fn func(*claudeq.Job) error) error
}

// BatchOptions are the batches API's settings; see config.Batches.
type BatchOptions struct {
	MaxRequests int           // per batch; default 100,000
	MaxBytes    int64         // body of a create; default 256 MB
	Expiry      time.Duration // after creation; default 24h
	PublicURL   string        // base of results_url
	Enqueuers   int           // concurrent enqueues at create; default 8
}

// BatchDeps are the batches API's collaborators.
type BatchDeps struct {
	State   *batch.State
	Store   BatchStore
	Batches *job.Batches // ends requests that could not be queued; finalizes a batch ended at create
	Options BatchOptions
}

// The limits of Anthropic's Message Batches API.
const (
	DefaultBatchMaxRequests = 100_000
	DefaultBatchMaxBytes    = 256 << 20
	DefaultBatchExpiry      = 24 * time.Hour
)

// batchReadTimeout bounds the upload of a batch create's body.
const batchReadTimeout = 15 * time.Minute

type batchAPI struct {
	s *Server
	d BatchDeps
}

// MountBatches adds the Message Batches routes, under the batches scope.
// Call it before the api serves.
func (s *Server) MountBatches(d BatchDeps) {
	o := &d.Options
	if o.MaxRequests <= 0 {
		o.MaxRequests = DefaultBatchMaxRequests
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultBatchMaxBytes
	}
	if o.Expiry <= 0 {
		o.Expiry = DefaultBatchExpiry
	}
	if o.Enqueuers <= 0 {
		o.Enqueuers = 8
	}
	h := &batchAPI{s: s, d: d}
	g := s.e.Group("/v1/messages/batches", s.limitIP, s.auth(claudeq.ScopeBatches), s.limitKey)
	g.POST("", h.create)
	g.GET("", h.list)
	g.GET("/:id", h.get)
	g.POST("/:id/cancel", h.cancel)
	g.DELETE("/:id", h.delete)
	g.GET("/:id/results", h.results)
}

// batchView is a Message Batch as the API shows it.
type batchView struct {
	ID                string              `json:"id"`
	Type              string              `json:"type"`
	ProcessingStatus  claudeq.BatchStatus `json:"processing_status"`
	RequestCounts     claudeq.BatchCounts `json:"request_counts"`
	EndedAt           *time.Time          `json:"ended_at"`
	CreatedAt         time.Time           `json:"created_at"`
	ExpiresAt         time.Time           `json:"expires_at"`
	CancelInitiatedAt *time.Time          `json:"cancel_initiated_at"`
	ArchivedAt        *time.Time          `json:"archived_at"`
	ResultsURL        *string             `json:"results_url"`
}

func (h *batchAPI) view(b *claudeq.Batch) batchView {
	v := batchView{ID: b.ID, Type: "message_batch", ProcessingStatus: b.Status, RequestCounts: b.Counts,
		EndedAt: b.EndedAt, CreatedAt: b.CreatedAt, ExpiresAt: b.ExpiresAt, CancelInitiatedAt: b.CancelInitiatedAt}
	if b.Status == claudeq.BatchEnded {
		u := job.BatchResultsURL(h.d.Options.PublicURL, b.ID)
		v.ResultsURL = &u
	}
	return v
}

var customIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// batchItem is one request of a batch being created: ready to queue (body
// set) or already errored (err set).
type batchItem struct {
	customID string
	body     []byte // canonical Messages API body
	model    string
	cost     claudeq.Micros
	err      *claudeq.JobError
}

// create reads {"requests": [{"custom_id", "params"}, ...]} as a stream (a
// body of up to 256 MB is never held whole), checks the batch's shape, then
// each request's params: invalid params do not refuse the batch, they make
// that request errored (as Anthropic validates params asynchronously). It
// then reserves the worst case of all valid requests at once, records the
// batch and queues its requests.
func (h *batchAPI) create(c echo.Context) error {
	s, o := h.s, h.d.Options
	r := c.Request()
	if mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
		return claudeq.Errorf(claudeq.KindUnsupportedMediaType, "Content-Type must be application/json")
	}
	tooLarge := claudeq.Errorf(claudeq.KindRequestTooLarge, "a batch is at most %d bytes (%s); split it into several batches (claudeq batch submit does)", o.MaxBytes, humanBytes(o.MaxBytes))
	if r.ContentLength > o.MaxBytes {
		return tooLarge
	}
	// A body of up to 256 MB may take longer to arrive than the server's
	// read timeout (60 s) allows other requests.
	_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now().Add(batchReadTimeout))
	p := principalOf(c)
	now := s.now().UTC().Truncate(time.Millisecond)
	cat := s.catalog(c.Request().Context())
	action := s.policyAction(c)
	kinds := policy.Summary{}
	var items []batchItem
	seen := map[string]int{}
	err := readRequests(http.MaxBytesReader(c.Response(), r.Body, o.MaxBytes), o.MaxRequests, func(i int, customID string, params json.RawMessage) error {
		if !customIDRe.MatchString(customID) {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "requests.%d.custom_id: %q must be 1 to 64 characters of letters, digits, _ and -", i, customID)
		}
		if first, dup := seen[customID]; dup {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "requests.%d.custom_id: %q is used more than once in this batch (also requests.%d); custom ids must be unique within a batch", i, customID, first)
		}
		seen[customID] = i
		it := batchItem{customID: customID}
		req, model, perr := h.params(cat, params)
		if perr == nil {
			it.body, perr = json.Marshal(req)
		}
		var in int64
		if perr == nil {
			in = pricing.EstimateInputTokens(it.body)
			perr = checkContext(model, in, "")
		}
		sent := it.body
		if perr == nil && s.policy != nil {
			var sum policy.Summary
			it.body, sum, perr = s.policy.ApplyMessages(it.body, action)
			for k, n := range sum {
				kinds[k] += n
			}
		}
		if perr == nil && s.money.Pricing != nil {
			if len(it.body) != len(sent) {
				in = pricing.EstimateInputTokens(it.body) // redacted: the reservation prices what is sent
			}
			it.cost, _, perr = s.money.Pricing.Estimate(model.ID, in, int64(req.MaxTokens), true, now)
		}
		if perr != nil {
			it.body, it.err = nil, &claudeq.JobError{Type: claudeq.ErrorKind(perr).String(), Message: claudeq.ErrorMessage(perr)}
		} else {
			it.model = model.ID
		}
		items = append(items, it)
		return nil
	})
	if len(kinds) > 0 {
		c.Set(ctxPolicyKinds, kinds)
		auditRecord(c).PolicyKinds = kinds
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge
	}
	if err != nil {
		return err
	}
	if len(items) == 0 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "requests: at least one request is required")
	}

	ctx := r.Context()
	webhookURL := p.WebhookURL // the key's default webhook receives batch.ended
	if webhookURL != "" && s.wh.Policy != nil {
		if err := s.wh.Policy.CheckURL(webhookURL); err != nil {
			return err
		}
	}
	if p.RequestsPerDay > 0 && s.money.Quota != nil {
		if err := s.money.Quota.CountRequests(ctx, p.KeyID, p.RequestsPerDay, len(items)); err != nil {
			return err
		}
	}
	b := &claudeq.Batch{ID: randomID(claudeq.BatchIDPrefix, 15), UserID: p.UserID, Department: p.Department, KeyID: p.KeyID,
		Status: claudeq.BatchInProgress, Requests: int64(len(items)), WebhookURL: webhookURL,
		CreatedAt: now, ExpiresAt: now.Add(o.Expiry)}
	var pending []batch.Item
	var invalid []*claudeq.Job
	var total claudeq.Micros
	for _, it := range items {
		if it.err != nil {
			invalid = append(invalid, &claudeq.Job{ID: claudeq.BatchItemID(b.ID, it.customID), Kind: claudeq.JobBatch,
				Status: claudeq.StatusFailed, UserID: p.UserID, Department: p.Department, KeyID: p.KeyID,
				BatchID: b.ID, CustomID: it.customID, Error: it.err, CreatedAt: now, FinishedAt: &now})
			continue
		}
		total += it.cost
		pending = append(pending, batch.Item{CustomID: it.customID, Reserved: int64(it.cost)})
	}
	b.ReservedMicros = int64(total)
	b.Counts = claudeq.BatchCounts{Processing: int64(len(pending)), Errored: int64(len(invalid))}
	if len(pending) == 0 {
		b.Status, b.EndedAt = claudeq.BatchEnded, &now
	}
	rh := sha256.New()
	for _, it := range items {
		rh.Write([]byte(it.customID + "\x00"))
		rh.Write(it.body)
		rh.Write([]byte{0})
	}
	rec := auditRecord(c)
	rec.RequestHash, rec.Target = hex.EncodeToString(rh.Sum(nil)), b.ID

	// One reservation for the worst case of the whole batch, or none.
	if err := s.reserve(ctx, p, b.ID, total); err != nil {
		var ex *quota.Exceeded
		if errors.As(err, &ex) {
			c.Response().Header().Set("x-should-retry", "false")
			return &claudeq.Error{Kind: claudeq.KindQuotaExceeded, Op: "api.createBatch", Err: err, RetryAfter: claudeq.RetryAfter(err),
				Msg: fmt.Sprintf("batch refused: its %d requests may cost up to %s together (every max_tokens produced, at the batch price), more than is left: %s",
					len(pending), claudeq.Micros(total), claudeq.ErrorMessage(err))}
		}
		return err
	}
	undo := func() {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = h.d.State.Delete(bg, b.ID)
		_ = h.d.Store.DeleteBatch(bg, b.ID)
		s.release(b.ID)
	}
	if err := h.d.State.Create(ctx, b, pending); err != nil {
		undo()
		return err
	}
	if len(invalid) > 0 {
		if err := h.d.Store.SaveJobs(ctx, invalid); err != nil {
			undo()
			return err
		}
	}
	if err := h.d.Store.CreateBatch(ctx, b); err != nil {
		undo()
		return err
	}

	if len(pending) > 0 {
		h.enqueue(c, b, items)
	} else if h.d.Batches != nil {
		if err := h.d.Batches.Finalize(ctx, b.ID); err != nil {
			s.log.Warn("finalizing a batch ended at create failed; the sweeper will", "batch_id", b.ID, "err", err)
		}
	}
	if cur, err := h.d.State.Get(ctx, b.ID); err == nil {
		b = cur
	}
	s.log.Info("batch created", "batch_id", b.ID, "user_id", p.UserID, "requests", b.Requests,
		"errored_at_create", len(invalid), "reserved_usd", micros(int64(total)))
	return c.JSON(http.StatusOK, h.view(b))
}

// enqueue queues the valid requests of b. A request that cannot be queued
// (Redis failing midway) ends errored at once; if even that fails, its
// batch's expiry sweep ends it.
func (h *batchAPI) enqueue(c echo.Context, b *claudeq.Batch, items []batchItem) {
	s := h.s
	ctx := context.WithoutCancel(c.Request().Context()) // a client gone mid-create must not leave half a batch
	ttl := max(s.opt.JobStateTTL, h.d.Options.Expiry+time.Hour)
	opts := []asynq.Option{job.MaxRetry(s.opt.JobMaxRetries), asynq.Timeout(s.opt.JobTimeout)}
	var subs []queue.Submission
	var payloads []*job.Payload
	for _, it := range items {
		if it.err != nil {
			continue
		}
		id := claudeq.BatchItemID(b.ID, it.customID)
		sum := sha256.Sum256(it.body)
		var cacheKey string
		if s.c.Enabled() {
			cacheKey = cache.Key(b.UserID, it.body)
		}
		p := &job.Payload{ID: id, Kind: claudeq.JobBatch, UserID: b.UserID, Department: b.Department, KeyID: b.KeyID,
			Request: it.body, RequestHash: hex.EncodeToString(sum[:]), CacheKey: cacheKey, CreatedAt: b.CreatedAt,
			EstimateMicros: int64(it.cost), BatchID: b.ID, CustomID: it.customID}
		payload, _ := json.Marshal(p)
		subs = append(subs, queue.Submission{
			State:   queue.State{ID: id, UserID: b.UserID, Kind: claudeq.JobBatch, Model: it.model, RequestHash: p.RequestHash, CreatedAt: b.CreatedAt},
			Payload: payload, Queue: queue.Batch, TTL: ttl, Options: opts,
		})
		payloads = append(payloads, p)
	}
	errs := s.q.SubmitMany(ctx, subs, h.d.Options.Enqueuers)
	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if h.d.Batches == nil {
			continue
		}
		p := payloads[i]
		now := s.now().UTC()
		j := &claudeq.Job{ID: p.ID, Kind: claudeq.JobBatch, Status: claudeq.StatusFailed, UserID: p.UserID, Department: p.Department,
			KeyID: p.KeyID, BatchID: p.BatchID, CustomID: p.CustomID, CreatedAt: p.CreatedAt, FinishedAt: &now,
			Error: &claudeq.JobError{Type: claudeq.KindUnavailable.String(), Message: "the request could not be queued: " + claudeq.ErrorMessage(err)}}
		if err := h.d.Store.SaveJobs(ctx, []*claudeq.Job{j}); err != nil {
			continue
		}
		_ = h.d.Batches.ItemEnded(ctx, p, j)
	}
	if failed > 0 {
		s.log.Error("batch requests could not be queued", "batch_id", b.ID, "failed", failed, "err", errors.Join(errs...))
	}
}

// readRequests streams the create body, calling fn for each request in
// order; it stops at fn's first error. The body's shape errors name the
// offending path.
func readRequests(body io.Reader, maxRequests int, fn func(i int, customID string, params json.RawMessage) error) error {
	dec := json.NewDecoder(bufio.NewReaderSize(body, 64<<10))
	bad := func(format string, args ...any) error {
		return claudeq.Errorf(claudeq.KindInvalidRequest, format, args...)
	}
	tok, err := dec.Token()
	if err != nil {
		return streamErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return bad("request body must be a JSON object {\"requests\": [...]}")
	}
	sawRequests := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return streamErr(err)
		}
		key, _ := tok.(string)
		if key != "requests" {
			return bad("%s: unknown field; a batch is {\"requests\": [{\"custom_id\", \"params\"}, ...]}", key)
		}
		if sawRequests {
			return bad("requests: given twice")
		}
		sawRequests = true
		tok, err = dec.Token()
		if err != nil {
			return streamErr(err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return bad("requests: expected an array of {custom_id, params}")
		}
		for i := 0; dec.More(); i++ {
			if i >= maxRequests {
				return bad("requests: a batch holds at most %d requests; split it into several batches (claudeq batch submit does)", maxRequests)
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return streamErr(err)
			}
			var item struct {
				CustomID *string         `json:"custom_id"`
				Params   json.RawMessage `json:"params"`
			}
			if err := decodeStrict(raw, &item); err != nil {
				return bad("requests.%d: %s", i, claudeq.ErrorMessage(err))
			}
			if item.CustomID == nil {
				return bad("requests.%d.custom_id: required", i)
			}
			if p := strings.TrimSpace(string(item.Params)); p == "" || p[0] != '{' {
				return bad("requests.%d.params: required, a Messages API request object", i)
			}
			if err := fn(i, *item.CustomID, item.Params); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // ]
			return streamErr(err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return streamErr(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("request body has data after the JSON object")
	}
	if !sawRequests {
		return bad("requests: required")
	}
	return nil
}

func streamErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	if errors.Is(err, io.EOF) {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "malformed JSON: body ends early")
	}
	return jsonError(err)
}

// batchParams is a request's params: a Messages API body.
type batchParams struct {
	Model         string          `json:"model"`
	MaxTokens     *int            `json:"max_tokens"`
	Messages      json.RawMessage `json:"messages"`
	System        json.RawMessage `json:"system"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	TopK          *int            `json:"top_k"`
	StopSequences []string        `json:"stop_sequences"`
	Tools         json.RawMessage `json:"tools"`
	ToolChoice    json.RawMessage `json:"tool_choice"`
	Thinking      json.RawMessage `json:"thinking"`
	Metadata      json.RawMessage `json:"metadata"`
	ServiceTier   json.RawMessage `json:"service_tier"`
	Stream        *bool           `json:"stream"`
}

// params validates one request's params into the body sent upstream.
func (h *batchAPI) params(cat *claudeq.Catalog, raw json.RawMessage) (claudeq.MessageRequest, claudeq.Model, error) {
	var bp batchParams
	var req claudeq.MessageRequest
	if err := decodeStrict(raw, &bp); err != nil {
		return req, claudeq.Model{}, err
	}
	if strings.TrimSpace(bp.Model) == "" {
		return req, claudeq.Model{}, fieldErr("model", "required")
	}
	m, err := h.s.model(cat, bp.Model)
	if err != nil {
		return req, m, err
	}
	if bp.MaxTokens == nil {
		return req, m, fieldErr("max_tokens", "required")
	}
	if bp.Stream != nil && *bp.Stream {
		return req, m, fieldErr("stream", "not supported in a batch")
	}
	if req.MaxTokens, err = checkMaxTokens(bp.MaxTokens, 0, m); err != nil {
		return req, m, err
	}
	if len(bp.Messages) == 0 || string(bp.Messages) == "null" {
		return req, m, fieldErr("messages", "required")
	}
	if req.Messages, err = checkMessages(bp.Messages); err != nil {
		return req, m, err
	}
	if req.System, err = checkSystem(bp.System); err != nil {
		return req, m, err
	}
	if err := checkSampling(bp.Temperature, bp.TopP, bp.TopK); err != nil {
		return req, m, err
	}
	for i, ss := range bp.StopSequences {
		if ss == "" {
			return req, m, fieldErr("stop_sequences."+itoa(i), "must not be empty")
		}
	}
	for _, f := range []struct {
		name  string
		raw   json.RawMessage
		delim byte
		dst   *json.RawMessage
	}{{"tools", bp.Tools, '[', &req.Tools}, {"tool_choice", bp.ToolChoice, '{', &req.ToolChoice}, {"thinking", bp.Thinking, '{', &req.Thinking}} {
		v := strings.TrimSpace(string(f.raw))
		if v == "" || v == "null" {
			continue
		}
		if v[0] != f.delim {
			kind := "an object"
			if f.delim == '[' {
				kind = "an array"
			}
			return req, m, fieldErr(f.name, "expected %s", kind)
		}
		if *f.dst, err = canonical(f.raw); err != nil {
			return req, m, fieldErr(f.name, "malformed")
		}
	}
	req.Model, req.Temperature, req.TopP, req.TopK, req.StopSequences = m.ID, bp.Temperature, bp.TopP, bp.TopK, bp.StopSequences
	return req, m, nil
}

// load returns batch id of the caller: the live state, else the durable
// copy; KindNotFound for an unknown id or someone else's batch.
func (h *batchAPI) load(c echo.Context, id string) (*claudeq.Batch, error) {
	ctx := c.Request().Context()
	nf := claudeq.Errorf(claudeq.KindNotFound, "batch %s not found", id)
	if !claudeq.IsBatchID(id) {
		return nil, nf
	}
	b, err := h.d.State.Get(ctx, id)
	if claudeq.ErrorKind(err) == claudeq.KindNotFound {
		b, err = h.d.Store.Batch(ctx, id)
	}
	if claudeq.ErrorKind(err) == claudeq.KindNotFound {
		return nil, nf
	}
	if err != nil {
		return nil, err
	}
	if b.UserID != principalOf(c).UserID {
		return nil, nf
	}
	return b, nil
}

func (h *batchAPI) get(c echo.Context) error {
	b, err := h.load(c, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, h.view(b))
}

// list pages through the caller's batches, newest first: after_id gives the
// page after (older than) a batch, before_id the page before (newer).
func (h *batchAPI) list(c echo.Context) error {
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "limit: a whole number from 1 to 1000")
		}
		limit = n
	}
	after, before := c.QueryParam("after_id"), c.QueryParam("before_id")
	if after != "" && before != "" {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "after_id, before_id: give one of them, not both")
	}
	ctx := c.Request().Context()
	all, err := h.d.Store.Batches(ctx, principalOf(c).UserID)
	if err != nil {
		return err
	}
	index := func(id string) (int, error) {
		for i := range all {
			if all[i].ID == id {
				return i, nil
			}
		}
		return 0, claudeq.Errorf(claudeq.KindNotFound, "no batch %s to page from", id)
	}
	var page []claudeq.Batch
	hasMore := false
	switch {
	case before != "":
		i, err := index(before)
		if err != nil {
			return err
		}
		from := max(0, i-limit)
		page, hasMore = all[from:i], from > 0
	default:
		from := 0
		if after != "" {
			i, err := index(after)
			if err != nil {
				return err
			}
			from = i + 1
		}
		to := min(len(all), from+limit)
		page, hasMore = all[from:to], to < len(all)
	}
	// The durable copies are written at create and at end: counts of
	// running batches come from their live state.
	var live []string
	for _, b := range page {
		if b.Status != claudeq.BatchEnded {
			live = append(live, b.ID)
		}
	}
	cur := map[string]*claudeq.Batch{}
	if len(live) > 0 {
		got, err := h.d.State.GetMany(ctx, live)
		if err != nil {
			return err
		}
		for i, b := range got {
			if b != nil {
				cur[live[i]] = b
			}
		}
	}
	out := struct {
		Data    []batchView `json:"data"`
		HasMore bool        `json:"has_more"`
		FirstID *string     `json:"first_id"`
		LastID  *string     `json:"last_id"`
	}{Data: make([]batchView, 0, len(page)), HasMore: hasMore}
	for i := range page {
		b := &page[i]
		if l := cur[b.ID]; l != nil {
			b = l
		}
		out.Data = append(out.Data, h.view(b))
	}
	if len(page) > 0 {
		out.FirstID, out.LastID = &page[0].ID, &page[len(page)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// cancel starts canceling a batch: queued requests end canceled (the
// sweeper does it, at once), running ones finish. Canceling a batch that is
// canceling or has ended returns it unchanged.
func (h *batchAPI) cancel(c echo.Context) error {
	id := c.Param("id")
	b, err := h.load(c, id)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	prev, err := h.d.State.Cancel(ctx, id, b.UserID, h.s.now())
	if claudeq.ErrorKind(err) == claudeq.KindNotFound {
		return c.JSON(http.StatusOK, h.view(b)) // only the durable copy is left: it has ended
	}
	if err != nil {
		return err
	}
	if prev == claudeq.BatchInProgress {
		_, err := h.s.q.Client().EnqueueContext(ctx, job.NewBatchSweepTask(id, "cancel"))
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			// The periodic sweep cancels it too, within its interval.
			h.s.log.Warn("enqueueing the batch cancel failed; the periodic sweep will cancel it", "batch_id", id, "err", err)
		}
	}
	if cur, err := h.d.State.Get(ctx, id); err == nil {
		b = cur
	}
	return c.JSON(http.StatusOK, h.view(b))
}

// delete removes an ended batch and its results.
func (h *batchAPI) delete(c echo.Context) error {
	id := c.Param("id")
	b, err := h.load(c, id)
	if err != nil {
		return err
	}
	if b.Status != claudeq.BatchEnded {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "batch %s is %s: only an ended batch can be deleted; cancel it first and wait until it has ended", id, b.Status)
	}
	ctx := c.Request().Context()
	// An ended batch whose end is not yet finalized (its last request
	// finished a moment ago) is finalized first: its reservation released.
	if active, err := h.d.State.IsActive(ctx, id); err != nil {
		return err
	} else if active && h.d.Batches != nil {
		if err := h.d.Batches.Finalize(ctx, id); err != nil {
			return err
		}
	}
	if err := h.d.Store.DeleteBatch(ctx, id); err != nil {
		return err
	}
	if err := h.d.State.Delete(ctx, id); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"id": id, "type": "message_batch_deleted"})
}

// resultLine is one line of a batch's results.
type resultLine struct {
	CustomID string      `json:"custom_id"`
	Result   batchResult `json:"result"`
}

type batchResult struct {
	Type    claudeq.BatchResultType `json:"type"`
	Message json.RawMessage         `json:"message,omitempty"`
	Error   *resultError            `json:"error,omitempty"`
}

type resultError struct {
	Type      string          `json:"type"`
	Error     resultErrDetail `json:"error"`
	RequestID *string         `json:"request_id"`
}

type resultErrDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func resultOf(j *claudeq.Job) resultLine {
	l := resultLine{CustomID: j.CustomID, Result: batchResult{Type: claudeq.BatchResultOf(j)}}
	switch l.Result.Type {
	case claudeq.ResultSucceeded:
		l.Result.Message = j.Result
		if !json.Valid(l.Result.Message) {
			l.Result = batchResult{Type: claudeq.ResultErrored, Error: &resultError{Type: "error",
				Error: resultErrDetail{Type: claudeq.KindInternal.String(), Message: "the stored answer is unreadable"}}}
		}
	case claudeq.ResultErrored:
		e := resultErrDetail{Type: claudeq.KindInternal.String(), Message: "internal error"}
		if j.Error != nil {
			e = resultErrDetail{Type: j.Error.Type, Message: j.Error.Message}
		}
		l.Result.Error = &resultError{Type: "error", Error: e}
	}
	return l
}

// results streams a batch's results as JSONL, one line per request, in no
// particular order: once it has ended, or with ?partial=true the requests
// finished so far while it runs.
func (h *batchAPI) results(c echo.Context) error {
	id := c.Param("id")
	b, err := h.load(c, id)
	if err != nil {
		return err
	}
	partial := false
	if v := c.QueryParam("partial"); v != "" {
		if partial, err = strconv.ParseBool(v); err != nil {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "partial: true or false")
		}
	}
	if b.Status != claudeq.BatchEnded && !partial {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "batch %s is %s: its results are available once it has ended (poll GET /v1/messages/batches/%s), or ask for the requests finished so far with ?partial=true", id, b.Status, id)
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, "application/x-jsonl")
	w.Header().Set("X-Claudeq-Batch-Status", string(b.Status))
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	err = h.d.Store.BatchItems(c.Request().Context(), id, 1000, func(j *claudeq.Job) error {
		if err := enc.Encode(resultOf(j)); err != nil {
			return err
		}
		if n++; n%1000 == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
			w.Flush()
		}
		return nil
	})
	if err != nil {
		// The status line is sent: cut the stream so that the client sees
		// an incomplete download, never a silently short one.
		h.s.log.Warn("batch results stream failed", "batch_id", id, "lines", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	return bw.Flush()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
