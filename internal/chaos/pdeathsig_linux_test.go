//go:build chaos

package chaos

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel SIGKILL the child when the thread
// that started it exits (see startProcess), so that a test binary killed by
// go test -timeout leaves no process behind. Each child gets its own
// process group, so that a terminal's Ctrl-C reaches only the test binary.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
