// Command scheduler enqueues claudeq's periodic tasks (the retention sweep) once
// per period, however many schedulers run. Configuration is
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
	if err := app.Run(ctx, app.Roles{Scheduler: true}, os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}
