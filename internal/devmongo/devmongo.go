// Package devmongo runs an embedded FerretDB (MongoDB wire protocol on top of
// SQLite) inside the current process. It backs `claudeq dev`, which needs a
// MongoDB-compatible server without any external dependency, and it is reused
// by internal/mongotest.
//
// FerretDB's SQLite backend has known limitations compared with MongoDB: no
// multi-document transactions, no TTL indexes, and concurrent `$inc` on one
// document can lose updates. Code that must run against the embedded server
// must not rely on those features.
//
// All functions in this package are safe for concurrent use.
package devmongo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// DefaultAddr is the listen address used by [Start]: loopback only, any free port.
const DefaultAddr = "127.0.0.1:0"

// newMu serialises ferretdb.New: it writes package-level state
// (version.Get().Package) and would otherwise be a data race when several
// servers start concurrently (e.g. parallel tests).
var newMu sync.Mutex

// Start runs an embedded FerretDB with its SQLite data under dir and a TCP
// listener on 127.0.0.1 with a kernel-chosen port. It is StartAddr with
// [DefaultAddr].
func Start(ctx context.Context, dir string, logger *slog.Logger) (uri string, stop func(), err error) {
	return StartAddr(ctx, dir, DefaultAddr, logger)
}

// StartAddr runs an embedded FerretDB with its SQLite data under dir
// (created with mode 0700 if missing; one SQLite file per database) and a TCP
// listener on addr (host:port; port 0 picks a free port).
//
// The listener is bound before StartAddr returns, so uri
// ("mongodb://127.0.0.1:PORT/") is immediately usable.
//
// logger receives FerretDB's own Error-level records (with the attribute
// component=ferretdb); nil discards them. Lower levels are always dropped:
// FerretDB logs every connection at Info and every failed command at Warn,
// with a full dump of the reply — including expected failures such as
// duplicate-key errors and the driver's routine "endSessions", which it does
// not implement.
//
// ctx only bounds startup: cancelling it later does not stop the server, so
// that an application can still use the database while it shuts down
// gracefully after its context was cancelled. The server runs until stop is
// called. stop closes the listener, waits for open connections and the
// SQLite backend to close, and returns when that is done; it is idempotent
// and safe to call from several goroutines. FerretDB gives already-connected
// clients up to 3 seconds to disconnect, so stop takes that long while a
// client keeps idle connections open: disconnect clients first.
func StartAddr(ctx context.Context, dir, addr string, logger *slog.Logger) (uri string, stop func(), err error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	if dir == "" {
		return "", nil, errors.New("devmongo: empty data directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("devmongo: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", nil, fmt.Errorf("devmongo: create data directory: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	} else {
		logger = slog.New(minLevel{logger.Handler(), slog.LevelError}).With("component", "ferretdb")
	}

	// Check that addr is free first: when ferretdb.New fails to bind, it
	// leaks its already-opened SQLite backend.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("devmongo: listen on %s: %w", addr, err)
	}
	_ = ln.Close()

	// FerretDB wants a "file:" URI naming an existing directory, ending in "/".
	// synchronous(NORMAL) in WAL mode: a commit survives a crash of this
	// process, not a power loss. FerretDB runs each update in a transaction
	// of its own, and FULL's fsync per commit caps updates at ~100/s.
	sqliteURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs) + "/", RawQuery: "_pragma=synchronous(NORMAL)"}).String()

	newMu.Lock()
	fdb, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	newMu.Unlock()
	if err != nil {
		return "", nil, fmt.Errorf("devmongo: start FerretDB on %s: %w", addr, err)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fdb.Run(runCtx); err != nil {
			logger.Error("devmongo: FerretDB stopped with error", "error", err)
		}
	}()

	// The listener was bound by ferretdb.New, so MongoDBURI does not block.
	uri = fdb.MongoDBURI()

	var once sync.Once
	stop = func() {
		once.Do(cancel)
		<-done
	}
	return uri, stop, nil
}

// minLevel drops records below min before they reach the wrapped handler.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
