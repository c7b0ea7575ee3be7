package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/app/monitorui"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/mongotest"
	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/store"
)

// testEnv is one isolated installation: its own redis-server, its own
// database on the MongoDB-wire server, its own simulated upstream.
type testEnv struct {
	t         *testing.T
	redis     *redistest.Server
	db        *mongo.Database
	store     *store.Store
	sim       *sim.Server
	simURL    string
	env       map[string]string
	mongoSv   *mongotest.Server
	redisOpts []redistest.Option
	sims      []*sim.Server // extra nodes (withNodes)
}

type envOption func(*testEnv)

// withRedis passes options to the env's redis-server.
func withRedis(opts ...redistest.Option) envOption {
	return func(e *testEnv) { e.redisOpts = append(e.redisOpts, opts...) }
}

// withOwnMongo gives the env a MongoDB-wire server of its own that the test
// can stop and start.
func withOwnMongo() envOption {
	return func(e *testEnv) { e.mongoSv = mongotest.NewServer(e.t) }
}

func newEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	for _, o := range opts {
		o(e)
	}
	e.redis = redistest.New(t, e.redisOpts...)
	uri := ""
	if e.mongoSv != nil {
		uri = e.mongoSv.URI()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		db, off, err := store.Connect(ctx, uri, "claudeq")
		require.NoError(t, err)
		t.Cleanup(func() { _ = off(context.Background()) })
		e.db = db
	} else {
		e.db = mongotest.DB(t)
		uri = mongotest.URI(t)
	}
	e.store = store.New(e.db)
	e.sim = sim.New(sim.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: e.sim}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	e.simURL = "http://" + ln.Addr().String()
	e.env = map[string]string{
		"CLAUDEQ_HTTP_ADDR":                   "127.0.0.1:0",
		"CLAUDEQ_REDIS_URL":                   e.redis.URL(),
		"CLAUDEQ_MONGO_URI":                   uri,
		"CLAUDEQ_MONGO_DATABASE":              e.db.Name(),
		"CLAUDEQ_UPSTREAM_URL":                e.simURL,
		"CLAUDEQ_UPSTREAM_API_KEY":            "sim-key",
		"CLAUDEQ_KEY_CACHE_TTL":               "0s",
		"CLAUDEQ_RETRY_BASE":                  "100ms",
		"CLAUDEQ_RETRY_MAX":                   "1s",
		"CLAUDEQ_DELAYED_TASK_CHECK_INTERVAL": "200ms",
		"CLAUDEQ_SHUTDOWN_TIMEOUT":            "10s",
		"CLAUDEQ_LOG_LEVEL":                   "warn",
		// Load-bearing tests send more than a key's default rate; the rate
		// limit tests set their own.
		"CLAUDEQ_RATELIMIT_TIERS": "standard=0/0",
		"CLAUDEQ_RATELIMIT_IP":    "off",
	}
	return e
}

// getenv returns the env's configuration with overrides.
func (e *testEnv) getenv(over ...string) func(string) string {
	m := make(map[string]string, len(e.env))
	for k, v := range e.env {
		m[k] = v
	}
	for i := 0; i+1 < len(over); i += 2 {
		m[over[i]] = over[i+1]
	}
	return config.Map(m)
}

// run starts roles through app.Run, the binaries' run function, and stops
// them at cleanup (or when the returned stop is called).
func (e *testEnv) runWithLogs(roles app.Roles, over ...string) (*app.App, func(), *lockedWriter) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *app.App, 1)
	done := make(chan error, 1)
	logs := &lockedWriter{w: &bytes.Buffer{}}
	e.t.Cleanup(func() {
		if e.t.Failed() || os.Getenv("CLAUDEQ_TEST_LOGS") == "1" {
			e.t.Logf("logs of %+v:\n%s", roles, logs.String())
		}
	})
	go func() {
		done <- app.Run(ctx, app.Options{Roles: roles, Monitor: monitorui.New}, e.getenv(over...), logs, func(a *app.App) { ready <- a })
	}()
	var a *app.App
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		e.t.Fatalf("app.Run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		e.t.Fatal("app.Run did not become ready")
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(e.t, err)
		case <-time.After(30 * time.Second):
			e.t.Error("app.Run did not stop")
		}
	}
	e.t.Cleanup(stop)
	return a, stop, logs
}

// run is runWithLogs without the logs.
func (e *testEnv) run(roles app.Roles, over ...string) (*app.App, func()) {
	e.t.Helper()
	a, stop, _ := e.runWithLogs(roles, over...)
	return a, stop
}

// all starts api, worker and scheduler and returns the api's base URL.
func (e *testEnv) all(over ...string) string {
	a, _ := e.run(app.Roles{API: true, Worker: true, Scheduler: true}, over...)
	return "http://" + a.Addr()
}

// key creates an API key for user in department, with scopes (default jobs).
func (e *testEnv) key(user, dept string, scopes ...string) (key, id string) {
	e.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{claudeq.ScopeJobs}
	}
	key, id = apikey.New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(e.t, e.store.EnsureIndexes(ctx))
	require.NoError(e.t, e.store.CreateKey(ctx, store.APIKey{ID: id, Hash: apikey.Hash(key), UserID: user, Department: dept,
		Tier: "standard", Scopes: scopes, CreatedAt: time.Now().UTC()}))
	return key, id
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &m), "body: %s", r.Body)
	return m
}

// do sends a request as a client would.
func do(t *testing.T, method, url, key string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// submit posts a chat job and returns its id.
func submit(t *testing.T, base, key string, body map[string]any, headers ...string) string {
	t.Helper()
	r := do(t, "POST", base+"/api/claude/chat", key, body, headers...)
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	m := r.json(t)
	require.Equal(t, "queued", m["status"])
	require.Equal(t, "/api/claude/jobs/"+m["id"].(string), m["status_url"])
	return m["id"].(string)
}

// wait polls a job until it is terminal and returns it.
func wait(t *testing.T, base, key, id string, within time.Duration) map[string]any {
	t.Helper()
	var last map[string]any
	require.Eventually(t, func() bool {
		r := do(t, "GET", base+"/api/claude/jobs/"+id, key, nil)
		if r.Status != http.StatusOK {
			return false
		}
		last = r.json(t)
		s := last["status"]
		return s == "succeeded" || s == "failed" || s == "canceled"
	}, within, 50*time.Millisecond, "job %s not terminal; last: %v", id, last)
	return last
}

func (e *testEnv) count(coll string, filter bson.D) int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := e.db.Collection(coll).CountDocuments(ctx, filter)
	require.NoError(e.t, err)
	return n
}

// lockedWriter serialises writes from concurrent loggers.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func asynqInspector(t *testing.T, e *testEnv) *asynq.Inspector {
	t.Helper()
	return asynq.NewInspectorFromRedisClient(e.redis.Client(t))
}
