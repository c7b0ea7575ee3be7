package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/pkg/webhook"
)

// Event types.
const (
	EventJobSucceeded = "job.succeeded"
	EventJobFailed    = "job.failed"
	EventJobCanceled  = "job.canceled"
	EventBatchEnded   = "batch.ended"
)

// DefaultMaxBody is the largest webhook body, 20 KiB: a job's result is
// inlined only when the whole body stays within it; otherwise receivers
// fetch it from result_url (Standard Webhooks: keep payloads small).
const DefaultMaxBody = 20 << 10

// MaxRetryAfter caps a receiver's Retry-After: asking to wait longer is
// read as asking to wait this long.
const MaxRetryAfter = 24 * time.Hour

// Event is a webhook body in the Standard Webhooks shape
// {type, timestamp, data}.
type Event struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      any       `json:"data"`
}

// JobData is the data of job.* events.
type JobData struct {
	JobID     string            `json:"job_id"`
	Status    claudeq.Status    `json:"status"`
	Model     string            `json:"model,omitempty"`
	Usage     *claudeq.Usage    `json:"usage,omitempty"`
	CostUSD   float64           `json:"cost_usd"`
	ResultURL string            `json:"result_url"`
	Error     *claudeq.JobError `json:"error,omitempty"`
	Metadata  map[string]any    `json:"metadata,omitempty"`
	// Result is the job's result (a Messages API response), inlined only
	// when the body stays within the size limit; else it is left out and
	// ResultOmitted is true.
	Result        json.RawMessage `json:"result,omitempty"`
	ResultOmitted bool            `json:"result_omitted,omitempty"`
}

// RequestCounts counts a batch's requests by outcome, as the Message
// Batches API does.
type RequestCounts struct {
	Processing int64 `json:"processing"`
	Succeeded  int64 `json:"succeeded"`
	Errored    int64 `json:"errored"`
	Canceled   int64 `json:"canceled"`
	Expired    int64 `json:"expired"`
}

// BatchData is the data of batch.ended events.
type BatchData struct {
	BatchID          string        `json:"batch_id"`
	ProcessingStatus string        `json:"processing_status"`
	RequestCounts    RequestCounts `json:"request_counts"`
	ResultsURL       string        `json:"results_url"`
}

// ErrTooLarge is returned when an event stays over the size limit even
// without the parts that may be left out.
var ErrTooLarge = errors.New("webhook: event body over the size limit")

// EncodeJobEvent returns the body of a job event of type typ. The result is
// inlined only if the whole body fits in limit bytes (0 means
// DefaultMaxBody); if it does not, the result is left out
// (result_omitted: true; receivers fetch result_url), then the metadata.
// If the body is still too large, the error wraps ErrTooLarge.
func EncodeJobEvent(typ string, ts time.Time, d JobData, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	enc := func() ([]byte, error) {
		return json.Marshal(Event{Type: typ, Timestamp: ts.UTC(), Data: d})
	}
	b, err := enc()
	if err != nil || len(b) <= limit {
		return b, err
	}
	if len(d.Result) > 0 {
		d.Result, d.ResultOmitted = nil, true
		if b, err = enc(); err != nil || len(b) <= limit {
			return b, err
		}
	}
	if d.Metadata != nil {
		d.Metadata = nil
		if b, err = enc(); err != nil || len(b) <= limit {
			return b, err
		}
	}
	return nil, fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, len(b), limit)
}

// Delivery is one message to send.
type Delivery struct {
	ID      string   // webhook-id: the same on every retry of one event
	URL     string   // checked with Policy.CheckURL again before sending
	Secrets []string // every currently valid secret: one signature each
	Body    []byte   // sent and signed as is
}

// Result is the outcome of one delivery attempt.
type Result struct {
	Status     int           // HTTP status; 0 when no response arrived
	Latency    time.Duration // from sending to the end of the response
	Err        error         // nil exactly when the receiver answered 2xx
	RetryAfter time.Duration // the receiver's Retry-After on 429/503 (capped at MaxRetryAfter)
	Disable    bool          // 410 Gone: stop retrying and disable the endpoint
}

// Deliverer sends signed webhooks. It is safe for concurrent use.
type Deliverer struct {
	client    *http.Client
	policy    *Policy
	userAgent string
	now       func() time.Time
}

// NewDeliverer returns a Deliverer sending through NewClient(c).
func NewDeliverer(c Config) *Deliverer {
	d := &Deliverer{client: NewClient(c), policy: c.Policy, userAgent: c.UserAgent, now: c.Now}
	if d.userAgent == "" {
		d.userAgent = "claudeq-webhooks/1"
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d
}

// maxErrorBody is how much of a failed response's body is quoted in the
// error (which is recorded in webhook_attempts); maxDrain how much is read
// to let the connection be reused.
const (
	maxErrorBody = 256
	maxDrain     = 64 << 10
)

// Deliver makes one attempt: it checks the URL against the policy, signs
// the body with every secret (webhook-signature carries one v1 entry per
// secret, so receivers on the old and on the new secret both verify during
// a rotation) and POSTs it. 2xx is success; anything else, 3xx included
// (redirects are not followed), a timeout or a refused destination is a
// failure in Result.Err. Deliver does not retry.
func (d *Deliverer) Deliver(ctx context.Context, dl Delivery) Result {
	if err := d.policy.CheckURL(dl.URL); err != nil {
		return Result{Err: err}
	}
	if dl.ID == "" {
		return Result{Err: errors.New("webhook: delivery without an id")}
	}
	if len(dl.Secrets) == 0 {
		return Result{Err: errors.New("webhook: no signing secret")}
	}
	ts := d.now()
	sigs := make([]string, 0, len(dl.Secrets))
	for _, s := range dl.Secrets {
		sig, err := webhook.Sign(s, dl.ID, ts, dl.Body)
		if err != nil {
			return Result{Err: fmt.Errorf("sign: %w", err)}
		}
		sigs = append(sigs, sig)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dl.URL, bytes.NewReader(dl.Body))
	if err != nil {
		return Result{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.userAgent)
	req.Header.Set(webhook.HeaderID, dl.ID)
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(webhook.HeaderSignature, strings.Join(sigs, " "))

	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		return Result{Latency: time.Since(start), Err: err}
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	r := Result{Status: resp.StatusCode, Latency: time.Since(start)}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return r
	case c >= 300 && c < 400:
		r.Err = fmt.Errorf("receiver answered %d (redirect to %q not followed): move the webhook to its final URL",
			c, resp.Header.Get("Location"))
	case c == http.StatusGone:
		r.Disable = true
		r.Err = fmt.Errorf("receiver answered 410 Gone: disable the endpoint")
	default:
		if c == http.StatusTooManyRequests || c == http.StatusServiceUnavailable {
			r.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
		}
		r.Err = fmt.Errorf("receiver answered %d%s", c, quote(head))
	}
	return r
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date. Unparsable or past values are 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// quote returns ": <body>" for an error message: printable text only.
func quote(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.ToValidUTF8(string(b), ""))
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return ": " + s
}
