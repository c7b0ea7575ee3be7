package webhook_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/webhook"
	sw "github.com/claudeq/claudeq/pkg/webhook"

	"github.com/claudeq/claudeq/internal/testport"
)

// dedupReceiver verifies signatures and keeps every raw delivery by
// webhook-id. For the ids in failOnce it processes the first delivery and
// then answers 500 (a receiver that crashed before acknowledging), for
// those in throttleOnce it answers 429 once: both are delivered again.
type dedupReceiver struct {
	verifier     *sw.Verifier
	failOnce     map[string]bool
	throttleOnce map[string]bool

	mu  sync.Mutex
	raw map[string]int // webhook-id → deliveries that verified
	bad int
}

func (r *dedupReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 1<<20))
	if err != nil || r.verifier.Verify(req.Header, body) != nil {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	id := req.Header.Get(sw.HeaderID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.throttleOnce[id] {
		delete(r.throttleOnce, id)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	r.raw[id]++
	if r.failOnce[id] {
		delete(r.failOnce, id)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *dedupReceiver) counts() (unique, raw int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.raw {
		raw += n
	}
	return len(r.raw), raw
}

// TestDeliveryThroughQueue runs webhook:deliver tasks on a real asynq
// server over a real Redis, with the schedule compressed: the receiver is
// down (connection refused) for a stretch, then up but flaky. Every event
// arrives, each attempt is recorded, and receivers that dedupe by
// webhook-id see every event once.
func TestDeliveryThroughQueue(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t).Client(t)
	ctx := t.Context()
	secrets := webhook.NewSecretStore(rdb, nil)
	mine, err := secrets.Secrets(ctx, "user_1")
	require.NoError(t, err)
	verifier, err := sw.NewVerifier(mine...)
	require.NoError(t, err)

	// A port below the ephemeral range (testport), so that nothing can
	// take it while the receiver is down: connections are refused.
	addr := testport.Addr(t)

	schedule := webhook.DefaultSchedule.Scale(1.0 / 1000) // 0, 5ms, 300ms, 1.8s, 7.2s, 18s, 36s, 36s
	rec := &memRecorder{}
	h := &webhook.Handler{
		Secrets:   secrets.Secrets,
		Deliverer: webhook.NewDeliverer(config(t, "http://127.0.0.0/8", nil)),
		Recorder:  rec,
		Schedule:  schedule,
		Logger:    slog.New(slog.DiscardHandler),
	}
	mux := asynq.NewServeMux()
	mux.Handle(webhook.TypeDeliver, h)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 8,
		Queues:      map[string]int{queue.Webhooks: 1},
		// What the worker does: webhook tasks take their delay from the
		// handler's error.
		RetryDelayFunc: func(n int, err error, task *asynq.Task) time.Duration {
			if task.Type() == webhook.TypeDeliver {
				return webhook.RetryDelay(n, err, task)
			}
			return time.Second
		},
		IsFailure:                func(err error) bool { return !webhook.IsInfra(err) },
		TaskCheckInterval:        20 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		LogLevel:                 asynq.FatalLevel,
	})
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)

	const n = 24
	client := asynq.NewClientFromRedisClient(rdb)
	ids := make([]string, n)
	for i := range n {
		job := fmt.Sprintf("job_%02d", i)
		ids[i] = webhook.DeliveryID(job, webhook.EventJobSucceeded)
		body, err := webhook.EncodeJobEvent(webhook.EventJobSucceeded, time.Now(), webhook.JobData{
			JobID: job, Status: claudeq.StatusSucceeded, ResultURL: "https://gw.example/api/claude/jobs/" + job,
		}, 0)
		require.NoError(t, err)
		task, err := webhook.NewDeliverTask(webhook.Payload{DeliveryID: ids[i], JobID: job, UserID: "user_1", URL: "http://" + addr + "/hooks", Event: body},
			asynq.MaxRetry(schedule.MaxRetry()))
		require.NoError(t, err)
		_, err = client.EnqueueContext(ctx, task)
		require.NoError(t, err)
		if i == 0 {
			// A worker that re-runs and enqueues the same event again.
			_, err = client.EnqueueContext(ctx, task)
			require.ErrorIs(t, err, asynq.ErrTaskIDConflict)
		}
	}

	// Down for a stretch: until every event failed twice.
	require.Eventually(t, func() bool {
		refused := map[string]int{}
		for _, a := range rec.attempts() {
			if a.Status == 0 {
				refused[a.DeliveryID]++
			}
		}
		for _, id := range ids {
			if refused[id] < 2 {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "every event is attempted while the receiver is down")

	// Up, but flaky.
	rcv := &dedupReceiver{verifier: verifier, failOnce: map[string]bool{}, throttleOnce: map[string]bool{}, raw: map[string]int{}}
	for i, id := range ids {
		switch i % 6 {
		case 1:
			rcv.failOnce[id] = true
		case 4:
			rcv.throttleOnce[id] = true
		}
	}
	l := testport.Listen(t, addr)
	hs := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close() })

	inspector := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		unique, _ := rcv.counts()
		if unique < n {
			return false
		}
		qi, err := inspector.GetQueueInfo(queue.Webhooks)
		return err == nil && qi.Pending+qi.Active+qi.Scheduled+qi.Retry+qi.Archived == 0
	}, 30*time.Second, 50*time.Millisecond, "every event arrives and every task completes")

	unique, raw := rcv.counts()
	require.Equal(t, n, unique)
	require.Zero(t, rcv.bad, "every delivery verified")
	require.GreaterOrEqual(t, raw-unique, n/6, "the events answered 500 after processing came again")
	t.Logf("events: %d, raw deliveries that verified: %d, unique webhook-ids: %d, raw duplicates: %d", n, raw, unique, raw-unique)

	// Every attempt was recorded, numbered 1, 2, … per delivery, the last
	// one a success.
	by := map[string][]webhook.Attempt{}
	for _, a := range rec.attempts() {
		by[a.DeliveryID] = append(by[a.DeliveryID], a)
	}
	total := 0
	for _, id := range ids {
		as := by[id]
		require.GreaterOrEqual(t, len(as), 3, id)
		for i, a := range as {
			require.Equal(t, i+1, a.Attempt, id)
		}
		require.Equal(t, http.StatusNoContent, as[len(as)-1].Status, id)
		require.Empty(t, as[len(as)-1].Error)
		require.Zero(t, as[0].Status, "refused while down")
		require.NotEmpty(t, as[0].Error)
		total += len(as)
	}
	t.Logf("attempts recorded: %d (%.1f per event)", total, float64(total)/n)
}
