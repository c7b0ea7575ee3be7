//go:build chaos && !linux

package chaos

import "os/exec"

func setParentDeathSignal(*exec.Cmd) {}
