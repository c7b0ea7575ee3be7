package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// BacklogLevel is S3 at one backlog size.
type BacklogLevel struct {
	Queued      int64   // jobs waiting when measured
	UsedMemory  int64   // INFO memory used_memory then
	BytesPerJob float64 // (UsedMemory − empty) ÷ Queued
	FillRate    float64 // jobs/s of the in-process fill up to this level
	Submit      LoadStats
}

// KeyBytes is MEMORY USAGE of one of a queued job's keys.
type KeyBytes struct {
	What  string
	Key   string // with the job id replaced by <id>
	Bytes int64
}

// BacklogResult is figure S3.
type BacklogResult struct {
	PayloadBytes int
	// Through the api over HTTP: Redis bytes per job after APIJobs
	// submits, against the in-process fill's at the same count.
	APIJobs                     int
	APIBytesPerJob, APIFillRate float64
	DirectBytesAtAPIJobs        float64
	ListpackBytes               float64    // in process, with hash-max-listpack-value ListpackValue
	Keys                        []KeyBytes // one api-queued job's keys
	Empty                       int64      // used_memory of the empty Redis, api connected
	EmptySubmit                 LoadStats  // the submit window at an empty queue
	Levels                      []BacklogLevel
	Wanted                      []int // the levels asked for
	BudgetHit                   bool  // the fill budget ran out before the last level
	FillBudget                  time.Duration
	Drain                       *ProcDrain // one worker process draining DrainJobs
	DrainJobs                   int
	DrainFillRate               float64
}

// BacklogTarget is S3's bound: Redis bytes per queued job ≤ the task
// payload + this.
const BacklogTarget = 800

// RunBacklog measures figure S3.
//
//  1. Through the api (this process, HTTP, 32 clients): APIJobs submits
//     into an empty Redis; Redis bytes per job = the growth of INFO
//     memory's used_memory ÷ jobs, and MEMORY USAGE of one job's keys;
//     then the same count in process (below), to compare.
//  2. In process (DirectFiller: the api's quota.Reserve and
//     queue.Submit through the running app's Queue and Quota, no HTTP),
//     into an empty Redis, up to each level of BacklogLevels; at each,
//     used_memory, then a closed-loop window of api submits (8 clients,
//     HTTP) for the submit latency at that backlog. The fill stops at
//     the level reached when BacklogFillBudget runs out.
//  3. Time to drain: DrainJobs queued in process, drained by one worker
//     process (cmd/worker, concurrency 100, a claude-sim process at zero
//     latency).
func RunBacklog(ctx context.Context, e *Env, o *Options) (*BacklogResult, error) {
	so := o.ScaleOptions
	// Without its queue limit (CLAUDEQ_MAX_QUEUED_JOBS, 100,000 by
	// default), which would refuse every probe submit above it with 503:
	// this figure measures submits into a deep backlog.
	api, base, db, err := e.StartAPI(ctx, "backlog", "CLAUDEQ_MAX_QUEUED_JOBS", "0")
	if err != nil {
		return nil, err
	}
	defer func() { _ = StopApp(api) }()
	probe, err := e.ProbePayload(ctx, base)
	if err != nil {
		return nil, err
	}
	cfg, err := e.Config(db)
	if err != nil {
		return nil, err
	}
	f, err := NewDirectFiller(api, cfg, probe, nil)
	if err != nil {
		return nil, err
	}
	res := &BacklogResult{PayloadBytes: len(probe), APIJobs: so.BacklogAPIJobs, Wanted: so.BacklogLevels, FillBudget: so.BacklogFillBudget}

	// 1. Through the api.
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	m0, err := e.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	ids, fill, err := e.fillAPI(ctx, base, []string{e.Key}, so.BacklogAPIJobs)
	if err != nil {
		return nil, err
	}
	m1, err := e.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	res.APIFillRate = fill
	res.APIBytesPerJob = float64(m1-m0) / float64(len(ids))
	if len(ids) > 0 {
		id := ids[len(ids)/2]
		for _, k := range []KeyBytes{{What: "job state hash", Key: "cq:job:<id>"}, {What: "asynq task hash (the payload)", Key: "asynq:{default}:t:<id>"},
			{What: "budget reservation hash", Key: "cq:q:{q}:res:<id>"}} {
			k.Bytes, _ = e.RDB.MemoryUsage(ctx, strings.Replace(k.Key, "<id>", id, 1), 0).Result()
			res.Keys = append(res.Keys, k)
		}
	}
	o.logf("backlog: %d jobs through the api at %.0f/s: %.0f Redis bytes per job (payload %d B)", len(ids), fill, res.APIBytesPerJob, res.PayloadBytes)

	// The same count in process, to compare.
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	if m0, err = e.usedMemory(ctx); err != nil {
		return nil, err
	}
	if _, err := f.Fill(ctx, 64, 0, int64(so.BacklogAPIJobs), time.Time{}); err != nil {
		return nil, err
	}
	if m1, err = e.usedMemory(ctx); err != nil {
		return nil, err
	}
	res.DirectBytesAtAPIJobs = float64(m1-m0) / float64(so.BacklogAPIJobs)
	o.logf("backlog: %d jobs in process: %.0f Redis bytes per job", so.BacklogAPIJobs, res.DirectBytesAtAPIJobs)

	// The same again with Redis keeping hashes with values up to 1 KiB in
	// a listpack (its default is 64 bytes, which the task hash's payload
	// field exceeds): what a deployment can save with one setting.
	if res.ListpackBytes, err = e.listpackFill(ctx, f, so.BacklogAPIJobs); err != nil {
		return nil, err
	}
	o.logf("backlog: %d jobs in process, hash-max-listpack-value %d: %.0f Redis bytes per job", so.BacklogAPIJobs, ListpackValue, res.ListpackBytes)

	// 2. In process, level by level, from an empty queue (emptied again
	// after its submit-latency window).
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	e.settle(ctx, o)
	res.EmptySubmit = e.probeSubmit(ctx, o, base)
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	if res.Empty, err = e.usedMemory(ctx); err != nil {
		return nil, err
	}
	by := time.Now().Add(so.BacklogFillBudget)
	for _, level := range so.BacklogLevels {
		// No worker runs: the pending list is every job queued so far,
		// the probe windows' submits included.
		queued, err := e.RDB.LLen(ctx, pendingKey("default")).Result()
		if err != nil {
			return nil, err
		}
		if int64(level) <= queued {
			continue
		}
		t0 := time.Now()
		n, err := f.Fill(ctx, 64, queued, int64(level)-queued, by)
		if err != nil {
			return nil, fmt.Errorf("fill to %d: %w", level, err)
		}
		lv := BacklogLevel{FillRate: float64(n) / time.Since(t0).Seconds()}
		if lv.Queued, err = e.RDB.LLen(ctx, pendingKey("default")).Result(); err != nil {
			return nil, err
		}
		if lv.UsedMemory, err = e.usedMemory(ctx); err != nil {
			return nil, err
		}
		lv.BytesPerJob = float64(lv.UsedMemory-res.Empty) / float64(lv.Queued)
		e.settle(ctx, o)
		lv.Submit = e.probeSubmit(ctx, o, base)
		if lv.Submit.OK == 0 {
			return nil, fmt.Errorf("backlog: no probe submit succeeded with %d jobs queued: %s", lv.Queued, lv.Submit.FirstErr)
		}
		res.Levels = append(res.Levels, lv)
		o.logf("backlog: %d jobs queued in process at %.0f/s: used_memory %d MB, %.0f bytes per job; submit p50 %v p99 %v at %.0f req/s",
			lv.Queued, lv.FillRate, lv.UsedMemory>>20, lv.BytesPerJob, lv.Submit.P50, lv.Submit.P99, lv.Submit.RPS)
		if lv.Queued < int64(level) {
			res.BudgetHit = true
			o.logf("backlog: the fill budget (%v) ran out at %d jobs", so.BacklogFillBudget, lv.Queued)
			break
		}
	}

	// 3. Time to drain.
	if err := e.flushBig(ctx); err != nil {
		return nil, err
	}
	if so.BacklogDrainJobs > 0 {
		t0 := time.Now()
		n, err := f.Fill(ctx, 64, 0, int64(so.BacklogDrainJobs), time.Time{})
		if err != nil {
			return nil, err
		}
		res.DrainJobs, res.DrainFillRate = int(n), float64(n)/time.Since(t0).Seconds()
		bin, err := e.Binary(ctx, WorkerPkg)
		if err != nil {
			return nil, err
		}
		sim, err := e.StartSim(ctx, 0)
		if err != nil {
			return nil, err
		}
		defer sim.Stop(10 * time.Second)
		wdb, err := e.NewDB(ctx, "backlogdrain")
		if err != nil {
			return nil, err
		}
		env, err := e.WorkerEnv(wdb, Sims{sim})
		if err != nil {
			return nil, err
		}
		d, err := e.procDrain(ctx, o, "worker", bin, env, Sims{sim}, 1, res.DrainJobs, so.BacklogDrainBudget)
		if err != nil {
			return nil, err
		}
		d.System = "claudeq"
		if d.Persisted, err = e.countJobs(ctx, wdb); err != nil {
			return nil, err
		}
		if d.Persisted < int64(d.Done) {
			return nil, fmt.Errorf("drain: %d jobs done, %d persisted", d.Done, d.Persisted)
		}
		res.Drain = &d
		o.logf("backlog: drained %d of %d jobs in %v (%.0f jobs/s; quarters %.0f → %.0f)", d.Done, d.Jobs, d.Elapsed.Round(time.Millisecond),
			d.JobsPerSec, d.FirstQuarterRate, d.LastQuarterRate)
	}
	return res, e.Flush(ctx)
}

// ListpackValue is the hash-max-listpack-value of S3's variant.
const ListpackValue = 1024

// listpackFill measures Redis bytes per job of n jobs queued in process
// with hash-max-listpack-value at ListpackValue, and restores the setting.
func (e *Env) listpackFill(ctx context.Context, f *DirectFiller, n int) (float64, error) {
	old, err := e.RDB.ConfigGet(ctx, "hash-max-listpack-value").Result()
	if err != nil {
		return 0, err
	}
	prev, ok := old["hash-max-listpack-value"]
	if !ok {
		return 0, fmt.Errorf("CONFIG GET hash-max-listpack-value: %v", old)
	}
	defer e.RDB.ConfigSet(context.WithoutCancel(ctx), "hash-max-listpack-value", prev)
	if err := e.RDB.ConfigSet(ctx, "hash-max-listpack-value", strconv.Itoa(ListpackValue)).Err(); err != nil {
		return 0, err
	}
	if err := e.Flush(ctx); err != nil {
		return 0, err
	}
	m0, err := e.usedMemory(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := f.Fill(ctx, 64, 0, int64(n), time.Time{}); err != nil {
		return 0, err
	}
	m1, err := e.usedMemory(ctx)
	if err != nil {
		return 0, err
	}
	return float64(m1-m0) / float64(n), nil
}

// probeSubmit measures api submit latency: a closed loop of 8 clients
// for BacklogProbe after a 200 ms warm-up.
func (e *Env) probeSubmit(ctx context.Context, o *Options, base string) LoadStats {
	s := &Submitter{Client: NewHTTPClient(8), URL: base + "/api/claude/chat", Key: e.Key}
	defer s.Client.CloseIdleConnections()
	return ClosedLoop(ctx, 8, 200*time.Millisecond, o.BacklogProbe, e.usage, s.Call())
}

// flushBig empties a Redis that may hold millions of keys: FLUSHALL
// takes seconds then, longer than the env client's read timeout.
func (e *Env) flushBig(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: e.Redis.Addr, PoolSize: 1, ReadTimeout: 5 * time.Minute})
	defer c.Close()
	return c.FlushAll(ctx).Err()
}

// usedMemory returns INFO memory's used_memory less the memory of client
// connections (their query and reply buffers): the memory the data
// takes, including Redis's keyspace and expiry tables. A pool that opens
// more connections during a fill must not count as bytes per job.
func (e *Env) usedMemory(ctx context.Context) (int64, error) {
	info, err := e.RDB.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	var used, clients int64
	found := false
	for _, l := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "used_memory":
			used, found = n, true
		case "mem_clients_normal", "mem_clients_slaves":
			clients += n
		}
	}
	if !found {
		return 0, fmt.Errorf("INFO memory: no used_memory")
	}
	return used - clients, nil
}
