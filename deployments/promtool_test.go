package deployments_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPromtoolChecks runs scripts/promtool-check.sh: the alerting rules
// parse and pass their unit tests (alerts_test.yaml), and the Prometheus
// configurations are valid. It needs promtool (scripts/ensure-promtool.sh
// installs Debian's prometheus package; make test runs it first): without
// it the test skips, or fails under CLAUDEQ_REQUIRE_INTEGRATION=1.
func TestPromtoolChecks(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("promtool"); err != nil {
		const msg = "promtool not on PATH: run scripts/ensure-promtool.sh"
		if os.Getenv("CLAUDEQ_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (CLAUDEQ_REQUIRE_INTEGRATION=1)")
		}
		t.Skip(msg)
	}
	out, err := exec.Command("../scripts/promtool-check.sh").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "SUCCESS")
	t.Logf("%s", out)
}
