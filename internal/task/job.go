package task

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/upstream"
)

// Upstream calls Claude on some node and names the node it used.
type Upstream interface {
	Call(ctx context.Context, body []byte) (*upstream.Response, string, error)
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
	Notifier       *Notifier     // nil: no webhooks
	IdempotencyTTL time.Duration // how long a finished job's state stays in Redis
	StashTTL       time.Duration // how long an undelivered answer is kept for the retry; default 24h
}

// ProcessTask implements asynq.Handler.
//
// Delivery is at least once, so every effect is guarded: the state hash says
// whether this is a first run; on a re-run the durable record decides; an
// answer that could not be stored is stashed so the retry does not call the
// upstream again.
func (h *JobHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p JobPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ID == "" {
		return fmt.Errorf("job:run: bad payload: %v: %w", err, asynq.SkipRetry)
	}
	log := h.Logger.With("job_id", p.ID, "user_id", p.UserID)
	started := h.Now().UTC()
	prev, err := h.Queue.Start(ctx, p.ID, started)
	if err != nil {
		return Infra(err)
	}
	switch prev {
	case claudeq.StatusSucceeded, claudeq.StatusFailed:
		return nil // finished before; its completion mark was lost
	case claudeq.StatusCanceled:
		return h.finish(ctx, &p, started, false, claudeq.StatusCanceled, nil, "", &claudeq.JobError{Type: "canceled", Message: "job canceled before it ran"})
	case claudeq.StatusRunning, "":
		// A re-run: a worker died, or Redis lost the completion mark.
		if j, err := h.Store.Job(ctx, p.ID); err == nil {
			log.Info("job already finished; not running it again", "status", j.Status)
			if err := h.Notifier.Notify(ctx, j, 0); err != nil {
				return Infra(err)
			}
			if err := h.Queue.Finish(ctx, p.ID, j.Status, h.Now(), "", h.IdempotencyTTL); err != nil {
				return Infra(err)
			}
			return nil
		} else if claudeq.ErrorKind(err) != claudeq.KindNotFound {
			return Infra(err)
		}
	}

	var resp *upstream.Response
	var node string
	if prev != claudeq.StatusQueued {
		if b, err := h.Queue.Stashed(ctx, p.ID); err == nil && b != nil {
			var r upstream.Response
			if json.Unmarshal(b, &r) == nil {
				resp, node = &r, "stash"
			}
		}
	}
	if resp == nil {
		resp, node, err = h.Upstream.Call(ctx, p.Request)
		if err != nil {
			n, _ := asynq.GetRetryCount(ctx)
			max, _ := asynq.GetMaxRetry(ctx)
			if upstream.Temporary(err) && n < max && ctx.Err() == nil {
				log.Warn("upstream call failed; will retry", "node", node, "attempt", n+1, "err", err)
				if qerr := h.Queue.Requeue(context.WithoutCancel(ctx), p.ID, claudeq.ErrorMessage(err)); qerr != nil {
					return Infra(qerr)
				}
				return err
			}
			log.Warn("job failed", "node", node, "attempt", n+1, "err", err)
			return h.finish(ctx, &p, started, prev != claudeq.StatusQueued, claudeq.StatusFailed, nil, node, &claudeq.JobError{
				Type: claudeq.ErrorKind(err).String(), Message: claudeq.ErrorMessage(err)})
		}
	}
	return h.finish(ctx, &p, started, prev != claudeq.StatusQueued, claudeq.StatusSucceeded, resp, node, nil)
}

// finish writes the terminal record (durably, through group commit), then
// the live state and the cache. Any store failure retries the task without
// using up a retry; the stash keeps the answer for that retry.
func (h *JobHandler) finish(ctx context.Context, p *JobPayload, started time.Time, rerun bool, status claudeq.Status, resp *upstream.Response, node string, jerr *claudeq.JobError) error {
	ctx = context.WithoutCancel(ctx) // finishing must not be cut short by the job's own deadline
	now := h.Now().UTC()
	n, _ := asynq.GetRetryCount(ctx)
	j := &claudeq.Job{
		ID: p.ID, Kind: p.Kind, Status: status, UserID: p.UserID, Department: p.Department, KeyID: p.KeyID,
		SessionID: p.SessionID, Metadata: p.Metadata, RequestHash: p.RequestHash, Error: jerr,
		Attempts: n + 1, CreatedAt: p.CreatedAt.UTC(), FinishedAt: &now, WebhookURL: p.WebhookURL,
	}
	var req struct {
		Model    string          `json:"model"`
		Messages json.RawMessage `json:"messages"`
	}
	_ = json.Unmarshal(p.Request, &req)
	j.Model = req.Model
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
		rec.Turn = &store.Turn{
			JobID: p.ID, UserID: p.UserID, SessionID: p.SessionID, Model: j.Model,
			Messages: turnMessages(req.Messages, resp.Raw, p.SessionID != "", p.ID, now),
			Tokens:   u.Total(), At: now, Rerun: rerun,
		}
	}
	if err := h.Committer.Commit(ctx, rec); err != nil {
		if resp != nil {
			if b, jerr := json.Marshal(resp); jerr == nil {
				ttl := h.StashTTL
				if ttl <= 0 {
					ttl = 24 * time.Hour
				}
				_ = h.Queue.Stash(ctx, p.ID, b, ttl)
			}
		}
		h.Logger.Warn("storing job result failed; will retry", "job_id", p.ID, "err", err)
		return Infra(err)
	}
	if err := h.Notifier.Notify(ctx, j, 0); err != nil {
		h.Logger.Warn("enqueueing the webhook failed; will retry", "job_id", p.ID, "err", err)
		return Infra(err)
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
		return Infra(err)
	}
	if node == "stash" {
		_ = h.Queue.Unstash(ctx, p.ID)
	}
	h.Logger.Info("job finished", "job_id", p.ID, "status", status, "node", node)
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
		out = append(out, store.Message{Role: m.Role, Content: Text(m.Content), JobID: jobID, At: at})
	}
	var a struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(answer, &a)
	out = append(out, store.Message{Role: "assistant", Content: Text(a.Content), JobID: jobID, At: at})
	return out
}

// Text returns the text of a Messages API content value: the string itself,
// or the text blocks of an array joined, with other blocks named in
// brackets.
func Text(content json.RawMessage) string {
	content = bytes.TrimSpace(content)
	if len(content) == 0 {
		return ""
	}
	if content[0] == '"' {
		var s string
		_ = json.Unmarshal(content, &s)
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(content, &blocks); err != nil {
		return ""
	}
	var b strings.Builder
	for i, bl := range blocks {
		if i > 0 {
			b.WriteString("\n")
		}
		if bl.Type == "text" {
			b.WriteString(bl.Text)
		} else {
			b.WriteString("[" + bl.Type + "]")
		}
	}
	return b.String()
}

// ErrNoUpstream is returned when no node can serve a request.
var ErrNoUpstream = errors.New("no healthy upstream")

// Single is an Upstream of one node.
type Single struct{ Client *upstream.Client }

// Call implements Upstream.
func (s Single) Call(ctx context.Context, body []byte) (*upstream.Response, string, error) {
	r, err := s.Client.Messages(ctx, body)
	return r, s.Client.Name(), err
}
