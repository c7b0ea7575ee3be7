package claudeq

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error by what the caller can do about it. The zero value
// is KindInternal: an unclassified error never leaks its text to a caller.
type Kind uint8

// The kinds of error. Their String values are the stable snake_case error
// types of the HTTP API (the Anthropic error shape where one exists).
const (
	KindInternal Kind = iota
	KindInvalidRequest
	KindAuthentication
	KindPermission
	KindNotFound
	KindConflict
	KindRequestTooLarge
	KindUnsupportedMediaType
	KindUnprocessable
	KindRateLimit
	KindQuotaExceeded
	KindOverloaded
	KindUnavailable
	KindTimeout
	KindUpstream
	KindContentPolicy
	KindBilling
	KindNoUpstream
)

var kindNames = [...]string{
	KindInternal:             "api_error",
	KindInvalidRequest:       "invalid_request_error",
	KindAuthentication:       "authentication_error",
	KindPermission:           "permission_error",
	KindNotFound:             "not_found_error",
	KindConflict:             "conflict_error",
	KindRequestTooLarge:      "request_too_large",
	KindUnsupportedMediaType: "unsupported_media_type",
	KindUnprocessable:        "idempotency_error",
	KindRateLimit:            "rate_limit_error",
	KindQuotaExceeded:        "quota_exceeded",
	KindOverloaded:           "overloaded_error",
	KindUnavailable:          "service_unavailable",
	KindTimeout:              "timeout_error",
	KindUpstream:             "upstream_error",
	KindContentPolicy:        "content_policy_violation",
	KindBilling:              "billing_error",
	KindNoUpstream:           "no_healthy_upstream",
}

// String returns the stable API name of the kind, e.g. "invalid_request_error".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return kindNames[KindInternal]
}

// KindFromString maps an API error type back to its Kind; unknown names are
// KindInternal.
func KindFromString(s string) Kind {
	for k, n := range kindNames {
		if n == s {
			return Kind(k)
		}
	}
	return KindInternal
}

// Error is the one error type of claudeq. Msg is safe to show a caller; Err is
// the cause and is only logged.
type Error struct {
	Kind Kind
	Op   string // where it happened, e.g. "store.SaveJob"; for logs
	Msg  string // safe to show the caller
	Err  error  // the cause; never shown
	// RetryAfter, when positive, tells the caller (or the queue) when trying
	// again can succeed.
	RetryAfter time.Duration
}

// Error implements error. It includes the cause, so it is for logs only;
// callers see Msg through ErrorMessage.
func (e *Error) Error() string {
	s := e.Kind.String()
	if e.Op != "" {
		s = e.Op + ": " + s
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind whose caller-safe message is the
// formatted text.
func Errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// E wraps cause as an error of the given kind, with op for the logs and msg
// for the caller.
func E(kind Kind, op, msg string, cause error) *Error {
	return &Error{Kind: kind, Op: op, Msg: msg, Err: cause}
}

// ErrorKind returns the kind of the first *Error in err's chain, or
// KindInternal.
func ErrorKind(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrorMessage returns the caller-safe message of err: the Msg of the first
// *Error in its chain that has one, else a generic text for its kind.
func ErrorMessage(err error) string {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			break
		}
		if e.Msg != "" {
			return e.Msg
		}
		err = e.Err
	}
	return "internal error"
}

// RetryAfter returns the RetryAfter of the first *Error in err's chain that
// sets one.
func RetryAfter(err error) time.Duration {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return 0
		}
		if e.RetryAfter > 0 {
			return e.RetryAfter
		}
		err = e.Err
	}
	return 0
}
