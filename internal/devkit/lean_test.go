package devkit_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestProductionBinariesLinkNoDevKit: api, worker and scheduler do not
// link the embedded servers or the simulator (only claudeq dev does), and
// only the api links asynqmon's UI.
func TestProductionBinariesLinkNoDevKit(t *testing.T) {
	t.Parallel()
	devKit := []string{"github.com/claudeq/claudeq/internal/devkit", "github.com/claudeq/claudeq/internal/devmongo",
		"github.com/claudeq/claudeq/internal/devredis", "github.com/claudeq/claudeq/internal/sim",
		"github.com/FerretDB/FerretDB", "github.com/alicebob/miniredis/v2", "modernc.org/sqlite", "github.com/jackc/pgx/v5",
		"github.com/go-sql-driver/mysql"}
	for _, bin := range []string{"api", "worker", "scheduler"} {
		out, err := exec.Command("go", "list", "-deps", "../../cmd/"+bin).CombinedOutput()
		require.NoError(t, err, "%s", out)
		deps := strings.Fields(string(out))
		for _, d := range deps {
			for _, k := range devKit {
				require.False(t, d == k || strings.HasPrefix(d, k+"/"), "cmd/%s links %s", bin, d)
			}
			if bin != "api" {
				require.NotContains(t, d, "asynqmon", "cmd/%s links the monitoring UI", bin)
			}
		}
	}
}
