package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/job"
	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/routing"
	"github.com/claudeq/claudeq/internal/store"
)

// Money is what the api needs for budgets: prices, the quota and the
// automatic model choice. A zero Money bills nothing and enforces no
// budget.
type Money struct {
	Pricing    *pricing.Table
	Quota      *quota.Quota
	Thresholds routing.Thresholds
}

// Ledger reads the billed usage.
type Ledger interface {
	LedgerSum(ctx context.Context, f store.LedgerFilter) (store.LedgerTotals, error)
	LedgerDaily(ctx context.Context, f store.LedgerFilter) ([]store.DaySum, error)
	LedgerByModel(ctx context.Context, f store.LedgerFilter) ([]store.ModelSum, error)
}

func micros(m int64) float64 { return float64(m) / 1e6 }

// route resolves model "auto": a tier by the prompt's complexity, capped by
// the key's tier, and says why in response headers.
func (s *Server) route(c echo.Context, cat *claudeq.Catalog, spec *jobSpec) error {
	keyTier := principalOf(c).Tier
	d := routing.Route(spec.req, s.money.Thresholds, keyTier)
	m, family, ok := nearestServed(cat, d.Tier, keyTier)
	if !ok {
		return claudeq.Errorf(claudeq.KindNotFound, "model: auto chose %s, and no upstream node serves a haiku, sonnet or opus model this key may use; GET /v1/models lists the models you can use", d.Tier)
	}
	if family != d.Tier {
		d.Reason += "; no " + d.Tier + " model is served, so " + family
		d.Tier = family
	}
	spec.resolved("auto", m)
	spec.routeReason = d.Reason
	c.Response().Header().Set("X-Claudeq-Routed-Model", m.ID)
	c.Response().Header().Set("X-Claudeq-Route-Reason", d.Header())
	return nil
}

// nearestServed returns the newest served model of the routing tier want,
// else of the nearest tier that is served: cheaper ones first, then
// dearer ones up to the key's tier.
func nearestServed(cat *claudeq.Catalog, want, keyTier string) (claudeq.Model, string, bool) {
	tiers := []string{routing.TierHaiku, routing.TierSonnet, routing.TierOpus}
	at := slices.Index(tiers, want)
	if at < 0 {
		return claudeq.Model{}, "", false
	}
	order := append(slices.Clone(tiers[:at+1]), tiers[at+1:]...)
	slices.Reverse(order[:at+1]) // want, then the cheaper ones, then the dearer ones
	for _, t := range order {
		if !tierAllows(keyTier, t) {
			continue
		}
		if m, ok := cat.Resolve(t); ok {
			return m, t, true
		}
	}
	return claudeq.Model{}, "", false
}

// estimate is the worst-case cost of a request: its input by a documented
// heuristic (pricing.EstimateInputTokens) and max_tokens of output.
func (s *Server) estimate(spec jobSpec, body []byte, now time.Time) (int64, claudeq.Micros, pricing.Priced, error) {
	in := pricing.EstimateInputTokens(body)
	if s.money.Pricing == nil {
		return in, 0, pricing.Priced{}, nil
	}
	cost, priced, err := s.money.Pricing.Estimate(spec.req.Model, in, int64(spec.req.MaxTokens), false, now)
	return in, cost, priced, err
}

// reserve books the worst-case cost of job id against every budget of the
// caller, atomically; a refusal says which budget, its limit, what is left
// and when it resets.
func (s *Server) reserve(ctx context.Context, p claudeq.Principal, id string, amount claudeq.Micros) error {
	if s.money.Quota == nil {
		return nil
	}
	return s.money.Quota.Reserve(ctx, job.Reservation(id, p.UserID, p.Department, amount))
}

// countRefusal counts err in claudeq_quota_refusals_total by the budget
// that refused it (a reservation's scope, or the key's daily request cap);
// other errors are not counted.
func (s *Server) countRefusal(err error) {
	var ex *quota.Exceeded
	var rx *quota.RequestsExceeded
	switch {
	case errors.As(err, &ex):
		s.metrics.QuotaRefused(metrics.QuotaScope(ex.Scope))
	case errors.As(err, &rx):
		s.metrics.QuotaRefused(metrics.QuotaRequests)
	}
}

func (s *Server) release(id string) {
	if s.money.Quota == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.money.Quota.Release(ctx, id); err != nil {
		s.log.Warn("releasing a reservation failed; the reconciler will", "job_id", id, "err", err)
	}
}

func (s *Server) estimateHandler(c echo.Context) error {
	spec, err := s.parseChat(c)
	if err != nil {
		return err
	}
	body, err := jsonBody(spec.req)
	if err != nil {
		return err
	}
	in, cost, priced, err := s.estimate(spec, body, s.now())
	if err != nil {
		return err
	}
	out := map[string]any{
		"model": spec.req.Model, "input_tokens": in, "input_tokens_method": "heuristic",
		"max_output_tokens": spec.req.MaxTokens, "estimated_cost_usd": micros(int64(cost)),
		"note": "worst case: every max_tokens is produced; input counted by a heuristic (about 4 characters per token)",
	}
	if n := priced.Note(); n != "" {
		out["pricing_note"] = n
	}
	if spec.routeReason != "" {
		out["route_reason"] = spec.routeReason
	}
	return c.JSON(http.StatusOK, out)
}

type scopeView struct {
	Scope     string    `json:"scope"`
	Period    string    `json:"period"`
	ID        string    `json:"id"`
	LimitUSD  *float64  `json:"limit_usd"`
	SpentUSD  float64   `json:"spent_usd"`
	Reserved  float64   `json:"reserved_usd"`
	LeftUSD   *float64  `json:"left_usd"`
	ResetsAt  time.Time `json:"resets_at"`
	Unlimited bool      `json:"unlimited"`
}

func (s *Server) quotaStatus(ctx context.Context, user, dept string) ([]scopeView, error) {
	if s.money.Quota == nil {
		return []scopeView{}, nil
	}
	st, err := s.money.Quota.Status(ctx, user, dept)
	if err != nil {
		return nil, err
	}
	out := make([]scopeView, 0, len(st))
	for _, x := range st {
		v := scopeView{Scope: string(x.Scope), Period: string(x.Period), ID: x.ID, SpentUSD: micros(int64(x.Spent)),
			Reserved: micros(int64(x.Reserved)), ResetsAt: x.ResetsAt.UTC(), Unlimited: x.Unlimited}
		if !x.Unlimited {
			l, left := micros(int64(x.Limit)), micros(int64(x.Left))
			v.LimitUSD, v.LeftUSD = &l, &left
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Server) quotaHandler(c echo.Context) error {
	p := principalOf(c)
	st, err := s.quotaStatus(c.Request().Context(), p.UserID, p.Department)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"user_id": p.UserID, "department": p.Department, "data": st})
}

func (s *Server) usageReport(c echo.Context, f store.LedgerFilter) (map[string]any, error) {
	days := 30
	if v := c.QueryParam("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 366 {
			return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "days: a whole number from 1 to 366")
		}
		days = n
	}
	now := s.now()
	day := func(t time.Time) string { return t.Format(time.DateOnly) }
	if s.money.Quota != nil {
		day = s.money.Quota.Day
	}
	f.From, f.To = day(now.AddDate(0, 0, -(days-1))), day(now)
	ctx := c.Request().Context()
	if s.ledger == nil {
		return nil, claudeq.Errorf(claudeq.KindUnavailable, "usage is not available")
	}
	tot, err := s.ledger.LedgerSum(ctx, f)
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.usage", Msg: "usage store unavailable", Err: err}
	}
	daily, err := s.ledger.LedgerDaily(ctx, f)
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.usage", Msg: "usage store unavailable", Err: err}
	}
	byModel, err := s.ledger.LedgerByModel(ctx, f)
	if err != nil {
		return nil, &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.usage", Msg: "usage store unavailable", Err: err}
	}
	series := make([]map[string]any, 0, len(daily))
	for _, d := range daily {
		series = append(series, map[string]any{"day": d.Day, "requests": d.Requests, "tokens": d.Tokens, "cost_usd": micros(d.CostMicros)})
	}
	models := make([]map[string]any, 0, len(byModel))
	for _, m := range byModel {
		models = append(models, map[string]any{"model": m.Model, "requests": m.Requests, "tokens": m.Tokens, "cost_usd": micros(m.CostMicros)})
	}
	return map[string]any{
		"from": f.From, "to": f.To, "days": days,
		"conversations": tot.Requests, "requests": tot.Requests, "tokens": tot.Tokens, "cost_usd": micros(tot.CostMicros),
		"models": models, "daily": series,
	}, nil
}

func (s *Server) usageHandler(c echo.Context) error {
	p := principalOf(c)
	r, err := s.usageReport(c, store.LedgerFilter{UserID: p.UserID})
	if err != nil {
		return err
	}
	r["user_id"] = p.UserID
	return c.JSON(http.StatusOK, r)
}

func (s *Server) adminUsage(c echo.Context) error {
	f := store.LedgerFilter{UserID: c.QueryParam("user"), Department: c.QueryParam("department")}
	r, err := s.usageReport(c, f)
	if err != nil {
		return err
	}
	r["user_id"], r["department"] = f.UserID, f.Department
	if f.UserID != "" || f.Department != "" {
		if st, err := s.quotaStatus(c.Request().Context(), f.UserID, f.Department); err == nil {
			r["quota"] = st
		}
	}
	return c.JSON(http.StatusOK, r)
}

type limitBody struct {
	DailyUSD   *string `json:"daily_usd"`
	MonthlyUSD *string `json:"monthly_usd"`
}

func parseScope(c echo.Context) (quota.Scope, string, error) {
	sc := quota.Scope(c.Param("scope"))
	id := c.Param("id")
	switch sc {
	case quota.ScopeUser, quota.ScopeDepartment:
	case quota.ScopeTotal:
		if id != quota.TotalID {
			return "", "", claudeq.Errorf(claudeq.KindInvalidRequest, `the total budget's id is "-"`)
		}
	default:
		return "", "", claudeq.Errorf(claudeq.KindInvalidRequest, "scope: user, department or total")
	}
	return sc, id, nil
}

// usdValue accepts a JSON number or string of US dollars: at most 6
// decimal places (budgets are kept in micro-dollars).
func usdValue(field string, v *string) (claudeq.Micros, error) {
	s := strings.TrimSpace(strings.Trim(*v, `"`))
	m, err := pricing.ParseUSD(s)
	if err != nil || m < 0 {
		if _, frac, ok := strings.Cut(s, "."); ok && len(frac) > 6 && strings.Trim(frac, "0123456789") == "" {
			return 0, claudeq.Errorf(claudeq.KindInvalidRequest, "%s: %s has more than 6 decimal places; budgets are kept to the micro-dollar (0.000001)", field, s)
		}
		return 0, claudeq.Errorf(claudeq.KindInvalidRequest, "%s: an amount of US dollars ≥ 0 with at most 6 decimal places (0 = unlimited)", field)
	}
	return claudeq.Micros(m), nil
}

func (s *Server) putLimit(c echo.Context) error {
	if s.money.Quota == nil {
		return claudeq.Errorf(claudeq.KindUnavailable, "budgets are not configured")
	}
	sc, id, err := parseScope(c)
	if err != nil {
		return err
	}
	var raw map[string]any
	if err := s.readJSON(c, &raw); err != nil {
		return err
	}
	var b limitBody
	for k, v := range raw {
		var str string
		switch x := v.(type) {
		case float64:
			str = strconv.FormatFloat(x, 'f', -1, 64)
		case string:
			str = x
		default:
			return claudeq.Errorf(claudeq.KindInvalidRequest, "%s: expected an amount of US dollars", k)
		}
		switch k {
		case "daily_usd":
			b.DailyUSD = &str
		case "monthly_usd":
			b.MonthlyUSD = &str
		default:
			return claudeq.Errorf(claudeq.KindInvalidRequest, "%s: unknown field", k)
		}
	}
	if b.DailyUSD == nil && b.MonthlyUSD == nil {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "daily_usd: required (or monthly_usd for the total budget)")
	}
	ctx := c.Request().Context()
	if b.DailyUSD != nil {
		m, err := usdValue("daily_usd", b.DailyUSD)
		if err != nil {
			return err
		}
		if err := s.money.Quota.SetLimit(ctx, sc, id, m); err != nil {
			return err
		}
	}
	if b.MonthlyUSD != nil {
		if sc != quota.ScopeTotal {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "monthly_usd: only the total budget has one")
		}
		m, err := usdValue("monthly_usd", b.MonthlyUSD)
		if err != nil {
			return err
		}
		if err := s.money.Quota.SetMonthlyLimit(ctx, m); err != nil {
			return err
		}
	}
	s.log.Info("admin: budget set", "scope", sc, "id", id, "by", principalOf(c).KeyID)
	return s.getLimit(c)
}

func (s *Server) getLimit(c echo.Context) error {
	if s.money.Quota == nil {
		return claudeq.Errorf(claudeq.KindUnavailable, "budgets are not configured")
	}
	sc, id, err := parseScope(c)
	if err != nil {
		return err
	}
	l, err := s.money.Quota.Limit(c.Request().Context(), sc, id)
	if err != nil {
		return err
	}
	out := map[string]any{"scope": sc, "id": id, "daily_usd": micros(int64(l.Daily)), "daily_override": l.DailyOverride}
	if sc == quota.ScopeTotal {
		out["monthly_usd"], out["monthly_override"] = micros(int64(l.Monthly)), l.MonthlyOverride
	}
	return c.JSON(http.StatusOK, out)
}

// quotaDetails adds the refusal's numbers to a quota_exceeded error body.
func quotaDetails(err error) map[string]any {
	var ex *quota.Exceeded
	if !errors.As(err, &ex) {
		return nil
	}
	d := map[string]any{"scope": ex.Scope, "period": ex.Period, "id": ex.ID, "limit_usd": micros(int64(ex.Limit)),
		"spent_usd": micros(int64(ex.Spent)), "reserved_usd": micros(int64(ex.Reserved)), "left_usd": micros(int64(ex.Left)),
		"needed_usd": micros(int64(ex.Needed)), "resets_at": ex.ResetsAt.UTC()}
	return d
}
