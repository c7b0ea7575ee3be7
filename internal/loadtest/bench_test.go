package loadtest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/claudeq/claudeq/internal/loadtest"
)

// envTrivialServer makes the test binary serve loadtest.TrivialHandler on
// 127.0.0.1 instead of running tests: the benchmark's server process.
const envTrivialServer = "LOADTEST_TRIVIAL_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(envTrivialServer) == "1" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() { _ = http.Serve(ln, loadtest.TrivialHandler()) }()
		fmt.Println("http://" + ln.Addr().String())
		_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes stdin
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// trivialServer starts the trivial server in a child process, so that it
// does not share the generator's GOMAXPROCS.
func trivialServer(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envTrivialServer+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// BenchmarkGenerator measures how fast the generator sends (async submit
// only, the cheapest request) against a server that answers 202 at once,
// from another process. Run it on one core:
//
//	go test -run '^$' -bench Generator -cpu 1 ./internal/loadtest
//
// It reports req/s (wall clock: what this machine achieved, server
// included) next to ns/op.
func BenchmarkGenerator(b *testing.B) {
	url := trivialServer(b)
	for _, bc := range []struct {
		name string
		cfg  func(n int) loadtest.Config
	}{
		{"closed-64users", func(n int) loadtest.Config {
			return loadtest.Config{Users: 64, RequestsPerUser: max(n/64, 1)}
		}},
		{"open-64workers", func(n int) loadtest.Config {
			// As fast as 64 workers go, for about the time n requests take.
			return loadtest.Config{MaxWorkers: 64, Duration: time.Duration(n) * 40 * time.Microsecond}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := bc.cfg(b.N)
			c.URL, c.Key, c.SubmitOnly = url, "bench", true
			b.ResetTimer()
			rep, err := loadtest.Run(context.Background(), c)
			if err != nil {
				b.Fatal(err)
			}
			if rep.Errors > 0 {
				b.Fatalf("%d errors: %v", rep.Errors, rep.ErrorTypes)
			}
			b.ReportMetric(rep.RPS, "req/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rep.Requests), "ns/req")
		})
	}
}
