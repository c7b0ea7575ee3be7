// The browser test drives Debian's headless Chromium through the Chrome
// DevTools Protocol (github.com/chromedp/chromedp). It runs with the other
// tests; without /usr/bin/chromium (or $CLAUDEQ_CHROMIUM) it skips, or
// fails under CLAUDEQ_REQUIRE_INTEGRATION=1. scripts/ensure-chromium.sh
// installs Chromium (make test runs it):
//
//	scripts/ensure-chromium.sh
//	go test -run TestBrowser ./internal/monitor/
//
// Screenshots go to $CLAUDEQ_ARTIFACTS (or the test's temp dir).

package monitor_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/redistest"
)

const chromiumPath = "/usr/bin/chromium"

func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CLAUDEQ_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, t.Name())
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// browserEvents collects what the page did that a person would notice or
// that CSP refused.
type browserEvents struct {
	mu       sync.Mutex
	problems []string // exceptions, console errors, CSP violations
	foreign  []string // requests that left the server's origin
}

func (b *browserEvents) add(list *[]string, s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	*list = append(*list, s)
}

func (b *browserEvents) snapshot() (problems, foreign []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...), append([]string(nil), b.foreign...)
}

func TestBrowserLoginAndQueues(t *testing.T) {
	t.Parallel()
	bin := chromiumPath
	if p := os.Getenv("CLAUDEQ_CHROMIUM"); p != "" {
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		msg := bin + " not found: run scripts/ensure-chromium.sh"
		if os.Getenv(redistest.EnvRequireIntegration) == "1" {
			t.Fatal(msg + " (" + redistest.EnvRequireIntegration + "=1)")
		}
		t.Skip(msg)
	}
	b := setup(t)
	base, err := url.Parse(b.url)
	require.NoError(t, err)
	shots := artifactsDir(t)

	var ev browserEvents
	listener := func(e any) {
		// Runs in the tab's read loop: record and return.
		switch e := e.(type) {
		case *runtime.EventExceptionThrown:
			ev.add(&ev.problems, "exception: "+(&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				ev.add(&ev.problems, "console.error: "+strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				ev.add(&ev.problems, "log "+string(e.Entry.Source)+": "+e.Entry.Text+" "+e.Entry.URL)
			}
		case *network.EventRequestWillBeSent:
			u, err := url.Parse(e.Request.URL)
			if err == nil && (u.Scheme == "http" || u.Scheme == "https" || u.Scheme == "ws" || u.Scheme == "wss") && u.Host != base.Host {
				ev.add(&ev.foreign, e.Request.URL)
			}
		}
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	t.Cleanup(cancelAlloc)
	// The first Run starts the browser and lives as long as this context:
	// no timeout on it (chromedp's rule); each step below gets one.
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf), chromedp.WithListener(listener))
	t.Cleanup(cancelCtx)
	require.NoError(t, chromedp.Do(ctx))
	_, err = chromedp.Call(ctx, cdplog.Enable, cdp.Empty{})
	require.NoError(t, err)
	step := func(t *testing.T) context.Context {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		t.Cleanup(cancel)
		return sctx
	}

	// Not logged in: the UI sends us to the login form.
	sctx := step(t)
	require.NoError(t, chromedp.Do(sctx,
		chromedp.Navigate(b.url+"/monitoring/queues/webhooks?status=pending"),
		chromedp.WaitVisible(chromedp.ID("key")),
	))
	loginTitle, err := chromedp.Run(sctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "claudeq monitoring: log in", loginTitle)
	loginShot, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(shots, "monitoring-login.png"), loginShot, 0o644))

	// Log in through the form: back where we were going.
	require.NoError(t, chromedp.Do(sctx,
		chromedp.SendKeys(chromedp.ID("key"), adminKey),
		chromedp.Click(chromedp.CSS("button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("root")),
	))
	require.NoError(t, waitForText(sctx, "Pending 4", "job:run"))
	afterLogin, err := chromedp.Run(sctx, chromedp.Location())
	require.NoError(t, err)
	require.Equal(t, b.url+"/monitoring/queues/webhooks?status=pending", afterLogin)
	queuePage, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(shots, "monitoring-queue-webhooks.png"), queuePage, 0o644))

	// The queues page (asynqmon's home) lists our four queues.
	sctx = step(t)
	require.NoError(t, chromedp.Do(sctx, chromedp.Navigate(b.url+"/monitoring/")))
	require.NoError(t, waitForText(sctx, append([]string{"Queues"}, queueNames...)...))
	require.NoError(t, chromedp.Do(sctx, chromedp.Sleep(time.Second))) // let the charts draw, for the picture
	bodyText, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS("body")))
	require.NoError(t, err)
	for _, q := range queueNames {
		require.Contains(t, bodyText, q)
	}
	// The viewport as a person sees it (a full-page capture resizes the
	// page, and the charts would restart their animation).
	home, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(shots, "monitoring-queues.png"), home, 0o644))
	t.Logf("screenshots in %s", shots)

	// The logout button ends the session.
	sctx = step(t)
	require.NoError(t, chromedp.Do(sctx,
		chromedp.Click(chromedp.CSS(`form[action="/monitoring/logout"] button`)),
		chromedp.WaitVisible(chromedp.ID("key")),
	))
	afterLogout, err := chromedp.Run(sctx, chromedp.Location())
	require.NoError(t, err)
	require.Equal(t, b.url+"/monitoring/login", afterLogout)

	problems, foreign := ev.snapshot()
	require.Empty(t, foreign, "the UI must work offline: requests to other origins")
	require.Empty(t, problems, "script errors or Content-Security-Policy violations")
}

// waitForText waits until the page's visible text contains every string.
func waitForText(ctx context.Context, want ...string) error {
	for {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		if err != nil {
			return err
		}
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("page never showed %q; it shows:\n%s", missing, text)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
