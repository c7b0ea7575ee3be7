package monitor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
)

// CookieName is the name of the session cookie.
const CookieName = "claudeq_monitor_session"

// Redis keys. The hash tag keeps them in one slot, so that one MGET reads
// both on Redis Cluster.
const (
	sessionKeyPrefix = "cq:{monitor}:session:"
	generationKey    = "cq:{monitor}:generation"
)

const tokenBytes = 32

var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// sessions stores browser sessions in Redis: the SHA-256 of each token
// (never the token) with a TTL, holding the generation it was opened in;
// bumping the generation ends every session.
type sessions struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

func sessionKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return sessionKeyPrefix + hex.EncodeToString(sum[:])
}

// create opens a session and returns its token.
func (s *sessions) create(ctx context.Context) (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	gen, err := s.rdb.Get(ctx, generationKey).Result()
	if errors.Is(err, redis.Nil) {
		gen, err = "0", nil
	}
	if err != nil {
		return "", err
	}
	if err := s.rdb.Set(ctx, sessionKey(token), gen, s.ttl).Err(); err != nil {
		return "", err
	}
	return token, nil
}

// check reports whether token names a live session of the current
// generation. A malformed token is no session and costs no round trip.
func (s *sessions) check(ctx context.Context, token string) (bool, error) {
	if len(token) != tokenLen {
		return false, nil
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return false, nil
	}
	v, err := s.rdb.MGet(ctx, generationKey, sessionKey(token)).Result()
	if err != nil {
		return false, err
	}
	sess, ok := v[1].(string)
	if !ok {
		return false, nil
	}
	gen, ok := v[0].(string)
	if !ok {
		gen = "0"
	}
	return sess == gen, nil
}

// end deletes the session of token, if any.
func (s *sessions) end(ctx context.Context, token string) error {
	if len(token) != tokenLen {
		return nil
	}
	return s.rdb.Del(ctx, sessionKey(token)).Err()
}

// endAll ends every session by moving to the next generation.
func (s *sessions) endAll(ctx context.Context) error {
	return s.rdb.Incr(ctx, generationKey).Err()
}

func sessionToken(r *http.Request) string {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return ""
	}
	return c.Value
}
