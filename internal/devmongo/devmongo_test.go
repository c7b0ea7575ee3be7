package devmongo_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/devmongo"
)

func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(2 * time.Second).SetConnectTimeout(time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func TestStartPersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data", "mongo") // does not exist yet

	start := time.Now()
	uri, stop, err := devmongo.Start(ctx, dir, nil)
	require.NoError(t, err)
	t.Logf("Start: %v (%s)", time.Since(start), uri)
	require.Regexp(t, `^mongodb://127\.0\.0\.1:\d+/$`, uri)

	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	c := connect(t, uri)
	_, err = c.Database("claudeq").Collection("jobs").InsertOne(ctx, bson.M{"_id": "a", "n": 1})
	require.NoError(t, err)
	// Disconnect first so stop does not wait for FerretDB's grace period.
	require.NoError(t, c.Disconnect(ctx))

	start = time.Now()
	stop()
	t.Logf("stop (no clients): %v", time.Since(start))
	stop() // idempotent

	uri2, stop2, err := devmongo.Start(ctx, dir, nil)
	require.NoError(t, err)
	t.Cleanup(stop2)

	var got bson.M
	c2 := connect(t, uri2)
	require.NoError(t, c2.Database("claudeq").Collection("jobs").FindOne(ctx, bson.M{"_id": "a"}).Decode(&got))
	require.EqualValues(t, 1, got["n"])
}

func TestStopCutsClients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri, stop, err := devmongo.Start(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	c := connect(t, uri)
	require.NoError(t, c.Ping(ctx, nil))

	start := time.Now()
	stop() // the client keeps an idle pooled connection: FerretDB waits ≤ 3 s
	t.Logf("stop (idle client connected): %v", time.Since(start))

	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	require.Error(t, c.Ping(pctx, nil))
}

func TestContextOnlyBoundsStartup(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	uri, stop, err := devmongo.Start(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	cancel()

	c := connect(t, uri)
	require.NoError(t, c.Ping(context.Background(), nil), "still serving after ctx is cancelled")
	require.NoError(t, c.Disconnect(context.Background()))
	stop()

	c2 := connect(t, uri)
	pctx, cancelPing := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancelPing()
	require.Error(t, c2.Ping(pctx, nil))
}

func TestLoggerGetsOnlyErrors(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	uri, stop, err := devmongo.Start(context.Background(), t.TempDir(), logger)
	require.NoError(t, err)
	c := connect(t, uri)
	coll := c.Database("d").Collection("c")
	_, err = coll.InsertOne(context.Background(), bson.M{"_id": 1})
	require.NoError(t, err)
	_, err = coll.InsertOne(context.Background(), bson.M{"_id": 1})
	require.True(t, mongo.IsDuplicateKeyError(err), "%v", err)
	require.NoError(t, c.Disconnect(context.Background()))
	stop()
	require.Empty(t, buf.String(), "Info/Warn chatter (connections, failed commands) is dropped")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := devmongo.Start(ctx, t.TempDir(), nil)
	require.ErrorIs(t, err, context.Canceled)

	_, _, err = devmongo.Start(context.Background(), "", nil)
	require.Error(t, err)

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, _, err = devmongo.Start(context.Background(), file, nil)
	require.Error(t, err, "data dir is a regular file")
}

func TestStartAddrBusyPort(t *testing.T) {
	t.Parallel()
	uri, stop, err := devmongo.Start(context.Background(), t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(stop)
	addr := uri[len("mongodb://") : len(uri)-1]

	_, _, err = devmongo.StartAddr(context.Background(), t.TempDir(), addr, nil)
	require.Error(t, err)
}
