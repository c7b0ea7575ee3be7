package devredis

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func client(t *testing.T, s *Server, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// binary is not valid UTF-8 and contains NUL: snapshots must be byte-exact.
const binary = "\x00\xff\xfe payload \x80\x00"

// fill writes one key of every supported type, with and without TTL.
func fill(t *testing.T, ctx context.Context, c *redis.Client) {
	t.Helper()
	require.NoError(t, c.Set(ctx, "str", "hello", 0).Err())
	require.NoError(t, c.Set(ctx, "str:bin", binary, 0).Err())
	require.NoError(t, c.Set(ctx, "str:ttl", "bye", time.Hour).Err())
	require.NoError(t, c.HSet(ctx, "asynq:{default}:t:1", "msg", binary, "state", "pending", "pending_since", "1700000000").Err())
	require.NoError(t, c.HSet(ctx, "hash:ttl", "a", "1").Err())
	require.NoError(t, c.Expire(ctx, "hash:ttl", 30*time.Minute).Err())
	require.NoError(t, c.HSet(ctx, "hash:fieldttl", "keep", "1", "temp", "2").Err())
	require.NoError(t, c.HExpire(ctx, "hash:fieldttl", 10*time.Minute, "temp").Err())
	require.NoError(t, c.RPush(ctx, "asynq:{default}:pending", "t3", "t1", "t2", "t1").Err())
	require.NoError(t, c.RPush(ctx, "list:ttl", "x").Err())
	require.NoError(t, c.Expire(ctx, "list:ttl", 20*time.Minute).Err())
	require.NoError(t, c.SAdd(ctx, "asynq:queues", "default", "critical", binary).Err())
	require.NoError(t, c.ZAdd(ctx, "asynq:{default}:scheduled",
		redis.Z{Score: 1700000000, Member: "t4"},
		redis.Z{Score: 1.5, Member: "t5"},
		redis.Z{Score: -3.25e-7, Member: "t6"},
		redis.Z{Score: math.Inf(1), Member: "t7"},
	).Err())
	require.NoError(t, c.ZAdd(ctx, "zset:ttl", redis.Z{Score: 2, Member: "m"}).Err())
	require.NoError(t, c.Expire(ctx, "zset:ttl", 40*time.Minute).Err())
	require.NoError(t, c.XAdd(ctx, &redis.XAddArgs{Stream: "events", ID: "1-1", Values: []string{"f", "v", "g", binary}}).Err())
	require.NoError(t, c.XAdd(ctx, &redis.XAddArgs{Stream: "events", ID: "2-0", Values: []string{"f", "w"}}).Err())
}

type keyDump struct {
	Type  string
	Value any
	PTTL  time.Duration // -1 (as time.Duration) if none
}

// dump reads every key of the client's DB through the Redis protocol.
func dump(t *testing.T, ctx context.Context, c *redis.Client) map[string]keyDump {
	t.Helper()
	keys, err := c.Keys(ctx, "*").Result()
	require.NoError(t, err)
	out := map[string]keyDump{}
	for _, k := range keys {
		typ, err := c.Type(ctx, k).Result()
		require.NoError(t, err)
		var v any
		switch typ {
		case "string":
			v, err = c.Get(ctx, k).Result()
		case "hash":
			v, err = c.HGetAll(ctx, k).Result()
		case "list":
			v, err = c.LRange(ctx, k, 0, -1).Result()
		case "set":
			var m []string
			m, err = c.SMembers(ctx, k).Result()
			sort.Strings(m)
			v = m
		case "zset":
			v, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "stream":
			v, err = c.XRange(ctx, k, "-", "+").Result()
		default:
			t.Fatalf("unexpected type %q of %q", typ, k)
		}
		require.NoError(t, err)
		pttl, err := c.PTTL(ctx, k).Result()
		require.NoError(t, err)
		out[k] = keyDump{Type: typ, Value: v, PTTL: pttl}
	}
	return out
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state", "redis.snapshot") // dir created by Save

	s1 := start(t, Options{SnapshotPath: path})
	require.Regexp(t, `^redis://127\.0\.0\.1:\d+/0$`, s1.URL())
	c0, c3 := client(t, s1, 0), client(t, s1, 3)
	fill(t, ctx, c0)
	fill(t, ctx, c3)
	require.NoError(t, c3.Set(ctx, "only-in-3", "x", 0).Err())
	require.NoError(t, c0.Set(ctx, "short", "gone", 300*time.Millisecond).Err())

	before0, before3 := dump(t, ctx, c0), dump(t, ctx, c3)
	fieldTTL, err := c0.HTTL(ctx, "hash:fieldttl", "temp").Result()
	require.NoError(t, err)
	require.Len(t, fieldTTL, 1)
	require.Greater(t, fieldTTL[0], int64(500))

	t0 := time.Now()
	require.NoError(t, s1.Close())
	t.Logf("Close (incl. save): %v", time.Since(t0))
	require.NoError(t, s1.Close(), "Close is idempotent")

	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temp files left behind")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	time.Sleep(400 * time.Millisecond) // "short" expires while stopped

	t0 = time.Now()
	s2 := start(t, Options{SnapshotPath: path})
	t.Logf("Start (incl. load): %v", time.Since(t0))
	d0, d3 := client(t, s2, 0), client(t, s2, 3)
	after0, after3 := dump(t, ctx, d0), dump(t, ctx, d3)

	delete(before0, "short")
	require.NotContains(t, after0, "short", "key that expired while stopped is not loaded")
	for name, pair := range map[string][2]map[string]keyDump{"db0": {before0, after0}, "db3": {before3, after3}} {
		before, after := pair[0], pair[1]
		require.Len(t, after, len(before), name)
		for k, b := range before {
			a, ok := after[k]
			require.True(t, ok, "%s: key %q lost", name, k)
			require.Equal(t, b.Type, a.Type, "%s %q", name, k)
			require.Equal(t, b.Value, a.Value, "%s %q", name, k)
			if b.PTTL < 0 {
				require.Equal(t, b.PTTL, a.PTTL, "%s %q: no TTL", name, k)
			} else {
				require.InDelta(t, b.PTTL.Seconds(), a.PTTL.Seconds(), 2, "%s %q: TTL preserved", name, k)
				require.Less(t, a.PTTL, b.PTTL, "%s %q: TTL kept counting down", name, k)
			}
		}
	}
	require.Contains(t, after3, "only-in-3")
	require.NotContains(t, after0, "only-in-3")

	fieldTTL2, err := d0.HTTL(ctx, "hash:fieldttl", "temp").Result()
	require.NoError(t, err)
	require.InDelta(t, fieldTTL[0], fieldTTL2[0], 2, "hash field TTL preserved")
}

func TestKeysExpireOnTheirOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := start(t, Options{})
	c := client(t, s, 5)

	set := time.Now()
	require.NoError(t, c.Set(ctx, "k", "v", 2*time.Second).Err())
	require.NoError(t, c.Set(ctx, "forever", "v", 0).Err())

	time.Sleep(time.Second)
	pttl, err := c.PTTL(ctx, "k").Result()
	require.NoError(t, err)
	require.Less(t, pttl, 1100*time.Millisecond, "TTL counts down with real time")
	require.Greater(t, pttl, 500*time.Millisecond)

	require.Eventually(t, func() bool {
		n, err := c.Exists(ctx, "k").Result()
		return err == nil && n == 0
	}, 3*time.Second, 20*time.Millisecond)
	elapsed := time.Since(set)
	t.Logf("2s key expired after %v", elapsed)
	require.Greater(t, elapsed, 2*time.Second-DefaultClockInterval-50*time.Millisecond, "not much too early")
	require.Equal(t, int64(1), c.Exists(ctx, "forever").Val())
}

func TestTimeAndExpireAtFollowWallClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := start(t, Options{})
	c := client(t, s, 0)

	tm, err := c.Time(ctx).Result()
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), tm, time.Second)

	time.Sleep(300 * time.Millisecond)
	tm2, err := c.Time(ctx).Result()
	require.NoError(t, err)
	require.Greater(t, tm2.Sub(tm), 250*time.Millisecond, "TIME advances")

	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	require.NoError(t, c.ExpireAt(ctx, "k", time.Now().Add(time.Minute)).Err())
	ttl, err := c.PTTL(ctx, "k").Result()
	require.NoError(t, err)
	require.InDelta(t, time.Minute.Seconds(), ttl.Seconds(), 1)
}

func TestNoPersistence(t *testing.T) {
	t.Parallel()
	s, err := Start(Options{Addr: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NoError(t, s.Save())
	require.NoError(t, s.Close())
}

func TestLiveSave(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "snap")
	s := start(t, Options{SnapshotPath: path})
	c := client(t, s, 0)
	require.NoError(t, c.Set(ctx, "a", "1", 0).Err())
	require.NoError(t, s.Save())
	require.NoError(t, c.Set(ctx, "b", "2", 0).Err()) // after the save

	// Load the live snapshot elsewhere while s keeps running.
	s2 := start(t, Options{SnapshotPath: path})
	require.NoError(t, s2.Close()) // rewrites path with the same content
	s3 := start(t, Options{SnapshotPath: path})
	c3 := client(t, s3, 0)
	require.Equal(t, "1", c3.Get(ctx, "a").Val())
	require.Equal(t, int64(0), c3.Exists(ctx, "b").Val())
}

func TestBadSnapshot(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "snap")
	require.NoError(t, os.WriteFile(path, []byte("not a gob"), 0o600))
	_, err := Start(Options{SnapshotPath: path})
	require.Error(t, err)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "not a gob", string(got), "bad snapshot left untouched")
}

func TestAddrInUse(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	_, err := Start(Options{Addr: s.Addr()})
	require.Error(t, err)
}

func TestConcurrentUseWhileTicking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "snap")
	s := start(t, Options{SnapshotPath: path, ClockInterval: time.Millisecond})
	c := client(t, s, 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			_ = c.Set(ctx, "k", i, 50*time.Millisecond).Err()
			_ = c.HSet(ctx, "h", "f", i).Err()
		}
	}()
	for i := 0; i < 20; i++ {
		require.NoError(t, s.Save())
	}
	<-done
	require.NoError(t, s.Close())
}
