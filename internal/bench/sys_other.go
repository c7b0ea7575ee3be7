//go:build !linux

package bench

import (
	"os/exec"
	"time"
)

func setParentDeathSignal(*exec.Cmd) {}

// selfCPU is not measured outside Linux.
func selfCPU() time.Duration { return 0 }

// pidCPU is not measured outside Linux.
func pidCPU(int) time.Duration { return 0 }

// machineCPU is not measured outside Linux.
func machineCPU() time.Duration { return 0 }
