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
// ("mongodb://127.0.0.1:PORT/") is immediately usable. logger receives
// FerretDB's own logs; nil discards them. FerretDB is chatty: it logs every
// connection at Info and every failed command at Warn (including the
// driver's routine "endSessions", which it does not implement), so a logger
// filtered to Error level is usually what you want.
//
// The server runs until stop is called or ctx is canceled. stop shuts it down
// (closes the listener, waits for connections and the SQLite backend to
// close) and blocks until that is done; it is idempotent and safe to call
// from several goroutines. When ctx is canceled the server shuts down by
// itself, but stop must still be called to wait for it. Note that FerretDB
// gives already-connected clients up to 3 seconds to disconnect, so stop can
// take that long while clients keep idle connections open.
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
	}

	// Check that addr is free first: when ferretdb.New fails to bind, it
	// leaks its already-opened SQLite backend.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("devmongo: listen on %s: %w", addr, err)
	}
	_ = ln.Close()

	// FerretDB wants a "file:" URI naming an existing directory, ending in "/".
	sqliteURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs) + "/"}).String()

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

	runCtx, cancel := context.WithCancel(ctx)
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
