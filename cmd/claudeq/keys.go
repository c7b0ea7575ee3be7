package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
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
		b, err := os.ReadFile(app.DevInfoPath(cfg.DataDir))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, errors.New("set CLAUDEQ_MONGO_URI, or start `claudeq dev` (its store is found through " + app.DevInfoPath(cfg.DataDir) + ")")
		}
		if err != nil {
			return nil, nil, err
		}
		var info app.DevInfo
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", app.DevInfoPath(cfg.DataDir), err)
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

	var user, dept, tier, name string
	var admin bool
	create := &cobra.Command{
		Use:   "create --user U --department D [--tier T] [--admin]",
		Short: "Create an API key; it is printed once and only its SHA-256 is stored",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if strings.TrimSpace(user) == "" || strings.TrimSpace(dept) == "" {
				return errors.New("--user and --department are required")
			}
			s, closeFn, err := openStore(c.Context(), getenv)
			if err != nil {
				return err
			}
			defer closeFn()
			key, id := apikey.New()
			scopes := []string{claudeq.ScopeJobs, claudeq.ScopeBatches}
			if admin {
				scopes = append(scopes, claudeq.ScopeAdmin)
			}
			k := store.APIKey{ID: id, Hash: apikey.Hash(key), Prefix: apikey.Display(key), Name: name,
				UserID: user, Department: dept, Tier: tier, Scopes: scopes, CreatedAt: time.Now().UTC()}
			if err := s.CreateKey(c.Context(), k); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s\n", key)
			fmt.Fprintf(c.ErrOrStderr(), "created %s for user %q (department %q, tier %q, scopes %s); the key is shown only this once\n",
				id, user, dept, tier, strings.Join(scopes, ","))
			return nil
		},
	}
	create.Flags().StringVar(&user, "user", "", "user id the key acts as (required)")
	create.Flags().StringVar(&dept, "department", "", "department, for budgets and reports (required)")
	create.Flags().StringVar(&tier, "tier", "standard", "tier of the key")
	create.Flags().StringVar(&name, "name", "", "a label for lists")
	create.Flags().BoolVar(&admin, "admin", false, "grant the admin scope")

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
			fmt.Fprintln(w, "ID\tPREFIX\tUSER\tDEPARTMENT\tTIER\tSCOPES\tCREATED\tREVOKED")
			for _, k := range keys {
				rev := "-"
				if k.RevokedAt != nil {
					rev = k.RevokedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.UserID, k.Department, k.Tier,
					strings.Join(k.Scopes, ","), k.CreatedAt.UTC().Format(time.RFC3339), rev)
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
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
