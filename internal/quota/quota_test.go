package quota

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin without relying on the host's zoneinfo

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redistest"
)

// clock is an injectable clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var berlin = func() *time.Location {
	l, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		panic(err)
	}
	return l
}()

// at returns a local time next year: counters expire with EXPIREAT on the
// Redis server's real clock, so test days must lie in the future.
func at(month time.Month, day, h, m, s int) time.Time {
	return time.Date(time.Now().Year()+1, month, day, h, m, s, 0, berlin)
}

type testBundle struct {
	q     *Quota
	rdb   *redis.Client
	srv   *redistest.Server
	clock *clock
}

func setup(t testing.TB, opts Options) *testBundle {
	t.Helper()
	srv := redistest.New(t)
	rdb := srv.Client(t)
	c := &clock{t: at(3, 10, 12, 0, 0)}
	opts.Now = c.Now
	if opts.Location == nil {
		opts.Location = berlin
	}
	q, err := New(rdb, opts)
	require.NoError(t, err)
	return &testBundle{q: q, rdb: rdb, srv: srv, clock: c}
}

// status returns the budgets of user/dept keyed "scope/period".
func (b *testBundle) status(t *testing.T, user, dept string) map[string]ScopeStatus {
	t.Helper()
	st, err := b.q.Status(context.Background(), user, dept)
	require.NoError(t, err)
	out := map[string]ScopeStatus{}
	for _, s := range st {
		out[string(s.Scope)+"/"+string(s.Period)] = s
	}
	return out
}

// counts returns spent and reserved of the four scopes of u1/eng.
func (b *testBundle) counts(t *testing.T) map[string][2]claudeq.Micros {
	t.Helper()
	out := map[string][2]claudeq.Micros{}
	for k, s := range b.status(t, "u1", "eng") {
		out[k] = [2]claudeq.Micros{s.Spent, s.Reserved}
	}
	return out
}

func all(spent, reserved claudeq.Micros) map[string][2]claudeq.Micros {
	v := [2]claudeq.Micros{spent, reserved}
	return map[string][2]claudeq.Micros{"user/daily": v, "department/daily": v, "total/daily": v, "total/monthly": v}
}

func TestReserveSettleRelease(t *testing.T) {
	t.Parallel()
	type step struct {
		op     string // reserve, settle, release
		job    string
		amount claudeq.Micros
	}
	tests := []struct {
		name  string
		steps []step
		want  map[string][2]claudeq.Micros // spent, reserved per scope
	}{
		{name: "reserve holds on every scope", steps: []step{{"reserve", "j1", 500}}, want: all(0, 500)},
		{name: "settle moves reserved to spent at the actual cost", steps: []step{{"reserve", "j1", 500}, {"settle", "j1", 320}}, want: all(320, 0)},
		{name: "settle above the reservation books the real cost", steps: []step{{"reserve", "j1", 500}, {"settle", "j1", 700}}, want: all(700, 0)},
		{name: "release gives it back", steps: []step{{"reserve", "j1", 500}, {"release", "j1", 0}}, want: all(0, 0)},
		{name: "two jobs", steps: []step{{"reserve", "j1", 500}, {"reserve", "j2", 300}, {"settle", "j2", 100}}, want: all(100, 500)},
		{name: "repeated reserve is one hold", steps: []step{{"reserve", "j1", 500}, {"reserve", "j1", 500}, {"reserve", "j1", 900}}, want: all(0, 500)},
		{name: "repeated settle books once", steps: []step{{"reserve", "j1", 500}, {"settle", "j1", 400}, {"settle", "j1", 400}, {"settle", "j1", 450}}, want: all(400, 0)},
		{name: "release after settle changes nothing", steps: []step{{"reserve", "j1", 500}, {"settle", "j1", 400}, {"release", "j1", 0}}, want: all(400, 0)},
		{name: "repeated release", steps: []step{{"reserve", "j1", 500}, {"release", "j1", 0}, {"release", "j1", 0}}, want: all(0, 0)},
		{name: "reserve after settle does not hold again", steps: []step{{"reserve", "j1", 500}, {"settle", "j1", 400}, {"reserve", "j1", 500}}, want: all(400, 0)},
		{name: "reserve after release does not hold again", steps: []step{{"reserve", "j1", 500}, {"release", "j1", 0}, {"reserve", "j1", 500}}, want: all(0, 0)},
		{name: "settle after release books the real cost once", steps: []step{{"reserve", "j1", 500}, {"release", "j1", 0}, {"settle", "j1", 200}, {"settle", "j1", 200}}, want: all(200, 0)},
		{name: "settle and release without reservation are no-ops", steps: []step{{"settle", "j9", 100}, {"release", "j9", 0}}, want: all(0, 0)},
		{name: "zero-cost reservation", steps: []step{{"reserve", "j1", 0}, {"settle", "j1", 0}}, want: all(0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Options{UserDaily: 10_000, DepartmentDaily: 10_000, TotalDaily: 10_000, TotalMonthly: 10_000})
			ctx := context.Background()
			for _, s := range tt.steps {
				var err error
				switch s.op {
				case "reserve":
					err = b.q.Reserve(ctx, Reservation{JobID: s.job, UserID: "u1", Department: "eng", Amount: s.amount})
				case "settle":
					err = b.q.Settle(ctx, s.job, s.amount)
				case "release":
					err = b.q.Release(ctx, s.job)
				}
				require.NoError(t, err, "%s %s", s.op, s.job)
			}
			require.Equal(t, tt.want, b.counts(t))
		})
	}
}

func TestConcurrentSettleOfOneJobBooksOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "u1", Department: "eng", Amount: 1000}))
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch i % 3 {
			case 0:
				err = b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "u1", Department: "eng", Amount: 1000})
			default:
				err = b.q.Settle(ctx, "j", 750)
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, all(750, 0), b.counts(t))
	h, err := b.q.Hold(ctx, "j")
	require.NoError(t, err)
	require.Equal(t, StateSettled, h.State)
	require.Equal(t, claudeq.Micros(750), h.Actual)
}

func TestReserveRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     Options
		override func(ctx context.Context, q *Quota) error
		pre      claudeq.Micros // settled before, for u1/eng
		amount   claudeq.Micros
		scope    Scope
		period   Period
		id       string
		limit    claudeq.Micros
		left     claudeq.Micros
		resets   time.Time
		msg      string
	}{
		{name: "user daily", opts: Options{UserDaily: 1000, DepartmentDaily: 5000, TotalDaily: 5000, TotalMonthly: 5000},
			pre: 800, amount: 300, scope: ScopeUser, period: PeriodDaily, id: "u1", limit: 1000, left: 200, resets: at(3, 11, 0, 0, 0),
			msg: "daily budget of user u1 exhausted: limit $0.001, spent $0.0008, reserved by running jobs $0.00, left $0.0002; this request may cost up to $0.0003; resets at "},
		{name: "department daily", opts: Options{UserDaily: 5000, DepartmentDaily: 1000, TotalDaily: 5000, TotalMonthly: 5000},
			pre: 800, amount: 300, scope: ScopeDepartment, period: PeriodDaily, id: "eng", limit: 1000, left: 200, resets: at(3, 11, 0, 0, 0),
			msg: "daily budget of department eng exhausted"},
		{name: "total daily", opts: Options{TotalDaily: 1000},
			pre: 800, amount: 300, scope: ScopeTotal, period: PeriodDaily, id: TotalID, limit: 1000, left: 200, resets: at(3, 11, 0, 0, 0),
			msg: "daily budget of the gateway exhausted"},
		{name: "total monthly", opts: Options{TotalMonthly: 1000},
			pre: 800, amount: 300, scope: ScopeTotal, period: PeriodMonthly, id: TotalID, limit: 1000, left: 200, resets: at(4, 1, 0, 0, 0),
			msg: "monthly budget of the gateway exhausted"},
		{name: "user override below the default", opts: Options{UserDaily: 1_000_000},
			override: func(ctx context.Context, q *Quota) error { return q.SetLimit(ctx, ScopeUser, "u1", 900) },
			pre:      800, amount: 300, scope: ScopeUser, period: PeriodDaily, id: "u1", limit: 900, left: 100, resets: at(3, 11, 0, 0, 0)},
		{name: "monthly override", opts: Options{},
			override: func(ctx context.Context, q *Quota) error { return q.SetMonthlyLimit(ctx, 1000) },
			pre:      800, amount: 201, scope: ScopeTotal, period: PeriodMonthly, id: TotalID, limit: 1000, left: 200, resets: at(4, 1, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.opts)
			ctx := context.Background()
			if tt.override != nil {
				require.NoError(t, tt.override(ctx, b.q))
			}
			require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "pre", UserID: "u1", Department: "eng", Amount: tt.pre}))
			require.NoError(t, b.q.Settle(ctx, "pre", tt.pre))
			before := b.counts(t)

			err := b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "u1", Department: "eng", Amount: tt.amount})
			require.Error(t, err)
			require.Equal(t, claudeq.KindQuotaExceeded, claudeq.ErrorKind(err))
			var ex *Exceeded
			require.ErrorAs(t, err, &ex)
			require.Equal(t, Exceeded{Scope: tt.scope, Period: tt.period, ID: tt.id, Limit: tt.limit, Spent: tt.pre, Left: tt.left, Needed: tt.amount, ResetsAt: tt.resets}, *ex)
			require.Contains(t, claudeq.ErrorMessage(err), tt.msg)
			require.Contains(t, claudeq.ErrorMessage(err), tt.resets.Format(time.RFC3339))
			require.Equal(t, tt.resets.Sub(b.clock.Now()), claudeq.RetryAfter(err))

			// All or nothing: the refused reservation touched no counter.
			require.Equal(t, before, b.counts(t))
			_, err = b.q.Hold(ctx, "j")
			require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))

			// Exactly what is left still fits.
			require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "k", UserID: "u1", Department: "eng", Amount: tt.left}))
		})
	}
}

func TestReserveInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	tests := []struct {
		name string
		r    Reservation
	}{
		{name: "no job id", r: Reservation{UserID: "u", Amount: 1}},
		{name: "no user", r: Reservation{JobID: "j", Amount: 1}},
		{name: "negative amount", r: Reservation{JobID: "j", UserID: "u", Amount: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(b.q.Reserve(ctx, tt.r)))
		})
	}
	require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(b.q.Settle(ctx, "j", -1)))
}

// TestBudgetsNeverExceededUnderConcurrency: 10,000 reservations from 200
// goroutines, random amounts, random settles (at most the reservation) and
// releases, while a watcher samples spent+reserved of every scope: no
// sample may exceed its cap, and at the end spent equals the sum of the
// settled amounts exactly.
func TestBudgetsNeverExceededUnderConcurrency(t *testing.T) {
	t.Parallel()
	const (
		goroutines = 200
		perG       = 50
		users      = 20
		depts      = 4
	)
	tests := []struct {
		name         string
		opts         Options
		monthPrefill claudeq.Micros // settled on an earlier day of the month
		monthlyCap   claudeq.Micros
		mustRefuse   []string // scopes that must have refused at least once
	}{
		{name: "daily caps bind", opts: Options{UserDaily: 60_000, DepartmentDaily: 200_000, TotalDaily: 500_000},
			mustRefuse: []string{"user/daily", "department/daily", "total/daily"}},
		{name: "monthly cap binds", opts: Options{UserDaily: 60_000, DepartmentDaily: 200_000, TotalDaily: 500_000},
			monthPrefill: 700_000, monthlyCap: 1_000_000, mustRefuse: []string{"user/daily", "department/daily", "total/monthly"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.opts)
			ctx := context.Background()
			// Overrides make one user and one department bind early.
			require.NoError(t, b.q.SetLimit(ctx, ScopeUser, "u0", 10_000))
			require.NoError(t, b.q.SetLimit(ctx, ScopeDepartment, "d1", 30_000))
			userCap := func(u string) claudeq.Micros {
				if u == "u0" {
					return 10_000
				}
				return tt.opts.UserDaily
			}
			deptCap := func(d string) claudeq.Micros {
				if d == "d1" {
					return 30_000
				}
				return tt.opts.DepartmentDaily
			}
			if tt.monthlyCap > 0 {
				require.NoError(t, b.q.SetMonthlyLimit(ctx, tt.monthlyCap))
				// Spend on two earlier days of the month, through the normal path.
				require.NoError(t, b.q.SetLimit(ctx, ScopeUser, "old", 0))
				now := b.clock.Now()
				for i := range 2 {
					b.clock.Set(now.AddDate(0, 0, -3+i))
					job := "prefill" + strconv.Itoa(i)
					require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: job, UserID: "old", Amount: tt.monthPrefill / 2}))
					require.NoError(t, b.q.Settle(ctx, job, tt.monthPrefill/2))
				}
				b.clock.Set(now)
			}
			day, month := b.q.Day(b.clock.Now()), b.clock.Now().Format("2006-01")
			type watched struct {
				key string
				cap claudeq.Micros
			}
			var w []watched
			for u := range users {
				id := "u" + strconv.Itoa(u)
				w = append(w, watched{b.q.userKey(day, id), userCap(id)})
			}
			for d := range depts {
				id := "d" + strconv.Itoa(d)
				w = append(w, watched{b.q.deptKey(day, id), deptCap(id)})
			}
			w = append(w, watched{b.q.totalKey(day), tt.opts.TotalDaily})
			if tt.monthlyCap > 0 {
				w = append(w, watched{b.q.monthKey(month), tt.monthlyCap})
			}

			// The watcher: samples every scope continuously.
			stop := make(chan struct{})
			var samples, overshoot, negative atomic.Int64
			watcherDone := make(chan struct{})
			go func() {
				defer close(watcherDone)
				for {
					select {
					case <-stop:
						return
					default:
					}
					cmds, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
						for _, x := range w {
							p.HMGet(ctx, x.key, "s", "r")
						}
						return nil
					})
					if err != nil {
						t.Error(err)
						return
					}
					for i, c := range cmds {
						v := c.(*redis.SliceCmd).Val()
						s, r := micros(v[0]), micros(v[1])
						if over := s + r - w[i].cap; over > 0 && over > claudeq.Micros(overshoot.Load()) {
							overshoot.Store(int64(over))
						}
						if r < 0 {
							negative.Add(1)
						}
					}
					samples.Add(1)
				}
			}()

			var (
				mu      sync.Mutex
				settled = map[string]claudeq.Micros{} // watched key → sum of settled actuals
				refused = map[string]int{}
				okCount atomic.Int64
			)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 7))
					for i := range perG {
						u := r.IntN(users)
						user, dept := "u"+strconv.Itoa(u), "d"+strconv.Itoa(u%depts)
						job := fmt.Sprintf("g%d-%d", g, i)
						amount := claudeq.Micros(1 + r.IntN(5000))
						err := b.q.Reserve(ctx, Reservation{JobID: job, UserID: user, Department: dept, Amount: amount})
						if err != nil {
							var ex *Exceeded
							if !errors.As(err, &ex) {
								t.Error(err)
								return
							}
							mu.Lock()
							refused[string(ex.Scope)+"/"+string(ex.Period)]++
							mu.Unlock()
							continue
						}
						okCount.Add(1)
						if r.IntN(3) == 0 {
							if err := b.q.Release(ctx, job); err != nil {
								t.Error(err)
								return
							}
							continue
						}
						actual := claudeq.Micros(r.Int64N(int64(amount) + 1))
						if err := b.q.Settle(ctx, job, actual); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						settled[b.q.userKey(day, user)] += actual
						settled[b.q.deptKey(day, dept)] += actual
						settled[b.q.totalKey(day)] += actual
						settled[b.q.monthKey(month)] += actual
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			close(stop)
			<-watcherDone

			t.Logf("reservations granted %d, refused %v, watcher samples %d", okCount.Load(), refused, samples.Load())
			require.Zero(t, overshoot.Load(), "spent+reserved exceeded a cap")
			require.Zero(t, negative.Load(), "a reserved counter went negative")
			require.Greater(t, samples.Load(), int64(10), "the watcher must have sampled during the run")
			for _, s := range tt.mustRefuse {
				require.Positive(t, refused[s], "scope %s never refused: the test did not exercise its cap", s)
			}
			settled[b.q.monthKey(month)] += tt.monthPrefill
			for _, x := range w {
				v, err := b.rdb.HMGet(ctx, x.key, "s", "r").Result()
				require.NoError(t, err)
				require.Equal(t, settled[x.key], micros(v[0]), "spent of %s", x.key)
				require.Equal(t, claudeq.Micros(0), micros(v[1]), "reserved of %s", x.key)
			}
			stale, err := b.q.Stale(ctx, 0)
			require.NoError(t, err)
			require.Empty(t, stale)
		})
	}
}

func TestMidnight(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		reserveAt       time.Time
		settleAt        time.Time
		firstMonthSpent claudeq.Micros // monthly spent seen on the second day
	}{
		{name: "within a month", reserveAt: at(3, 10, 23, 59, 59), settleAt: at(3, 11, 0, 0, 1), firstMonthSpent: 700},
		{name: "across a month", reserveAt: at(3, 31, 23, 59, 59), settleAt: at(4, 1, 0, 0, 1), firstMonthSpent: 0},
		{name: "across the DST change (25-hour day)", reserveAt: at(10, 25, 23, 59, 59), settleAt: at(10, 26, 0, 0, 1), firstMonthSpent: 700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Options{UserDaily: 1000})
			ctx := context.Background()
			b.clock.Set(tt.reserveAt)
			require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "u1", Department: "eng", Amount: 900}))
			require.Equal(t, tt.settleAt.Add(-time.Second), b.q.ResetsAt(tt.reserveAt))

			b.clock.Set(tt.settleAt)
			// The new day starts empty without any reset call.
			st := b.status(t, "u1", "eng")
			require.Equal(t, ScopeStatus{Scope: ScopeUser, Period: PeriodDaily, ID: "u1", Limit: 1000, Left: 1000, ResetsAt: tt.settleAt.Add(24*time.Hour - time.Second)}, st["user/daily"])
			require.NoError(t, b.q.Settle(ctx, "j", 700))

			// Spent landed on the day of the reservation...
			h, err := b.q.Hold(ctx, "j")
			require.NoError(t, err)
			require.Equal(t, b.q.Day(tt.reserveAt), h.Day)
			v, err := b.rdb.HMGet(ctx, b.q.userKey(b.q.Day(tt.reserveAt), "u1"), "s", "r").Result()
			require.NoError(t, err)
			require.Equal(t, []claudeq.Micros{700, 0}, []claudeq.Micros{micros(v[0]), micros(v[1])})
			// ...and the new day still starts at 0, with its whole budget.
			st = b.status(t, "u1", "eng")
			require.Equal(t, claudeq.Micros(0), st["user/daily"].Spent)
			require.Equal(t, claudeq.Micros(0), st["total/daily"].Spent)
			require.Equal(t, claudeq.Micros(1000), st["user/daily"].Left)
			require.Equal(t, tt.firstMonthSpent, st["total/monthly"].Spent)
			require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "k", UserID: "u1", Amount: 1000}))
		})
	}
}

// TestNoResetHook: the daily reset is the date changing, so two schedulers
// cannot reset twice. Both see the same ResetsAt, and a day that is over
// keeps its counters (for Settle and Rebuild) while the new one starts at 0.
func TestNoResetHook(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{UserDaily: 1000})
	ctx := context.Background()
	b.clock.Set(at(6, 1, 22, 0, 0))
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "a", UserID: "u1", Amount: 600}))
	require.NoError(t, b.q.Settle(ctx, "a", 600))
	other, err := New(b.rdb, Options{UserDaily: 1000, Location: berlin, Now: b.clock.Now})
	require.NoError(t, err)
	require.Equal(t, b.q.ResetsAt(b.clock.Now()), other.ResetsAt(b.clock.Now()))
	require.Equal(t, at(6, 2, 0, 0, 0), other.ResetsAt(b.clock.Now()))

	b.clock.Set(at(6, 2, 0, 0, 0))
	for _, q := range []*Quota{b.q, other} {
		st, err := q.Status(ctx, "u1", "")
		require.NoError(t, err)
		require.Equal(t, claudeq.Micros(0), st[0].Spent)
	}
	// The finished day keeps its counters.
	v, err := b.rdb.HGet(ctx, b.q.userKey(b.q.Day(at(6, 1, 22, 0, 0)), "u1"), "s").Result()
	require.NoError(t, err)
	require.Equal(t, "600", v)
}

func TestKeysExpire(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{Retention: 48 * time.Hour, DoneTTL: 10 * time.Minute})
	ctx := context.Background()
	now := b.clock.Now()
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "u1", Department: "eng", Amount: 5}))
	day := b.q.Day(now)
	dayExp := b.q.ResetsAt(now).Add(48 * time.Hour).Unix()
	monthExp := b.q.MonthResetsAt(now).Add(48 * time.Hour).Unix()
	tests := []struct {
		name string
		key  string
		want int64
	}{
		{name: "user", key: b.q.userKey(day, "u1"), want: dayExp},
		{name: "department", key: b.q.deptKey(day, "eng"), want: dayExp},
		{name: "total", key: b.q.totalKey(day), want: dayExp},
		{name: "month", key: b.q.monthKey(now.Format("2006-01")), want: monthExp},
		{name: "index", key: b.q.indexKey(day), want: dayExp},
		{name: "reservation", key: b.q.resKey("j"), want: dayExp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.rdb.Do(ctx, "EXPIRETIME", tt.key).Int64()
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	require.NoError(t, b.q.Settle(ctx, "j", 5))
	ttl, err := b.rdb.TTL(ctx, b.q.resKey("j")).Result()
	require.NoError(t, err)
	require.InDelta(t, (10 * time.Minute).Seconds(), ttl.Seconds(), 5)
}

// TestCountersAlwaysExpire: the scripts set a counter's expiry only when
// they create it, so every path that can create one must set it — a
// counter without expiry would live forever.
func TestCountersAlwaysExpire(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{Retention: 48 * time.Hour})
	ctx := context.Background()
	now := b.clock.Now()
	day := b.q.Day(now)
	dayExp := b.q.ResetsAt(now).Add(48 * time.Hour).Unix()
	monthExp := b.q.MonthResetsAt(now).Add(48 * time.Hour).Unix()
	counters := func(user, dept string) map[string]int64 {
		return map[string]int64{
			b.q.userKey(day, user): dayExp, b.q.deptKey(day, dept): dayExp,
			b.q.totalKey(day): dayExp, b.q.monthKey(now.Format("2006-01")): monthExp,
		}
	}
	expiries := func(t *testing.T, keys map[string]int64) {
		t.Helper()
		for k, want := range keys {
			got, err := b.rdb.Do(ctx, "EXPIRETIME", k).Int64()
			require.NoError(t, err)
			require.Equal(t, want, got, k)
		}
	}
	reserve := func(job, user, dept string) {
		require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: job, UserID: user, Department: dept, Amount: 5}))
	}

	reserve("j1", "u1", "eng")
	reserve("j2", "u2", "ops") // new user and department on a day whose totals exist
	expiries(t, counters("u2", "ops"))
	members, err := b.rdb.SMembers(ctx, b.q.indexKey(day)).Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{b.q.userKey(day, "u1"), b.q.deptKey(day, "eng"), b.q.userKey(day, "u2"), b.q.deptKey(day, "ops")}, members,
		"a user first seen after the day began is in the day's index")

	// The counters vanish under held reservations (evicted, or expired
	// before a very late settle): settling and releasing recreate them with
	// their expiry.
	for k := range counters("u1", "eng") {
		require.NoError(t, b.rdb.Del(ctx, k).Err())
	}
	require.NoError(t, b.q.Settle(ctx, "j1", 3))
	expiries(t, counters("u1", "eng"))
	// Their reserved amounts are 0, not below: a later reservation counts
	// in full against the limit.
	reserve("j5", "u1", "eng")
	st := b.status(t, "u1", "eng")
	require.Equal(t, claudeq.Micros(5), st["user/daily"].Reserved, "not 5 less: the vanished counter's reserved amount was not left at -5")
	require.Equal(t, claudeq.Micros(5), st["department/daily"].Reserved)
	require.NoError(t, b.q.Release(ctx, "j5"))
	for k := range counters("u2", "ops") {
		require.NoError(t, b.rdb.Del(ctx, k).Err())
	}
	require.NoError(t, b.q.Release(ctx, "j2"))
	expiries(t, counters("u2", "ops"))
	require.Equal(t, claudeq.Micros(0), b.status(t, "u2", "ops")["user/daily"].Reserved)

	// A settle after a release books spent on counters that may be gone.
	reserve("j3", "u3", "eng")
	require.NoError(t, b.q.Release(ctx, "j3"))
	require.NoError(t, b.rdb.Del(ctx, b.q.userKey(day, "u3")).Err())
	require.NoError(t, b.q.Settle(ctx, "j3", 2))
	expiries(t, map[string]int64{b.q.userKey(day, "u3"): dayExp})
	st = b.status(t, "u3", "eng")
	require.Equal(t, claudeq.Micros(2), st["user/daily"].Spent)

	// A part of a shared reservation (a batch request) too, and after the
	// whole reservation was released.
	reserve("batch", "u4", "eng")
	require.NoError(t, b.rdb.Del(ctx, b.q.userKey(day, "u4")).Err())
	require.NoError(t, b.q.SettlePart(ctx, "batch", "item1", 2, 1))
	expiries(t, map[string]int64{b.q.userKey(day, "u4"): dayExp})
	require.Equal(t, claudeq.Micros(0), b.status(t, "u4", "eng")["user/daily"].Reserved, "0, not -2")
	require.NoError(t, b.q.Release(ctx, "batch"))
	require.NoError(t, b.rdb.Del(ctx, b.q.userKey(day, "u4")).Err())
	require.NoError(t, b.q.SettlePart(ctx, "batch", "item2", 2, 1))
	expiries(t, map[string]int64{b.q.userKey(day, "u4"): dayExp})
}

func TestRedisDownFailsClosed(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{UserDaily: 1000})
	ctx := context.Background()
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "before", UserID: "u1", Amount: 10}))
	b.srv.Kill()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tests := []struct {
		name string
		call func() error
	}{
		{name: "reserve", call: func() error {
			return b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "u1", Amount: 10})
		}},
		{name: "settle", call: func() error { return b.q.Settle(ctx, "before", 10) }},
		{name: "release", call: func() error { return b.q.Release(ctx, "before") }},
		{name: "status", call: func() error { _, err := b.q.Status(ctx, "u1", ""); return err }},
		{name: "stale", call: func() error { _, err := b.q.Stale(ctx, time.Minute); return err }},
		{name: "count request", call: func() error { return b.q.CountRequest(ctx, "k", 5) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.Error(t, err)
			require.Equal(t, claudeq.KindUnavailable, claudeq.ErrorKind(err))
			var ex *Exceeded
			require.False(t, errors.As(err, &ex))
		})
	}
}

func TestHoldAndStale(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	start := b.clock.Now()
	for i, job := range []string{"a", "b", "c", "d"} {
		b.clock.Set(start.Add(time.Duration(i) * time.Minute))
		require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: job, UserID: "u1", Department: "eng", Amount: claudeq.Micros(100 * (i + 1))}))
	}
	require.NoError(t, b.q.Settle(ctx, "a", 50))
	require.NoError(t, b.q.Release(ctx, "c"))
	b.clock.Set(start.Add(10 * time.Minute))

	tests := []struct {
		name      string
		olderThan time.Duration
		want      []string
	}{
		{name: "all held", olderThan: 0, want: []string{"b", "d"}},
		{name: "older than 8m", olderThan: 8 * time.Minute, want: []string{"b"}},
		{name: "older than 9m", olderThan: 9*time.Minute + time.Second, want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.q.Stale(ctx, tt.olderThan)
			require.NoError(t, err)
			require.ElementsMatch(t, tt.want, got)
		})
	}
	h, err := b.q.Hold(ctx, "b")
	require.NoError(t, err)
	require.Equal(t, Hold{JobID: "b", UserID: "u1", Department: "eng", Day: b.q.Day(start), Amount: 200, State: StateHeld,
		At: start.Add(time.Minute)}, h)
	_, err = b.q.Hold(ctx, "zzz")
	require.Equal(t, claudeq.KindNotFound, claudeq.ErrorKind(err))
}

func TestLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{UserDaily: 100, DepartmentDaily: 200, TotalDaily: 300, TotalMonthly: 400})
	ctx := context.Background()
	require.NoError(t, b.q.SetLimit(ctx, ScopeUser, "alice", 0))
	require.NoError(t, b.q.SetLimit(ctx, ScopeDepartment, "eng", 250))
	require.NoError(t, b.q.SetLimit(ctx, ScopeTotal, TotalID, 350))
	require.NoError(t, b.q.SetMonthlyLimit(ctx, 450))
	tests := []struct {
		name  string
		scope Scope
		id    string
		want  Limits
	}{
		{name: "user override to unlimited", scope: ScopeUser, id: "alice", want: Limits{Daily: 0, DailyOverride: true}},
		{name: "user default", scope: ScopeUser, id: "bob", want: Limits{Daily: 100}},
		{name: "department override", scope: ScopeDepartment, id: "eng", want: Limits{Daily: 250, DailyOverride: true}},
		{name: "department default", scope: ScopeDepartment, id: "ops", want: Limits{Daily: 200}},
		{name: "total overrides", scope: ScopeTotal, id: TotalID, want: Limits{Daily: 350, DailyOverride: true, Monthly: 450, MonthlyOverride: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.q.Limit(ctx, tt.scope, tt.id)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	// Unlimited user: Status says so and Reserve is bounded only by the others.
	st := b.status(t, "alice", "eng")
	require.True(t, st["user/daily"].Unlimited)
	require.Equal(t, claudeq.Micros(250), st["department/daily"].Left)
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j", UserID: "alice", Department: "eng", Amount: 250}))

	require.NoError(t, b.q.ClearLimit(ctx, ScopeTotal, ""))
	got, err := b.q.Limit(ctx, ScopeTotal, TotalID)
	require.NoError(t, err)
	require.Equal(t, Limits{Daily: 300, Monthly: 400}, got)

	for _, bad := range []error{
		b.q.SetLimit(ctx, "team", "x", 1),
		b.q.SetLimit(ctx, ScopeUser, "", 1),
		b.q.SetLimit(ctx, ScopeTotal, "x", 1),
		b.q.SetLimit(ctx, ScopeUser, "x", -1),
		b.q.SetMonthlyLimit(ctx, -1),
	} {
		require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(bad))
	}
}

func TestRebuild(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	day1 := b.clock.Now()
	spend := func(job, user, dept string, m claudeq.Micros) {
		require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: job, UserID: user, Department: dept, Amount: m}))
		require.NoError(t, b.q.Settle(ctx, job, m))
	}
	spend("a", "u1", "eng", 100)
	spend("b", "u2", "eng", 200)
	spend("c", "u3", "ops", 300)
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "held", UserID: "u1", Department: "eng", Amount: 40}))
	b.clock.Set(day1.AddDate(0, 0, 1))
	spend("d", "u1", "eng", 1000) // the next day, same month
	b.clock.Set(day1.AddDate(0, 0, 2))

	// The ledger says: u1/eng 150, u2 moved to ops 200, u3 spent nothing.
	require.NoError(t, b.q.Rebuild(ctx, b.q.Day(day1), []SpentEntry{
		{UserID: "u1", Department: "eng", Spent: 100}, {UserID: "u1", Department: "eng", Spent: 50},
		{UserID: "u2", Department: "ops", Spent: 200},
	}))
	d := b.q.Day(day1)
	tests := []struct {
		name               string
		key                string
		spent, reservedNow claudeq.Micros
	}{
		{name: "user summed", key: b.q.userKey(d, "u1"), spent: 150, reservedNow: 40},
		{name: "user unchanged", key: b.q.userKey(d, "u2"), spent: 200},
		{name: "user absent from ledger zeroed", key: b.q.userKey(d, "u3"), spent: 0},
		{name: "department absent from ledger zeroed", key: b.q.deptKey(d, "eng"), spent: 150, reservedNow: 40},
		{name: "department", key: b.q.deptKey(d, "ops"), spent: 200},
		{name: "total", key: b.q.totalKey(d), spent: 350, reservedNow: 40},
		{name: "month moved by the day's change", key: b.q.monthKey(day1.Format("2006-01")), spent: 1350, reservedNow: 40},
		{name: "other day untouched", key: b.q.userKey(b.q.Day(day1.AddDate(0, 0, 1)), "u1"), spent: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := b.rdb.HMGet(ctx, tt.key, "s", "r").Result()
			require.NoError(t, err)
			require.Equal(t, tt.spent, micros(v[0]))
			require.Equal(t, tt.reservedNow, micros(v[1]))
		})
	}
	// Rebuilding twice is the same as once.
	require.NoError(t, b.q.Rebuild(ctx, d, []SpentEntry{{UserID: "u1", Department: "eng", Spent: 150}, {UserID: "u2", Department: "ops", Spent: 200}}))
	v, err := b.rdb.HGet(ctx, b.q.monthKey(day1.Format("2006-01")), "s").Result()
	require.NoError(t, err)
	require.Equal(t, "1350", v)

	for _, bad := range []struct {
		day     string
		entries []SpentEntry
	}{
		{day: b.q.Day(day1.AddDate(0, 0, -5)), entries: nil}, // older than the retention
		{day: b.q.Day(day1.AddDate(0, 0, 3)), entries: nil},  // future
		{day: "10/03/2027", entries: nil},
		{day: d, entries: []SpentEntry{{Spent: 1}}},
		{day: d, entries: []SpentEntry{{UserID: "u", Spent: -1}}},
	} {
		require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(b.q.Rebuild(ctx, bad.day, bad.entries)), bad.day)
	}
}

func TestCountRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	for range 3 {
		require.NoError(t, b.q.CountRequest(ctx, "key1", 3))
	}
	err := b.q.CountRequest(ctx, "key1", 3)
	require.Equal(t, claudeq.KindQuotaExceeded, claudeq.ErrorKind(err))
	var ex *RequestsExceeded
	require.ErrorAs(t, err, &ex)
	require.Equal(t, RequestsExceeded{KeyID: "key1", Limit: 3, ResetsAt: at(3, 11, 0, 0, 0)}, *ex)
	require.NoError(t, b.q.CountRequest(ctx, "key2", 3), "keys count separately")
	require.NoError(t, b.q.CountRequest(ctx, "key1", 0), "0 is unlimited")
	require.NoError(t, b.q.CountRequest(ctx, "key1", 4), "a raised limit applies at once")
	b.clock.Set(at(3, 11, 0, 0, 0))
	require.NoError(t, b.q.CountRequest(ctx, "key1", 3), "a new day")
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "zero value", opts: Options{}},
		{name: "negative budget", opts: Options{UserDaily: -1}, wantErr: "UserDaily"},
		{name: "short retention", opts: Options{Retention: time.Minute}, wantErr: "Retention"},
		{name: "short done ttl", opts: Options{DoneTTL: time.Second}, wantErr: "DoneTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), tt.opts)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
	require.Equal(t, "$0.00", claudeq.Micros(0).String())
	require.Equal(t, "$1.50", claudeq.Micros(1_500_000).String())
	require.Equal(t, "-$0.000001", claudeq.Micros(-1).String())
}

// BenchmarkReserveSettle measures one reservation and its settle, from
// parallel clients against one redis-server.
func BenchmarkReserveSettle(b *testing.B) {
	tb := setup(b, Options{UserDaily: 1 << 50, DepartmentDaily: 1 << 50, TotalDaily: 1 << 50, TotalMonthly: 1 << 50})
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			job := "j" + strconv.FormatInt(i, 10)
			err := tb.q.Reserve(ctx, Reservation{JobID: job, UserID: "u" + strconv.FormatInt(i%100, 10), Department: "d" + strconv.FormatInt(i%10, 10), Amount: 1000})
			if err == nil {
				err = tb.q.Settle(ctx, job, 900)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "reserve+settle/s")
}

func TestDailyUse(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{DepartmentDaily: 1_000, TotalDaily: 10_000})
	ctx := context.Background()
	use := func() map[string]ScopeStatus {
		st, err := b.q.DailyUse(ctx)
		require.NoError(t, err)
		out := map[string]ScopeStatus{}
		for _, s := range st {
			out[string(s.Scope)+"/"+s.ID] = s
		}
		return out
	}
	// Nothing booked: only the gateway's budget.
	got := use()
	require.Len(t, got, 1)
	require.Equal(t, ScopeStatus{Scope: ScopeTotal, Period: PeriodDaily, ID: TotalID, Limit: 10_000, Left: 10_000,
		ResetsAt: b.q.ResetsAt(b.clock.Now())}, got["total/-"])

	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j1", UserID: "u1", Department: "eng", Amount: 300}))
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j2", UserID: "u2", Department: "ops:east", Amount: 200}))
	require.NoError(t, b.q.Reserve(ctx, Reservation{JobID: "j3", UserID: "u3", Amount: 50})) // no department
	require.NoError(t, b.q.Settle(ctx, "j1", 250))
	require.NoError(t, b.q.SetLimit(ctx, ScopeDepartment, "ops:east", 400))
	got = use()
	require.Len(t, got, 3, "users are not listed: %v", got)
	require.EqualValues(t, 250, got["department/eng"].Spent)
	require.EqualValues(t, 0, got["department/eng"].Reserved)
	require.EqualValues(t, 1_000, got["department/eng"].Limit)
	require.EqualValues(t, 200, got["department/ops:east"].Reserved)
	require.EqualValues(t, 400, got["department/ops:east"].Limit, "an override wins")
	require.EqualValues(t, 250, got["total/-"].Spent)
	require.EqualValues(t, 250, got["total/-"].Reserved)

	// The next day starts empty.
	b.clock.Add(24 * time.Hour)
	require.Len(t, use(), 1)

	b.srv.Kill()
	_, err := b.q.DailyUse(ctx)
	require.Equal(t, claudeq.KindUnavailable, claudeq.ErrorKind(err))
}
