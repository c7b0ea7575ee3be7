package sim_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/sim"
)

const testModel = "claude-sonnet-4-6"

// start runs a simulator on loopback for the duration of the test.
func start(t *testing.T, cfg sim.Config) (*sim.Server, string) {
	t.Helper()
	s, url, closeFn, err := sim.Listen("127.0.0.1:0", cfg)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), url)
	t.Cleanup(closeFn)
	return s, url
}

func newClient(url string, opts ...option.RequestOption) anthropic.Client {
	base := []option.RequestOption{
		option.WithBaseURL(url),
		option.WithAPIKey("k"),
		option.WithoutEnvironmentDefaults(),
		option.WithMaxRetries(0),
	}
	return anthropic.NewClient(append(base, opts...)...)
}

func params(prompt string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     testModel,
		MaxTokens: 1024,
		System:    []anthropic.TextBlockParam{{Text: "You are a test."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	}
}

// post sends a raw JSON request to the simulator.
func post(t *testing.T, url, path, body string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

type errorBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func requireAPIError(t *testing.T, resp *http.Response, body []byte, status int, typ string) errorBody {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, string(body))
	var eb errorBody
	require.NoError(t, json.Unmarshal(body, &eb), string(body))
	require.Equal(t, "error", eb.Type)
	require.Equal(t, typ, eb.Error.Type)
	require.NotEmpty(t, eb.Error.Message)
	require.True(t, strings.HasPrefix(eb.RequestID, "req_"), eb.RequestID)
	require.Equal(t, resp.Header.Get("request-id"), eb.RequestID)
	return eb
}

func TestMessagesNew(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})
	client := newClient(url)

	var raw *http.Response
	prompt := "Hello there, how are you today? Please tell me something about queues and fairness."
	msg, err := client.Messages.New(t.Context(), params(prompt), option.WithResponseInto(&raw))
	require.NoError(t, err)

	require.True(t, strings.HasPrefix(msg.ID, "msg_"), msg.ID)
	require.Len(t, msg.ID, 28)
	require.Equal(t, anthropic.Model(testModel), msg.Model)
	require.Equal(t, "assistant", string(msg.Role))
	require.Equal(t, "message", string(msg.Type))
	require.Len(t, msg.Content, 1)
	require.Equal(t, "text", msg.Content[0].Type)
	text := msg.Content[0].Text
	require.True(t, strings.HasPrefix(text, "Simulated reply to: Hello there, how are you today? Please tell me something about queues."), text)
	require.Equal(t, anthropic.StopReasonEndTurn, msg.StopReason)
	require.Empty(t, msg.StopSequence)

	require.Equal(t, sim.CountTokens("You are a test.")+sim.CountTokens(prompt), msg.Usage.InputTokens)
	require.Equal(t, sim.CountTokens(text), msg.Usage.OutputTokens)
	require.GreaterOrEqual(t, msg.Usage.OutputTokens, int64(20))
	require.LessOrEqual(t, msg.Usage.OutputTokens, int64(200))
	require.Zero(t, msg.Usage.CacheCreationInputTokens)
	require.Zero(t, msg.Usage.CacheReadInputTokens)
	require.Equal(t, anthropic.UsageServiceTierStandard, msg.Usage.ServiceTier)
	require.True(t, msg.Usage.CacheCreation.JSON.Ephemeral5mInputTokens.Valid())

	require.True(t, strings.HasPrefix(raw.Header.Get("request-id"), "req_"))
	for _, h := range []string{"requests", "tokens"} {
		require.NotEmpty(t, raw.Header.Get("anthropic-ratelimit-"+h+"-limit"), h)
		require.NotEmpty(t, raw.Header.Get("anthropic-ratelimit-"+h+"-remaining"), h)
		reset, err := time.Parse(time.RFC3339, raw.Header.Get("anthropic-ratelimit-"+h+"-reset"))
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), reset, 61*time.Second)
	}
}

func TestDeterminism(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})
	client := newClient(url)

	a, err := client.Messages.New(t.Context(), params("What is the capital of France?"))
	require.NoError(t, err)
	b, err := client.Messages.New(t.Context(), params("What is the capital of France?"))
	require.NoError(t, err)
	c, err := client.Messages.New(t.Context(), params("What is the capital of Italy?"))
	require.NoError(t, err)

	require.Equal(t, a.Content[0].Text, b.Content[0].Text)
	require.Equal(t, a.Usage, b.Usage)
	require.NotEqual(t, a.ID, b.ID)
	require.NotEqual(t, a.Content[0].Text, c.Content[0].Text)

	// A second simulator with another configuration answers the same.
	_, url2 := start(t, sim.Config{Seed: 42})
	client2 := newClient(url2)
	d, err := client2.Messages.New(t.Context(), params("What is the capital of France?"))
	require.NoError(t, err)
	require.Equal(t, a.Content[0].Text, d.Content[0].Text)
}

func TestStreaming(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{PerTokenLatency: 100 * time.Microsecond})
	client := newClient(url)
	p := params("Stream me a story about a tiny queue that could.")

	want, err := client.Messages.New(t.Context(), p)
	require.NoError(t, err)

	stream := client.Messages.NewStreaming(t.Context(), p)
	defer stream.Close()
	var (
		msg    anthropic.Message
		events []string
		deltas int
	)
	for stream.Next() {
		ev := stream.Current()
		require.NoError(t, msg.Accumulate(ev))
		if ev.Type == "content_block_delta" {
			deltas++
			require.Equal(t, "text_delta", ev.Delta.Type)
			if len(events) > 0 && events[len(events)-1] == "content_block_delta" {
				continue
			}
		}
		events = append(events, ev.Type)
	}
	require.NoError(t, stream.Err())
	require.Equal(t, []string{
		"message_start", "content_block_start", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop",
	}, events)
	require.Greater(t, deltas, 3)

	require.Len(t, msg.Content, 1)
	require.Equal(t, want.Content[0].Text, msg.Content[0].Text)
	require.Equal(t, want.StopReason, msg.StopReason)
	require.Equal(t, want.Usage.InputTokens, msg.Usage.InputTokens)
	require.Equal(t, want.Usage.OutputTokens, msg.Usage.OutputTokens)
	require.Equal(t, anthropic.Model(testModel), msg.Model)
	require.True(t, strings.HasPrefix(msg.ID, "msg_"))
}

// TestStreamingWire checks the raw event sequence, including ping, which the
// SDK swallows.
func TestStreamingWire(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})
	body := `{"model":"claude-haiku-4-5","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi there"}]}`
	resp, b := post(t, url, "/v1/messages?beta=true", body, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"))
	require.True(t, strings.HasPrefix(resp.Header.Get("request-id"), "req_"))

	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "event: "); ok {
			require.True(t, sc.Scan())
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			require.True(t, ok, sc.Text())
			var ev struct {
				Type string `json:"type"`
			}
			require.NoError(t, json.Unmarshal([]byte(data), &ev), data)
			require.Equal(t, name, ev.Type)
			require.True(t, sc.Scan())
			require.Empty(t, sc.Text(), "blank line after each event")
			if name == "content_block_delta" && names[len(names)-1] == name {
				continue
			}
			names = append(names, name)
		}
	}
	require.Equal(t, []string{
		"message_start", "content_block_start", "ping", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop",
	}, names)
	require.Contains(t, string(b), `"usage":{"input_tokens":2,`)
	require.Contains(t, string(b), `"output_tokens":1,`)
}

func TestCountTokens(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})
	client := newClient(url)
	prompt := "Count my tokens, please."
	schema := anthropic.ToolInputSchemaParam{Properties: map[string]any{"city": map[string]any{"type": "string"}}}

	p := params(prompt)
	p.Tools = []anthropic.ToolUnionParam{anthropic.ToolUnionParamOfTool(schema, "get_weather")}
	msg, err := client.Messages.New(t.Context(), p)
	require.NoError(t, err)

	count, err := client.Messages.CountTokens(t.Context(), anthropic.MessageCountTokensParams{
		Model:    testModel,
		System:   anthropic.MessageCountTokensParamsSystemUnion{OfString: anthropic.String("You are a test.")},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
		Tools:    []anthropic.MessageCountTokensToolUnionParam{anthropic.MessageCountTokensToolParamOfTool(schema, "get_weather")},
	})
	require.NoError(t, err)
	require.Equal(t, msg.Usage.InputTokens, count.InputTokens)
	require.Greater(t, count.InputTokens, sim.CountTokens("You are a test.")+sim.CountTokens(prompt))
}

func TestModels(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})
	client := newClient(url)

	page, err := client.Models.List(t.Context(), anthropic.ModelListParams{})
	require.NoError(t, err)
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		require.NotEmpty(t, m.DisplayName)
		require.False(t, m.CreatedAt.IsZero())
	}
	require.Equal(t, sim.DefaultModels(), ids)
	require.False(t, page.HasMore)
	require.Equal(t, ids[0], page.FirstID)
	require.Equal(t, ids[len(ids)-1], page.LastID)

	page, err = client.Models.List(t.Context(), anthropic.ModelListParams{Limit: anthropic.Int(2), AfterID: anthropic.String(ids[1])})
	require.NoError(t, err)
	require.True(t, page.HasMore)
	require.Len(t, page.Data, 2)
	require.Equal(t, ids[2], page.FirstID)

	m, err := client.Models.Get(t.Context(), "claude-sonnet-4-6", anthropic.ModelGetParams{})
	require.NoError(t, err)
	require.Equal(t, "Claude Sonnet 4.6", m.DisplayName)
	require.Equal(t, "2026-02-17", m.CreatedAt.Format(time.DateOnly))
	require.Equal(t, int64(1_000_000), m.MaxInputTokens)
	require.Equal(t, int64(128_000), m.MaxTokens)

	_, err = client.Models.Get(t.Context(), "claude-nope", anthropic.ModelGetParams{})
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
}

// TestModelLineup: the list can change at runtime; dated snapshots of a
// listed id are served; a model's max_tokens limit is enforced.
func TestModelLineup(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{Catalog: []claudeq.Model{
		{ID: "claude-haiku-4-5-20251001"}, {ID: "claude-opus-4-8"}, {ID: "claude-fable-5-3", MaxOutputTokens: 1000},
	}})
	client := newClient(url)
	call := func(model string, maxTokens int64) error {
		_, err := client.Messages.New(t.Context(), anthropic.MessageNewParams{Model: anthropic.Model(model), MaxTokens: maxTokens,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
		return err
	}
	status := func(err error) int {
		var apiErr *anthropic.Error
		require.ErrorAs(t, err, &apiErr)
		return apiErr.StatusCode
	}
	page, err := client.Models.List(t.Context(), anthropic.ModelListParams{})
	require.NoError(t, err)
	require.Len(t, page.Data, 3)
	require.Equal(t, "Claude Haiku 4.5", page.Data[0].DisplayName, "the price table's name for a dated id")
	require.Equal(t, int64(64_000), page.Data[0].MaxTokens)
	require.Equal(t, "Claude Fable 5.3", page.Data[2].DisplayName)
	require.Zero(t, page.Data[2].MaxInputTokens, "not reported when unknown")

	require.NoError(t, call("claude-haiku-4-5", 10), "the undated id of a listed snapshot")
	require.NoError(t, call("claude-opus-4-8-20260528", 10), "a dated snapshot of a listed id")
	require.NoError(t, call("claude-fable-5-3", 1000))
	require.Equal(t, http.StatusBadRequest, status(call("claude-fable-5-3", 1001)))
	require.Equal(t, http.StatusNotFound, status(call("claude-opus-4-7", 10)))

	s.SetModels([]claudeq.Model{{ID: "claude-opus-4-7"}})
	require.Equal(t, http.StatusNotFound, status(call("claude-opus-4-8", 10)), "dropped from the list")
	require.NoError(t, call("claude-opus-4-7", 10))
}

func TestFaultHeader(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{Timeout: 20 * time.Millisecond, RetryAfter: 3 * time.Second})
	client := newClient(url)

	tests := []struct {
		name        string
		fault       string
		retryAfter  string // x-sim-retry-after request header
		wantStatus  int
		wantType    string
		wantRetry   string // retry-after response header
		wantMessage string
	}{
		{name: "429", fault: "429", wantStatus: 429, wantType: "rate_limit_error", wantRetry: "3"},
		{name: "429 override", fault: "429", retryAfter: "1.2", wantStatus: 429, wantType: "rate_limit_error", wantRetry: "2"},
		{name: "529", fault: "529", wantStatus: 529, wantType: "overloaded_error"},
		{name: "500", fault: "500", wantStatus: 500, wantType: "api_error"},
		{name: "timeout", fault: "timeout", wantStatus: 504, wantType: "timeout_error"},
		{name: "spend limit", fault: "spend_limit", wantStatus: 429, wantType: "rate_limit_error", wantMessage: "usage limits"},
		{name: "400", fault: "400", wantStatus: 400, wantType: "invalid_request_error"},
		{name: "401", fault: "401", wantStatus: 401, wantType: "authentication_error"},
		{name: "unknown kind", fault: "418", wantStatus: 400, wantType: "invalid_request_error", wantMessage: "x-sim-fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := []option.RequestOption{option.WithHeader(sim.HeaderFault, tt.fault)}
			if tt.retryAfter != "" {
				opts = append(opts, option.WithHeader(sim.HeaderRetryAfter, tt.retryAfter))
			}
			_, err := client.Messages.New(t.Context(), params("fault please"), opts...)
			var apiErr *anthropic.Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tt.wantStatus, apiErr.StatusCode)
			require.Equal(t, tt.wantType, string(apiErr.Type()))
			require.True(t, strings.HasPrefix(apiErr.RequestID, "req_"), apiErr.RequestID)
			require.Equal(t, tt.wantRetry, apiErr.Response.Header.Get("retry-after"))
			require.Contains(t, apiErr.Message, tt.wantMessage)
			require.NotEmpty(t, apiErr.Response.Header.Get("anthropic-ratelimit-requests-limit"))
		})
	}

	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		_, err := client.Messages.New(t.Context(), params("reset please"), option.WithHeader(sim.HeaderFault, "reset"))
		require.Error(t, err)
		var apiErr *anthropic.Error
		require.False(t, errors.As(err, &apiErr), "want a transport error, got %v", err)
	})

	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		began := time.Now()
		msg, err := client.Messages.New(t.Context(), params("slow please"), option.WithHeader(sim.HeaderFault, "slow"))
		require.NoError(t, err)
		require.NotEmpty(t, msg.Content[0].Text)
		require.GreaterOrEqual(t, time.Since(began), 2*time.Second)
	})

	t.Run("ok", func(t *testing.T) {
		t.Parallel()
		_, err := client.Messages.New(t.Context(), params("fine"), option.WithHeader(sim.HeaderFault, "ok"))
		require.NoError(t, err)
	})

	t.Cleanup(func() {
		st := s.Stats()
		require.Equal(t, int64(2), st.Faults["429"])
		require.Equal(t, int64(1), st.Faults["reset"])
		require.Equal(t, int64(1), st.Faults["slow"])
	})
}

func TestTimeoutEndsWithContext(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{Timeout: time.Hour})
	client := newClient(url)

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := client.Messages.New(ctx, params("hang"), option.WithHeader(sim.HeaderFault, "timeout"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 5*time.Second)
	require.Eventually(t, func() bool { return s.Stats().InFlight == 0 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, int64(1), s.Stats().Faults["timeout"])
}

func TestScript(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{})
	client := newClient(url)
	s.Script("429", "ok", "529", "", "500")

	wantStatus := []int{429, 200, 529, 200, 500, 200}
	for i, want := range wantStatus {
		_, err := client.Messages.New(t.Context(), params("scripted"))
		if want == http.StatusOK {
			require.NoError(t, err, "request %d", i)
			continue
		}
		var apiErr *anthropic.Error
		require.ErrorAs(t, err, &apiErr, "request %d", i)
		require.Equal(t, want, apiErr.StatusCode, "request %d", i)
	}
	st := s.Stats()
	require.Equal(t, int64(6), st.Requests)
	require.Equal(t, int64(3), st.Succeeded)
	require.Equal(t, map[string]int64{"429": 1, "529": 1, "500": 1}, st.Faults)
	require.Zero(t, st.InFlight)

	require.Panics(t, func() { s.Script("bogus") })
}

// TestScriptReset checks that a reset on a reused keep-alive connection is
// not retried behind the client's back (which would consume a second entry).
func TestScriptReset(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{})
	client := newClient(url)

	_, err := client.Messages.New(t.Context(), params("warm up the connection"))
	require.NoError(t, err)

	s.Script(sim.FaultReset, sim.Fault529)
	_, err = client.Messages.New(t.Context(), params("reset"))
	require.Error(t, err)
	var apiErr *anthropic.Error
	require.False(t, errors.As(err, &apiErr), "want a transport error, got %v", err)

	_, err = client.Messages.New(t.Context(), params("overloaded"))
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 529, apiErr.StatusCode)

	_, err = client.Messages.New(t.Context(), params("fine again"))
	require.NoError(t, err)
	st := s.Stats()
	require.Equal(t, int64(4), st.Requests)
	require.Equal(t, map[string]int64{"reset": 1, "529": 1}, st.Faults)
}

func TestFaultRate(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{FaultRate: 1, Faults: []string{"529"}, Seed: 7})
	client := newClient(url)

	for i := range 10 {
		_, err := client.Messages.New(t.Context(), params("rate"))
		var apiErr *anthropic.Error
		require.ErrorAs(t, err, &apiErr, "request %d", i)
		require.Equal(t, 529, apiErr.StatusCode)
		require.Equal(t, "overloaded_error", string(apiErr.Type()))
	}
	require.Equal(t, int64(10), s.Stats().Faults["529"])

	s.SetFaultRate(0)
	_, err := client.Messages.New(t.Context(), params("rate"))
	require.NoError(t, err)

	// A partial rate with a fixed seed injects some faults, not all.
	s.SetFaultRate(0.5)
	var failed int
	for range 40 {
		if _, err := client.Messages.New(t.Context(), params("rate")); err != nil {
			failed++
		}
	}
	require.Greater(t, failed, 5)
	require.Less(t, failed, 35)

	require.Panics(t, func() { sim.New(sim.Config{Faults: []string{"nope"}}) })
}

func TestValidation(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})

	tests := []struct {
		name       string
		path       string
		body       string
		wantStatus int
		wantType   string
		wantMsg    string
	}{
		{name: "bad json", body: `{"model":`, wantStatus: 400, wantType: "invalid_request_error"},
		{name: "empty body", body: ``, wantStatus: 400, wantType: "invalid_request_error"},
		{name: "not an object", body: `[1,2]`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "JSON object"},
		{name: "missing model", body: `{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "model: Field required"},
		{name: "model not a string", body: `{"model":5,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "model"},
		{name: "missing max_tokens", body: `{"model":"claude-opus-4-5","messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "max_tokens: Field required"},
		{name: "max_tokens zero", body: `{"model":"claude-opus-4-5","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "max_tokens"},
		{name: "max_tokens float", body: `{"model":"claude-opus-4-5","max_tokens":1.5,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "max_tokens"},
		{name: "missing messages", body: `{"model":"claude-opus-4-5","max_tokens":10}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "messages: Field required"},
		{name: "empty messages", body: `{"model":"claude-opus-4-5","max_tokens":10,"messages":[]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "messages"},
		{name: "bad role", body: `{"model":"claude-opus-4-5","max_tokens":10,"messages":[{"role":"system","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "messages.0.role"},
		{name: "empty content", body: `{"model":"claude-opus-4-5","max_tokens":10,"messages":[{"role":"user","content":""}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "non-empty"},
		{name: "bad block", body: `{"model":"claude-opus-4-5","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text"}]}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "messages.0.content.0.text"},
		{name: "bad system", body: `{"model":"claude-opus-4-5","max_tokens":10,"system":5,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "system"},
		{name: "bad stream", body: `{"model":"claude-opus-4-5","max_tokens":10,"stream":"yes","messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "stream"},
		{name: "temperature range", body: `{"model":"claude-opus-4-5","max_tokens":10,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "temperature"},
		{name: "tool without name", body: `{"model":"claude-opus-4-5","max_tokens":10,"tools":[{"input_schema":{}}],"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "tools.0.name"},
		{name: "thinking budget", body: `{"model":"claude-opus-4-5","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":4000},"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "budget_tokens"},
		{name: "unknown model", body: `{"model":"claude-nope","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, wantStatus: 404, wantType: "not_found_error", wantMsg: "claude-nope"},
		{name: "count tokens missing messages", path: "/v1/messages/count_tokens", body: `{"model":"claude-opus-4-5"}`, wantStatus: 400, wantType: "invalid_request_error", wantMsg: "messages"},
		{name: "ok with all optional fields", body: `{"model":"claude-opus-4-5","max_tokens":2000,"system":[{"type":"text","text":"sys"}],"temperature":0.5,"top_p":0.9,"top_k":5,"stop_sequences":["zzz"],"metadata":{"user_id":"u1"},"tool_choice":{"type":"auto"},"thinking":{"type":"enabled","budget_tokens":1024},"tools":[{"name":"t","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]},{"role":"assistant","content":"ok"},{"role":"user","content":"more"}]}`, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := tt.path
			if path == "" {
				path = "/v1/messages"
			}
			resp, body := post(t, url, path, tt.body, nil)
			if tt.wantStatus == http.StatusOK {
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
				return
			}
			eb := requireAPIError(t, resp, body, tt.wantStatus, tt.wantType)
			require.Contains(t, eb.Error.Message, tt.wantMsg)
		})
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})

	resp, body := post(t, url, "/v1/nope", `{}`, nil)
	requireAPIError(t, resp, body, http.StatusNotFound, "not_found_error")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/v1/messages", nil)
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	requireAPIError(t, resp, body, http.StatusMethodNotAllowed, "invalid_request_error")
	require.Equal(t, http.MethodPost, resp.Header.Get("Allow"))
}

func TestMaxTokensAndStopSequence(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{})
	client := newClient(url)
	prompt := "Tell me about backpressure in distributed systems."

	full, err := client.Messages.New(t.Context(), params(prompt))
	require.NoError(t, err)
	fullText := full.Content[0].Text
	words := strings.Fields(fullText)
	require.Greater(t, len(words), 12)

	// Pick a word from the filler part and the first position it appears at.
	stop := " " + words[len(words)/2+3]
	idx := strings.Index(fullText, stop)
	require.Positive(t, idx)

	tests := []struct {
		name         string
		maxTokens    int64
		stops        []string
		wantReason   anthropic.StopReason
		wantText     string
		wantSequence string
	}{
		{name: "capped", maxTokens: 5, wantReason: anthropic.StopReasonMaxTokens, wantText: fullText[:20]},
		{name: "exact fit", maxTokens: full.Usage.OutputTokens, wantReason: anthropic.StopReasonEndTurn, wantText: fullText},
		{name: "stop sequence", maxTokens: 1024, stops: []string{"never-appears", stop}, wantReason: anthropic.StopReasonStopSequence, wantText: fullText[:idx], wantSequence: stop},
		{name: "stop sequence after cap", maxTokens: 3, stops: []string{stop}, wantReason: anthropic.StopReasonMaxTokens, wantText: fullText[:12]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := params(prompt)
			p.MaxTokens = tt.maxTokens
			p.StopSequences = tt.stops
			msg, err := client.Messages.New(t.Context(), p)
			require.NoError(t, err)
			require.Equal(t, tt.wantReason, msg.StopReason)
			require.Equal(t, tt.wantText, msg.Content[0].Text)
			require.Equal(t, tt.wantSequence, msg.StopSequence)
			require.LessOrEqual(t, msg.Usage.OutputTokens, tt.maxTokens)

			// Streaming agrees.
			stream := client.Messages.NewStreaming(t.Context(), p)
			defer stream.Close()
			var acc anthropic.Message
			for stream.Next() {
				require.NoError(t, acc.Accumulate(stream.Current()))
			}
			require.NoError(t, stream.Err())
			require.Equal(t, tt.wantText, acc.Content[0].Text)
			require.Equal(t, tt.wantReason, acc.StopReason)
			require.Equal(t, tt.wantSequence, acc.StopSequence)
		})
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{APIKey: "secret"})
	body := `{"model":"claude-opus-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

	tests := []struct {
		name       string
		path       string
		headers    map[string]string
		wantStatus int
	}{
		{name: "no key", wantStatus: 401},
		{name: "wrong key", headers: map[string]string{"x-api-key": "nope"}, wantStatus: 401},
		{name: "x-api-key", headers: map[string]string{"x-api-key": "secret"}, wantStatus: 200},
		{name: "bearer", headers: map[string]string{"Authorization": "Bearer secret"}, wantStatus: 200},
		{name: "count tokens no key", path: "/v1/messages/count_tokens", wantStatus: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := tt.path
			if path == "" {
				path = "/v1/messages"
			}
			resp, b := post(t, url, path, body, tt.headers)
			if tt.wantStatus == http.StatusOK {
				require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
				return
			}
			requireAPIError(t, resp, b, tt.wantStatus, "authentication_error")
		})
	}

	wrong := newClient(url)
	_, err := wrong.Messages.New(t.Context(), params("hi"))
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	right := newClient(url, option.WithAPIKey("secret"))
	_, err = right.Messages.New(t.Context(), params("hi"))
	require.NoError(t, err)
}

func TestLatencyAndConcurrency(t *testing.T) {
	t.Parallel()
	s, url := start(t, sim.Config{Latency: 50 * time.Millisecond})
	client := newClient(url)

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	began := time.Now()
	for range n {
		wg.Go(func() {
			_, err := client.Messages.New(t.Context(), params("concurrent"))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.GreaterOrEqual(t, time.Since(began), 50*time.Millisecond)
	st := s.Stats()
	require.Equal(t, int64(n), st.Succeeded)
	require.Greater(t, st.MaxInFlight, int64(1))
	require.Zero(t, st.InFlight)

	// Per-request override and runtime change.
	began = time.Now()
	_, err := client.Messages.New(t.Context(), params("x"), option.WithHeader(sim.HeaderLatency, "0s"))
	require.NoError(t, err)
	require.Less(t, time.Since(began), 45*time.Millisecond)

	s.SetLatency(0, time.Millisecond)
	began = time.Now()
	msg, err := client.Messages.New(t.Context(), params("per token"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(began), time.Duration(msg.Usage.OutputTokens)*time.Millisecond)
}

func TestServeHTTPDirect(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{})
	body := `{"model":"claude-opus-4-5","max_tokens":64,"messages":[{"role":"user","content":"direct \"quoted\" <tag> & é"}]}`
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body)))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var msg struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
		StopSequence *string `json:"stop_sequence"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &msg))
	require.True(t, strings.HasPrefix(msg.Content[0].Text, "Simulated reply to: direct \"quoted\" <tag> & é."), msg.Content[0].Text)
	require.Nil(t, msg.StopSequence)
	require.Contains(t, rec.Body.String(), "<tag> &")
}

var benchBody = []byte(`{"model":"claude-sonnet-4-6","max_tokens":1024,"system":"You are a helpful assistant.",` +
	`"messages":[{"role":"user","content":"Summarise the benefits of fair queuing for multi-tenant LLM gateways in three sentences."}]}`)

// BenchmarkMessages measures a non-streaming /v1/messages request served
// directly through ServeHTTP.
func BenchmarkMessages(b *testing.B) {
	s := sim.New(sim.Config{})
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/messages", bytes.NewReader(benchBody))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkMessagesParallel is BenchmarkMessages from GOMAXPROCS goroutines.
func BenchmarkMessagesParallel(b *testing.B) {
	s := sim.New(sim.Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/messages", bytes.NewReader(benchBody))
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) records(t *testing.T) []sim.RequestRecord {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []sim.RequestRecord
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var r sim.RequestRecord
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), sc.Text())
		out = append(out, r)
	}
	return out
}

func TestRequestLog(t *testing.T) {
	t.Parallel()
	var log lockedBuffer
	s, url := start(t, sim.Config{RequestLog: &log, RetryAfter: 2 * time.Second})
	client := newClient(url)
	s.Script("429", "ok", "reset", "400")
	for range 4 {
		_, _ = client.Messages.New(t.Context(), params("logged"))
	}
	stream := client.Messages.NewStreaming(t.Context(), params("streamed"))
	for stream.Next() {
	}
	require.NoError(t, stream.Err())

	recs := log.records(t)
	require.Len(t, recs, 5)
	// Lines are written when requests end; a reset's may come after the
	// next request's.
	slices.SortFunc(recs, func(a, b sim.RequestRecord) int { return a.Start.Compare(b.Start) })
	want := []struct {
		status int
		fault  string
		ra     int
	}{{429, "429", 2}, {200, "", 0}, {0, "reset", 0}, {400, "400", 0}, {200, "", 0}}
	for i, w := range want {
		r := recs[i]
		require.Equal(t, w.status, r.Status, "record %d: %+v", i, r)
		require.Equal(t, w.fault, r.Fault, "record %d", i)
		require.Equal(t, w.ra, r.RetryAfter, "record %d", i)
		require.False(t, r.End.Before(r.Start), "record %d", i)
		require.NotEmpty(t, r.Body, "record %d", i)
	}
	require.Equal(t, recs[0].Body, recs[3].Body, "the same body hashes the same")
	require.NotEqual(t, recs[0].Body, recs[4].Body, "another body hashes differently")
}

func TestLatencyJitter(t *testing.T) {
	t.Parallel()
	_, url := start(t, sim.Config{Latency: 20 * time.Millisecond, LatencyJitter: 60 * time.Millisecond})
	client := newClient(url)
	var lo, hi time.Duration = time.Hour, 0
	for range 12 {
		began := time.Now()
		_, err := client.Messages.New(t.Context(), params("jitter"))
		require.NoError(t, err)
		d := time.Since(began)
		lo, hi = min(lo, d), max(hi, d)
	}
	require.GreaterOrEqual(t, lo, 20*time.Millisecond, "never below Latency")
	require.Greater(t, hi-lo, time.Duration(0), "latencies vary")
}
