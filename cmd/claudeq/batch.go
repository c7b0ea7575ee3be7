package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/batch"
)

// claudeq batch: Message Batches from JSONL files, through the api's
// Anthropic-compatible /v1/messages/batches (docs/batches.md).

// batchLimits are the server's defaults (CLAUDEQ_BATCH_MAX_REQUESTS,
// CLAUDEQ_BATCH_MAX_BYTES); an input above them is split into several
// batches.
const (
	defaultBatchMaxRequests = 100_000
	defaultBatchMaxBytes    = 256 << 20
)

type batchCLI struct {
	getenv   func(string) string
	url, key string
	http     *http.Client
}

func batchCmd(getenv func(string) string) *cobra.Command {
	b := &batchCLI{getenv: getenv, http: &http.Client{}}
	cmd := &cobra.Command{
		Use:   "batch",
		Short: "Run Message Batches from JSONL files: submit, wait, results, list, cancel",
		Long: `Run Message Batches through claudeq's Anthropic-compatible API.

Input lines (JSONL) are Anthropic batch requests,
  {"custom_id": "q1", "params": {"model": "haiku", "max_tokens": 256, "messages": [...]}}
or simple prompts,
  {"custom_id": "q1", "prompt": "Summarize ...", "model": "haiku", "max_tokens": 256}
(custom_id defaults to line-<n>; model and max_tokens to --model and --max-tokens).
Results are JSONL, one line per request: {"custom_id", "result": {"type": "succeeded", "message": {...}}}
or errored, canceled, expired.`,
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if b.url == "" {
				b.url = "http://127.0.0.1:8080"
			}
			if b.key == "" {
				return errors.New("no API key: pass --key or set CLAUDEQ_API_KEY (a key with the batches scope)")
			}
			return nil
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&b.url, "url", getenv("CLAUDEQ_URL"), "claudeq api base URL (CLAUDEQ_URL; default http://127.0.0.1:8080)")
	f.StringVar(&b.key, "key", getenv("CLAUDEQ_API_KEY"), "API key with the batches scope (CLAUDEQ_API_KEY)")
	cmd.AddCommand(b.submitCmd(), b.waitCmd(), b.resultsCmd(), b.listCmd(), b.cancelCmd())
	return cmd
}

// waitOpts are the flags of commands that wait.
type waitOpts struct {
	out      string
	poll     time.Duration
	progress string
}

func (o *waitOpts) flags(c *cobra.Command) {
	c.Flags().StringVar(&o.out, "out", "", "write the results (JSONL) to this file when the batches have ended")
	c.Flags().DurationVar(&o.poll, "poll", 2*time.Second, "how often to ask for the batches' progress (backs off when rate limited)")
	c.Flags().StringVar(&o.progress, "progress", "auto", "progress bar: auto (when stderr is a terminal), on, off")
}

func (b *batchCLI) submitCmd() *cobra.Command {
	var (
		wait        bool
		wo          waitOpts
		model       string
		maxTokens   int
		maxRequests int
		maxBytes    int64
	)
	c := &cobra.Command{
		Use:   "submit FILE.jsonl [--wait] [--out results.jsonl]",
		Short: "Submit a JSONL file as one or more batches (split above the limits); prints the batch ids",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			reqs, err := readBatchFile(args[0], model, maxTokens)
			if err != nil {
				return err
			}
			chunks := splitRequests(reqs, maxRequests, maxBytes)
			stderr := c.ErrOrStderr()
			var ids []string
			for i, ch := range chunks {
				bt, err := b.create(c.Context(), ch)
				if err != nil {
					if len(ids) > 0 {
						fmt.Fprintf(stderr, "submitted before the failure: %s\n", strings.Join(ids, " "))
					}
					return fmt.Errorf("batch %d of %d: %w", i+1, len(chunks), err)
				}
				ids = append(ids, bt.ID)
				fmt.Fprintln(c.OutOrStdout(), bt.ID)
				fmt.Fprintf(stderr, "submitted %s: %d requests", bt.ID, len(ch))
				if bt.RequestCounts.Errored > 0 {
					fmt.Fprintf(stderr, " (%d errored at submit: invalid params)", bt.RequestCounts.Errored)
				}
				fmt.Fprintln(stderr)
			}
			if !wait {
				fmt.Fprintf(stderr, "follow with: claudeq batch wait %s\n", strings.Join(ids, " "))
				return nil
			}
			return b.waitAndFetch(c, ids, wo)
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "wait until the batches have ended, with a progress bar")
	wo.flags(c)
	c.Flags().StringVar(&model, "model", "sonnet", "model of simple lines that name none")
	c.Flags().IntVar(&maxTokens, "max-tokens", 1024, "max_tokens of simple lines that give none")
	c.Flags().IntVar(&maxRequests, "max-requests", defaultBatchMaxRequests, "split into batches of at most this many requests")
	c.Flags().Int64Var(&maxBytes, "max-bytes", defaultBatchMaxBytes, "split into batches whose body is at most this many bytes")
	return c
}

func (b *batchCLI) waitCmd() *cobra.Command {
	var wo waitOpts
	c := &cobra.Command{
		Use:   "wait ID... [--out results.jsonl]",
		Short: "Wait until batches have ended, with a progress bar; optionally write their results",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(c *cobra.Command, args []string) error { return b.waitAndFetch(c, args, wo) },
	}
	wo.flags(c)
	return c
}

func (b *batchCLI) resultsCmd() *cobra.Command {
	var out string
	var partial bool
	c := &cobra.Command{
		Use:   "results ID... [--out results.jsonl]",
		Short: "Write the results of ended batches (JSONL) to --out or stdout",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			w, closeFn, err := openOut(out, c.OutOrStdout())
			if err != nil {
				return err
			}
			n, err := b.writeResults(c.Context(), args, partial, w)
			if cerr := closeFn(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(c.ErrOrStderr(), "wrote %d results to %s\n", n, out)
			}
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "file to write (default stdout)")
	c.Flags().BoolVar(&partial, "partial", false, "the requests finished so far of batches still running")
	return c
}

func (b *batchCLI) listCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "list [--limit N]",
		Short: "List your batches, newest first",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var page struct {
				Data []batchObj `json:"data"`
			}
			if err := b.do(c.Context(), "GET", "/v1/messages/batches?limit="+strconv.Itoa(limit), nil, &page); err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATUS\tREQUESTS\tPROCESSING\tSUCCEEDED\tERRORED\tCANCELED\tEXPIRED\tCREATED")
			for _, bt := range page.Data {
				n := bt.RequestCounts
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", bt.ID, bt.ProcessingStatus, n.total(), n.Processing,
					n.Succeeded, n.Errored, n.Canceled, n.Expired, bt.CreatedAt.Local().Format(time.DateTime))
			}
			return w.Flush()
		},
	}
	c.Flags().IntVar(&limit, "limit", 20, "how many (1 to 1000)")
	return c
}

func (b *batchCLI) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID...",
		Short: "Cancel batches: queued requests end canceled, running ones finish",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			for _, id := range args {
				var bt batchObj
				if err := b.do(c.Context(), "POST", "/v1/messages/batches/"+url.PathEscape(id)+"/cancel", nil, &bt); err != nil {
					return fmt.Errorf("%s: %w", id, err)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s %s\n", bt.ID, bt.ProcessingStatus)
			}
			return nil
		},
	}
}

// batchObj is the part of a Message Batch the CLI reads.
type batchObj struct {
	ID               string      `json:"id"`
	ProcessingStatus string      `json:"processing_status"`
	RequestCounts    batchCounts `json:"request_counts"`
	CreatedAt        time.Time   `json:"created_at"`
}

type batchCounts struct {
	Processing int64 `json:"processing"`
	Succeeded  int64 `json:"succeeded"`
	Errored    int64 `json:"errored"`
	Canceled   int64 `json:"canceled"`
	Expired    int64 `json:"expired"`
}

func (n batchCounts) total() int64 {
	return n.Processing + n.Succeeded + n.Errored + n.Canceled + n.Expired
}

func (n *batchCounts) add(o batchCounts) {
	n.Processing += o.Processing
	n.Succeeded += o.Succeeded
	n.Errored += o.Errored
	n.Canceled += o.Canceled
	n.Expired += o.Expired
}

// apiError is an error answered by the api, in the Anthropic shape.
type apiError struct {
	Status     int
	Type       string
	Message    string
	RetryAfter time.Duration // from the Retry-After header
}

// transient reports whether waiting and asking again may succeed: a rate
// limit, or the api unable to answer for a moment.
func (e *apiError) transient() bool {
	return e.Status == http.StatusTooManyRequests && e.Type == "rate_limit_error" ||
		e.Status == http.StatusServiceUnavailable || e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

// do sends one request and decodes a JSON answer into out.
func (b *batchCLI) do(ctx context.Context, method, path string, body []byte, out any) error {
	resp, err := b.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// send sends one request; an answer other than 200 is an *apiError.
func (b *batchCLI) send(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(b.url, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.key)
	req.Header.Set("anthropic-version", "2023-06-01")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ra time.Duration
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
		ra = time.Duration(n) * time.Second
	}
	var eb struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &eb) != nil || eb.Error.Type == "" {
		return nil, &apiError{Status: resp.StatusCode, Type: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(raw)), RetryAfter: ra}
	}
	return nil, &apiError{Status: resp.StatusCode, Type: eb.Error.Type, Message: eb.Error.Message, RetryAfter: ra}
}

// create submits one batch of requests (raw JSON objects).
func (b *batchCLI) create(ctx context.Context, reqs []json.RawMessage) (*batchObj, error) {
	var body bytes.Buffer
	body.WriteString(`{"requests":[`)
	for i, r := range reqs {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(r)
	}
	body.WriteString("]}")
	var bt batchObj
	if err := b.do(ctx, "POST", "/v1/messages/batches", body.Bytes(), &bt); err != nil {
		return nil, err
	}
	return &bt, nil
}

func (b *batchCLI) get(ctx context.Context, id string) (*batchObj, error) {
	var bt batchObj
	if err := b.do(ctx, "GET", "/v1/messages/batches/"+url.PathEscape(id), nil, &bt); err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	return &bt, nil
}

// waitAndFetch waits for ids to end, showing progress, then writes their
// results to wo.out when set.
func (b *batchCLI) waitAndFetch(c *cobra.Command, ids []string, wo waitOpts) error {
	stderr := c.ErrOrStderr()
	counts, err := b.wait(c.Context(), ids, wo, stderr)
	if err != nil {
		if c.Context().Err() != nil {
			fmt.Fprintf(stderr, "\nstopped waiting; the batches go on. Resume with: claudeq batch wait %s\n", strings.Join(ids, " "))
		}
		return err
	}
	fmt.Fprintf(stderr, "ended: %d succeeded, %d errored, %d canceled, %d expired\n", counts.Succeeded, counts.Errored, counts.Canceled, counts.Expired)
	if wo.out == "" {
		fmt.Fprintf(stderr, "results: claudeq batch results %s --out results.jsonl\n", strings.Join(ids, " "))
		return nil
	}
	w, closeFn, err := openOut(wo.out, nil)
	if err != nil {
		return err
	}
	n, err := b.writeResults(c.Context(), ids, false, w)
	if cerr := closeFn(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d results to %s\n", n, wo.out)
	return nil
}

// wait polls ids until every one has ended and returns their summed counts.
// A progress bar (done of total, counts, rate and ETA) goes to stderr when
// it is a terminal, or with --progress on; otherwise a line every 10 s.
func (b *batchCLI) wait(ctx context.Context, ids []string, wo waitOpts, stderr io.Writer) (batchCounts, error) {
	bar := wo.progress == "on" || (wo.progress == "auto" && loadtestIsTerminal(stderr))
	if wo.progress != "on" && wo.progress != "off" && wo.progress != "auto" {
		return batchCounts{}, fmt.Errorf("--progress: auto, on or off, not %q", wo.progress)
	}
	var pb *progressbar.ProgressBar
	lastLine := time.Now()
	pause := wo.poll
	for {
		var sum batchCounts
		ended := 0
		var transient *apiError
		for _, id := range ids {
			bt, err := b.get(ctx, id)
			if ae := (*apiError)(nil); errors.As(err, &ae) && ae.transient() {
				transient = ae // rate limited, or the api is restarting: wait and ask again
				break
			}
			if err != nil {
				return sum, err
			}
			sum.add(bt.RequestCounts)
			if bt.ProcessingStatus == "ended" {
				ended++
			}
		}
		if transient != nil {
			pause = min(max(2*pause, transient.RetryAfter, time.Second), time.Minute)
			if !bar {
				fmt.Fprintf(stderr, "%s; asking again in %s\n", transient.Error(), pause)
			}
			select {
			case <-ctx.Done():
				return sum, ctx.Err()
			case <-time.After(pause):
			}
			continue
		}
		pause = wo.poll
		total, done := sum.total(), sum.total()-sum.Processing
		desc := fmt.Sprintf("%d/%d batches · succeeded %d · errored %d · canceled %d · expired %d",
			ended, len(ids), sum.Succeeded, sum.Errored, sum.Canceled, sum.Expired)
		switch {
		case bar && pb == nil:
			pb = progressbar.NewOptions64(total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetWidth(20),
				progressbar.OptionShowCount(), progressbar.OptionSetItsString("req"), progressbar.OptionShowIts(),
				progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true),
				progressbar.OptionSetSpinnerChangeInterval(0), progressbar.OptionSetDescription(desc))
			_ = pb.Set64(done)
		case bar:
			pb.Describe(desc)
			_ = pb.Set64(done)
		case ended == len(ids) || time.Since(lastLine) >= 10*time.Second:
			fmt.Fprintf(stderr, "%s: %d/%d requests done\n", desc, done, total)
			lastLine = time.Now()
		}
		if ended == len(ids) {
			if pb != nil {
				_ = pb.Finish()
				fmt.Fprintln(stderr)
			}
			return sum, nil
		}
		select {
		case <-ctx.Done():
			return sum, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// writeResults copies the results of ids to w and returns how many lines.
func (b *batchCLI) writeResults(ctx context.Context, ids []string, partial bool, w io.Writer) (int, error) {
	n := 0
	for _, id := range ids {
		path := "/v1/messages/batches/" + url.PathEscape(id) + "/results"
		if partial {
			path += "?partial=true"
		}
		resp, err := b.send(ctx, "GET", path, nil)
		if err != nil {
			return n, fmt.Errorf("%s: %w", id, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
				resp.Body.Close()
				return n, err
			}
			n++
		}
		err = sc.Err()
		resp.Body.Close()
		if err != nil {
			return n, fmt.Errorf("%s: results cut short: %w", id, err)
		}
	}
	return n, nil
}

// openOut opens path for writing (def when path is empty).
func openOut(path string, def io.Writer) (io.Writer, func() error, error) {
	if path == "" || path == "-" {
		if def == nil {
			def = os.Stdout
		}
		return def, func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	return bw, func() error {
		if err := bw.Flush(); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	}, nil
}

// readBatchFile reads a JSONL file of batch requests ("-": standard input)
// and returns each as an Anthropic batch request object {"custom_id",
// "params"}; see batch.ReadLines.
func readBatchFile(path, model string, maxTokens int) ([]json.RawMessage, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	return batch.ReadLines(r, path, model, maxTokens)
}

// splitRequests cuts reqs into batches of at most maxRequests requests and
// maxBytes of body each.
func splitRequests(reqs []json.RawMessage, maxRequests int, maxBytes int64) [][]json.RawMessage {
	const envelope = len(`{"requests":[]}`)
	var out [][]json.RawMessage
	var cur []json.RawMessage
	size := int64(envelope)
	for _, r := range reqs {
		add := int64(len(r)) + 1
		if len(cur) > 0 && (len(cur) >= maxRequests || size+add > maxBytes) {
			out = append(out, cur)
			cur, size = nil, int64(envelope)
		}
		cur = append(cur, r)
		size += add
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
