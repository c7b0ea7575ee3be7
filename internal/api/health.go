package api

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

type check struct {
	Status    string  `json:"status"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
	Count     *int    `json:"count,omitempty"`
}

// health answers liveness (the process answers) and readiness: Redis and
// the store answer and at least one worker sent a heartbeat.
func (s *Server) health(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	probe := func(f func(context.Context) error) check {
		t := time.Now()
		err := f(ctx)
		ch := check{Status: "ok", LatencyMS: float64(time.Since(t).Microseconds()) / 1000}
		if err != nil {
			ch.Status, ch.Error = "unavailable", "not reachable"
		}
		return ch
	}
	checks := map[string]check{
		"redis":   probe(s.q.Ping),
		"mongodb": probe(s.st.Ping),
	}
	w := check{Status: "ok"}
	if checks["redis"].Status == "ok" {
		t := time.Now()
		n, err := s.q.Workers()
		w.LatencyMS = float64(time.Since(t).Microseconds()) / 1000
		w.Count = &n
		if err != nil || n == 0 {
			w.Status, w.Error = "unavailable", "no worker is running"
		}
	} else {
		w.Status, w.Error = "unknown", "redis not reachable"
	}
	checks["workers"] = w
	degraded := false
	if s.fl != nil && checks["redis"].Status == "ok" {
		up := check{Status: "ok"}
		if ns, err := s.fl.Nodes(ctx); err != nil {
			up.Status, up.Error = "unknown", "node health unavailable"
		} else {
			healthy := 0
			for _, n := range ns {
				if n.Status == "healthy" || n.Status == "degraded" {
					healthy++
				}
			}
			up.Count = &healthy
			switch {
			case healthy == 0:
				up.Status, up.Error = "unavailable", "no healthy upstream node"
			case healthy < len(ns):
				degraded = true
				up.Error = "some upstream nodes are unhealthy"
			}
		}
		checks["upstream"] = up
	}
	ready := true
	for _, ch := range checks {
		if ch.Status != "ok" {
			ready = false
		}
	}
	status := "ok"
	if degraded {
		status = "degraded"
	}
	body := map[string]any{"status": status, "live": true, "ready": ready, "checks": checks}
	code := http.StatusOK
	if !ready {
		body["status"] = "unavailable"
		code = http.StatusServiceUnavailable
		c.Response().Header().Set("Retry-After", "5")
	}
	return c.JSON(code, body)
}
