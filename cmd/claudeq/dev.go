package main

import (
	"github.com/spf13/cobra"

	"github.com/claudeq/claudeq/internal/devkit"
)

func devCmd(getenv func(string) string) *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Run api, worker and scheduler in one process with embedded Redis, FerretDB and a simulated upstream",
		Long: `Run everything in one process, with no setup: an embedded Redis (miniredis,
saved to CLAUDEQ_DATA_DIR on exit), an embedded FerretDB (SQLite under
CLAUDEQ_DATA_DIR), and the simulated Claude upstream unless
CLAUDEQ_UPSTREAM_API_KEY is set. Prints an API key with every scope and a
curl command to try. CLAUDEQ_REDIS_URL and CLAUDEQ_MONGO_URI, when set, are
used instead of the embedded servers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devkit.RunDev(cmd.Context(), getenv, cmd.OutOrStdout(), cmd.ErrOrStderr(), nil)
		},
	}
}
