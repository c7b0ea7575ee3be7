//go:build race

package chaos

// raceEnabled: the binaries are built with -race too, which reuses the
// packages go test has just compiled and lets the race detector watch the
// processes under chaos.
const raceEnabled = true
