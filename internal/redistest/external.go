package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Database leases on an external server. Test binaries of different
// packages run in parallel (`go test ./...`) against the same server, so an
// in-process counter is not enough: each database 1–15 is claimed with a
// lease key in database 0, refreshed while the test runs and deleted at
// cleanup. A crashed test binary's leases expire after leaseTTL.
const (
	leaseKeyPrefix = "claudeq:redistest:lease:db:"
	leaseTTL       = time.Minute
	leaseRefresh   = leaseTTL / 3
	leaseWait      = 2 * time.Minute // how long New waits for a free database
	firstLeasedDB  = 1
	lastLeasedDB   = 15
)

// releaseScript deletes the lease only if it is still ours.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// refreshScript extends the lease only if it is still ours.
var refreshScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// newExternal leases a database on the server at rawURL.
func newExternal(t testing.TB, rawURL string) *Server {
	t.Helper()
	base, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("redistest: parse %s: %v", EnvRedisURL, err)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("redistest: parse %s: %v", EnvRedisURL, err)
	}

	ctrlOpts := *base
	ctrlOpts.DB = 0
	ctrl := redis.NewClient(&ctrlOpts)
	ctx := context.Background()

	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])

	db, err := acquire(ctx, ctrl, token)
	if err != nil {
		_ = ctrl.Close()
		t.Fatalf("redistest: %s: %v", EnvRedisURL, err)
	}
	key := leaseKeyPrefix + strconv.Itoa(db)

	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(leaseRefresh)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = refreshScript.Run(ctx, ctrl, []string{key}, token, leaseTTL.Milliseconds()).Err()
			}
		}
	}()

	opts := *base
	opts.DB = db
	s := &Server{t: t, addr: base.Addr, db: db, opts: &opts}
	u.Path = "/" + strconv.Itoa(db)
	s.url = u.String()

	flush := func() error {
		c := redis.NewClient(&opts)
		defer c.Close()
		return c.FlushDB(ctx).Err()
	}
	t.Cleanup(func() {
		if err := flush(); err != nil {
			t.Logf("redistest: flush database %d: %v", db, err)
		}
		close(stop)
		<-stopped
		_ = releaseScript.Run(ctx, ctrl, []string{key}, token).Err()
		_ = ctrl.Close()
	})
	if err := flush(); err != nil {
		t.Fatalf("redistest: flush database %d on %s: %v", db, base.Addr, err)
	}
	return s
}

// acquire claims a free database in firstLeasedDB..lastLeasedDB, waiting up
// to leaseWait for one.
func acquire(ctx context.Context, ctrl *redis.Client, token string) (int, error) {
	deadline := time.Now().Add(leaseWait)
	for {
		for db := firstLeasedDB; db <= lastLeasedDB; db++ {
			ok, err := ctrl.SetNX(ctx, leaseKeyPrefix+strconv.Itoa(db), token, leaseTTL).Result()
			if err != nil {
				return 0, fmt.Errorf("lease a database: %w", err)
			}
			if ok {
				return db, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("all databases %d-%d stayed leased for %v", firstLeasedDB, lastLeasedDB, leaseWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
