package api

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/store"
)

// keyCache remembers key lookups briefly so that the submit path does not
// touch the store. A key changed through this process (revoked, rotated,
// updated) is dropped at once; one changed anywhere else is dropped by
// WatchKeys within its interval; a cached entry lives ttl at most.
type keyCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedKey
}

type cachedKey struct {
	p    claudeq.Principal
	hash string
	key  store.APIKey
	exp  time.Time
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

// dropStale drops the entry of hash unless it is the key as it was at
// changedAt.
func (k *keyCache) dropStale(hash string, changedAt time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[hash]
	if !ok || (v.key.ChangedAt != nil && v.key.ChangedAt.Equal(changedAt)) {
		return false
	}
	delete(k.m, hash)
	return true
}

// dropID drops the entries of key id.
func (k *keyCache) dropID(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for h, v := range k.m {
		if v.p.KeyID == id {
			delete(k.m, h)
		}
	}
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
// x-api-key (what the Anthropic SDKs send). A request may carry both only
// when they name the same key; two different keys are refused rather than
// one of them chosen.
func credential(r *http.Request) (string, error) {
	auth := r.Header.Values("Authorization")
	xkey := r.Header.Values("X-Api-Key")
	if len(auth) > 1 || len(xkey) > 1 {
		return "", claudeq.Errorf(claudeq.KindAuthentication, "send exactly one Authorization or x-api-key header")
	}
	var bearer string
	if len(auth) == 1 {
		scheme, token, ok := strings.Cut(strings.TrimSpace(auth[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", claudeq.Errorf(claudeq.KindAuthentication, "Authorization must be \"Bearer <api key>\"")
		}
		bearer = strings.TrimSpace(token)
		if bearer == "" {
			return "", claudeq.Errorf(claudeq.KindAuthentication, "Authorization has no API key")
		}
	}
	var x string
	if len(xkey) == 1 {
		x = strings.TrimSpace(xkey[0])
	}
	switch {
	case bearer != "" && x != "" && subtle.ConstantTimeCompare([]byte(bearer), []byte(x)) != 1:
		return "", claudeq.Errorf(claudeq.KindAuthentication, "Authorization and x-api-key name different API keys: send one")
	case bearer != "":
		return bearer, nil
	case x != "":
		return x, nil
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
			v, err := s.lookup(c.Request().Context(), key)
			// Set before the checks, so that a 403 (and the use of a
			// revoked or expired key) is audited with the caller.
			if v.p.KeyID != "" {
				c.Set("principal", v.p)
			}
			if err != nil {
				return err
			}
			c.Set(ctxKeyPolicy, v.key.PolicyAction)
			if !v.p.Has(scope) {
				need := scope
				if scope == claudeq.ScopeAdminRead && c.Request().Method != http.MethodGet && c.Request().Method != http.MethodHead {
					need = claudeq.ScopeAdmin // an /admin change: say what it needs, not the read scope of the group
				}
				return claudeq.Errorf(claudeq.KindPermission, "this API key lacks the %q scope", need)
			}
			return next(c)
		}
	}
}

// lookup returns the usable key behind a secret: a KindAuthentication error
// for a malformed, unknown, revoked or expired key (with the key itself in
// the last two cases, for the audit log), KindUnavailable when the store
// cannot be asked.
func (s *Server) lookup(ctx context.Context, key string) (cachedKey, error) {
	if !apikey.WellFormed(key) {
		return cachedKey{}, claudeq.Errorf(claudeq.KindAuthentication, "invalid API key")
	}
	h := apikey.Hash(key)
	now := s.now()
	v, ok := s.keys.get(h, now)
	if !ok {
		k, err := s.st.KeyByHash(ctx, h)
		if err != nil {
			if claudeq.ErrorKind(err) == claudeq.KindNotFound {
				return cachedKey{}, claudeq.Errorf(claudeq.KindAuthentication, "invalid API key")
			}
			return cachedKey{}, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.auth", Msg: "cannot check API keys right now, try again", Err: err}
		}
		v = cachedKey{p: k.Principal(), hash: k.Hash, key: k}
		s.keys.put(h, v, now)
	}
	// The lookup went by hash; compare again in constant time so that no
	// code path compares secrets byte by byte.
	if subtle.ConstantTimeCompare([]byte(v.hash), []byte(h)) != 1 {
		return cachedKey{}, claudeq.Errorf(claudeq.KindAuthentication, "invalid API key")
	}
	if why := v.key.Usable(now); why != "" {
		return v, claudeq.Errorf(claudeq.KindAuthentication, "API key %s", why)
	}
	s.used.touch(v.p.KeyID, now)
	return v, nil
}

// keyWatchOverlap is how far back each WatchKeys poll looks beyond the
// previous one: room for the clocks of the processes that write keys to
// differ, and for a write to become visible. Entries already up to date
// are kept, so the overlap costs a few compared rows, not cache misses.
const keyWatchOverlap = 10 * time.Second

// WatchKeys drops from the key cache every key changed in the store
// (revoked, rotated out, scopes or tier changed, by any api or the CLI),
// polling every interval until ctx ends: a change takes effect in this
// process within about one interval. Store errors are logged and the next
// poll looks back from the last good one.
func (s *Server) WatchKeys(ctx context.Context, every time.Duration) {
	if s.opt.KeyCacheTTL <= 0 || every <= 0 {
		return // nothing is cached, or watching is off
	}
	since := time.Now().Add(-keyWatchOverlap)
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		polled := time.Now()
		c, cancel := context.WithTimeout(ctx, max(every, time.Second))
		changes, err := s.st.KeysChangedSince(c, since)
		cancel()
		if err != nil {
			if !failing {
				s.log.Warn("watching API keys for changes failed; cached keys expire after CLAUDEQ_KEY_CACHE_TTL meanwhile", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		for _, ch := range changes {
			if s.keys.dropStale(ch.Hash, ch.ChangedAt) {
				s.log.Info("API key changed: dropped from the cache", "key_id", ch.ID)
			}
		}
		since = polled.Add(-keyWatchOverlap)
	}
}

// lastUsed collects when keys were used, for a periodic flush to the store
// (writing on every request would put the store on the submit path).
type lastUsed struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (l *lastUsed) touch(id string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = make(map[string]time.Time)
	}
	l.m[id] = t
}

func (l *lastUsed) take() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.m
	l.m = nil
	return m
}

// FlushKeyUse writes the keys' last-used times to the store; the api's owner
// calls it periodically and at shutdown.
func (s *Server) FlushKeyUse(ctx context.Context) error {
	return s.st.TouchKeys(ctx, s.used.take())
}

func principalOf(c echo.Context) claudeq.Principal {
	p, _ := c.Get("principal").(claudeq.Principal)
	return p
}
