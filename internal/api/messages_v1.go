package api

import (
	"errors"
	"net/http"
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
