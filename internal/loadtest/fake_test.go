package loadtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAPI mimics claudeq's API closely enough for the load generator:
// async jobs that finish after a delay (with a response cache and
// webhooks), /v1/messages as JSON and as SSE, and injected errors.
type fakeAPI struct {
	t   *testing.T
	url string
	key string

	queueWait, processing time.Duration // of every job
	never                 bool          // jobs never finish
	msgDelay              time.Duration // before /v1/messages answers
	// fault returns the injected error status for the n-th (from 0) request
	// of a kind ("chat", "messages"), 0 for none.
	fault func(kind string, n int64) int
	// streamFault returns "error" (an error event mid-stream), "cut" (no
	// message_stop) or "" for the n-th stream.
	streamFault func(n int64) string

	chats, msgs, polls, hooksSent atomic.Int64
	authBad                       atomic.Int64

	mu      sync.Mutex
	jobs    map[string]*fakeJob
	prompts []string        // every prompt received, in arrival order
	done    map[string]bool // prompts of succeeded, finished jobs (the cache)
	cached  int             // 200 cache hits answered
	bodies  []map[string]any
}

type fakeJob struct {
	id      string
	created time.Time
	cached  bool
}

func newFakeAPI(t *testing.T, configure ...func(*fakeAPI)) *fakeAPI {
	f := &fakeAPI{t: t, key: "cqk_test", queueWait: 10 * time.Millisecond, processing: 20 * time.Millisecond,
		jobs: map[string]*fakeJob{}, done: map[string]bool{}}
	for _, c := range configure {
		c(f)
	}
	srv := httptest.NewServer(f) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/claude/chat":
		if r.Header.Get("Authorization") != "Bearer "+f.key {
			f.authBad.Add(1)
			writeErr(w, 401, "authentication_error")
			return
		}
		f.chat(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/claude/jobs/"):
		if r.Header.Get("Authorization") != "Bearer "+f.key {
			f.authBad.Add(1)
			writeErr(w, 401, "authentication_error")
			return
		}
		f.polls.Add(1)
		f.mu.Lock()
		j := f.jobs[strings.TrimPrefix(r.URL.Path, "/api/claude/jobs/")]
		f.mu.Unlock()
		if j == nil {
			writeErr(w, 404, "not_found_error")
			return
		}
		writeJSON(w, 200, f.view(j, time.Now()))
	case r.Method == http.MethodPost && r.URL.Path == "/v1/messages":
		if r.Header.Get("x-api-key") != f.key || r.Header.Get("anthropic-version") == "" {
			f.authBad.Add(1)
			writeErr(w, 401, "authentication_error")
			return
		}
		f.messages(w, r)
	default:
		writeErr(w, 404, "not_found_error")
	}
}

func (f *fakeAPI) chat(w http.ResponseWriter, r *http.Request) {
	n := f.chats.Add(1) - 1
	var b struct {
		Prompt     string `json:"prompt"`
		Model      string `json:"model"`
		MaxTokens  int    `json:"max_tokens"`
		WebhookURL string `json:"webhook_url"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || b.Prompt == "" || b.Model == "" || b.MaxTokens <= 0 {
		writeErr(w, 400, "invalid_request_error")
		return
	}
	f.mu.Lock()
	f.prompts = append(f.prompts, b.Prompt)
	f.mu.Unlock()
	if f.fault != nil {
		if st := f.fault("chat", n); st != 0 {
			writeErr(w, st, errType(st))
			return
		}
	}
	now := time.Now()
	f.mu.Lock()
	if f.done[b.Prompt] {
		f.cached++
		j := &fakeJob{id: fmt.Sprintf("job_%d", n), created: now, cached: true}
		f.jobs[j.id] = j
		f.mu.Unlock()
		writeJSON(w, 200, f.view(j, now))
		return
	}
	j := &fakeJob{id: fmt.Sprintf("job_%d", n), created: now}
	f.jobs[j.id] = j
	f.mu.Unlock()
	if !f.never {
		time.AfterFunc(f.queueWait+f.processing, func() {
			f.mu.Lock()
			f.done[b.Prompt] = true
			f.mu.Unlock()
			if b.WebhookURL != "" {
				f.hook(b.WebhookURL, j)
			}
		})
	}
	w.Header().Set("Location", "/api/claude/jobs/"+j.id)
	writeJSON(w, 202, map[string]any{"id": j.id, "status": "queued", "status_url": "/api/claude/jobs/" + j.id})
}

func (f *fakeAPI) hook(url string, j *fakeJob) {
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		f.t.Errorf("webhook_url %q is not loopback", url)
		return
	}
	body, _ := json.Marshal(map[string]any{"type": "job.succeeded", "timestamp": time.Now(),
		"data": map[string]any{"job_id": j.id, "status": "succeeded"}})
	res, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		f.t.Errorf("webhook: %v", err)
		return
	}
	_ = res.Body.Close()
	f.hooksSent.Add(1)
}

// view is the job as GET /api/claude/jobs/{id} shows it at now.
func (f *fakeAPI) view(j *fakeJob, now time.Time) map[string]any {
	m := map[string]any{"id": j.id, "kind": "chat", "model": "claude-sonnet-5-5", "cached": j.cached,
		"created_at": j.created, "started_at": nil, "finished_at": nil, "status": "queued"}
	started, finished := j.created.Add(f.queueWait), j.created.Add(f.queueWait+f.processing)
	switch {
	case j.cached:
		m["status"], m["started_at"], m["finished_at"] = "succeeded", j.created, j.created
	case f.never:
	case !now.Before(finished):
		m["status"], m["started_at"], m["finished_at"] = "succeeded", started, finished
		m["usage"] = map[string]any{"input_tokens": 10, "output_tokens": 20}
	case !now.Before(started):
		m["status"], m["started_at"] = "running", started
	}
	return m
}

func (f *fakeAPI) messages(w http.ResponseWriter, r *http.Request) {
	n := f.msgs.Add(1) - 1
	var b map[string]any
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		writeErr(w, 400, "invalid_request_error")
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, b)
	f.mu.Unlock()
	if f.fault != nil {
		if st := f.fault("messages", n); st != 0 {
			writeErr(w, st, errType(st))
			return
		}
	}
	time.Sleep(f.msgDelay)
	if b["stream"] != true {
		writeJSON(w, 200, map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "model": b["model"],
			"content": []any{map[string]any{"type": "text", "text": "hello"}}, "stop_reason": "end_turn",
			"usage": map[string]any{"input_tokens": 3, "output_tokens": 1}})
		return
	}
	fault := ""
	if f.streamFault != nil {
		fault = f.streamFault(n)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	ev := func(name, data string) {
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
		fl.Flush()
	}
	ev("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[]}}`)
	ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	time.Sleep(5 * time.Millisecond) // time to first token
	for i := range 3 {
		ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"w%d "}}`, i))
		if i == 0 && fault == "error" {
			ev("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	if fault == "cut" {
		return
	}
	ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
	ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}`)
	ev("message_stop", `{"type":"message_stop"}`)
}

func errType(status int) string {
	switch status {
	case 429:
		return "rate_limit_error"
	case 500:
		return "api_error"
	case 529:
		return "overloaded_error"
	default:
		return "invalid_request_error"
	}
}

func writeErr(w http.ResponseWriter, status int, typ string) {
	writeJSON(w, status, map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": "injected"}, "request_id": "req_1"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// lockedBuffer is an io.Writer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
