// Command machineload loads this machine the way a busy shared CI host
// is loaded, to check that the tests hold there: it keeps CPUs busy and
// opens thousands of outgoing loopback connections (each one takes a port
// of the ephemeral range, and keeps it in TIME_WAIT for a minute after it
// is closed), until it is stopped.
//
//	go run ./scripts/machineload -cpus 2 -conns 2000
//
// Every second it prints how many connections it opened and how many
// sockets of the ephemeral range are in TIME_WAIT or open.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	cpus := flag.Int("cpus", runtime.NumCPU(), "CPU-bound goroutines (each keeps one CPU busy)")
	rate := flag.Int("conns", 2000, "outgoing loopback connections opened per second")
	flag.Parse()
	runtime.GOMAXPROCS(*cpus + 2)

	for range *cpus {
		go func() {
			x := uint64(1)
			for {
				x = x*6364136223846793005 + 1442695040888963407 // spin
				if x == 0 {
					fmt.Print("")
				}
			}
		}()
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	var opened atomic.Int64
	if *rate > 0 {
		go func() {
			tick := time.NewTicker(time.Second / time.Duration(*rate))
			defer tick.Stop()
			for range tick.C {
				go func() {
					c, err := net.Dial("tcp", ln.Addr().String())
					if err != nil {
						return
					}
					opened.Add(1)
					_, _ = c.Write([]byte("x"))
					_ = c.Close() // the client closes first: its port waits in TIME_WAIT
				}()
			}
		}()
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			fmt.Printf("%s opened %d connections; loopback sockets: %s\n", time.Now().Format(time.TimeOnly), opened.Load(), sockets())
		}
	}
}

// sockets counts the TCP sockets by state from /proc/net/tcp (Linux).
func sockets() string {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return "?"
	}
	var timeWait, established int
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		switch f[3] {
		case "06":
			timeWait++
		case "01":
			established++
		}
	}
	return fmt.Sprintf("%d in TIME_WAIT, %d established", timeWait, established)
}
