package app_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/redistest"
)

// An answer that was paid for is kept until it is billed (#20): a job whose
// answer arrives while Redis (or Redis and the store) is down is not sent
// upstream again, and an interactive request's ledger entry and settlement
// are owed, not given up.

// durableRedis is a redis-server that loses no acknowledged write when
// killed, as deployments/ configures the queue Redis.
func durableRedis() envOption {
	return withRedis(redistest.WithAOF(), redistest.WithArgs("--appendfsync", "always"))
}

func TestAnswerArrivingWhileRedisIsDownIsNotPaidTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, durableRedis())
	e.sim.SetLatency(2*time.Second, 0)
	base := e.all("CLAUDEQ_KEY_CACHE_TTL", "10m")
	key, _ := e.key("alice", "research")
	id := submit(t, base, key, map[string]any{"prompt": "answered while Redis is down"})

	require.Eventually(t, func() bool { return e.sim.Stats().InFlight == 1 }, 30*time.Second, 10*time.Millisecond)
	e.redis.Kill()
	require.Eventually(t, func() bool { return e.sim.Stats().Succeeded == 1 }, 30*time.Second, 10*time.Millisecond, "the answer reached the worker")
	require.Eventually(t, func() bool { return e.count("stash", bson.D{{Key: "_id", Value: id}}) == 1 }, 30*time.Second, 50*time.Millisecond,
		"the worker could not bill it (Redis down) and kept it in the store")
	e.redis.Restart()

	j := wait(t, base, key, id, 4*time.Minute) // its next attempt comes once asynq recovers the task
	require.Equal(t, "succeeded", j["status"], "%v", j)
	require.EqualValues(t, 1, e.sim.Stats().Requests, "the kept answer was used: the upstream was paid once")
	e.requireBilledOnce(t, []string{id})
	require.Zero(t, e.count("stash", bson.D{}), "the kept answer is dropped once billed")
}

func TestAnswerArrivingWhileRedisAndTheStoreAreDownIsNotPaidTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, durableRedis(), withOwnMongo())
	e.sim.SetLatency(2*time.Second, 0)
	a, _ := e.run(app.Roles{API: true, Worker: true, Scheduler: true}, "CLAUDEQ_KEY_CACHE_TTL", "10m")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	id := submit(t, base, key, map[string]any{"prompt": "answered while both stores are down"})

	require.Eventually(t, func() bool { return e.sim.Stats().InFlight == 1 }, 30*time.Second, 10*time.Millisecond)
	e.redis.Kill()
	e.mongoSv.Stop()
	require.Eventually(t, func() bool { return slices.Contains(a.Keeper().Held(), id) }, 30*time.Second, 50*time.Millisecond,
		"neither store takes the answer: the worker holds it")
	e.mongoSv.Start()
	require.Eventually(t, func() bool { return len(a.Keeper().Held()) == 0 }, 30*time.Second, 50*time.Millisecond,
		"moved to the store as soon as it answers")
	require.EqualValues(t, 1, e.count("stash", bson.D{{Key: "_id", Value: id}}))
	e.redis.Restart()

	j := wait(t, base, key, id, 4*time.Minute)
	require.Equal(t, "succeeded", j["status"], "%v", j)
	require.EqualValues(t, 1, e.sim.Stats().Requests, "the kept answer was used: the upstream was paid once")
	e.requireBilledOnce(t, []string{id})
}

// TestInteractiveBillOwedWhileTheStoreIsDown: a /v1/messages answer whose
// ledger entry the store does not take is owed (in the Redis outbox) and
// written once the store is back, by the reconciler when its api is gone;
// its reservation is settled to it, not released.
func TestInteractiveBillOwedWhileTheStoreIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, durableRedis(), withOwnMongo())
	api, stopAPI := e.run(app.Roles{API: true}, "CLAUDEQ_KEY_CACHE_TTL", "10m")
	base := "http://" + api.Addr()
	e.run(app.Roles{Worker: true, Scheduler: true}, "CLAUDEQ_RECONCILE_INTERVAL", "1s", "CLAUDEQ_QUOTA_RECONCILE_AFTER", "2s")
	key, _ := e.key("alice", "research")
	body := `{"model":"claude-haiku-5-5","max_tokens":64,"messages":[{"role":"user","content":"billed while the store is down"}]}`
	require.Equal(t, http.StatusOK, do(t, "POST", base+"/v1/messages", key, `{"model":"claude-haiku-5-5","max_tokens":8,"messages":[{"role":"user","content":"warm the key cache"}]}`).Status)
	e.ledgerOf(t, "alice", 1)

	e.mongoSv.Stop()
	r := do(t, "POST", base+"/v1/messages", key, body)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	reqID := r.Header.Get("request-id")
	rdb := e.redis.Client(t)
	require.Eventually(t, func() bool {
		ok, _ := rdb.HExists(context.Background(), "cq:owed:ledger", reqID).Result()
		return ok
	}, 30*time.Second, 50*time.Millisecond, "the entry the store did not take waits in the Redis outbox")
	stopAPI() // the api stops with the entry still owed
	e.mongoSv.Start()

	require.Eventually(t, func() bool { return e.count("ledger", bson.D{{Key: "_id", Value: reqID}}) == 1 }, time.Minute, 100*time.Millisecond,
		"the reconciler writes the owed entry")
	require.Eventually(t, func() bool { n, _ := rdb.HLen(context.Background(), "cq:owed:ledger").Result(); return n == 0 }, 30*time.Second, 100*time.Millisecond)
	entries := e.ledgerOf(t, "alice", 2)
	var total int64
	for _, en := range entries {
		total += en.CostMicros
	}
	e.requireSpent(t, "alice", "research", total) // settled to the entry, nothing left reserved
	q, err := quota.New(rdb, quota.Options{})
	require.NoError(t, err)
	h, err := q.Hold(context.Background(), reqID)
	require.NoError(t, err)
	require.Equal(t, quota.StateSettled, h.State)
}

// TestInteractiveSettlementOwedWhileRedisIsDown: a /v1/messages answer
// whose settlement Redis does not take (it died mid-call) is settled once
// Redis is back, by the api that owes it.
func TestInteractiveSettlementOwedWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, durableRedis())
	e.sim.SetLatency(2*time.Second, 0)
	a, _ := e.run(app.Roles{API: true}, "CLAUDEQ_KEY_CACHE_TTL", "10m")
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")
	done := make(chan response, 1)
	go func() {
		done <- do(t, "POST", base+"/v1/messages", key, `{"model":"claude-haiku-5-5","max_tokens":64,"messages":[{"role":"user","content":"settled after Redis returns"}]}`)
	}()
	require.Eventually(t, func() bool { return e.sim.Stats().InFlight == 1 }, 30*time.Second, 10*time.Millisecond)
	e.redis.Kill()
	r := <-done
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Eventually(t, func() bool { _, settle := a.API.Owed(); return len(settle) == 1 }, 30*time.Second, 50*time.Millisecond)
	e.redis.Restart()
	require.Eventually(t, func() bool { l, s := a.API.Owed(); return len(l)+len(s) == 0 }, 30*time.Second, 50*time.Millisecond)
	entries := e.ledgerOf(t, "alice", 1)
	e.requireSpent(t, "alice", "research", entries[0].CostMicros)
}
