package loadtest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// jobView is what the load test reads of a job (GET /api/claude/jobs/{id},
// or the 200 answer of a cache hit).
type jobView struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Cached bool   `json:"cached"`
	Error  *struct {
		Type string `json:"type"`
	} `json:"error"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

func (j *jobView) terminal() bool {
	return j.Status == "succeeded" || j.Status == "failed" || j.Status == "canceled"
}

// submitted classifies a submit's answer: 202 with a job id, or 200 with
// the finished job (a cache hit). It returns the id of a job to wait for.
func (r *runner) submitted(s *sample, body []byte) string {
	if s.status != http.StatusAccepted && s.status != http.StatusOK {
		s.errType = httpError(s.status, body)
		return ""
	}
	var j jobView
	if json.Unmarshal(body, &j) != nil || j.ID == "" {
		s.errType = "bad_response"
		return ""
	}
	s.accepted = true
	switch {
	case !r.waitJobs:
		s.cached = j.Cached
		return ""
	case s.status == http.StatusOK && j.terminal():
		r.jobEnded(s, &j, s.end)
		return ""
	default:
		return j.ID
	}
}

// jobEnded records the end of a job, observed at at.
func (r *runner) jobEnded(s *sample, j *jobView, at time.Time) {
	s.waited, s.jobEnd, s.cached = true, at, j.Cached
	switch j.Status {
	case "succeeded":
		if !j.Cached && j.StartedAt != nil && j.FinishedAt != nil && !j.CreatedAt.IsZero() {
			s.queue = max(j.StartedAt.Sub(j.CreatedAt), 0)
			s.processing = max(j.FinishedAt.Sub(*j.StartedAt), 0)
			s.timestamps = true
		}
	case "failed":
		t := "unknown"
		if j.Error != nil && validKind(j.Error.Type) {
			t = j.Error.Type
		}
		s.errType = "job_failed:" + t
	default:
		s.errType = "job_canceled"
	}
}

// waitJob polls job id (or waits for its webhook) until it ends or the run
// does, and records the outcome in s.
func (r *runner) waitJob(id string, s *sample) {
	interval := r.cfg.PollInterval
	var hook <-chan struct{}
	if r.hooks != nil {
		hook = r.hooks.register(id)
		defer r.hooks.unregister(id)
		interval = max(10*interval, 2*time.Second)
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		var at time.Time
		select {
		case <-r.ctx.Done():
			s.errType = "unfinished"
			return
		case <-hook:
			// The job ended; read its timestamps. Should the read not show
			// it ended yet, poll as usual.
			at, hook, interval = time.Now(), nil, r.cfg.PollInterval
		case <-t.C:
		}
		j, kind, fatal := r.getJob(id)
		if at.IsZero() {
			at = time.Now()
		}
		switch {
		case kind == "" && j.terminal():
			r.jobEnded(s, j, at)
			return
		case fatal:
			s.errType = kind
			return
		case kind != "":
			r.rec.pollError(kind)
		}
		t.Reset(interval)
	}
}

// getJob reads job id. kind names a failure; fatal ones end the wait.
func (r *runner) getJob(id string) (j *jobView, kind string, fatal bool) {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.jobsURL+url.PathEscape(id), nil)
	if err != nil {
		return nil, "bad_response", true
	}
	req.Header.Set("Authorization", "Bearer "+r.cfg.Key)
	r.rec.polled()
	res, err := r.client.Do(req)
	var body []byte
	if err == nil {
		body, err = readBody(res.Body)
		_ = res.Body.Close()
	}
	if err != nil {
		if r.ctx.Err() != nil {
			return nil, "unfinished", true
		}
		return nil, "poll_" + classifyTransport(err.Error()), false
	}
	switch {
	case res.StatusCode == http.StatusOK:
		j = &jobView{}
		if json.Unmarshal(body, j) != nil || j.Status == "" {
			return nil, "bad_response", true
		}
		return j, "", false
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return nil, "poll_http_" + strconv.Itoa(res.StatusCode), false
	default:
		return nil, "poll_http_" + strconv.Itoa(res.StatusCode), true
	}
}

// hookReceiver receives job webhooks on 127.0.0.1 and wakes the job's
// waiter. Signatures are not checked: the secret is the service's, and the
// receiver only learns that a job ended, which a poll then confirms.
type hookReceiver struct {
	url string
	srv *http.Server

	mu      sync.Mutex
	waiting map[string]chan struct{}
	early   map[string]struct{} // ended before their waiter registered
}

// maxEarly bounds the ids kept for waiters that have not registered yet.
const maxEarly = 100_000

func startHookReceiver() (*hookReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hookReceiver{
		url:     "http://" + ln.Addr().String() + "/loadtest/webhook",
		waiting: map[string]chan struct{}{}, early: map[string]struct{}{},
	}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

func (h *hookReceiver) close() { _ = h.srv.Close() }

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			JobID string `json:"job_id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(req.Body, 1<<20)).Decode(&ev); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if strings.HasPrefix(ev.Type, "job.") && ev.Data.JobID != "" {
		h.signal(ev.Data.JobID)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) signal(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.waiting[id]; ok {
		select {
		case ch <- struct{}{}:
		default:
		}
		return
	}
	if len(h.early) < maxEarly {
		h.early[id] = struct{}{}
	}
}

func (h *hookReceiver) register(id string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.early[id]; ok {
		delete(h.early, id)
		ch <- struct{}{}
	}
	h.waiting[id] = ch
	return ch
}

func (h *hookReceiver) unregister(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiting, id)
}
