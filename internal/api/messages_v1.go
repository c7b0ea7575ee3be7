package api

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// ctxAnthropic marks a request whose errors use Anthropic's vocabulary.
const ctxAnthropic = "anthropic_errors"

// anthropicErrors makes the errors of a route Anthropic's: only Anthropic's
// error types and status codes (errorHandler calls anthropicError).
func (s *Server) anthropicErrors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(ctxAnthropic, true)
		return next(c)
	}
}

// anthropicRoute reports whether errors of c's request take Anthropic's
// vocabulary: the routes of mountMessages, including a wrong method on
// them (which Echo answers without the route's middleware).
func anthropicRoute(c echo.Context) bool {
	if v, ok := c.Get(ctxAnthropic).(bool); ok && v {
		return true
	}
	switch p := c.Request().URL.Path; {
	case p == "/v1/messages", p == "/v1/messages/count_tokens", p == "/v1/models", strings.HasPrefix(p, "/v1/models/"):
		return true
	}
	return false
}

// anthropicKind maps an error onto Anthropic's vocabulary: status code,
// error type, and the claudeq reason in error.details.error_code when the
// type alone loses it.
func anthropicKind(err error) (code int, typ, reason string) {
	k := claudeq.ErrorKind(err)
	var ce *claudeq.Error
	fromUpstream := errors.As(err, &ce) && strings.HasPrefix(ce.Op, "upstream.")
	switch k {
	case claudeq.KindInvalidRequest, claudeq.KindUnprocessable:
		return http.StatusBadRequest, "invalid_request_error", ""
	case claudeq.KindUnsupportedMediaType:
		return http.StatusBadRequest, "invalid_request_error", k.String()
	case claudeq.KindContentPolicy:
		return http.StatusBadRequest, "invalid_request_error", k.String()
	case claudeq.KindAuthentication, claudeq.KindPermission, claudeq.KindBilling:
		if fromUpstream {
			// The node refused the gateway's own credentials or credit:
			// not the caller's doing.
			return http.StatusInternalServerError, "api_error", "upstream_" + k.String()
		}
		switch k {
		case claudeq.KindAuthentication:
			return http.StatusUnauthorized, "authentication_error", ""
		case claudeq.KindPermission:
			return http.StatusForbidden, "permission_error", ""
		}
		return http.StatusPaymentRequired, "billing_error", ""
	case claudeq.KindNotFound:
		return http.StatusNotFound, "not_found_error", ""
	case claudeq.KindConflict:
		return http.StatusConflict, "conflict_error", ""
	case claudeq.KindRequestTooLarge:
		return http.StatusRequestEntityTooLarge, "request_too_large", ""
	case claudeq.KindRateLimit:
		return http.StatusTooManyRequests, "rate_limit_error", ""
	case claudeq.KindQuotaExceeded:
		// A spent budget is a spend limit: 429, not to be retried before
		// the reset (x-should-retry: false).
		return http.StatusTooManyRequests, "rate_limit_error", k.String()
	case claudeq.KindOverloaded:
		return 529, "overloaded_error", ""
	case claudeq.KindNoUpstream:
		return 529, "overloaded_error", k.String()
	case claudeq.KindTimeout:
		return http.StatusGatewayTimeout, "timeout_error", ""
	case claudeq.KindUnavailable, claudeq.KindUpstream:
		return http.StatusInternalServerError, "api_error", k.String()
	}
	return http.StatusInternalServerError, "api_error", ""
}

// anthropicBody is Anthropic's error shape; quota refusals add their
// numbers in error.quota.
type anthropicBody struct {
	Type      string          `json:"type"`
	Error     anthropicDetail `json:"error"`
	RequestID string          `json:"request_id"`
}

type anthropicDetail struct {
	Type    string         `json:"type"`
	Message string         `json:"message"`
	Details *errorCode     `json:"details,omitempty"`
	Quota   map[string]any `json:"quota,omitempty"`
}

type errorCode struct {
	ErrorCode string `json:"error_code"`
}

// anthropicError renders err for an Anthropic-compatible route.
func (s *Server) anthropicError(err error, c echo.Context) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		err = fromEcho(he)
	}
	code, typ, reason := anthropicKind(err)
	msg := claudeq.ErrorMessage(err)
	if claudeq.ErrorKind(err) == claudeq.KindInternal {
		msg = "internal error"
	}
	if code >= 500 {
		s.log.Error("request failed", "request_id", requestID(c), "path", c.Path(), "status", code, "err", err)
	}
	h := c.Response().Header()
	if ra := claudeq.RetryAfter(err); ra > 0 {
		h.Set("Retry-After", strconv.Itoa(int((ra+time.Second-1)/time.Second)))
	}
	if code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="claudeq"`)
	}
	if claudeq.ErrorKind(err) == claudeq.KindQuotaExceeded {
		h.Set("x-should-retry", "false") // the SDKs would retry a 429
	}
	body := anthropicBody{Type: "error", Error: anthropicDetail{Type: typ, Message: msg, Quota: quotaDetails(err)}, RequestID: requestID(c)}
	if reason != "" {
		body.Error.Details = &errorCode{ErrorCode: reason}
	}
	_ = c.JSON(code, body)
}

// countTokens serves POST /v1/messages/count_tokens by forwarding the
// request (content policy applied, model resolved) to a node serving its
// model, whose count is exact for that model; nothing is estimated here
// and nothing is billed. It counts as a request, with no tokens, against
// the key's rate limit.
func (s *Server) countTokens(c echo.Context) error {
	if s.ia.Upstream == nil {
		return claudeq.Errorf(claudeq.KindInternal, "no upstream configured")
	}
	body, err := s.readV1Body(c)
	if err != nil {
		return err
	}
	call, err := s.parseV1(c, body, true)
	if err != nil {
		return err
	}
	if err := s.checkKeyLimit(c, 0); err != nil {
		return err
	}
	if call.body, err = s.applyPolicy(c, call.body); err != nil {
		return err
	}
	auditRecord(c).Model = call.model.ID
	hdr := c.Request().Header
	b, err := s.ia.Upstream.CountTokens(c.Request().Context(), call.model.ID, call.body, hdr.Get("anthropic-version"), hdr.Get("anthropic-beta"))
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
}

// modelObject is one model of GET /v1/models, in Anthropic's shape.
type modelObject struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

// releases are the release dates of the catalog's models, for created_at;
// a model not listed gets modelEpoch.
var releases = map[string]string{
	"claude-opus-4-5":   "2025-11-24T00:00:00Z",
	"claude-haiku-4-5":  "2025-10-15T00:00:00Z",
	"claude-sonnet-4-5": "2025-09-29T00:00:00Z",
}

const modelEpoch = "2026-01-01T00:00:00Z"

// v1Models returns the models the caller may use (the catalog's, served
// by some node, within the key's tier), newest first.
func (s *Server) v1Models(c echo.Context) []modelObject {
	tier := principalOf(c).Tier
	var out []modelObject
	for _, m := range s.cat.Models() {
		if !tierAllows(tier, m.Tier) || (s.ia.Upstream != nil && !s.ia.Upstream.Serves(m.ID)) {
			continue
		}
		at, ok := releases[m.ID]
		if !ok {
			at = modelEpoch
		}
		out = append(out, modelObject{Type: "model", ID: m.ID, DisplayName: displayName(m.ID), CreatedAt: at})
	}
	slices.SortStableFunc(out, func(a, b modelObject) int {
		if a.CreatedAt != b.CreatedAt {
			return strings.Compare(b.CreatedAt, a.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// displayName turns "claude-sonnet-4-5" into "Claude Sonnet 4.5".
func displayName(id string) string {
	var words, version []string
	for _, p := range strings.Split(id, "-") {
		if p == "" {
			continue
		}
		if _, err := strconv.Atoi(p); err == nil {
			version = append(version, p)
			continue
		}
		if len(version) > 0 {
			words, version = append(words, strings.Join(version, ".")), nil
		}
		words = append(words, strings.ToUpper(p[:1])+p[1:])
	}
	if len(version) > 0 {
		words = append(words, strings.Join(version, "."))
	}
	return strings.Join(words, " ")
}

// listModels serves GET /v1/models: Anthropic's list shape (data,
// has_more, first_id, last_id) with limit (1–1000, default 20), after_id
// and before_id.
func (s *Server) listModels(c echo.Context) error {
	all := s.v1Models(c)
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "limit: an integer from 1 to 1000")
		}
		limit = n
	}
	index := func(param string) (int, error) {
		id := c.QueryParam(param)
		i := slices.IndexFunc(all, func(m modelObject) bool { return m.ID == id })
		if i < 0 {
			return 0, claudeq.Errorf(claudeq.KindInvalidRequest, "%s: no model %q in this list", param, id)
		}
		return i, nil
	}
	page, more := all, false
	switch {
	case c.QueryParam("before_id") != "" && c.QueryParam("after_id") != "":
		return claudeq.Errorf(claudeq.KindInvalidRequest, "before_id, after_id: send at most one")
	case c.QueryParam("before_id") != "":
		i, err := index("before_id")
		if err != nil {
			return err
		}
		page = all[:i]
		if len(page) > limit {
			page, more = page[len(page)-limit:], true
		}
	default:
		if c.QueryParam("after_id") != "" {
			i, err := index("after_id")
			if err != nil {
				return err
			}
			page = all[i+1:]
		}
		if len(page) > limit {
			page, more = page[:limit], true
		}
	}
	out := map[string]any{"data": page, "has_more": more, "first_id": nil, "last_id": nil}
	if page == nil {
		out["data"] = []modelObject{}
	}
	if len(page) > 0 {
		out["first_id"], out["last_id"] = page[0].ID, page[len(page)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// getModel serves GET /v1/models/{id} (an id or an alias).
func (s *Server) getModel(c echo.Context) error {
	m, err := s.v1Model(c, c.Param("id"))
	if err != nil {
		return err
	}
	for _, o := range s.v1Models(c) {
		if o.ID == m.ID {
			return c.JSON(http.StatusOK, o)
		}
	}
	return claudeq.Errorf(claudeq.KindNotFound, "model: %s", c.Param("id"))
}
