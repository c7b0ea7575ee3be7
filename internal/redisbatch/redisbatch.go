// Package redisbatch runs Lua script calls that nobody waits for in Redis
// pipelines: the calls queued within a short window share one round trip
// (one write and one read on each side) instead of paying one each. It is
// for work off a request's path, such as recording an upstream call's
// outcome or settling its budget after the answer was sent, where a few
// milliseconds of delay cost nothing and a round trip per call costs CPU
// that the requests being served need.
//
// A Batcher is safe for concurrent use.
package redisbatch

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Call is one script call.
type Call struct {
	Script *redis.Script
	Keys   []string
	Args   []any
	// Done, if set, receives the call's result (its Err is the call's
	// error). It runs on the batcher's goroutine once the pipeline is
	// back, in the order the calls were queued; it must not wait for
	// another call of the same Batcher.
	Done func(*redis.Cmd)
}

// Batcher queues calls and sends them in pipelines. The zero value is not
// usable; create one with New.
type Batcher struct {
	rdb     redis.UniversalClient
	window  time.Duration
	max     int
	timeout time.Duration

	mu     sync.Mutex
	queue  []Call
	timer  *time.Timer // the armed window, nil when none
	gen    uint64      // counts the windows armed, so a late tick knows its own
	closed bool
	wg     sync.WaitGroup
}

// New returns a Batcher over rdb that sends a pipeline window after the
// first call queued into it, or at once when max calls are queued.
// Defaults: window 5ms, max 256.
func New(rdb redis.UniversalClient, window time.Duration, max int) *Batcher {
	if window <= 0 {
		window = 5 * time.Millisecond
	}
	if max <= 0 {
		max = 256
	}
	return &Batcher{rdb: rdb, window: window, max: max, timeout: 10 * time.Second}
}

// Go queues c. After Close it runs c at once, on the caller's goroutine.
func (b *Batcher) Go(c Call) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.run([]Call{c})
		return
	}
	b.queue = append(b.queue, c)
	switch {
	case len(b.queue) >= b.max:
		q := b.take()
		b.disarm()
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			b.run(q)
		}()
		return
	case b.timer == nil:
		b.wg.Add(1)
		b.gen++
		g := b.gen
		b.timer = time.AfterFunc(b.window, func() { b.tick(g) })
	}
	b.mu.Unlock()
}

// disarm stops the window's timer; b.mu is held.
func (b *Batcher) disarm() {
	if b.timer != nil && b.timer.Stop() {
		b.wg.Done() // tick will not run
	}
	b.timer = nil
}

// take empties the queue; b.mu is held.
func (b *Batcher) take() []Call {
	q := b.queue
	b.queue = nil
	return q
}

func (b *Batcher) tick(gen uint64) {
	defer b.wg.Done()
	b.mu.Lock()
	q := b.take()
	if b.gen == gen {
		b.timer = nil
	}
	b.mu.Unlock()
	b.run(q)
}

// run sends q in one pipeline and hands out the results. A call whose
// script Redis does not know yet (NOSCRIPT: a restarted Redis) is run
// again on its own with EVAL.
func (b *Batcher) run(q []Call) {
	if len(q) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(q))
	for i, c := range q {
		cmds[i] = c.Script.EvalSha(ctx, pipe, c.Keys, c.Args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, c := range q {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			cmds[i] = c.Script.Run(ctx, b.rdb, c.Keys, c.Args...)
		}
		if c.Done != nil {
			c.Done(cmds[i])
		}
	}
}

// Close sends what is queued and waits for every pipeline in flight, or
// until ctx ends. Calls queued after Close run at once.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	q := b.take()
	b.disarm()
	b.mu.Unlock()
	b.run(q)
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
