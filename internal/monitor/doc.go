// Package monitor serves the asynq web UI (asynqmon) under /monitoring for
// operators, behind claudeq's admin scope.
//
// # Browser login
//
// A browser cannot send an Authorization header when it follows a link, so
// the UI is protected by a session cookie obtained with an admin API key:
//
//	GET  /monitoring/login    a small self-contained HTML form (no external assets)
//	POST /monitoring/login    form field "key": the admin API key; on success a
//	                          session cookie and a 303 to the page asked for
//	POST /monitoring/logout   ends the session (also a button in the UI)
//
// Every other /monitoring request needs a valid session: without one, page
// requests are redirected to the login form and API requests
// (/monitoring/api/…) answer 401 in the Anthropic error shape.
//
// Sessions are random 256-bit tokens. Redis stores only their SHA-256 (so
// a Redis dump holds no usable session), with a TTL (Options.SessionTTL,
// default 8 h from login; not extended by use). The cookie is HttpOnly,
// SameSite=Strict (a cross-site request never carries it, which is the
// CSRF defence for asynqmon's state-changing API: pause, delete, run),
// Path=/monitoring, and Secure when the request came over TLS (directly or
// per X-Forwarded-Proto: https) or Options.SecureCookie is set. State-changing
// requests a browser marks as cross-site (Sec-Fetch-Site) are refused too.
// Revoking an API key does not end the sessions opened with it before:
// Logout ends one, [Monitor.EndAllSessions] ends every session at once (one
// INCR; sessions carry the generation they were opened in).
//
// # Offline UI and Content-Security-Policy
//
// asynqmon's index.html loads Roboto and Material Icons from Google Fonts.
// The page is rewritten on the way out: <link> tags to other origins are
// removed (the UI falls back to system fonts; its icons are SVG), a logout
// button is added, and a Content-Security-Policy allows only this origin:
// scripts by the SHA-256 of asynqmon's two inline bootstrap scripts,
// computed from the page actually served. Styles need 'unsafe-inline':
// Material-UI (JSS) injects <style> elements at run time and sets inline
// style attributes; scripts do not.
//
// Monitor is safe for concurrent use.
package monitor
