package webhook

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/pkg/webhook"
)

// SecretStore keeps each owner's webhook signing secrets in Redis: the
// current one, and during a rotation's grace period the previous one.
//
// Why Redis and not MongoDB: the secrets are read on every delivery, by
// workers that already hold the queue Redis; "create on first use" and
// "rotate" are read-modify-write operations, which claudeq keeps in Redis
// Lua scripts (atomic, one round trip) rather than in FerretDB, which has
// no transactions; and the previous secret's expiry is a timestamp next to
// it. The store must be the queue Redis (noeviction, persisted with AOF:
// the webhook tasks themselves live there), never the cache instance
// (allkeys-lru would evict secrets). A lost secret is re-created on next
// use, and receivers then need the new one.
//
// An owner is whatever id webhooks are signed for: a user id or an API key
// id. SecretStore is safe for concurrent use.
type SecretStore struct {
	rdb    redis.UniversalClient
	now    func() time.Time
	prefix string
}

// NewSecretStore returns a store over rdb; now is the clock deciding when
// a rotated-out secret expires (nil means time.Now).
func NewSecretStore(rdb redis.UniversalClient, now func() time.Time) *SecretStore {
	if now == nil {
		now = time.Now
	}
	return &SecretStore{rdb: rdb, now: now, prefix: "cq:whsec:"}
}

// Fields of the hash cq:whsec:<owner>: cur (current secret), prev (the
// rotated-out one), until (Unix ms when prev stops being valid).
//
// KEYS[1] hash; ARGV[1] now (ms), ARGV[2] a fresh secret used only if the
// owner has none. Returns {cur, prev or false}.
var secretsScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then
  cur = ARGV[2]
  redis.call('HSET', KEYS[1], 'cur', cur)
end
local v = redis.call('HMGET', KEYS[1], 'prev', 'until')
if v[1] and tonumber(v[2] or '0') > tonumber(ARGV[1]) then
  return {cur, v[1]}
end
if v[1] then redis.call('HDEL', KEYS[1], 'prev', 'until') end
return {cur}
`)

// KEYS[1] hash; ARGV[1] new secret, ARGV[2] grace end (ms; 0 = none).
var rotateScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'cur')
if cur and tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], 'prev', cur, 'until', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'prev', 'until')
end
redis.call('HSET', KEYS[1], 'cur', ARGV[1])
return 1
`)

// Secrets returns the owner's valid secrets, current first, then the
// previous one while its grace period lasts. An owner without a secret gets
// one, atomically: concurrent first calls all see the same secret.
func (s *SecretStore) Secrets(ctx context.Context, owner string) ([]string, error) {
	if owner == "" {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "webhook secrets: no owner")
	}
	res, err := secretsScript.Run(ctx, s.rdb, []string{s.prefix + owner},
		strconv.FormatInt(s.now().UnixMilli(), 10), webhook.NewSecret()).StringSlice()
	if err != nil {
		return nil, unavailable("webhook.SecretStore.Secrets", err)
	}
	return res, nil
}

// Rotate gives the owner a new secret and returns it. The old one keeps
// signing (a second signature on each delivery) until grace has passed,
// so that receivers can switch at their pace; grace 0 drops it at once.
// Only one previous secret is kept: rotating again within the grace period
// ends the older one's.
func (s *SecretStore) Rotate(ctx context.Context, owner string, grace time.Duration) (string, error) {
	if owner == "" {
		return "", claudeq.Errorf(claudeq.KindInvalidRequest, "webhook secrets: no owner")
	}
	secret := webhook.NewSecret()
	var until int64
	if grace > 0 {
		until = s.now().Add(grace).UnixMilli()
	}
	if err := rotateScript.Run(ctx, s.rdb, []string{s.prefix + owner}, secret, strconv.FormatInt(until, 10)).Err(); err != nil {
		return "", unavailable("webhook.SecretStore.Rotate", err)
	}
	return secret, nil
}

func unavailable(op string, err error) error {
	return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "webhook secret store unavailable, try again", Err: err, RetryAfter: 2 * time.Second}
}
