// Command noopworker is the baseline of the bench's process figures: a raw
// asynq server that handles every task by doing nothing, configured from
// the same CLAUDEQ_* settings as claudeq's worker (concurrency, queues and
// their weights, TaskCheckInterval, a go-redis pool sized like the app's).
// It stops on SIGINT or SIGTERM. Only the bench runs it.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/queue"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "noopworker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	opt, err := redis.ParseURL(cfg.RedisURL.Reveal())
	if err != nil {
		return err
	}
	opt.PoolSize = max(64, cfg.WorkerConcurrency+16)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: cfg.WorkerConcurrency, Queues: queue.Weights,
		TaskCheckInterval: cfg.TaskCheckInterval, DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          queue.NewLogger(log), LogLevel: asynq.WarnLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	srv.Shutdown()
	return nil
}
