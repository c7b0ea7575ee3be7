package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claudeq/claudeq/internal/testport"
)

// ErrNoRedis is returned by StartRedis when no redis-server binary is found.
var ErrNoRedis = errors.New("redis-server not found in PATH (or $CLAUDEQ_REDIS_SERVER)")

// RedisServer is a redis-server child process on a free 127.0.0.1 port,
// without persistence (--save "" --appendonly no).
type RedisServer struct {
	Addr    string
	Version string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// RedisBinary returns the redis-server to run: $CLAUDEQ_REDIS_SERVER, else
// redis-server from PATH.
func RedisBinary() (string, error) {
	if p := os.Getenv("CLAUDEQ_REDIS_SERVER"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", ErrNoRedis
	}
	return p, nil
}

// StartRedis starts a redis-server with its working directory under dir and
// returns once it answers PING.
func StartRedis(dir string) (*RedisServer, error) {
	bin, err := RedisBinary()
	if err != nil {
		return nil, err
	}
	ver, _ := exec.Command(bin, "--version").Output()
	var lastErr error
	for range 5 { // another process may take the probed port
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Version: strings.TrimSpace(string(ver)),
			done: make(chan struct{})}
		logf, err := os.Create(filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log"))
		if err != nil {
			return nil, err
		}
		s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--daemonize", "no", "--save", "", "--appendonly", "no", "--loglevel", "warning")
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		setParentDeathSignal(s.cmd)
		started := make(chan error, 1)
		go func() {
			// The child gets SIGKILL when this thread exits (Linux
			// PR_SET_PDEATHSIG), so keep it for the child's lifetime: no
			// redis-server outlives a killed bench.
			runtime.LockOSThread()
			if err := s.cmd.Start(); err != nil {
				started <- err
				return
			}
			started <- nil
			s.waitErr = s.cmd.Wait()
			close(s.done)
		}()
		err = <-started
		_ = logf.Close()
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		if lastErr = s.waitPing(); lastErr == nil {
			return s, nil
		}
		s.Stop()
	}
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
}

func (s *RedisServer) waitPing() error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 1, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("redis-server exited: %v", s.waitErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return err
}

// URL returns the server's redis:// URL, database 0.
func (s *RedisServer) URL() string { return "redis://" + s.Addr + "/0" }

// PID returns the process id.
func (s *RedisServer) PID() int { return s.cmd.Process.Pid }

// CPU returns the CPU time (user+system) the server has used so far.
func (s *RedisServer) CPU() time.Duration { return pidCPU(s.PID()) }

// Stop kills the server and waits until it is reaped.
func (s *RedisServer) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

func freePort() (int, error) {
	if addr, err := testport.Free(); err == nil { // below the ephemeral range: see package testport
		_, p, _ := net.SplitHostPort(addr)
		return strconv.Atoi(p)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
