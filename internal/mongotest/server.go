package mongotest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/claudeq/claudeq/internal/devmongo"

	"github.com/claudeq/claudeq/internal/testport"
)

// Server is a dedicated embedded FerretDB for one test, which the test can
// stop and start again to simulate MongoDB outages. Its data (SQLite, in a
// t.TempDir) survives Stop/Start.
//
// Clients connect to a fixed loopback port owned by Server, which forwards
// connections to the FerretDB instance behind it. Stop closes that port and
// cuts every open connection at once, then shuts FerretDB down, so clients
// fail immediately instead of after FerretDB's 3-second grace period.
//
// URI is safe for concurrent use. Stop and Start may be called from any
// goroutine but are serialised; because they report failures with t.Fatal,
// call them from the test goroutine.
type Server struct {
	t    testing.TB
	dir  string
	addr string // fixed public address, "127.0.0.1:PORT"

	lifeMu sync.Mutex // serialises Start/Stop/cleanup

	mu      sync.Mutex // guards the fields below
	running bool
	ln      net.Listener
	stopFDB func()
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup // accept loop and forwarding goroutines
}

// NewServer starts a dedicated embedded FerretDB with its own temporary
// SQLite directory and its own loopback port; it is stopped at t.Cleanup.
func NewServer(t testing.TB) *Server {
	t.Helper()
	// Stop and Start bind the same port again: testport's, which no
	// outgoing connection can take meanwhile.
	addr := testport.Addr(t)
	ln := testport.Listen(t, addr)
	s := &Server{t: t, dir: t.TempDir(), addr: addr}
	t.Cleanup(s.stop)
	if err := s.start(ln); err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	return s
}

// URI returns "mongodb://127.0.0.1:PORT/"; it stays the same across
// Stop/Start.
func (s *Server) URI() string { return "mongodb://" + s.addr + "/" }

// Stop makes the server unreachable: the port stops listening, open client
// connections are closed, and FerretDB shuts down (Stop waits for it). Clients
// then get connection errors until Start. Stopping a stopped server is a
// no-op.
func (s *Server) Stop() { s.stop() }

// Start starts the server again after Stop, on the same port and with the
// same data. Starting a running server is a no-op. It fails the test if the
// port cannot be bound again within a few seconds (another process took it).
func (s *Server) Start() {
	s.t.Helper()
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		return
	}
	ln := testport.Listen(s.t, s.addr)
	if err := s.start(ln); err != nil {
		_ = ln.Close()
		s.t.Fatal(err)
	}
}

// start starts FerretDB on an ephemeral backend port and forwards
// connections accepted on ln to it.
func (s *Server) start(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	uri, stopFDB, err := devmongo.Start(context.Background(), s.dir, logger())
	if err != nil {
		return err
	}
	backend, err := hostFromURI(uri)
	if err != nil {
		stopFDB()
		return err
	}
	s.running, s.ln, s.stopFDB = true, ln, stopFDB
	s.conns = make(map[net.Conn]struct{})
	s.wg.Add(1)
	go s.acceptLoop(ln, backend)
	return nil
}

func (s *Server) stop() {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	s.running = false
	_ = s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
	stopFDB := s.stopFDB
	s.mu.Unlock()

	s.wg.Wait()
	stopFDB()
}

func (s *Server) acceptLoop(ln net.Listener, backend string) {
	defer s.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		server, err := net.Dial("tcp", backend)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !s.track(client, server) {
			return
		}
		s.wg.Add(2)
		go s.pipe(server, client)
		go s.pipe(client, server)
	}
}

// track registers a forwarded connection pair so that stop can cut it. It
// returns false (after closing both) if the server is stopping.
func (s *Server) track(conns ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		s.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst; when either side ends, both are closed.
func (s *Server) pipe(dst, src net.Conn) {
	defer s.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	s.mu.Lock()
	delete(s.conns, dst)
	delete(s.conns, src)
	s.mu.Unlock()
}

// hostFromURI extracts "host:port" from "mongodb://host:port/".
func hostFromURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("mongotest: unexpected FerretDB URI %q", uri)
	}
	return u.Host, nil
}
