// Command mongoserver serves the embedded FerretDB of internal/devmongo (the
// MongoDB wire protocol on SQLite) as a process of its own, for the chaos
// tests (internal/chaos), which kill it with SIGKILL and start it again on
// the same address and data.
//
// Usage:
//
//	mongoserver --addr 127.0.0.1:27017 --dir ./data
//
// It prints "mongoserver listening on mongodb://HOST:PORT/" once it
// accepts connections and serves until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/claudeq/claudeq/internal/devmongo"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("dir", "", "data directory (required)")
	flag.Parse()
	if *dir == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	uri, off, err := devmongo.StartAddr(ctx, *dir, *addr, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mongoserver:", err)
		os.Exit(1)
	}
	fmt.Printf("mongoserver listening on %s\n", uri)
	<-ctx.Done()
	off()
}
