package monitor

import (
	"bytes"
	"html"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// uiCSP is the policy of asynqmon's pages; %s is replaced by the hashes of
// the page's inline scripts. Styles need 'unsafe-inline' (Material-UI's JSS
// injects <style> elements and style attributes at run time); fonts fall
// back to the system's.
const uiCSP = "default-src 'self'; script-src 'self'%s; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

var (
	// externalLink matches <link …> tags whose href leaves the origin:
	// asynqmon's Google Fonts stylesheets.
	externalLink = regexp.MustCompile(`(?i)<link\b[^>]*\bhref=["']?(?:https?:)?//[^>]*>`)
	// manifestLink matches the web-app manifest link: browsers fetch the
	// manifest without cookies, so behind the login it would only be a
	// redirect to the login page (and a console error); an admin tool has
	// no use for "install as app".
	manifestLink = regexp.MustCompile(`(?i)<link\b[^>]*\brel=["']?manifest\b[^>]*>`)
	// inlineScript matches a <script> without attributes and its body.
	inlineScript = regexp.MustCompile(`(?is)<script>(.*?)</script>`)
)

// logoutButton is added to every UI page: asynqmon has no notion of login.
const logoutButton = `<form method="post" action="%s" style="position:fixed;right:16px;top:16px;z-index:2000;margin:0">` +
	`<button type="submit" style="font:14px system-ui,sans-serif;padding:6px 12px;border:1px solid #888;border-radius:4px;background:#fff;color:#333;cursor:pointer">Log out</button></form>`

// rewriteIndex removes links to other origins and the manifest link from
// an asynqmon page, adds
// the logout button, and returns the page and the CSP hashes of its inline
// scripts.
func (m *Monitor) rewriteIndex(page []byte) ([]byte, []string) {
	page = externalLink.ReplaceAll(page, nil)
	page = manifestLink.ReplaceAll(page, nil)
	var hashes []string
	for _, sm := range inlineScript.FindAllSubmatch(page, -1) {
		hashes = append(hashes, hashCSP(string(sm[1])))
	}
	button := []byte(strings.Replace(logoutButton, "%s", html.EscapeString(m.logoutPath()), 1))
	if i := bytes.LastIndex(page, []byte("</body>")); i >= 0 {
		page = append(page[:i:i], append(button, page[i:]...)...)
	}
	return page, hashes
}

func cspWithScripts(hashes []string) string {
	var b strings.Builder
	for _, h := range hashes {
		b.WriteString(" '")
		b.WriteString(h)
		b.WriteString("'")
	}
	return strings.Replace(uiCSP, "%s", b.String(), 1)
}

// serveUI serves asynqmon's pages and assets; HTML pages go through
// rewriteIndex.
func (m *Monitor) serveUI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", cspWithScripts(nil))
	if strings.HasPrefix(r.URL.Path, m.root+"/static/") {
		// Content-hashed file names: safe to keep, but only privately.
		h.Set("Cache-Control", "private, max-age=86400")
	} else {
		h.Set("Cache-Control", "no-store")
	}
	rw := &htmlRewriter{w: w}
	m.ui.ServeHTTP(rw, r)
	rw.finish(m, r)
}

// htmlRewriter buffers a response that is (or may be, having no
// Content-Type yet) HTML, so that it can be rewritten; anything else goes
// through untouched and unbuffered (the JavaScript bundles are large).
type htmlRewriter struct {
	w           http.ResponseWriter
	status      int
	decided     bool
	passthrough bool
	buf         bytes.Buffer
}

func (rw *htmlRewriter) Header() http.Header { return rw.w.Header() }

func (rw *htmlRewriter) decide() {
	if rw.decided {
		return
	}
	rw.decided = true
	ct := rw.w.Header().Get("Content-Type")
	if ct != "" && !strings.HasPrefix(strings.ToLower(ct), "text/html") {
		rw.passthrough = true
		rw.w.WriteHeader(rw.status)
	}
}

func (rw *htmlRewriter) WriteHeader(code int) {
	if rw.decided {
		return
	}
	rw.status = code
	rw.decide()
}

func (rw *htmlRewriter) Write(b []byte) (int, error) {
	if !rw.decided {
		rw.status = http.StatusOK
		rw.decide()
	}
	if rw.passthrough {
		return rw.w.Write(b)
	}
	return rw.buf.Write(b)
}

// finish sends a buffered response, rewritten when it is HTML.
func (rw *htmlRewriter) finish(m *Monitor, r *http.Request) {
	if rw.passthrough {
		return
	}
	if !rw.decided {
		rw.status = http.StatusOK
	}
	body := rw.buf.Bytes()
	h := rw.w.Header()
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = http.DetectContentType(body)
	}
	if strings.HasPrefix(strings.ToLower(ct), "text/html") {
		var hashes []string
		body, hashes = m.rewriteIndex(body)
		ct = "text/html; charset=utf-8"
		h.Set("Content-Security-Policy", cspWithScripts(hashes))
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	rw.w.WriteHeader(rw.status)
	if r.Method != http.MethodHead {
		_, _ = rw.w.Write(body)
	}
}
