package ratelimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redistest"
)

// twoProcesses returns two limiters with their own Redis clients on one
// server, as two api replicas would have.
func twoProcesses(t *testing.T, cfg Config) (*Limiter, *Limiter, *redistest.Server) {
	t.Helper()
	srv := redistest.New(t)
	a, err := New(srv.Client(t), cfg)
	require.NoError(t, err)
	b, err := New(srv.Client(t), cfg)
	require.NoError(t, err)
	return a, b, srv
}

func TestIPLimitAcrossProcesses(t *testing.T) {
	t.Parallel()
	a, b, _ := twoProcesses(t, Config{IP: Rate{Requests: 10, Period: time.Hour}})
	ctx := context.Background()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Go(func() {
			if d := l.CheckIP(ctx, "203.0.113.7"); d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 10, allowed.Load(), "10 requests in total, whichever process serves them")

	d := b.CheckIP(ctx, "203.0.113.7")
	require.False(t, d.Allowed)
	require.Equal(t, ScopeIP, d.Scope)
	require.Greater(t, d.RetryAfter, 5*time.Minute, "one request per 6 minutes refills")
	require.Equal(t, claudeq.KindRateLimit, claudeq.ErrorKind(d.Err()))
	require.Equal(t, d.RetryAfter, claudeq.RetryAfter(d.Err()))

	// Another address has its own bucket.
	require.True(t, a.CheckIP(ctx, "203.0.113.8").Allowed)
}

func TestKeyLimitsAcrossProcesses(t *testing.T) {
	t.Parallel()
	tiers := map[string]Limits{
		"standard": {RequestsPerMinute: 5, TokensPerMinute: 1000},
		"big":      {RequestsPerMinute: 100, TokensPerMinute: 0},
	}
	ctx := context.Background()

	t.Run("requests per minute", func(t *testing.T) {
		t.Parallel()
		a, b, _ := twoProcesses(t, Config{Tiers: tiers})
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for i := range 20 {
			l := a
			if i%2 == 1 {
				l = b
			}
			wg.Go(func() {
				if l.CheckKey(ctx, "key_1", "standard", 1).Allowed {
					allowed.Add(1)
				}
			})
		}
		wg.Wait()
		require.EqualValues(t, 5, allowed.Load())
		d := a.CheckKey(ctx, "key_1", "standard", 1)
		require.False(t, d.Allowed)
		require.Equal(t, ScopeKeyRequests, d.Scope)
		require.Contains(t, claudeq.ErrorMessage(d.Err()), "5 requests per minute")
		// Another key is not affected.
		require.True(t, b.CheckKey(ctx, "key_2", "standard", 1).Allowed)
	})

	t.Run("tokens per minute", func(t *testing.T) {
		t.Parallel()
		a, b, _ := twoProcesses(t, Config{Tiers: tiers})
		require.True(t, a.CheckKey(ctx, "key_1", "standard", 600).Allowed)
		d := b.CheckKey(ctx, "key_1", "standard", 600)
		require.False(t, d.Allowed, "600 + 600 > 1000 tokens per minute")
		require.Equal(t, ScopeKeyTokens, d.Scope)
		require.Equal(t, 1000, d.Limit)
		require.Greater(t, d.RetryAfter, 10*time.Second)
		require.Contains(t, claudeq.ErrorMessage(d.Err()), "1000 tokens per minute")
		require.True(t, b.CheckKey(ctx, "key_1", "standard", 300).Allowed, "what is left can still be used")
	})

	t.Run("too large", func(t *testing.T) {
		t.Parallel()
		a, _, _ := twoProcesses(t, Config{Tiers: tiers})
		d := a.CheckKey(ctx, "key_1", "standard", 5000)
		require.False(t, d.Allowed)
		require.True(t, d.TooLarge)
		require.Zero(t, d.RetryAfter)
		require.Equal(t, claudeq.KindRequestTooLarge, claudeq.ErrorKind(d.Err()))
		require.Contains(t, claudeq.ErrorMessage(d.Err()), "5000 tokens")
		require.Empty(t, d.Header().Get("Retry-After"))
	})

	t.Run("tiers", func(t *testing.T) {
		t.Parallel()
		a, _, _ := twoProcesses(t, Config{Tiers: tiers})
		d := a.CheckKey(ctx, "key_big", "big", 1_000_000)
		require.True(t, d.Allowed, "big has no token limit")
		require.Equal(t, ScopeKeyRequests, d.Scope)
		require.InDelta(t, 99, d.Remaining, 1, "GCRA remaining is a truncated float")
		for range 5 {
			require.True(t, a.CheckKey(ctx, "key_u", "unknown-tier", 1).Allowed)
		}
		require.False(t, a.CheckKey(ctx, "key_u", "unknown-tier", 1).Allowed, "unknown tiers get the default tier")

		none, err := New(redistest.New(t).Client(t), Config{Tiers: map[string]Limits{"gold": {RequestsPerMinute: 1}}})
		require.NoError(t, err)
		for range 3 {
			require.True(t, none.CheckKey(ctx, "key_x", "other", 1).Allowed, "no default tier: no per-key limit")
		}
	})

	t.Run("settle", func(t *testing.T) {
		t.Parallel()
		a, b, _ := twoProcesses(t, Config{Tiers: tiers})
		require.True(t, a.CheckKey(ctx, "key_1", "standard", 900).Allowed)
		require.False(t, a.CheckKey(ctx, "key_1", "standard", 500).Allowed)
		// The call used 100 tokens, not 900: the other process sees the refund.
		require.NoError(t, a.Settle(ctx, "key_1", "standard", 900, 100))
		d := b.CheckKey(ctx, "key_1", "standard", 500)
		require.True(t, d.Allowed)
		// It used 800 more than estimated: charged as far as the bucket goes.
		require.NoError(t, b.Settle(ctx, "key_1", "standard", 100, 900))
		require.False(t, a.CheckKey(ctx, "key_1", "standard", 100).Allowed)
	})
}

func TestHeaders(t *testing.T) {
	t.Parallel()
	l, _, _ := twoProcesses(t, Config{IP: Rate{Requests: 2, Period: time.Minute}})
	ctx := context.Background()
	h := l.CheckIP(ctx, "198.51.100.1").Header()
	require.Equal(t, "2", h.Get("RateLimit-Limit"))
	require.Contains(t, []string{"0", "1"}, h.Get("RateLimit-Remaining"), "GCRA remaining is a truncated float")
	require.Equal(t, "30", h.Get("RateLimit-Reset"))
	require.Empty(t, h.Get("Retry-After"))

	h = l.CheckIP(ctx, "198.51.100.1").Header()
	require.Equal(t, "0", h.Get("RateLimit-Remaining"))
	require.Equal(t, "60", h.Get("RateLimit-Reset"))

	d := l.CheckIP(ctx, "198.51.100.1")
	h = d.Header()
	require.False(t, d.Allowed)
	require.Equal(t, "0", h.Get("RateLimit-Remaining"))
	ra, err := strconv.Atoi(h.Get("Retry-After"))
	require.NoError(t, err)
	require.InDelta(t, 30, ra, 1)
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	down := func(t *testing.T) redis.UniversalClient {
		srv := redistest.New(t)
		c := srv.Client(t)
		srv.Kill()
		return c
	}
	type failure struct {
		scope string
		open  bool
	}
	tests := []struct {
		name        string
		keyFailOpen bool
		wantKey     bool
	}{
		{name: "key limiter fails closed by default", keyFailOpen: false, wantKey: false},
		{name: "key limiter fails open when configured", keyFailOpen: true, wantKey: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var got []failure
			l, err := New(down(t), Config{KeyFailOpen: tt.keyFailOpen, Timeout: 200 * time.Millisecond,
				OnError: func(scope string, open bool, err error) {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, failure{scope, open})
				}})
			require.NoError(t, err)

			d := l.CheckIP(ctx, "203.0.113.1")
			require.True(t, d.Allowed, "the IP limiter always fails open")
			require.True(t, d.FailedOpen)
			require.NoError(t, d.Err())
			require.Empty(t, d.Header())

			d = l.CheckKey(ctx, "key_1", "standard", 10)
			require.Equal(t, tt.wantKey, d.Allowed)
			if !tt.wantKey {
				require.Equal(t, claudeq.KindUnavailable, claudeq.ErrorKind(d.Err()))
				require.Equal(t, time.Second, claudeq.RetryAfter(d.Err()))
			}
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, []failure{{"ip", true}, {"key", tt.keyFailOpen}}, got)
		})
	}
}

func TestIPMiddleware(t *testing.T) {
	t.Parallel()
	l, _, _ := twoProcesses(t, Config{IP: Rate{Requests: 1, Period: time.Minute}})
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if ra := claudeq.RetryAfter(err); ra > 0 {
			c.Response().Header().Set("X-Retry", ra.String())
		}
		_ = c.String(http.StatusTooManyRequests, claudeq.ErrorMessage(err))
	}
	e.Use(l.IPMiddleware(nil))
	e.GET("/", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })

	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "192.0.2.9:1234"
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		return w
	}
	w := do()
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "1", w.Header().Get("RateLimit-Limit"))
	require.Equal(t, "0", w.Header().Get("RateLimit-Remaining"))
	w = do()
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	require.NotEmpty(t, w.Header().Get("Retry-After"))
	require.NotEmpty(t, w.Header().Get("X-Retry"))
	require.Contains(t, w.Body.String(), "too many requests from this address")
}

func TestParse(t *testing.T) {
	t.Parallel()
	rates := []struct {
		name string
		in   string
		want Rate
		err  bool
	}{
		{name: "default form", in: "1000/15m", want: Rate{1000, 15 * time.Minute}},
		{name: "unit only", in: "60/m", want: Rate{60, time.Minute}},
		{name: "off", in: "off", want: Rate{}},
		{name: "zero", in: "0", want: Rate{}},
		{name: "no period", in: "10", err: true},
		{name: "bad period", in: "10/x", err: true},
		{name: "negative", in: "-1/1m", err: true},
	}
	for _, tt := range rates {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRate(tt.in)
			if tt.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, r)
		})
	}

	tiers, err := ParseTiers(" standard=600/1000000, free=60/40000,internal=0/0,")
	require.NoError(t, err)
	require.Equal(t, map[string]Limits{
		"standard": {600, 1_000_000}, "free": {60, 40_000}, "internal": {0, 0},
	}, tiers)
	_, err = ParseTiers("a=1/2,a=3/4,b=x/1,c")
	require.Error(t, err)
	require.ErrorContains(t, err, "defined twice")
	require.ErrorContains(t, err, `"b=x/1"`)
	require.ErrorContains(t, err, `"c"`)

	_, err = New(nil, Config{})
	require.Error(t, err)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	_, err = New(c, Config{IP: Rate{Requests: -1, Period: time.Minute}})
	require.ErrorContains(t, err, "must be positive")
}
