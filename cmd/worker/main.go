// Command worker runs claudeq jobs from the queue: it calls Claude, stores
// results and conversations in MongoDB and writes the cache. Configuration
// is read from CLAUDEQ_* environment variables (see the README); --help
// and --version print without starting.
package main

import "github.com/claudeq/claudeq/internal/app"

func main() {
	app.Main("worker", "claudeq's worker (runs jobs, batch requests and webhook deliveries from the queue)",
		app.Options{Roles: app.Roles{Worker: true}})
}
