package monitor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// loginCSS is the login page's only style, inline so that the page needs
// nothing but itself; the CSP allows it by its hash.
const loginCSS = `body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;background:#f4f5f7;color:#1f2328;margin:0}
main{max-width:24rem;margin:12vh auto;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:2rem}
h1{font-size:1.25rem;margin:0 0 1rem}
p{font-size:.875rem;color:#57606a}
label{display:block;font-size:.875rem;font-weight:600;margin:1rem 0 .25rem}
input[type=password]{box-sizing:border-box;width:100%;padding:.5rem;font:inherit;border:1px solid #d0d7de;border-radius:6px}
button{margin-top:1rem;width:100%;padding:.5rem;font:inherit;font-weight:600;color:#fff;background:#1f6feb;border:0;border-radius:6px;cursor:pointer}
.error{color:#cf222e;font-weight:600}`

var loginCSSHash = hashCSP(loginCSS)

// loginCSP allows the page's own inline style and nothing else to load;
// the form may only post to this origin.
var loginCSP = "default-src 'none'; style-src '" + loginCSSHash + "'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>claudeq monitoring: log in</title>
<style>` + loginCSS + `</style>
</head><body><main>
<h1>claudeq monitoring</h1>
<p>Log in with an API key that has the <code>admin</code> scope. The key is not stored: the browser gets a session cookie for {{.TTL}}.</p>
{{if .Message}}<p class="error" role="alert">{{.Message}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="next" value="{{.Next}}">
<label for="key">Admin API key</label>
<input id="key" name="key" type="password" autocomplete="off" autofocus required spellcheck="false">
<button type="submit">Log in</button>
</form>
</main></body></html>
`))

func hashCSP(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// loginForm renders the login page with an optional error message.
func (m *Monitor) loginForm(w http.ResponseWriter, r *http.Request, code int, msg, next string) {
	var buf bytes.Buffer
	err := loginTemplate.Execute(&buf, struct {
		Action, Next, Message, TTL string
	}{Action: m.loginPath(), Next: next, Message: msg, TTL: humanDuration(m.opt.SessionTTL)})
	if err != nil {
		m.log.Error("monitor: render login page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", loginCSP)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// maxLoginBody bounds the login form; a key is well under 200 bytes.
const maxLoginBody = 8 << 10

// login checks the posted admin key and opens a session.
func (m *Monitor) login(w http.ResponseWriter, r *http.Request) {
	if crossSite(r) {
		m.deny(w, r, http.StatusForbidden, "permission_error", "cross-site requests are refused")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		m.loginForm(w, r, http.StatusBadRequest, "The form could not be read.", m.root+"/")
		return
	}
	next := m.safeNext(r.PostForm.Get("next"))
	key := strings.TrimSpace(r.PostForm.Get("key"))
	if key == "" {
		m.loginForm(w, r, http.StatusBadRequest, "Enter an admin API key.", next)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ok, err := m.opt.ValidateKey(ctx, key)
	if err != nil {
		m.log.Warn("monitor: cannot check an API key", "remote_addr", remoteIP(r), "err", err)
		m.loginForm(w, r, http.StatusServiceUnavailable, "API keys cannot be checked right now; try again in a moment.", next)
		return
	}
	if !ok {
		m.log.Warn("monitor: login refused", "remote_addr", remoteIP(r))
		// One message for unknown, revoked and non-admin keys.
		m.loginForm(w, r, http.StatusUnauthorized, "That is not a valid admin API key.", next)
		return
	}
	token, err := m.sessions.create(ctx)
	if err != nil {
		m.log.Warn("monitor: cannot open a session", "err", err)
		m.loginForm(w, r, http.StatusServiceUnavailable, "Sessions cannot be stored right now; try again in a moment.", next)
		return
	}
	m.log.Info("monitor: login", "remote_addr", remoteIP(r))
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    token,
		Path:     m.root,
		MaxAge:   int(m.opt.SessionTTL / time.Second),
		HttpOnly: true,
		Secure:   m.secure(r),
		SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session and clears the cookie.
func (m *Monitor) logout(w http.ResponseWriter, r *http.Request) {
	if crossSite(r) {
		m.deny(w, r, http.StatusForbidden, "permission_error", "cross-site requests are refused")
		return
	}
	if err := m.sessions.end(r.Context(), sessionToken(r)); err != nil {
		m.log.Warn("monitor: cannot end a session", "err", err)
		m.deny(w, r, http.StatusServiceUnavailable, "service_unavailable", "cannot end the session right now, try again")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: m.root, MaxAge: -1,
		HttpOnly: true, Secure: m.secure(r), SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, m.loginPath(), http.StatusSeeOther)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// humanDuration prints 8h0m0s as "8 hours".
func humanDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0 && d >= time.Hour:
		if d == time.Hour {
			return "1 hour"
		}
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	case d%time.Minute == 0 && d >= time.Minute:
		if d == time.Minute {
			return "1 minute"
		}
		return strconv.Itoa(int(d/time.Minute)) + " minutes"
	}
	return d.String()
}
