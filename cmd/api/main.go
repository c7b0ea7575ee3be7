// Command api serves claudeq's HTTP API: it authenticates, validates,
// answers from the cache and queues jobs for the workers, and serves
// /monitoring. Configuration is read from CLAUDEQ_* environment variables
// (see the README); --help and --version print without starting.
package main

import (
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/app/monitorui"
)

func main() {
	app.Main("api", "claudeq's HTTP API (jobs, the Anthropic-compatible API, batches, admin, /monitoring)",
		app.Options{Roles: app.Roles{API: true}, Monitor: monitorui.New})
}
