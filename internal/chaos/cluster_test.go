//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/store"
)

// simOptions are the simulator flags of a cluster's upstream nodes.
type simOptions struct {
	Latency, Jitter time.Duration
	FaultRate       float64
	Faults          string        // --faults; default the simulator's
	RetryAfter      time.Duration // of injected 429s
	Timeout         time.Duration // how long a timeout fault hangs
}

// clusterOptions shape a cluster.
type clusterOptions struct {
	Nodes    int // simulated upstream nodes, default 1
	Sim      simOptions
	Env      map[string]string // overrides of the roles' environment
	Webhooks bool              // a webhook receiver; jobs carry its URL
	// AnsweredOnce adds the accounting rule that no job is sent upstream
	// again once a call of it was answered: an answer that was paid for
	// is kept until it is billed. Only for scenarios where no worker
	// process dies (a killed worker loses what it held).
	AnsweredOnce bool
}

// cluster is one installation of claudeq made of separate processes: a
// redis-server with AOF, the MongoDB-wire store (FerretDB, cmd mongoserver),
// simulated upstream nodes, and api, worker and scheduler processes started
// on demand.
type cluster struct {
	t     *testing.T
	dir   string
	redis *redistest.Server
	mongo *proc // the MongoDB-wire store (FerretDB), a process of its own
	db    *mongo.Database
	store *store.Store
	sims  []*simNode
	env   map[string]string
	hooks *receiver

	apis, workers, schedulers []*role
	answeredOnce              bool
}

type simNode struct {
	*proc
	addr, log string
}

// role is an api, worker or scheduler process.
type role struct {
	*proc
	admin string // the admin listener: /metrics, /livez
	http  string // the api's address
}

// URL returns the api's base URL.
func (r *role) URL() string { return "http://" + r.http }

// newCluster starts Redis, the store and the simulated nodes. Roles are
// started by the scenario.
func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	c := &cluster{t: t, dir: t.TempDir(), answeredOnce: o.AnsweredOnce}
	c.redis = redistest.New(t, redistest.WithAOF(), redistest.WithArgs("--maxmemory", "1gb", "--maxmemory-policy", "noeviction",
		// Every acknowledged write survives a SIGKILL, as deployments/ runs
		// the queue Redis (see docs/reliability.md).
		"--appendfsync", "always"))
	mongoAddr := freeAddr(t)
	c.mongo = newProc(t, c.dir, "mongoserver", bins.mongo, []string{"--addr", mongoAddr, "--dir", filepath.Join(c.dir, "mongo")}, nil)
	c.mongo.ready = func() bool { return dialable(mongoAddr) }
	c.mongo.start()
	uri, dbName := "mongodb://"+mongoAddr+"/", "claudeq"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, off, err := store.Connect(ctx, uri, dbName)
	require.NoError(t, err)
	t.Cleanup(func() { _ = off(context.Background()) })
	c.db = db
	c.store = store.New(c.db)
	require.NoError(t, c.store.EnsureIndexes(ctx))

	if o.Nodes == 0 {
		o.Nodes = 1
	}
	var nodes strings.Builder
	nodes.WriteString("nodes:\n")
	for i := range o.Nodes {
		n := c.newSim(i, o.Sim)
		c.sims = append(c.sims, n)
		fmt.Fprintf(&nodes, "  - name: sim%d\n    url: http://%s\n    api_key: sim-key\n", i, n.addr)
	}
	nodesFile := filepath.Join(c.dir, "nodes.yaml")
	require.NoError(t, os.WriteFile(nodesFile, []byte(nodes.String()), 0o600))
	for _, n := range c.sims {
		n.start()
	}

	c.env = map[string]string{
		"CLAUDEQ_REDIS_URL":                   c.redis.URL(),
		"CLAUDEQ_MONGO_URI":                   uri,
		"CLAUDEQ_MONGO_DATABASE":              dbName,
		"CLAUDEQ_NODES_FILE":                  nodesFile,
		"CLAUDEQ_KEY_CACHE_TTL":               "10m",
		"CLAUDEQ_RETRY_BASE":                  "200ms",
		"CLAUDEQ_RETRY_MAX":                   "2s",
		"CLAUDEQ_DELAYED_TASK_CHECK_INTERVAL": "200ms",
		"CLAUDEQ_SHUTDOWN_TIMEOUT":            "5s",
		"CLAUDEQ_LOG_LEVEL":                   "warn",
		"CLAUDEQ_RATELIMIT_TIERS":             "standard=0/0",
		"CLAUDEQ_RATELIMIT_IP":                "off",
		"CLAUDEQ_WEBHOOK_ALLOW":               "http://127.0.0.1",
		"CLAUDEQ_WEBHOOK_SCHEDULE":            "0,1s,2s,4s,4s,4s,4s,4s",
		"CLAUDEQ_RECONCILE_INTERVAL":          "5s",
		"CLAUDEQ_QUOTA_RECONCILE_AFTER":       "20s",
		"CLAUDEQ_HEALTH_INTERVAL":             "5s",
		"CLAUDEQ_MONITORING":                  "off",
	}
	for k, v := range o.Env {
		c.env[k] = v
	}
	if o.Webhooks {
		c.hooks = newReceiver(t)
	}
	return c
}

func (c *cluster) newSim(i int, o simOptions) *simNode {
	addr := freeAddr(c.t)
	log := filepath.Join(c.dir, fmt.Sprintf("sim%d.requests.jsonl", i))
	args := []string{"--addr", addr, "--api-key", "sim-key", "--log-level", "warn", "--request-log", log,
		"--latency", o.Latency.String(), "--latency-jitter", o.Jitter.String(),
		"--fault-rate", strconv.FormatFloat(o.FaultRate, 'f', -1, 64)}
	if o.Faults != "" {
		args = append(args, "--faults", o.Faults)
	}
	if o.RetryAfter > 0 {
		args = append(args, "--retry-after", o.RetryAfter.String())
	}
	if o.Timeout > 0 {
		args = append(args, "--timeout", o.Timeout.String())
	}
	n := &simNode{addr: addr, log: log}
	n.proc = newProc(c.t, c.dir, fmt.Sprintf("sim%d", i), bins.sim, args, nil)
	n.ready = func() bool { return dialable(addr) }
	return n
}

// newRole describes a role process with its own admin listener; start runs
// it and waits for /livez (and, for the api, its HTTP port).
func (c *cluster) newRole(kind string, n int, over ...string) *role {
	c.t.Helper()
	r := &role{admin: freeAddr(c.t)}
	env := map[string]string{}
	for k, v := range c.env {
		env[k] = v
	}
	env["CLAUDEQ_METRICS_ADDR"] = r.admin
	bin := map[string]string{"api": bins.api, "worker": bins.worker, "scheduler": bins.scheduler}[kind]
	name := fmt.Sprintf("%s%d", kind, n)
	if kind == "api" {
		r.http = freeAddr(c.t)
		env["CLAUDEQ_HTTP_ADDR"] = r.http
		env["CLAUDEQ_PUBLIC_URL"] = "http://" + r.http
		env["CLAUDEQ_AUDIT_SPILL_DIR"] = filepath.Join(c.dir, name+"-audit-spill")
	}
	for i := 0; i+1 < len(over); i += 2 {
		env[over[i]] = over[i+1]
	}
	r.proc = newProc(c.t, c.dir, name, bin, nil, env)
	r.ready = func() bool {
		return answers("http://"+r.admin+"/livez") && (r.http == "" || dialable(r.http))
	}
	return r
}

// startAPI starts an api process.
func (c *cluster) startAPI(over ...string) *role {
	c.t.Helper()
	r := c.newRole("api", len(c.apis), over...)
	r.start()
	c.apis = append(c.apis, r)
	return r
}

// startWorker starts a worker process running concurrency jobs at once.
func (c *cluster) startWorker(concurrency int, over ...string) *role {
	c.t.Helper()
	r := c.newRole("worker", len(c.workers), append([]string{"CLAUDEQ_WORKER_CONCURRENCY", strconv.Itoa(concurrency)}, over...)...)
	r.start()
	c.workers = append(c.workers, r)
	return r
}

// startScheduler starts a scheduler process.
func (c *cluster) startScheduler(over ...string) *role {
	c.t.Helper()
	r := c.newRole("scheduler", len(c.schedulers), over...)
	r.start()
	c.schedulers = append(c.schedulers, r)
	return r
}

// user is an API key and whom it belongs to.
type user struct {
	Key, ID, Dept string
}

// user creates an API key for id in department dept.
func (c *cluster) user(id, dept string) user {
	c.t.Helper()
	key, kid := apikey.New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(c.t, c.store.CreateKey(ctx, store.APIKey{ID: kid, Hash: apikey.Hash(key), UserID: id, Department: dept,
		Tier: "standard", Scopes: []string{claudeq.ScopeJobs}, CreatedAt: time.Now().UTC()}))
	return user{Key: key, ID: id, Dept: dept}
}

// requireRunning fails the test if a process of the cluster that should
// run has exited (crashed in the chaos).
func (c *cluster) requireRunning() {
	c.t.Helper()
	for _, group := range [][]*role{c.apis, c.workers, c.schedulers} {
		for _, r := range group {
			require.True(c.t, r.running(), "%s exited: %v\n%s", r.name, r.waitErr(), tail(r.logPath, 20))
		}
	}
}
