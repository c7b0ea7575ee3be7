package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Call is one request of a load generator; i numbers the calls from 1.
type Call func(ctx context.Context, i int64) error

// Usage is what a measurement window used: CPU time of this process, of
// redis-server and of the whole machine, and the commands Redis executed, by
// name (commands run by Lua scripts included, as INFO commandstats counts
// them).
type Usage struct {
	Proc, Redis, Machine time.Duration
	Cmds                 map[string]int64
}

// Others is the CPU time other processes of the machine used: the noise
// the measurement suffered from.
func (u Usage) Others() time.Duration { return max(0, u.Machine-u.Proc-u.Redis) }

// usage is a snapshot of the counters behind Usage.
func (e *Env) usage() Usage {
	u := Usage{Proc: selfCPU(), Redis: e.Redis.CPU(), Machine: machineCPU(), Cmds: map[string]int64{}}
	info, err := e.RDB.Info(context.Background(), "commandstats").Result()
	if err != nil {
		return u
	}
	for _, l := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				u.Cmds[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return u
}

func (u Usage) sub(v Usage) Usage {
	d := Usage{Proc: u.Proc - v.Proc, Redis: u.Redis - v.Redis, Machine: u.Machine - v.Machine, Cmds: map[string]int64{}}
	for k, n := range u.Cmds {
		if n -= v.Cmds[k]; n > 0 {
			d.Cmds[k] = n
		}
	}
	return d
}

// benchCmds are the commands the bench itself sends during a window (INFO
// for these counters, the drain poll's LLEN and ZCARD); PerOp leaves them out.
var benchCmds = map[string]bool{"info": true, "llen": true, "zcard": true}

// PerOp formats the Redis commands per operation: their total, then each,
// most frequent first, leaving out benchCmds and those below 0.05.
func (u Usage) PerOp(n int) string {
	if n == 0 {
		return ""
	}
	type kv struct {
		k string
		v float64
	}
	var kvs []kv
	for k, c := range u.Cmds {
		if benchCmds[k] {
			continue
		}
		if x := float64(c) / float64(n); x >= 0.05 {
			kvs = append(kvs, kv{k, x})
		}
	}
	slices.SortFunc(kvs, func(a, b kv) int {
		if a.v != b.v {
			return cmp.Compare(b.v, a.v)
		}
		return strings.Compare(a.k, b.k)
	})
	var parts []string
	total := 0.0
	for _, x := range kvs {
		parts = append(parts, fmt.Sprintf("%s %.1f", x.k, x.v))
		total += x.v
	}
	return fmt.Sprintf("%.1f: %s", total, strings.Join(parts, ", "))
}

// LoadStats is the outcome of a closed-loop measurement window.
type LoadStats struct {
	OK, Errors int
	FirstErr   string
	Elapsed    time.Duration
	RPS        float64
	P50, P99   time.Duration // response times of the successful calls
	Use        Usage         // used during the window
}

// ClosedLoop runs call from conc goroutines, each sending its next request
// when the previous one is answered: warmup first, then a measured window
// of dur. Calls that complete inside the window count.
func ClosedLoop(ctx context.Context, conc int, warmup, dur time.Duration, use func() Usage, call Call) LoadStats {
	const (
		warming = iota
		measuring
		stopping
	)
	var phase atomic.Int32
	var seq atomic.Int64
	type part struct {
		ok, errs int
		firstErr string
		lat      []time.Duration
	}
	parts := make([]part, conc)
	var wg sync.WaitGroup
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[g]
			for ctx.Err() == nil {
				ph := phase.Load()
				if ph == stopping {
					return
				}
				t0 := time.Now()
				err := call(ctx, seq.Add(1))
				d := time.Since(t0)
				if phase.Load() != measuring {
					continue
				}
				if err != nil {
					p.errs++
					if p.firstErr == "" {
						p.firstErr = err.Error()
					}
					continue
				}
				p.ok++
				p.lat = append(p.lat, d)
			}
		}()
	}
	sleep(ctx, warmup)
	c0, t0 := use(), time.Now()
	phase.Store(measuring)
	sleep(ctx, dur)
	phase.Store(stopping)
	el, c1 := time.Since(t0), use()
	wg.Wait()
	s := LoadStats{Elapsed: el, Use: c1.sub(c0)}
	var lat []time.Duration
	for _, p := range parts {
		s.OK += p.ok
		s.Errors += p.errs
		if s.FirstErr == "" {
			s.FirstErr = p.firstErr
		}
		lat = append(lat, p.lat...)
	}
	s.RPS = float64(s.OK) / el.Seconds()
	s.P50, s.P99 = Percentile(lat, 50), Percentile(lat, 99)
	return s
}

// Drive runs call total times from conc goroutines and returns the first
// error.
func Drive(ctx context.Context, conc, total int, call Call) error {
	var seq atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := seq.Add(1)
				if i > int64(total) || ctx.Err() != nil {
					return
				}
				if err := call(ctx, i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// OpenStats is the outcome of an open-loop run.
type OpenStats struct {
	Offered      float64 // the rate asked for, per second
	Sent, Errors int
	Dropped      int     // not sent because maxInFlight calls were outstanding
	Achieved     float64 // calls started per second
	FirstErr     string
	MaxLateness  time.Duration // how far the sender fell behind its schedule
}

// OpenLoop starts calls at a fixed rate for dur, each in its own goroutine,
// whatever the latency of the earlier ones (no coordinated omission), with
// at most maxInFlight outstanding.
func OpenLoop(ctx context.Context, rate float64, dur time.Duration, maxInFlight int, call Call) OpenStats {
	n := int(rate * dur.Seconds())
	s := OpenStats{Offered: rate}
	var inflight atomic.Int64
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			sleep(ctx, d)
		} else if -d > s.MaxLateness {
			s.MaxLateness = -d
		}
		if ctx.Err() != nil {
			break
		}
		if inflight.Load() >= int64(maxInFlight) {
			s.Dropped++
			continue
		}
		inflight.Add(1)
		s.Sent++
		wg.Add(1)
		go func(i int64) {
			defer wg.Done()
			defer inflight.Add(-1)
			if err := call(ctx, i); err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}(int64(i + 1))
	}
	el := time.Since(start)
	wg.Wait()
	s.Errors = int(errs.Load())
	if v, ok := firstErr.Load().(string); ok {
		s.FirstErr = v
	}
	s.Achieved = float64(s.Sent) / el.Seconds()
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Percentile returns the p-th percentile (nearest rank) of ds; it sorts ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// Median returns the median of xs (the mean of the middle two for an even
// count); it does not modify xs.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// NewHTTPClient returns the HTTP client every measurement uses: keep-alive,
// enough idle connections for conc clients, no compression, no proxy.
func NewHTTPClient(conc int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: max(conc, 2) * 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// ChatBody returns the body of the i-th chat request: a distinct prompt per
// request, so that the api's cache lookup is a miss and the job is queued.
func ChatBody(i int64) []byte {
	return fmt.Appendf(nil, `{"prompt":"Benchmark request %d: summarise the trade-offs of putting a queue in front of an LLM API, in three sentences.","model":"sonnet","max_tokens":256}`, i)
}

// Submitter posts chat bodies to url with the API key.
type Submitter struct {
	Client *http.Client
	URL    string // full URL of the chat endpoint
	Key    string
}

// Post sends body and expects 202 Accepted; it returns the response body.
func (s *Submitter) Post(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Key)
	resp, err := s.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("POST %s: %d %s", s.URL, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// Call returns a Call that posts ChatBody(i).
func (s *Submitter) Call() Call {
	return func(ctx context.Context, i int64) error {
		_, err := s.Post(ctx, ChatBody(i))
		return err
	}
}

// Submit posts ChatBody(i) and returns the job id.
func (s *Submitter) Submit(ctx context.Context, i int64) (string, error) {
	b, err := s.Post(ctx, ChatBody(i))
	if err != nil {
		return "", err
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("POST %s: no job id in %s", s.URL, b)
	}
	return r.ID, nil
}

// idList collects job ids from concurrent submitters.
type idList struct {
	mu  sync.Mutex
	ids []string
}

func (l *idList) add(id string) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
}

func (l *idList) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ids)
}
