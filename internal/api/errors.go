package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// status is the one table from error kind to HTTP status.
var status = map[claudeq.Kind]int{
	claudeq.KindInternal:             http.StatusInternalServerError,
	claudeq.KindInvalidRequest:       http.StatusBadRequest,
	claudeq.KindAuthentication:       http.StatusUnauthorized,
	claudeq.KindPermission:           http.StatusForbidden,
	claudeq.KindNotFound:             http.StatusNotFound,
	claudeq.KindConflict:             http.StatusConflict,
	claudeq.KindRequestTooLarge:      http.StatusRequestEntityTooLarge,
	claudeq.KindUnsupportedMediaType: http.StatusUnsupportedMediaType,
	claudeq.KindUnprocessable:        http.StatusUnprocessableEntity,
	claudeq.KindRateLimit:            http.StatusTooManyRequests,
	claudeq.KindQuotaExceeded:        http.StatusTooManyRequests,
	claudeq.KindOverloaded:           529,
	claudeq.KindUnavailable:          http.StatusServiceUnavailable,
	claudeq.KindTimeout:              http.StatusGatewayTimeout,
	claudeq.KindUpstream:             http.StatusBadGateway,
	claudeq.KindContentPolicy:        http.StatusBadRequest,
	claudeq.KindBilling:              http.StatusPaymentRequired,
	claudeq.KindNoUpstream:           http.StatusServiceUnavailable,
}

// ToStatus returns the HTTP status of err.
func ToStatus(err error) int {
	if s, ok := status[claudeq.ErrorKind(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// ErrorBody is the Anthropic error shape, used for every error claudeq
// answers.
type ErrorBody struct {
	Type      string      `json:"type"`
	Error     ErrorDetail `json:"error"`
	RequestID string      `json:"request_id"`
}

// ErrorDetail is the inner error object. Quota refusals add the numbers
// behind the refusal in Quota.
type ErrorDetail struct {
	Type    string         `json:"type"`
	Message string         `json:"message"`
	Quota   map[string]any `json:"quota,omitempty"`
}

// errorHandler is Echo's HTTPErrorHandler: every error, ours or Echo's,
// leaves in the Anthropic shape; internal causes are logged, never shown.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	if anthropicRoute(c) {
		s.anthropicError(err, c) // Anthropic's types and codes only: messages_v1.go
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		err = fromEcho(he)
	}
	code := ToStatus(err)
	kind := claudeq.ErrorKind(err)
	msg := claudeq.ErrorMessage(err)
	if kind == claudeq.KindInternal {
		msg = "internal error"
	}
	if code >= 500 {
		s.log.Error("request failed", "request_id", requestID(c), "path", c.Path(), "status", code, "err", err)
	}
	if ra := claudeq.RetryAfter(err); ra > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int((ra+time.Second-1)/time.Second)))
	} else if code == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	if code == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="claudeq"`)
	}
	body := ErrorBody{Type: "error", Error: ErrorDetail{Type: kind.String(), Message: msg, Quota: quotaDetails(err)}, RequestID: requestID(c)}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = c.JSON(code, body)
}

func fromEcho(he *echo.HTTPError) error {
	msg := http.StatusText(he.Code)
	if m, ok := he.Message.(string); ok && m != "" {
		msg = m
	}
	var k claudeq.Kind
	switch he.Code {
	case http.StatusNotFound:
		k, msg = claudeq.KindNotFound, "no such route"
	case http.StatusMethodNotAllowed:
		k, msg = claudeq.KindInvalidRequest, "method not allowed on this route"
	case http.StatusRequestEntityTooLarge:
		k = claudeq.KindRequestTooLarge
	case http.StatusUnsupportedMediaType:
		k = claudeq.KindUnsupportedMediaType
	case http.StatusUnauthorized:
		k = claudeq.KindAuthentication
	case http.StatusForbidden:
		k = claudeq.KindPermission
	case http.StatusTooManyRequests:
		k = claudeq.KindRateLimit
	case http.StatusServiceUnavailable:
		k = claudeq.KindUnavailable
	default:
		if he.Code >= 400 && he.Code < 500 {
			k = claudeq.KindInvalidRequest
		} else {
			return &claudeq.Error{Kind: claudeq.KindInternal, Err: he}
		}
	}
	return &claudeq.Error{Kind: k, Msg: msg, Err: he}
}
