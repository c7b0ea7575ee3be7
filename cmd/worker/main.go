// Command worker runs claudeq jobs from the queue: it calls Claude, stores
// results and conversations in MongoDB and writes the cache. Configuration is
// read from CLAUDEQ_* environment variables (see the README).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/claudeq/claudeq/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, app.Roles{Worker: true}, os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
