// Command api serves claudeq's HTTP API: it authenticates, validates,
// answers from the cache and queues jobs for the workers. Configuration is
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
	if err := app.Run(ctx, app.Roles{API: true}, os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}
