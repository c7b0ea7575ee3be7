package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/claudeq/claudeq/internal/queue"
)

// The packages the process figures (workers, slow, pickup, growth, tool)
// build and run as child processes: the real worker binary, a raw asynq
// server draining no-op tasks (the baseline), the simulator and the CLI.
const (
	WorkerPkg = "github.com/claudeq/claudeq/cmd/worker"
	NoopPkg   = "github.com/claudeq/claudeq/internal/bench/noopworker"
	SimPkg    = "github.com/claudeq/claudeq/cmd/claude-sim"
	CLIPkg    = "github.com/claudeq/claudeq/cmd/claudeq"
)

var buildMu sync.Mutex

// Binary builds pkg (`go build`, from the current directory, which must
// be inside the module) into the env's directory once per run, and returns
// the binary's path.
func (e *Env) Binary(ctx context.Context, pkg string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(e.Dir, "bin", filepath.Base(pkg))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Child is a process the bench started (a worker, a simulator…). It gets
// SIGKILL if the bench dies, so none outlives a killed run.
type Child struct {
	Name string
	cmd  *exec.Cmd
	log  *tailBuffer // the last lines of its stderr
	done chan struct{}
	err  error

	stopMu  sync.Mutex
	stopped bool
}

// StartChild runs bin with args and exactly the environment env (plus PATH
// and TMPDIR), its stdout passed to onStdout line by line (when set).
func StartChild(name, bin string, args []string, env map[string]string, onStdout func(string)) (*Child, error) {
	c := &Child{Name: name, log: &tailBuffer{max: 40}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	for _, k := range []string{"PATH", "TMPDIR", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			c.cmd.Env = append(c.cmd.Env, k+"="+v)
		}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		c.cmd.Env = append(c.cmd.Env, k+"="+env[k])
	}
	c.cmd.Stderr = c.log
	var stdout io.ReadCloser
	if onStdout != nil {
		var err error
		if stdout, err = c.cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	setParentDeathSignal(c.cmd)
	started := make(chan error, 1)
	go func() {
		// The child gets SIGKILL when this thread exits (Linux
		// PR_SET_PDEATHSIG), so keep it for the child's lifetime.
		runtime.LockOSThread()
		if err := c.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		if stdout != nil {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				onStdout(sc.Text())
			}
		}
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return c, nil
}

// PID returns the process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// CPU returns the CPU time (user+system) the child has used so far.
func (c *Child) CPU() time.Duration { return pidCPU(c.PID()) }

// RSS returns the child's resident set size now and its peak (VmRSS and
// VmHWM of /proc/<pid>/status), in bytes; zero where unknown.
func (c *Child) RSS() (now, peak int64) { return procRSS(c.PID()) }

// Exited reports whether the child has ended.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Tail returns the last lines of the child's stderr.
func (c *Child) Tail() string { return c.log.String() }

// Stop sends SIGINT, waits up to grace for the child to end, then kills
// it. It returns an error when the child ended with one before it was
// asked to stop.
func (c *Child) Stop(grace time.Duration) error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	if c.Exited() {
		if c.err != nil {
			return fmt.Errorf("%s exited early: %v: %s", c.Name, c.err, c.Tail())
		}
		return nil
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("%s stopped with %v: %s", c.Name, c.err, c.Tail())
		}
		return nil
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	return fmt.Errorf("%s did not stop within %v after SIGINT; killed", c.Name, grace)
}

// procRSS reads VmRSS and VmHWM of pid, in bytes.
func procRSS(pid int) (now, peak int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			now = n << 10
		} else {
			peak = n << 10
		}
	}
	return now, peak
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.part[:i]))
		t.part = t.part[i+1:]
		if len(t.lines) > t.max {
			t.lines = t.lines[len(t.lines)-t.max:]
		}
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(append(slices.Clone(t.lines), string(t.part)), "\n")
}

// Workers are worker processes of one measurement: claudeq's worker binary
// or the no-op baseline, all against the env's Redis.
type Workers struct {
	Procs []*Child
}

// StartWorkers starts n processes of bin with env, and returns once every
// one of them has registered with asynq (its server heartbeat is in
// Redis), so that they all start picking up tasks at once when the queue
// is unpaused.
func (e *Env) StartWorkers(ctx context.Context, name, bin string, n int, env map[string]string) (*Workers, error) {
	w := &Workers{}
	for i := range n {
		c, err := StartChild(fmt.Sprintf("%s %d", name, i+1), bin, nil, env, nil)
		if err != nil {
			w.Stop()
			return nil, err
		}
		w.Procs = append(w.Procs, c)
	}
	ins := asynq.NewInspectorFromRedisClient(e.RDB)
	deadline := time.Now().Add(60 * time.Second)
	for {
		srvs, err := ins.Servers()
		up := map[int]bool{}
		if err == nil {
			for _, s := range srvs {
				up[s.PID] = true
			}
		}
		all := true
		for _, c := range w.Procs {
			if c.Exited() {
				w.Stop()
				return nil, fmt.Errorf("%s exited at start: %s", c.Name, c.Tail())
			}
			all = all && up[c.PID()]
		}
		if all {
			return w, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			w.Stop()
			return nil, fmt.Errorf("%s: %d processes did not register with asynq within 60s", name, n)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// CPU returns the CPU time all the processes have used so far.
func (w *Workers) CPU() time.Duration {
	var t time.Duration
	for _, c := range w.Procs {
		t += c.CPU()
	}
	return t
}

// RSS returns the sum of the processes' resident set sizes now, and of
// their peaks.
func (w *Workers) RSS() (now, peak int64) {
	for _, c := range w.Procs {
		a, b := c.RSS()
		now, peak = now+a, peak+b
	}
	return now, peak
}

// Stop stops every process (SIGINT, then SIGKILL after 30 s) and returns
// the first error.
func (w *Workers) Stop() error {
	if w == nil {
		return nil
	}
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range w.Procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Stop(30 * time.Second); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SimProc is a claude-sim child process.
type SimProc struct {
	*Child
	URL string
}

// StartSim starts the simulator binary on a free 127.0.0.1 port with a
// fixed latency per call.
func (e *Env) StartSim(ctx context.Context, latency time.Duration) (*SimProc, error) {
	bin, err := e.Binary(ctx, SimPkg)
	if err != nil {
		return nil, err
	}
	urls := make(chan string, 1)
	c, err := StartChild("claude-sim", bin, []string{"--addr", "127.0.0.1:0", "--latency", latency.String(), "--log-level", "warn"}, nil,
		func(l string) {
			if u, ok := strings.CutPrefix(l, "claude-sim listening on "); ok {
				select {
				case urls <- strings.TrimSpace(u):
				default:
				}
			}
		})
	if err != nil {
		return nil, err
	}
	select {
	case u := <-urls:
		return &SimProc{Child: c, URL: u}, nil
	case <-time.After(30 * time.Second):
	case <-c.done:
	}
	_ = c.Stop(5 * time.Second)
	return nil, fmt.Errorf("claude-sim did not start: %s", c.Tail())
}

// Sims are simulator processes.
type Sims []*SimProc

// CPU returns the CPU time they have used so far.
func (s Sims) CPU() time.Duration {
	var t time.Duration
	for _, p := range s {
		t += p.CPU()
	}
	return t
}

// Stop stops them.
func (s Sims) Stop() {
	for _, p := range s {
		_ = p.Stop(10 * time.Second)
	}
}

// WorkerEnv returns the environment of a claudeq worker process against
// database db, upstream the simulators (one: CLAUDEQ_UPSTREAM_URL; more: a
// nodes file), with the settings over.
func (e *Env) WorkerEnv(db string, sims Sims, over ...string) (map[string]string, error) {
	m := e.Settings(db, over...)
	m["CLAUDEQ_LOG_FORMAT"] = "json"
	m["CLAUDEQ_LOG_LEVEL"] = "warn"
	delete(m, "CLAUDEQ_HTTP_ADDR")
	switch len(sims) {
	case 0:
	case 1:
		m["CLAUDEQ_UPSTREAM_URL"] = sims[0].URL
	default:
		var b strings.Builder
		b.WriteString("nodes:\n")
		for i, s := range sims {
			fmt.Fprintf(&b, "  - name: node%d\n    url: %s\n    api_key: ${%s}\n    weight: 1\n", i, s.URL, SimKeyVar)
		}
		path := filepath.Join(e.Dir, fmt.Sprintf("nodes-proc-%d-%d.yaml", len(sims), time.Now().UnixNano()))
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return nil, err
		}
		m["CLAUDEQ_NODES_FILE"] = path
	}
	return m, nil
}

// PauseDefault pauses the default queue, so that workers can start and
// register before any task is picked up; ResumeDefault unpauses it.
func (e *Env) PauseDefault() error {
	return asynq.NewInspectorFromRedisClient(e.RDB).PauseQueue(queue.Default)
}

// ResumeDefault unpauses the default queue.
func (e *Env) ResumeDefault() error {
	return asynq.NewInspectorFromRedisClient(e.RDB).UnpauseQueue(queue.Default)
}
