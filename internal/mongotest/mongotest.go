// Package mongotest provides MongoDB-wire-protocol servers for tests, backed
// by an embedded FerretDB (SQLite backend, see internal/devmongo), so tests
// need no external MongoDB.
//
// [DB] hands every caller a fresh, uniquely named database on a server shared
// by the whole test binary; the database is dropped when the test ends. When
// the environment variable CLAUDEQ_TEST_MONGO_URI is set, that server is used
// instead of the embedded one (e.g. a real MongoDB in CI).
//
// [NewServer] starts a dedicated embedded server that a test can [Server.Stop]
// and [Server.Start] again on the same port with the same data, to exercise
// "MongoDB is down" paths.
//
// The embedded server does not support multi-document transactions or TTL
// indexes, and concurrent `$inc` on one document may lose updates; tests must
// not depend on those features.
//
// All functions and methods are safe for concurrent use (parallel tests),
// except where a method's comment says otherwise.
package mongotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/devmongo"
)

// EnvMongoURI names the environment variable that, when set, makes [DB] and
// [URI] use that MongoDB server instead of the embedded FerretDB.
const EnvMongoURI = "CLAUDEQ_TEST_MONGO_URI"

// maxDBNameLen is the longest database name FerretDB accepts (MongoDB allows
// a little more; 63 is safe for both).
const maxDBNameLen = 63

// opTimeout bounds each setup/cleanup operation against the server.
const opTimeout = 30 * time.Second

type shared struct {
	uri    string
	client *mongo.Client
	err    error
}

var (
	sharedOnce sync.Once
	sharedSrv  shared

	dbCounter atomic.Uint64
	// runID distinguishes databases of concurrently running test binaries
	// (`go test ./...` runs packages in parallel) on an external server.
	runID = newRunID()
)

func newRunID() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Sprintf("%06x", os.Getpid()&0xffffff)
	}
	return hex.EncodeToString(b[:])
}

// logger returns the logger given to embedded FerretDB instances: errors go
// to stderr. FerretDB logs every failed command (even the driver's routine
// "endSessions", which it does not implement) at Warn level, and everything
// else at Info or below, so only Error is worth showing.
func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// getShared starts (once per test binary) the shared server and its client.
// The embedded server and its data directory (under os.TempDir) live until
// the process exits; databases created by DB are dropped at test cleanup.
func getShared() *shared {
	sharedOnce.Do(func() {
		uri := os.Getenv(EnvMongoURI)
		if uri == "" {
			dir, err := os.MkdirTemp("", "claudeq-mongotest-")
			if err != nil {
				sharedSrv.err = fmt.Errorf("mongotest: create data dir: %w", err)
				return
			}
			// The stop function is deliberately dropped: the shared server
			// serves every test in the binary and dies with the process.
			uri, _, err = devmongo.Start(context.Background(), dir, logger())
			if err != nil {
				sharedSrv.err = fmt.Errorf("mongotest: start embedded FerretDB: %w", err)
				return
			}
		}
		client, err := mongo.Connect(options.Client().ApplyURI(uri))
		if err != nil {
			sharedSrv.err = fmt.Errorf("mongotest: connect to %s: %w", uri, err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := client.Ping(ctx, nil); err != nil {
			sharedSrv.err = fmt.Errorf("mongotest: ping %s: %w", uri, err)
			return
		}
		sharedSrv.uri, sharedSrv.client = uri, client
	})
	return &sharedSrv
}

// URI returns the connection string of the shared server used by [DB],
// starting it if needed (CLAUDEQ_TEST_MONGO_URI if set). Databases other
// tests obtained through DB live on the same server, so a test connecting
// with this URI must only touch its own database.
func URI(t testing.TB) string {
	t.Helper()
	s := getShared()
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.uri
}

// DB returns a fresh, empty database named like "t_<test name>_<run>_<n>"
// (at most 63 characters of [a-z0-9_]) on the shared server, dropped at
// t.Cleanup. Its Client is shared by all tests in the binary: do not
// Disconnect it.
func DB(t testing.TB) *mongo.Database {
	t.Helper()
	s := getShared()
	if s.err != nil {
		t.Fatal(s.err)
	}
	name := dbName(t.Name(), runID, dbCounter.Add(1))
	db := s.client.Database(name)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Normally a no-op; guards against leftovers from a crashed run on an
	// external server.
	if err := db.Drop(ctx); err != nil {
		t.Fatalf("mongotest: drop database %s before use: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Errorf("mongotest: drop database %s: %v", name, err)
		}
	})
	return db
}

// dbName builds "t_<sanitized test name>_<run>_<n>", truncating the test
// name so that the result has at most maxDBNameLen characters of [a-z0-9_].
func dbName(testName, run string, n uint64) string {
	var b strings.Builder
	lastUnderscore := false
	for _, r := range strings.ToLower(testName) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			lastUnderscore = false
		} else if !lastUnderscore {
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	suffix := fmt.Sprintf("_%s_%d", run, n)
	name := strings.Trim(b.String(), "_")
	if limit := maxDBNameLen - len("t_") - len(suffix); len(name) > limit {
		name = strings.TrimRight(name[:limit], "_")
	}
	if name == "" {
		name = "x"
	}
	return "t_" + name + suffix
}
