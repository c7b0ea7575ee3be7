package task

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/upstream"
)

// Upstream calls Claude on some node serving model, preferring nodes not in
// avoid, and names the node it used (upstream.Fleet).
type Upstream interface {
	Call(ctx context.Context, model string, body []byte, avoid []string) (*upstream.Response, string, error)
}

// Committer makes a finished job's records durable.
type Committer interface {
	Commit(ctx context.Context, rec store.Record) error
}

// JobStore reads durable job records.
type JobStore interface {
	Job(ctx context.Context, id string) (*claudeq.Job, error)
}

// Cache stores answers.
type Cache interface {
	Put(ctx context.Context, tenant, key string, value []byte, now time.Time) error
}

// JobHandler runs job:run tasks. It is safe for concurrent use.
type JobHandler struct {
	Queue          *queue.Queue
	Store          JobStore
	Committer      Committer
	Cache          Cache
	Upstream       Upstream
	Now            func() time.Time
	Logger         *slog.Logger
	Notifier       *job.Notifier // nil: no webhooks
	Pricing        Pricer        // nil: nothing is billed
	Quota          Quota         // nil: no budgets
	IdempotencyTTL time.Duration // how long a finished job's state stays in Redis
	// Keeper keeps an answer that was paid for until its job is billed
	// (keep.go); nil: one over Queue alone (Redis, then this process).
	Keeper *job.Keeper
	// NoUpstreamWait is how long after its submission a job whose attempt
	// finds no healthy upstream node waits for one without using up a
	// retry (0: such an attempt uses one up at once).
	NoUpstreamWait time.Duration
	// Metrics records every upstream call (outcome, latency, tokens,
	// errors) and the cost of every billed job; nil records nothing.
	Metrics *metrics.Metrics
	Batches *job.Batches // the batch side of batch requests (batch.go); required for them

	keepOnce      sync.Once
	defaultKeeper *job.Keeper
}

// ProcessTask implements asynq.Handler.
//
// Delivery is at least once, so every effect is guarded: the state hash says
// whether this is a first run; on a re-run the durable record decides; an
// answer that could not be billed (Redis or the store down) is kept
// (job.Keeper) so the retry does not call the upstream again.
func (h *JobHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p job.Payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ID == "" {
		return fmt.Errorf("job:run: bad payload: %v: %w", err, asynq.SkipRetry)
	}
	taskID, _ := asynq.GetTaskID(ctx)
	qname, _ := asynq.GetQueueName(ctx)
	log := h.Logger.With("job_id", p.ID, "task_id", taskID, "queue", qname, "user_id", p.UserID)
	started := h.Now().UTC()
	prev, err := h.Queue.Start(ctx, p.ID, started)
	if err != nil {
		return job.Infra(err)
	}
	switch prev {
	case claudeq.StatusSucceeded, claudeq.StatusFailed:
		return nil // finished before; its completion mark was lost
	case claudeq.StatusCanceled:
		if p.BatchID != "" {
			return nil // the batch's cancel or expiry (job.Batches.Drain) writes its record
		}
		return h.finish(ctx, &p, started, claudeq.StatusCanceled, outcome{jerr: &claudeq.JobError{Type: "canceled", Message: "job canceled before it ran"}})
	case claudeq.StatusRunning, "":
		// A re-run: a worker died, or Redis lost the completion mark.
		if j, err := h.Store.Job(ctx, p.ID); err == nil {
			log.Info("job already finished; not running it again", "status", j.Status)
			if err := h.settle(ctx, &p, j); err != nil {
				return err
			}
			if err := h.Notifier.Notify(ctx, j, usdOf(j.CostMicros)); err != nil {
				return job.Infra(err)
			}
			if err := h.Queue.Finish(ctx, p.ID, j.Status, h.Now(), "", h.IdempotencyTTL); err != nil {
				return job.Infra(err)
			}
			return nil
		} else if claudeq.ErrorKind(err) != claudeq.KindNotFound {
			return job.Infra(err)
		}
	}

	rerun := prev != claudeq.StatusQueued
	if err := h.reserveDeferred(ctx, &p); err != nil {
		return err
	}
	out := outcome{rerun: rerun}
	if rerun {
		// An earlier attempt may have been paid for: never call again
		// while a place that may hold its answer cannot be asked.
		b, where, err := h.keeper().Kept(ctx, p.ID)
		if err != nil {
			log.Warn("cannot tell whether an earlier attempt's answer was kept; will retry", "err", err)
			return job.Infra(err)
		}
		if b != nil {
			var r upstream.Response
			if json.Unmarshal(b, &r) == nil {
				out.resp, out.node, out.keptIn = &r, "stash", where
				log.Info("using the answer an earlier attempt kept", "kept_in", where)
			}
		}
	}
	if n, _ := asynq.GetRetryCount(ctx); n > 0 || rerun {
		if out.tried, err = h.Queue.Nodes(ctx, p.ID); err != nil {
			return job.Infra(err)
		}
	}
	if out.resp == nil {
		if err := h.call(ctx, &p, &out); err != nil {
			n, _ := asynq.GetRetryCount(ctx)
			max, _ := asynq.GetMaxRetry(ctx)
			max-- // the job's own retries (job.MaxRetry)
			if claudeq.ErrorKind(err) == claudeq.KindNoUpstream && ctx.Err() == nil && h.Now().Sub(p.CreatedAt) < h.NoUpstreamWait {
				// Every node is down, cooling down after a 429 or at its
				// cap: wait for one (after the error's retry-after) without
				// using up a retry, for NoUpstreamWait after the job's
				// submission; then such attempts count as any other.
				log.Warn("no healthy upstream node; waiting without using a retry", "attempt", n+1, "err", err)
				if qerr := h.Queue.Requeue(context.WithoutCancel(ctx), p.ID, claudeq.ErrorMessage(err), out.node); qerr != nil {
					return job.Infra(qerr)
				}
				return job.Wait(err)
			}
			if upstream.Temporary(err) && n < max && ctx.Err() == nil {
				log.Warn("upstream call failed; will retry", "node", out.node, "attempt", n+1, "err", err)
				if qerr := h.Queue.Requeue(context.WithoutCancel(ctx), p.ID, claudeq.ErrorMessage(err), out.node); qerr != nil {
					return job.Infra(qerr)
				}
				return err
			}
			log.Warn("job failed", "node", out.node, "attempt", n+1, "err", err)
			out.jerr = &claudeq.JobError{Type: claudeq.ErrorKind(err).String(), Message: claudeq.ErrorMessage(err)}
			if upstream.Temporary(err) && claudeq.ErrorKind(err) != claudeq.KindNoUpstream {
				// Out of retries on a transient error: say so plainly when no
				// node can serve the model any more.
				if pk, ok := h.Upstream.(interface {
					Pick(ctx context.Context, model string, avoid []string) (string, error)
				}); ok {
					if _, perr := pk.Pick(ctx, modelOf(p.Request), nil); claudeq.ErrorKind(perr) == claudeq.KindNoUpstream {
						out.jerr = &claudeq.JobError{Type: claudeq.KindNoUpstream.String(),
							Message: claudeq.ErrorMessage(perr) + "; last error: " + claudeq.ErrorMessage(err)}
					}
				}
			}
			return h.finish(ctx, &p, started, claudeq.StatusFailed, out)
		}
	}
	return h.finish(ctx, &p, started, claudeq.StatusSucceeded, out)
}

// outcome is what one run of a job produced.
type outcome struct {
	resp           *upstream.Response
	node           string   // the node of this attempt ("stash": a stored answer)
	tried          []string // nodes earlier attempts failed on
	requestedModel string   // set when a fallback model answered
	sentModel      string   // the model of the request that answered (a fallback's when one did)
	rerun          bool
	keptIn         string // where the answer was kept, when node is "stash"
	jerr           *claudeq.JobError
}

// keeper returns h.Keeper, or one over the queue alone.
func (h *JobHandler) keeper() *job.Keeper {
	if h.Keeper == nil {
		h.keepOnce.Do(func() { h.defaultKeeper = &job.Keeper{Redis: h.Queue, Now: h.Now, Logger: h.Logger} })
		return h.defaultKeeper
	}
	return h.Keeper
}

// call asks the upstream, avoiding the nodes earlier attempts failed on, and
// falls back to the job's fallback models when its model is overloaded or
// has no healthy node.
func (h *JobHandler) call(ctx context.Context, p *job.Payload, out *outcome) error {
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(p.Request, &req)
	resp, node, err := h.callUpstream(ctx, p, req.Model, p.Request, out.tried)
	out.node = node
	for _, fm := range p.FallbackModels {
		k := claudeq.ErrorKind(err)
		if err == nil || (k != claudeq.KindOverloaded && k != claudeq.KindNoUpstream) || ctx.Err() != nil {
			break
		}
		body, jerr := withModel(p.Request, fm)
		if jerr != nil {
			break
		}
		h.Logger.Warn("model unavailable; trying a fallback model", "job_id", p.ID, "model", req.Model, "fallback", fm, "err", err)
		resp, node, err = h.callUpstream(ctx, p, fm, body, nil)
		out.node = node
		if err == nil {
			out.requestedModel, out.sentModel = req.Model, fm
		}
	}
	out.resp = resp
	return err
}

// callUpstream makes one call for model through h.Upstream and records
// it: claude_requests_total, claude_response_time_seconds and
// claude_tokens_consumed_total (all token classes) for the call, and
// claude_errors_total for a failure. A failure to find any node is an
// error but no call.
func (h *JobHandler) callUpstream(ctx context.Context, p *job.Payload, model string, body []byte, avoid []string) (*upstream.Response, string, error) {
	start := time.Now()
	resp, node, err := h.Upstream.Call(ctx, model, body, avoid)
	d := time.Since(start)
	switch {
	case err == nil:
		var tokens int64
		if resp != nil {
			tokens = resp.Usage.Total()
		}
		h.Metrics.ObserveUpstream(model, metrics.StatusSuccess, p.UserType, d, tokens, p.UserID)
	case claudeq.ErrorKind(err) == claudeq.KindNoUpstream:
		h.Metrics.Error(claudeq.KindNoUpstream, model)
	default:
		h.Metrics.ObserveUpstream(model, metrics.StatusError, p.UserType, d, 0, p.UserID)
		h.Metrics.Error(claudeq.ErrorKind(err), model)
	}
	return resp, node, err
}

func usdOf(micros int64) float64 { return float64(micros) / 1e6 }

func modelOf(body []byte) string {
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &req)
	return req.Model
}

// withModel returns body with its "model" replaced.
func withModel(body []byte, model string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(model)
	m["model"] = b
	return json.Marshal(m)
}

// finish writes the terminal record (durably, through group commit), then
// the live state and the cache. Any store failure retries the task without
// using up a retry; the stash keeps the answer for that retry.
func (h *JobHandler) finish(ctx context.Context, p *job.Payload, started time.Time, status claudeq.Status, out outcome) error {
	resp, node, jerr, rerun := out.resp, out.node, out.jerr, out.rerun
	ctx = context.WithoutCancel(ctx) // finishing must not be cut short by the job's own deadline
	now := h.Now().UTC()
	n, _ := asynq.GetRetryCount(ctx)
	j := &claudeq.Job{
		ID: p.ID, Kind: p.Kind, Status: status, UserID: p.UserID, Department: p.Department, KeyID: p.KeyID,
		SessionID: p.SessionID, Metadata: p.Metadata, RequestHash: p.RequestHash, Error: jerr,
		Attempts: n + 1, CreatedAt: p.CreatedAt.UTC(), FinishedAt: &now, WebhookURL: p.WebhookURL,
		RequestedModel: cmp.Or(p.RequestedModel, out.requestedModel), RouteReason: p.RouteReason, BatchID: p.BatchID, CustomID: p.CustomID,
	}
	if node != "" && node != "stash" {
		j.Nodes = append(slices.Clone(out.tried), node)
	} else {
		j.Nodes = out.tried
	}
	var req struct {
		Model    string          `json:"model"`
		Messages json.RawMessage `json:"messages"`
	}
	_ = json.Unmarshal(p.Request, &req)
	j.Model = cmp.Or(out.sentModel, req.Model) // the model asked, until the answer names its own
	rec := store.Record{Job: j}
	if status == claudeq.StatusCanceled {
		j.Attempts = 0
	} else {
		j.StartedAt = &started
	}
	if resp != nil {
		j.Result = resp.Raw
		u := resp.Usage
		j.Usage = &u
		if resp.Model != "" {
			j.Model = resp.Model
		}
	}
	if resp != nil && p.BatchID == "" { // batch requests keep no conversation: their record has the answer
		u := resp.Usage
		rec.Turn = &store.Turn{
			JobID: p.ID, UserID: p.UserID, SessionID: p.SessionID, Model: j.Model,
			Messages: turnMessages(req.Messages, resp.Raw, p.SessionID != "", p.ID, now),
			Tokens:   u.Total(), At: now, Rerun: rerun,
		}
	}
	// Until the record and its ledger entry are durable, a failure keeps
	// the answer for the retry: it was paid for.
	keep := func() {
		if resp != nil && node != "stash" {
			if b, jerr := json.Marshal(resp); jerr == nil {
				out.keptIn = h.keeper().Keep(ctx, p.ID, b)
			}
		}
	}
	if status == claudeq.StatusSucceeded {
		entry, err := h.bill(ctx, p, j, cmp.Or(out.sentModel, req.Model))
		if err != nil {
			keep()
			h.Logger.Error("pricing the job failed; the answer is kept; will retry", "job_id", p.ID, "model", j.Model, "kept_in", out.keptIn, "err", err)
			return job.Infra(err)
		}
		rec.Ledger = entry
	}
	if err := h.Committer.Commit(ctx, rec); err != nil {
		keep()
		h.Logger.Warn("storing job result failed; the answer is kept; will retry", "job_id", p.ID, "kept_in", out.keptIn, "err", err)
		return job.Infra(err)
	}
	if e := rec.Ledger; e != nil {
		// Counted once the entry is durable: a retried finish (the
		// commit failed) does not count it twice.
		h.Metrics.AddCost(e.Department, e.Model, usdOf(e.CostMicros))
		if e.PricedBy == pricing.ByFallback {
			h.Metrics.PricedByFallback(e.Model, e.PricedAs)
		}
	}
	if err := h.settle(ctx, p, j); err != nil {
		h.Logger.Warn("settling the reservation failed; will retry", "job_id", p.ID, "err", err)
		return err
	}
	if err := h.Notifier.Notify(ctx, j, usdOf(j.CostMicros)); err != nil {
		h.Logger.Warn("enqueueing the webhook failed; will retry", "job_id", p.ID, "err", err)
		return job.Infra(err)
	}
	cacheKey := ""
	if status == claudeq.StatusSucceeded && p.CacheKey != "" && h.Cache != nil {
		if err := h.Cache.Put(ctx, p.UserID, p.CacheKey, resp.Raw, now); err == nil {
			cacheKey = p.CacheKey
		} else {
			h.Logger.Warn("cache write failed", "job_id", p.ID, "err", err)
		}
	}
	if err := h.Queue.Finish(ctx, p.ID, status, now, cacheKey, h.IdempotencyTTL); err != nil {
		return job.Infra(err)
	}
	if node == "stash" || out.keptIn != "" {
		h.keeper().Drop(ctx, p.ID, out.keptIn)
	}
	taskID, _ := asynq.GetTaskID(ctx)
	qname, _ := asynq.GetQueueName(ctx)
	attempt, _ := asynq.GetRetryCount(ctx)
	var tokens int64
	if j.Usage != nil {
		tokens = j.Usage.Total()
	}
	h.Logger.Info("job finished", "job_id", p.ID, "task_id", taskID, "queue", qname, "user_id", p.UserID,
		"status", status, "node", node, "model", j.Model, "attempt", attempt+1, "tokens", tokens)
	return nil
}

// turnMessages returns what a job adds to its conversation: the last user
// message (the whole request when the job is a conversation of its own) and
// the assistant's answer, as text.
func turnMessages(reqMessages json.RawMessage, answer json.RawMessage, session bool, jobID string, at time.Time) []store.Message {
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(reqMessages, &msgs)
	if session && len(msgs) > 0 {
		msgs = msgs[len(msgs)-1:]
	}
	out := make([]store.Message, 0, len(msgs)+1)
	for _, m := range msgs {
		out = append(out, store.Message{Role: m.Role, Content: job.Text(m.Content), JobID: jobID, At: at})
	}
	var a struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(answer, &a)
	out = append(out, store.Message{Role: "assistant", Content: job.Text(a.Content), JobID: jobID, At: at})
	return out
}

// ErrNoUpstream is returned when no node can serve a request.
var ErrNoUpstream = errors.New("no healthy upstream")
