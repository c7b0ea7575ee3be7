package app_test

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/config"
)

// runDev starts claudeq dev on dir and returns its base URL, its printed
// banner and a stop function.
func runDev(t *testing.T, env map[string]string) (string, *lockedWriter, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &lockedWriter{w: &bytes.Buffer{}}, &lockedWriter{w: &bytes.Buffer{}}
	ready := make(chan *app.App, 1)
	done := make(chan error, 1)
	go func() { done <- app.RunDev(ctx, config.Map(env), out, logs, func(a *app.App) { ready <- a }) }()
	var a *app.App
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("dev: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("dev did not start\n%s", logs.String())
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done, logs.String())
	}
	t.Cleanup(stop)
	return "http://" + a.Addr(), out, stop
}

var keyLine = regexp.MustCompile(`(?m)^    (\S+)$`)

func TestDevModeRunsEverythingAndKeepsData(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CLAUDEQ_DATA_DIR": t.TempDir(), "CLAUDEQ_HTTP_ADDR": "127.0.0.1:0"}
	base, out, stop := runDev(t, env)
	banner := out.String()
	require.Contains(t, banner, "SIMULATOR")
	require.Contains(t, banner, "curl -s "+base+"/api/claude/chat")
	m := keyLine.FindStringSubmatch(banner)
	require.NotNil(t, m, banner)
	key := m[1]

	id := submit(t, base, key, map[string]any{"prompt": "Say hello", "model": "haiku"})
	j := wait(t, base, key, id, 20*time.Second)
	require.Equal(t, "succeeded", j["status"])
	r := do(t, "POST", base+"/api/claude/chat", key, map[string]any{"prompt": "Say hello", "model": "haiku"})
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, true, r.json(t)["cached"])
	require.Equal(t, http.StatusOK, do(t, "GET", base+"/api/claude/health", "", nil).Status)
	stop()

	// A restart on the same data dir keeps the key, the jobs and the cache.
	base2, out2, _ := runDev(t, env)
	require.Equal(t, key, keyLine.FindStringSubmatch(out2.String())[1])
	j2 := do(t, "GET", base2+"/api/claude/jobs/"+id, key, nil)
	require.Equal(t, http.StatusOK, j2.Status, "%s", j2.Body)
	require.Equal(t, j["text"], j2.json(t)["text"])
	r = do(t, "POST", base2+"/api/claude/chat", key, map[string]any{"prompt": "Say hello", "model": "haiku"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	require.Equal(t, true, r.json(t)["cached"])
}

func TestDevModeTakesTheGivenKey(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CLAUDEQ_DATA_DIR": t.TempDir(), "CLAUDEQ_HTTP_ADDR": "127.0.0.1:0", "CLAUDEQ_DEV_API_KEY": "my dev key!"}
	base, out, _ := runDev(t, env)
	require.Contains(t, out.String(), "    my dev key!\n")
	r := do(t, "POST", base+"/api/claude/chat", "", map[string]any{"prompt": "hi"}, "x-api-key", "my dev key!")
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
}
