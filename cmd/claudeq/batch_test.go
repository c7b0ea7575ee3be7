package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/mongotest"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
)

// startGateway runs api and worker against a simulator on loopback and
// returns the api's base URL and a key with the batches scope.
func startGateway(t *testing.T) (string, string) {
	t.Helper()
	db := mongotest.DB(t)
	rs := redistest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: sim.New(sim.Config{Latency: 20 * time.Millisecond})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	cfg, err := config.Load(config.Map(map[string]string{
		"CLAUDEQ_HTTP_ADDR": "127.0.0.1:0", "CLAUDEQ_REDIS_URL": rs.URL(), "CLAUDEQ_MONGO_URI": mongotest.URI(t),
		"CLAUDEQ_MONGO_DATABASE": db.Name(), "CLAUDEQ_UPSTREAM_URL": "http://" + ln.Addr().String(),
		"CLAUDEQ_UPSTREAM_API_KEY": "sim", "CLAUDEQ_KEY_CACHE_TTL": "0s", "CLAUDEQ_RATELIMIT_TIERS": "standard=0/0",
		"CLAUDEQ_RATELIMIT_IP": "off", "CLAUDEQ_LOG_LEVEL": "error",
	}))
	require.NoError(t, err)
	a, err := app.Start(context.Background(), cfg, app.Options{Roles: app.Roles{API: true, Worker: true}})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	key, id := apikey.New()
	s := store.New(db)
	require.NoError(t, s.CreateKey(context.Background(), store.APIKey{ID: id, Hash: apikey.Hash(key), UserID: "alice",
		Department: "research", Tier: "standard", Scopes: []string{claudeq.ScopeBatches}, CreatedAt: time.Now().UTC()}))
	return "http://" + a.Addr(), key
}

func TestBatchSubmitWaitOut(t *testing.T) {
	t.Parallel()
	base, key := startGateway(t)
	env := config.Map(map[string]string{"CLAUDEQ_URL": base, "CLAUDEQ_API_KEY": key})
	cli := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, env, &out, &errb)
		return out.String(), errb.String(), err
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "prompts.jsonl")
	lines := []string{
		`{"custom_id": "s1", "prompt": "What is a queue?", "model": "haiku", "max_tokens": 64}`,
		`{"custom_id": "s2", "prompt": "What is a budget?", "model": "haiku"}`,
		``,
		`{"prompt": "No id: this is line-4", "model": "haiku", "max_tokens": 32}`,
		`{"custom_id": "a1", "params": {"model": "haiku", "max_tokens": 50, "messages": [{"role": "user", "content": "Anthropic form"}]}}`,
		`{"custom_id": "a2", "params": {"model": "haiku", "max_tokens": 0, "messages": [{"role": "user", "content": "invalid max_tokens"}]}}`,
		`{"custom_id": "s3", "prompt": "Default model and max_tokens"}`,
		`{"custom_id": "s4", "prompt": "Seventh", "model": "sonnet", "max_tokens": 16}`,
	}
	require.NoError(t, os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	outFile := filepath.Join(dir, "results.jsonl")

	stdout, stderr, err := cli("batch", "submit", in, "--wait", "--out", outFile, "--max-requests", "3", "--poll", "100ms")
	require.NoError(t, err, stderr)
	ids := strings.Fields(stdout)
	require.Len(t, ids, 3, "7 requests, at most 3 per batch: %s", stdout)
	for _, id := range ids {
		require.True(t, strings.HasPrefix(id, "msgbatch_"), id)
	}
	require.Contains(t, stderr, "ended: 6 succeeded, 1 errored, 0 canceled, 0 expired")
	require.Contains(t, stderr, "wrote 7 results to "+outFile)
	require.NotContains(t, stderr, "\r", "no progress bar when stderr is not a terminal")

	results := readResults(t, outFile)
	require.Len(t, results, 7)
	for _, id := range []string{"s1", "s2", "line-4", "a1", "s3", "s4"} {
		require.Equal(t, "succeeded", results[id]["type"], id)
		msg := results[id]["message"].(map[string]any)
		require.NotEmpty(t, msg["content"])
	}
	require.Equal(t, "errored", results["a2"]["type"])
	require.Equal(t, "claude-sonnet-5-5", results["s3"]["message"].(map[string]any)["model"], "the default --model")

	// Resumable by batch id: wait and results again, list, cancel.
	_, stderr, err = cli(append([]string{"batch", "wait", "--progress", "on"}, ids...)...)
	require.NoError(t, err)
	require.Contains(t, stderr, "req", "a progress bar when asked for")
	require.Contains(t, stderr, "ended: 6 succeeded")
	stdout, _, err = cli(append([]string{"batch", "results"}, ids...)...)
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSpace(stdout), "\n"), 7)
	stdout, _, err = cli("batch", "list")
	require.NoError(t, err)
	for _, id := range ids {
		require.Contains(t, stdout, id)
	}
	require.Regexp(t, ids[0]+`\s+ended\s+3\s+0\s+`, stdout)
	stdout, _, err = cli("batch", "cancel", ids[0])
	require.NoError(t, err)
	require.Equal(t, ids[0]+" ended\n", stdout)

	// Errors a user can meet.
	_, _, err = cli("batch", "wait", "msgbatch_nope")
	require.ErrorContains(t, err, "404 not_found_error")
	require.NoError(t, os.WriteFile(in, []byte(`{"custom_id": "x"}`+"\n"+`{"custom_id": "x", "prompt": "y"}`+"\n"), 0o600))
	_, _, err = cli("batch", "submit", in)
	require.ErrorContains(t, err, "prompts.jsonl:1: no params and no prompt")
	require.NoError(t, os.WriteFile(in, []byte(`{"custom_id": "x", "prompt": "y"}`+"\n"+`{"custom_id": "x", "prompt": "y"}`+"\n"), 0o600))
	_, _, err = cli("batch", "submit", in)
	require.ErrorContains(t, err, `prompts.jsonl:2: custom_id "x" is used before, on line 1`)
	var out, errb bytes.Buffer
	err = run(context.Background(), []string{"batch", "list"}, config.Map(map[string]string{"CLAUDEQ_URL": base}), &out, &errb)
	require.ErrorContains(t, err, "CLAUDEQ_API_KEY")
}

func readResults(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			CustomID string         `json:"custom_id"`
			Result   map[string]any `json:"result"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
		out[l.CustomID] = l.Result
	}
	require.NoError(t, sc.Err())
	return out
}

func TestSplitRequests(t *testing.T) {
	t.Parallel()
	r := func(n int) json.RawMessage { return json.RawMessage(strings.Repeat("x", n)) }
	for _, tc := range []struct {
		name     string
		sizes    []int
		maxN     int
		maxBytes int64
		want     []int
	}{
		{"fits", []int{10, 10, 10}, 5, 1000, []int{3}},
		{"by count", []int{1, 1, 1, 1, 1}, 2, 1000, []int{2, 2, 1}},
		{"by bytes", []int{50, 50, 50}, 10, 100, []int{1, 1, 1}},
		{"by bytes, two fit", []int{30, 30, 30}, 10, 100, []int{2, 1}},
		{"one too big alone still goes", []int{500}, 10, 100, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reqs []json.RawMessage
			for _, s := range tc.sizes {
				reqs = append(reqs, r(s))
			}
			var got []int
			for _, ch := range splitRequests(reqs, tc.maxN, tc.maxBytes) {
				got = append(got, len(ch))
			}
			require.Equal(t, tc.want, got)
		})
	}
}
