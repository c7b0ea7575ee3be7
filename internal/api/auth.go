package api

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/claudeq"
)

// keyCache remembers key lookups briefly so that the submit path does not
// touch the store; a revoked key keeps working here for at most ttl.
type keyCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedKey
}

type cachedKey struct {
	p       claudeq.Principal
	revoked bool
	exp     time.Time
}

func newKeyCache(ttl time.Duration) *keyCache {
	return &keyCache{ttl: ttl, m: make(map[string]cachedKey)}
}

func (k *keyCache) get(hash string, now time.Time) (cachedKey, bool) {
	if k.ttl <= 0 {
		return cachedKey{}, false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[hash]
	if !ok || now.After(v.exp) {
		return cachedKey{}, false
	}
	return v, true
}

func (k *keyCache) put(hash string, v cachedKey, now time.Time) {
	if k.ttl <= 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) > 100_000 { // bound memory under a flood of distinct keys
		clear(k.m)
	}
	v.exp = now.Add(k.ttl)
	k.m[hash] = v
}

// credential returns the API key of a request: Authorization: Bearer or
// x-api-key.
func credential(r *http.Request) (string, error) {
	auth := r.Header.Values("Authorization")
	xkey := r.Header.Values("X-Api-Key")
	if len(auth) > 1 || len(xkey) > 1 {
		return "", claudeq.Errorf(claudeq.KindAuthentication, "send exactly one Authorization or x-api-key header")
	}
	if len(auth) == 1 {
		scheme, token, ok := strings.Cut(strings.TrimSpace(auth[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", claudeq.Errorf(claudeq.KindAuthentication, "Authorization must be \"Bearer <api key>\"")
		}
		token = strings.TrimSpace(token)
		if token == "" {
			return "", claudeq.Errorf(claudeq.KindAuthentication, "Authorization has no API key")
		}
		return token, nil
	}
	if len(xkey) == 1 && strings.TrimSpace(xkey[0]) != "" {
		return strings.TrimSpace(xkey[0]), nil
	}
	return "", claudeq.Errorf(claudeq.KindAuthentication, "missing API key: send Authorization: Bearer <key> or x-api-key")
}

// auth authenticates the caller and requires scope.
func (s *Server) auth(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			key, err := credential(c.Request())
			if err != nil {
				return err
			}
			p, err := s.principal(c.Request().Context(), key)
			if err != nil {
				return err
			}
			if !p.Has(scope) {
				return claudeq.Errorf(claudeq.KindPermission, "this API key lacks the %q scope", scope)
			}
			c.Set("principal", p)
			return next(c)
		}
	}
}

func (s *Server) principal(ctx context.Context, key string) (claudeq.Principal, error) {
	if !apikey.WellFormed(key) {
		return claudeq.Principal{}, claudeq.Errorf(claudeq.KindAuthentication, "invalid API key")
	}
	h := apikey.Hash(key)
	now := s.now()
	if v, ok := s.keys.get(h, now); ok {
		if v.revoked {
			return claudeq.Principal{}, claudeq.Errorf(claudeq.KindAuthentication, "API key revoked")
		}
		return v.p, nil
	}
	k, err := s.st.KeyByHash(ctx, h)
	if err != nil {
		if claudeq.ErrorKind(err) == claudeq.KindNotFound {
			return claudeq.Principal{}, claudeq.Errorf(claudeq.KindAuthentication, "invalid API key")
		}
		return claudeq.Principal{}, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.auth", Msg: "cannot check API keys right now, try again", Err: err}
	}
	v := cachedKey{p: k.Principal(), revoked: k.RevokedAt != nil && !k.RevokedAt.After(now)}
	s.keys.put(h, v, now)
	if v.revoked {
		return claudeq.Principal{}, claudeq.Errorf(claudeq.KindAuthentication, "API key revoked")
	}
	return v.p, nil
}

func principalOf(c echo.Context) claudeq.Principal {
	p, _ := c.Get("principal").(claudeq.Principal)
	return p
}
