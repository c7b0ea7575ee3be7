package quota

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Scope names what a budget applies to.
type Scope string

// The scopes.
const (
	ScopeUser       Scope = "user"
	ScopeDepartment Scope = "department"
	ScopeTotal      Scope = "total"
)

// TotalID is the id of the one ScopeTotal budget.
const TotalID = "-"

// Period is the length of a budget.
type Period string

// The periods. Only ScopeTotal has a monthly budget.
const (
	PeriodDaily   Period = "daily"
	PeriodMonthly Period = "monthly"
)

// Options configures a Quota. The zero value means: no budgets, UTC days,
// the real clock.
type Options struct {
	// UserDaily is each user's default daily budget; 0 = unlimited.
	UserDaily claudeq.Micros
	// DepartmentDaily is each department's default daily budget; 0 = unlimited.
	DepartmentDaily claudeq.Micros
	// TotalDaily is the whole gateway's daily budget; 0 = unlimited.
	TotalDaily claudeq.Micros
	// TotalMonthly is the whole gateway's monthly budget; 0 = unlimited.
	TotalMonthly claudeq.Micros
	// Location is the time zone whose midnight starts a day. Default UTC.
	Location *time.Location
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Retention is how long counters (and held reservations) outlive their
	// day or month: how long Settle can still land on a past day and how
	// far back Rebuild can go. Default 72h; at least 1h.
	Retention time.Duration
	// DoneTTL is how long a settled or released reservation is remembered
	// so that repeated calls for its job stay no-ops. Default 48h; at least 1m.
	DoneTTL time.Duration
	// Prefix starts every key. Default "cq:q:{q}"; keep a {hash tag} in
	// it for Redis Cluster.
	Prefix string
}

// Quota enforces budgets in Redis. It is safe for concurrent use.
type Quota struct {
	rdb  redis.UniversalClient
	opts Options
	loc  *time.Location
}

// New returns a Quota over rdb. It fails on invalid options only; Redis is
// not contacted.
func New(rdb redis.UniversalClient, opts Options) (*Quota, error) {
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Retention == 0 {
		opts.Retention = 72 * time.Hour
	}
	if opts.DoneTTL == 0 {
		opts.DoneTTL = 48 * time.Hour
	}
	if opts.Prefix == "" {
		opts.Prefix = "cq:q:{q}"
	}
	var errs []error
	for _, l := range []struct {
		name string
		v    claudeq.Micros
	}{{"UserDaily", opts.UserDaily}, {"DepartmentDaily", opts.DepartmentDaily}, {"TotalDaily", opts.TotalDaily}, {"TotalMonthly", opts.TotalMonthly}} {
		if l.v < 0 {
			errs = append(errs, fmt.Errorf("quota: %s must not be negative", l.name))
		}
	}
	if opts.Retention < time.Hour {
		errs = append(errs, errors.New("quota: Retention must be at least 1h"))
	}
	if opts.DoneTTL < time.Minute {
		errs = append(errs, errors.New("quota: DoneTTL must be at least 1m"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Quota{rdb: rdb, opts: opts, loc: opts.Location}, nil
}

// Day returns the quota day of t, "YYYY-MM-DD" in the configured zone.
func (q *Quota) Day(t time.Time) string { return t.In(q.loc).Format(time.DateOnly) }

// ResetsAt returns when the day containing now ends: the next midnight in
// the configured zone.
func (q *Quota) ResetsAt(now time.Time) time.Time {
	y, m, d := now.In(q.loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, q.loc)
}

// MonthResetsAt returns when the month containing now ends.
func (q *Quota) MonthResetsAt(now time.Time) time.Time {
	y, m, _ := now.In(q.loc).Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, q.loc)
}

// dayEnd parses a day and returns when it ends.
func (q *Quota) dayEnd(day string) (time.Time, error) {
	t, err := time.ParseInLocation(time.DateOnly, day, q.loc)
	if err != nil {
		return time.Time{}, claudeq.Errorf(claudeq.KindInvalidRequest, "day %q: want YYYY-MM-DD", day)
	}
	return q.ResetsAt(t), nil
}

// Keys.

func (q *Quota) userKey(day, id string) string { return q.opts.Prefix + ":day:" + day + ":user:" + id }
func (q *Quota) deptKey(day, id string) string { return q.opts.Prefix + ":day:" + day + ":dept:" + id }
func (q *Quota) totalKey(day string) string    { return q.opts.Prefix + ":day:" + day + ":total" }
func (q *Quota) monthKey(month string) string  { return q.opts.Prefix + ":month:" + month + ":total" }
func (q *Quota) indexKey(day string) string    { return q.opts.Prefix + ":day:" + day + ":scopes" }
func (q *Quota) reqKey(day, key string) string { return q.opts.Prefix + ":day:" + day + ":req:" + key }
func (q *Quota) resKey(jobID string) string    { return q.opts.Prefix + ":res:" + jobID }
func (q *Quota) pendingKey() string            { return q.opts.Prefix + ":pending" }
func (q *Quota) limitsKey() string             { return q.opts.Prefix + ":limits" }

func limitField(s Scope, id string) string { return string(s) + ":" + id }

const (
	fieldTotalDaily   = "total:daily"
	fieldTotalMonthly = "total:monthly"
)

// unavailable is the error for any Redis failure: money fails closed.
func unavailable(op string, err error) error {
	return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: op, Msg: "quota service unavailable; the request was not accepted, try again", Err: err, RetryAfter: time.Second}
}

// Reservation is a hold on the budgets for one job.
type Reservation struct {
	JobID      string         // the idempotency key of the reservation (required)
	UserID     string         // required
	Department string         // optional: no department budget when empty
	Amount     claudeq.Micros // the worst-case cost, see pricing.Table.Estimate
}

// scopeRef is one budget a reservation touches.
type scopeRef struct {
	scope  Scope
	period Period
	id     string
	key    string
	field  string         // limit override field
	def    claudeq.Micros // default limit
	expire time.Time
	index  bool // listed in the day's scope index
	resets time.Time
}

func (q *Quota) scopes(now time.Time, userID, dept string) []scopeRef {
	day := q.Day(now)
	dayEnd, monthEnd := q.ResetsAt(now), q.MonthResetsAt(now)
	dayExp, monthExp := dayEnd.Add(q.opts.Retention), monthEnd.Add(q.opts.Retention)
	out := make([]scopeRef, 0, 4)
	out = append(out, scopeRef{ScopeUser, PeriodDaily, userID, q.userKey(day, userID), limitField(ScopeUser, userID), q.opts.UserDaily, dayExp, true, dayEnd})
	if dept != "" {
		out = append(out, scopeRef{ScopeDepartment, PeriodDaily, dept, q.deptKey(day, dept), limitField(ScopeDepartment, dept), q.opts.DepartmentDaily, dayExp, true, dayEnd})
	}
	out = append(out,
		scopeRef{ScopeTotal, PeriodDaily, TotalID, q.totalKey(day), fieldTotalDaily, q.opts.TotalDaily, dayExp, false, dayEnd},
		scopeRef{ScopeTotal, PeriodMonthly, TotalID, q.monthKey(now.In(q.loc).Format("2006-01")), fieldTotalMonthly, q.opts.TotalMonthly, monthExp, false, monthEnd},
	)
	return out
}

// Reserve holds r.Amount on every budget of r's user, department and the
// gateway (daily and monthly) — all of them or none, in one Lua call. It
// fails with a KindQuotaExceeded error wrapping an *Exceeded when any
// budget would go over its limit, and with KindUnavailable when Redis
// cannot be reached (the caller must refuse the request).
//
// Reserve is idempotent per job id: while the job's record exists (held,
// or settled/released within DoneTTL) another Reserve is a no-op that
// returns nil, whatever its amount. If Reserve fails with KindUnavailable
// the reservation may nonetheless have been made (a lost reply): retry with
// the same job id, or Release it.
func (q *Quota) Reserve(ctx context.Context, r Reservation) error {
	const op = "quota.Reserve"
	if r.JobID == "" || r.UserID == "" {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "reservation needs a job id and a user id"}
	}
	if r.Amount < 0 {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "reservation amount must not be negative"}
	}
	now := q.opts.Now()
	day := q.Day(now)
	scopes := q.scopes(now, r.UserID, r.Department)
	keys := make([]string, 0, 4+len(scopes))
	keys = append(keys, q.resKey(r.JobID), q.pendingKey(), q.limitsKey(), q.indexKey(day))
	args := make([]any, 0, 8+4*len(scopes))
	args = append(args, int64(r.Amount), now.UnixMilli(), r.JobID, day, r.UserID, r.Department,
		q.ResetsAt(now).Add(q.opts.Retention).Unix(), len(scopes))
	for _, s := range scopes {
		keys = append(keys, s.key)
		idx := "0"
		if s.index {
			idx = "1"
		}
		args = append(args, s.field, int64(s.def), s.expire.Unix(), idx)
	}
	res, err := reserveScript.Run(ctx, q.rdb, keys, args...).Slice()
	if err != nil {
		return unavailable(op, err)
	}
	if len(res) < 2 {
		return unavailable(op, fmt.Errorf("unexpected script reply %v", res))
	}
	if code, _ := res[0].(int64); code == 0 {
		return nil
	}
	if len(res) != 5 {
		return unavailable(op, fmt.Errorf("unexpected script reply %v", res))
	}
	i, _ := res[1].(int64)
	if i < 1 || int(i) > len(scopes) {
		return unavailable(op, fmt.Errorf("unexpected scope index %d", i))
	}
	s := scopes[i-1]
	limit, _ := res[2].(int64)
	spent, _ := res[3].(int64)
	reserved, _ := res[4].(int64)
	ex := &Exceeded{
		Scope: s.scope, Period: s.period, ID: s.id,
		Limit: claudeq.Micros(limit), Spent: claudeq.Micros(spent), Reserved: claudeq.Micros(reserved),
		Left: max(0, claudeq.Micros(limit-spent-reserved)), Needed: r.Amount, ResetsAt: s.resets,
	}
	return &claudeq.Error{Kind: claudeq.KindQuotaExceeded, Op: op, Msg: ex.Message(), Err: ex, RetryAfter: s.resets.Sub(now)}
}

// Exceeded details a refused reservation, for the api to render. Retrieve
// it with errors.As from Reserve's error.
type Exceeded struct {
	Scope    Scope          `json:"scope"`
	Period   Period         `json:"period"`
	ID       string         `json:"id"` // user id, department, or TotalID
	Limit    claudeq.Micros `json:"limit_micros"`
	Spent    claudeq.Micros `json:"spent_micros"`
	Reserved claudeq.Micros `json:"reserved_micros"` // held by jobs still running
	Left     claudeq.Micros `json:"left_micros"`     // Limit − Spent − Reserved, at least 0
	Needed   claudeq.Micros `json:"needed_micros"`   // the refused reservation's amount
	ResetsAt time.Time      `json:"resets_at"`
}

// Error implements error. It is short: the *claudeq.Error that wraps it
// carries Message.
func (e *Exceeded) Error() string {
	return fmt.Sprintf("%s %s budget of %s exceeded", e.Period, e.Scope, e.ID)
}

// Message is the caller-safe sentence: which budget, its limit, what is
// left, when it resets.
func (e *Exceeded) Message() string {
	var who string
	switch e.Scope {
	case ScopeUser:
		who = fmt.Sprintf("%s budget of user %s", e.Period, e.ID)
	case ScopeDepartment:
		who = fmt.Sprintf("%s budget of department %s", e.Period, e.ID)
	default:
		who = fmt.Sprintf("%s budget of the gateway", e.Period)
	}
	return fmt.Sprintf("%s exhausted: limit %s, spent %s, reserved by running jobs %s, left %s; this request may cost up to %s; resets at %s",
		who, e.Limit, e.Spent, e.Reserved, e.Left, e.Needed, e.ResetsAt.Format(time.RFC3339))
}

// Settle books the actual cost of a job: its reservation's amount leaves
// the reserved counters and actual joins the spent counters, both on the
// day (and month) the reservation was made, even when that day is over.
// Without a reservation record (already settled, never made, or expired)
// Settle is a no-op; a second Settle changes nothing.
//
// actual may exceed the reservation (see the package documentation for
// how far). A Settle after a Release books actual as spent without
// touching reserved: the call happened, and the counters must agree with
// the ledger. Redis errors are KindUnavailable; retry.
func (q *Quota) Settle(ctx context.Context, jobID string, actual claudeq.Micros) error {
	const op = "quota.Settle"
	if jobID == "" || actual < 0 {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "settle needs a job id and a non-negative cost"}
	}
	err := settleScript.Run(ctx, q.rdb, []string{q.resKey(jobID), q.pendingKey(), q.partsKey(jobID)},
		int64(actual), jobID, int64(q.opts.DoneTTL/time.Second)).Err()
	if err != nil {
		return unavailable(op, err)
	}
	return nil
}

// Release gives a held reservation back (the job failed or was canceled).
// It is a no-op for a reservation that is missing, settled or released
// already. Redis errors are KindUnavailable; retry.
func (q *Quota) Release(ctx context.Context, jobID string) error {
	const op = "quota.Release"
	if jobID == "" {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "release needs a job id"}
	}
	err := releaseScript.Run(ctx, q.rdb, []string{q.resKey(jobID), q.pendingKey(), q.partsKey(jobID)},
		jobID, int64(q.opts.DoneTTL/time.Second)).Err()
	if err != nil {
		return unavailable(op, err)
	}
	return nil
}

// State is the life-cycle state of a reservation record.
type State string

// The states.
const (
	StateHeld     State = "held"
	StateSettled  State = "settled"
	StateReleased State = "released"
)

// Hold is a reservation record as stored.
type Hold struct {
	JobID      string
	UserID     string
	Department string
	Day        string         // the quota day it was made, and is settled on
	Amount     claudeq.Micros // reserved
	Actual     claudeq.Micros // settled cost, once settled
	State      State
	At         time.Time // when it was made
}

// Hold returns job jobID's reservation record, or a KindNotFound error when
// there is none (never made, or forgotten after DoneTTL). The worker takes
// the ledger entry's Day from it.
func (q *Quota) Hold(ctx context.Context, jobID string) (Hold, error) {
	m, err := q.rdb.HGetAll(ctx, q.resKey(jobID)).Result()
	if err != nil {
		return Hold{}, unavailable("quota.Hold", err)
	}
	if m["state"] == "" {
		return Hold{}, claudeq.Errorf(claudeq.KindNotFound, "no reservation for job %s", jobID)
	}
	num := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return Hold{
		JobID: jobID, UserID: m["user"], Department: m["dept"], Day: m["day"],
		Amount: claudeq.Micros(num("amount")), Actual: claudeq.Micros(num("actual")), State: State(m["state"]),
		At: time.UnixMilli(num("at")).In(q.loc),
	}, nil
}

// Stale returns the ids of jobs whose reservations are still held and
// were made more than olderThan ago, oldest first, at most 10,000 per
// call. For the reconciler: a job that is terminal in the store is
// settled (to its ledger cost) or released; a job unknown to the store and
// the queue is released.
func (q *Quota) Stale(ctx context.Context, olderThan time.Duration) ([]string, error) {
	cutoff := q.opts.Now().Add(-olderThan).UnixMilli()
	ids, err := q.rdb.ZRangeByScore(ctx, q.pendingKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff, 10), Count: 10_000,
	}).Result()
	if err != nil {
		return nil, unavailable("quota.Stale", err)
	}
	return ids, nil
}

// ScopeStatus is one budget as the caller sees it.
type ScopeStatus struct {
	Scope     Scope          `json:"scope"`
	Period    Period         `json:"period"`
	ID        string         `json:"id"`
	Limit     claudeq.Micros `json:"limit_micros"` // 0 when Unlimited
	Unlimited bool           `json:"unlimited"`
	Spent     claudeq.Micros `json:"spent_micros"`
	Reserved  claudeq.Micros `json:"reserved_micros"`
	Left      claudeq.Micros `json:"left_micros"` // 0 when Unlimited
	ResetsAt  time.Time      `json:"resets_at"`
}

// Status returns the budgets that apply to a user of department (empty:
// none) right now: user daily, department daily, gateway daily and
// monthly, read in one MULTI so that they are consistent with each other.
func (q *Quota) Status(ctx context.Context, userID, department string) ([]ScopeStatus, error) {
	return q.read(ctx, "quota.Status", q.scopes(q.opts.Now(), userID, department))
}

// DailyUse returns the gateway's daily budget and the daily budget of
// every department that reserved or spent today (sorted by department),
// for the budget metrics: one SMEMBERS of the day's scope index, then one
// MULTI. Departments with nothing booked today are left out.
func (q *Quota) DailyUse(ctx context.Context) ([]ScopeStatus, error) {
	const op = "quota.DailyUse"
	now := q.opts.Now()
	day := q.Day(now)
	members, err := q.rdb.SMembers(ctx, q.indexKey(day)).Result()
	if err != nil {
		return nil, unavailable(op, err)
	}
	resets := q.ResetsAt(now)
	prefix := q.deptKey(day, "")
	var depts []string
	for _, k := range members {
		if id, ok := strings.CutPrefix(k, prefix); ok && id != "" {
			depts = append(depts, id)
		}
	}
	slices.Sort(depts)
	refs := make([]scopeRef, 0, 1+len(depts))
	refs = append(refs, scopeRef{scope: ScopeTotal, period: PeriodDaily, id: TotalID, key: q.totalKey(day),
		field: fieldTotalDaily, def: q.opts.TotalDaily, resets: resets})
	for _, id := range depts {
		refs = append(refs, scopeRef{scope: ScopeDepartment, period: PeriodDaily, id: id, key: prefix + id,
			field: limitField(ScopeDepartment, id), def: q.opts.DepartmentDaily, resets: resets})
	}
	return q.read(ctx, op, refs)
}

// read returns the status of scopes, read in one MULTI.
func (q *Quota) read(ctx context.Context, op string, scopes []scopeRef) ([]ScopeStatus, error) {
	counters := make([]*redis.SliceCmd, len(scopes))
	fields := make([]string, len(scopes))
	for i, s := range scopes {
		fields[i] = s.field
	}
	var limits *redis.SliceCmd
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range scopes {
			counters[i] = p.HMGet(ctx, s.key, "s", "r")
		}
		limits = p.HMGet(ctx, q.limitsKey(), fields...)
		return nil
	})
	if err != nil {
		return nil, unavailable(op, err)
	}
	out := make([]ScopeStatus, len(scopes))
	for i, s := range scopes {
		v := counters[i].Val()
		st := ScopeStatus{Scope: s.scope, Period: s.period, ID: s.id, Spent: micros(v[0]), Reserved: micros(v[1]), ResetsAt: s.resets}
		st.Limit = s.def
		if l := limits.Val()[i]; l != nil {
			st.Limit = micros(l)
		}
		if st.Limit == 0 {
			st.Unlimited = true
		} else {
			st.Left = max(0, st.Limit-st.Spent-st.Reserved)
		}
		out[i] = st
	}
	return out, nil
}

func micros(v any) claudeq.Micros {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return claudeq.Micros(n)
}

// Limits are a scope id's budgets and whether they are overrides.
type Limits struct {
	Daily           claudeq.Micros `json:"daily_micros"` // 0 = unlimited
	DailyOverride   bool           `json:"daily_override"`
	Monthly         claudeq.Micros `json:"monthly_micros,omitempty"` // ScopeTotal only
	MonthlyOverride bool           `json:"monthly_override,omitempty"`
}

func (q *Quota) checkScope(op string, scope Scope, id string) (string, error) {
	switch scope {
	case ScopeUser, ScopeDepartment:
		if id == "" {
			return "", &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "a " + string(scope) + " limit needs an id"}
		}
		return limitField(scope, id), nil
	case ScopeTotal:
		if id != "" && id != TotalID {
			return "", &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: `the total scope's id is "-"`}
		}
		return fieldTotalDaily, nil
	}
	return "", &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: fmt.Sprintf("unknown scope %q: want user, department or total", scope)}
}

// SetLimit overrides the daily budget of one user, one department or the
// gateway (id TotalID) in Redis; 0 makes it unlimited. It applies to the
// next reservation, on every replica at once.
func (q *Quota) SetLimit(ctx context.Context, scope Scope, id string, daily claudeq.Micros) error {
	const op = "quota.SetLimit"
	f, err := q.checkScope(op, scope, id)
	if err != nil {
		return err
	}
	if daily < 0 {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "a limit must not be negative"}
	}
	if err := q.rdb.HSet(ctx, q.limitsKey(), f, int64(daily)).Err(); err != nil {
		return unavailable(op, err)
	}
	return nil
}

// SetMonthlyLimit overrides the gateway's monthly budget; 0 makes it
// unlimited.
func (q *Quota) SetMonthlyLimit(ctx context.Context, monthly claudeq.Micros) error {
	const op = "quota.SetMonthlyLimit"
	if monthly < 0 {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "a limit must not be negative"}
	}
	if err := q.rdb.HSet(ctx, q.limitsKey(), fieldTotalMonthly, int64(monthly)).Err(); err != nil {
		return unavailable(op, err)
	}
	return nil
}

// ClearLimit removes the overrides of a scope id (for ScopeTotal both the
// daily and the monthly one), so that the defaults of Options apply again.
func (q *Quota) ClearLimit(ctx context.Context, scope Scope, id string) error {
	const op = "quota.ClearLimit"
	f, err := q.checkScope(op, scope, id)
	if err != nil {
		return err
	}
	fields := []string{f}
	if scope == ScopeTotal {
		fields = append(fields, fieldTotalMonthly)
	}
	if err := q.rdb.HDel(ctx, q.limitsKey(), fields...).Err(); err != nil {
		return unavailable(op, err)
	}
	return nil
}

// Limit returns the budgets in force for a scope id: its override or the
// default.
func (q *Quota) Limit(ctx context.Context, scope Scope, id string) (Limits, error) {
	const op = "quota.Limit"
	f, err := q.checkScope(op, scope, id)
	if err != nil {
		return Limits{}, err
	}
	v, err := q.rdb.HMGet(ctx, q.limitsKey(), f, fieldTotalMonthly).Result()
	if err != nil {
		return Limits{}, unavailable(op, err)
	}
	var l Limits
	switch scope {
	case ScopeUser:
		l.Daily = q.opts.UserDaily
	case ScopeDepartment:
		l.Daily = q.opts.DepartmentDaily
	case ScopeTotal:
		l.Daily, l.Monthly = q.opts.TotalDaily, q.opts.TotalMonthly
		if v[1] != nil {
			l.Monthly, l.MonthlyOverride = micros(v[1]), true
		}
	}
	if v[0] != nil {
		l.Daily, l.DailyOverride = micros(v[0]), true
	}
	return l, nil
}

// SpentEntry is what one user spent on a day within one department,
// summed from the ledger.
type SpentEntry struct {
	UserID     string
	Department string // empty: no department
	Spent      claudeq.Micros
}

// Rebuild rewrites the spent counters of day ("YYYY-MM-DD") from ledger
// sums, in one Lua call: each user's and department's spent becomes the sum
// of its entries, every other counter of that day that had spending becomes
// 0, the day's total becomes the sum of all entries and the month's total
// moves by the same change. Reserved counters are left alone.
//
// The ledger is written before the reservation is settled, so rebuild a
// day that is over (and whose jobs are done); rebuilding today may count a
// job twice for the seconds between its ledger write and its settle. Days
// older than Retention are refused: their counters are gone.
func (q *Quota) Rebuild(ctx context.Context, day string, entries []SpentEntry) error {
	const op = "quota.Rebuild"
	end, err := q.dayEnd(day)
	if err != nil {
		return err
	}
	now := q.opts.Now()
	if !end.Add(q.opts.Retention).After(now) {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: fmt.Sprintf("day %s is older than the quota retention; its counters are gone", day)}
	}
	if end.AddDate(0, 0, -1).After(now) {
		return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: fmt.Sprintf("day %s has not started", day)}
	}
	sums := map[string]claudeq.Micros{}
	var total claudeq.Micros
	for _, e := range entries {
		if e.UserID == "" || e.Spent < 0 {
			return &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: op, Msg: "rebuild entries need a user id and a non-negative amount"}
		}
		sums[q.userKey(day, e.UserID)] += e.Spent
		if e.Department != "" {
			sums[q.deptKey(day, e.Department)] += e.Spent
		}
		total += e.Spent
	}
	start := end.AddDate(0, 0, -1)
	monthExp := q.MonthResetsAt(start).Add(q.opts.Retention)
	args := []any{end.Add(q.opts.Retention).Unix(), monthExp.Unix(), int64(total), len(sums)}
	for k, v := range sums {
		args = append(args, k, int64(v))
	}
	keys := []string{q.indexKey(day), q.totalKey(day), q.monthKey(start.Format("2006-01"))}
	if err := rebuildScript.Run(ctx, q.rdb, keys, args...).Err(); err != nil {
		return unavailable(op, err)
	}
	return nil
}

// RequestsExceeded details a refused CountRequest.
type RequestsExceeded struct {
	KeyID    string    `json:"key_id"`
	Limit    int       `json:"limit"`
	ResetsAt time.Time `json:"resets_at"`
}

// Error implements error.
func (e *RequestsExceeded) Error() string {
	return fmt.Sprintf("this API key's %d requests for today are used up; resets at %s", e.Limit, e.ResetsAt.Format(time.RFC3339))
}

// CountRequest counts one request of API key keyID against its daily
// request limit: KindQuotaExceeded (wrapping *RequestsExceeded) once limit
// requests were counted today; a refused request is not counted. limit ≤ 0
// means unlimited and touches no Redis.
func (q *Quota) CountRequest(ctx context.Context, keyID string, limit int) error {
	const op = "quota.CountRequest"
	if limit <= 0 {
		return nil
	}
	now := q.opts.Now()
	resets := q.ResetsAt(now)
	res, err := countScript.Run(ctx, q.rdb, []string{q.reqKey(q.Day(now), keyID)}, limit, resets.Add(q.opts.Retention).Unix()).Slice()
	if err != nil {
		return unavailable(op, err)
	}
	if ok, _ := res[0].(int64); ok == 1 {
		return nil
	}
	ex := &RequestsExceeded{KeyID: keyID, Limit: limit, ResetsAt: resets}
	return &claudeq.Error{Kind: claudeq.KindQuotaExceeded, Op: op, Msg: ex.Error(), Err: ex, RetryAfter: resets.Sub(now)}
}
