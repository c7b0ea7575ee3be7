// Command claude-sim serves a simulated Anthropic Messages API (see package
// internal/sim) for dev mode, tests and benchmarks.
//
// Usage:
//
//	claude-sim --addr 127.0.0.1:9090 --latency 0 --latency-jitter 0 --per-token-latency 0 \
//		--fault-rate 0 --faults 429,529,500,timeout,reset --retry-after 1s \
//		--api-key "" --seed 0
//
// Run with --help for all flags and the x-sim-* request headers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/claudeq/claudeq/internal/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "claude-sim:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsage marks command-line errors.
var errUsage = errors.New("usage error")

const usageHeader = `claude-sim serves a simulated Anthropic Messages API.

Endpoints: POST /v1/messages (streaming and not), POST /v1/messages/count_tokens,
GET /v1/models, GET /v1/models/{id}. Replies are deterministic for a given request;
tokens are counted as ceil(utf8 bytes / 4) per piece of text.

Usage: claude-sim [flags]

Flags:
`

const usageFooter = `
Fault kinds (--faults, x-sim-fault): 429, 529, 500, timeout, reset, slow,
spend_limit, 400, 401 (and "ok" in x-sim-fault to force a normal reply).

Request headers (POST /v1/messages):
  x-sim-fault: <kind>          force this fault for the request (overrides the
                               fault rate)
  x-sim-retry-after: <seconds> retry-after of an injected 429 (default --retry-after)
  x-sim-latency: <duration>    fixed latency for this request, a Go duration
                               such as 250ms (default --latency)
`

// shutdownGrace bounds how long in-flight requests may run after a signal.
const shutdownGrace = 5 * time.Second

// run parses args, serves until ctx is done and shuts down gracefully. It
// prints "claude-sim listening on http://HOST:PORT" to stdout once ready.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("claude-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr       = fs.String("addr", "127.0.0.1:9090", "listen address (host:port; port 0 picks a free port)")
		latency    = fs.Duration("latency", 0, "fixed latency before each response starts")
		jitter     = fs.Duration("latency-jitter", 0, "random latency, uniform in [0, jitter], added to --latency per request")
		perToken   = fs.Duration("per-token-latency", 0, "latency added per output token (spread between deltas when streaming)")
		faultRate  = fs.Float64("fault-rate", 0, "probability (0..1) of an injected fault per /v1/messages request")
		faults     = fs.String("faults", "429,529,500,timeout,reset", "comma-separated fault kinds drawn by --fault-rate")
		retryAfter = fs.Duration("retry-after", time.Second, "retry-after sent with injected 429 faults (rounded up to seconds)")
		timeout    = fs.Duration("timeout", 30*time.Second, "how long a timeout fault hangs before answering 504")
		apiKey     = fs.String("api-key", "", "if set, require this key in x-api-key or Authorization: Bearer")
		seed       = fs.Int64("seed", 0, "seed for fault draws (0 = time-based)")
		models     = fs.String("models", "", "comma-separated model IDs to serve (default: "+strings.Join(sim.DefaultModels(), ",")+")")
		logLevel   = fs.String("log-level", "info", "log level: debug, info, warn or error (debug logs every request)")
		reqLog     = fs.String("request-log", "", "append one JSON line per POST /v1/messages request to this file (time, body hash, status, fault, retry-after)")
	)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprint(out, usageHeader)
		fs.PrintDefaults()
		fmt.Fprint(out, usageFooter)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *faultRate < 0 || *faultRate > 1 {
		return fmt.Errorf("%w: --fault-rate must be between 0 and 1, got %v", errUsage, *faultRate)
	}
	faultList := splitList(*faults)
	for _, f := range faultList {
		if !sim.IsFault(f) || f == sim.FaultNone {
			return fmt.Errorf("%w: --faults: unknown fault kind %q", errUsage, f)
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level: %w", errUsage, err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var requestLog io.Writer
	if *reqLog != "" {
		f, err := os.OpenFile(*reqLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("--request-log: %w", err)
		}
		defer f.Close()
		requestLog = f
	}

	s := sim.New(sim.Config{
		Latency:         *latency,
		LatencyJitter:   *jitter,
		RequestLog:      requestLog,
		PerTokenLatency: *perToken,
		FaultRate:       *faultRate,
		Faults:          faultList,
		RetryAfter:      *retryAfter,
		Timeout:         *timeout,
		Seed:            *seed,
		APIKey:          *apiKey,
		Models:          splitList(*models),
		Logger:          logger,
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	url := "http://" + ln.Addr().String()
	logger.Info("claude-sim listening", "url", url, "latency", *latency, "per_token_latency", *perToken,
		"fault_rate", *faultRate, "faults", faultList, "auth", *apiKey != "")
	fmt.Fprintf(stdout, "claude-sim listening on %s\n", url)

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("claude-sim shutting down")
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		_ = hs.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	st := s.Stats()
	logger.Info("claude-sim stopped", "requests", st.Requests, "succeeded", st.Succeeded,
		"rejected", st.Rejected, "canceled", st.Canceled, "faults", st.Faults, "max_in_flight", st.MaxInFlight)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
