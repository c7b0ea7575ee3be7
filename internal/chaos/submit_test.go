//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// submitter sends chat jobs as clients do and records every answer: each
// 202 (the job ids the accounting check holds the gateway to), every
// refusal by status, and whether each 429/503 carried Retry-After.
// With idem, every request carries an Idempotency-Key and is retried with
// the same key (after Retry-After, or 200 ms) until it is accepted or
// giveUp has passed since its first attempt. It is safe for concurrent use.
type submitter struct {
	name    string
	users   []user
	urls    func() []string // the apis to send to, in turn
	webhook string          // webhook_url of every job, if set
	idem    bool
	giveUp  time.Duration
	client  *http.Client
	seq     atomic.Int64
	inFlt   atomic.Int64

	mu           sync.Mutex
	accepted     map[string]string          // job id → user id
	acceptedAt   map[string]time.Time       // job id → first 202
	byKey        map[string]map[string]bool // Idempotency-Key → job ids
	statuses     map[int]int                // answers by status; 0: no answer (connection refused, reset)
	noRetryAfter int                        // 429 and 503 answers without Retry-After
	unexpected   []string                   // samples of other answers
	unaccepted   int                        // idem requests given up
	replays      int                        // answers with Idempotent-Replayed: true
	lat          *hdrhistogram.Histogram    // answered submits' latency, µs
}

func newSubmitter(name string, users []user, urls func() []string) *submitter {
	return &submitter{
		name: name, users: users, urls: urls, giveUp: 5 * time.Minute,
		client:   &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 512}},
		accepted: map[string]string{}, acceptedAt: map[string]time.Time{}, byKey: map[string]map[string]bool{},
		statuses: map[int]int{}, lat: hdrhistogram.New(1, 60_000_000, 3),
	}
}

// run sends rate requests per second for d (open loop, at most conc in
// flight) and waits for the last answer.
func (s *submitter) run(ctx context.Context, rate float64, d time.Duration, conc int) {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if at.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		if w := time.Until(at); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.one(ctx)
		}()
	}
	wg.Wait()
}

// count sends n requests, at most conc at a time, as fast as they are
// answered.
func (s *submitter) count(ctx context.Context, n, conc int) {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.one(ctx)
		}()
	}
	wg.Wait()
}

// one sends one logical request (with its retries in idem mode).
func (s *submitter) one(ctx context.Context) {
	i := s.seq.Add(1)
	u := s.users[int(i)%len(s.users)]
	body := map[string]any{"prompt": fmt.Sprintf("%s job %d: tell me something", s.name, i), "max_tokens": 64, "cache": false}
	if s.webhook != "" {
		body["webhook_url"] = s.webhook
	}
	b, _ := json.Marshal(body)
	key := ""
	if s.idem {
		key = fmt.Sprintf("%s-%d", s.name, i)
	}
	first := time.Now()
	for attempt := 0; ; attempt++ {
		urls := s.urls()
		base := urls[(int(i)+attempt)%len(urls)]
		status, ra, id, sample, replay := s.post(ctx, base, u, b, key)
		s.note(status, ra, id, sample, u, key, replay)
		if id != "" || !s.idem || ctx.Err() != nil {
			return
		}
		if time.Since(first) > s.giveUp {
			s.mu.Lock()
			s.unaccepted++
			s.mu.Unlock()
			return
		}
		wait := 200 * time.Millisecond
		if ra > 0 {
			wait = ra
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// post sends one attempt; id is set for a 202 or an idempotent replay.
func (s *submitter) post(ctx context.Context, base string, u user, body []byte, key string) (status int, retryAfter time.Duration, id, sample string, replay bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/claude/chat", bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err.Error(), false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+u.Key)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	s.inFlt.Add(1)
	t0 := time.Now()
	resp, err := s.client.Do(req)
	s.inFlt.Add(-1)
	if err != nil {
		return 0, 0, "", err.Error(), false
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	s.mu.Lock()
	_ = s.lat.RecordValue(max(time.Since(t0).Microseconds(), 1))
	s.mu.Unlock()
	if err != nil {
		return 0, 0, "", err.Error(), false
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			retryAfter = time.Duration(n) * time.Second
		}
	}
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK:
		var m struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(rb, &m) == nil && m.ID != "" {
			return resp.StatusCode, retryAfter, m.ID, "", resp.Header.Get("Idempotent-Replayed") == "true"
		}
	}
	return resp.StatusCode, retryAfter, "", string(rb), false
}

func (s *submitter) note(status int, ra time.Duration, id, sample string, u user, key string, replay bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses[status]++
	if replay {
		s.replays++
	}
	if id != "" {
		if _, ok := s.accepted[id]; !ok {
			s.accepted[id] = u.ID
			s.acceptedAt[id] = time.Now()
		}
		if key != "" {
			if s.byKey[key] == nil {
				s.byKey[key] = map[string]bool{}
			}
			s.byKey[key][id] = true
		}
		return
	}
	if (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) && ra == 0 {
		s.noRetryAfter++
	}
	if status != 0 && status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable && len(s.unexpected) < 10 {
		s.unexpected = append(s.unexpected, fmt.Sprintf("%d %s", status, strings.TrimSpace(sample)))
	}
}

// answers returns a copy of the answers by status so far.
func (s *submitter) answers() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int, len(s.statuses))
	for k, v := range s.statuses {
		out[k] = v
	}
	return out
}

// since returns the answers by status between two snapshots.
func since(before, after map[int]int) map[int]int {
	out := map[int]int{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// ids returns the accepted job ids.
func (s *submitter) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.accepted))
	for id := range s.accepted {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// summary describes what the clients saw.
func (s *submitter) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	codes := make([]int, 0, len(s.statuses))
	for c := range s.statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var b strings.Builder
	fmt.Fprintf(&b, "%d accepted;", len(s.accepted))
	for _, c := range codes {
		name := strconv.Itoa(c)
		if c == 0 {
			name = "no answer"
		}
		fmt.Fprintf(&b, " %s×%d", name, s.statuses[c])
	}
	return b.String()
}

// merged returns a submitter holding the accepted jobs of all of subs (the
// users of the first), for one accounting check over several phases.
func merged(subs ...*submitter) *submitter {
	out := newSubmitter(subs[0].name, subs[0].users, subs[0].urls)
	out.webhook = subs[0].webhook
	for _, x := range subs {
		x.mu.Lock()
		for id, u := range x.accepted {
			out.accepted[id] = u
		}
		x.mu.Unlock()
	}
	return out
}
