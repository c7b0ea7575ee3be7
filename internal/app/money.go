package app

import (
	"fmt"
	"github.com/claudeq/claudeq/internal/claudeq"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
	"github.com/claudeq/claudeq/internal/routing"
)

// newMoney builds the price table, the budgets and the routing thresholds.
func newMoney(cfg config.Config, rdb redis.UniversalClient, now func() time.Time) (api.Money, error) {
	table := pricing.Default()
	if cfg.PricingFile != "" {
		t, err := pricing.Load(cfg.PricingFile)
		if err != nil {
			return api.Money{}, fmt.Errorf("CLAUDEQ_PRICING_FILE: %w", err)
		}
		table = t
	}

	q, err := quota.New(rdb, quota.Options{
		UserDaily: claudeq.Micros(cfg.QuotaUserDaily), DepartmentDaily: claudeq.Micros(cfg.QuotaDepartmentDaily),
		TotalDaily: claudeq.Micros(cfg.QuotaTotalDaily), TotalMonthly: claudeq.Micros(cfg.QuotaTotalMonthly),
		Location: cfg.Timezone, Now: now, DoneTTL: max(48*time.Hour, cfg.IdempotencyTTL),
	})
	if err != nil {
		return api.Money{}, fmt.Errorf("quota: %w", err)
	}
	return api.Money{Pricing: table, Quota: q,
		Thresholds: routing.Thresholds{Sonnet: cfg.RoutingSonnetScore, Opus: cfg.RoutingOpusScore}}, nil
}
