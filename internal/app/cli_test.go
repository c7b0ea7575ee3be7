package app

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/config"
)

// TestMainAnswersWithoutStarting: --help, --version and healthcheck never
// start a role (no Redis or MongoDB is configured here, so starting would
// fail).
func TestMainAnswersWithoutStarting(t *testing.T) {
	t.Parallel()
	run := func(env map[string]string, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := mainCode(args, "worker", "the worker", Options{Roles: Roles{Worker: true}}, config.Map(env), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, _ := run(nil, "--help")
	require.Zero(t, code)
	require.Contains(t, out, "worker healthcheck")
	require.Contains(t, out, "CLAUDEQ_*")
	code, out, _ = run(nil, "--version")
	require.Zero(t, code)
	require.True(t, strings.HasPrefix(out, "claudeq "), out)
	code, _, errOut := run(nil, "--bogus")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "try --help")

	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			http.Error(w, `{"status":"not ready"}`, http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer ok.Close()
	addr := strings.TrimPrefix(ok.URL, "http://")
	code, _, _ = run(map[string]string{"CLAUDEQ_METRICS_ADDR": addr}, "healthcheck")
	require.Zero(t, code, "live")
	code, _, errOut = run(map[string]string{"CLAUDEQ_METRICS_ADDR": addr}, "healthcheck", "--ready")
	require.Equal(t, 1, code, "not ready")
	require.Contains(t, errOut, "503")
	code, _, _ = run(map[string]string{"CLAUDEQ_HTTP_ADDR": "127.0.0.1:1"}, "healthcheck")
	require.Equal(t, 1, code, "nothing listens")
}
