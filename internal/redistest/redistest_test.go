package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestNewPing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()
	s := New(t)
	t.Logf("New (redis-server up, PING ok): %v", time.Since(start))

	if s.bin != "" {
		require.Regexp(t, `^127\.0\.0\.1:\d+$`, s.Addr())
		require.Equal(t, 0, s.DB())
	}
	require.Equal(t, fmt.Sprintf("redis://%s/%d", s.Addr(), s.DB()), s.URL())
	c := s.Client(t)
	require.NoError(t, c.Ping(ctx).Err())

	opts, err := redis.ParseURL(s.URL())
	require.NoError(t, err)
	c2 := redis.NewClient(opts)
	defer c2.Close()
	require.NoError(t, c2.Set(ctx, "k", "v", 0).Err())
	require.Equal(t, "v", c.Get(ctx, "k").Val())
}

// newDedicated is New for tests that need a redis-server process; it skips
// when New falls back to CLAUDEQ_TEST_REDIS_URL.
func newDedicated(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s := New(t, opts...)
	if s.bin == "" {
		t.Skip("needs a dedicated redis-server, not " + EnvRedisURL)
	}
	return s
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newDedicated(t).Client(t)
	cfg := func(c *redis.Client, key string) string {
		v, err := c.ConfigGet(ctx, key).Result()
		require.NoError(t, err)
		return v[key]
	}
	require.Equal(t, "", cfg(c, "save"))
	require.Equal(t, "no", cfg(c, "appendonly"))
	require.Equal(t, "noeviction", cfg(c, "maxmemory-policy"))
	require.Equal(t, "127.0.0.1", cfg(c, "bind"))

	a := newDedicated(t, WithAOF(), WithArgs("--maxmemory", "64mb")).Client(t)
	require.Equal(t, "yes", cfg(a, "appendonly"))
	require.Equal(t, "everysec", cfg(a, "appendfsync"))
	require.Equal(t, strconv.Itoa(64<<20), cfg(a, "maxmemory"))
}

func TestKillRestartWithAOF(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newDedicated(t, WithAOF())
	c := s.Client(t)
	// Every acknowledged write is fsynced: no need to wait for everysec.
	require.NoError(t, c.ConfigSet(ctx, "appendfsync", "always").Err())
	require.NoError(t, c.Set(ctx, "job:1", "queued", 0).Err())
	require.NoError(t, c.RPush(ctx, "queue", "a", "b").Err())
	require.NoError(t, c.HSet(ctx, "h", "f", "v").Err())

	start := time.Now()
	s.Kill()
	t.Logf("Kill: %v", time.Since(start))
	s.Kill() // no-op

	noRetry := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer noRetry.Close()
	require.Error(t, noRetry.Ping(ctx).Err(), "commands fail while killed")
	require.Error(t, noRetry.Get(ctx, "job:1").Err())

	start = time.Now()
	s.Restart()
	t.Logf("Restart (AOF load, PING ok): %v", time.Since(start))

	require.Equal(t, "queued", c.Get(ctx, "job:1").Val(), "data written before Kill survives")
	require.Equal(t, []string{"a", "b"}, c.LRange(ctx, "queue", 0, -1).Val())
	require.Equal(t, "v", c.HGet(ctx, "h", "f").Val())
}

func TestKillRestartWithAOFEverysec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newDedicated(t, WithAOF())
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	time.Sleep(1500 * time.Millisecond) // let the everysec fsync happen
	s.Kill()
	s.Restart()
	require.Equal(t, "v", c.Get(ctx, "k").Val())
}

func TestRestartWithoutAOFLosesData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newDedicated(t)
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	s.Restart() // kills first
	require.NoError(t, c.Ping(ctx).Err())
	require.Equal(t, int64(0), c.Exists(ctx, "k").Val())
}

func TestParallelServersAreIndependent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var wg sync.WaitGroup
	servers := make([]*Server, 4)
	for i := range servers {
		servers[i] = New(t)
	}
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Client(t).Set(ctx, "id", i, 0).Err()
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, s := range servers {
		require.False(t, seen[s.URL()])
		seen[s.URL()] = true
		require.Equal(t, strconv.Itoa(i), s.Client(t).Get(ctx, "id").Val())
	}
}

// fakeTB records logs and cleanups of New and reports the test as failed.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	logs     []string
	cleanups []func()
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Failed() bool      { return true }
func (f *fakeTB) Cleanup(fn func()) { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }
func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func TestLogPrintedOnFailure(t *testing.T) {
	t.Parallel()
	f := &fakeTB{TB: t}
	s := New(f)
	if s.bin == "" {
		f.runCleanups()
		t.Skip("needs a dedicated redis-server, not " + EnvRedisURL)
	}
	require.NoError(t, s.Client(t).Ping(context.Background()).Err())
	f.runCleanups()
	logs := strings.Join(f.logs, "\n")
	require.Contains(t, logs, "Ready to accept connections")
	require.Contains(t, logs, "redis.log")
}

func TestSkipOrFatal(t *testing.T) {
	t.Parallel()
	var skipped, failed bool
	rec := &recorderTB{TB: t, skip: func() { skipped = true }, fatal: func() { failed = true }}
	skipOrFatal(rec, "no server")
	if requireIntegration() {
		require.True(t, failed)
		require.False(t, skipped)
	} else {
		require.True(t, skipped)
		require.False(t, failed)
	}
}

type recorderTB struct {
	testing.TB
	skip, fatal func()
}

func (r *recorderTB) Helper()      {}
func (r *recorderTB) Skip(...any)  { r.skip() }
func (r *recorderTB) Fatal(...any) { r.fatal() }

func TestExternalServerLeases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	backing := newDedicated(t)
	admin := backing.Client(t)
	// Leftovers of an earlier run must be flushed away.
	for db := firstLeasedDB; db <= lastLeasedDB; db++ {
		c := redis.NewClient(&redis.Options{Addr: backing.Addr(), DB: db})
		require.NoError(t, c.Set(ctx, "leftover", "x", 0).Err())
		require.NoError(t, c.Close())
	}

	const n = lastLeasedDB - firstLeasedDB + 1
	t.Run("lease all", func(t *testing.T) {
		dbs := map[int]bool{}
		for i := 0; i < n; i++ {
			s := newExternal(t, backing.URL())
			require.GreaterOrEqual(t, s.DB(), firstLeasedDB)
			require.LessOrEqual(t, s.DB(), lastLeasedDB)
			require.False(t, dbs[s.DB()], "database %d leased twice", s.DB())
			dbs[s.DB()] = true
			require.Equal(t, backing.Addr(), s.Addr())
			require.Equal(t, fmt.Sprintf("redis://%s/%d", backing.Addr(), s.DB()), s.URL())
			c := s.Client(t)
			require.Equal(t, int64(0), c.Exists(ctx, "leftover").Val(), "flushed before use")
			require.NoError(t, c.Set(ctx, "mine", s.DB(), 0).Err())
		}
		keys, err := admin.Keys(ctx, leaseKeyPrefix+"*").Result()
		require.NoError(t, err)
		require.Len(t, keys, n)

		// A 16th lease waits until one is released.
		got := make(chan int, 1)
		go func() {
			db, err := acquire(ctx, admin, "waiter")
			if err == nil {
				got <- db
			}
		}()
		select {
		case db := <-got:
			t.Fatalf("acquired database %d while all were leased", db)
		case <-time.After(300 * time.Millisecond):
		}
		require.NoError(t, admin.Del(ctx, leaseKeyPrefix+"7").Err())
		select {
		case db := <-got:
			require.Equal(t, 7, db)
		case <-time.After(5 * time.Second):
			t.Fatal("waiter did not get the released database")
		}
		require.NoError(t, admin.Del(ctx, leaseKeyPrefix+"7").Err())
	})

	keys, err := admin.Keys(ctx, leaseKeyPrefix+"*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "leases released at cleanup")
	for db := firstLeasedDB; db <= lastLeasedDB; db++ {
		c := redis.NewClient(&redis.Options{Addr: backing.Addr(), DB: db})
		require.Equal(t, int64(0), c.DBSize(ctx).Val(), "database %d flushed at cleanup", db)
		require.NoError(t, c.Close())
	}

	if !requireIntegration() {
		var inner *testing.T
		t.Run("kill skips", func(t *testing.T) {
			inner = t
			newExternal(t, backing.URL()).Kill()
		})
		require.True(t, inner.Skipped())
	}
}
