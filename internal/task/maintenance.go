package task

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/claudeq/claudeq/internal/job"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// Sweeper deletes what is past retention.
type Sweeper interface {
	DeleteJobsFinishedBefore(ctx context.Context, t time.Time) (int64, error)
	DeleteConversationsUpdatedBefore(ctx context.Context, t time.Time) (int64, error)
	DeleteStashesBefore(ctx context.Context, t time.Time) (int64, error)
}

// RetentionHandler runs maintenance:retention tasks: FerretDB has no TTL
// indexes, so expired records are swept by a periodic task.
type RetentionHandler struct {
	Store     Sweeper
	Retention time.Duration
	Now       func() time.Time
	Logger    *slog.Logger
}

// ProcessTask implements asynq.Handler.
func (h *RetentionHandler) ProcessTask(ctx context.Context, _ *asynq.Task) error {
	cut := h.Now().Add(-h.Retention)
	jobs, err := h.Store.DeleteJobsFinishedBefore(ctx, cut)
	if err != nil {
		return job.Infra(fmt.Errorf("retention: jobs: %w", err))
	}
	convs, err := h.Store.DeleteConversationsUpdatedBefore(ctx, cut)
	if err != nil {
		return job.Infra(fmt.Errorf("retention: conversations: %w", err))
	}
	// Answers kept for a retry live at most as long as a job can wait.
	stashes, err := h.Store.DeleteStashesBefore(ctx, h.Now().Add(-job.StashRetention))
	if err != nil {
		return job.Infra(fmt.Errorf("retention: stash: %w", err))
	}
	h.Logger.Info("retention sweep", "before", cut, "jobs_deleted", jobs, "conversations_deleted", convs, "stashes_deleted", stashes)
	return nil
}

// PeriodTaskID is the TaskID of a periodic task for the period containing t,
// so that any number of schedulers enqueue it once per period.
func PeriodTaskID(typ string, t time.Time, every time.Duration) string {
	return fmt.Sprintf("%s:%d", typ, t.UnixNano()/int64(every))
}

// Prober checks one upstream node (upstream.Fleet).
type Prober interface {
	Probe(ctx context.Context, node string) error
}

// ProbePayload names the node an upstream:probe task checks.
type ProbePayload struct {
	Node string `json:"node"`
}

// ProbeHandler runs upstream:probe tasks: the active health check of one
// node (GET /v1/models, which costs nothing). The result lands in the
// shared health state; a failed probe is not an error of the task.
type ProbeHandler struct {
	Fleet  Prober
	Logger *slog.Logger
}

// ProcessTask implements asynq.Handler.
func (h *ProbeHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p ProbePayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Node == "" {
		return fmt.Errorf("upstream:probe: bad payload: %w", asynq.SkipRetry)
	}
	if err := h.Fleet.Probe(ctx, p.Node); err != nil {
		h.Logger.Warn("upstream probe failed", "node", p.Node, "err", err)
	}
	return nil
}
