package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenRE = regexp.MustCompile(`claude-sim listening on (http://127\.0\.0\.1:\d+)`)

func TestRunServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--api-key", "k", "--seed", "1", "--log-level", "debug"}, &stdout, &stderr)
	}()

	var url string
	require.Eventually(t, func() bool {
		m := listenRE.FindStringSubmatch(stdout.String())
		if m == nil {
			return false
		}
		url = m[1]
		return true
	}, 5*time.Second, 10*time.Millisecond, "stderr: %s", stderr.String())

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		headers    map[string]string
		wantStatus int
		wantBody   string
	}{
		{name: "message", method: http.MethodPost, path: "/v1/messages", body: `{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"ping"}]}`, headers: map[string]string{"x-api-key": "k"}, wantStatus: 200, wantBody: "Simulated reply to: ping."},
		{name: "no key", method: http.MethodPost, path: "/v1/messages", body: `{}`, wantStatus: 401, wantBody: "authentication_error"},
		{name: "fault header", method: http.MethodPost, path: "/v1/messages", body: `{}`, headers: map[string]string{"x-api-key": "k", "x-sim-fault": "529"}, wantStatus: 529, wantBody: "overloaded_error"},
		{name: "models", method: http.MethodGet, path: "/v1/models", headers: map[string]string{"Authorization": "Bearer k"}, wantStatus: 200, wantBody: "claude-opus-4-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, url+tt.path, strings.NewReader(tt.body))
			require.NoError(t, err)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(b))
			require.Contains(t, string(b), tt.wantBody)
		})
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	require.Contains(t, stderr.String(), "claude-sim stopped")
}

func TestRunFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantErr    string
		wantStderr []string
	}{
		{name: "help", args: []string{"--help"}, wantStderr: []string{"-addr", "-fault-rate", "-latency-jitter", "-request-log", "-per-token-latency", "-retry-after", "-api-key", "-seed", "x-sim-fault", "x-sim-retry-after", "x-sim-latency"}},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "usage error"},
		{name: "bad fault", args: []string{"--faults", "429,teapot"}, wantErr: `unknown fault kind "teapot"`},
		{name: "bad rate", args: []string{"--fault-rate", "2"}, wantErr: "--fault-rate"},
		{name: "extra args", args: []string{"serve"}, wantErr: "unexpected arguments"},
		{name: "bad addr", args: []string{"--addr", "127.0.0.1:-1"}, wantErr: "listen"},
		{name: "bad request log", args: []string{"--request-log", "/nonexistent-dir/log"}, wantErr: "--request-log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr syncBuffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if tt.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tt.wantErr)
			}
			for _, s := range tt.wantStderr {
				require.Contains(t, stderr.String(), s)
			}
		})
	}
}
