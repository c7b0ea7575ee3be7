package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/store"
)

// storeLoadRateEnv is the records per second a "storeload" child appends
// (0: as fast as its writer takes them).
const storeLoadRateEnv = "CLAUDEQ_BENCH_STORELOAD_RATE"

// storeLoad is the "storeload" child: figure 8's control. It appends
// request records like the api's to the audit log of the database that
// CLAUDEQ_MONGO_URI and CLAUDEQ_MONGO_DATABASE name, through the same
// audit.Writer (same buffer, batches, lease in CLAUDEQ_REDIS_URL's Redis,
// insert command), at the rate storeLoadRateEnv gives, until SIGTERM. Run
// beside an api whose own audit log is off, it gives the store the work an
// audited api would give it, so that the api with the log and the api
// without it can be compared on a store equally busy.
func storeLoad(ctx context.Context) error {
	rate, err := strconv.ParseFloat(os.Getenv(storeLoadRateEnv), 64)
	if err != nil || rate < 0 {
		return fmt.Errorf("%s=%q: want records per second, 0 for as fast as possible", storeLoadRateEnv, os.Getenv(storeLoadRateEnv))
	}
	ropt, err := redis.ParseURL(os.Getenv("CLAUDEQ_REDIS_URL"))
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ropt)
	defer func() { _ = rdb.Close() }()
	db, off, err := store.Connect(ctx, os.Getenv("CLAUDEQ_MONGO_URI"), os.Getenv("CLAUDEQ_MONGO_DATABASE"))
	if err != nil {
		return err
	}
	defer func() { _ = off(context.WithoutCancel(ctx)) }()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	chain, err := audit.New(audit.Config{DB: db, Redis: rdb, Logger: log})
	if err != nil {
		return err
	}
	if err := chain.EnsureIndexes(ctx); err != nil {
		return err
	}
	w, err := chain.NewWriter(audit.WriterOptions{})
	if err != nil {
		return err
	}
	fmt.Println(readyPrefix + "storeload")
	var n int64
	logOne := func() error {
		n++
		h := sha256.Sum256(strconv.AppendInt(nil, n, 10))
		return w.Log(audit.Record{Kind: audit.KindRequest, UserID: "bench-user", KeyID: "bench-key",
			RequestHash: hex.EncodeToString(h[:]), Model: "claude-haiku-5-5", ClientIP: "127.0.0.1",
			UserAgent: "Go-http-client/1.1", Decision: audit.DecisionAllowed})
	}
	if rate == 0 {
		for ctx.Err() == nil {
			if err := logOne(); errors.Is(err, audit.ErrOverloaded) {
				time.Sleep(time.Millisecond)
			} else if err != nil {
				return err
			}
		}
	} else {
		const tick = 10 * time.Millisecond
		t := time.NewTicker(tick)
		start, logged := time.Now(), int64(0)
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case now := <-t.C:
				for due := int64(rate * now.Sub(start).Seconds()); logged < due; logged++ {
					if err := logOne(); err != nil && !errors.Is(err, audit.ErrOverloaded) {
						return err
					}
				}
			}
		}
		t.Stop()
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return w.Close(cctx)
}
