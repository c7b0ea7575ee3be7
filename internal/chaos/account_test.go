//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
	"github.com/claudeq/claudeq/internal/webhook"
)

// jobs reads every job record of the cluster (without results).
func (c *cluster) jobs(ctx context.Context) (map[string]*claudeq.Job, error) {
	cur, err := c.db.Collection("jobs").Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "result", Value: 0}}))
	if err != nil {
		return nil, err
	}
	var all []*claudeq.Job
	if err := cur.All(ctx, &all); err != nil {
		return nil, err
	}
	out := make(map[string]*claudeq.Job, len(all))
	for _, j := range all {
		out[j.ID] = j
	}
	return out, nil
}

// waitTerminal waits until every job of ids has a terminal record and
// returns all records. It fails the test, describing the stragglers, when
// within passes first.
func (c *cluster) waitTerminal(ids []string, within time.Duration) map[string]*claudeq.Job {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var missing []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		jobs, err := c.jobs(ctx)
		cancel()
		if err == nil {
			missing = missing[:0]
			for _, id := range ids {
				if j, ok := jobs[id]; !ok || !j.Status.Terminal() {
					missing = append(missing, id)
				}
			}
			if len(missing) == 0 {
				return jobs
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d of %d jobs not terminal within %v (store: %v); the first: %s", len(missing), len(ids), within, err, c.describe(missing))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// describe tells what Redis and asynq know of the first few jobs.
func (c *cluster) describe(ids []string) string {
	rdb := c.redis.Client(c.t)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var b strings.Builder
	for i, id := range ids {
		if i == 5 {
			break
		}
		st, _ := rdb.HGetAll(context.Background(), "cq:job:"+id).Result()
		fmt.Fprintf(&b, "\n  %s: state %v", id, st)
		if ti, err := insp.GetTaskInfo("default", id); err == nil {
			fmt.Fprintf(&b, "; task %s retried %d/%d, last error %q, next %v", ti.State, ti.Retried, ti.MaxRetry, ti.LastErr, ti.NextProcessAt.Format(time.TimeOnly))
		} else {
			fmt.Fprintf(&b, "; task: %v", err)
		}
	}
	return b.String()
}

// accounting is what the accounting check found.
type accounting struct {
	Accepted, Succeeded, Failed int
	FailedBy                    map[string]int // failed jobs by error type
	Unacknowledged              int            // records of jobs the clients never got a 202 for
	Reruns                      int            // jobs with more than one attempt
	Attempts                    int            // attempts of all jobs (a crash or a retry is one more)
	Calls                       int            // upstream calls (all simulators)
	CallsBy                     map[string]int // upstream calls by status
	// AnsweredAgain counts upstream calls made for a job one of whose
	// earlier calls had been answered (200): the answer was paid for.
	AnsweredAgain             int
	WebhookEvents, Deliveries int
	SpentMicros               int64
	AuditRecords              int64 // in the audit chain, verified intact
	// Settled is how long after every job was terminal the Redis side
	// (live states, quota counters, asynq queues) agreed with the records.
	Settled time.Duration
}

// CallsPerSuccess is upstream calls per succeeded job.
func (a accounting) CallsPerSuccess() float64 {
	if a.Succeeded == 0 {
		return 0
	}
	return float64(a.Calls) / float64(a.Succeeded)
}

func (a accounting) String() string {
	return fmt.Sprintf("%d accepted: %d succeeded, %d failed %v; %d attempts, %d jobs with more than one; %d records without a 202; %d upstream calls %v (%.2f per success), %d after an answer; %d webhook events in %d deliveries; Redis agreed with the records %.1f s after the last job ended; audit chain intact, %d records",
		a.Accepted, a.Succeeded, a.Failed, a.FailedBy, a.Attempts, a.Reruns, a.Unacknowledged, a.Calls, a.CallsBy, a.CallsPerSuccess(), a.AnsweredAgain, a.WebhookEvents, a.Deliveries, a.Settled.Seconds(), a.AuditRecords)
}

// account is the check that ends every scenario: every job that got a 202
// is terminal (succeeded, or failed with an error type and message) within
// the given time, and the API says so; each job has exactly one record,
// one ledger entry if it succeeded (none if not), one conversation with
// one turn if it succeeded, and one webhook event per webhook-id when
// webhooks are on; the quota counters equal the ledger with nothing
// reserved; no job is left queued, running or retrying in Redis; the audit
// log is an intact hash chain; and the simulators saw no retry before a retry-after and no retry of a 400.
func (c *cluster) account(s *submitter, within time.Duration) accounting {
	t := c.t
	t.Helper()
	ctx := context.Background()
	ids := s.ids()
	a := accounting{Accepted: len(ids), FailedBy: map[string]int{}, CallsBy: map[string]int{}}
	jobs := c.waitTerminal(ids, within)

	// Records nobody got a 202 for (the answer was lost) must end too.
	accepted := map[string]bool{}
	for _, id := range ids {
		accepted[id] = true
	}
	var others []string
	for id := range jobs {
		if !accepted[id] {
			others = append(others, id)
		}
	}
	a.Unacknowledged = len(others)
	jobs = c.waitTerminal(append(others, ids...), within)

	for _, j := range jobs {
		switch j.Status {
		case claudeq.StatusSucceeded:
			a.Succeeded++
		case claudeq.StatusFailed:
			a.Failed++
			require.NotNil(t, j.Error, "failed job %s has no error", j.ID)
			require.NotEmpty(t, j.Error.Type, "failed job %s: error type", j.ID)
			require.NotEmpty(t, j.Error.Message, "failed job %s: error message", j.ID)
			a.FailedBy[j.Error.Type]++
		default:
			t.Fatalf("job %s ended %s", j.ID, j.Status)
		}
		if j.Attempts > 1 {
			a.Reruns++
		}
		a.Attempts += j.Attempts
	}

	// One ledger entry per succeeded job, none for the others.
	var ledger []store.LedgerEntry
	cur, err := c.db.Collection("ledger").Find(ctx, bson.D{})
	require.NoError(t, err)
	require.NoError(t, cur.All(ctx, &ledger))
	billed := map[string]int{}
	spent := map[string]int64{} // user|day → micro-USD
	for _, e := range ledger {
		billed[e.JobID]++
		spent[e.UserID+"|"+e.Day] += e.CostMicros
		spent["|"+e.Day] += e.CostMicros
		a.SpentMicros += e.CostMicros
		j, ok := jobs[e.JobID]
		require.True(t, ok, "ledger entry for job %s, which has no record", e.JobID)
		require.Equal(t, claudeq.StatusSucceeded, j.Status, "ledger entry for job %s, which %s", e.JobID, j.Status)
	}
	for id, j := range jobs {
		want := 0
		if j.Status == claudeq.StatusSucceeded {
			want = 1
		}
		require.Equal(t, want, billed[id], "ledger entries of %s job %s", j.Status, id)
	}

	// One conversation with one turn per succeeded job.
	var convs []store.Conversation
	cur, err = c.db.Collection("conversations").Find(ctx, bson.D{})
	require.NoError(t, err)
	require.NoError(t, cur.All(ctx, &convs))
	turns := map[string]int{}
	for _, cv := range convs {
		for _, id := range cv.JobIDs {
			turns[id]++
		}
		require.Len(t, cv.Messages, 2*len(cv.JobIDs), "conversation %s: one question and one answer per job", cv.ID)
	}
	for id, j := range jobs {
		want := 0
		if j.Status == claudeq.StatusSucceeded {
			want = 1
		}
		require.Equal(t, want, turns[id], "conversations of %s job %s", j.Status, id)
	}

	// One webhook event per job, whatever the deliveries.
	if c.hooks != nil && s.webhook != "" {
		require.Eventually(t, func() bool {
			ev, _ := c.hooks.events()
			for id := range jobs {
				if len(ev[id]) == 0 {
					return false
				}
			}
			return true
		}, within, 200*time.Millisecond, "every job's webhook event arrives")
		ev, n := c.hooks.events()
		for id, j := range jobs {
			require.Len(t, ev[id], 1, "webhook events (distinct webhook-ids) of job %s", id)
			require.Equal(t, webhookType(j.Status), ev[id][0].Type, "event of job %s", id)
			require.Equal(t, webhook.DeliveryID(id, webhookType(j.Status)), ev[id][0].WebhookID)
			a.WebhookEvents++
		}
		a.Deliveries = n
	}

	// The Redis counters equal the ledger, nothing stays reserved, nothing
	// is left queued, running or retrying.
	q, err := quota.New(c.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	today := q.Day(time.Now())
	var last string
	settleFrom := time.Now()
	// A job that finished while Redis was down keeps its "running" state
	// there until asynq runs it again, after its lease expired (up to ~2
	// min), and the re-run finds the record and finishes the state.
	ok := assertEventually(3*time.Minute, func() (bool, string) {
		for _, u := range s.users {
			st, err := q.Status(ctx, u.ID, u.Dept)
			if err != nil {
				return false, err.Error()
			}
			for _, x := range st {
				var want int64
				switch {
				case x.Scope == quota.ScopeUser:
					want = spent[u.ID+"|"+today]
				case x.Scope == quota.ScopeTotal && x.Period == quota.PeriodDaily:
					want = spent["|"+today]
				default:
					continue
				}
				if int64(x.Spent) != want || x.Reserved != 0 {
					return false, fmt.Sprintf("%s %s %s: spent %d, reserved %d; the ledger says %d", x.Period, x.Scope, x.ID, x.Spent, x.Reserved, want)
				}
			}
		}
		return c.nothingStuck()
	}, &last)
	require.True(t, ok, "quotas equal the ledger and nothing is stuck: %s; ledger entries whose reservation disagrees: %v",
		last, c.disagreeingHolds(q, ledger))
	a.Settled = time.Since(settleFrom)
	c.checkAPI(s, jobs)

	// The audit log is an intact hash chain (claudeq audit verify).
	chain, err := audit.New(audit.Config{DB: c.db})
	require.NoError(t, err)
	rep, err := chain.Verify(ctx)
	require.NoError(t, err)
	require.True(t, rep.OK(), "audit chain broken at %v: %s", rep.FirstBroken, rep.Reason)
	a.AuditRecords = rep.Checked

	c.checkUpstreamCalls(&a)
	return a
}

func webhookType(s claudeq.Status) string {
	switch s {
	case claudeq.StatusSucceeded:
		return "job.succeeded"
	case claudeq.StatusCanceled:
		return "job.canceled"
	}
	return "job.failed"
}

// assertEventually polls f every 500 ms until it holds or d passes, keeping
// its last explanation in last.
func assertEventually(d time.Duration, f func() (bool, string), last *string) bool {
	deadline := time.Now().Add(d)
	for {
		ok, why := f()
		*last = why
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// nothingStuck reports whether Redis holds no unfinished job and asynq no
// job or webhook task still to run.
func (c *cluster) nothingStuck() (bool, string) {
	ctx := context.Background()
	rdb := c.redis.Client(c.t)
	iter := rdb.Scan(ctx, 0, "cq:job:*", 1000).Iterator()
	for iter.Next(ctx) {
		st, err := rdb.HGet(ctx, iter.Val(), "st").Result()
		if err == nil && !claudeq.Status(st).Terminal() {
			return false, fmt.Sprintf("%s is %s in Redis", iter.Val(), st)
		}
	}
	if err := iter.Err(); err != nil {
		return false, err.Error()
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, q := range []string{"default", "webhooks"} {
		qi, err := insp.GetQueueInfo(q)
		if err != nil {
			if strings.Contains(err.Error(), "does not exist") {
				continue
			}
			return false, err.Error()
		}
		if n := qi.Pending + qi.Active + qi.Scheduled + qi.Retry + qi.Aggregating; n > 0 {
			return false, fmt.Sprintf("queue %s: %d pending, %d active, %d scheduled, %d retry", q, qi.Pending, qi.Active, qi.Scheduled, qi.Retry)
		}
		if qi.Archived > 0 {
			return false, fmt.Sprintf("queue %s: %d archived tasks", q, qi.Archived)
		}
	}
	return true, ""
}

// checkAPI asks the api for the jobs, as their owner (every job up to
// 2,000, else 2,000 of them and every failed one): the status a client sees
// is the record's.
func (c *cluster) checkAPI(s *submitter, jobs map[string]*claudeq.Job) {
	t := c.t
	var api *role
	for _, r := range c.apis {
		if r.running() {
			api = r
		}
	}
	if api == nil {
		return
	}
	keys := map[string]string{}
	for _, u := range s.users {
		keys[u.ID] = u.Key
	}
	var mu sync.Mutex
	var bad []string
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	// Every job up to 2,000, else a sample of 2,000 (map order) plus every
	// failed one.
	n := 0
	for id, j := range jobs {
		if n++; n > 2000 && j.Status == claudeq.StatusSucceeded {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var got struct {
				Status string `json:"status"`
			}
			var err error
			// A 503 (the store timed out on a loaded machine) is retried
			// after its Retry-After, as a client would, for two minutes.
			give := time.Now().Add(2 * time.Minute)
			for {
				req, _ := http.NewRequest(http.MethodGet, api.URL()+"/api/claude/jobs/"+id, nil)
				req.Header.Set("Authorization", "Bearer "+keys[j.UserID])
				var resp *http.Response
				if resp, err = client.Do(req); err != nil {
					break
				}
				if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(give) {
					wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					_ = resp.Body.Close()
					time.Sleep(time.Duration(max(wait, 1)) * time.Second)
					continue
				}
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				} else {
					err = json.NewDecoder(resp.Body).Decode(&got)
				}
				_ = resp.Body.Close()
				break
			}
			if err != nil || got.Status != string(j.Status) {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: api says %q (%v), record says %s", id, got.Status, err, j.Status))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(bad)
	require.Empty(t, bad, "GET /api/claude/jobs/{id} agrees with the records")
}

// calls reads the request logs of all simulators.
func (c *cluster) calls() []sim.RequestRecord {
	c.t.Helper()
	var out []sim.RequestRecord
	for _, n := range c.sims {
		f, err := os.Open(n.log)
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(c.t, err)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r sim.RequestRecord
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				out = append(out, r)
			}
		}
		_ = f.Close()
	}
	return out
}

// checkUpstreamCalls counts the upstream calls and checks, per request body
// (one job), that no call came before the retry-after of a 429 and none
// after a 400; and, for a cluster made with AnsweredOnce, none after a call
// that was answered (200).
func (c *cluster) checkUpstreamCalls(a *accounting) {
	t := c.t
	recs := c.calls()
	byBody := map[string][]sim.RequestRecord{}
	for _, r := range recs {
		a.Calls++
		k := fmt.Sprint(r.Status)
		if r.Fault != "" {
			k = r.Fault
		}
		a.CallsBy[k]++
		byBody[r.Body] = append(byBody[r.Body], r)
	}
	early, after400 := 0, 0
	var sample, again string
	for _, rs := range byBody {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Start.Before(rs[j].Start) })
		answered := -1
		for i := range rs {
			if answered >= 0 && rs[i].Start.After(rs[answered].End) {
				a.AnsweredAgain++
				again = fmt.Sprintf("a call %v after an answered one (body %s)", rs[i].Start.Sub(rs[answered].End), rs[i].Body)
			}
			if answered < 0 && rs[i].Status == http.StatusOK && rs[i].Fault == "" {
				answered = i
			}
		}
		for i := 1; i < len(rs); i++ {
			prev := rs[i-1]
			if prev.Status == http.StatusTooManyRequests && prev.RetryAfter > 0 &&
				rs[i].Start.Before(prev.End.Add(time.Duration(prev.RetryAfter)*time.Second-100*time.Millisecond)) {
				early++
				sample = fmt.Sprintf("a call %v after a 429 with retry-after %ds", rs[i].Start.Sub(prev.End), prev.RetryAfter)
			}
			if prev.Status == http.StatusBadRequest {
				after400++
				sample = "a call after a 400"
			}
		}
	}
	require.Zero(t, early, "calls before retry-after: %s", sample)
	require.Zero(t, after400, "calls after a 400 (not retryable): %s", sample)
	if c.answeredOnce {
		require.Zero(t, a.AnsweredAgain, "upstream calls repeated for a job whose answer had arrived: %s", again)
	}
}

// disagreeingHolds lists the ledger entries whose reservation is not
// settled to the entry's cost, with the reservation as Redis has it and the
// job's record: the diagnosis of a quota that differs from the ledger.
func (c *cluster) disagreeingHolds(q *quota.Quota, ledger []store.LedgerEntry) []string {
	ctx := context.Background()
	var out []string
	for _, e := range ledger {
		h, err := q.Hold(ctx, e.JobID)
		if err == nil && h.State == quota.StateSettled && int64(h.Actual) == e.CostMicros {
			continue
		}
		j, jerr := c.store.Job(ctx, e.JobID)
		desc := fmt.Sprintf("job %s: ledger %d µ$ day %s; ", e.JobID, e.CostMicros, e.Day)
		if err != nil {
			desc += "reservation: " + err.Error()
		} else {
			desc += fmt.Sprintf("reservation %s amount %d actual %d day %s made %s", h.State, h.Amount, h.Actual, h.Day, h.At.Format(time.RFC3339Nano))
		}
		if jerr == nil {
			desc += fmt.Sprintf("; record %s cost %d attempts %d created %s finished %s nodes %v", j.Status, j.CostMicros, j.Attempts,
				j.CreatedAt.Format(time.RFC3339Nano), j.FinishedAt.Format(time.RFC3339Nano), j.Nodes)
		}
		out = append(out, desc)
	}
	return out
}
