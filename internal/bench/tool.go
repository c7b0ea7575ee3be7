package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"github.com/claudeq/claudeq/internal/loadtest"
)

// ToolResult is the load generator's self-test: `claudeq loadtest
// --self-test --json`, run as its own process.
type ToolResult struct {
	Command string
	loadtest.SelfTestResult
}

// PerCore returns the lowest and the highest rate one core of the tool
// generated over the runs (requests per CPU-second of the generator), and
// the names of those runs.
func (t *ToolResult) PerCore() (lo, hi float64, loName, hiName string) {
	for _, r := range t.Runs {
		if r.PerCoreRPS <= 0 {
			continue
		}
		if lo == 0 || r.PerCoreRPS < lo {
			lo, loName = r.PerCoreRPS, r.Name
		}
		if r.PerCoreRPS > hi {
			hi, hiName = r.PerCoreRPS, r.Name
		}
	}
	return lo, hi, loName, hiName
}

// RunTool builds cmd/claudeq and runs `claudeq loadtest --self-test`:
// the generator with GOMAXPROCS=1 against a trivial 202 server in a
// child process, three runs of ToolDuration.
func RunTool(ctx context.Context, e *Env, o *Options) (*ToolResult, error) {
	bin, err := e.Binary(ctx, CLIPkg)
	if err != nil {
		return nil, err
	}
	args := []string{"loadtest", "--self-test", "--json", "--duration", o.ToolDuration.String()}
	e.settle(ctx, o)
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("claudeq %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	res := &ToolResult{Command: "claudeq " + strings.Join(args, " ")}
	if err := json.Unmarshal(out.Bytes(), &res.SelfTestResult); err != nil {
		return nil, fmt.Errorf("claudeq loadtest --self-test --json: %w", err)
	}
	for _, r := range res.Runs {
		o.logf("tool: %s: %.0f req/s, %v CPU per request, %.0f req/s per core-second", r.Name, r.RPS, r.CPUPerRequest, r.PerCoreRPS)
	}
	return res, nil
}
