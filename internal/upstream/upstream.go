package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Node is one upstream endpoint: the real Claude API, a regional endpoint or
// a compatible proxy.
type Node struct {
	Name    string
	BaseURL string
	APIKey  string // secret: never logged
}

// Client calls one node. It is safe for concurrent use.
type Client struct {
	node Node
	sdk  anthropic.Client
}

// DefaultHTTPClient is a transport sized for many concurrent long calls to
// few hosts.
func DefaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 1024
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}

// New returns a client for node. timeout bounds each call (0: none beyond the
// caller's context).
func New(node Node, hc *http.Client, timeout time.Duration) *Client {
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(node.BaseURL),
		option.WithAPIKey(node.APIKey),
		option.WithMaxRetries(0),
		option.WithHTTPClient(hc),
	}
	if timeout > 0 {
		opts = append(opts, option.WithRequestTimeout(timeout))
	}
	return &Client{node: node, sdk: anthropic.NewClient(opts...)}
}

// Name returns the node's name.
func (c *Client) Name() string { return c.node.Name }

// Response is a successful Messages API answer.
type Response struct {
	Raw        json.RawMessage // the Message exactly as the upstream sent it
	Model      string
	StopReason string
	Usage      claudeq.Usage
	RequestID  string
}

type message struct {
	Model      string        `json:"model"`
	StopReason string        `json:"stop_reason"`
	Usage      claudeq.Usage `json:"usage"`
}

// Messages sends body (a Messages API request) and returns the answer, or an
// error classified by Classify.
func (c *Client) Messages(ctx context.Context, body []byte) (*Response, error) {
	var raw []byte
	var hr *http.Response
	err := c.sdk.Post(ctx, "v1/messages", nil, &raw,
		option.WithRequestBody("application/json", body),
		option.WithResponseInto(&hr))
	if err != nil {
		return nil, Classify(err)
	}
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUpstream, Op: "upstream.Messages", Msg: "upstream sent a malformed message", Err: err}
	}
	r := &Response{Raw: raw, Model: m.Model, StopReason: m.StopReason, Usage: m.Usage}
	if hr != nil {
		r.RequestID = hr.Header.Get("request-id")
	}
	return r, nil
}

// Temporary reports whether err is worth retrying, perhaps on another node.
func Temporary(err error) bool {
	switch claudeq.ErrorKind(err) {
	case claudeq.KindRateLimit, claudeq.KindOverloaded, claudeq.KindUpstream,
		claudeq.KindTimeout, claudeq.KindUnavailable, claudeq.KindNoUpstream, claudeq.KindInternal:
		return true
	}
	return false
}

// Classify turns an SDK or transport error into a *claudeq.Error whose kind
// decides what happens next: 429 (rate_limit_error, with RetryAfter), 529
// (overloaded_error), 5xx, timeouts and connection failures are temporary;
// 400, 401, 403, 404, 413 and a 429 that reports a spend limit are final.
func Classify(err error) error {
	const op = "upstream.call"
	var ae *anthropic.Error
	if errors.As(err, &ae) {
		typ, msg := errorBody(ae)
		e := &claudeq.Error{Op: op, Err: err}
		if ae.Response != nil {
			e.RetryAfter = retryAfter(ae.Response.Header)
		}
		switch {
		case ae.StatusCode == http.StatusTooManyRequests && spendLimit(msg):
			e.Kind, e.RetryAfter = claudeq.KindBilling, 0
		case ae.StatusCode == http.StatusTooManyRequests:
			e.Kind = claudeq.KindRateLimit
		case ae.StatusCode == 529:
			e.Kind = claudeq.KindOverloaded
		case ae.StatusCode == http.StatusRequestTimeout || ae.StatusCode == http.StatusGatewayTimeout:
			e.Kind = claudeq.KindTimeout
		case ae.StatusCode >= 500:
			e.Kind = claudeq.KindUpstream
		case ae.StatusCode == http.StatusUnauthorized:
			e.Kind = claudeq.KindAuthentication
		case ae.StatusCode == http.StatusForbidden:
			e.Kind = claudeq.KindPermission
		case ae.StatusCode == http.StatusNotFound:
			e.Kind = claudeq.KindNotFound
		case ae.StatusCode == http.StatusRequestEntityTooLarge:
			e.Kind = claudeq.KindRequestTooLarge
		case ae.StatusCode == http.StatusPaymentRequired:
			e.Kind = claudeq.KindBilling
		default:
			e.Kind = claudeq.KindInvalidRequest
		}
		if msg == "" {
			msg = http.StatusText(ae.StatusCode)
		}
		if typ == "" {
			typ = e.Kind.String()
		}
		e.Msg = fmt.Sprintf("upstream %d %s: %s", ae.StatusCode, typ, msg)
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &claudeq.Error{Kind: claudeq.KindTimeout, Op: op, Msg: "upstream call timed out", Err: err}
	}
	if errors.Is(err, context.Canceled) {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "upstream call canceled", Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &claudeq.Error{Kind: claudeq.KindTimeout, Op: op, Msg: "upstream call timed out", Err: err}
	}
	return &claudeq.Error{Kind: claudeq.KindUpstream, Op: op, Msg: "upstream connection failed", Err: err}
}

func errorBody(ae *anthropic.Error) (typ, msg string) {
	var body struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(ae.RawJSON()), &body); err == nil {
		typ, msg = body.Error.Type, body.Error.Message
	}
	if msg == "" {
		msg = ae.Message
	}
	if len(msg) > 500 {
		msg = msg[:500]
	}
	return typ, msg
}

func spendLimit(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "spend limit") || strings.Contains(m, "usage limit") ||
		strings.Contains(m, "credit balance")
}

// retryAfter reads retry-after-ms, then retry-after (seconds or an HTTP
// date).
func retryAfter(h http.Header) time.Duration {
	if v := h.Get("retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("retry-after")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 && !math.IsInf(s, 0) {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
