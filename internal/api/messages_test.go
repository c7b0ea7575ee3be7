package api

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

func TestCredentialBearerAndXAPIKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		auth, xkey []string
		want       string
		errHas     string
	}{
		{name: "bearer", auth: []string{"Bearer k1"}, want: "k1"},
		{name: "x-api-key", xkey: []string{" k1 "}, want: "k1"},
		{name: "both, same key", auth: []string{"Bearer k1"}, xkey: []string{"k1"}, want: "k1"},
		{name: "both, different keys", auth: []string{"Bearer k1"}, xkey: []string{"k2"}, errHas: "different API keys"},
		{name: "bearer and an empty x-api-key", auth: []string{"Bearer k1"}, xkey: []string{" "}, want: "k1"},
		{name: "a bad Authorization is not saved by x-api-key", auth: []string{"Basic abc"}, xkey: []string{"k1"}, errHas: "Bearer <api key>"},
		{name: "two x-api-key", xkey: []string{"k1", "k1"}, errHas: "exactly one"},
		{name: "none", errHas: "missing API key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _ := http.NewRequest("GET", "/", nil)
			if tt.auth != nil {
				r.Header["Authorization"] = tt.auth
			}
			if tt.xkey != nil {
				r.Header["X-Api-Key"] = tt.xkey
			}
			k, err := credential(r)
			if tt.errHas != "" {
				require.Equal(t, claudeq.KindAuthentication, claudeq.ErrorKind(err))
				require.Contains(t, claudeq.ErrorMessage(err), tt.errHas)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, k)
		})
	}
}

func TestSSEReaderSplitsEventsAsSent(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 40_000) // longer than the reader's buffer
	in := "\nevent: message_start\ndata: {\"a\":1}\n\n" +
		"event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n" +
		"event: content_block_delta\ndata: {\"delta\":{\"text\":\"" + long + "\"}}\n\n" +
		"event: x\ndata: line1\ndata: line2\n\n" +
		"event: cut"
	rd := sseReader{r: bufio.NewReaderSize(strings.NewReader(in), 16)}
	var names, datas []string
	var raw strings.Builder
	for {
		ev, err := rd.next()
		if err != nil {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF, "a stream cut inside an event")
			break
		}
		raw.Write(ev)
		n, d := parseEvent(ev)
		names, datas = append(names, n), append(datas, string(d))
	}
	require.Equal(t, []string{"message_start", "ping", "content_block_delta", "x"}, names)
	require.Equal(t, `{"a":1}`, datas[0])
	require.Equal(t, `{"type":"ping"}`, datas[1])
	require.Len(t, datas[2], len(long)+len(`{"delta":{"text":""}}`))
	require.Equal(t, "line1\nline2", datas[3])
	require.Equal(t, strings.TrimPrefix(strings.TrimSuffix(in, "event: cut"), "\n"), raw.String(), "events are passed on byte for byte")

	rd = sseReader{r: bufio.NewReader(strings.NewReader("event: a\ndata: {}\n\n"))}
	_, err := rd.next()
	require.NoError(t, err)
	_, err = rd.next()
	require.ErrorIs(t, err, io.EOF, "a clean end")
}

func TestStreamUsage(t *testing.T) {
	t.Parallel()
	var a streamUsage
	a.observe("message_start", []byte(`{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":100,"cache_read_input_tokens":7,"output_tokens":1}}}`))
	a.observe("content_block_delta", []byte(`{"delta":{"type":"text_delta","text":"12345"}}`))
	a.observe("content_block_delta", []byte(`{"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`))
	u := a.final()
	require.Equal(t, "claude-x", a.model)
	require.Equal(t, claudeq.Usage{InputTokens: 100, CacheReadInputTokens: 7, OutputTokens: 3}, u, "cut short: 10 bytes of deltas are 3 tokens")

	a.observe("message_delta", []byte(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}`))
	require.Equal(t, claudeq.Usage{InputTokens: 100, CacheReadInputTokens: 7, OutputTokens: 42}, a.final(), "the reported usage wins")

	a.observe("error", []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
	require.Equal(t, claudeq.KindOverloaded, claudeq.ErrorKind(a.streamErr()))
}

func TestAnthropicKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		code   int
		typ    string
		reason string
	}{
		{claudeq.Errorf(claudeq.KindInvalidRequest, "x"), 400, "invalid_request_error", ""},
		{claudeq.Errorf(claudeq.KindAuthentication, "x"), 401, "authentication_error", ""},
		{&claudeq.Error{Kind: claudeq.KindAuthentication, Op: "upstream.call"}, 500, "api_error", "upstream_authentication_error"},
		{claudeq.Errorf(claudeq.KindPermission, "x"), 403, "permission_error", ""},
		{claudeq.Errorf(claudeq.KindNotFound, "x"), 404, "not_found_error", ""},
		{claudeq.Errorf(claudeq.KindRequestTooLarge, "x"), 413, "request_too_large", ""},
		{claudeq.Errorf(claudeq.KindRateLimit, "x"), 429, "rate_limit_error", ""},
		{claudeq.Errorf(claudeq.KindQuotaExceeded, "x"), 429, "rate_limit_error", "quota_exceeded"},
		{claudeq.Errorf(claudeq.KindContentPolicy, "x"), 400, "invalid_request_error", "content_policy_violation"},
		{claudeq.Errorf(claudeq.KindOverloaded, "x"), 529, "overloaded_error", ""},
		{claudeq.Errorf(claudeq.KindNoUpstream, "x"), 529, "overloaded_error", "no_healthy_upstream"},
		{claudeq.Errorf(claudeq.KindUnavailable, "x"), 500, "api_error", "service_unavailable"},
		{claudeq.Errorf(claudeq.KindTimeout, "x"), 504, "timeout_error", ""},
		{errors.New("boom"), 500, "api_error", ""},
	}
	for _, tt := range tests {
		code, typ, reason := anthropicKind(tt.err)
		require.Equal(t, tt.code, code, "%v", tt.err)
		require.Equal(t, tt.typ, typ, "%v", tt.err)
		require.Equal(t, tt.reason, reason, "%v", tt.err)
	}
}

func TestTierAllows(t *testing.T) {
	t.Parallel()
	require.True(t, tierAllows("standard", "opus"))
	require.True(t, tierAllows("", "opus"))
	require.True(t, tierAllows("Sonnet", "haiku"))
	require.True(t, tierAllows("sonnet", "sonnet"))
	require.False(t, tierAllows("sonnet", "opus"))
	require.False(t, tierAllows("haiku", "sonnet"))
}

// A stream whose client hung up is no failure of the node that was
// answering; one the node broke off is.
func TestNodeError(t *testing.T) {
	gone := &claudeq.Error{Kind: claudeq.KindUnavailable, Op: opClientGone, Msg: "the client went away", Err: io.ErrClosedPipe}
	require.NoError(t, nodeError(gone))
	require.NoError(t, nodeError(nil))
	broke := &claudeq.Error{Kind: claudeq.KindUpstream, Op: "api.stream", Msg: "the upstream stream ended early", Err: io.ErrUnexpectedEOF}
	require.Equal(t, error(broke), nodeError(broke))
}
