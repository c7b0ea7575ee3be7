package upstream_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/upstream"
)

// BenchmarkPick measures choosing a node with the shared snapshot cached
// (default SnapshotTTL: one Redis round trip per 200 ms, amortised away
// here). round_robin pays one INCR round trip per Pick by design.
func BenchmarkPick(b *testing.B) {
	rdb := redistest.New(b).Client(b)
	ctx := context.Background()
	for _, strategy := range strategies {
		for _, n := range []int{3, 50} {
			b.Run(fmt.Sprintf("%s/%dnodes", strategy, n), func(b *testing.B) {
				prefix := fmt.Sprintf("{bench:%s:%d}:", strategy, n)
				nodes := make([]upstream.NodeConfig, n)
				for i := range nodes {
					nodes[i] = upstream.NodeConfig{
						Name: fmt.Sprintf("node-%02d", i), URL: "http://127.0.0.1:9", Weight: i%5 + 1,
					}
					// Measured latencies, so that response_time compares
					// instead of exploring untried nodes.
					require.NoError(b, rdb.HSet(ctx, prefix+"node:"+nodes[i].Name,
						"ewma", 100+i, "samples", 10, "seen_at", time.Now().UnixMilli()).Err())
				}
				f, err := upstream.NewFleet(nodes, upstream.FleetOptions{
					Strategy: strategy, Redis: rdb, KeyPrefix: prefix, Logger: slog.New(slog.DiscardHandler),
				})
				require.NoError(b, err)
				_, err = f.Pick(ctx, model, nil)
				require.NoError(b, err)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := f.Pick(ctx, model, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPickParallel is BenchmarkPick from GOMAXPROCS goroutines on one
// Fleet, the way a worker process uses it.
func BenchmarkPickParallel(b *testing.B) {
	rdb := redistest.New(b).Client(b)
	for _, strategy := range strategies {
		b.Run(strategy+"/50nodes", func(b *testing.B) {
			nodes := make([]upstream.NodeConfig, 50)
			for i := range nodes {
				nodes[i] = upstream.NodeConfig{Name: fmt.Sprintf("node-%02d", i), URL: "http://127.0.0.1:9", Weight: 1}
			}
			f, err := upstream.NewFleet(nodes, upstream.FleetOptions{
				Strategy: strategy, Redis: rdb, KeyPrefix: "{benchp:" + strategy + "}:", Logger: slog.New(slog.DiscardHandler),
			})
			require.NoError(b, err)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := f.Pick(context.Background(), model, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRefresh measures the one round trip that refreshes the shared
// snapshot (SnapshotTTL negative: every Pick reads Redis). With the default
// SnapshotTTL a process pays it at most five times a second.
func BenchmarkRefresh(b *testing.B) {
	rdb := redistest.New(b).Client(b)
	for _, n := range []int{3, 50} {
		b.Run(fmt.Sprintf("%dnodes", n), func(b *testing.B) {
			nodes := make([]upstream.NodeConfig, n)
			for i := range nodes {
				nodes[i] = upstream.NodeConfig{Name: fmt.Sprintf("node-%02d", i), URL: "http://127.0.0.1:9", Weight: 1}
			}
			f, err := upstream.NewFleet(nodes, upstream.FleetOptions{
				Strategy: upstream.WeightedRandom, Redis: rdb, KeyPrefix: fmt.Sprintf("{benchr:%d}:", n),
				SnapshotTTL: -1, Logger: slog.New(slog.DiscardHandler),
			})
			require.NoError(b, err)
			ctx := context.Background()
			require.NoError(b, rdb.ConfigResetStat(ctx).Err())
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.Pick(ctx, model, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(redisUsecPerCall(b, rdb, "evalsha"), "redis-µs/refresh")
		})
	}
}

// redisUsecPerCall reads the server-side cost of cmd from INFO commandstats.
func redisUsecPerCall(b *testing.B, rdb *redis.Client, cmd string) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(b, err)
	for _, line := range strings.Split(info, "\r\n") {
		rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "usec_per_call="); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(b, err)
				return f
			}
		}
	}
	return 0
}
