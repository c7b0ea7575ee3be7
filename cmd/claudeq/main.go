// Command claudeq is the operator and user CLI of claudeq: `claudeq dev`
// runs everything in one process with embedded servers; `claudeq keys`
// manages API keys; `claudeq batch` runs Message Batches from JSONL files.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "claudeq:", err)
		os.Exit(1)
	}
}

// run executes the CLI with args; tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "claudeq",
		Short:         "claudeq: a queue-driven gateway in front of the Claude API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(devCmd(getenv), keysCmd(getenv))
	root.AddCommand(auditCmd(getenv))
	root.AddCommand(quotaCmd(getenv))
	root.AddCommand(loadtestCmd(getenv))
	root.AddCommand(batchCmd(getenv))
	return root.ExecuteContext(ctx)
}
