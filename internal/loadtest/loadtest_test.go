package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/loadtest"
	"github.com/claudeq/claudeq/internal/sim"
)

// sane checks a latency summary's ordering.
func sane(t *testing.T, name string, s *loadtest.LatencySummary) {
	t.Helper()
	require.NotNil(t, s, name)
	require.Positive(t, s.Count, name)
	require.LessOrEqual(t, s.Min, s.P50, name)
	require.LessOrEqual(t, s.P50, s.P90, name)
	require.LessOrEqual(t, s.P90, s.P95, name)
	require.LessOrEqual(t, s.P95, s.P99, name)
	require.LessOrEqual(t, s.P99, s.Max, name)
	var n int64
	for _, b := range s.Bins {
		n += b.Count
	}
	require.Equal(t, s.Count, n, "%s: the bins hold every value", name)
}

// every10 injects a 429 at requests 3, 13, 23, … and a 500 at 7, 17, ….
func every10(_ string, n int64) int {
	switch n % 10 {
	case 3:
		return 429
	case 7:
		return 500
	}
	return 0
}

func TestAsyncClosedLoop(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) { f.fault = every10 })
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Users: 4, RequestsPerUser: 25, CacheRatio: 0.3,
		PollInterval: 5 * time.Millisecond, PromptTokens: loadtest.TokenDist{Kind: loadtest.DistUniform, Min: 20, Max: 60},
		Seed: 1,
	})
	require.NoError(t, err)

	require.Equal(t, loadtest.ModeAsync, rep.Mode)
	require.Equal(t, "closed", rep.Loop)
	require.EqualValues(t, 100, rep.Requests)
	require.EqualValues(t, 100, api.chats.Load())
	require.Zero(t, api.authBad.Load())
	require.EqualValues(t, 80, rep.Successes)
	require.EqualValues(t, 20, rep.Errors)
	require.Equal(t, map[string]int64{"rate_limit_error": 10, "api_error": 10}, rep.ErrorTypes)
	require.EqualValues(t, 10, rep.StatusCodes[429])
	require.EqualValues(t, 10, rep.StatusCodes[500])
	require.EqualValues(t, 80, rep.StatusCodes[202]+rep.StatusCodes[200])

	// Cache ratio: exactly ⌊100·0.3⌋ requests repeat an earlier prompt.
	require.EqualValues(t, 30, rep.CacheRepeats)
	distinct := map[string]bool{}
	for _, p := range api.prompts {
		distinct[p] = true
	}
	require.Len(t, api.prompts, 100)
	require.Len(t, distinct, 70)
	api.mu.Lock()
	hits := api.cached
	api.mu.Unlock()
	require.Positive(t, hits, "some repeats found their prompt answered")
	require.EqualValues(t, hits, rep.CacheHits)
	require.EqualValues(t, hits, rep.StatusCodes[200])

	sane(t, "submit", rep.Latency)
	require.EqualValues(t, 80, rep.Latency.Count)
	sane(t, "end-to-end", rep.EndToEnd)
	require.EqualValues(t, 80, rep.EndToEnd.Count)
	sane(t, "queue wait", rep.QueueWait)
	sane(t, "processing", rep.Processing)
	require.EqualValues(t, 80-hits, rep.QueueWait.Count, "cache hits have no queue wait")
	// The fake's timestamps: 10 ms queued, 20 ms processing.
	require.InDelta(t, 10*time.Millisecond, rep.QueueWait.P50, float64(50*time.Microsecond))
	require.InDelta(t, 20*time.Millisecond, rep.Processing.P99, float64(50*time.Microsecond))
	require.GreaterOrEqual(t, rep.EndToEnd.P99, 30*time.Millisecond)
	require.Nil(t, rep.TTFT)
	require.Positive(t, rep.RPS)
	require.Positive(t, rep.Throughput)
	require.False(t, rep.TimedOut)
	require.Equal(t, api.polls.Load(), rep.Polls)
	require.GreaterOrEqual(t, rep.Polls, int64(80-hits), "every job that was not a cache hit was polled")

	var md bytes.Buffer
	require.NoError(t, rep.WriteMarkdown(&md))
	for _, s := range []string{"| requests | 100 |", "| submit | 80 |", "| end-to-end | 80 |", "| queue wait |", "| processing |", "| rate_limit_error | 10 |", "| 429 | 10 |", "30 repeats"} {
		require.Contains(t, md.String(), s)
	}

	// JSON: durations in ns, maps keyed by type and status.
	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var m map[string]any
	require.NoError(t, json.Unmarshal(js.Bytes(), &m))
	require.EqualValues(t, 100, m["requests"])
	require.EqualValues(t, 10, m["status_codes"].(map[string]any)["429"])
	require.EqualValues(t, 10, m["errors_by_type"].(map[string]any)["api_error"])
	require.EqualValues(t, rep.EndToEnd.P99, m["end_to_end"].(map[string]any)["p99_ns"])

	// HTML: self-contained.
	var h bytes.Buffer
	require.NoError(t, rep.WriteHTML(&h))
	requireSelfContained(t, h.String())
	require.Equal(t, 2+4, strings.Count(h.String(), "<svg"), "two time plots and a histogram per latency")
	require.Contains(t, h.String(), "Latency over time")
}

var externalRef = regexp.MustCompile(`(?i)(\bsrc|\bhref|\baction|\bxlink:href|\bdata|\bposter)\s*=\s*["']?\s*(https?:)?//`)

func requireSelfContained(t *testing.T, page string) {
	t.Helper()
	require.True(t, strings.HasPrefix(page, "<!doctype html>"))
	require.Empty(t, externalRef.FindAllString(page, -1), "no external references")
	lower := strings.ToLower(page)
	for _, bad := range []string{"<script", "<link", "@import", "url(", "<iframe", "<img"} {
		require.NotContains(t, lower, bad)
	}
	require.Contains(t, page, "<svg")
}

func TestAsyncOpenLoopWebhook(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	start := time.Now()
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Rate: 100, Duration: 500 * time.Millisecond,
		Webhook: true, PollInterval: time.Second, // backup polls every 10 s: only webhooks end jobs in time
	})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, "open", rep.Loop)
	// 100/s for 500ms: 50 at most; fewer when a loaded machine slows the pacer.
	require.LessOrEqual(t, rep.Requests, int64(51))
	require.GreaterOrEqual(t, rep.Requests, int64(25))
	require.Equal(t, rep.Requests, rep.Successes, "%v", rep.ErrorTypes)
	require.EqualValues(t, rep.Requests, api.hooksSent.Load())
	require.EqualValues(t, rep.Requests, api.polls.Load(), "one read per job, after its webhook")
	require.Equal(t, api.polls.Load(), rep.Polls)
	sane(t, "end-to-end", rep.EndToEnd)
	require.GreaterOrEqual(t, rep.EndToEnd.P50, 30*time.Millisecond)
	require.Less(t, rep.EndToEnd.P99, 5*time.Second)
	require.LessOrEqual(t, rep.RPS, 110.0, "an open loop never sends faster than its rate")
}

func TestAsyncTimeoutReportsUnfinished(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) { f.never = true })
	start := time.Now()
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Users: 3, RequestsPerUser: 5, PollInterval: 10 * time.Millisecond,
		Timeout: 2 * time.Second,
	})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 10*time.Second)
	require.True(t, rep.TimedOut)
	require.EqualValues(t, 3, rep.Requests, "each user's first job never ends")
	require.Equal(t, map[string]int64{"unfinished": 3}, rep.ErrorTypes)
	require.EqualValues(t, 3, rep.StatusCodes[202])
	sane(t, "submit", rep.Latency)
}

func TestSubmitOnlyOpenLoop(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) { f.fault = every10 })
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Rate: 200, Duration: 500 * time.Millisecond, SubmitOnly: true,
	})
	require.NoError(t, err)
	// 200/s for 500ms is 100 requests; an open loop never sends more, and
	// on a loaded machine the pacer may send fewer before the time is up.
	require.LessOrEqual(t, rep.Requests, int64(101))
	require.GreaterOrEqual(t, rep.Requests, int64(50))
	require.Zero(t, api.polls.Load())
	require.EqualValues(t, rep.Requests, rep.Successes+rep.Errors)
	require.InDelta(t, rep.Requests/10, rep.ErrorTypes["rate_limit_error"], 1)
	require.Equal(t, rep.StatusCodes[429], rep.ErrorTypes["rate_limit_error"])
	require.Equal(t, rep.StatusCodes[500], rep.ErrorTypes["api_error"])
	require.Nil(t, rep.EndToEnd)
	sane(t, "submit", rep.Latency)
	// The generator says what it cost, so that a reader can tell whether it
	// held the rate down.
	require.Positive(t, rep.GeneratorCPU)
	var md bytes.Buffer
	require.NoError(t, rep.WriteMarkdown(&md))
	require.Regexp(t, `\| generator CPU \| [0-9.]+[µm]?s, [0-9.]+ cores on average of GOMAXPROCS [0-9]+`, md.String())
}

func TestSyncAgainstSimulator(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{APIKey: "sim-key", Seed: 1})
	// The first requests fail: 5 rate limited, 5 server errors, 2 overloaded.
	s.Script("429", "429", "429", "429", "429", "500", "500", "500", "500", "500", "529", "529")
	url := serve(t, s)
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: url, Key: "sim-key", Mode: loadtest.ModeSync, Users: 3, RequestsPerUser: 20,
	})
	require.NoError(t, err)
	require.EqualValues(t, 60, rep.Requests)
	require.EqualValues(t, 48, rep.Successes)
	require.Equal(t, map[string]int64{"rate_limit_error": 5, "api_error": 5, "overloaded_error": 2}, rep.ErrorTypes)
	require.Equal(t, map[int]int64{200: 48, 429: 5, 500: 5, 529: 2}, rep.StatusCodes)
	require.EqualValues(t, 60, s.Stats().Requests)
	sane(t, "latency", rep.Latency)
	require.EqualValues(t, 48, rep.Latency.Count)
	require.Nil(t, rep.EndToEnd)
	require.Nil(t, rep.TTFT)

	// A wrong key: every request is an authentication error.
	rep, err = loadtest.Run(context.Background(), loadtest.Config{
		URL: url, Key: "wrong", Mode: loadtest.ModeSync, Users: 1, RequestsPerUser: 3,
	})
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"authentication_error": 3}, rep.ErrorTypes)
	require.Nil(t, rep.Latency)
}

func TestStreamOpenLoopAgainstSimulator(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{Latency: 5 * time.Millisecond, PerTokenLatency: 200 * time.Microsecond, Seed: 1})
	url := serve(t, s)
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: url, Key: "k", Mode: loadtest.ModeStream, Rate: 50, Duration: time.Second, MaxTokens: 100,
	})
	require.NoError(t, err)
	// 100/s for 500ms: 50 at most; fewer when a loaded machine slows the pacer.
	require.LessOrEqual(t, rep.Requests, int64(51))
	require.GreaterOrEqual(t, rep.Requests, int64(25))
	require.Equal(t, rep.Requests, rep.Successes, "%v", rep.ErrorTypes)
	require.Equal(t, map[int]int64{200: rep.Requests}, rep.StatusCodes)
	sane(t, "total", rep.Latency)
	sane(t, "ttft", rep.TTFT)
	require.Equal(t, rep.Successes, rep.TTFT.Count)
	require.GreaterOrEqual(t, rep.TTFT.P50, 5*time.Millisecond, "the simulator waits 5 ms before the first event")
	require.Less(t, rep.TTFT.P50, rep.Latency.P50, "the first token comes before the end")
	require.InDelta(t, 50, rep.RPS, 5)

	var h bytes.Buffer
	require.NoError(t, rep.WriteHTML(&h))
	requireSelfContained(t, h.String())
	require.Contains(t, h.String(), "time to first token")
}

func TestStreamErrors(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) {
		f.fault = func(_ string, n int64) int {
			if n%10 == 3 {
				return 529
			}
			return 0
		}
		f.streamFault = func(n int64) string {
			switch n % 10 {
			case 5:
				return "error"
			case 8:
				return "cut"
			}
			return ""
		}
	})
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Mode: loadtest.ModeStream, Users: 5, RequestsPerUser: 4,
	})
	require.NoError(t, err)
	require.EqualValues(t, 20, rep.Requests)
	require.Equal(t, map[string]int64{"overloaded_error": 2, "stream:overloaded_error": 2, "stream_incomplete": 2}, rep.ErrorTypes)
	require.Equal(t, map[int]int64{200: 18, 529: 2}, rep.StatusCodes)
	require.EqualValues(t, 14, rep.Successes)
	sane(t, "ttft", rep.TTFT)
	require.GreaterOrEqual(t, rep.TTFT.Min, 5*time.Millisecond)
	require.GreaterOrEqual(t, rep.Latency.Min, 15*time.Millisecond)
	for _, b := range api.bodies {
		require.Equal(t, true, b["stream"])
		require.Equal(t, loadtest.DefaultModel, b["model"])
	}
}

// TestOpenLoopMeasuresFromIntendedTime: with one worker and a server that
// takes 20 ms, the generator cannot keep a 5 ms schedule; latencies from
// the intended send times grow with the backlog, as a user would see them.
func TestOpenLoopMeasuresFromIntendedTime(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) { f.msgDelay = 20 * time.Millisecond })
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Mode: loadtest.ModeSync, Rate: 200, Duration: 500 * time.Millisecond, MaxWorkers: 1,
	})
	require.NoError(t, err)
	// One worker sends at most 50 per second (fewer on a busy machine)
	// instead of the 100 due in 500 ms.
	require.GreaterOrEqual(t, rep.Requests, int64(10))
	require.LessOrEqual(t, rep.Requests, int64(30))
	require.Equal(t, rep.Requests, rep.Successes)
	sane(t, "latency", rep.Latency)
	require.GreaterOrEqual(t, rep.Latency.Min, 20*time.Millisecond)
	require.Greater(t, rep.Latency.Max, 250*time.Millisecond, "the backlog shows: %v", rep.Latency.Max)
	require.Less(t, rep.RPS, 100.0)
}

func TestPromptsFile(t *testing.T) {
	t.Parallel()
	ps, err := loadtest.LoadPrompts(strings.NewReader(`{"prompt":"first \"one\"\n","model":"claude-haiku-4-5","max_tokens":10}

{"prompt":"second"}
`))
	require.NoError(t, err)
	require.Equal(t, []loadtest.Prompt{{Prompt: "first \"one\"\n", Model: "claude-haiku-4-5", MaxTokens: 10}, {Prompt: "second"}}, ps)
	_, err = loadtest.LoadPrompts(strings.NewReader(`{"prompt":"a"}` + "\n" + `{"promt":"b"}`))
	require.ErrorContains(t, err, "line 2")
	_, err = loadtest.LoadPrompts(strings.NewReader("\n"))
	require.Error(t, err)

	api := newFakeAPI(t)
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Mode: loadtest.ModeSync, Users: 1, RequestsPerUser: 5, Prompts: ps, MaxTokens: 77,
	})
	require.NoError(t, err)
	require.EqualValues(t, 5, rep.Successes)
	require.Len(t, api.bodies, 5)
	for i, b := range api.bodies {
		msgs := b["messages"].([]any)
		content := msgs[0].(map[string]any)["content"]
		if i%2 == 0 {
			require.Equal(t, "first \"one\"\n", content)
			require.Equal(t, "claude-haiku-4-5", b["model"])
			require.EqualValues(t, 10, b["max_tokens"])
		} else {
			require.Equal(t, "second", content)
			require.Equal(t, loadtest.DefaultModel, b["model"])
			require.EqualValues(t, 77, b["max_tokens"])
		}
	}
	require.Contains(t, rep.Prompts, "2 prompts")
}

func TestGeneratedPromptSizes(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	_, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Users: 2, RequestsPerUser: 10, SubmitOnly: true,
		PromptTokens: loadtest.TokenDist{Kind: loadtest.DistUniform, Min: 100, Max: 200},
	})
	require.NoError(t, err)
	require.Len(t, api.prompts, 20)
	seen := map[string]bool{}
	for _, p := range api.prompts {
		require.GreaterOrEqual(t, len(p), 400)
		require.LessOrEqual(t, len(p), 800)
		require.True(t, strings.HasPrefix(p, "[loadtest "))
		require.False(t, seen[p], "fresh prompts are unique")
		seen[p] = true
	}
}

func TestParseTokenDist(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]loadtest.TokenDist{
		"50:500":             {Kind: loadtest.DistUniform, Min: 50, Max: 500},
		"200":                {Kind: loadtest.DistUniform, Min: 200, Max: 200},
		"lognormal:200:0.5":  {Kind: loadtest.DistLognormal, Min: 1, Max: 4000, Median: 200, Sigma: 0.5},
		"lognormal:80:1:900": {Kind: loadtest.DistLognormal, Min: 1, Max: 900, Median: 80, Sigma: 1},
	} {
		got, err := loadtest.ParseTokenDist(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
		back, err := loadtest.ParseTokenDist(got.String())
		require.NoError(t, err)
		require.Equal(t, got, back)
	}
	for _, in := range []string{"", "0", "500:50", "a:b", "1:2:3", "lognormal:0:1", "lognormal:100:-1", "lognormal:100", "uniform:1:2", "1:300000"} {
		_, err := loadtest.ParseTokenDist(in)
		require.Error(t, err, in)
	}
}

func TestRefusesRemoteURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://10.0.0.1:8080", "https://api.anthropic.com", "http://example.com", "http://127.0.0.1.nip.io:8080", "http://[2001:db8::1]:80"} {
		_, err := loadtest.Run(context.Background(), loadtest.Config{URL: u, Key: "k", Users: 1, RequestsPerUser: 1})
		require.ErrorIs(t, err, loadtest.ErrRemote, u)
		require.ErrorContains(t, err, "--allow-remote", u)
	}
	for _, h := range []string{"127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"} {
		require.True(t, loadtest.IsLoopback(h), h)
	}
	for _, h := range []string{"10.0.0.1", "0.0.0.0", "example.com", "localhost.example.com", "::"} {
		require.False(t, loadtest.IsLoopback(h), h)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	base := loadtest.Config{URL: "http://127.0.0.1:1", Key: "k"}
	for name, mod := range map[string]func(*loadtest.Config){
		"no loop":          func(c *loadtest.Config) {},
		"both loops":       func(c *loadtest.Config) { c.Users, c.RequestsPerUser, c.Rate, c.Duration = 1, 1, 1, time.Second },
		"open no duration": func(c *loadtest.Config) { c.Rate = 10 },
		"closed no count":  func(c *loadtest.Config) { c.Users = 2 },
		"bad mode":         func(c *loadtest.Config) { c.Mode, c.Users, c.RequestsPerUser = "batch", 1, 1 },
		"bad ratio":        func(c *loadtest.Config) { c.Users, c.RequestsPerUser, c.CacheRatio = 1, 1, 1.5 },
		"webhook sync": func(c *loadtest.Config) {
			c.Users, c.RequestsPerUser, c.Mode, c.Webhook = 1, 1, loadtest.ModeSync, true
		},
		"no url": func(c *loadtest.Config) { c.URL, c.Users, c.RequestsPerUser = "", 1, 1 },
		"ftp":    func(c *loadtest.Config) { c.URL, c.Users, c.RequestsPerUser = "ftp://127.0.0.1", 1, 1 },
	} {
		c := base
		mod(&c)
		_, err := loadtest.Run(context.Background(), c)
		require.Error(t, err, name)
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) { f.msgDelay = 2 * time.Millisecond })
	var out lockedBuffer
	rep, err := loadtest.Run(context.Background(), loadtest.Config{
		URL: api.url, Key: api.key, Mode: loadtest.ModeSync, Rate: 100, Duration: 600 * time.Millisecond, Progress: &out,
	})
	require.NoError(t, err)
	require.Positive(t, rep.Successes)
	s := out.String()
	require.Contains(t, s, "req/s")
	require.Contains(t, s, "p99")
	require.Contains(t, s, "errors 0")
}

func TestInterrupt(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, func(f *fakeAPI) { f.msgDelay = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	rep, err := loadtest.Run(ctx, loadtest.Config{
		URL: api.url, Key: api.key, Mode: loadtest.ModeSync, Rate: 100, Duration: 30 * time.Second,
	})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 10*time.Second, "the open loop stops with its context, not after 30s")
	require.True(t, rep.Interrupted)
	require.Positive(t, rep.Successes)
	require.LessOrEqual(t, rep.Requests, int64(110))
}

func TestSelfTest(t *testing.T) {
	t.Parallel()
	url := serve(t, loadtest.TrivialHandler())
	res, err := loadtest.SelfTest(context.Background(), url, 150*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, res.Runs, 3)
	for _, r := range res.Runs {
		require.Positive(t, r.RPS, r.Name)
		require.Zero(t, r.Errors, r.Name)
	}
	require.Contains(t, res.Markdown(), "closed loop, 64 users")
}

// serve serves h on 127.0.0.1 and returns its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	rep, err := loadtest.Run(context.Background(), loadtest.Config{URL: url, Key: "k", Mode: loadtest.ModeSync, Users: 2, RequestsPerUser: 3})
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"connection_refused": 6}, rep.ErrorTypes)
	require.Empty(t, rep.StatusCodes)
	require.Nil(t, rep.Latency)
	var h, md bytes.Buffer
	require.NoError(t, rep.WriteHTML(&h))
	requireSelfContained(t, h.String())
	require.Contains(t, h.String(), "no data")
	require.NoError(t, rep.WriteMarkdown(&md))
	require.Contains(t, md.String(), "| connection_refused | 6 |")
}

func TestLargeAnswersAreRead(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("word ", 100_000) // 500 KB of text
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"id": "job_1", "status": "succeeded", "cached": true, "text": big,
			"created_at": time.Now(), "started_at": time.Now(), "finished_at": time.Now()})
	})
	rep, err := loadtest.Run(context.Background(), loadtest.Config{URL: serve(t, h), Key: "k", Rate: 20, Duration: 200 * time.Millisecond})
	require.NoError(t, err)
	require.Positive(t, rep.Requests)
	require.Equal(t, rep.Requests, rep.CacheHits, "%v", rep.ErrorTypes)
}

// TestRunLeavesNothingBehind: benchmarks call Run again and again.
func TestRunLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	var open atomicCounter
	srv := httptest.NewUnstartedServer(loadtest.TrivialHandler())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.add(1)
		case http.StateClosed, http.StateHijacked:
			open.add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	for range 3 {
		_, err := loadtest.Run(context.Background(), loadtest.Config{URL: srv.URL, Key: "k", SubmitOnly: true, Users: 8, RequestsPerUser: 20})
		require.NoError(t, err)
		_, err = loadtest.Run(context.Background(), loadtest.Config{URL: srv.URL, Key: "k", SubmitOnly: true, Rate: 200, Duration: 100 * time.Millisecond})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return open.get() == 0 }, 5*time.Second, 10*time.Millisecond, "connections left open: %d", open.get())
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add(d int64) { c.n.Add(d) }
func (c *atomicCounter) get() int64  { return c.n.Load() }
