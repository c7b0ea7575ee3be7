//go:build !linux

package redistest

import "os/exec"

// setParentDeathSignal is a no-op outside Linux: a redis-server may outlive
// a test binary that is killed before its cleanups run.
func setParentDeathSignal(*exec.Cmd) {}
