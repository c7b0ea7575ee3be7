// Package ratelimit limits request rates per client IP and per API key, in
// Redis, with the GCRA limiter of github.com/go-redis/redis_rate (one Lua
// call per check, atomic in Redis), so that every api replica shares the same
// buckets: ten replicas still allow a client its limit, not ten times it.
//
// Two limits apply:
//
//   - per client IP, before authentication (default 1000 requests per 15
//     minutes, CLAUDEQ_RATELIMIT_IP), against floods and credential
//     stuffing;
//   - per API key, by the key's tier: requests per minute and (estimated)
//     tokens per minute (CLAUDEQ_RATELIMIT_TIERS).
//
// GCRA spreads a limit evenly: "1000 per 15 minutes" admits a burst of 1000,
// then one more request every 0.9 s. Every decision carries the IETF draft
// headers RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (seconds
// until the bucket is full again), plus Retry-After (seconds) when refused.
//
// When Redis cannot be reached the IP limiter fails open: the request goes
// on, the error is logged (at most every 10 s) and reported to
// Config.OnError for a metric. The key limiter fails closed by default (503
// "rate limiter unavailable"), because the same Redis carries the queue and
// the quota counters, without which the request cannot proceed anyway; set
// Config.KeyFailOpen (CLAUDEQ_RATELIMIT_KEY_FAIL_OPEN) to let it through.
//
// Time comes from the Redis server (TIME), not from the api hosts, so clock
// skew between replicas does not matter.
//
// A Limiter is safe for concurrent use.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Rate is a number of requests per period.
type Rate struct {
	Requests int
	Period   time.Duration
}

// ParseRate parses "1000/15m" (requests/duration); "0" or "off" disables the
// limit (the zero Rate).
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "0" || strings.EqualFold(s, "off") {
		return Rate{}, nil
	}
	n, p, ok := strings.Cut(s, "/")
	req, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || req < 0 {
		return Rate{}, fmt.Errorf("rate %q: want requests/period such as 1000/15m, or off", s)
	}
	p = strings.TrimSpace(p)
	if p != "" && (p[0] < '0' || p[0] > '9') {
		p = "1" + p // "60/m" means per minute
	}
	d, err := time.ParseDuration(p)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: period must be a positive duration such as 1m or 15m", s)
	}
	return Rate{Requests: req, Period: d}, nil
}

// Limits are the per-key limits of a tier; zero means unlimited.
type Limits struct {
	RequestsPerMinute int
	TokensPerMinute   int
}

// ParseTiers parses CLAUDEQ_RATELIMIT_TIERS: comma-separated
// "tier=requests_per_minute/tokens_per_minute" entries, 0 meaning unlimited:
// "standard=600/1000000,free=60/40000,internal=0/0".
func ParseTiers(spec string) (map[string]Limits, error) {
	out := map[string]Limits{}
	var errs []error
	for entry := range strings.SplitSeq(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, lim, ok := strings.Cut(entry, "=")
		name = strings.TrimSpace(name)
		rpm, tpm, ok2 := strings.Cut(lim, "/")
		r, err1 := strconv.Atoi(strings.TrimSpace(rpm))
		tk, err2 := strconv.Atoi(strings.TrimSpace(tpm))
		_, dup := out[name]
		switch {
		case !ok || !ok2 || name == "" || err1 != nil || err2 != nil || r < 0 || tk < 0:
			errs = append(errs, fmt.Errorf("rate limit tier %q: want name=requests_per_minute/tokens_per_minute", entry))
		case dup:
			errs = append(errs, fmt.Errorf("rate limit tier %q defined twice", name))
		default:
			out[name] = Limits{RequestsPerMinute: r, TokensPerMinute: tk}
		}
	}
	return out, errors.Join(errs...)
}

// DefaultTiers are the tiers used when Config.Tiers is nil: "standard" (the
// tier new keys get), 600 requests and 1,000,000 tokens per minute.
func DefaultTiers() map[string]Limits {
	return map[string]Limits{"standard": {RequestsPerMinute: 600, TokensPerMinute: 1_000_000}}
}

// Config configures a Limiter. Defaults apply to zero fields.
type Config struct {
	// IP is the per-client-IP limit. CLAUDEQ_RATELIMIT_IP, default
	// 1000/15m; DisableIP turns it off ("off").
	IP        Rate
	DisableIP bool
	// Tiers are the per-key limits by tier. CLAUDEQ_RATELIMIT_TIERS, default
	// DefaultTiers().
	Tiers map[string]Limits
	// DefaultTier applies to keys whose tier is not in Tiers.
	// CLAUDEQ_RATELIMIT_DEFAULT_TIER, default "standard"; if it is not in
	// Tiers either, such keys have no per-key limit.
	DefaultTier string
	// KeyFailOpen lets requests through the key limiter when Redis fails.
	// CLAUDEQ_RATELIMIT_KEY_FAIL_OPEN, default false (refuse with 503).
	KeyFailOpen bool
	// Timeout bounds one Redis call, so that a hung Redis does not hang the
	// request before failing open. Default 250ms.
	Timeout time.Duration
	// Prefix starts every Redis key. Default "claudeq:rl:".
	Prefix string
	// Logger gets fail-open warnings. Default: discard.
	Logger *slog.Logger
	// OnError, if set, is called for every Redis failure with the scope
	// ("ip" or "key") and whether the request was let through, e.g. to
	// count it in a metric. It must be safe for concurrent use.
	OnError func(scope string, failedOpen bool, err error)
}

// Limiter checks rate limits. It is safe for concurrent use.
type Limiter struct {
	rl      *redis_rate.Limiter
	cfg     Config
	lastLog atomic.Int64 // unix nanos of the last fail-open log line
}

// New returns a limiter over rdb (a client, ring or cluster client).
func New(rdb redis.UniversalClient, cfg Config) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: nil Redis client")
	}
	if cfg.IP == (Rate{}) {
		cfg.IP = Rate{Requests: 1000, Period: 15 * time.Minute}
	}
	if cfg.IP.Requests <= 0 || cfg.IP.Period <= 0 {
		return nil, fmt.Errorf("ratelimit: IP rate %d/%v must be positive (or set DisableIP)", cfg.IP.Requests, cfg.IP.Period)
	}
	if cfg.Tiers == nil {
		cfg.Tiers = DefaultTiers()
	}
	for name, l := range cfg.Tiers {
		if l.RequestsPerMinute < 0 || l.TokensPerMinute < 0 {
			return nil, fmt.Errorf("ratelimit: tier %q: negative limit", name)
		}
	}
	if cfg.DefaultTier == "" {
		cfg.DefaultTier = "standard"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 250 * time.Millisecond
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "claudeq:rl:"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Limiter{rl: redis_rate.NewLimiter(rdb), cfg: cfg}, nil
}

// Scopes of a Decision: which limit decided.
const (
	ScopeIP          = "ip"
	ScopeKeyRequests = "key_requests"
	ScopeKeyTokens   = "key_tokens"
)

// Decision is the outcome of a check.
type Decision struct {
	// Allowed reports whether the request may go on.
	Allowed bool
	// Scope is the limit the numbers below describe: the one that refused,
	// or, when allowed, the one closest to running out. Empty when no limit
	// applies.
	Scope string
	// Limit is the size of that limit's bucket (requests or tokens).
	Limit int
	// Remaining is what is left of it now.
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter is how long until a retry can succeed; 0 when allowed, and
	// when no wait will help (TooLarge).
	RetryAfter time.Duration
	// TooLarge is set when a request's token estimate alone exceeds the
	// tier's tokens per minute: it can never pass.
	TooLarge bool
	// FailedOpen is set when Redis failed and the request was let through.
	FailedOpen bool

	tokens int // the estimate, for the TooLarge message
	err    error
}

// Header returns the RateLimit-Limit, RateLimit-Remaining and
// RateLimit-Reset headers, plus Retry-After when refused. It is empty when
// no limit applied or the limiter failed.
func (d Decision) Header() http.Header {
	h := http.Header{}
	d.SetHeader(h)
	return h
}

// SetHeader sets the headers of Header on h.
func (d Decision) SetHeader(h http.Header) {
	if d.Scope == "" || d.Limit <= 0 || d.err != nil || d.FailedOpen {
		return
	}
	h.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(d.Reset)))
	if !d.Allowed && d.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(max(1, ceilSeconds(d.RetryAfter))))
	}
}

func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// Err returns nil when the request is allowed, else the *claudeq.Error to
// answer with: KindRateLimit (429) with RetryAfter, KindRequestTooLarge (413)
// for TooLarge, or KindUnavailable (503) when Redis failed and the limiter
// fails closed.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	if d.err != nil {
		return d.err
	}
	switch {
	case d.TooLarge:
		return &claudeq.Error{Kind: claudeq.KindRequestTooLarge, Op: "ratelimit",
			Msg: fmt.Sprintf("this request is estimated at %d tokens, more than the %d tokens per minute this API key allows", d.tokens, d.Limit)}
	case d.Scope == ScopeIP:
		return &claudeq.Error{Kind: claudeq.KindRateLimit, Op: "ratelimit", RetryAfter: d.RetryAfter,
			Msg: "too many requests from this address; retry after the time in the Retry-After header"}
	case d.Scope == ScopeKeyTokens:
		return &claudeq.Error{Kind: claudeq.KindRateLimit, Op: "ratelimit", RetryAfter: d.RetryAfter,
			Msg: fmt.Sprintf("this API key's rate limit of %d tokens per minute is exhausted; retry after the time in the Retry-After header", d.Limit)}
	default:
		return &claudeq.Error{Kind: claudeq.KindRateLimit, Op: "ratelimit", RetryAfter: d.RetryAfter,
			Msg: fmt.Sprintf("this API key's rate limit of %d requests per minute is exhausted; retry after the time in the Retry-After header", d.Limit)}
	}
}

func fromResult(scope string, r *redis_rate.Result) Decision {
	d := Decision{
		Allowed:   r.Allowed > 0,
		Scope:     scope,
		Limit:     r.Limit.Burst,
		Remaining: r.Remaining,
		Reset:     max(r.ResetAfter, 0),
	}
	if !d.Allowed {
		d.RetryAfter = max(r.RetryAfter, time.Millisecond)
	}
	return d
}

// CheckIP counts one request from ip against the per-IP limit. It fails
// open: on a Redis error the request is allowed, with FailedOpen set.
func (l *Limiter) CheckIP(ctx context.Context, ip string) Decision {
	if l.cfg.DisableIP || ip == "" {
		return Decision{Allowed: true}
	}
	lim := redis_rate.Limit{Rate: l.cfg.IP.Requests, Burst: l.cfg.IP.Requests, Period: l.cfg.IP.Period}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	r, err := l.rl.Allow(ctx, l.cfg.Prefix+"ip:"+ip, lim)
	if err != nil {
		return l.failed(ScopeIP, true, err)
	}
	return fromResult(ScopeIP, r)
}

// LimitsFor returns the limits of tier (DefaultTier's when tier is unknown)
// and whether any apply.
func (l *Limiter) LimitsFor(tier string) (Limits, bool) {
	if lim, ok := l.cfg.Tiers[tier]; ok {
		return lim, true
	}
	lim, ok := l.cfg.Tiers[l.cfg.DefaultTier]
	return lim, ok
}

// CheckKey counts one request of an estimated tokens tokens against the
// per-key limits of tier: requests per minute first, then tokens per minute.
// A request refused on tokens still counts against requests per minute (one
// Redis call each, no transaction; a client that honours Retry-After does
// not notice). A token estimate above the tier's tokens per minute is refused
// at once as TooLarge, without touching Redis. On a Redis error the request
// is refused with a KindUnavailable error unless Config.KeyFailOpen.
func (l *Limiter) CheckKey(ctx context.Context, keyID, tier string, tokens int) Decision {
	lim, ok := l.LimitsFor(tier)
	if !ok || (lim.RequestsPerMinute == 0 && lim.TokensPerMinute == 0) {
		return Decision{Allowed: true}
	}
	if lim.TokensPerMinute > 0 && tokens > lim.TokensPerMinute {
		return Decision{Scope: ScopeKeyTokens, Limit: lim.TokensPerMinute, TooLarge: true, tokens: tokens}
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	var req, tok Decision
	if lim.RequestsPerMinute > 0 {
		r, err := l.rl.Allow(ctx, l.keyKey(keyID, "rpm"), redis_rate.PerMinute(lim.RequestsPerMinute))
		if err != nil {
			return l.failed("key", l.cfg.KeyFailOpen, err)
		}
		if req = fromResult(ScopeKeyRequests, r); !req.Allowed {
			return req
		}
	}
	if lim.TokensPerMinute > 0 && tokens > 0 {
		r, err := l.rl.AllowN(ctx, l.keyKey(keyID, "tpm"), tpmLimit(lim), tokens)
		if err != nil {
			return l.failed("key", l.cfg.KeyFailOpen, err)
		}
		if tok = fromResult(ScopeKeyTokens, r); !tok.Allowed {
			tok.tokens = tokens
			return tok
		}
	}
	// Allowed: report the limit closest to running out.
	switch {
	case req.Scope == "":
		return tok
	case tok.Scope == "":
		return req
	case int64(tok.Remaining)*int64(req.Limit) < int64(req.Remaining)*int64(tok.Limit):
		return tok
	default:
		return req
	}
}

// Settle corrects the tokens-per-minute bucket of a key once the real usage
// of a request is known: actual tokens above the estimate are charged (as
// far as the bucket has them: the overshoot of one request is forgiven, not
// carried as debt), tokens below it are given back. It returns Redis errors;
// callers usually log and ignore them.
func (l *Limiter) Settle(ctx context.Context, keyID, tier string, estimated, actual int) error {
	lim, ok := l.LimitsFor(tier)
	if !ok || lim.TokensPerMinute == 0 || actual == estimated {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	var err error
	if delta := actual - estimated; delta > 0 {
		_, err = l.rl.AllowAtMost(ctx, l.keyKey(keyID, "tpm"), tpmLimit(lim), delta)
	} else {
		// A negative cost moves the GCRA's theoretical arrival time back:
		// a refund. If the bucket would be over full, redis_rate leaves it
		// as it is, which is the safe side.
		_, err = l.rl.AllowN(ctx, l.keyKey(keyID, "tpm"), tpmLimit(lim), delta)
	}
	if err != nil {
		return fmt.Errorf("ratelimit: settle tokens of %s: %w", keyID, err)
	}
	return nil
}

func tpmLimit(lim Limits) redis_rate.Limit {
	return redis_rate.Limit{Rate: lim.TokensPerMinute, Burst: lim.TokensPerMinute, Period: time.Minute}
}

func (l *Limiter) keyKey(keyID, what string) string {
	return l.cfg.Prefix + "key:" + keyID + ":" + what
}

func (l *Limiter) failed(scope string, open bool, err error) Decision {
	if l.cfg.OnError != nil {
		l.cfg.OnError(scope, open, err)
	}
	now := time.Now().UnixNano()
	if last := l.lastLog.Load(); now-last > int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
		if open {
			l.cfg.Logger.Warn("rate limiter cannot reach Redis: letting requests through", "scope", scope, "err", err)
		} else {
			l.cfg.Logger.Error("rate limiter cannot reach Redis: refusing requests", "scope", scope, "err", err)
		}
	}
	if open {
		return Decision{Allowed: true, FailedOpen: true}
	}
	return Decision{err: &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "ratelimit", RetryAfter: time.Second,
		Msg: "rate limiter unavailable, try again shortly", Err: err}}
}

// IPMiddleware limits every request by client IP: ipOf returns it (nil
// means c.RealIP(), which honours the Echo IPExtractor, e.g.
// secure.IPExtractor). It sets the RateLimit headers and returns
// Decision.Err when refused, for the api's error handler.
func (l *Limiter) IPMiddleware(ipOf func(echo.Context) string) echo.MiddlewareFunc {
	if ipOf == nil {
		ipOf = func(c echo.Context) string { return c.RealIP() }
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			d := l.CheckIP(c.Request().Context(), ipOf(c))
			d.SetHeader(c.Response().Header())
			if err := d.Err(); err != nil {
				return err
			}
			return next(c)
		}
	}
}
