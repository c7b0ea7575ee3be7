package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/claudeq"
	"os"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/devkit"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/quota"
)

// openQuota connects to CLAUDEQ_REDIS_URL, or to the Redis of a running
// claudeq dev (found through CLAUDEQ_DATA_DIR/dev.json).
func openQuota(getenv func(string) string) (*quota.Quota, func(), error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, nil, err
	}
	url := cfg.RedisURL.Reveal()
	if url == "" {
		b, err := os.ReadFile(devkit.DevInfoPath(cfg.DataDir))
		if err != nil {
			return nil, nil, errors.New("set CLAUDEQ_REDIS_URL, or start `claudeq dev` (its Redis is found through " + devkit.DevInfoPath(cfg.DataDir) + ")")
		}
		var info devkit.DevInfo
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, nil, err
		}
		url = info.RedisURL
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("CLAUDEQ_REDIS_URL: %w", err)
	}
	rdb := redis.NewClient(opt)
	q, err := quota.New(rdb, quota.Options{
		UserDaily: claudeq.Micros(cfg.QuotaUserDaily), DepartmentDaily: claudeq.Micros(cfg.QuotaDepartmentDaily),
		TotalDaily: claudeq.Micros(cfg.QuotaTotalDaily), TotalMonthly: claudeq.Micros(cfg.QuotaTotalMonthly), Location: cfg.Timezone,
	})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return q, func() { _ = rdb.Close() }, nil
}

func quotaCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{Use: "quota", Short: "Set and show budgets; rebuild the spent counters from the ledger"}

	var daily, monthly string
	set := &cobra.Command{
		Use:   "set user|department|total ID --daily-usd X [--monthly-usd Y]",
		Short: "Override a budget (ID - for total; 0 = unlimited)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if daily == "" && monthly == "" {
				return errors.New("give --daily-usd and/or --monthly-usd")
			}
			q, closeFn, err := openQuota(getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			scope := quota.Scope(args[0])
			if daily != "" {
				m, err := pricing.ParseUSD(daily)
				if err != nil {
					return fmt.Errorf("--daily-usd: %w", err)
				}
				if err := q.SetLimit(c.Context(), scope, args[1], claudeq.Micros(m)); err != nil {
					return err
				}
			}
			if monthly != "" {
				if scope != quota.ScopeTotal {
					return errors.New("--monthly-usd: only the total budget has one")
				}
				m, err := pricing.ParseUSD(monthly)
				if err != nil {
					return fmt.Errorf("--monthly-usd: %w", err)
				}
				if err := q.SetMonthlyLimit(c.Context(), claudeq.Micros(m)); err != nil {
					return err
				}
			}
			l, err := q.Limit(c.Context(), scope, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s %s: daily %s", scope, args[1], claudeq.Micros(l.Daily))
			if scope == quota.ScopeTotal {
				fmt.Fprintf(c.OutOrStdout(), ", monthly %s", claudeq.Micros(l.Monthly))
			}
			fmt.Fprintln(c.OutOrStdout(), " (0 = unlimited)")
			return nil
		},
	}
	set.Flags().StringVar(&daily, "daily-usd", "", "daily budget in USD")
	set.Flags().StringVar(&monthly, "monthly-usd", "", "monthly budget in USD (total only)")

	var user, dept string
	show := &cobra.Command{
		Use:   "show --user U [--department D]",
		Short: "Show limits, spent, reserved and what is left, per budget",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q, closeFn, err := openQuota(getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			st, err := q.Status(c.Context(), user, dept)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SCOPE\tPERIOD\tID\tLIMIT\tSPENT\tRESERVED\tLEFT\tRESETS")
			for _, s := range st {
				limit, left := claudeq.Micros(s.Limit).String(), claudeq.Micros(s.Left).String()
				if s.Unlimited {
					limit, left = "unlimited", "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Scope, s.Period, s.ID, limit, claudeq.Micros(s.Spent),
					claudeq.Micros(s.Reserved), left, s.ResetsAt.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	show.Flags().StringVar(&user, "user", "", "user id")
	show.Flags().StringVar(&dept, "department", "", "department")

	var day string
	rebuild := &cobra.Command{
		Use:   "rebuild [--day YYYY-MM-DD]",
		Short: "Rewrite a day's spent counters from the ledger (default: yesterday; today may double-count jobs being settled)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			q, closeFn, err := openQuota(getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			s, closeStore, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeStore()
			if day == "" {
				day = q.Day(time.Now().AddDate(0, 0, -1))
			}
			ctx, cancel := context.WithTimeout(c.Context(), 5*time.Minute)
			defer cancel()
			spent, err := s.LedgerSpentByUser(ctx, day)
			if err != nil {
				return err
			}
			entries := make([]quota.SpentEntry, 0, len(spent))
			var total int64
			for _, u := range spent {
				entries = append(entries, quota.SpentEntry{UserID: u.UserID, Department: u.Department, Spent: claudeq.Micros(u.CostMicros)})
				total += u.CostMicros
			}
			if err := q.Rebuild(ctx, day, entries); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "rebuilt %s from the ledger: %d users, %s spent\n", day, len(entries), claudeq.Micros(total))
			return nil
		},
	}
	rebuild.Flags().StringVar(&day, "day", "", "quota day to rebuild (YYYY-MM-DD)")
	cmd.AddCommand(set, show, rebuild)
	return cmd
}
