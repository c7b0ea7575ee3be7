package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/api"
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/cache"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/devmongo"
	"github.com/claudeq/claudeq/internal/pricing"
	"github.com/claudeq/claudeq/internal/redisbatch"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/upstream"
)

// Figure 7 runs the simulator and the gateway as processes of their own, so
// that they can be pinned to a core and given GOMAXPROCS=1: the bench
// binary starts itself again with ChildEnv naming the role. A binary
// that embeds the bench (scripts/bench, this package's tests) calls
// RunChild first when IsChild.

// ChildEnv names the role of a child process: "sim", "gateway-on",
// "gateway-off" or "proxy".
const ChildEnv = "CLAUDEQ_BENCH_CHILD"

// childProfileEnv, when set in a child, is where it writes its CPU profile
// (from start to shutdown); "%s" in it becomes "<role>-<pid>".
const childProfileEnv = "CLAUDEQ_BENCH_CPUPROFILE"

const readyPrefix = "CLAUDEQ_BENCH_READY "

// childMongoDirEnv is the data directory of a "mongo" child.
const childMongoDirEnv = "CLAUDEQ_BENCH_MONGO_DIR"

// IsChild reports whether this process is a figure-7 child.
func IsChild() bool { return os.Getenv(ChildEnv) != "" }

// RunChild serves the role named by ChildEnv until SIGTERM and returns the
// exit code:
//
//   - sim: the simulated upstream at zero latency;
//   - gateway-on: the api role exactly as cmd/api runs it, configured by
//     the CLAUDEQ_* variables (auth, content policy, budgets, audit,
//     ledger, fleet accounting, metrics);
//   - gateway-off: the same Messages API handler with authentication,
//     budgets, pricing, ledger, audit and content policy off: only the
//     fleet (node choice and its shared accounting in Redis) between the
//     client and the node;
//   - proxy: a bare httputil.ReverseProxy to the simulator, the floor;
//   - storeload: audit records appended to a store at a given rate
//     (storeLoad), figure 8's control;
//   - mongo: the embedded FerretDB (devmongo) with its data under the
//     directory named by CLAUDEQ_BENCH_MONGO_DIR (figure 8's store).
//
// It prints "CLAUDEQ_BENCH_READY <base URL>" once it serves.
func RunChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if p := os.Getenv(childProfileEnv); p != "" {
		// "%s" in the path becomes the role and the process id, so that
		// one bench run keeps every child's profile.
		defer profile(strings.ReplaceAll(p, "%s", fmt.Sprintf("%s-%d", os.Getenv(ChildEnv), os.Getpid())))()
	}
	var err error
	switch role := os.Getenv(ChildEnv); role {
	case "sim":
		var url string
		var closeFn func()
		_, url, closeFn, err = sim.Listen("127.0.0.1:0", sim.Config{})
		if err == nil {
			fmt.Println(readyPrefix + url)
			<-ctx.Done()
			closeFn()
		}
	case "gateway-on":
		err = app.Run(ctx, app.Options{Roles: app.Roles{API: true}}, os.Getenv, os.Stderr, func(a *app.App) {
			fmt.Println(readyPrefix + "http://" + a.Addr())
		})
	case "gateway-off":
		err = gatewayOff(ctx)
	case "proxy":
		err = bareProxy(ctx)
	case "storeload":
		err = storeLoad(ctx)
	case "mongo":
		var uri string
		var stopMongo func()
		uri, stopMongo, err = devmongo.Start(ctx, os.Getenv(childMongoDirEnv), slog.New(errorsTo{w: os.Stderr}))
		if err == nil {
			fmt.Println(readyPrefix + uri)
			<-ctx.Done()
			stopMongo()
		}
	default:
		err = fmt.Errorf("%s=%q: want sim, gateway-on, gateway-off, proxy or mongo", ChildEnv, role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	return 0
}

// gatewayOff serves POST /v1/messages with everything but the fleet off.
func gatewayOff(ctx context.Context) error {
	ropt, err := redis.ParseURL(os.Getenv("CLAUDEQ_REDIS_URL"))
	if err != nil {
		return err
	}
	ropt.PoolSize = 64
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	fleet, err := upstream.NewFleet([]upstream.NodeConfig{{Name: "default", URL: os.Getenv("CLAUDEQ_UPSTREAM_URL"),
		APIKey: claudeq.Secret("sim-key"), Weight: 1}},
		upstream.FleetOptions{Redis: rdb, HTTPClient: upstream.DefaultHTTPClient(), Timeout: 5 * time.Minute})
	if err != nil {
		return err
	}
	bg := redisbatch.New(rdb, 5*time.Millisecond, 0) // as the api role has it
	defer func() { _ = bg.Close(context.Background()) }()
	fleet.SetBackground(bg)
	srv := api.New(api.Deps{
		Models: api.FixedModels(claudeq.NewCatalog(pricing.Default().Catalog(), nil)), Cache: cache.New(rdb, 0),
		Options: api.Options{MaxBodyBytes: 1 << 20, DefaultMaxTokens: 1024},
		Interactive: api.Interactive{Upstream: fleet, Anonymous: &claudeq.Principal{KeyID: "bench", UserID: "bench",
			Department: "bench", Tier: "standard", Scopes: []string{claudeq.ScopeJobs}}},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Println(readyPrefix + "http://" + ln.Addr().String())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return srv.Drain(sctx)
}

// bareProxy serves a plain httputil.ReverseProxy to the simulator: what
// any Go gateway pays before it does anything.
func bareProxy(ctx context.Context) error {
	target, err := url.Parse(os.Getenv("CLAUDEQ_UPSTREAM_URL"))
	if err != nil {
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = upstream.DefaultHTTPClient().Transport
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Println(readyPrefix + "http://" + ln.Addr().String())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

// child is a running figure-7 child process.
type child struct {
	cmd  *exec.Cmd
	URL  string
	done chan error
	once sync.Once
	log  string // its stderr
}

// startChild starts role with extra environment (KEY=value), on the CPUs
// of cpus ("0", "1"; empty: anywhere) via taskset, its stderr in
// dir/<role>-<n>.log, and waits until it serves.
func startChild(ctx context.Context, dir, role, cpus string, env ...string) (*child, error) {
	var wrap []string
	if cpus != "" {
		wrap = []string{"taskset", "-c", cpus}
	}
	return launchChild(ctx, dir, role, wrap, env...)
}

// launchChild is startChild with the command the child runs under (e.g.
// nice, taskset and their arguments; empty: none).
func launchChild(ctx context.Context, dir, role string, wrap []string, env ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append(slices.Clone(wrap), exe)
	logf, err := os.CreateTemp(dir, role+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), ChildEnv+"="+role), env...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), log: logf.Name()}
	url := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), readyPrefix); ok {
				url <- u
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		c.done <- cmd.Wait()
		_ = logf.Close()
	}()
	select {
	case c.URL = <-url:
		return c, nil
	case err := <-c.done:
		b, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("%s exited before serving (%v): %s", role, err, lastLines(string(b), 5))
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, fmt.Errorf("%s did not serve within 60s; log in %s", role, filepath.Base(logf.Name()))
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// stop ends the child with SIGTERM (SIGKILL after 20 s) and waits for it.
// A second stop does nothing.
func (c *child) stop() {
	if c == nil || c.cmd.Process == nil {
		return
	}
	c.once.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// logTail returns the last n lines of the child's stderr.
func (c *child) logTail(n int) string {
	b, _ := os.ReadFile(c.log)
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pin moves every thread of process pid to cpus with taskset.
func pin(pid int, cpus string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, fmt.Sprint(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", cpus, pid, err, out)
	}
	return nil
}

// allowedCPUs returns this process's CPU list (Cpus_allowed_list).
func allowedCPUs() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

var errNoTaskset = errors.New("taskset not found")

func haveTaskset() error {
	if _, err := exec.LookPath("taskset"); err != nil {
		return errNoTaskset
	}
	return nil
}
