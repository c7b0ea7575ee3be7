package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/claudeq/claudeq/internal/app"
)

// GrowthCase is one row of figure S6.
type GrowthCase struct {
	Dim         string // what grew: base, users, nodes, concurrency, backlog
	Users       int    // API keys (of distinct users, ten per department) the jobs are spread over
	Nodes       int    // simulator processes in the worker's nodes file
	Concurrency int    // CLAUDEQ_WORKER_CONCURRENCY of the one worker process
	Backlog     int    // jobs queued when the worker starts
}

// DefaultGrowthCases are S6's rows: a base of jobs queued by one user, one
// upstream node, one worker process of concurrency 100; then each
// dimension grown 10× (users also 100×, concurrency also ÷10) with the
// others at base. S3 has the larger backlogs.
func DefaultGrowthCases(jobs int) []GrowthCase {
	b := GrowthCase{Dim: "base", Users: 1, Nodes: 1, Concurrency: 100, Backlog: jobs}
	with := func(dim string, f func(*GrowthCase)) GrowthCase {
		c := b
		c.Dim = dim
		f(&c)
		return c
	}
	return []GrowthCase{b,
		with("users", func(c *GrowthCase) { c.Users = 10 }),
		with("users", func(c *GrowthCase) { c.Users = 100 }),
		with("nodes", func(c *GrowthCase) { c.Nodes = 10 }),
		with("concurrency", func(c *GrowthCase) { c.Concurrency = 10 }),
		with("concurrency", func(c *GrowthCase) { c.Concurrency = 1000 }),
		with("backlog", func(c *GrowthCase) { c.Backlog = 10 * jobs }),
	}
}

// GrowthRow is one measured row of S6.
type GrowthRow struct {
	Case GrowthCase
	// The GrowthJobs submitted through the api (the rest of the backlog
	// was queued in process first): their rate, and the CPU of the bench
	// process (the api) and redis-server per job.
	SubmitJobs int
	SubmitRate float64
	SubmitCPU  time.Duration // per job
	RedisMem   int64         // used_memory with the backlog queued
	Drain      ProcDrain
}

// Parts returns the CPU seconds per 1,000 jobs of the worker process, the
// bench process (FerretDB), redis-server and the simulators while
// draining, and what each kept busy, in CPUs.
func (g GrowthRow) Parts() []GrowthPart {
	d := g.Drain
	el := d.Elapsed.Seconds()
	mk := func(name string, cpu time.Duration) GrowthPart {
		p := GrowthPart{Name: name}
		if d.Done > 0 {
			p.PerK = cpu.Seconds() * 1000 / float64(d.Done)
		}
		if el > 0 {
			p.Busy = cpu.Seconds() / el
		}
		return p
	}
	return []GrowthPart{mk("worker", d.WorkerCPU), mk("FerretDB", d.Use.Proc), mk("Redis", d.Use.Redis), mk("simulator", d.SimCPU)}
}

// GrowthPart is one process's share of a row.
type GrowthPart struct {
	Name string
	PerK float64 // CPU seconds per 1,000 jobs
	Busy float64 // CPUs
}

// Busiest returns the part that kept the most CPU busy.
func (g GrowthRow) Busiest() GrowthPart {
	var b GrowthPart
	for _, p := range g.Parts() {
		if p.Busy > b.Busy {
			b = p
		}
	}
	return b
}

// GrowthResult is figure S6.
type GrowthResult struct {
	Jobs   int
	Window time.Duration
	Rows   []GrowthRow
}

// RunGrowth measures figure S6. For each case: a fresh database with the
// case's users' API keys; the backlog beyond GrowthJobs queued in process
// (DirectFiller, spread over the users); GrowthJobs submitted through the
// api in this process (HTTP, 32 clients, spread over the users); then one
// worker process (cmd/worker) with the case's concurrency and nodes
// (claude-sim processes at zero latency, one nodes file) drains the
// queue, paused until it has registered, for at most GrowthWindow.
func RunGrowth(ctx context.Context, e *Env, o *Options) (*GrowthResult, error) {
	so := o.ScaleOptions
	bin, err := e.Binary(ctx, WorkerPkg)
	if err != nil {
		return nil, err
	}
	var sims Sims
	defer func() { sims.Stop() }()
	res := &GrowthResult{Jobs: so.GrowthJobs, Window: so.GrowthWindow}
	for _, c := range so.GrowthCases {
		for len(sims) < c.Nodes {
			s, err := e.StartSim(ctx, 0)
			if err != nil {
				return nil, err
			}
			sims = append(sims, s)
		}
		row, err := e.growthRow(ctx, o, bin, sims[:c.Nodes], c)
		if err != nil {
			return nil, fmt.Errorf("%s %+v: %w", c.Dim, c, err)
		}
		res.Rows = append(res.Rows, row)
		b := row.Busiest()
		o.logf("growth %-11s users %d nodes %d conc %d backlog %d: %.0f jobs/s drained (%d in %v), submit %.0f/s; CPU s/1k jobs: worker %.2f, FerretDB %.2f, redis %.2f, sim %.2f; worker RSS %d MB, redis %d MB; busiest %s %.2f CPUs",
			c.Dim, c.Users, c.Nodes, c.Concurrency, c.Backlog, row.Drain.JobsPerSec, row.Drain.Done, row.Drain.Elapsed.Round(time.Millisecond), row.SubmitRate,
			row.Parts()[0].PerK, row.Parts()[1].PerK, row.Parts()[2].PerK, row.Parts()[3].PerK, row.Drain.WorkerRSS>>20, row.RedisMem>>20, b.Name, b.Busy)
	}
	return res, e.Flush(ctx)
}

func (e *Env) growthRow(ctx context.Context, o *Options, bin string, sims Sims, c GrowthCase) (GrowthRow, error) {
	so := o.ScaleOptions
	row := GrowthRow{Case: c}
	if err := e.Flush(ctx); err != nil {
		return row, err
	}
	db, err := e.NewDB(ctx, "growth")
	if err != nil {
		return row, err
	}
	keys := []string{e.Key}
	var users []User
	if c.Users > 1 {
		if users, err = e.AddUsers(ctx, db, c.Users); err != nil {
			return row, err
		}
		keys = keys[:0]
		for _, u := range users {
			keys = append(keys, u.Key)
		}
	}
	api, err := e.StartApp(ctx, app.Roles{API: true}, db)
	if err != nil {
		return row, err
	}
	defer func() { _ = StopApp(api) }()
	base := "http://" + api.Addr()
	apiJobs := min(so.GrowthJobs, c.Backlog)
	if extra := c.Backlog - apiJobs; extra > 0 {
		probe, err := e.ProbePayload(ctx, base)
		if err != nil {
			return row, err
		}
		cfg, err := e.Config(db)
		if err != nil {
			return row, err
		}
		f, err := NewDirectFiller(api, cfg, probe, users)
		if err != nil {
			return row, err
		}
		if n, err := f.Fill(ctx, 64, 0, int64(extra), time.Time{}); err != nil || n != int64(extra) {
			return row, fmt.Errorf("backlog: %d of %d queued: %v", n, extra, err)
		}
	}
	e.settle(ctx, o)
	u0 := e.usage()
	_, rate, err := e.fillAPI(ctx, base, keys, apiJobs)
	if err != nil {
		return row, err
	}
	u := e.usage().sub(u0)
	row.SubmitJobs, row.SubmitRate, row.SubmitCPU = apiJobs, rate, (u.Proc+u.Redis)/time.Duration(apiJobs)
	if row.RedisMem, err = e.usedMemory(ctx); err != nil {
		return row, err
	}
	wdb, err := e.NewDB(ctx, "growthw")
	if err != nil {
		return row, err
	}
	env, err := e.WorkerEnv(wdb, sims, "CLAUDEQ_WORKER_CONCURRENCY", strconv.Itoa(c.Concurrency))
	if err != nil {
		return row, err
	}
	d, err := e.procDrain(ctx, o, "worker", bin, env, sims, 1, c.Backlog, so.GrowthWindow)
	if err != nil {
		return row, err
	}
	d.System = "claudeq"
	if d.Persisted, err = e.countJobs(ctx, wdb); err != nil {
		return row, err
	}
	if d.Persisted < int64(d.Done) {
		return row, fmt.Errorf("%d jobs done, %d persisted", d.Done, d.Persisted)
	}
	row.Drain = d
	return row, nil
}
