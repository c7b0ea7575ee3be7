package metrics

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// Unmatched is the route label of requests that matched no Echo route
// (404s for arbitrary paths): raw paths never become label values.
const Unmatched = "unmatched"

// HTTP returns an Echo middleware that records claudeq_http_requests_total
// and claudeq_http_request_duration_seconds by route template (c.Path(),
// e.g. "/api/claude/jobs/:id") and status code.
//
// To record the status the client actually gets, a handler's error is
// rendered here, through Echo's HTTPErrorHandler (c.Error), and not
// returned: install HTTP with e.Use as the first (outermost) middleware, so
// that the error handler sees everything the inner ones set (request id).
// A panic is recorded as a 500 and re-raised.
func (m *Metrics) HTTP() echo.MiddlewareFunc {
	if m == nil {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			start := time.Now()
			defer func() {
				if r := recover(); r != nil {
					m.observeHTTP(route(c), http.StatusInternalServerError, time.Since(start))
					panic(r)
				}
			}()
			if err = next(c); err != nil {
				c.Error(err)
				err = nil
			}
			m.observeHTTP(route(c), statusOf(c), time.Since(start))
			return err
		}
	}
}

func route(c echo.Context) string {
	if p := c.Path(); p != "" {
		return p
	}
	return Unmatched
}

func statusOf(c echo.Context) int {
	code := c.Response().Status
	if !c.Response().Committed {
		// The handler returned without writing (and without an error):
		// net/http answers 200.
		code = http.StatusOK
	}
	if code < 100 || code > 999 {
		code = http.StatusInternalServerError
	}
	return code
}
