package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/hibiken/asynq"
)

// Logger adapts slog to asynq's logger interface.
type Logger struct{ l *slog.Logger }

var _ asynq.Logger = Logger{}

// NewLogger returns an asynq logger writing to l.
func NewLogger(l *slog.Logger) Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return Logger{l: l.With("component", "asynq")}
}

func (a Logger) log(level slog.Level, args []any) {
	a.l.Log(context.Background(), level, fmt.Sprint(args...))
}

// Debug implements asynq.Logger.
func (a Logger) Debug(args ...any) { a.log(slog.LevelDebug, args) }

// Info implements asynq.Logger.
func (a Logger) Info(args ...any) { a.log(slog.LevelInfo, args) }

// Warn implements asynq.Logger.
func (a Logger) Warn(args ...any) { a.log(slog.LevelWarn, args) }

// Error implements asynq.Logger.
func (a Logger) Error(args ...any) { a.log(slog.LevelError, args) }

// Fatal implements asynq.Logger: it logs and exits, as asynq expects.
func (a Logger) Fatal(args ...any) { a.log(slog.LevelError, args); os.Exit(1) }
