// Command scheduler enqueues claudeq's periodic tasks once per period,
// however many schedulers run: the upstream health probe of every node
// (which also reads its model list), the reconcile sweep (lost jobs, stale
// budget reservations, owed ledger entries), the batch expiry sweep, the
// audit chain's anchor and the retention sweep. Budgets reset by date, not
// by a task. Configuration is read from CLAUDEQ_* environment variables
// (see the README); --help and --version print without starting.
package main

import "github.com/claudeq/claudeq/internal/app"

func main() {
	app.Main("scheduler", "claudeq's scheduler (probes, reconciliation, batch expiry, audit anchors, retention)",
		app.Options{Roles: app.Roles{Scheduler: true}})
}
