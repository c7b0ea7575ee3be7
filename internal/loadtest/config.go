package loadtest

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Mode selects the API a run drives.
type Mode string

// The modes.
const (
	// ModeAsync submits jobs (POST /api/claude/chat) and waits for them.
	ModeAsync Mode = "async"
	// ModeSync calls POST /v1/messages and waits for the JSON answer.
	ModeSync Mode = "sync"
	// ModeStream calls POST /v1/messages with "stream": true (SSE).
	ModeStream Mode = "stream"
)

// Defaults applied to zero Config fields.
const (
	DefaultModel          = "claude-sonnet-5-5"
	DefaultMaxTokens      = 256
	DefaultPollInterval   = 100 * time.Millisecond
	DefaultTimeout        = 5 * time.Minute
	DefaultRequestTimeout = time.Minute
)

// DefaultPromptTokens is the prompt size distribution used when neither
// Config.Prompts nor Config.PromptTokens is given: uniform 50..500 tokens.
var DefaultPromptTokens = TokenDist{Kind: DistUniform, Min: 50, Max: 500}

// Config describes one load test. Choose a closed loop (Users, with
// RequestsPerUser and/or Duration) or an open loop (Rate and Duration; or
// Rate 0 with MaxWorkers to send as fast as MaxWorkers allow).
type Config struct {
	// URL is the base URL of the service, e.g. http://127.0.0.1:8080.
	URL string
	// Key is the API key: "Authorization: Bearer" in async mode, x-api-key
	// for /v1/messages.
	Key string
	// Mode is async (default), sync or stream.
	Mode Mode
	// AllowRemote permits a URL that is not a loopback address. Without it
	// Run refuses anything but 127.0.0.0/8, ::1 and localhost.
	AllowRemote bool

	// Users is the number of concurrent users of the closed loop.
	Users int
	// RequestsPerUser is how many requests each user sends back to back;
	// 0 means until Duration.
	RequestsPerUser int

	// Rate is the open loop's send rate, requests per second.
	Rate float64
	// Duration is how long the open loop sends; in the closed loop an
	// optional cap after which users start no new request.
	Duration time.Duration
	// MaxWorkers caps the requests the open loop has in flight (0 = no cap,
	// as vegeta). A capped open loop can fall behind its schedule; that
	// shows in the latencies, measured from the intended send times. With
	// Rate 0 the loop sends as fast as MaxWorkers allow.
	MaxWorkers int

	// PollInterval is how often an async job is polled (default 100 ms).
	PollInterval time.Duration
	// Webhook makes async jobs report their end to a listener on
	// 127.0.0.1 (webhook_url); polling then only backs it up, every
	// 10×PollInterval (at least 2 s). The service must allow the
	// destination (CLAUDEQ_WEBHOOK_ALLOW).
	Webhook bool
	// SubmitOnly counts an async request done when it is accepted (202 or
	// 200) and does not wait for the job.
	SubmitOnly bool

	// Prompts, if set, are sent in order (cycling); Model and MaxTokens fill
	// in what a prompt leaves out. Otherwise prompts are generated with
	// sizes drawn from PromptTokens.
	Prompts []Prompt
	// PromptTokens is the size distribution of generated prompts (default
	// uniform 50..500 tokens; a token is about 4 bytes).
	PromptTokens TokenDist
	// CacheRatio (0..1) is the fraction of requests that repeat an earlier
	// request exactly, which the service can answer from its cache.
	CacheRatio float64
	// Model is the model of every request (default claude-sonnet-5-5).
	Model string
	// MaxTokens is max_tokens of every request (default 256).
	MaxTokens int
	// Seed seeds prompt generation (0 = time-based).
	Seed int64

	// Timeout bounds the whole run, including the wait for async jobs
	// (default 5 m). What is unfinished then is reported as "unfinished".
	Timeout time.Duration
	// RequestTimeout bounds one HTTP request, body included (default 1 m).
	RequestTimeout time.Duration

	// Progress, if set, receives a live progress bar.
	Progress io.Writer
	// Client, if set, sends the requests (its Timeout is left alone);
	// otherwise a client with a pooled keep-alive transport and no proxy is
	// used.
	Client *http.Client
}

// OpenLoop reports whether c describes an open loop.
func (c Config) OpenLoop() bool { return c.Users == 0 && (c.Rate > 0 || c.MaxWorkers > 0) }

// withDefaults returns c with defaults applied, or an error listing what is
// wrong with it.
func (c Config) withDefaults() (Config, error) {
	if c.Mode == "" {
		c.Mode = ModeAsync
	}
	if c.Model == "" {
		c.Model = DefaultModel
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.PromptTokens == (TokenDist{}) {
		c.PromptTokens = DefaultPromptTokens
	}
	c.URL = strings.TrimRight(strings.TrimSpace(c.URL), "/")

	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Mode {
	case ModeAsync, ModeSync, ModeStream:
	default:
		bad("mode %q: want async, sync or stream", c.Mode)
	}
	if c.URL == "" {
		bad("no URL")
	} else if err := checkURL(c.URL, c.AllowRemote); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.Users < 0 || c.RequestsPerUser < 0 || c.MaxWorkers < 0 || c.Duration < 0:
		bad("users, requests per user, max workers and duration must not be negative")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		bad("rate %v: must be a positive number", c.Rate)
	case c.Users > 0 && c.Rate > 0:
		bad("choose a closed loop (users) or an open loop (rate), not both")
	case c.Users > 0:
		if c.RequestsPerUser == 0 && c.Duration == 0 {
			bad("closed loop: give requests per user, a duration or both")
		}
	case c.Rate > 0 || c.MaxWorkers > 0:
		if c.Duration == 0 {
			bad("open loop: give a duration")
		}
		if c.Rate > 0 && time.Duration(float64(time.Second)/c.Rate) <= 0 {
			bad("rate %v: too high", c.Rate)
		}
	default:
		bad("give a closed loop (users and requests per user) or an open loop (rate and duration)")
	}
	if c.CacheRatio < 0 || c.CacheRatio > 1 || math.IsNaN(c.CacheRatio) {
		bad("cache ratio %v: must be within 0..1", c.CacheRatio)
	}
	if c.MaxTokens < 0 {
		bad("max tokens %d: must be positive", c.MaxTokens)
	}
	if c.PollInterval < 0 || c.Timeout < 0 || c.RequestTimeout < 0 {
		bad("poll interval and timeouts must be positive")
	}
	if len(c.Prompts) == 0 {
		if err := c.PromptTokens.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for i, p := range c.Prompts {
		if p.Prompt == "" {
			bad("prompt %d: empty", i+1)
			break
		}
	}
	if c.Mode != ModeAsync && (c.Webhook || c.SubmitOnly) {
		bad("webhook and submit-only apply to async mode only")
	}
	if c.Webhook && c.SubmitOnly {
		bad("webhook and submit-only exclude each other")
	}
	if c.Webhook && c.URL != "" && checkURL(c.URL, false) != nil {
		bad("webhook: the receiver listens on 127.0.0.1, which a remote service cannot reach")
	}
	return c, errors.Join(errs...)
}

// ErrRemote is wrapped by the error for a URL that is not loopback.
var ErrRemote = errors.New("not a loopback address")

// checkURL accepts http(s) URLs with a host; unless allowRemote, only
// loopback hosts.
func checkURL(raw string, allowRemote bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url %q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("url %q: no host", raw)
	}
	if allowRemote || IsLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("refusing to load-test %s: %q is %w (127.0.0.0/8, ::1 or localhost); "+
		"load tests only run against our own loopback services; pass --allow-remote if you really mean it",
		raw, u.Hostname(), ErrRemote)
}

// IsLoopback reports whether host (a name or an IP address, without port)
// is localhost or a loopback address. No name is resolved.
func IsLoopback(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
