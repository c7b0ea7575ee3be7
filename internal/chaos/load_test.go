//go:build chaos

package chaos

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/stretchr/testify/require"
)

// prober polls the api's health endpoint every 100 ms and keeps the
// latencies and the answers.
type prober struct {
	mu     sync.Mutex
	lat    *hdrhistogram.Histogram // µs
	codes  map[int]int             // 0: no answer within 5 s
	stop   chan struct{}
	done   chan struct{}
	health string
}

func startProber(url string) *prober {
	p := &prober{lat: hdrhistogram.New(1, 60_000_000, 3), codes: map[int]int{}, stop: make(chan struct{}), done: make(chan struct{}), health: url + "/api/claude/health"}
	client := &http.Client{Timeout: 5 * time.Second}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			t0 := time.Now()
			code := 0
			if resp, err := client.Get(p.health); err == nil {
				code = resp.StatusCode
				_ = resp.Body.Close()
			}
			p.mu.Lock()
			p.codes[code]++
			_ = p.lat.RecordValue(max(time.Since(t0).Microseconds(), 1))
			p.mu.Unlock()
		}
	}()
	return p
}

// end stops the prober and returns p50, p99 and max in ms, and the answers.
func (p *prober) end() (p50, p99, maxMS float64, codes map[int]int) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return float64(p.lat.ValueAtQuantile(50)) / 1000, float64(p.lat.ValueAtQuantile(99)) / 1000, float64(p.lat.Max()) / 1000, p.codes
}

// sampler reads the api's resident memory, goroutines and open files,
// Redis's used memory and the number of queued jobs every second, and keeps
// the peaks.
type sampler struct {
	mu                     sync.Mutex
	rss, gor, fds, redisMB float64
	backlog                int64
	stop, done             chan struct{}
}

func (c *cluster) startSampler(api *role) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	rdb := c.redis.Client(c.t)
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			rss, _ := api.metric("process_resident_memory_bytes")
			gor, _ := api.metric("go_goroutines")
			fds, _ := api.metric("process_open_fds")
			mem := redisUsedMB(rdb.Info(context.Background(), "memory").Val())
			backlog, _ := rdb.LLen(context.Background(), "asynq:{default}:pending").Result()
			s.mu.Lock()
			s.rss, s.gor, s.fds, s.redisMB = max(s.rss, rss/(1<<20)), max(s.gor, gor), max(s.fds, fds), max(s.redisMB, mem)
			s.backlog = max(s.backlog, backlog)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) end() *sampler {
	close(s.stop)
	<-s.done
	return s
}

func redisUsedMB(info string) float64 {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n / (1 << 20)
		}
	}
	return 0
}

// throughput is the rate at which the jobs of ids finished: their number
// over the time from the first start to the last finish.
func (c *cluster) throughput(ids []string) float64 {
	c.t.Helper()
	jobs, err := c.jobs(context.Background())
	require.NoError(c.t, err)
	var first, last time.Time
	n := 0
	for _, id := range ids {
		j := jobs[id]
		if j == nil || j.StartedAt == nil || j.FinishedAt == nil {
			continue
		}
		if first.IsZero() || j.StartedAt.Before(first) {
			first = *j.StartedAt
		}
		if j.FinishedAt.After(last) {
			last = *j.FinishedAt
		}
		n++
	}
	return float64(n) / last.Sub(first).Seconds()
}

// Scenario 8: submits at three times the sustainable rate for a while
// (15 s; a minute at full scale). The api sheds what the workers cannot
// take with 503 and Retry-After once the queue holds CLAUDEQ_MAX_QUEUED_JOBS
// jobs, its health endpoint keeps answering, memory stays bounded, and it
// recovers by itself.
func TestOverload(t *testing.T) {
	t.Parallel()
	const maxQueued = 300
	// Upstream calls of 1–1.5 s: the workers' capacity (20 at a time) is
	// low enough that the clients here can offer three times it even on a
	// loaded machine, where a faster upstream let the workers keep up.
	c := newCluster(t, clusterOptions{Sim: simOptions{Latency: time.Second, Jitter: 500 * time.Millisecond},
		Env: map[string]string{"CLAUDEQ_MAX_QUEUED_JOBS": strconv.Itoa(maxQueued)}})
	api := c.startAPI()
	c.startScheduler()
	c.startWorker(20)
	users := []user{c.user("alice", "research"), c.user("bob", "sales"), c.user("carol", "legal")}
	ctx := context.Background()

	// What the workers sustain: 20 at a time, 1–1.5 s each, nominally 16
	// jobs/s; measured with a backlog so that they never wait.
	probe := newSubmitter("overload-probe", users, c.apiURLs)
	probe.count(ctx, 400, 32)
	c.waitTerminal(probe.ids(), 2*time.Minute)
	rate := c.throughput(probe.ids())
	record(t, "sustainable rate", "%.0f jobs/s (one worker, 20 at a time, upstream 1–1.5 s)", rate)

	s := newSubmitter("overload", users, c.apiURLs)
	d := scaled(15*time.Second, time.Minute)
	health := startProber(api.URL())
	samples := c.startSampler(api)
	start := time.Now()
	// On a loaded machine the clients here may not reach three times the
	// rate at once: the overload goes on, a round at a time (four at
	// most), until the api has had to shed.
	rounds := 0
	for rounds < 4 && (rounds == 0 || s.answers()[http.StatusServiceUnavailable] == 0) {
		s.run(ctx, 3*rate, d, 1024)
		rounds++
	}
	d *= time.Duration(rounds)
	p50, p99, worst, codes := health.end()
	peak := samples.end()
	record(t, "overload", "%.0f submits/s for %v: %s", 3*rate, d, s.summary())
	record(t, "health endpoint during the overload", "p50 %.1f ms, p99 %.1f ms, max %.1f ms; answers %v", p50, p99, worst, codes)
	record(t, "peaks during the overload", "api RSS %.0f MiB, %.0f goroutines, %.0f open files; Redis %.1f MiB; %d jobs queued (limit %d)",
		peak.rss, peak.gor, peak.fds, peak.redisMB, peak.backlog, maxQueued)
	require.Equal(t, []int{http.StatusOK}, keys(codes), "the health endpoint answers throughout: %v", codes)
	shed := s.answers()[http.StatusServiceUnavailable]
	require.NotZero(t, shed, "the api sheds load: %s", s.summary())
	require.Zero(t, s.noRetryAfter, "every 503 carries Retry-After")
	require.Empty(t, s.unexpected)
	require.Subset(t, []int{http.StatusAccepted, http.StatusServiceUnavailable}, keys(s.answers()))
	require.LessOrEqual(t, peak.backlog, int64(maxQueued+64), "the queue stays near its limit")

	// It recovers by itself: the backlog drains and a normal load is
	// accepted again.
	c.waitTerminal(s.ids(), 5*time.Minute)
	record(t, "recovery", "backlog drained %.0f s after the overload ended", secs(c.lastFinish(s.ids()).Sub(start.Add(d))))
	after := newSubmitter("overload-after", users, c.apiURLs)
	after.run(ctx, rate/2, 5*time.Second, 64)
	require.Equal(t, []int{http.StatusAccepted}, keys(after.answers()), "after the overload: %s", after.summary())

	a := c.account(merged(probe, s, after), 5*time.Minute)
	c.requireRunning()
	record(t, "accounting", "%s", a)
}

// gauge is one resource's samples over a soak.
type gauge struct {
	name string
	vals []float64
}

// thirds returns the mean of the first and of the last third of the samples.
func (g *gauge) thirds() (first, last float64) {
	n := len(g.vals) / 3
	if n == 0 {
		return 0, 0
	}
	mean := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	return mean(g.vals[:n]), mean(g.vals[len(g.vals)-n:])
}

// redisInfo reads one numeric field of INFO.
func redisInfo(info, field string) float64 {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

// persistentKeys is the number of Redis keys without a TTL (INFO keyspace:
// keys minus expires).
func persistentKeys(info string) float64 {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "db0:"); ok {
			var keys, expires float64
			for _, kv := range strings.Split(v, ",") {
				k, x, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseFloat(x, 64)
				switch k {
				case "keys":
					keys = n
				case "expires":
					expires = n
				}
			}
			return keys - expires
		}
	}
	return 0
}

// Scenario 9: a soak at half the sustainable rate (60 s; 30 min at full
// scale): the api's and the worker's goroutines, resident memory and open
// files, Redis's clients and its keys that have neither a TTL nor a
// retention (finished jobs' state expires after CLAUDEQ_IDEMPOTENCY_TTL)
// stay flat — the mean of
// the last third of the samples is within a stated bound of the first
// third's.
func TestSoak(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Webhooks: true, Sim: simOptions{Latency: 200 * time.Millisecond, Jitter: 100 * time.Millisecond}})
	api := c.startAPI()
	c.startScheduler()
	w := c.startWorker(20)
	users := []user{c.user("alice", "research"), c.user("bob", "sales"), c.user("carol", "legal")}
	ctx := context.Background()

	probe := newSubmitter("soak-probe", users, c.apiURLs)
	probe.webhook = c.hooks.URL()
	probe.count(ctx, 400, 32)
	c.waitTerminal(probe.ids(), 2*time.Minute)
	rate := c.throughput(probe.ids()) / 2

	s := newSubmitter("soak", users, c.apiURLs)
	s.webhook = c.hooks.URL()
	d := scaled(time.Minute, 30*time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx, rate, d, 256)
	}()
	rdb := c.redis.Client(t)
	gauges := []*gauge{{name: "api goroutines"}, {name: "api RSS MiB"}, {name: "api open files"},
		{name: "worker goroutines"}, {name: "worker RSS MiB"}, {name: "worker open files"},
		{name: "Redis clients"}, {name: "Redis keys without TTL or retention"}, {name: "Redis MiB"}}
	every := scaled(2*time.Second, 10*time.Second)
	time.Sleep(5 * time.Second) // warm-up
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(every):
		}
		var vals []float64
		for _, r := range []*role{api, w} {
			gor, _ := r.metric("go_goroutines")
			rss, _ := r.metric("process_resident_memory_bytes")
			fds, _ := r.metric("process_open_fds")
			vals = append(vals, gor, rss/(1<<20), fds)
		}
		info := rdb.Info(ctx).Val()
		// Completed tasks kept for their retention (webhook deliveries,
		// 24 h) are hashes without a TTL that asynq's janitor deletes.
		var retained float64
		for _, q := range []string{"critical", "default", "webhooks", "batch"} {
			retained += float64(rdb.ZCard(ctx, "asynq:{"+q+"}:completed").Val())
		}
		vals = append(vals, redisInfo(info, "connected_clients"), persistentKeys(info)-retained, redisInfo(info, "used_memory")/(1<<20))
		for i, g := range gauges {
			g.vals = append(g.vals, vals[i])
		}
	}
	a := c.account(merged(s, probe), 5*time.Minute)
	c.requireRunning()
	record(t, "soak", "%.0f jobs/s (half the sustainable rate) for %v, %d samples: %s", rate, d, len(gauges[0].vals), s.summary())
	// Bounds: goroutines and open files may wobble with the load (+25 %
	// and +20); resident memory by the GC's pace (+50 %, +20 MiB); Redis
	// keeps a connection pool per process (+10) and a key without a TTL or
	// retention is state that would pile up (+20).
	bounds := map[string]func(first float64) float64{
		"api goroutines": func(f float64) float64 { return f*1.25 + 20 }, "worker goroutines": func(f float64) float64 { return f*1.25 + 20 },
		"api RSS MiB": func(f float64) float64 { return f*1.5 + 20 }, "worker RSS MiB": func(f float64) float64 { return f*1.5 + 20 },
		"api open files": func(f float64) float64 { return f + 20 }, "worker open files": func(f float64) float64 { return f + 20 },
		"Redis clients": func(f float64) float64 { return f + 10 }, "Redis keys without TTL or retention": func(f float64) float64 { return f + 20 },
	}
	for _, g := range gauges {
		first, last := g.thirds()
		b, ok := bounds[g.name]
		if !ok {
			record(t, g.name, "first third %.1f, last third %.1f (holds the TTL'd state of finished jobs: not bounded)", first, last)
			continue
		}
		record(t, g.name, "first third %.1f, last third %.1f (bound %.1f)", first, last, b(first))
		require.LessOrEqual(t, last, b(first), "%s grows: %v", g.name, g.vals)
	}
	record(t, "accounting", "%s", a)
}
