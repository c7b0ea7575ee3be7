package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/claudeq/claudeq/internal/loadtest"
)

func loadtestCmd(getenv func(string) string) *cobra.Command {
	var (
		c                                       loadtest.Config
		mode, promptsFile, promptTokens, htmlTo string
		quiet, asJSON, selfTest, selfTestServe  bool
	)
	cmd := &cobra.Command{
		Use:   "loadtest --url URL --key KEY (--users N --requests-per-user M | --rate R --duration D)",
		Short: "Load-test a claudeq installation on this machine",
		Long: `Load-test a claudeq installation (loopback addresses only, unless --allow-remote).

Modes (--mode):
  async   POST /api/claude/chat, then poll GET /api/claude/jobs/{id} every
          --poll-interval (or wait for a --webhook) until every job ended;
          submit latency, end-to-end, queue wait and processing time
  sync    POST /v1/messages (Anthropic shape, x-api-key); latency
  stream  POST /v1/messages with "stream": true; time to first token and total

Loops:
  closed  --users N --requests-per-user M: N users, each sending M requests back
          to back (in async mode a user's next job starts when its last ended);
          --duration caps it
  open    --rate R --duration D: R requests per second for D, whatever the
          service does (vegeta's pacer); latencies are measured from each
          request's intended send time, so stalls are not hidden (no
          coordinated omission). --max-workers caps requests in flight; with
          --rate 0 and --max-workers N it sends as fast as N workers go.

Prompts are generated (sizes from --prompt-tokens) or read from --prompts
(JSONL: {"prompt": "...", "model": "...", "max_tokens": N} per line, used in
order, cycling); --cache-ratio is the share of requests that repeat an earlier
one exactly (cache hits in async mode).

The report (Markdown, or --json) goes to stdout, --html writes a
self-contained HTML report with plots; live progress goes to stderr when it is
a terminal (--quiet turns it off). --timeout bounds the whole run, the wait for
jobs included; what it cuts short is reported as "unfinished".

--self-test measures how fast one core of this tool generates requests: it
starts a trivial server (202 at once) in a child process and runs the
generator with GOMAXPROCS=1.`,
		Example: `  claudeq loadtest --key $KEY --users 20 --requests-per-user 50
  claudeq loadtest --key $KEY --rate 200 --duration 30s --cache-ratio 0.3 --html report.html
  claudeq loadtest --key $KEY --mode stream --rate 20 --duration 1m --prompt-tokens lognormal:300:0.7
  claudeq loadtest --self-test`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if selfTestServe {
				return loadtestServeTrivial(ctx, stdout)
			}
			if selfTest {
				d := c.Duration
				if d == 0 {
					d = 3 * time.Second
				}
				return loadtestSelfTest(ctx, d, asJSON, stdout, stderr)
			}
			c.Mode = loadtest.Mode(mode)
			if c.Key == "" {
				c.Key = getenv("CLAUDEQ_DEV_API_KEY")
			}
			if c.Key == "" {
				return errors.New("--key is required (or set CLAUDEQ_DEV_API_KEY)")
			}
			if promptsFile != "" {
				if cmd.Flags().Changed("prompt-tokens") {
					return errors.New("--prompts and --prompt-tokens exclude each other")
				}
				ps, err := loadtest.LoadPromptsFile(promptsFile)
				if err != nil {
					return err
				}
				c.Prompts = ps
			} else {
				d, err := loadtest.ParseTokenDist(promptTokens)
				if err != nil {
					return err
				}
				c.PromptTokens = d
			}
			if !quiet && loadtestIsTerminal(stderr) {
				c.Progress = stderr
			}
			rep, err := loadtest.Run(ctx, c)
			if err != nil {
				return err
			}
			if htmlTo != "" {
				if err := loadtestWriteHTML(htmlTo, rep); err != nil {
					return err
				}
			}
			if asJSON {
				err = rep.WriteJSON(stdout)
			} else {
				err = rep.WriteMarkdown(stdout)
			}
			if err != nil {
				return err
			}
			switch {
			case rep.Interrupted:
				fmt.Fprintln(stderr, "claudeq loadtest: interrupted; the report covers what ran until then")
			case rep.TimedOut:
				fmt.Fprintf(stderr, "claudeq loadtest: --timeout %v cut the run short; %d requests are counted as unfinished\n", c.Timeout, rep.ErrorTypes["unfinished"])
			}
			if htmlTo != "" {
				fmt.Fprintln(stderr, "claudeq loadtest: HTML report written to", htmlTo)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "base URL of the claudeq api (loopback only unless --allow-remote)")
	f.StringVar(&c.Key, "key", "", "API key (default $CLAUDEQ_DEV_API_KEY)")
	f.StringVar(&mode, "mode", string(loadtest.ModeAsync), "async, sync or stream")
	f.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a URL that is not a loopback address")
	f.IntVar(&c.Users, "users", 0, "closed loop: concurrent users")
	f.IntVar(&c.RequestsPerUser, "requests-per-user", 0, "closed loop: requests each user sends back to back (0: until --duration)")
	f.Float64Var(&c.Rate, "rate", 0, "open loop: requests per second")
	f.DurationVar(&c.Duration, "duration", 0, "open loop: how long to send; closed loop: optional cap; --self-test: each run (default 3s)")
	f.IntVar(&c.MaxWorkers, "max-workers", 0, "open loop: cap on requests in flight (0: none); bounds the generator when the service stalls at high rates")
	f.DurationVar(&c.PollInterval, "poll-interval", loadtest.DefaultPollInterval, "async: how often a job is polled")
	f.BoolVar(&c.Webhook, "webhook", false, "async: learn of job ends from webhooks to a listener on 127.0.0.1 (the service must allow it in CLAUDEQ_WEBHOOK_ALLOW); polling only backs it up")
	f.BoolVar(&c.SubmitOnly, "submit-only", false, "async: do not wait for the jobs")
	f.StringVar(&promptsFile, "prompts", "", `JSONL file of {"prompt","model","max_tokens"} lines`)
	f.StringVar(&promptTokens, "prompt-tokens", loadtest.DefaultPromptTokens.String(), "size of generated prompts in tokens: N, MIN:MAX (uniform) or lognormal:MEDIAN:SIGMA[:MAX]")
	f.Float64Var(&c.CacheRatio, "cache-ratio", 0, "fraction of requests (0..1) that repeat an earlier one exactly")
	f.StringVar(&c.Model, "model", loadtest.DefaultModel, "model of the requests (a prompts file's own model wins)")
	f.IntVar(&c.MaxTokens, "max-tokens", loadtest.DefaultMaxTokens, "max_tokens of the requests (a prompts file's own wins)")
	f.Int64Var(&c.Seed, "seed", 0, "seed of prompt generation (0: random); fresh prompts stay unique per run")
	f.DurationVar(&c.Timeout, "timeout", loadtest.DefaultTimeout, "bound on the whole run, the wait for jobs included")
	f.DurationVar(&c.RequestTimeout, "request-timeout", loadtest.DefaultRequestTimeout, "bound on one HTTP request")
	f.BoolVar(&quiet, "quiet", false, "no live progress on stderr")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&htmlTo, "html", "", "also write a self-contained HTML report to this file")
	f.BoolVar(&selfTest, "self-test", false, "measure the request rate one core of this tool generates against a trivial local server")
	f.BoolVar(&selfTestServe, "self-test-serve", false, "serve the self-test's trivial server (used by --self-test)")
	_ = f.MarkHidden("self-test-serve")
	return cmd
}

func loadtestIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func loadtestWriteHTML(path string, rep *loadtest.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// loadtestServeTrivial serves loadtest.TrivialHandler on 127.0.0.1, prints its URL
// and stops when stdin closes (its parent, loadtestSelfTest, went away).
func loadtestServeTrivial(ctx context.Context, stdout io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: loadtest.TrivialHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Fprintln(stdout, "http://"+ln.Addr().String())
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return nil
}

// loadtestSelfTest starts this binary's trivial server in a child process (so
// that it does not share the generator's core) and measures the generator
// with GOMAXPROCS=1.
func loadtestSelfTest(ctx context.Context, d time.Duration, asJSON bool, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(exe, "loadtest", "--self-test-serve")
	child.Stderr = stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		_ = stdin.Close() // the child stops at EOF
		done := make(chan struct{})
		go func() { _ = child.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = child.Process.Kill()
			<-done
		}
	}()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	var url string
	select {
	case url = <-line:
	case <-time.After(10 * time.Second):
		return errors.New("self-test: the trivial server did not start")
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		return fmt.Errorf("self-test: the trivial server said %q", url)
	}

	prev := runtime.GOMAXPROCS(1)
	res, err := loadtest.SelfTest(ctx, url, d)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	_, err = io.WriteString(stdout, res.Markdown())
	return err
}
