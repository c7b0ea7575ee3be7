// Package devkit is claudeq dev: api, worker and scheduler in one process,
// with an embedded Redis (miniredis), an embedded MongoDB-wire server
// (FerretDB on SQLite) and the simulated upstream. Only cmd/claudeq imports
// it, so that the production binaries (api, worker, scheduler) do not link
// the embedded servers or the simulator.
package devkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/app/monitorui"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/devmongo"
	"github.com/claudeq/claudeq/internal/devredis"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
)

// DevInfo is what claudeq dev writes to DATA_DIR/dev.json so that the CLI
// (claudeq keys …) finds the running dev servers.
type DevInfo struct {
	API      string `json:"api"`
	RedisURL string `json:"redis_url"`
	MongoURI string `json:"mongo_uri"`
	Database string `json:"database"`
	PID      int    `json:"pid"`
}

// DevInfoPath is where claudeq dev writes its DevInfo.
func DevInfoPath(dataDir string) string { return filepath.Join(dataDir, "dev.json") }

// RunDev runs claudeq dev: everything in one process with an embedded Redis
// (miniredis, snapshotted to DATA_DIR on exit), an embedded FerretDB on
// SQLite under DATA_DIR, and the simulated upstream unless
// CLAUDEQ_UPSTREAM_API_KEY is set. Servers given by CLAUDEQ_REDIS_URL or
// CLAUDEQ_MONGO_URI are used instead of the embedded ones.
func RunDev(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, ready func(*app.App)) (err error) {
	env := func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		switch k {
		case "CLAUDEQ_LOG_FORMAT":
			return "text"
		case "CLAUDEQ_LOG_LEVEL":
			return "warn"
		case "CLAUDEQ_WEBHOOK_ALLOW":
			return "http://127.0.0.1,http://[::1]"
		// One machine, one user (and claudeq loadtest): rate limits off
		// unless set.
		case "CLAUDEQ_RATELIMIT_IP":
			return "off"
		case "CLAUDEQ_RATELIMIT_TIERS":
			return "standard=0/0"
		}
		return ""
	}
	cfg, err := config.Load(env)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := app.NewLogger(cfg, stderr)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("CLAUDEQ_DATA_DIR: %w", err)
	}
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	if cfg.RedisURL == "" {
		r, err := devredis.Start(devredis.Options{SnapshotPath: filepath.Join(cfg.DataDir, "redis.snapshot"), Logger: log})
		if err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		cleanup = append(cleanup, func() {
			if err := r.Close(); err != nil {
				log.Error("saving the embedded redis snapshot failed", "err", err)
			}
		})
		cfg.RedisURL = claudeq.Secret(r.URL())
		if cfg.CacheRedisURL == "" {
			cfg.CacheRedisURL = cfg.RedisURL
		}
	}
	if cfg.MongoURI == "" {
		uri, stop, err := devmongo.Start(ctx, filepath.Join(cfg.DataDir, "mongo"), log)
		if err != nil {
			return fmt.Errorf("embedded mongodb: %w", err)
		}
		cleanup = append(cleanup, stop)
		cfg.MongoURI = claudeq.Secret(uri)
	}
	upstreamNote := "upstream: " + cfg.UpstreamURL
	if len(cfg.Nodes) > 0 {
		upstreamNote = fmt.Sprintf("upstream: %d nodes from %s (%s)", len(cfg.Nodes), cfg.NodesFile, cfg.Balancer)
	} else if cfg.UpstreamAPIKey == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: sim.New(sim.Config{Logger: log}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		cleanup = append(cleanup, func() { _ = hs.Close() })
		cfg.UpstreamURL = "http://" + ln.Addr().String()
		cfg.UpstreamAPIKey = "sim"
		upstreamNote = "upstream: the built-in SIMULATOR at " + cfg.UpstreamURL + " (set CLAUDEQ_UPSTREAM_API_KEY to call Claude)"
	}
	securityNote, err := devSecurity(&cfg)
	if err != nil {
		return err
	}
	key, err := devKey(cfg)
	if err != nil {
		return err
	}
	a, err := app.Start(ctx, cfg, app.Options{Roles: app.Roles{API: true, Worker: true, Scheduler: true}, Logger: log, Monitor: monitorui.New})
	if err != nil {
		return err
	}
	cleanup = append(cleanup, func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+5*time.Second)
		defer cancel()
		if err := a.Shutdown(sctx); err != nil {
			log.Error("shutdown", "err", err)
		}
	})
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Store.PutKey(kctx, store.APIKey{
		ID: "key_dev", Hash: apikey.Hash(key), Prefix: apikey.Display(key), Name: "claudeq dev",
		UserID: "dev", Department: "dev", Tier: "opus",
		Scopes: []string{claudeq.ScopeJobs, claudeq.ScopeBatches, claudeq.ScopeAdmin}, CreatedAt: time.Now().UTC(),
	}); err != nil {
		return fmt.Errorf("store the dev key: %w", err)
	}
	info := DevInfo{API: "http://" + a.Addr(), RedisURL: cfg.RedisURL.Reveal(), MongoURI: cfg.MongoURI.Reveal(), Database: cfg.MongoDatabase, PID: os.Getpid()}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(DevInfoPath(cfg.DataDir), b, 0o600); err != nil {
		return err
	}
	cleanup = append(cleanup, func() { _ = os.Remove(DevInfoPath(cfg.DataDir)) })
	fmt.Fprintf(stdout, `claudeq dev is running (api, worker, scheduler in one process)
  api:      %s
  data:     %s
  %s
  %s
  API key (user "dev", every scope, admin included):
    %s

Try it:
  curl -s %s/api/claude/chat -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"prompt":"Say hello","model":"haiku"}'
  curl -s %s/api/claude/jobs/<id from above> -H 'Authorization: Bearer %s'
Stop with Ctrl-C; queued jobs and results are kept in %s.
`, info.API, cfg.DataDir, upstreamNote, securityNote, key, info.API, key, info.API, key, cfg.DataDir)
	if ready != nil {
		ready(a)
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "claudeq dev: stopping")
	return nil
}

// devKey returns CLAUDEQ_DEV_API_KEY, else the key kept in DATA_DIR, else a
// new one that is then kept there.
func devKey(cfg config.Config) (string, error) {
	if cfg.DevAPIKey != "" {
		return cfg.DevAPIKey.Reveal(), nil
	}
	p := filepath.Join(cfg.DataDir, "dev-api-key")
	b, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	k, _ := apikey.New()
	return k, os.WriteFile(p, []byte(k+"\n"), 0o600)
}

// devSecurity fills claudeq dev's defaults for encryption at rest (a key
// generated once and kept in DATA_DIR/encryption.keys) and the audit spill
// directory (DATA_DIR/audit-spill), and returns the banner line about it.
func devSecurity(cfg *config.Config) (string, error) {
	if cfg.AuditSpillDir == "" {
		cfg.AuditSpillDir = filepath.Join(cfg.DataDir, "audit-spill")
	}
	if cfg.EncryptionKeys != "" {
		return "encryption at rest: keys from CLAUDEQ_ENCRYPTION_KEYS", nil
	}
	spec, created, err := crypt.LoadOrCreateDevKey(cfg.DataDir)
	if err != nil {
		return "", fmt.Errorf("encryption key: %w", err)
	}
	cfg.EncryptionKeys = claudeq.Secret(spec)
	path := filepath.Join(cfg.DataDir, crypt.DevKeyFile)
	if created {
		return "encryption at rest: generated a key in " + path + " (keep it: without it the stored results cannot be read)", nil
	}
	return "encryption at rest: key from " + path, nil
}
