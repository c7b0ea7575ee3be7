//go:build chaos

package chaos

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lastFinish returns the latest finish time among the jobs of ids.
func (c *cluster) lastFinish(ids []string) time.Time {
	c.t.Helper()
	jobs, err := c.jobs(context.Background())
	require.NoError(c.t, err)
	var last time.Time
	for _, id := range ids {
		if j := jobs[id]; j != nil && j.FinishedAt != nil && j.FinishedAt.After(last) {
			last = *j.FinishedAt
		}
	}
	return last
}

// Scenario 3: kill -9 Redis mid-run and restart it (after 5 s; at full
// scale also after 40 s) while clients keep submitting and workers keep
// finishing jobs whose upstream calls take 2–4 s, so that answers arrive
// while Redis is down. Every job that got a 202 ends exactly once; submits
// during the outage get 503 with Retry-After, never a 202 that is lost;
// jobs asynq runs again (their completion mark was lost) have no second
// effect; and no job whose answer arrived is sent upstream again (the
// answer was kept until it was billed).
func TestKillRedis(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Webhooks: true, AnsweredOnce: true, Sim: simOptions{Latency: 2 * time.Second, Jitter: 2 * time.Second}})
	c.startAPI()
	c.startScheduler()
	c.startWorker(100)
	c.startWorker(100)
	s := newSubmitter("kill-redis", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)
	s.webhook = c.hooks.URL()

	outages := scaled([]time.Duration{5 * time.Second}, []time.Duration{5 * time.Second, 40 * time.Second})
	const around = 5 * time.Second
	total := around
	for _, d := range outages {
		total += d + around
	}
	rate := scaled(20.0, 50.0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(context.Background(), rate, total, 256)
	}()
	for _, d := range outages {
		time.Sleep(around)
		before := s.answers()
		c.redis.Kill()
		time.Sleep(d)
		during := since(before, s.answers())
		c.redis.Restart()
		record(t, "answers during a "+d.String()+" outage", "%v (status: count)", during)
		for code := range during {
			require.Contains(t, []int{http.StatusAccepted, http.StatusServiceUnavailable}, code, "during the outage the api answers 202 (before it noticed) or 503: %v", during)
		}
		require.NotZero(t, during[http.StatusServiceUnavailable], "submits during the outage are refused: %v", during)
	}
	<-done
	require.Zero(t, s.noRetryAfter, "every 503 carries Retry-After")
	require.Empty(t, s.unexpected)

	a := c.account(s, 5*time.Minute)
	c.requireRunning()
	record(t, "clients saw", "%s", s.summary())
	record(t, "repeated upstream calls", "%d of %d calls; %d of them for a job whose answer had arrived", a.Calls-a.Succeeded, a.Calls, a.AnsweredAgain)
	record(t, "accounting", "%s", a)
	require.Zero(t, a.Failed, "no job fails: %v", a.FailedBy)
}

// Scenario 4: the MongoDB-wire store is killed with SIGKILL and down for a
// while (10 s; 30 s at full scale) while clients submit: submits still get 202 (the submit path
// needs Redis only), jobs wait for the store and finish once it is back.
func TestMongoDown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Webhooks: true, AnsweredOnce: true,
		Sim: simOptions{Latency: 100 * time.Millisecond, Jitter: 200 * time.Millisecond}})
	c.startAPI()
	c.startScheduler()
	c.startWorker(20)
	s := newSubmitter("mongo-down", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)
	s.webhook = c.hooks.URL()

	outage := scaled(10*time.Second, 30*time.Second)
	const around = 5 * time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(context.Background(), scaled(10.0, 30.0), around+outage+around, 128)
	}()
	time.Sleep(around)
	before := s.answers()
	c.mongo.kill()
	time.Sleep(outage)
	during := since(before, s.answers())
	c.mongo.start()
	upAt := time.Now()
	<-done
	record(t, "answers during the outage", "%v (status: count)", during)
	require.Equal(t, []int{http.StatusAccepted}, keys(during), "submits need Redis only: %v", during)

	a := c.account(s, 5*time.Minute)
	c.requireRunning()
	record(t, "store back to last job finished", "%.1f s", secs(c.lastFinish(s.ids()).Sub(upAt)))
	record(t, "upstream calls per success", "%.3f (%d calls: the answer of a job whose store write failed is kept for its retry)", a.CallsPerSuccess(), a.Calls)
	record(t, "accounting", "%s", a)
	require.Zero(t, a.Failed, "no job fails: %v", a.FailedBy)
	require.Equal(t, a.Succeeded, a.Calls, "no upstream call is repeated")
}

func keys(m map[int]int) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Scenario 6: kill -9 the api again and again while clients submit with an
// Idempotency-Key and retry (the same key) until they get an answer: one
// job per key, none lost, none doubled.
func TestKillAPI(t *testing.T) {
	t.Parallel()
	// A submit the kill cut between the job's state and its task leaves a
	// queued state without a task, which the client's retry with the
	// same Idempotency-Key heals; the reconciler fails such a state as
	// queue_lost once its reservation is CLAUDEQ_QUOTA_RECONCILE_AFTER old.
	// In production that is 2 h; here it must outlast the clients' retries
	// (2 min), or on a loaded machine a slow retry can find the job failed
	// before it heals it.
	c := newCluster(t, clusterOptions{Sim: simOptions{Latency: 100 * time.Millisecond, Jitter: 200 * time.Millisecond},
		Env: map[string]string{"CLAUDEQ_QUOTA_RECONCILE_AFTER": "3m"}})
	api := c.startAPI()
	c.startScheduler()
	c.startWorker(20)
	s := newSubmitter("kill-api", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)
	s.idem, s.giveUp = true, 2*time.Minute

	kills := scaled(3, 10)
	const up, down = 3 * time.Second, 2 * time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(context.Background(), scaled(30.0, 50.0), time.Duration(kills)*(up+down)+up, 512)
	}()
	for range kills {
		time.Sleep(up)
		api.kill()
		time.Sleep(down)
		api.start()
	}
	<-done

	a := c.account(s, 5*time.Minute)
	c.requireRunning()
	requests := int(s.seq.Load())
	require.Zero(t, s.unaccepted, "every request is accepted in the end")
	require.Len(t, s.byKey, requests, "every key got a job")
	for k, ids := range s.byKey {
		require.Len(t, ids, 1, "key %s: one job, whatever the retries", k)
	}
	require.Equal(t, requests, a.Accepted)
	require.Zero(t, a.Unacknowledged, "no job without its key's answer")
	record(t, "kills", "%d kills of the api, %v each", kills, down)
	record(t, "clients saw", "%s; %d idempotent replays", s.summary(), s.replays)
	record(t, "accounting", "%s", a)
	require.Zero(t, a.Failed, "no job fails: %v", a.FailedBy)
}
