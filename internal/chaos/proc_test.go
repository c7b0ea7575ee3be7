//go:build chaos

package chaos

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudeq/claudeq/internal/testport"
)

// proc is one child process (a binary under test) that a scenario starts,
// kills with SIGKILL, stops with SIGTERM and starts again with the same
// arguments, environment and log file. Its stdout and stderr go to one log
// file, printed (its tail) when the test fails.
type proc struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	env     []string
	logPath string
	// ready, if set, reports whether the started process serves; start
	// waits for it.
	ready func() bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	errs error         // the last Wait error
	pids []int
}

// newProc describes a process; start runs it. It is killed at cleanup.
func newProc(t *testing.T, dir, name, bin string, args []string, env map[string]string) *proc {
	p := &proc{t: t, name: name, bin: bin, args: args, logPath: filepath.Join(dir, name+".log")}
	p.env = childEnv(env)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- last lines of %s:\n%s", p.logPath, tail(p.logPath, 40))
		}
		if b, err := os.ReadFile(p.logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s: the race detector reported a data race; see %s:\n%s", name, p.logPath, tail(p.logPath, 80))
		}
	})
	return p
}

// childEnv is the test's environment without any CLAUDEQ_ variable, plus env.
func childEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLAUDEQ_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// start runs the process and waits until ready says it serves (60 s at
// most). It fails the test if the process exits first.
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		p.t.Fatalf("%s: already running", p.name)
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "### %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	setParentDeathSignal(cmd)
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// The thread that forks is kept until the child exits: the parent
		// death signal fires when that thread ends.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		p.mu.Lock()
		p.errs = err
		p.mu.Unlock()
		close(done)
	}()
	err = <-started
	_ = f.Close()
	if err != nil {
		p.mu.Unlock()
		p.t.Fatalf("%s: start: %v", p.name, err)
	}
	p.cmd, p.done = cmd, done
	p.pids = append(p.pids, cmd.Process.Pid)
	p.mu.Unlock()

	if p.ready == nil {
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for !p.ready() {
		select {
		case <-done:
			p.t.Fatalf("%s exited during start (%v):\n%s", p.name, p.waitErr(), tail(p.logPath, 30))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready within 60s:\n%s", p.name, tail(p.logPath, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) waitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs
}

// running reports whether the process runs.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// pid returns the process id (0 when not running).
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill sends SIGKILL and waits for the exit; a no-op when not running.
func (p *proc) kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

// stop sends SIGTERM and waits up to 30 s for a graceful exit, then kills.
func (p *proc) stop() {
	if !p.signal(syscall.SIGTERM, 30*time.Second) {
		p.kill()
	}
}

func (p *proc) signal(sig syscall.Signal, wait time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		return false
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
	return true
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// freeAddr returns a loopback address whose port nothing but a listener
// can take (testport): the roles' processes are restarted on their old
// ports after a kill.
func freeAddr(t *testing.T) string { return testport.Addr(t) }

// answers reports whether GET url answers 200.
func answers(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// dialable reports whether addr accepts TCP connections.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
