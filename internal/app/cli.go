package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/claudeq/claudeq/internal/config"
)

// commit is the VCS revision the binary was built from, set by the linker
// where the build has no VCS information (the Dockerfile:
// -ldflags "-X github.com/claudeq/claudeq/internal/app.commit=…").
var commit string

// Version returns the module version and the commit a binary was built
// from, e.g. "claudeq (devel) 2a485f6e1f3c (modified)".
func Version() string {
	v, rev, dirty := "(devel)", commit, false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if rev == "" {
		rev = "unknown commit"
	} else if len(rev) > 12 {
		rev = rev[:12]
	}
	out := "claudeq " + v + " " + rev
	if dirty {
		out += " (modified)"
	}
	return out
}

// Main is the main function of a role binary (cmd/api, cmd/worker,
// cmd/scheduler): --help and --version print and exit without starting
// anything; "healthcheck" asks a running process's /livez (or, with
// --ready, /readyz) and exits 0 or 1, for container health checks where no
// curl exists; anything else runs the roles of o until SIGINT or SIGTERM.
func Main(name, about string, o Options) {
	os.Exit(mainCode(os.Args[1:], name, about, o, os.Getenv, os.Stdout, os.Stderr))
}

func mainCode(args []string, name, about string, o Options, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			fmt.Fprintf(stdout, "%s: %s\n\nUsage:\n  %-22s run until SIGINT or SIGTERM\n  %-22s exit 0 if the running process answers /livez (--ready: /readyz), else 1\n  %-22s print the version\n\n"+
				"Configuration is read from CLAUDEQ_* environment variables; see the README's Configuration\nsection. %s\n",
				name, about, name, name+" healthcheck", name+" --version", Version())
			return 0
		case "-version", "--version", "version":
			fmt.Fprintln(stdout, Version())
			return 0
		case "healthcheck":
			return healthcheck(args[1:], getenv, stderr)
		default:
			fmt.Fprintf(stderr, "%s: unknown argument %q (try --help)\n", name, args[0])
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o, getenv, stderr, nil); err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	return 0
}

// healthcheck GETs /livez (or /readyz) of the process running next to it:
// on CLAUDEQ_METRICS_ADDR when set (every role serves it there), else on
// CLAUDEQ_HTTP_ADDR (the api).
func healthcheck(args []string, getenv func(string) string, stderr io.Writer) int {
	path := "/livez"
	for _, a := range args {
		switch a {
		case "--ready", "-ready":
			path = "/readyz"
		default:
			fmt.Fprintf(stderr, "healthcheck: unknown argument %q\n", a)
			return 2
		}
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck: configuration:", err)
		return 1
	}
	addr := cfg.MetricsAddr
	if addr == "" {
		addr = cfg.HTTPAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + path)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s answered %d: %s\n", path, resp.StatusCode, strings.TrimSpace(string(b)))
		return 1
	}
	return 0
}
