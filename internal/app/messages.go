package app

import (
	"time"

	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/redisbatch"
	"github.com/claudeq/claudeq/internal/store"
)

// ledgerLinger is how long an interactive request's ledger entry waits for
// others to share its write.
const ledgerLinger = 50 * time.Millisecond

// backgroundWindow is how long the Redis calls that nobody waits for (the
// fleet's admission and outcome records, budget settlements) wait for
// others to share their round trip.
const backgroundWindow = 5 * time.Millisecond

// interactive wires the Anthropic-compatible API (POST /v1/messages…),
// which an interactive client waits on. Its calls go through the fleet and
// the budgets the jobs use; the Redis calls nobody waits for (the fleet's
// admission and outcome records, settlements) share pipelines through a
// background batcher, and its ledger entries go through a group committer
// of their own that lingers, so that a request costs as few round trips
// and writes as possible.
func (a *App) interactive(o Options) api.Interactive {
	a.ibatch = redisbatch.New(a.rdb, backgroundWindow, 0)
	a.Fleet.SetBackground(a.ibatch) // interactive calls only; Fleet.Call is unchanged
	a.icommit = a.Store.NewCommitter(store.CommitterOptions{Logger: o.Logger, Flushers: 2, Linger: ledgerLinger})
	return api.Interactive{Upstream: a.Fleet, Background: a.ibatch, Committer: a.icommit, Outbox: a.Queue}
}
