package app_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
)

// The Anthropic-compatible API (POST /v1/messages, count_tokens,
// /v1/models) driven by the official Go SDK, as an application pointed at
// claudeq (ANTHROPIC_BASE_URL, a claudeq key as the API key) would.

// sdk returns an Anthropic SDK client for base with opts (no retries, no
// environment defaults).
func sdk(base string, opts ...option.RequestOption) *anthropic.Client {
	c := anthropic.NewClient(append([]option.RequestOption{option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(base), option.WithMaxRetries(0)}, opts...)...)
	return &c
}

// messagesAPI starts the api role alone (the Messages API needs no worker)
// and returns its base URL.
func (e *testEnv) messagesAPI(over ...string) string {
	a, _ := e.run(app.Roles{API: true}, over...)
	return "http://" + a.Addr()
}

// ledgerOf returns the ledger entries of user, waiting until there are n.
func (e *testEnv) ledgerOf(t *testing.T, user string, n int) []store.LedgerEntry {
	t.Helper()
	var out []store.LedgerEntry
	require.Eventually(t, func() bool {
		cur, err := e.db.Collection("ledger").Find(context.Background(), bson.D{{Key: "user_id", Value: user}})
		if err != nil {
			return false
		}
		out = nil
		return cur.All(context.Background(), &out) == nil && len(out) >= n
	}, 15*time.Second, 50*time.Millisecond, "want %d ledger entries of %s, have %d", n, user, len(out))
	return out
}

// requireSpent waits until user's daily budget shows spent (micro-USD)
// with nothing reserved.
func (e *testEnv) requireSpent(t *testing.T, user, dept string, spent int64) {
	t.Helper()
	q, err := quota.New(e.redis.Client(t), quota.Options{})
	require.NoError(t, err)
	var last []quota.ScopeStatus
	require.Eventually(t, func() bool {
		st, err := q.Status(context.Background(), user, dept)
		if err != nil {
			return false
		}
		last = st
		for _, s := range st {
			if s.Scope == quota.ScopeUser {
				return int64(s.Spent) == spent && s.Reserved == 0
			}
		}
		return false
	}, 15*time.Second, 50*time.Millisecond, "user %s: want spent %d µ$ and nothing reserved; have %+v", user, spent, last)
}

func cost(t *testing.T, model string, u claudeq.Usage) int64 {
	t.Helper()
	c, _, err := pricing.Default().Cost(model, u, false, time.Now())
	require.NoError(t, err)
	return int64(c)
}

func usageOf(u anthropic.Usage) claudeq.Usage {
	return claudeq.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CacheCreationInputTokens: u.CacheCreationInputTokens, CacheReadInputTokens: u.CacheReadInputTokens}
}

func chatParams(prompt string, maxTokens int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     "claude-sonnet-5-5",
		MaxTokens: maxTokens,
		System:    []anthropic.TextBlockParam{{Text: "You answer briefly."}},
		Messages: []anthropic.MessageParam{
			anthropic.NewUserMessage(anthropic.NewTextBlock("What is a queue?")),
			anthropic.NewAssistantMessage(anthropic.NewTextBlock("A line of things waiting their turn.")),
			anthropic.NewUserMessage(anthropic.NewTextBlock(prompt)),
		},
		StopSequences: []string{"never-appears-xyz"},
		Metadata:      anthropic.MetadataParam{UserID: anthropic.String("user-123")},
	}
}

func TestMessagesNewThroughTheSDK(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI()
	key, keyID := e.key("alice", "research")
	ctx := context.Background()

	p := chatParams("Explain back-pressure in one paragraph.", 300)
	p.Tools = []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "get_queue_depth",
		Description: anthropic.String("Returns the depth of a queue."),
		InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"queue": map[string]any{"type": "string"}}}}}}
	p.ToolChoice = anthropic.ToolChoiceUnionParam{OfAuto: &anthropic.ToolChoiceAutoParam{}}
	sampling := []option.RequestOption{option.WithJSONSet("temperature", 0.5), option.WithJSONSet("top_k", 40)}
	direct, err := sdk(e.simURL).Messages.New(ctx, p, sampling...)
	require.NoError(t, err)

	var hr *http.Response
	msg, err := sdk(base, option.WithAPIKey(key)).Messages.New(ctx, p, append(sampling, option.WithResponseInto(&hr))...)
	require.NoError(t, err)
	require.Equal(t, direct.Content[0].Text, msg.Content[0].Text, "the simulator's answer, unchanged")
	require.True(t, strings.HasPrefix(msg.Content[0].Text, "Simulated reply to: Explain back-pressure"))
	require.Equal(t, direct.Usage.InputTokens, msg.Usage.InputTokens)
	require.Equal(t, direct.Usage.OutputTokens, msg.Usage.OutputTokens)
	require.Equal(t, anthropic.Model("claude-sonnet-5-5"), msg.Model)
	require.Equal(t, anthropic.StopReasonEndTurn, msg.StopReason)
	require.True(t, strings.HasPrefix(msg.ID, "msg_"))
	rid := hr.Header.Get("request-id")
	require.True(t, strings.HasPrefix(rid, "req_"), "claudeq's request id: %q", rid)
	require.Equal(t, "default", hr.Header.Get("x-claudeq-node"))
	require.NotEmpty(t, hr.Header.Get("x-claudeq-upstream-request-id"))

	// Billed once, under the request id, at the price of the usage the
	// client saw; the budget's spent matches and nothing stays reserved.
	u := usageOf(msg.Usage)
	entries := e.ledgerOf(t, "alice", 1)
	require.Len(t, entries, 1)
	require.Equal(t, rid, entries[0].ID)
	require.True(t, entries[0].Interactive)
	require.Equal(t, keyID, entries[0].KeyID)
	require.Equal(t, "research", entries[0].Department)
	require.Equal(t, u.InputTokens, entries[0].Usage.InputTokens)
	require.Equal(t, u.OutputTokens, entries[0].Usage.OutputTokens)
	require.Equal(t, cost(t, "claude-sonnet-5-5", u), entries[0].CostMicros)
	e.requireSpent(t, "alice", "research", entries[0].CostMicros)

	// The audit record names the caller, the model and what it cost.
	recs := e.auditRecords(t, bson.D{{Key: "eid", Value: rid}}, 1)
	require.Equal(t, "alice", recs[0].UserID)
	require.Equal(t, "claude-sonnet-5-5", recs[0].Model)
	require.Equal(t, "allowed", recs[0].Decision)
	require.Equal(t, u.Total(), recs[0].Tokens)
	require.Equal(t, entries[0].CostMicros, recs[0].CostMicros)
	require.NotEmpty(t, recs[0].RequestHash)

	// The same request again is answered from the cache, not billed again.
	var hr2 *http.Response
	again, err := sdk(base, option.WithAPIKey(key)).Messages.New(ctx, p, append(sampling, option.WithResponseInto(&hr2))...)
	require.NoError(t, err)
	require.Equal(t, msg.ID, again.ID)
	require.Equal(t, "hit", hr2.Header.Get("x-claudeq-cache"))
	require.EqualValues(t, 2, e.sim.Stats().Requests, "one direct call, one through claudeq")
	time.Sleep(200 * time.Millisecond)
	require.Len(t, e.ledgerOf(t, "alice", 1), 1, "a cache hit is not billed")

	// Cache-Control: no-cache goes upstream again (and is billed again).
	_, err = sdk(base, option.WithAPIKey(key)).Messages.New(ctx, p, append(sampling, option.WithHeader("Cache-Control", "no-cache"))...)
	require.NoError(t, err)
	require.EqualValues(t, 3, e.sim.Stats().Requests)
	require.Len(t, e.ledgerOf(t, "alice", 2), 2)
}

func TestMessagesAcceptsXAPIKeyAndBearer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI("CLAUDEQ_CACHE_TTL", "0s")
	key, _ := e.key("bob", "ops")
	ctx := context.Background()
	p := chatParams("hello", 50)

	_, err := sdk(base, option.WithHeader("x-api-key", key)).Messages.New(ctx, p)
	require.NoError(t, err, "x-api-key, as older clients send it")
	_, err = sdk(base, option.WithAuthToken(key)).Messages.New(ctx, p)
	require.NoError(t, err, "Authorization: Bearer, as the SDK sends it")
	_, err = sdk(base, option.WithAuthToken(key), option.WithHeader("x-api-key", key)).Messages.New(ctx, p)
	require.NoError(t, err, "both, naming the same key")

	other, _ := e.key("bob", "ops")
	_, err = sdk(base, option.WithAuthToken(key), option.WithHeader("x-api-key", other)).Messages.New(ctx, p)
	var ae *anthropic.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusUnauthorized, ae.StatusCode)
	require.EqualValues(t, "authentication_error", ae.Type())
	require.Contains(t, ae.Message, "different API keys")
	require.Len(t, e.ledgerOf(t, "bob", 3), 3)
}

func TestMessagesStreamPassesEventsThroughAsTheyArrive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI()
	key, _ := e.key("carol", "research")
	ctx := context.Background()
	p := chatParams("Stream me a long story about queues, please.", 400)

	direct, err := sdk(e.simURL).Messages.New(ctx, p)
	require.NoError(t, err)
	// Spread the answer over at least 1.2 s.
	per := 1200 * time.Millisecond / time.Duration(direct.Usage.OutputTokens)
	e.sim.SetLatency(0, per)

	start := time.Now()
	stream := sdk(base, option.WithAPIKey(key)).Messages.NewStreaming(ctx, p)
	var acc anthropic.Message
	var firstAt, lastAt time.Time
	kinds := map[string]int{}
	for stream.Next() {
		ev := stream.Current()
		if firstAt.IsZero() {
			firstAt = time.Now()
		}
		lastAt = time.Now()
		kinds[ev.Type]++
		require.NoError(t, acc.Accumulate(ev))
	}
	require.NoError(t, stream.Err())
	total := lastAt.Sub(start)
	require.GreaterOrEqual(t, total, time.Second, "the simulator spreads the answer over ≥ 1.2 s")
	require.Less(t, firstAt.Sub(start), total/2,
		"the first event arrives while the answer is still being generated, not after it (first %v, last %v)", firstAt.Sub(start), total)
	require.Equal(t, 1, kinds["message_start"])
	require.Equal(t, 1, kinds["message_stop"])
	require.Greater(t, kinds["content_block_delta"], 3)

	require.Equal(t, direct.Content[0].Text, acc.Content[0].Text, "the streamed text is the simulator's")
	require.Equal(t, direct.Usage.OutputTokens, acc.Usage.OutputTokens)
	require.Equal(t, direct.Usage.InputTokens, acc.Usage.InputTokens)

	entries := e.ledgerOf(t, "carol", 1)
	require.Len(t, entries, 1)
	require.Equal(t, direct.Usage.OutputTokens, entries[0].Usage.OutputTokens, "billed the usage reported at the end")
	require.Equal(t, cost(t, "claude-sonnet-5-5", usageOf(direct.Usage)), entries[0].CostMicros)
	e.requireSpent(t, "carol", "research", entries[0].CostMicros)
}

// brokenNode is a fake Claude API node whose streams fail midway: with an
// error event after one delta ("error event" in the prompt), or by closing
// the connection after one delta (otherwise).
func brokenNode(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fl := w.(http.Flusher)
		for _, ev := range []string{
			`event: message_start` + "\n" + `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}`,
			`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			`event: ping` + "\n" + `data: {"type":"ping"}`,
			`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Twenty-two bytes here."}}`,
		} {
			_, _ = io.WriteString(w, ev+"\n\n")
			fl.Flush()
		}
		if strings.Contains(string(b), "error event") {
			_, _ = io.WriteString(w, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
		}
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String()
}

func TestMessagesStreamPassesPingAndMidStreamErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI()
	key, _ := e.key("dan", "research")
	body := `{"model":"claude-haiku-5-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"ping me"}]}`
	r := do(t, "POST", base+"/v1/messages", key, body)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Contains(t, r.Header.Get("Content-Type"), "text/event-stream")
	require.Contains(t, string(r.Body), "event: ping\ndata: {\"type\":\"ping\"}\n\n", "ping events are passed through")
	require.True(t, strings.HasPrefix(string(r.Body), "event: message_start\n"))
	require.True(t, strings.HasSuffix(string(r.Body), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))

	// A node whose stream fails after a 200.
	e2 := newEnv(t)
	base2 := e2.messagesAPI("CLAUDEQ_UPSTREAM_URL", brokenNode(t))
	key2, _ := e2.key("dan", "research")
	errBody := `{"model":"claude-haiku-5-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"an error event, please"}]}`
	r = do(t, "POST", base2+"/v1/messages", key2, errBody)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.True(t, strings.HasSuffix(string(r.Body), "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"),
		"the node's error event is passed through as it is: %s", r.Body)
	require.Contains(t, string(r.Body), "event: ping\n")

	// Through the SDK, the error event is an error of the stream.
	stream := sdk(base2, option.WithAPIKey(key2)).Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
		Model: "claude-haiku-5-5", MaxTokens: 64, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("another error event"))}})
	for stream.Next() {
	}
	require.Error(t, stream.Err())
	require.Contains(t, stream.Err().Error(), "overloaded_error")

	// A node that breaks off: claudeq ends the stream with an error event.
	r = do(t, "POST", base2+"/v1/messages", key2, body)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.True(t, strings.HasSuffix(string(r.Body), "event: error\ndata: {\"error\":{\"message\":\"the upstream stream ended early\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"), "%s", r.Body)

	// Each of the three is billed what it got: 25 input tokens and the
	// 22-byte delta (6 tokens).
	entries := e2.ledgerOf(t, "dan", 3)
	require.Len(t, entries, 3)
	for _, en := range entries {
		require.Equal(t, int64(25), en.Usage.InputTokens)
		require.Equal(t, int64(6), en.Usage.OutputTokens)
	}
}

func TestMessagesClientThatDisconnectsIsBilledForWhatItReceived(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI()
	key, _ := e.key("erin", "research")
	// One delta about every 400 ms: the client hangs up right after its
	// second, long before the next is sent.
	e.sim.SetLatency(0, 100*time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := sdk(base, option.WithAPIKey(key)).Messages.NewStreaming(ctx, chatParams("Tell me everything about queues.", 1000))
	var input int64
	var text strings.Builder
	deltas := 0
	for stream.Next() {
		ev := stream.Current()
		switch ev.Type {
		case "message_start":
			input = ev.Message.Usage.InputTokens
		case "content_block_delta":
			text.WriteString(ev.Delta.Text)
			deltas++
		}
		if deltas == 2 {
			break
		}
	}
	require.NoError(t, stream.Close())
	cancel()
	require.Positive(t, input)

	// Billed input + the output it received (4 bytes a token), once.
	want := claudeq.Usage{InputTokens: input, OutputTokens: int64((text.Len() + 3) / 4)}
	entries := e.ledgerOf(t, "erin", 1)
	require.Len(t, entries, 1)
	require.Equal(t, want.InputTokens, entries[0].Usage.InputTokens)
	require.Equal(t, want.OutputTokens, entries[0].Usage.OutputTokens, "output received: %q", text.String())
	require.Equal(t, cost(t, "claude-sonnet-5-5", want), entries[0].CostMicros)
	e.requireSpent(t, "erin", "research", entries[0].CostMicros)
	require.Eventually(t, func() bool { return e.sim.Stats().Canceled == 1 }, 10*time.Second, 20*time.Millisecond,
		"the upstream call is canceled too, not run to its end")
	time.Sleep(300 * time.Millisecond)
	require.Len(t, e.ledgerOf(t, "erin", 1), 1, "exactly once")

	// The node was answering: a client that hangs up is not its failure.
	admin, _ := e.key("root", "ops", "admin")
	r := do(t, "GET", base+"/admin/nodes", admin, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	nodes := r.json(t)["data"].([]any)
	require.Len(t, nodes, 1)
	node := nodes[0].(map[string]any)
	require.Equal(t, "healthy", node["status"], "%v", node)
	require.EqualValues(t, 0, node["errors"], "%v", node)
	require.EqualValues(t, 0, node["failures"], "%v", node)
}

func TestMessagesQuotaExhaustedKeyGetsAnAnthropicError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A budget far below one request's worst case (max_tokens 1000 of
	// sonnet output is $0.01).
	base := e.messagesAPI("CLAUDEQ_QUOTA_USER_DAILY_USD", "0.001")
	key, _ := e.key("frank", "research")
	ctx := context.Background()
	c := sdk(base, option.WithAPIKey(key), option.WithMaxRetries(2))

	_, err := c.Messages.New(ctx, chatParams("over budget", 1000))
	var ae *anthropic.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusTooManyRequests, ae.StatusCode)
	require.EqualValues(t, "rate_limit_error", ae.Type())
	require.EqualValues(t, "quota_exceeded", ae.ErrorCode())
	require.Contains(t, ae.Message, "daily budget of user frank exhausted")
	require.True(t, strings.HasPrefix(ae.RequestID, "req_"))
	require.Equal(t, "false", ae.Response.Header.Get("x-should-retry"), "the SDK does not retry a spent budget")
	require.NotEmpty(t, ae.Response.Header.Get("Retry-After"))

	stream := c.Messages.NewStreaming(ctx, chatParams("over budget, streaming", 1000))
	require.False(t, stream.Next(), "no stream starts")
	require.ErrorAs(t, stream.Err(), &ae)
	require.Equal(t, http.StatusTooManyRequests, ae.StatusCode)
	require.EqualValues(t, "rate_limit_error", ae.Type())
	require.EqualValues(t, "quota_exceeded", ae.ErrorCode())

	require.Zero(t, e.sim.Stats().Requests, "nothing reached the upstream")
	e.requireSpent(t, "frank", "research", 0)

	// A request that fits is served.
	_, err = c.Messages.New(ctx, chatParams("small", 20))
	require.NoError(t, err)
}

func TestMessagesCountTokensAndModels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI()
	key, _ := e.key("gina", "research")
	c := sdk(base, option.WithAPIKey(key))
	ctx := context.Background()

	p := chatParams("How many tokens is this?", 100)
	n, err := c.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
		Model: p.Model, Messages: p.Messages, System: anthropic.MessageCountTokensParamsSystemUnion{OfTextBlockArray: p.System}})
	require.NoError(t, err)
	msg, err := c.Messages.New(ctx, p)
	require.NoError(t, err)
	require.Equal(t, msg.Usage.InputTokens, n.InputTokens, "count_tokens is forwarded to a node: its count is the node's")

	page, err := c.Models.List(ctx, anthropic.ModelListParams{})
	require.NoError(t, err)
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		require.NotEmpty(t, m.DisplayName)
		require.False(t, m.CreatedAt.IsZero())
	}
	require.Equal(t, sim.DefaultModels(), ids, "what the node lists (the built-in lineup), newest first")
	m0, err := c.Models.Get(ctx, "claude-opus-4-8", anthropic.ModelGetParams{})
	require.NoError(t, err)
	require.Equal(t, int64(1_000_000), m0.MaxInputTokens)
	require.Equal(t, int64(128_000), m0.MaxTokens)
	require.False(t, page.HasMore)
	require.Equal(t, ids[0], page.FirstID)
	require.Equal(t, ids[len(ids)-1], page.LastID)

	var paged []string
	iter := c.Models.ListAutoPaging(ctx, anthropic.ModelListParams{Limit: anthropic.Int(4)})
	for iter.Next() {
		paged = append(paged, iter.Current().ID)
	}
	require.NoError(t, iter.Err())
	require.Equal(t, ids, paged, "pages of 4 follow after_id")

	m, err := c.Models.Get(ctx, "sonnet", anthropic.ModelGetParams{})
	require.NoError(t, err)
	require.Equal(t, "claude-sonnet-5-5", m.ID, "an alias resolves to its model")

	// A key of the haiku tier may use haiku models only.
	hk := e.createKey(t, store.APIKey{UserID: "hal", Department: "research", Tier: "haiku", Scopes: []string{claudeq.ScopeJobs}})
	hc := sdk(base, option.WithAPIKey(hk))
	page, err = hc.Models.List(ctx, anthropic.ModelListParams{})
	require.NoError(t, err)
	ids = nil
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	require.ElementsMatch(t, []string{"claude-haiku-5-5", "claude-haiku-4-5"}, ids)
	_, err = hc.Messages.New(ctx, chatParams("opus please", 50))
	var ae *anthropic.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusForbidden, ae.StatusCode)
	require.EqualValues(t, "permission_error", ae.Type())
}

func TestMessagesBadInputsGetAnthropicErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.messagesAPI("CLAUDEQ_POLICY_DEPARTMENTS", "legal=block", "CLAUDEQ_CACHE_TTL", "0s")
	key, _ := e.key("ivan", "research")
	legal, _ := e.key("lena", "legal")
	other, _ := e.key("otto", "research")
	u := base + "/v1/messages"
	ok := `{"model":"claude-haiku-5-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`

	tests := []struct {
		name    string
		key     string
		body    string
		headers []string
		status  int
		typ     string
		msg     string
		code    string
	}{
		{name: "no key", body: ok, status: 401, typ: "authentication_error", msg: "missing API key"},
		{name: "two different keys", key: key, body: ok, headers: []string{"x-api-key", other}, status: 401, typ: "authentication_error", msg: "different API keys"},
		{name: "not JSON", key: key, body: `{"model":`, status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "not an object", key: key, body: `[1,2]`, status: 400, typ: "invalid_request_error", msg: "JSON object"},
		{name: "no model", key: key, body: `{"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "model: field required"},
		{name: "unknown model", key: key, body: `{"model":"claude-nope-9","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, status: 404, typ: "not_found_error", msg: "model: claude-nope-9 is not served here (no upstream node lists it); GET /v1/models lists"},
		{name: "model given twice", key: key, body: `{"model":"haiku","model":"opus","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "model: appears more than once"},
		{name: "prompt above the context window", key: key, body: `{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 180_000) + `"}]}`, status: 400, typ: "invalid_request_error", msg: "context window of 200000 tokens"},
		{name: "no max_tokens", key: key, body: `{"model":"haiku","messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "max_tokens: field required"},
		{name: "max_tokens 0", key: key, body: `{"model":"haiku","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "greater than 0"},
		{name: "max_tokens above the model's", key: key, body: `{"model":"haiku","max_tokens":1000000,"messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "limit of 128000"},
		{name: "no messages", key: key, body: `{"model":"haiku","max_tokens":16}`, status: 400, typ: "invalid_request_error", msg: "messages: field required"},
		{name: "empty messages", key: key, body: `{"model":"haiku","max_tokens":16,"messages":[]}`, status: 400, typ: "invalid_request_error", msg: "non-empty array"},
		{name: "stream not a boolean", key: key, body: `{"model":"haiku","max_tokens":16,"stream":"yes","messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "stream: expected a boolean"},
		{name: "the node's own validation, passed on", key: key, body: `{"model":"haiku","max_tokens":16,"messages":[{"role":"robot","content":"hi"}]}`, status: 400, typ: "invalid_request_error", msg: "messages.0.role"},
		{name: "wrong content type", key: key, body: ok, headers: []string{"Content-Type", "text/plain"}, status: 400, typ: "invalid_request_error", msg: "application/json", code: "unsupported_media_type"},
		{name: "too large", key: key, body: `{"model":"haiku","max_tokens":16,"messages":[{"role":"user","content":"` + strings.Repeat("a", 1<<20) + `"}]}`, status: 413, typ: "request_too_large", msg: "larger than"},
		{name: "content policy blocks", key: legal, body: `{"model":"haiku","max_tokens":16,"messages":[{"role":"user","content":"card 4111 1111 1111 1111"}]}`, status: 400, typ: "invalid_request_error", msg: "credit_card", code: "content_policy_violation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "POST", u, tt.key, tt.body, tt.headers...)
			require.Equal(t, tt.status, r.Status, "%s", r.Body)
			requireErrorShape(t, r, tt.typ, tt.msg)
			if tt.code != "" {
				require.Equal(t, tt.code, r.json(t)["error"].(map[string]any)["details"].(map[string]any)["error_code"])
			}
		})
	}

	t.Run("upstream overloaded", func(t *testing.T) {
		e.sim.Script("529")
		r := do(t, "POST", u, key, ok)
		require.Equal(t, 529, r.Status, "%s", r.Body)
		requireErrorShape(t, r, "overloaded_error", "upstream 529")
	})
	t.Run("wrong method", func(t *testing.T) {
		r := do(t, "GET", u, key, nil)
		require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
		requireErrorShape(t, r, "invalid_request_error", "method not allowed")
	})
	t.Run("count_tokens without messages", func(t *testing.T) {
		r := do(t, "POST", base+"/v1/messages/count_tokens", key, `{"model":"haiku"}`)
		require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
		requireErrorShape(t, r, "invalid_request_error", "messages: field required")
	})
	t.Run("models with a bad limit", func(t *testing.T) {
		r := do(t, "GET", base+"/v1/models?limit=0", key, nil)
		require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
		requireErrorShape(t, r, "invalid_request_error", "limit")
	})
	t.Run("redaction reaches the node", func(t *testing.T) {
		r := do(t, "POST", u, key, `{"model":"haiku","max_tokens":64,"messages":[{"role":"user","content":"mail bob@corp.example.org now"}]}`)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		require.Contains(t, string(r.Body), "[REDACTED_EMAIL]")
		require.NotContains(t, string(r.Body), "bob@corp")
	})

	// Failed requests released their reservations: only the two that were
	// answered are billed.
	entries := e.ledgerOf(t, "ivan", 1)
	require.Len(t, entries, 1)
	e.requireSpent(t, "ivan", "research", entries[0].CostMicros)
}
