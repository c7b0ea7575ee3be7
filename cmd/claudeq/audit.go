package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/devkit"
	"github.com/claudeq/claudeq/internal/store"
)

// openAudit returns the audit chain in s's database, with the queue Redis
// (CLAUDEQ_REDIS_URL, or the running claudeq dev's) when it answers, and
// CLAUDEQ_AUDIT_HMAC_KEY. Without Redis the chain still appends correctly
// (optimistically) and verifies every record and anchor; only the check of
// the tail against the Redis head is lost.
func openAudit(ctx context.Context, getenv func(string) string, s *store.Store) (*audit.Chain, func(), error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, nil, err
	}
	url := cfg.RedisURL.Reveal()
	if url == "" && cfg.MongoURI == "" {
		if b, err := os.ReadFile(devkit.DevInfoPath(cfg.DataDir)); err == nil {
			var info devkit.DevInfo
			if json.Unmarshal(b, &info) == nil {
				url = info.RedisURL
			}
		}
	}
	var rdb *redis.Client
	closeFn := func() {}
	if url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, fmt.Errorf("CLAUDEQ_REDIS_URL: %w", err)
		}
		rdb = redis.NewClient(opt)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rdb.Ping(pctx).Err(); err != nil {
			_ = rdb.Close()
			rdb = nil
		} else {
			closeFn = func() { _ = rdb.Close() }
		}
	}
	c, err := audit.New(audit.Config{DB: s.DB(), Redis: rdbOrNil(rdb), Key: cfg.AuditKey()})
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return c, closeFn, nil
}

// rdbOrNil keeps a nil *redis.Client from becoming a non-nil interface.
func rdbOrNil(c *redis.Client) redis.UniversalClient {
	if c == nil {
		return nil
	}
	return c
}

// auditCLI appends an admin action done through the CLI to the audit log,
// synchronously. The actor is the operating-system user ($USER).
func auditCLI(ctx context.Context, getenv func(string) string, s *store.Store, action, target string) error {
	c, closeFn, err := openAudit(ctx, getenv, s)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	defer closeFn()
	if err := c.EnsureIndexes(ctx); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	user := getenv("USER")
	if user == "" {
		user = "unknown"
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = c.Append(actx, &audit.Record{Kind: audit.KindAdmin, UserID: "cli:" + user, UserAgent: "claudeq-cli",
		Decision: audit.DecisionAllowed, Action: action, Target: target})
	if err != nil {
		return fmt.Errorf("audit log: the %s of %s was done but could not be recorded: %w", action, target, err)
	}
	return nil
}

func auditCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Check the tamper-evident audit log"}
	var asJSON bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Walk the whole audit chain and report the first missing or altered record",
		Long: `Walk the audit chain from its first record, checking every hash, every link,
every anchor and the chain head in Redis. Exits 1 when the chain is broken,
naming the first bad record. Needs CLAUDEQ_MONGO_URI (or a running claudeq
dev), CLAUDEQ_AUDIT_HMAC_KEY when the writers use one, and CLAUDEQ_REDIS_URL
for the check of the tail.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, closeStore, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeStore()
			chain, closeAudit, err := openAudit(c.Context(), getenv, s)
			if err != nil {
				return err
			}
			defer closeAudit()
			rep, err := chain.Verify(c.Context())
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if asJSON {
				b, _ := json.MarshalIndent(map[string]any{"ok": rep.OK(), "report": rep}, "", "  ")
				fmt.Fprintln(out, string(b))
			} else if rep.OK() {
				fmt.Fprintf(out, "audit log intact: %d records checked, %d anchors, head %d\n", rep.Checked, rep.Anchors, rep.Head)
			} else {
				fmt.Fprintf(out, "audit log BROKEN at record %d: %s (%d records before it check out; head %d)\n",
					*rep.FirstBroken, rep.Reason, rep.Checked, rep.Head)
			}
			if !rep.OK() {
				return errors.New("audit log verification failed")
			}
			return nil
		},
	}
	verify.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(verify)
	return cmd
}
