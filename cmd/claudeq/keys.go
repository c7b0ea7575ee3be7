package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/devkit"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/store"
)

// openStore connects to CLAUDEQ_MONGO_URI, or to the store of a running
// claudeq dev (found through CLAUDEQ_DATA_DIR/dev.json).
func openStore(ctx context.Context, getenv func(string) string) (*store.Store, func(), error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, nil, err
	}
	uri, dbName := cfg.MongoURI.Reveal(), cfg.MongoDatabase
	if uri == "" {
		b, err := os.ReadFile(devkit.DevInfoPath(cfg.DataDir))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, errors.New("set CLAUDEQ_MONGO_URI, or start `claudeq dev` (its store is found through " + devkit.DevInfoPath(cfg.DataDir) + ")")
		}
		if err != nil {
			return nil, nil, err
		}
		var info devkit.DevInfo
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", devkit.DevInfoPath(cfg.DataDir), err)
		}
		uri, dbName = info.MongoURI, info.Database
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	db, off, err := store.Connect(cctx, uri, dbName)
	if err != nil {
		return nil, nil, err
	}
	s := store.New(db)
	if err := s.Ping(cctx); err != nil {
		_ = off(context.Background())
		return nil, nil, fmt.Errorf("mongodb not reachable: %w", err)
	}
	if err := s.EnsureIndexes(cctx); err != nil {
		_ = off(context.Background())
		return nil, nil, err
	}
	return s, func() { _ = off(context.Background()) }, nil
}

func keysCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create, list and revoke API keys"}

	var user, dept, tier, name, expires, policyAction string
	var admin bool
	var scopes []string
	create := &cobra.Command{
		Use:   "create --user U --department D [--tier T] [--admin]",
		Short: "Create an API key; it is printed once and only its SHA-256 is stored",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if strings.TrimSpace(user) == "" || strings.TrimSpace(dept) == "" {
				return errors.New("--user and --department are required")
			}
			sc := slices.Clone(scopes)
			if admin && !slices.Contains(sc, claudeq.ScopeAdmin) {
				sc = append(sc, claudeq.ScopeAdmin)
			}
			k, key, err := api.NewKey(user, dept, tier, name, sc, expires, time.Now())
			if err != nil {
				return errors.New(claudeq.ErrorMessage(err))
			}
			if policyAction != "" {
				a, err := policy.ParseAction(policyAction)
				if err != nil {
					return fmt.Errorf("--policy-action: %w", err)
				}
				k.PolicyAction = string(a)
			}
			s, closeFn, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			if err := s.CreateKey(c.Context(), k); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s\n", key)
			fmt.Fprintf(c.ErrOrStderr(), "created %s for user %q (department %q, tier %q, scopes %s); the key is shown only this once\n",
				k.ID, k.UserID, k.Department, k.Tier, strings.Join(k.Scopes, ","))
			return auditCLI(c.Context(), getenv, s, audit.ActionKeyCreated, k.ID)
		},
	}
	create.Flags().StringVar(&user, "user", "", "user id the key acts as (required)")
	create.Flags().StringVar(&dept, "department", "", "department, for budgets and reports (required)")
	create.Flags().StringVar(&tier, "tier", "standard", "tier of the key")
	create.Flags().StringVar(&name, "name", "", "a label for lists")
	create.Flags().BoolVar(&admin, "admin", false, "grant the admin scope")
	create.Flags().StringSliceVar(&scopes, "scopes", []string{claudeq.ScopeJobs, claudeq.ScopeBatches}, "scopes: jobs, batches, admin, admin:read")
	create.Flags().StringVar(&expires, "expires-in", "", "expire the key after this long, e.g. 2160h (default: never)")
	create.Flags().StringVar(&policyAction, "policy-action", "", "content policy for this key: block, redact or allow (default: the department's, else CLAUDEQ_POLICY_ACTION)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never the keys themselves)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, closeFn, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			keys, err := s.Keys(c.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPREFIX\tUSER\tDEPARTMENT\tTIER\tSCOPES\tCREATED\tEXPIRES\tREVOKED\tLAST USED")
			ts := func(t *time.Time) string {
				if t == nil {
					return "-"
				}
				return t.UTC().Format(time.RFC3339)
			}
			for _, k := range keys {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.UserID, k.Department, k.Tier,
					strings.Join(k.Scopes, ","), k.CreatedAt.UTC().Format(time.RFC3339), ts(k.ExpiresAt), ts(k.RevokedAt), ts(k.LastUsedAt))
			}
			return w.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke an API key by id; api replicas refuse it within CLAUDEQ_KEY_CACHE_TTL",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			s, closeFn, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			if err := s.RevokeKey(c.Context(), args[0], time.Now().UTC()); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "revoked %s\n", args[0])
			return auditCLI(c.Context(), getenv, s, audit.ActionKeyRevoked, args[0])
		},
	}
	var grace time.Duration
	rotate := &cobra.Command{
		Use:   "rotate KEY_ID [--grace 24h]",
		Short: "Issue a new key with the same user, department, tier and scopes; the old one works for the grace period",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			s, closeFn, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			now := time.Now()
			key, id := apikey.New()
			next := store.APIKey{ID: id, Hash: apikey.Hash(key), Prefix: apikey.Display(key), CreatedAt: now.UTC()}
			if err := s.RotateKey(c.Context(), args[0], next, now.Add(grace)); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s\n", key)
			fmt.Fprintf(c.ErrOrStderr(), "created %s replacing %s, which stops working at %s; the key is shown only this once\n",
				id, args[0], now.Add(grace).UTC().Format(time.RFC3339))
			return auditCLI(c.Context(), getenv, s, audit.ActionKeyRotated, args[0]+" -> "+id)
		},
	}
	rotate.Flags().DurationVar(&grace, "grace", api.DefaultRotationGrace, "how long the old key keeps working")
	cmd.AddCommand(create, list, revoke, rotate, rotateDataKeyCmd(getenv))
	return cmd
}
