package job

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// StashRetention is how long a kept answer waits for its job's next
// attempt: as long as a queued job's state lives (7 days).
const StashRetention = 7 * 24 * time.Hour

// keepWait bounds each place Keep and Kept try: a store that is down must
// not hold the job for the client's whole timeout.
const keepWait = 3 * time.Second

// RedisStash keeps answers in the queue Redis (queue.Queue).
type RedisStash interface {
	Stash(ctx context.Context, id string, data []byte, ttl time.Duration) error
	Stashed(ctx context.Context, id string) ([]byte, error)
	Unstash(ctx context.Context, id string) error
}

// StoreStash keeps answers in the store (store.Store), for when Redis is
// down.
type StoreStash interface {
	StashAnswer(ctx context.Context, id string, data []byte, at time.Time) error
	StashedAnswer(ctx context.Context, id string) ([]byte, error)
	DropStash(ctx context.Context, id string) error
}

// Keeper keeps an upstream answer that was paid for until its job is
// billed: a job whose answer arrived but whose bill could not be written
// (Redis or the store down) is retried, and its next attempt, on any
// worker, takes the kept answer instead of calling Claude again.
//
// An answer goes to Redis when it can (the next attempt looks there
// first), else to the store, else it stays in this process, which moves it
// to Redis or the store as soon as either answers (Run). What is lost: an
// answer held in the process when the process dies before either store
// came back (docs/reliability.md). Keeper is safe for concurrent use.
type Keeper struct {
	Redis  RedisStash
	Store  StoreStash
	TTL    time.Duration // Redis expiry of a kept answer; default StashRetention
	Now    func() time.Time
	Logger *slog.Logger

	mu   sync.Mutex
	held map[string][]byte // answers neither store took yet
}

// Where an answer was kept.
const (
	KeptRedis  = "redis"
	KeptStore  = "store"
	KeptMemory = "memory"
)

func (k *Keeper) ttl() time.Duration {
	if k.TTL > 0 {
		return k.TTL
	}
	return StashRetention
}

func (k *Keeper) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// Keep keeps job id's answer and says where.
func (k *Keeper) Keep(ctx context.Context, id string, data []byte) string {
	ctx = context.WithoutCancel(ctx)
	if k.put(ctx, id, data) {
		k.mu.Lock()
		delete(k.held, id) // a newer copy is durable
		k.mu.Unlock()
		return KeptRedis
	}
	if k.putStore(ctx, id, data) {
		return KeptStore
	}
	k.mu.Lock()
	if k.held == nil {
		k.held = map[string][]byte{}
	}
	k.held[id] = data
	k.mu.Unlock()
	k.Logger.Warn("neither Redis nor the store took an answer that was paid for; it is held in this process until one does", "job_id", id)
	return KeptMemory
}

func (k *Keeper) put(ctx context.Context, id string, data []byte) bool {
	c, cancel := context.WithTimeout(ctx, keepWait)
	defer cancel()
	return k.Redis.Stash(c, id, data, k.ttl()) == nil
}

func (k *Keeper) putStore(ctx context.Context, id string, data []byte) bool {
	if k.Store == nil {
		return false
	}
	c, cancel := context.WithTimeout(ctx, keepWait)
	defer cancel()
	return k.Store.StashAnswer(c, id, data, k.now()) == nil
}

// Kept returns the answer kept for job id and where it was (nil, "" when
// there is none). An error means a place that may hold it could not be
// asked: the caller must not call upstream then, but retry later.
func (k *Keeper) Kept(ctx context.Context, id string) ([]byte, string, error) {
	k.mu.Lock()
	b, ok := k.held[id]
	k.mu.Unlock()
	if ok {
		return b, KeptMemory, nil
	}
	b, err := k.Redis.Stashed(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if b != nil {
		return b, KeptRedis, nil
	}
	if k.Store == nil {
		return nil, "", nil
	}
	c, cancel := context.WithTimeout(ctx, keepWait)
	defer cancel()
	b, err = k.Store.StashedAnswer(c, id)
	if err != nil || b == nil {
		return nil, "", err
	}
	return b, KeptStore, nil
}

// Drop forgets job id's answer once its job is durable and billed: the
// copy in this process and in Redis, and the store's when the answer came
// from there (where). Failures are logged: a leftover copy is never used
// (the job's record comes first) and expires.
func (k *Keeper) Drop(ctx context.Context, id, where string) {
	k.mu.Lock()
	delete(k.held, id)
	k.mu.Unlock()
	if err := k.Redis.Unstash(ctx, id); err != nil {
		k.Logger.Warn("dropping a kept answer from Redis failed; it expires", "job_id", id, "err", err)
	}
	if where == KeptStore && k.Store != nil {
		if err := k.Store.DropStash(ctx, id); err != nil {
			k.Logger.Warn("dropping a kept answer from the store failed; the retention sweep removes it", "job_id", id, "err", err)
		}
	}
}

// Held returns the ids of the answers held in this process.
func (k *Keeper) Held() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Sorted(maps.Keys(k.held))
}

// Flush moves the answers held in this process to Redis or the store, and
// returns how many are still held.
func (k *Keeper) Flush(ctx context.Context) int {
	k.mu.Lock()
	held := maps.Clone(k.held)
	k.mu.Unlock()
	for id, data := range held {
		if !k.put(ctx, id, data) && !k.putStore(ctx, id, data) {
			continue
		}
		k.mu.Lock()
		if cur, ok := k.held[id]; ok && &cur[0] == &data[0] {
			delete(k.held, id)
		}
		k.mu.Unlock()
		k.Logger.Info("an answer held in this process is kept durably again", "job_id", id)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// Run flushes every interval until ctx ends, then once more; answers still
// held then are logged as lost to this process.
func (k *Keeper) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*keepWait)
			defer cancel()
			if k.Flush(fctx) > 0 {
				k.Logger.Error("stopping with answers that were paid for held only in this process: their jobs will call upstream again",
					"job_ids", k.Held())
			}
			return
		case <-t.C:
			if len(k.Held()) > 0 {
				k.Flush(ctx)
			}
		}
	}
}
