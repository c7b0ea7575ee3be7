//go:build chaos

package chaos

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables read by the chaos tests.
const (
	// EnvScale is "short" (default) or "full".
	EnvScale = "CLAUDEQ_CHAOS"
	// EnvReport names a file the figures of every scenario are written to
	// (JSON) at the end of the run; make chaos prints it.
	EnvReport = "CLAUDEQ_CHAOS_REPORT"
	// EnvRace = "1" builds the binaries with -race: the race detector then
	// watches the processes under chaos (a report fails the test), at about
	// a tenth of their speed. Default: without.
	EnvRace = "CLAUDEQ_CHAOS_RACE"
)

// bins holds the paths of the binaries built by TestMain.
var bins struct {
	api, worker, scheduler, sim, mongo string
	err                                error
}

func TestMain(m *testing.M) {
	// The scenarios mostly wait (for leases, outages, retries): at the
	// short scale they all run at once, whatever -parallel go test would
	// pick by the number of CPUs, unless -parallel is given.
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && !full() {
		_ = flag.Set("test.parallel", "16")
	}
	dir, err := os.MkdirTemp("", "claudeq-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.err = build(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	if err := writeReport(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos report:", err)
		code = 1
	}
	os.Exit(code)
}

// build compiles the binaries into dir.
func build(dir string) error {
	race := os.Getenv(EnvRace) == "1"
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			return fmt.Errorf("no go command to build the binaries: %w", err)
		}
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/api", "./cmd/worker", "./cmd/scheduler", "./cmd/claude-sim", "./internal/chaos/mongoserver")
	cmd := exec.Command(gobin, args...)
	cmd.Dir = filepath.Join("..", "..")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "chaos: built the binaries (race=%v) in %.0fs\n", race, time.Since(start).Seconds())
	bins.api = filepath.Join(dir, "api")
	bins.worker = filepath.Join(dir, "worker")
	bins.scheduler = filepath.Join(dir, "scheduler")
	bins.sim = filepath.Join(dir, "claude-sim")
	bins.mongo = filepath.Join(dir, "mongoserver")
	return nil
}

// full reports whether the full scale was asked for.
func full() bool { return os.Getenv(EnvScale) == "full" }

// scaled returns short or full by the scale.
func scaled[T any](short, fullV T) T {
	if full() {
		return fullV
	}
	return short
}

// figures collects what each scenario measured, for the report.
var figures = struct {
	sync.Mutex
	m map[string][]figure
}{m: map[string][]figure{}}

type figure struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// record notes a measured figure of the running scenario and logs it.
func record(t *testing.T, name string, format string, args ...any) {
	t.Helper()
	v := fmt.Sprintf(format, args...)
	t.Logf("FIGURE %s: %s", name, v)
	figures.Lock()
	defer figures.Unlock()
	figures.m[t.Name()] = append(figures.m[t.Name()], figure{Name: name, Value: v})
}

func writeReport() error {
	path := os.Getenv(EnvReport)
	if path == "" {
		return nil
	}
	figures.Lock()
	defer figures.Unlock()
	type scenario struct {
		Test    string   `json:"test"`
		Figures []figure `json:"figures"`
	}
	out := struct {
		Scale     string     `json:"scale"`
		Race      bool       `json:"race"`
		At        time.Time  `json:"at"`
		CPUs      int        `json:"cpus"`
		Scenarios []scenario `json:"scenarios"`
	}{Scale: scaled("short", "full"), Race: os.Getenv(EnvRace) == "1", At: time.Now().UTC(), CPUs: runtime.NumCPU()}
	names := make([]string, 0, len(figures.m))
	for n := range figures.m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out.Scenarios = append(out.Scenarios, scenario{Test: n, Figures: figures.m[n]})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
