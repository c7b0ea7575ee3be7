package bench

import (
	"os"
	"testing"
)

// TestMain lets figure 7 start this test binary again as its simulator and
// gateways (see RunChild).
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(RunChild())
	}
	os.Exit(m.Run())
}
