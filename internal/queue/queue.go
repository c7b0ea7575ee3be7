// Package queue builds claudeq's asynq client and server and keeps the live
// state of jobs in Redis: a small hash per job (owner, status, timestamps,
// request hash) beside the asynq task that carries the request. The hash is
// what polling reads while a job is queued or running, what cancel flips,
// and what a worker checks before running a job (at-least-once delivery).
//
// Queue is safe for concurrent use.
package queue

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// The asynq queues and their weights: critical work first, batch items and
// webhook deliveries never starve interactive jobs.
const (
	Critical = "critical"
	Default  = "default"
	Batch    = "batch"
	Webhooks = "webhooks"
)

// Weights are the asynq queue priorities.
var Weights = map[string]int{Critical: 6, Default: 3, Webhooks: 2, Batch: 1}

// State is the live state of a job in Redis.
type State struct {
	ID     string
	UserID string
	Status claudeq.Status
	Kind   string
	Model  string
	// RequestedModel is the name the caller asked for when it is not Model
	// (an alias such as "opus", or an undated id); "" otherwise.
	RequestedModel string
	RequestHash    string
	CacheKey       string // set on a job answered from the cache
	Attempts       int
	CreatedAt      time.Time
	StartedAt      time.Time
	FinishedAt     time.Time
	LastError      string // the error of the last failed attempt, while retrying; a failed job's reason when FailLost failed it
}

// Queue is the Redis side of jobs: their live state and the asynq client.
type Queue struct {
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
}

// New returns a Queue over rdb. Close releases the asynq client, not rdb.
func New(rdb redis.UniversalClient) *Queue {
	return &Queue{rdb: rdb, client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb)}
}

// Close releases the asynq client.
func (q *Queue) Close() error { return nil }

// Client returns the asynq client, for enqueueing other task types.
func (q *Queue) Client() *asynq.Client { return q.client }

// Inspector returns the asynq inspector.
func (q *Queue) Inspector() *asynq.Inspector { return q.inspector }

func key(id string) string { return "cq:job:" + id }

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func unms(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

// Returns {1} when created, else {0, rh, user, status}.
var createScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'rh', 'u', 'st')
if cur[3] then return {0, cur[1] or '', cur[2] or '', cur[3]} end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1}
`)

// Submission is a job to put on the queue.
type Submission struct {
	State   State
	Payload []byte        // the task payload
	Queue   string        // default Default
	TTL     time.Duration // how long the state hash lives while the job is unfinished
	Options []asynq.Option
}

// ErrExists is returned (wrapped in nothing) by Submit when a job with the
// same id exists; the existing state is returned beside it.
var ErrExists = errors.New("job exists")

// Submit creates the job's state and enqueues its task with TaskID = job id.
// If the job exists (an Idempotency-Key replay), it returns its state and
// ErrExists, and makes sure a queued job's task is on the queue (healing a
// submit that died between the two steps). Redis being down is a
// KindUnavailable error and nothing is enqueued.
func (q *Queue) Submit(ctx context.Context, s Submission) (*State, error) {
	st := s.State
	k := key(st.ID)
	args := []any{s.TTL.Milliseconds(),
		"u", st.UserID, "st", string(claudeq.StatusQueued), "k", st.Kind, "m", st.Model,
		"rh", st.RequestHash, "ca", ms(st.CreatedAt), "at", 0}
	if st.RequestedModel != "" {
		args = append(args, "rm", st.RequestedModel) // only then: a queued job's bytes are a design figure
	}
	res, err := createScript.Run(ctx, q.rdb, []string{k}, args...).Slice()
	if err != nil {
		return nil, unavailable("queue.Submit", err)
	}
	created := res[0].(int64) == 1
	if !created {
		ex, err := q.State(ctx, st.ID)
		if err != nil {
			return nil, err
		}
		if ex.Status != claudeq.StatusQueued {
			return ex, ErrExists
		}
		st = *ex
	}
	qname := s.Queue
	if qname == "" {
		qname = Default
	}
	opts := append([]asynq.Option{asynq.TaskID(st.ID), asynq.Queue(qname)}, s.Options...)
	_, err = q.client.EnqueueContext(ctx, asynq.NewTask(TypeJobRun, s.Payload), opts...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		if created {
			// Best effort: a leftover hash is healed by a retry with the same
			// Idempotency-Key and expires with its TTL.
			q.rdb.Del(context.WithoutCancel(ctx), k)
		}
		return nil, unavailable("queue.Submit", err)
	}
	if !created {
		return &st, ErrExists
	}
	st.Status = claudeq.StatusQueued
	return &st, nil
}

// TypeJobRun is the asynq task type of a prompt job.
const TypeJobRun = "job:run"

// PutDone records a job that finished at submit (a cache hit) so that it can
// be polled.
func (q *Queue) PutDone(ctx context.Context, st State, ttl time.Duration) error {
	k := key(st.ID)
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, "u", st.UserID, "st", string(st.Status), "k", st.Kind, "m", st.Model,
			"rh", st.RequestHash, "ca", ms(st.CreatedAt), "fa", ms(st.FinishedAt), "ck", st.CacheKey, "at", 0)
		if st.RequestedModel != "" {
			p.HSet(ctx, k, "rm", st.RequestedModel)
		}
		p.PExpire(ctx, k, ttl)
		return nil
	})
	if err != nil {
		return unavailable("queue.PutDone", err)
	}
	return nil
}

// State returns the live state of job id, or a KindNotFound error when Redis
// has none (it may still be in the store).
func (q *Queue) State(ctx context.Context, id string) (*State, error) {
	m, err := q.rdb.HGetAll(ctx, key(id)).Result()
	if err != nil {
		return nil, unavailable("queue.State", err)
	}
	if len(m) == 0 || m["st"] == "" {
		return nil, claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
	}
	at, _ := strconv.Atoi(m["at"])
	return &State{
		ID: id, UserID: m["u"], Status: claudeq.Status(m["st"]), Kind: m["k"], Model: m["m"], RequestedModel: m["rm"],
		RequestHash: m["rh"], CacheKey: m["ck"], Attempts: at, LastError: m["le"],
		CreatedAt: unms(m["ca"]), StartedAt: unms(m["sa"]), FinishedAt: unms(m["fa"]),
	}, nil
}

// Returns the status before the call ("" when unknown or not the owner's).
var cancelScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'st', 'u')
if not v[1] or v[2] ~= ARGV[1] then return '' end
if v[1] == 'queued' then redis.call('HSET', KEYS[1], 'st', 'canceled', 'fa', ARGV[2]) end
return v[1]
`)

// Cancel cancels a queued job of userID and returns its status before the
// call. A running or finished job is not changed. The worker that picks up
// a canceled job's task writes its terminal record.
func (q *Queue) Cancel(ctx context.Context, id, userID string, now time.Time) (claudeq.Status, error) {
	s, err := cancelScript.Run(ctx, q.rdb, []string{key(id)}, userID, ms(now)).Text()
	if err != nil {
		return "", unavailable("queue.Cancel", err)
	}
	if s == "" {
		return "", claudeq.Errorf(claudeq.KindNotFound, "job %s not found", id)
	}
	return claudeq.Status(s), nil
}

// Returns the status before the call ("" when the state is missing).
var startScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return '' end
if st == 'queued' or st == 'running' then
  redis.call('HSET', KEYS[1], 'st', 'running')
  redis.call('HSETNX', KEYS[1], 'sa', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'at', 1)
end
return st
`)

// Start marks job id running and returns its status before: queued for a
// first run, running for a run after a crash, canceled or a terminal status
// when the job must not run, "" when Redis has no state for it.
func (q *Queue) Start(ctx context.Context, id string, now time.Time) (claudeq.Status, error) {
	s, err := startScript.Run(ctx, q.rdb, []string{key(id)}, ms(now)).Text()
	if err != nil {
		return "", unavailable("queue.Start", err)
	}
	return claudeq.Status(s), nil
}

var requeueScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'st') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'queued', 'le', ARGV[1])
if ARGV[2] ~= '' then
  local n = redis.call('HGET', KEYS[1], 'nodes')
  if n and n ~= '' then n = n .. ',' .. ARGV[2] else n = ARGV[2] end
  redis.call('HSET', KEYS[1], 'nodes', n)
end
return 1
`)

// Requeue marks a running job queued again while it waits for a retry, and
// remembers the node that failed it so that the retry goes elsewhere.
func (q *Queue) Requeue(ctx context.Context, id, lastErr, node string) error {
	if err := requeueScript.Run(ctx, q.rdb, []string{key(id)}, lastErr, node).Err(); err != nil {
		return unavailable("queue.Requeue", err)
	}
	return nil
}

// Nodes returns the nodes earlier attempts of job id failed on, oldest
// first.
func (q *Queue) Nodes(ctx context.Context, id string) ([]string, error) {
	v, err := q.rdb.HGet(ctx, key(id), "nodes").Result()
	if errors.Is(err, redis.Nil) || v == "" {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("queue.Nodes", err)
	}
	return strings.Split(v, ","), nil
}

// Finish records a job's terminal status; the state then lives ttl more (the
// Idempotency-Key window), while the store holds the durable record.
func (q *Queue) Finish(ctx context.Context, id string, status claudeq.Status, at time.Time, cacheKey string, ttl time.Duration) error {
	k := key(id)
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, "st", string(status), "fa", ms(at), "le", "", "ck", cacheKey)
		p.PExpire(ctx, k, ttl)
		return nil
	})
	if err != nil {
		return unavailable("queue.Finish", err)
	}
	return nil
}

// Returns 1 when the job was failed, 0 when its state moved on.
var failLostScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'st', 'at')
if v[1] ~= ARGV[1] or (v[2] or '0') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'st', 'failed', 'fa', ARGV[3], 'le', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// FailLost marks failed a job whose task is gone from the queue, only if
// its state is still seen's (same status, same attempts): a worker that
// starts the job in between wins, and one that starts it after finds it
// failed and does not run it. The failed state's LastError is reason, so
// that a poll can say why (the state is then the job's only record). It
// reports whether the job was failed.
func (q *Queue) FailLost(ctx context.Context, seen *State, at time.Time, ttl time.Duration, reason string) (bool, error) {
	n, err := failLostScript.Run(ctx, q.rdb, []string{key(seen.ID)},
		string(seen.Status), strconv.Itoa(seen.Attempts), ms(at), ttl.Milliseconds(), reason).Int()
	if err != nil {
		return false, unavailable("queue.FailLost", err)
	}
	return n == 1, nil
}

// HasTask reports whether any job queue (critical, default, batch) holds
// job id's task, in any state (pending, scheduled, active, retry,
// archived, completed).
func (q *Queue) HasTask(ctx context.Context, id string) (bool, error) {
	for _, qname := range []string{Critical, Default, Batch} {
		_, err := q.inspector.GetTaskInfo(qname, id)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		default:
			return false, unavailable("queue.HasTask", err)
		}
	}
	return false, nil
}

// Stash keeps an upstream answer for a job whose durable write failed, so
// that the retry does not call (and pay) the upstream again.
func (q *Queue) Stash(ctx context.Context, id string, data []byte, ttl time.Duration) error {
	return q.rdb.Set(ctx, "cq:stash:"+id, data, ttl).Err()
}

// Stashed returns the stashed answer of job id, or nil.
func (q *Queue) Stashed(ctx context.Context, id string) ([]byte, error) {
	b, err := q.rdb.Get(ctx, "cq:stash:"+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, err
}

// Unstash drops a stashed answer once its job is durable.
func (q *Queue) Unstash(ctx context.Context, id string) error {
	return q.rdb.Del(ctx, "cq:stash:"+id).Err()
}

// owedLedgerKey is the outbox of ledger entries the store did not take
// when their request was answered: a hash, entry id → the entry as JSON.
const owedLedgerKey = "cq:owed:ledger"

// OweLedger keeps a ledger entry (JSON) that the store did not take, until
// it does (ReconcileHandler drains the outbox; the api that wrote it
// retries on its own and drops it once written).
func (q *Queue) OweLedger(ctx context.Context, id string, entry []byte) error {
	return q.rdb.HSet(ctx, owedLedgerKey, id, entry).Err()
}

// OwedLedger returns the ledger entries waiting in the outbox, by id.
func (q *Queue) OwedLedger(ctx context.Context) (map[string][]byte, error) {
	m, err := q.rdb.HGetAll(ctx, owedLedgerKey).Result()
	if err != nil {
		return nil, unavailable("queue.OwedLedger", err)
	}
	out := make(map[string][]byte, len(m))
	for id, v := range m {
		out[id] = []byte(v)
	}
	return out, nil
}

// PaidLedger drops entry id from the outbox once the store holds it.
func (q *Queue) PaidLedger(ctx context.Context, id string) error {
	return q.rdb.HDel(ctx, owedLedgerKey, id).Err()
}

// Backlog returns how many tasks wait in queue qname to be picked up
// (asynq's pending list; scheduled retries and running tasks are not
// counted).
func (q *Queue) Backlog(ctx context.Context, qname string) (int64, error) {
	n, err := q.rdb.LLen(ctx, "asynq:{"+qname+"}:pending").Result()
	if err != nil {
		return 0, unavailable("queue.Backlog", err)
	}
	return n, nil
}

// Ping checks Redis.
func (q *Queue) Ping(ctx context.Context) error { return q.rdb.Ping(ctx).Err() }

// Workers returns how many asynq worker servers sent a heartbeat lately.
func (q *Queue) Workers() (int, error) {
	s, err := q.inspector.Servers()
	if err != nil {
		return 0, err
	}
	return len(s), nil
}

func unavailable(op string, err error) error {
	return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "queue unavailable, try again", Err: err, RetryAfter: 2 * time.Second}
}

// ServerOptions configure a worker's asynq server.
type ServerOptions struct {
	Concurrency              int
	TaskCheckInterval        time.Duration
	DelayedTaskCheckInterval time.Duration
	ShutdownTimeout          time.Duration
	RetryDelay               asynq.RetryDelayFunc
	IsFailure                func(error) bool
	Logger                   *slog.Logger
}

// NewServer returns an asynq server over rdb with claudeq's queues.
func NewServer(rdb redis.UniversalClient, o ServerOptions) *asynq.Server {
	return asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              o.Concurrency,
		Queues:                   Weights,
		TaskCheckInterval:        o.TaskCheckInterval,
		DelayedTaskCheckInterval: o.DelayedTaskCheckInterval,
		ShutdownTimeout:          o.ShutdownTimeout,
		RetryDelayFunc:           o.RetryDelay,
		IsFailure:                o.IsFailure,
		Logger:                   NewLogger(o.Logger),
		LogLevel:                 asynq.WarnLevel,
	})
}
