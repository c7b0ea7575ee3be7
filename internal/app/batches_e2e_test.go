package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/queue"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/task"
)

// The Message Batches API, driven with the official Go SDK as an Anthropic
// customer's code would, pointed at claudeq with a claudeq key.

func batchClient(base, key string) anthropic.Client {
	return anthropic.NewClient(option.WithBaseURL(base), option.WithAPIKey(key),
		option.WithoutEnvironmentDefaults(), option.WithMaxRetries(0))
}

func textRequest(customID, model, prompt string, maxTokens int64) anthropic.MessageBatchNewParamsRequest {
	return anthropic.MessageBatchNewParamsRequest{CustomID: customID, Params: anthropic.MessageBatchNewParamsRequestParams{
		Model: anthropic.Model(model), MaxTokens: maxTokens,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	}}
}

// waitBatch polls a batch until it has ended.
func waitBatch(t *testing.T, c anthropic.Client, id string, within time.Duration) *anthropic.MessageBatch {
	t.Helper()
	var last *anthropic.MessageBatch
	require.Eventually(t, func() bool {
		b, err := c.Messages.Batches.Get(context.Background(), id, anthropic.MessageBatchGetParams{})
		require.NoError(t, err)
		last = b
		return b.ProcessingStatus == anthropic.MessageBatchProcessingStatusEnded
	}, within, 100*time.Millisecond, "batch %s did not end; last: %+v", id, last)
	return last
}

// batchResults reads a batch's results through the SDK, by custom id.
func batchResults(t *testing.T, c anthropic.Client, id string) map[string]anthropic.MessageBatchIndividualResponse {
	t.Helper()
	s := c.Messages.Batches.ResultsStreaming(context.Background(), id, anthropic.MessageBatchResultsParams{})
	out := map[string]anthropic.MessageBatchIndividualResponse{}
	for s.Next() {
		r := s.Current()
		_, dup := out[r.CustomID]
		require.False(t, dup, "one line per request: %s twice", r.CustomID)
		out[r.CustomID] = r
	}
	require.NoError(t, s.Err())
	return out
}

func byType(rs map[string]anthropic.MessageBatchIndividualResponse) map[string][]string {
	out := map[string][]string{}
	for id, r := range rs {
		out[r.Result.Type] = append(out[r.Result.Type], id)
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

func apiStatus(t *testing.T, err error) int {
	t.Helper()
	var ae *anthropic.Error
	require.True(t, errors.As(err, &ae), "want an API error, got %v", err)
	return ae.StatusCode
}

// requireBatchBilledOnce checks the accounting of an ended batch: one
// record per request in its results, one ledger entry (at the batch price)
// per succeeded request and none for the others, and the budgets' spent
// equal to the ledger with nothing left reserved.
func (e *testEnv) requireBatchBilledOnce(t *testing.T, batchID string, succeeded, notBilled []string) {
	t.Helper()
	ctx := context.Background()
	require.EqualValues(t, len(succeeded)+len(notBilled), e.count(store.BatchItemsCollection(batchID), bson.D{}), "one record per request")
	// One read of the ledger (a $in of thousands of ids is slow on FerretDB).
	cur, err := e.db.Collection("ledger").Find(ctx, bson.D{})
	require.NoError(t, err)
	var entries []store.LedgerEntry
	require.NoError(t, cur.All(ctx, &entries))
	billed := map[string]int{}
	for _, en := range entries {
		if b, cid, ok := claudeq.SplitBatchItemID(en.JobID); ok && b == batchID {
			require.True(t, en.Batch, "%s billed as a batch call", en.JobID)
			billed[cid]++
		}
	}
	for _, cid := range succeeded {
		require.Equal(t, 1, billed[cid], "%s billed once", cid)
	}
	for _, cid := range notBilled {
		require.Zero(t, billed[cid], "%s is not billed", cid)
	}
	require.Len(t, billed, len(succeeded), "only successes are billed")
	tot, err := e.store.LedgerSum(ctx, store.LedgerFilter{})
	require.NoError(t, err)
	q, err := quota.New(e.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := q.Status(ctx, "alice", "research")
		if err != nil {
			return false
		}
		for _, s := range st {
			if int64(s.Spent) != tot.CostMicros || s.Reserved != 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "spent equals the ledger (%d micro-USD) on every budget and nothing stays reserved", tot.CostMicros)
}

func TestBatchLifecycleThroughTheSDK(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rcv := newReceiver(t)
	base := e.all("CLAUDEQ_WEBHOOK_ALLOW", "http://127.0.0.1", "CLAUDEQ_PUBLIC_URL", "https://claudeq.example",
		"CLAUDEQ_QUOTA_USER_DAILY_USD", "5", "CLAUDEQ_WEBHOOK_SCHEDULE", "0,1s,2s")
	key := e.createKey(t, store.APIKey{UserID: "alice", Department: "research", WebhookURL: rcv.url,
		Scopes: []string{claudeq.ScopeJobs, claudeq.ScopeBatches}})
	var secrets []string
	for _, s := range do(t, "GET", base+"/api/claude/webhooks/secret", key, nil).json(t)["secrets"].([]any) {
		secrets = append(secrets, s.(string))
	}
	rcv.setSecrets(secrets...)
	c := batchClient(base, key)

	reqs := make([]anthropic.MessageBatchNewParamsRequest, 0, 23)
	for i := range 20 {
		reqs = append(reqs, textRequest(fmt.Sprintf("ok-%02d", i), "claude-haiku-5-5", fmt.Sprintf("Question number %d?", i), 200))
	}
	// Invalid params do not refuse the batch: those requests end errored,
	// as Anthropic validates params asynchronously.
	reqs = append(reqs, textRequest("bad-max", "claude-haiku-5-5", "x", 0))
	stop := textRequest("bad-stop", "claude-haiku-5-5", "x", 10)
	stop.Params.StopSequences = []string{""}
	reqs = append(reqs, stop, textRequest("bad-model", "claude-nonexistent-9", "x", 10))
	// And the upstream refuses one of the valid ones.
	e.sim.Script("400")

	created, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(created.ID, "msgbatch_"), created.ID)
	require.Equal(t, "message_batch", string(created.Type))
	require.EqualValues(t, 23, created.RequestCounts.Processing+created.RequestCounts.Succeeded+created.RequestCounts.Errored)
	require.GreaterOrEqual(t, created.RequestCounts.Errored, int64(3))
	require.Equal(t, 24*time.Hour, created.ExpiresAt.Sub(created.CreatedAt))
	require.True(t, created.CancelInitiatedAt.IsZero())
	require.True(t, created.ArchivedAt.IsZero())

	b := waitBatch(t, c, created.ID, 60*time.Second)
	require.Equal(t, anthropic.MessageBatchRequestCounts{Succeeded: 19, Errored: 4}.Succeeded, b.RequestCounts.Succeeded)
	require.EqualValues(t, 4, b.RequestCounts.Errored)
	require.Zero(t, b.RequestCounts.Processing+b.RequestCounts.Canceled+b.RequestCounts.Expired)
	require.Equal(t, "https://claudeq.example/v1/messages/batches/"+b.ID+"/results", b.ResultsURL)
	require.False(t, b.EndedAt.IsZero())
	require.False(t, b.EndedAt.Before(b.CreatedAt))

	rs := batchResults(t, c, b.ID)
	require.Len(t, rs, 23)
	types := byType(rs)
	require.Len(t, types["succeeded"], 19)
	require.Len(t, types["errored"], 4)
	require.Subset(t, types["errored"], []string{"bad-max", "bad-stop", "bad-model"})
	for _, id := range types["succeeded"] {
		m := rs[id].Result.AsSucceeded().Message
		require.Equal(t, anthropic.Model("claude-haiku-5-5"), m.Model)
		require.NotEmpty(t, m.Content[0].Text)
		require.Positive(t, m.Usage.OutputTokens)
		require.LessOrEqual(t, m.Usage.OutputTokens, int64(200))
	}
	errOf := func(id string) (string, string) {
		e := rs[id].Result.AsErrored().Error
		require.Equal(t, "error", string(e.Type))
		return e.Error.Type, e.Error.Message
	}
	typ, msg := errOf("bad-max")
	require.Equal(t, "invalid_request_error", typ)
	require.Contains(t, msg, "max_tokens")
	typ, msg = errOf("bad-stop")
	require.Equal(t, "invalid_request_error", typ)
	require.Contains(t, msg, "stop_sequences.0")
	_, msg = errOf("bad-model")
	require.Contains(t, msg, "is not served here")
	var upstreamErrored string
	for _, id := range types["errored"] {
		if strings.HasPrefix(id, "ok-") {
			upstreamErrored = id
		}
	}
	require.NotEmpty(t, upstreamErrored, "the request the upstream refused")
	typ, _ = errOf(upstreamErrored)
	require.Equal(t, "invalid_request_error", typ)

	// Billed once each, at the batch price (half the list price).
	e.requireBatchBilledOnce(t, b.ID, types["succeeded"], types["errored"])
	cur, err := e.db.Collection("ledger").Find(context.Background(), bson.D{{Key: "batch", Value: true}})
	require.NoError(t, err)
	var entries []store.LedgerEntry
	require.NoError(t, cur.All(context.Background(), &entries))
	require.Len(t, entries, 19)
	table := pricing.Default()
	for _, en := range entries {
		want, _, err := table.Cost(en.Model, en.Usage, true, en.At)
		require.NoError(t, err)
		full, _, err := table.Cost(en.Model, en.Usage, false, en.At)
		require.NoError(t, err)
		require.EqualValues(t, want, en.CostMicros)
		require.Less(t, en.CostMicros, int64(full))
	}

	// The batch.ended webhook, once, to the key's default webhook.
	require.Eventually(t, func() bool { u, _, _, _ := rcv.events(); return u == 1 }, 30*time.Second, 50*time.Millisecond)
	_, _, bad, evs := rcv.events()
	require.Zero(t, bad)
	for _, ev := range evs {
		require.Equal(t, "batch.ended", ev["type"])
		d := ev["data"].(map[string]any)
		require.Equal(t, b.ID, d["batch_id"])
		require.Equal(t, "ended", d["processing_status"])
		require.EqualValues(t, 19, d["request_counts"].(map[string]any)["succeeded"])
		require.Equal(t, b.ResultsURL, d["results_url"])
	}

	page, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{Limit: anthropic.Int(5)})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	require.Equal(t, b.ID, page.Data[0].ID)
	require.Equal(t, b.RequestCounts.Succeeded, page.Data[0].RequestCounts.Succeeded)
	require.False(t, page.HasMore)

	del, err := c.Messages.Batches.Delete(context.Background(), b.ID, anthropic.MessageBatchDeleteParams{})
	require.NoError(t, err)
	require.Equal(t, b.ID, del.ID)
	require.Equal(t, "message_batch_deleted", string(del.Type))
	_, err = c.Messages.Batches.Get(context.Background(), b.ID, anthropic.MessageBatchGetParams{})
	require.Equal(t, http.StatusNotFound, apiStatus(t, err))
	require.EqualValues(t, 0, e.count(store.BatchItemsCollection(b.ID), bson.D{}), "results deleted")
	require.EqualValues(t, 19, e.count("ledger", bson.D{}), "the bills stay")
}

func TestBatchCancelMidway(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.SetLatency(200*time.Millisecond, 0)
	base := e.all("CLAUDEQ_WORKER_CONCURRENCY", "2", "CLAUDEQ_QUOTA_USER_DAILY_USD", "5")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	const n = 60
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = textRequest(fmt.Sprintf("r%d", i), "claude-sonnet-5-5", fmt.Sprintf("Cancel me %d", i), 300)
	}
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cur, err := c.Messages.Batches.Get(context.Background(), b.ID, anthropic.MessageBatchGetParams{})
		return err == nil && cur.RequestCounts.Succeeded >= 3
	}, 30*time.Second, 20*time.Millisecond)

	// A running batch cannot be deleted.
	_, err = c.Messages.Batches.Delete(context.Background(), b.ID, anthropic.MessageBatchDeleteParams{})
	require.Equal(t, http.StatusBadRequest, apiStatus(t, err))
	require.Contains(t, err.Error(), "cancel it first")

	canceled, err := c.Messages.Batches.Cancel(context.Background(), b.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err)
	require.Contains(t, []anthropic.MessageBatchProcessingStatus{anthropic.MessageBatchProcessingStatusCanceling,
		anthropic.MessageBatchProcessingStatusEnded}, canceled.ProcessingStatus)
	require.False(t, canceled.CancelInitiatedAt.IsZero())
	again, err := c.Messages.Batches.Cancel(context.Background(), b.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err, "canceling twice is harmless")
	require.Equal(t, canceled.CancelInitiatedAt, again.CancelInitiatedAt)

	ended := waitBatch(t, c, b.ID, 30*time.Second)
	counts := ended.RequestCounts
	require.EqualValues(t, n, counts.Succeeded+counts.Canceled, "%+v", counts)
	require.Zero(t, counts.Errored+counts.Expired+counts.Processing)
	require.Greater(t, counts.Canceled, int64(n/2), "most were still queued: %+v", counts)
	require.False(t, ended.CancelInitiatedAt.IsZero())

	rs := batchResults(t, c, b.ID)
	require.Len(t, rs, n)
	types := byType(rs)
	require.Len(t, types["succeeded"], int(counts.Succeeded))
	require.Len(t, types["canceled"], int(counts.Canceled))
	// Canceled requests never reached the upstream and are not billed.
	require.EqualValues(t, counts.Succeeded, e.sim.Stats().Succeeded)
	e.requireBatchBilledOnce(t, b.ID, types["succeeded"], types["canceled"])
}

func TestBatchRefusedWhenItsWorstCaseExceedsTheBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all("CLAUDEQ_QUOTA_USER_DAILY_USD", "0.05", "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_QUOTA_RECONCILE_AFTER", "1s")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	opus := func(n int, maxTokens int64) anthropic.MessageBatchNewParams {
		p := anthropic.MessageBatchNewParams{}
		for i := range n {
			p.Requests = append(p.Requests, textRequest(fmt.Sprintf("q%d", i), "opus", "Think hard.", maxTokens))
		}
		return p
	}
	// Ten opus requests of 4,000 tokens: at the batch price ($10 per
	// million output tokens) each may cost $0.04, together $0.40 > $0.05.
	body, _ := json.Marshal(opus(10, 4000))
	r := do(t, "POST", base+"/v1/messages/batches", key, body)
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "quota_exceeded", "batch refused: its 10 requests may cost up to $0.40")
	require.Equal(t, "false", r.Header.Get("x-should-retry"))
	q := r.json(t)["error"].(map[string]any)["quota"].(map[string]any)
	require.Equal(t, "user", q["scope"])
	require.InDelta(t, 0.40, q["needed_usd"], 0.01)
	_, err := c.Messages.Batches.New(context.Background(), opus(10, 4000))
	require.Equal(t, http.StatusTooManyRequests, apiStatus(t, err))

	// Nothing was reserved or created by the refusals.
	qs := do(t, "GET", base+"/api/claude/quota", key, nil)
	require.Equal(t, http.StatusForbidden, qs.Status, "the key has the batches scope only")
	qt, err := quota.New(e.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	st, err := qt.Status(context.Background(), "alice", "research")
	require.NoError(t, err)
	require.Zero(t, st[0].Reserved)
	page, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Data)

	// A batch whose worst case fits ($0.03) is accepted and holds its
	// reservation while it runs, so a second one that would overshoot the
	// budget together with it is refused. The reconciler, which releases
	// reservations older than 1s whose job is gone, leaves a running
	// batch's alone.
	e.sim.SetLatency(5*time.Second, 0)
	first, err := c.Messages.Batches.New(context.Background(), opus(3, 1000))
	require.NoError(t, err)
	insp := asynqInspector(t, e)
	require.Eventually(t, func() bool {
		tasks, _ := insp.ListCompletedTasks(queue.Critical)
		for _, ti := range tasks {
			if ti.Type == task.TypeReconcile && ti.CompletedAt.After(first.CreatedAt.Add(1500*time.Millisecond)) {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "a reconcile pass ran while the batch's reservation was stale")
	_, err = c.Messages.Batches.New(context.Background(), opus(3, 1000))
	require.Equal(t, http.StatusTooManyRequests, apiStatus(t, err))
	waitBatch(t, c, first.ID, 60*time.Second)
	st, err = qt.Status(context.Background(), "alice", "research")
	require.NoError(t, err)
	require.Zero(t, st[0].Reserved, "what the batch did not use is given back")
	require.LessOrEqual(t, int64(st[0].Spent), int64(50_000))
}

func TestBatchPartialResultsWhileItRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.SetLatency(100*time.Millisecond, 0)
	base := e.all("CLAUDEQ_WORKER_CONCURRENCY", "2")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	const n = 40
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = textRequest(fmt.Sprintf("p%d", i), "haiku", fmt.Sprintf("Partial %d", i), 50)
	}
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	url := base + "/v1/messages/batches/" + b.ID + "/results"

	r := do(t, "GET", url, key, nil)
	require.Equal(t, http.StatusBadRequest, r.Status)
	requireErrorShape(t, r, "invalid_request_error", "?partial=true")

	var lines []map[string]any
	require.Eventually(t, func() bool {
		r := do(t, "GET", url+"?partial=true", key, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		lines = jsonLines(t, r.Body)
		return len(lines) >= 5 && r.Header.Get("X-Claudeq-Batch-Status") == "in_progress"
	}, 30*time.Second, 50*time.Millisecond)
	require.Less(t, len(lines), n)
	for _, l := range lines {
		require.Equal(t, "succeeded", l["result"].(map[string]any)["type"])
		require.True(t, strings.HasPrefix(l["custom_id"].(string), "p"))
	}
	waitBatch(t, c, b.ID, 60*time.Second)
	r = do(t, "GET", url, key, nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "application/x-jsonl", r.Header.Get("Content-Type"))
	require.Len(t, jsonLines(t, r.Body), n)
}

func jsonLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "%s", sc.Bytes())
		out = append(out, m)
	}
	return out
}

func TestBatchExpiresWhatIsNotDoneInTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.SetLatency(300*time.Millisecond, 0)
	base := e.all("CLAUDEQ_WORKER_CONCURRENCY", "1", "CLAUDEQ_BATCH_EXPIRY", "2s", "CLAUDEQ_BATCH_SWEEP_INTERVAL", "500ms",
		"CLAUDEQ_QUOTA_USER_DAILY_USD", "5")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	const n = 30
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = textRequest(fmt.Sprintf("x%d", i), "haiku", fmt.Sprintf("Slow %d", i), 50)
	}
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, b.ExpiresAt.Sub(b.CreatedAt))
	ended := waitBatch(t, c, b.ID, 30*time.Second)
	counts := ended.RequestCounts
	require.EqualValues(t, n, counts.Succeeded+counts.Expired, "%+v", counts)
	require.Positive(t, counts.Succeeded)
	require.Greater(t, counts.Expired, int64(n/2), "%+v", counts)
	require.False(t, ended.EndedAt.Before(ended.ExpiresAt), "ended by the expiry")
	rs := batchResults(t, c, b.ID)
	types := byType(rs)
	require.Len(t, types["expired"], int(counts.Expired))
	e.requireBatchBilledOnce(t, b.ID, types["succeeded"], types["expired"])
}

func TestBatchLimitsAndErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all("CLAUDEQ_BATCH_MAX_REQUESTS", "5", "CLAUDEQ_BATCH_MAX_BYTES", "4096")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	url := base + "/v1/messages/batches"
	req := func(id string) map[string]any {
		return map[string]any{"custom_id": id, "params": map[string]any{"model": "haiku", "max_tokens": 10,
			"messages": []map[string]any{{"role": "user", "content": "hi"}}}}
	}
	reqs := func(ids ...string) map[string]any {
		out := []any{}
		for _, id := range ids {
			out = append(out, req(id))
		}
		return map[string]any{"requests": out}
	}
	for _, tc := range []struct {
		name   string
		body   any
		status int
		typ    string
		msg    string
	}{
		{"too many requests", reqs("a", "b", "c", "d", "e", "f"), 400, "invalid_request_error", "at most 5 requests"},
		{"too many bytes", map[string]any{"requests": []any{map[string]any{"custom_id": "a", "params": map[string]any{
			"model": "haiku", "max_tokens": 10, "messages": []map[string]any{{"role": "user", "content": strings.Repeat("x", 5000)}}}}}},
			413, "request_too_large", "at most 4096 bytes"},
		{"bad custom_id", reqs("ok", "not ok!"), 400, "invalid_request_error", `requests.1.custom_id: "not ok!" must be 1 to 64 characters`},
		{"long custom_id", reqs(strings.Repeat("a", 65)), 400, "invalid_request_error", "must be 1 to 64 characters"},
		{"empty custom_id", reqs(""), 400, "invalid_request_error", "must be 1 to 64 characters"},
		{"duplicate custom_id", reqs("a", "b", "a"), 400, "invalid_request_error", `requests.2.custom_id: "a" is used more than once in this batch (also requests.0)`},
		{"no requests", map[string]any{"requests": []any{}}, 400, "invalid_request_error", "at least one request"},
		{"no requests field", map[string]any{}, 400, "invalid_request_error", "requests: required"},
		{"unknown field", map[string]any{"requests": []any{req("a")}, "extra": 1}, 400, "invalid_request_error", "extra: unknown field"},
		{"missing params", map[string]any{"requests": []any{map[string]any{"custom_id": "a"}}}, 400, "invalid_request_error", "requests.0.params: required"},
		{"missing custom_id", map[string]any{"requests": []any{map[string]any{"params": map[string]any{}}}}, 400, "invalid_request_error", "requests.0.custom_id: required"},
		{"malformed", `{"requests": [`, 400, "invalid_request_error", "malformed JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", url, key, tc.body)
			require.Equal(t, tc.status, r.Status, "%s", r.Body)
			requireErrorShape(t, r, tc.typ, tc.msg)
		})
	}
	r := do(t, "POST", url, key, "{}", "Content-Type", "text/plain")
	require.Equal(t, http.StatusUnsupportedMediaType, r.Status)

	jobsOnly, _ := e.key("alice", "research", claudeq.ScopeJobs)
	r = do(t, "POST", url, jobsOnly, reqs("a"))
	require.Equal(t, http.StatusForbidden, r.Status)
	requireErrorShape(t, r, "permission_error", `lacks the "batches" scope`)
	r = do(t, "GET", url, "", nil)
	require.Equal(t, http.StatusUnauthorized, r.Status)

	// Five requests is the limit: accepted. Another user cannot see it.
	r = do(t, "POST", url, key, reqs("a", "b", "c", "d", "e"))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	id := r.json(t)["id"].(string)
	mallory, _ := e.key("mallory", "research", claudeq.ScopeBatches)
	for _, path := range []string{"/" + id, "/" + id + "/results"} {
		r = do(t, "GET", url+path, mallory, nil)
		require.Equal(t, http.StatusNotFound, r.Status)
		requireErrorShape(t, r, "not_found_error", id)
	}
	r = do(t, "POST", url+"/"+id+"/cancel", mallory, nil)
	require.Equal(t, http.StatusNotFound, r.Status)
	r = do(t, "GET", url+"/msgbatch_nope", key, nil)
	require.Equal(t, http.StatusNotFound, r.Status)
	r = do(t, "GET", url+"?limit=0", key, nil)
	require.Equal(t, http.StatusBadRequest, r.Status)
	requireErrorShape(t, r, "invalid_request_error", "limit")
	r = do(t, "GET", url+"?after_id=msgbatch_nope", key, nil)
	require.Equal(t, http.StatusNotFound, r.Status)
}

func TestBatchListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	var ids []string
	for i := range 5 {
		b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{
			Requests: []anthropic.MessageBatchNewParamsRequest{textRequest("only", "haiku", fmt.Sprintf("batch %d", i), 10)}})
		require.NoError(t, err)
		ids = append(ids, b.ID)
		time.Sleep(5 * time.Millisecond) // distinct created_at
	}
	slices.Reverse(ids) // newest first

	page, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{Limit: anthropic.Int(2)})
	require.NoError(t, err)
	require.Equal(t, ids[:2], []string{page.Data[0].ID, page.Data[1].ID})
	require.True(t, page.HasMore)
	require.Equal(t, ids[0], page.FirstID)
	require.Equal(t, ids[1], page.LastID)
	var all []string
	iter := c.Messages.Batches.ListAutoPaging(context.Background(), anthropic.MessageBatchListParams{Limit: anthropic.Int(2)})
	for iter.Next() {
		all = append(all, iter.Current().ID)
	}
	require.NoError(t, iter.Err())
	require.Equal(t, ids, all)

	back, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{BeforeID: anthropic.String(ids[3]), Limit: anthropic.Int(2)})
	require.NoError(t, err)
	require.Equal(t, []string{ids[1], ids[2]}, []string{back.Data[0].ID, back.Data[1].ID})
	require.True(t, back.HasMore)
}

// TestLargeBatch runs a batch of 2,000 requests (CLAUDEQ_TEST_BATCH_SIZE
// to change it; docs/batches.md has the numbers of 10,000) end to end and
// logs how long its submit, its processing and its results download took;
// it asserts only what a user sees: every request answered once, billed
// once, the budgets equal to the ledger.
func TestLargeBatch(t *testing.T) {
	t.Parallel()
	n := 2000
	if v := os.Getenv("CLAUDEQ_TEST_BATCH_SIZE"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	e := newEnv(t)
	base := e.all("CLAUDEQ_WORKER_CONCURRENCY", "100", "CLAUDEQ_QUOTA_USER_DAILY_USD", "100")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = textRequest(fmt.Sprintf("item-%05d", i), "haiku", fmt.Sprintf("Summarize item %d in one sentence.", i), 100)
	}
	start := time.Now()
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	submitted := time.Since(start)
	t.Logf("submitted %d requests in %.2fs", n, submitted.Seconds())
	ended := waitBatch(t, c, b.ID, 10*time.Minute)
	finished := time.Since(start)
	t.Logf("ended %.1fs after the submit started", finished.Seconds())
	require.EqualValues(t, n, ended.RequestCounts.Succeeded, "%+v", ended.RequestCounts)

	start = time.Now()
	r := do(t, "GET", base+"/v1/messages/batches/"+b.ID+"/results", key, nil)
	download := time.Since(start)
	require.Equal(t, http.StatusOK, r.Status)
	lines := jsonLines(t, r.Body)
	require.Len(t, lines, n)
	seen := map[string]bool{}
	var ok []string
	for _, l := range lines {
		id := l["custom_id"].(string)
		require.False(t, seen[id])
		seen[id] = true
		require.Equal(t, "succeeded", l["result"].(map[string]any)["type"])
		ok = append(ok, id)
	}
	e.requireBatchBilledOnce(t, b.ID, ok, nil)
	t.Logf("batch of %d: submit %.2fs, ended %.1fs after submit started (%.0f requests/s), results %.1f MB in %.2fs",
		n, submitted.Seconds(), finished.Seconds(), float64(n)/finished.Seconds(), float64(len(r.Body))/1e6, download.Seconds())
}

// TestBatchUnderUpstreamFaults: with 30 % of upstream calls failing (529,
// 500) on two nodes, every request still succeeds through retries, and
// each is billed once. (429s with retry-after would also cool the nodes
// down, and a request can then run out of retries with
// no_healthy_upstream: fleet behaviour that TestThirtyPercentUpstreamFaultsThreeNodes covers.)
func TestBatchUnderUpstreamFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, nodes := e.withNodes(2, sim.Config{FaultRate: 0.3, Faults: []string{"529", "500"}})
	base := e.all("CLAUDEQ_NODES_FILE", nodes, "CLAUDEQ_WORKER_CONCURRENCY", "50", "CLAUDEQ_JOB_MAX_RETRIES", "20",
		"CLAUDEQ_NODE_FAILURES", "1000", "CLAUDEQ_QUOTA_USER_DAILY_USD", "5")
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	const n = 300
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = textRequest(fmt.Sprintf("f%d", i), "sonnet", fmt.Sprintf("Faulty %d", i), 100)
	}
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	ended := waitBatch(t, c, b.ID, 3*time.Minute)
	require.EqualValues(t, n, ended.RequestCounts.Succeeded, "%+v", ended.RequestCounts)
	require.Greater(t, e.totalSimRequests(), int64(n), "faults were retried")
	rs := batchResults(t, c, b.ID)
	e.requireBatchBilledOnce(t, b.ID, byType(rs)["succeeded"], nil)
}

// TestBatchSurvivesKilledWorkerAndRestartedRedis: a worker killed mid-batch
// and a Redis restart (the completion marks of tasks may be lost: they run
// again) still end the batch with every request answered once, counted
// once and billed once.
func TestBatchSurvivesKilledWorkerAndRestartedRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withRedis(redistest.WithAOF(), redistest.WithArgs("--appendfsync", "always")))
	e.sim.SetLatency(300*time.Millisecond, 0)
	a, _ := e.run(app.Roles{API: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_QUOTA_RECONCILE_AFTER", "5s",
		"CLAUDEQ_QUOTA_USER_DAILY_USD", "5")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)

	worker := exec.Command(os.Args[0], "-test.run=^$")
	worker.Env = append(os.Environ(), "CLAUDEQ_E2E_ROLE=worker", "CLAUDEQ_WORKER_CONCURRENCY=20", "CLAUDEQ_QUOTA_USER_DAILY_USD=5")
	for k, v := range e.env {
		worker.Env = append(worker.Env, k+"="+v)
	}
	require.NoError(t, worker.Start())
	t.Cleanup(func() { _ = worker.Process.Kill(); _ = worker.Wait() })

	const n = 150
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = textRequest(fmt.Sprintf("k%d", i), "haiku", fmt.Sprintf("Chaos %d", i), 100)
	}
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.sim.Stats().Succeeded >= 40 }, 60*time.Second, 10*time.Millisecond)
	require.NoError(t, worker.Process.Signal(syscall.SIGKILL))
	_ = worker.Wait()
	e.run(app.Roles{Worker: true}, "CLAUDEQ_WORKER_CONCURRENCY", "20", "CLAUDEQ_QUOTA_USER_DAILY_USD", "5")
	require.Eventually(t, func() bool { return e.sim.Stats().Succeeded >= 90 }, 60*time.Second, 10*time.Millisecond)
	e.redis.Kill()
	time.Sleep(time.Second)
	e.redis.Restart()

	var ended *anthropic.MessageBatch
	require.Eventually(t, func() bool {
		cur, err := c.Messages.Batches.Get(context.Background(), b.ID, anthropic.MessageBatchGetParams{})
		if err != nil {
			return false // the api answers 503 while Redis restarts
		}
		ended = cur
		return cur.ProcessingStatus == anthropic.MessageBatchProcessingStatusEnded
	}, 4*time.Minute, 200*time.Millisecond)
	require.EqualValues(t, n, ended.RequestCounts.Succeeded, "%+v", ended.RequestCounts)
	rs := batchResults(t, c, b.ID)
	require.Len(t, rs, n)
	e.requireBatchBilledOnce(t, b.ID, byType(rs)["succeeded"], nil)
}

// A batch request whose every attempt lost its worker ends errored
// (worker_lost); if one attempt was answered and billed first (its ledger
// entry written, its record not), its part of the batch's reservation is
// settled to that cost, not released, so the budget counters equal the
// ledger once the batch ends.
func TestBatchItemWhoseWorkersAllDiedAfterABilledAttemptIsSettled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	api, _ := e.run(app.Roles{API: true})
	base := "http://" + api.Addr()
	key, _ := e.key("alice", "research", claudeq.ScopeBatches)
	c := batchClient(base, key)
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		textRequest("billed", "claude-haiku-5-5", "Billed, then every worker died", 100),
		textRequest("unbilled", "claude-haiku-5-5", "Never answered, every worker died", 100),
	}})
	require.NoError(t, err)
	rdb := e.redis.Client(t)
	insp := asynqInspector(t, e)
	for _, cid := range []string{"billed", "unbilled"} {
		id := claudeq.BatchItemID(b.ID, cid)
		// What asynq does after the last attempt's worker was killed.
		require.NoError(t, rdb.HSet(context.Background(), "cq:job:"+id, "st", "running").Err())
		require.NoError(t, insp.ArchiveTask("batch", id))
	}
	q, err := quota.New(rdb, quota.Options{})
	require.NoError(t, err)
	billedID := claudeq.BatchItemID(b.ID, "billed")
	cm := e.store.NewCommitter(store.CommitterOptions{})
	require.NoError(t, cm.Commit(context.Background(), store.Record{Ledger: &store.LedgerEntry{ID: billedID, JobID: billedID,
		UserID: "alice", Department: "research", Model: "claude-haiku-5-5", Usage: claudeq.Usage{InputTokens: 10, OutputTokens: 20},
		CostMicros: 1234, Day: q.Day(time.Now()), At: time.Now().UTC(), Batch: true}}))
	cm.Close()
	e.run(app.Roles{Worker: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s")

	ended := waitBatch(t, c, b.ID, time.Minute)
	require.EqualValues(t, 2, ended.RequestCounts.Errored, "%+v", ended.RequestCounts)
	rs := batchResults(t, c, b.ID)
	for _, cid := range []string{"billed", "unbilled"} {
		require.Equal(t, "errored", string(rs[cid].Result.Type), cid)
		require.Contains(t, rs[cid].Result.AsErrored().Error.Error.Message, "worker", cid)
	}
	require.Eventually(t, func() bool {
		st, err := q.Status(context.Background(), "alice", "research")
		require.NoError(t, err)
		for _, s := range st {
			if s.Reserved != 0 || s.Spent != 1234 {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "the billed part settled to its ledger cost, the other released, nothing left reserved")
	require.EqualValues(t, 0, e.sim.Stats().Requests)
}
