package api

import (
	"context"
	"encoding/json"
	"github.com/claudeq/claudeq/internal/claudeq"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/claudeq/claudeq/internal/store"
)

// owed is what answered interactive requests (POST /v1/messages) still owe
// once their answer is sent: a ledger entry the store did not take in time,
// a settlement Redis did not take. The answer was paid for upstream, so
// neither is given up: a ledger entry waits here and, as soon as Redis
// answers, in the Redis outbox (queue.Queue.OweLedger) too, which the
// reconciler drains into the store should this process die; a settlement
// waits here (should this process die, the reconciler settles the
// reservation to the ledger entry's cost). RetryOwed retries both. It is
// safe for concurrent use.
type owed struct {
	mu     sync.Mutex
	ledger map[string]*owedEntry
	settle map[string]claudeq.Micros
}

type owedEntry struct {
	e     *store.LedgerEntry
	boxed bool // the Redis outbox holds it too
}

// Outbox keeps ledger entries the store did not take (queue.Queue).
type Outbox interface {
	OweLedger(ctx context.Context, id string, entry []byte) error
	PaidLedger(ctx context.Context, id string) error
}

// oweLedger keeps e until the store takes it, and puts it in the Redis
// outbox at once if it can.
func (s *Server) oweLedger(ctx context.Context, e *store.LedgerEntry) {
	oe := &owedEntry{e: e}
	oe.boxed = s.box(ctx, e)
	s.owed.mu.Lock()
	if s.owed.ledger == nil {
		s.owed.ledger = map[string]*owedEntry{}
	}
	s.owed.ledger[e.ID] = oe
	s.owed.mu.Unlock()
	s.log.Warn("the store did not take an interactive request's ledger entry; it is kept and retried", "request_id", e.ID,
		"user_id", e.UserID, "cost_micros", e.CostMicros, "in_redis_outbox", oe.boxed)
}

func (s *Server) box(ctx context.Context, e *store.LedgerEntry) bool {
	if s.ia.Outbox == nil {
		return false
	}
	b, err := json.Marshal(e)
	if err != nil {
		return false
	}
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	return s.ia.Outbox.OweLedger(c, e.ID, b) == nil
}

// oweSettle keeps a settlement Redis did not take.
func (s *Server) oweSettle(id string, cost claudeq.Micros) {
	s.owed.mu.Lock()
	if s.owed.settle == nil {
		s.owed.settle = map[string]claudeq.Micros{}
	}
	s.owed.settle[id] = cost
	s.owed.mu.Unlock()
	s.log.Warn("settling an interactive request failed; it is kept and retried", "request_id", id)
}

// Owed returns the ids of the ledger entries and settlements this process
// still owes.
func (s *Server) Owed() (ledger, settle []string) {
	s.owed.mu.Lock()
	defer s.owed.mu.Unlock()
	return slices.Sorted(maps.Keys(s.owed.ledger)), slices.Sorted(maps.Keys(s.owed.settle))
}

// RetryOwed tries once more what this process owes, and returns how much
// is still owed.
func (s *Server) RetryOwed(ctx context.Context) int {
	s.owed.mu.Lock()
	ledger, settle := maps.Clone(s.owed.ledger), maps.Clone(s.owed.settle)
	s.owed.mu.Unlock()
	for id, oe := range ledger {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := s.ia.Committer.Commit(c, store.Record{Ledger: oe.e})
		cancel()
		if err != nil {
			if !oe.boxed && s.box(ctx, oe.e) {
				s.owed.mu.Lock()
				oe.boxed = true
				s.owed.mu.Unlock()
			}
			continue
		}
		if oe.boxed {
			c, cancel := context.WithTimeout(ctx, 3*time.Second)
			if err := s.ia.Outbox.PaidLedger(c, id); err != nil {
				s.log.Warn("dropping a written ledger entry from the Redis outbox failed; the reconciler will", "request_id", id, "err", err)
			}
			cancel()
		}
		s.owed.mu.Lock()
		delete(s.owed.ledger, id)
		s.owed.mu.Unlock()
		s.log.Info("an owed ledger entry is written", "request_id", id)
	}
	if q := s.quota(); q != nil {
		for id, cost := range settle {
			c, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := q.Settle(c, id, cost)
			cancel()
			if err != nil {
				continue
			}
			s.owed.mu.Lock()
			delete(s.owed.settle, id)
			s.owed.mu.Unlock()
		}
	}
	s.owed.mu.Lock()
	defer s.owed.mu.Unlock()
	return len(s.owed.ledger) + len(s.owed.settle)
}

// RunOwed retries what is owed every interval until ctx ends, then once
// more (call it after Drain); what is still owed then is logged: ledger
// entries in the Redis outbox are written by the reconciler, the others
// are lost with this process (docs/reliability.md).
func (s *Server) RunOwed(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if l, st := s.Owed(); len(l)+len(st) > 0 {
				s.RetryOwed(ctx)
			}
		}
	}
}

// FinishOwed makes a last attempt at what is owed, at shutdown, and logs
// what could not be paid.
func (s *Server) FinishOwed(ctx context.Context) {
	if s.RetryOwed(ctx) == 0 {
		return
	}
	s.owed.mu.Lock()
	defer s.owed.mu.Unlock()
	var lost []string
	for id, oe := range s.owed.ledger {
		if !oe.boxed {
			lost = append(lost, id)
		}
	}
	s.log.Error("stopping with interactive requests still owed", "ledger_entries", len(s.owed.ledger),
		"not_in_redis_outbox", lost, "settlements", slices.Sorted(maps.Keys(s.owed.settle)))
}
