package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/claudeq/claudeq/internal/config"
)

// NewLogger returns the process logger: JSON (or text) on w at the
// configured level.
func NewLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Run runs o.Roles against the configured Redis and MongoDB until ctx is done,
// then shuts down gracefully. ready, when not nil, is called once the roles
// run (tests use it to learn the address of an api on :0).
func Run(ctx context.Context, o Options, getenv func(string) string, stderr io.Writer, ready func(*App)) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if err := cfg.RequireServers(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := NewLogger(cfg, stderr)
	o.Logger = log
	a, err := Start(ctx, cfg, o)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(a)
	}
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout+5e9)
	defer cancel()
	return a.Shutdown(sctx)
}
