// Package cache is the response cache in Redis. Entries are scoped by tenant
// and keyed by the SHA-256 of the canonical upstream request (model, system,
// messages, tools, sampling parameters, max_tokens), never by prompt and
// model alone. Each tenant has an index (a sorted set of its keys by expiry)
// so that its entries can be dropped without KEYS or SCAN.
//
// Cache is safe for concurrent use.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cache stores upstream answers.
type Cache struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// New returns a cache over rdb whose entries live ttl. A zero ttl disables
// it: Get misses and Put does nothing.
func New(rdb redis.UniversalClient, ttl time.Duration) *Cache {
	return &Cache{rdb: rdb, ttl: ttl}
}

// Enabled reports whether the cache stores anything.
func (c *Cache) Enabled() bool { return c != nil && c.ttl > 0 }

// Key returns the cache key of a canonical request for tenant.
func Key(tenant string, canonical []byte) string {
	h := sha256.Sum256(canonical)
	return "cq:cache:{" + tenant + "}:" + hex.EncodeToString(h[:])
}

func index(tenant string) string { return "cq:cacheidx:{" + tenant + "}" }

// Get returns the cached answer under key, or nil on a miss.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	if !c.Enabled() {
		return nil, nil
	}
	b, err := c.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, err
}

// Put stores value under key for tenant.
func (c *Cache) Put(ctx context.Context, tenant, key string, value []byte, now time.Time) error {
	if !c.Enabled() {
		return nil
	}
	exp := now.Add(c.ttl).UnixMilli()
	idx := index(tenant)
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, value, c.ttl)
		p.ZAdd(ctx, idx, redis.Z{Score: float64(exp), Member: key})
		p.ZRemRangeByScore(ctx, idx, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		p.PExpire(ctx, idx, c.ttl+time.Minute)
		return nil
	})
	return err
}

// Purge drops every entry of tenant and returns how many there were.
func (c *Cache) Purge(ctx context.Context, tenant string) (int, error) {
	idx := index(tenant)
	n := 0
	for {
		keys, err := c.rdb.ZRange(ctx, idx, 0, 499).Result()
		if err != nil {
			return n, err
		}
		if len(keys) == 0 {
			return n, nil
		}
		members := make([]any, len(keys))
		for i, k := range keys {
			members[i] = k
		}
		var unlinked *redis.IntCmd
		_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			unlinked = p.Unlink(ctx, keys...)
			p.ZRem(ctx, idx, members...)
			return nil
		})
		if err != nil {
			return n, err
		}
		n += int(unlinked.Val())
	}
}
