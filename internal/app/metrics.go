package app

import (
	"context"
	"errors"

	"github.com/claudeq/claudeq/internal/metrics"
	"github.com/claudeq/claudeq/internal/quota"
)

// nodeHealth is the scheduler's source of claudeq_upstream_node_health:
// the balancer's shared state in Redis (Fleet.Nodes), which every process
// updates with the outcome of its calls and probes, so the metric shows
// passive and active health alike and never one process's stale view.
func (a *App) nodeHealth(ctx context.Context) ([]metrics.NodeHealth, error) {
	if a.Fleet == nil {
		return nil, errors.New("upstream fleet not started")
	}
	nodes, err := a.Fleet.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]metrics.NodeHealth, len(nodes))
	for i, n := range nodes {
		out[i] = metrics.NodeHealth{Node: n.Name, Status: metrics.NodeStatus(n.Status)}
	}
	return out, nil
}

// budgetUse is the scheduler's source of claudeq_budget_used_ratio: the
// gateway's daily budget and every department's that has bookings today,
// (spent + reserved) / limit, from the quota counters in Redis. Unlimited
// budgets have no ratio and no series.
func (a *App) budgetUse(ctx context.Context) ([]metrics.BudgetUse, error) {
	if a.Money.Quota == nil {
		return nil, nil
	}
	st, err := a.Money.Quota.DailyUse(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]metrics.BudgetUse, 0, len(st))
	for _, s := range st {
		if s.Unlimited || s.Limit <= 0 {
			continue
		}
		u := metrics.BudgetUse{Ratio: float64(s.Spent+s.Reserved) / float64(s.Limit)}
		switch s.Scope {
		case quota.ScopeTotal:
			u.Scope = metrics.QuotaTotal
		case quota.ScopeDepartment:
			u.Scope, u.Department = metrics.QuotaDepartment, s.ID
		default:
			continue
		}
		out = append(out, u)
	}
	return out, nil
}
