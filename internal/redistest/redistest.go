// Package redistest starts real Redis servers for tests.
//
// [New] runs a dedicated `redis-server` child process per call, on a free
// 127.0.0.1 port, with its data and log in t.TempDir(); it is killed at
// t.Cleanup. The server can be killed with SIGKILL and restarted on the same
// port and data directory to test crash recovery (use [WithAOF] to make data
// survive that).
//
// The binary is $CLAUDEQ_REDIS_SERVER if set, else `redis-server` from PATH.
// Without a binary, if $CLAUDEQ_TEST_REDIS_URL is set, New instead hands out
// a database (1–15, leased so that parallel tests and test binaries never
// share one, and flushed before use) on that external server; Kill and
// Restart then skip the test. Otherwise the test is skipped — or fails, when
// $CLAUDEQ_REQUIRE_INTEGRATION=1 (set it in CI so that a missing
// redis-server cannot silently turn integration tests into skips).
//
// If a test fails, the last lines of the server's log are printed with t.Log
// at cleanup.
//
// All functions and methods are safe for concurrent use. Methods that report
// failure through t.Fatal or t.Skip (New, Kill, Restart, Client) must be
// called from the test's goroutine, as the testing package requires.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/testport"
)

// Environment variables read by this package.
const (
	// EnvRedisServer is the path of the redis-server binary to use instead
	// of looking up "redis-server" in PATH.
	EnvRedisServer = "CLAUDEQ_REDIS_SERVER"
	// EnvRedisURL is an external Redis server used when no binary is found.
	EnvRedisURL = "CLAUDEQ_TEST_REDIS_URL"
	// EnvRequireIntegration, when "1", turns every skip caused by a missing
	// server into a test failure.
	EnvRequireIntegration = "CLAUDEQ_REQUIRE_INTEGRATION"
)

const (
	startTimeout  = 15 * time.Second // until PING answers
	killTimeout   = 10 * time.Second // until the killed process is reaped
	startAttempts = 5                // fresh ports tried on a bind race
	logTailLines  = 60
)

// Option configures [New].
type Option func(*config)

type config struct {
	aof  bool
	args []string
}

// WithAOF enables the append-only file (appendonly yes, appendfsync
// everysec), so that data survives Kill and Restart. Redis writes the AOF
// buffer to the file before replying, so acknowledged writes survive a
// SIGKILL (the kernel keeps them) — except while a background fsync is
// running, when Redis may postpone the write for up to 2 s. Tests that need
// every acknowledged write to survive should also run
// `CONFIG SET appendfsync always` (or pass WithArgs("--appendfsync",
// "always")).
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithArgs appends raw redis-server command-line arguments, e.g.
// WithArgs("--maxmemory", "10mb"). They come last, so they override the
// defaults. Ignored when an external server (CLAUDEQ_TEST_REDIS_URL) is used.
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is a Redis server for one test: either a dedicated redis-server
// process or a leased database on an external server.
type Server struct {
	t    testing.TB
	addr string // "127.0.0.1:PORT" or the external server's address
	url  string
	db   int
	opts *redis.Options // client options template (Addr, DB, auth, TLS)

	// Dedicated process only.
	bin     string
	dir     string
	logPath string
	args    []string

	mu   sync.Mutex
	proc *process // nil when killed
}

// New starts a dedicated redis-server for t (or leases a database on
// CLAUDEQ_TEST_REDIS_URL, see the package documentation). It returns once
// the server answers PING.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	bin, err := findBinary()
	if err != nil {
		if u := os.Getenv(EnvRedisURL); u != "" {
			return newExternal(t, u)
		}
		skipOrFatal(t, fmt.Sprintf("redis-server not found: install redis-server (or set %s or %s): %v",
			EnvRedisServer, EnvRedisURL, err))
		return nil // unreachable
	}

	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	s.logPath = filepath.Join(s.dir, "redis.log")
	t.Cleanup(s.printLogOnFailure) // registered first: runs after the kill below
	t.Cleanup(s.kill)

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.args = serverArgs(port, s.dir, cfg)
		if lastErr = s.start(); lastErr == nil {
			break
		}
		// Most likely another process took the port between our probe and
		// redis-server's bind; try another one.
	}
	if lastErr != nil {
		t.Fatalf("redistest: start %s: %v\n%s", bin, lastErr, s.logTail())
	}
	s.url = "redis://" + s.addr + "/0"
	s.opts = &redis.Options{Addr: s.addr}
	return s
}

func serverArgs(port int, dir string, cfg config) []string {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
		"--maxmemory-policy", "noeviction",
		"--loglevel", "notice",
	}
	if cfg.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	}
	return append(args, cfg.args...)
}

// Addr returns the server address, "127.0.0.1:PORT" for a dedicated server.
func (s *Server) Addr() string { return s.addr }

// URL returns the server URL including the database number,
// "redis://127.0.0.1:PORT/0" for a dedicated server (for an external server:
// its URL with this test's database).
func (s *Server) URL() string { return s.url }

// DB returns the database number to use: 0 for a dedicated server, the
// leased database (1–15) on an external server. Client and URL already
// select it.
func (s *Server) DB() int { return s.db }

// Client returns a go-redis client for this server (and database), closed at
// t.Cleanup. It reconnects by itself after Kill and Restart.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	o := *s.opts
	c := redis.NewClient(&o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL to the server and waits until the process has exited;
// commands then fail until Restart. Killing a killed server is a no-op. On
// an external server the test is skipped (failed under
// CLAUDEQ_REQUIRE_INTEGRATION=1).
func (s *Server) Kill() {
	s.t.Helper()
	if s.bin == "" {
		skipOrFatal(s.t, "redistest: Kill needs a dedicated redis-server, not "+EnvRedisURL)
	}
	if err := s.killErr(); err != nil {
		s.t.Fatal(err)
	}
}

// Restart starts the server again on the same port and data directory and
// waits until it answers PING (after loading its AOF, if any). A running
// server is killed first. On an external server the test is skipped
// (failed under CLAUDEQ_REQUIRE_INTEGRATION=1).
func (s *Server) Restart() {
	s.t.Helper()
	if s.bin == "" {
		skipOrFatal(s.t, "redistest: Restart needs a dedicated redis-server, not "+EnvRedisURL)
	}
	if err := s.killErr(); err != nil {
		s.t.Fatal(err)
	}
	// The port was ours until the kill; retry briefly in case the exiting
	// process has not released it yet.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart on %s: %v\n%s", s.addr, err, s.logTail())
}

// start launches the process and waits for PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("already running")
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own copy
	fmt.Fprintf(logFile, "### redistest: %s %q\n", s.bin, s.args)

	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setParentDeathSignal(cmd)
	p, err := startProcess(cmd)
	if err != nil {
		return err
	}
	if err := waitForPing(s.addr, p); err != nil {
		p.killWait(killTimeout)
		return err
	}
	s.proc = p
	return nil
}

func (s *Server) killErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	if !s.proc.killWait(killTimeout) {
		return fmt.Errorf("redistest: redis-server (pid %d) did not exit within %v after SIGKILL", s.proc.pid(), killTimeout)
	}
	s.proc = nil
	return nil
}

func (s *Server) kill() { _ = s.killErr() }

func (s *Server) printLogOnFailure() {
	if s.t.Failed() {
		s.t.Logf("redistest: last lines of %s:\n%s", s.logPath, s.logTail())
	}
}

// logTail returns the last logTailLines lines of the server log.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitForPing waits until addr answers PING, p exits, or startTimeout.
// It first polls with plain TCP dials until the port accepts connections
// (go-redis backs off for 100 ms after a refused dial), then PINGs with
// go-redis until the server is ready (it answers LOADING while it reads its
// AOF).
func waitForPing(addr string, p *process) error {
	deadline := time.Now().Add(startTimeout)
	exited := func() error {
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited during startup: %v", p.waitErr)
		default:
			return nil
		}
	}
	for {
		conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			break
		}
		if err := exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port not open within %v: %w", startTimeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}

	c := redis.NewClient(&redis.Options{
		Addr:        addr,
		DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond,
		MaxRetries:  -1,
		PoolSize:    1,
	})
	defer c.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if err := exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PING answer within %v: %w", startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func findBinary() (string, error) {
	if p := os.Getenv(EnvRedisServer); p != "" {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvRedisServer, p, err)
		}
		if fi.IsDir() {
			return "", fmt.Errorf("%s=%s is a directory", EnvRedisServer, p)
		}
		return p, nil
	}
	return exec.LookPath("redis-server")
}

// freePort returns a port for a redis-server to bind, below the ephemeral
// range (testport): between this probe and the server's bind, and again
// when Restart binds it after Kill, no outgoing connection can take it.
func freePort() (int, error) {
	addr, err := testport.Free()
	if err != nil {
		return 0, err
	}
	_, p, _ := net.SplitHostPort(addr)
	return strconv.Atoi(p)
}

func requireIntegration() bool { return os.Getenv(EnvRequireIntegration) == "1" }

// skipOrFatal skips the test, or fails it under
// CLAUDEQ_REQUIRE_INTEGRATION=1.
func skipOrFatal(t testing.TB, msg string) {
	t.Helper()
	if requireIntegration() {
		t.Fatal(msg + " (" + EnvRequireIntegration + "=1)")
		return // a testing.TB that does not stop the goroutine
	}
	t.Skip(msg)
}

// process is a started child whose exit is awaited by a dedicated goroutine.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited and been reaped
	waitErr error         // valid after done is closed
}

// startProcess starts cmd from a goroutine locked to its OS thread, which
// then waits for the process. On Linux the child gets SIGKILL when the
// thread that forked it exits (PR_SET_PDEATHSIG); keeping that thread alive
// for the child's lifetime means the signal fires only when the test binary
// itself dies (e.g. on `go test -timeout`), so no orphaned redis-server is
// left behind, and never spuriously while the test runs.
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread is discarded when this goroutine
		// returns, which is fine (and required, see above).
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// killWait sends SIGKILL and waits up to d for the process to be reaped.
func (p *process) killWait(d time.Duration) bool {
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}
