// Package config reads claudeq's configuration from the environment. Load is
// the only reader of the environment in the whole program: main passes
// os.Getenv, tests pass a map. It reports every problem at once.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/upstream"
	"github.com/claudeq/claudeq/internal/webhook"
)

// Config is the whole configuration. Each field names its environment
// variable and default; Load fills the defaults.
type Config struct {
	// HTTPAddr is where the api listens. CLAUDEQ_HTTP_ADDR, default 127.0.0.1:8080.
	HTTPAddr string
	// RedisURL is the queue Redis (asynq, job state, quotas).
	// CLAUDEQ_REDIS_URL, required by api, worker and scheduler; claudeq dev
	// embeds one when empty.
	RedisURL claudeq.Secret
	// CacheRedisURL is the response-cache Redis. CLAUDEQ_CACHE_REDIS_URL,
	// default the queue Redis.
	CacheRedisURL claudeq.Secret
	// MongoURI is the MongoDB (or MongoDB-wire) server. CLAUDEQ_MONGO_URI,
	// required by api, worker and scheduler; claudeq dev embeds one when empty.
	MongoURI claudeq.Secret
	// MongoDatabase is the database name. CLAUDEQ_MONGO_DATABASE, default claudeq.
	MongoDatabase string
	// UpstreamURL is the Claude API base URL. CLAUDEQ_UPSTREAM_URL, default
	// https://api.anthropic.com.
	UpstreamURL string
	// UpstreamAPIKey is the Claude API key. CLAUDEQ_UPSTREAM_API_KEY; empty
	// in claudeq dev means "use the built-in simulator".
	UpstreamAPIKey claudeq.Secret
	// NodesFile names a YAML file of upstream nodes (nodes: [{name, url,
	// api_key, weight, models, rpm, tpm}]); api_key may be ${ENV_VAR}.
	// CLAUDEQ_NODES_FILE; empty means one node from CLAUDEQ_UPSTREAM_URL
	// and CLAUDEQ_UPSTREAM_API_KEY.
	NodesFile string
	// Nodes are the nodes of NodesFile, loaded and checked.
	Nodes []upstream.NodeConfig
	// Balancer is the strategy: round_robin, weighted_random,
	// least_connections or response_time. CLAUDEQ_BALANCER, default
	// least_connections.
	Balancer string
	// HealthInterval is how often the scheduler probes each node.
	// CLAUDEQ_HEALTH_INTERVAL, default 30s.
	HealthInterval time.Duration
	// NodeCooldown is how long a node that failed CLAUDEQ_NODE_FAILURES
	// times within a window of the same length is left alone.
	// CLAUDEQ_NODE_COOLDOWN, default 30s; CLAUDEQ_NODE_FAILURES, default 5.
	NodeCooldown time.Duration
	NodeFailures int
	// FallbackModels maps a model (alias or id) to the models tried, in
	// order, when it is overloaded or has no healthy node, for requests that
	// give no fallback_models. CLAUDEQ_FALLBACK_MODELS, e.g.
	// "opus=sonnet,sonnet=haiku"; default none.
	FallbackModels map[string][]string
	// UpstreamTimeout bounds one upstream call. CLAUDEQ_UPSTREAM_TIMEOUT, default 5m.
	UpstreamTimeout time.Duration
	// DataDir is where claudeq dev keeps its data. CLAUDEQ_DATA_DIR, default ./.claudeq.
	DataDir string
	// DevAPIKey is the key claudeq dev prints and accepts, any form.
	// CLAUDEQ_DEV_API_KEY; empty means generate one and keep it in DataDir.
	DevAPIKey claudeq.Secret
	// CacheTTL is how long a response stays cached. CLAUDEQ_CACHE_TTL,
	// default 1h; 0 disables the cache.
	CacheTTL time.Duration
	// MaxBodyBytes caps a request body. CLAUDEQ_MAX_BODY_BYTES, default 1048576 (1 MiB).
	MaxBodyBytes int64
	// WorkerConcurrency is how many jobs one worker process runs at once.
	// CLAUDEQ_WORKER_CONCURRENCY, default 100.
	WorkerConcurrency int
	// MaxQueuedJobs is how many jobs may wait in the queue (asynq's pending
	// list of the default queue) before the api refuses new ones with 503
	// and Retry-After, so that a load the workers cannot take fills neither
	// Redis nor the clients' wait. CLAUDEQ_MAX_QUEUED_JOBS, default 100000
	// (about 300 MB of Redis); 0 means no limit.
	MaxQueuedJobs int
	// JobMaxRetries is how often a job is retried after a transient failure.
	// CLAUDEQ_JOB_MAX_RETRIES, default 8.
	JobMaxRetries int
	// JobTimeout bounds one run of a job. CLAUDEQ_JOB_TIMEOUT, default 10m.
	JobTimeout time.Duration
	// NoUpstreamWait is how long after its submission a job waits for a
	// healthy upstream node without using up its retries when every node is
	// down, cooling down after a 429 or at its cap (it is retried after the
	// earliest cooldown, or its backoff). Past it, such attempts count as
	// retries. CLAUDEQ_NO_UPSTREAM_WAIT, default 10m; 0 turns the wait off.
	NoUpstreamWait time.Duration
	// RetryBase and RetryMax shape the jittered exponential backoff between
	// retries (an upstream retry-after overrides it when longer).
	// CLAUDEQ_RETRY_BASE, default 1s; CLAUDEQ_RETRY_MAX, default 5m.
	RetryBase, RetryMax time.Duration
	// Retention is how long finished jobs are kept. CLAUDEQ_RETENTION, default 720h (30 days).
	Retention time.Duration
	// RetentionInterval is how often the scheduler sweeps. CLAUDEQ_RETENTION_INTERVAL, default 1h.
	RetentionInterval time.Duration
	// ReconcileInterval is how often the scheduler looks for jobs whose
	// workers were lost (archived by asynq) and fails them.
	// CLAUDEQ_RECONCILE_INTERVAL, default 1m.
	ReconcileInterval time.Duration
	// TaskCheckInterval is asynq's idle poll interval: the pick-up latency of
	// an idle worker. CLAUDEQ_TASK_CHECK_INTERVAL, default 20ms.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries and scheduled jobs are
	// moved to their queue. CLAUDEQ_DELAYED_TASK_CHECK_INTERVAL, default 1s.
	DelayedTaskCheckInterval time.Duration
	// KeyCacheTTL is how long the api caches an API key lookup (the
	// submit path then does not touch the store). A key revoked, rotated
	// out or changed is dropped from every api's cache within
	// KeyWatchInterval, whatever this is. CLAUDEQ_KEY_CACHE_TTL, default
	// 30s; 0 looks every key up on every request.
	KeyCacheTTL time.Duration
	// KeyWatchInterval is how often the api asks the store which keys
	// changed, to drop them from its cache. CLAUDEQ_KEY_WATCH_INTERVAL,
	// default 250ms; 0 turns watching off (changes then wait for
	// KeyCacheTTL).
	KeyWatchInterval time.Duration
	// IdempotencyTTL is how long an Idempotency-Key (and a finished job's
	// state in Redis) is remembered. CLAUDEQ_IDEMPOTENCY_TTL, default 24h.
	IdempotencyTTL time.Duration
	// ShutdownTimeout bounds a graceful stop; keep it below the orchestrator's
	// grace period. CLAUDEQ_SHUTDOWN_TIMEOUT, default 25s.
	ShutdownTimeout time.Duration
	// DefaultModel is used when a request names none. CLAUDEQ_DEFAULT_MODEL, default sonnet.
	DefaultModel string
	// DefaultMaxTokens is used when a request gives no max_tokens.
	// CLAUDEQ_DEFAULT_MAX_TOKENS, default 1024.
	DefaultMaxTokens int
	// LogLevel is debug, info, warn or error. CLAUDEQ_LOG_LEVEL, default info.
	LogLevel slog.Level
	// LogFormat is json or text. CLAUDEQ_LOG_FORMAT, default json (text in claudeq dev).
	LogFormat string
	// Timezone is the zone whose midnight starts a quota day.
	// CLAUDEQ_TIMEZONE, default UTC.
	Timezone *time.Location
	// Budgets in micro-USD (0 = unlimited), set in USD:
	// CLAUDEQ_QUOTA_USER_DAILY_USD, CLAUDEQ_QUOTA_DEPARTMENT_DAILY_USD,
	// CLAUDEQ_QUOTA_TOTAL_DAILY_USD, CLAUDEQ_QUOTA_TOTAL_MONTHLY_USD;
	// default 0 (unlimited). Overrides per user or department are set at
	// run time (PUT /admin/quotas/...).
	QuotaUserDaily, QuotaDepartmentDaily, QuotaTotalDaily, QuotaTotalMonthly int64
	// QuotaReconcileAfter: a reservation older than this whose job is gone
	// or finished is settled or released by the scheduler.
	// CLAUDEQ_QUOTA_RECONCILE_AFTER, default 2h (longer than a job lives).
	QuotaReconcileAfter time.Duration
	// PricingFile overrides or extends the embedded price table (YAML or
	// JSON). CLAUDEQ_PRICING_FILE, default none.
	PricingFile string
	// ModelAliases pin alias names to model ids ("sonnet" →
	// "claude-sonnet-5-5"). CLAUDEQ_MODEL_ALIASES, "alias=id,…"; default
	// none: haiku, sonnet, opus, mythos and fable name the newest model of
	// their family that some upstream node serves.
	ModelAliases map[string]string
	// RoutingSonnetScore and RoutingOpusScore are the complexity scores
	// from which model "auto" picks sonnet and opus.
	// CLAUDEQ_ROUTING_SONNET_SCORE (3), CLAUDEQ_ROUTING_OPUS_SCORE (7).
	RoutingSonnetScore, RoutingOpusScore int
	// PublicURL is the gateway's address as callers reach it, the base of
	// result_url in webhook events. CLAUDEQ_PUBLIC_URL, default
	// http://HTTPAddr.
	PublicURL string
	// WebhookAllow lets webhooks reach hosts the SSRF policy refuses
	// (private addresses, plain http). CLAUDEQ_WEBHOOK_ALLOW, a comma list
	// of IPs, CIDRs, host names or *.suffix, each optionally prefixed with
	// http:// to permit plain http; default empty (claudeq dev:
	// http://127.0.0.1,http://[::1]).
	WebhookAllow *webhook.Policy
	// WebhookSchedule is the delay before each delivery attempt.
	// CLAUDEQ_WEBHOOK_SCHEDULE, default 0,5s,5m,30m,2h,5h,10h,10h.
	WebhookSchedule webhook.Schedule
	// WebhookTimeout bounds one delivery attempt. CLAUDEQ_WEBHOOK_TIMEOUT, default 15s.
	WebhookTimeout time.Duration
	// WebhookMaxBytes: the result is inlined in an event only while the body
	// stays this small. CLAUDEQ_WEBHOOK_MAX_BYTES, default 20480.
	WebhookMaxBytes int
	// WebhookSecretGrace is how long the previous signing secret keeps
	// signing after a rotation. CLAUDEQ_WEBHOOK_SECRET_GRACE, default 24h.
	WebhookSecretGrace time.Duration
	// MetricsAddr, when set, is an admin listener that every role (api,
	// worker, scheduler) opens, serving /metrics without a key plus /livez
	// and /readyz (Redis and MongoDB answer). Keep it off the public
	// network. The api also serves /metrics on its own listener, to keys
	// with the admin:read scope. CLAUDEQ_METRICS_ADDR, default empty (no
	// admin listener).
	MetricsAddr string
	// Security holds HTTP hardening, rate limits, the content policy,
	// encryption at rest, the audit log and monitoring (security.go).
	Security
	// Batches holds the Message Batches settings (batches.go).
	Batches Batches
}

type loader struct {
	getenv func(string) string
	errs   []error
}

func (l *loader) str(key, def string) string {
	if v := strings.TrimSpace(l.getenv(key)); v != "" {
		return v
	}
	return def
}

func (l *loader) dur(key string, def time.Duration) time.Duration {
	v := strings.TrimSpace(l.getenv(key))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		l.errs = append(l.errs, fmt.Errorf("%s: %q is not a non-negative duration such as 30s or 5m", key, v))
		return def
	}
	return d
}

func (l *loader) int(key string, def, min int64) int64 {
	v := strings.TrimSpace(l.getenv(key))
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min {
		l.errs = append(l.errs, fmt.Errorf("%s: %q is not a whole number ≥ %d", key, v, min))
		return def
	}
	return n
}

func (l *loader) url(key, def string, schemes ...string) string {
	v := l.str(key, def)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" && u.Scheme != "unix" {
		l.errs = append(l.errs, fmt.Errorf("%s: not a URL (want %s://host:port…)", key, schemes[0]))
		return v
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return v
		}
	}
	l.errs = append(l.errs, fmt.Errorf("%s: scheme %q, want one of %v", key, u.Scheme, schemes))
	return v
}

// usd reads an amount of US dollars ("12.50") as micro-dollars; empty is 0.
func (l *loader) usd(key string) int64 {
	v := strings.TrimSpace(l.getenv(key))
	if v == "" {
		return 0
	}
	m, err := pricing.ParseUSD(v)
	if err != nil || m < 0 {
		l.errs = append(l.errs, fmt.Errorf("%s: %q is not an amount of US dollars such as 25 or 12.50", key, v))
		return 0
	}
	return int64(m)
}

// Load reads the configuration through getenv and returns every problem it
// finds, joined.
func Load(getenv func(string) string) (Config, error) {
	l := &loader{getenv: getenv}
	c := Config{
		HTTPAddr:                 l.str("CLAUDEQ_HTTP_ADDR", "127.0.0.1:8080"),
		RedisURL:                 claudeq.Secret(l.url("CLAUDEQ_REDIS_URL", "", "redis", "rediss", "unix")),
		MongoURI:                 claudeq.Secret(l.url("CLAUDEQ_MONGO_URI", "", "mongodb", "mongodb+srv")),
		MongoDatabase:            l.str("CLAUDEQ_MONGO_DATABASE", "claudeq"),
		UpstreamURL:              l.url("CLAUDEQ_UPSTREAM_URL", "https://api.anthropic.com", "https", "http"),
		UpstreamAPIKey:           claudeq.Secret(l.str("CLAUDEQ_UPSTREAM_API_KEY", "")),
		UpstreamTimeout:          l.dur("CLAUDEQ_UPSTREAM_TIMEOUT", 5*time.Minute),
		DataDir:                  l.str("CLAUDEQ_DATA_DIR", ".claudeq"),
		DevAPIKey:                claudeq.Secret(l.str("CLAUDEQ_DEV_API_KEY", "")),
		CacheTTL:                 l.dur("CLAUDEQ_CACHE_TTL", time.Hour),
		MaxBodyBytes:             l.int("CLAUDEQ_MAX_BODY_BYTES", 1<<20, 1024),
		WorkerConcurrency:        int(l.int("CLAUDEQ_WORKER_CONCURRENCY", 100, 1)),
		MaxQueuedJobs:            int(l.int("CLAUDEQ_MAX_QUEUED_JOBS", 100000, 0)),
		JobMaxRetries:            int(l.int("CLAUDEQ_JOB_MAX_RETRIES", 8, 0)),
		JobTimeout:               l.dur("CLAUDEQ_JOB_TIMEOUT", 10*time.Minute),
		NoUpstreamWait:           l.dur("CLAUDEQ_NO_UPSTREAM_WAIT", 10*time.Minute),
		RetryBase:                l.dur("CLAUDEQ_RETRY_BASE", time.Second),
		RetryMax:                 l.dur("CLAUDEQ_RETRY_MAX", 5*time.Minute),
		Retention:                l.dur("CLAUDEQ_RETENTION", 30*24*time.Hour),
		RetentionInterval:        l.dur("CLAUDEQ_RETENTION_INTERVAL", time.Hour),
		ReconcileInterval:        l.dur("CLAUDEQ_RECONCILE_INTERVAL", time.Minute),
		TaskCheckInterval:        l.dur("CLAUDEQ_TASK_CHECK_INTERVAL", 20*time.Millisecond),
		DelayedTaskCheckInterval: l.dur("CLAUDEQ_DELAYED_TASK_CHECK_INTERVAL", time.Second),
		KeyCacheTTL:              l.dur("CLAUDEQ_KEY_CACHE_TTL", 30*time.Second),
		KeyWatchInterval:         l.dur("CLAUDEQ_KEY_WATCH_INTERVAL", 250*time.Millisecond),
		IdempotencyTTL:           l.dur("CLAUDEQ_IDEMPOTENCY_TTL", 24*time.Hour),
		ShutdownTimeout:          l.dur("CLAUDEQ_SHUTDOWN_TIMEOUT", 25*time.Second),
		DefaultModel:             l.str("CLAUDEQ_DEFAULT_MODEL", "sonnet"),
		DefaultMaxTokens:         int(l.int("CLAUDEQ_DEFAULT_MAX_TOKENS", 1024, 1)),
		LogFormat:                l.str("CLAUDEQ_LOG_FORMAT", "json"),
		MetricsAddr:              l.str("CLAUDEQ_METRICS_ADDR", ""),
	}
	tz := l.str("CLAUDEQ_TIMEZONE", "UTC")
	if loc, err := time.LoadLocation(tz); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_TIMEZONE: %q is not an IANA time zone such as Europe/Berlin", tz))
		c.Timezone = time.UTC
	} else {
		c.Timezone = loc
	}
	c.QuotaUserDaily = l.usd("CLAUDEQ_QUOTA_USER_DAILY_USD")
	c.QuotaDepartmentDaily = l.usd("CLAUDEQ_QUOTA_DEPARTMENT_DAILY_USD")
	c.QuotaTotalDaily = l.usd("CLAUDEQ_QUOTA_TOTAL_DAILY_USD")
	c.QuotaTotalMonthly = l.usd("CLAUDEQ_QUOTA_TOTAL_MONTHLY_USD")
	c.QuotaReconcileAfter = l.dur("CLAUDEQ_QUOTA_RECONCILE_AFTER", 2*time.Hour)
	c.PricingFile = l.str("CLAUDEQ_PRICING_FILE", "")
	if l.str("CLAUDEQ_PRICING_DEFAULT_TIER", "") != "" {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_PRICING_DEFAULT_TIER: no longer read: a model without a price is priced as the dearest model of its family, "+
			"and says so (priced_by: fallback); unset it, and add the model's price with CLAUDEQ_PRICING_FILE"))
	}
	c.ModelAliases = map[string]string{}
	if v := l.str("CLAUDEQ_MODEL_ALIASES", ""); v != "" {
		for _, pair := range strings.Split(v, ",") {
			alias, id, ok := strings.Cut(strings.TrimSpace(pair), "=")
			alias, id = strings.ToLower(strings.TrimSpace(alias)), strings.TrimSpace(id)
			switch {
			case !ok || alias == "" || id == "":
				l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_MODEL_ALIASES: %q is not alias=model-id", pair))
			case alias == "auto":
				l.errs = append(l.errs, fmt.Errorf(`CLAUDEQ_MODEL_ALIASES: "auto" is the automatic model choice and cannot be an alias`))
			case c.ModelAliases[alias] != "":
				l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_MODEL_ALIASES: %s is pinned twice", alias))
			default:
				c.ModelAliases[alias] = strings.ToLower(id) // model ids are lower case
			}
		}
		for alias, id := range c.ModelAliases {
			if _, pin := c.ModelAliases[id]; pin && !slices.Contains(claudeq.Families, id) {
				l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_MODEL_ALIASES: %s=%s: pin an alias to a model id or a family, not to another alias", alias, id))
			}
		}
	}
	c.RoutingSonnetScore = int(l.int("CLAUDEQ_ROUTING_SONNET_SCORE", 3, 0))
	c.RoutingOpusScore = int(l.int("CLAUDEQ_ROUTING_OPUS_SCORE", 7, 0))
	c.NodesFile = l.str("CLAUDEQ_NODES_FILE", "")
	if c.NodesFile != "" {
		nodes, err := upstream.LoadNodes(c.NodesFile, getenv)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_NODES_FILE: %w", err))
		}
		c.Nodes = nodes
	}
	c.Balancer = l.str("CLAUDEQ_BALANCER", upstream.LeastConnections)
	switch c.Balancer {
	case upstream.RoundRobin, upstream.WeightedRandom, upstream.LeastConnections, upstream.ResponseTime:
	default:
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_BALANCER: %q, want round_robin, weighted_random, least_connections or response_time", c.Balancer))
	}
	c.HealthInterval = l.dur("CLAUDEQ_HEALTH_INTERVAL", 30*time.Second)
	if c.HealthInterval == 0 {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_HEALTH_INTERVAL: must be positive"))
	}
	c.NodeCooldown = l.dur("CLAUDEQ_NODE_COOLDOWN", 30*time.Second)
	c.NodeFailures = int(l.int("CLAUDEQ_NODE_FAILURES", 5, 1))
	c.FallbackModels = map[string][]string{}
	if v := l.str("CLAUDEQ_FALLBACK_MODELS", ""); v != "" {
		for _, pair := range strings.Split(v, ",") {
			from, to, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || from == "" || to == "" {
				l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_FALLBACK_MODELS: %q is not model=fallback", pair))
				continue
			}
			c.FallbackModels[from] = append(c.FallbackModels[from], to)
		}
	}
	c.PublicURL = l.str("CLAUDEQ_PUBLIC_URL", "http://"+c.HTTPAddr)
	c.WebhookTimeout = l.dur("CLAUDEQ_WEBHOOK_TIMEOUT", 15*time.Second)
	c.WebhookMaxBytes = int(l.int("CLAUDEQ_WEBHOOK_MAX_BYTES", webhook.DefaultMaxBody, 1024))
	c.WebhookSecretGrace = l.dur("CLAUDEQ_WEBHOOK_SECRET_GRACE", 24*time.Hour)
	if p, err := webhook.ParsePolicy(l.str("CLAUDEQ_WEBHOOK_ALLOW", "")); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_WEBHOOK_ALLOW: %w", err))
	} else {
		c.WebhookAllow = p
	}
	c.WebhookSchedule = webhook.DefaultSchedule
	if v := l.str("CLAUDEQ_WEBHOOK_SCHEDULE", ""); v != "" {
		if sch, err := webhook.ParseSchedule(v); err != nil {
			l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_WEBHOOK_SCHEDULE: %w", err))
		} else {
			c.WebhookSchedule = sch
		}
	}
	c.CacheRedisURL = claudeq.Secret(l.url("CLAUDEQ_CACHE_REDIS_URL", string(c.RedisURL), "redis", "rediss", "unix"))
	if err := c.LogLevel.UnmarshalText([]byte(l.str("CLAUDEQ_LOG_LEVEL", "info"))); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_LOG_LEVEL: want debug, info, warn or error"))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_LOG_FORMAT: %q, want json or text", c.LogFormat))
	}
	if c.IdempotencyTTL < time.Minute {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_IDEMPOTENCY_TTL: at least 1m"))
	}
	if c.RetryMax < c.RetryBase {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_RETRY_MAX must be ≥ CLAUDEQ_RETRY_BASE"))
	}
	if c.RetentionInterval == 0 {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_RETENTION_INTERVAL: must be positive"))
	}
	if c.ReconcileInterval == 0 {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_RECONCILE_INTERVAL: must be positive"))
	}
	c.Security = l.security()
	c.Batches = l.batches()
	return c, errors.Join(l.errs...)
}

// RequireServers reports an error for each server URL a production process
// needs but was not given.
func (c Config) RequireServers() error {
	var errs []error
	if c.RedisURL == "" {
		errs = append(errs, errors.New("CLAUDEQ_REDIS_URL is required (e.g. redis://127.0.0.1:6379/0)"))
	}
	if c.MongoURI == "" {
		errs = append(errs, errors.New("CLAUDEQ_MONGO_URI is required (e.g. mongodb://127.0.0.1:27017)"))
	}
	return errors.Join(errs...)
}

// Map returns a getenv over m, for tests.
func Map(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
