// Package monitorui plugs the /monitoring UI (internal/monitor, asynqmon)
// into app.Options.Monitor. Only the binaries that serve the UI import it
// (cmd/api, claudeq dev), so that worker and scheduler do not link
// asynqmon's assets.
package monitorui

import (
	"github.com/claudeq/claudeq/internal/app"
	"github.com/claudeq/claudeq/internal/monitor"
)

// New makes the UI described by s.
func New(s app.MonitorSpec) (app.MonitorUI, error) {
	m, err := monitor.New(monitor.Options{RedisConnOpt: s.RedisConnOpt, Redis: s.Redis, ValidateKey: s.ValidateKey,
		ReadOnly: s.ReadOnly, Logger: s.Logger})
	if err != nil {
		return nil, err // not a nil *Monitor in a non-nil interface
	}
	return m, nil
}
