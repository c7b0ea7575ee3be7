package bench

import (
	"context"
	"fmt"
	"github.com/claudeq/claudeq/internal/claudeq"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/quota"
)

// MoneyResult is figure 6's Reserve+Settle part: closed-loop pairs of
// quota.Reserve then quota.Settle, and the floor, two no-op Lua calls (the
// two round trips a pair cannot avoid), one entry per repetition each.
type MoneyResult struct {
	Clients        int
	Users, Depts   int
	Amount, Actual claudeq.Micros
	Subject, Floor []LoadStats
}

// floorScript is the floor's Lua call: a round trip through EVALSHA that
// does nothing.
var floorScript = redis.NewScript(`return 0`)

// RunMoney measures Reserve+Settle pairs per second: o.MoneyClients
// goroutines, each reserving a fresh job's worst case against every
// budget (user, department, gateway daily and monthly, all configured at
// BudgetUSD so that none refuses) and then settling it to a lower actual
// cost, over a go-redis client configured like the app's, on this run's
// redis-server; against the same goroutines making two no-op EVALSHA
// calls. Redis is flushed before every run; the two alternate which goes
// first.
func RunMoney(ctx context.Context, e *Env, o *Options) (*MoneyResult, error) {
	cfg, err := e.Config("unused", BudgetSettings...)
	if err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(e.Redis.URL())
	if err != nil {
		return nil, err
	}
	opt.PoolSize = max(64, cfg.WorkerConcurrency+16)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	q, err := quota.New(rdb, quota.Options{UserDaily: claudeq.Micros(cfg.QuotaUserDaily), DepartmentDaily: claudeq.Micros(cfg.QuotaDepartmentDaily),
		TotalDaily: claudeq.Micros(cfg.QuotaTotalDaily), TotalMonthly: claudeq.Micros(cfg.QuotaTotalMonthly), Location: cfg.Timezone})
	if err != nil {
		return nil, err
	}
	if cfg.QuotaUserDaily == 0 || cfg.QuotaTotalMonthly == 0 {
		return nil, fmt.Errorf("BudgetSettings configured no budget: %+v", cfg.QuotaUserDaily)
	}
	// A sonnet call of 256 output tokens reserves about this much and
	// costs less.
	res := &MoneyResult{Clients: o.MoneyClients, Users: 16, Depts: 4, Amount: 4_000, Actual: 1_500}
	pair := func(run int) Call {
		return func(ctx context.Context, i int64) error {
			id := fmt.Sprintf("job_bench%d_%d", run, i)
			if err := q.Reserve(ctx, quota.Reservation{JobID: id, UserID: fmt.Sprintf("user%02d", i%int64(res.Users)),
				Department: fmt.Sprintf("dept%d", i%int64(res.Depts)), Amount: res.Amount}); err != nil {
				return err
			}
			return q.Settle(ctx, id, res.Actual)
		}
	}
	floor := func(ctx context.Context, _ int64) error {
		if err := floorScript.Run(ctx, rdb, []string{"bench:floor"}).Err(); err != nil {
			return err
		}
		return floorScript.Run(ctx, rdb, []string{"bench:floor"}).Err()
	}
	run := 0
	for rep := range o.Reps {
		for k := range 2 {
			subject := (rep+k)%2 == 0
			if err := e.Flush(ctx); err != nil {
				return nil, err
			}
			e.settle(ctx, o)
			run++
			call, name := pair(run), "reserve+settle"
			if !subject {
				call, name = floor, "floor"
			}
			st := ClosedLoop(ctx, o.MoneyClients, o.Warmup, o.MoneyDuration, e.usage, call)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if st.Errors > 0 {
				return nil, fmt.Errorf("%s: %d errors, the first: %s", name, st.Errors, st.FirstErr)
			}
			if subject {
				res.Subject = append(res.Subject, st)
			} else {
				res.Floor = append(res.Floor, st)
			}
			o.logf("money rep %d/%d %-14s %8.0f pairs/s  p50 %v p99 %v", rep+1, o.Reps, name, st.RPS, st.P50, st.P99)
		}
	}
	return res, e.Flush(ctx)
}
