// Package testport hands tests loopback addresses that nothing else on
// the machine can take from them.
//
// A port that 127.0.0.1:0 hands out is in the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, 32768–60999 by default), where the local
// end of every outgoing connection is drawn from too. A test that closes a
// listener and binds the same port again (a server stopped and restarted,
// a receiver taken down), or that hands the port to a child process to
// bind, can lose it in between to any outgoing connection of any process:
// on a loaded machine that makes thousands, it does ("bind: address
// already in use"). Below the ephemeral range only listeners compete, and
// this package hands each port out once per process, starting at a random
// place so that test processes running at once rarely meet.
//
// Rule (TestNoTestListensOnAFixedPort): test code listens on ":0" or on an
// address from Addr, bound with Listen. Listen refuses a port in the
// ephemeral range.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	mu   sync.Mutex
	next int
)

// EphemeralRange returns the kernel's ephemeral port range [lo, hi] (Linux;
// 32768–60999 elsewhere).
func EphemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l > 0 && h >= l {
				lo, hi = l, h
			}
		}
	}
	return lo, hi
}

// span returns the ports handed out: the 10,000 below the ephemeral range,
// never below 1024.
func span() (lo, hi int) {
	elo, _ := EphemeralRange()
	hi = elo
	return max(1024, hi-10000), hi
}

// Free returns a loopback address ("127.0.0.1:port") whose port is below
// the ephemeral range and free now, or an error when none is.
func Free() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	lo, hi := span()
	if next < lo || next >= hi {
		next = lo + rand.IntN(hi-lo)
	}
	for range hi - lo {
		p := next
		if next++; next >= hi {
			next = lo
		}
		addr := "127.0.0.1:" + strconv.Itoa(p)
		if ln, err := net.Listen("tcp", addr); err == nil {
			_ = ln.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("testport: no free port in %d-%d", lo, hi-1)
}

// Addr is Free for a test: it fails the test when no port is free.
func Addr(t testing.TB) string {
	t.Helper()
	addr, err := Free()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Safe reports whether addr's port is outside the ephemeral range, where
// binding it again cannot fail because of an outgoing connection.
func Safe(addr string) bool {
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(ps)
	lo, hi := EphemeralRange()
	return err == nil && p > 0 && (p < lo || p > hi)
}

// Listen binds addr (from Addr) again, retrying for a few seconds while
// the port's last connections close. It fails the test when addr's port is
// in the ephemeral range: such a port can be lost for good.
func Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	if !Safe(addr) {
		t.Fatalf("testport: %s is in the ephemeral range: take the address from testport.Addr", addr)
	}
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("testport: listen again on %s: %v", addr, err)
	return nil
}
