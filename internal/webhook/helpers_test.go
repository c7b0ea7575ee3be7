package webhook_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/webhook"
	sw "github.com/claudeq/claudeq/pkg/webhook"
)

// fakeResolver answers from a map, without DNS, and counts lookups.
type fakeResolver struct {
	addrs   map[string][]string
	lookups atomic.Int64
}

func resolver(m map[string][]string) *fakeResolver { return &fakeResolver{addrs: m} }

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	r.lookups.Add(1)
	if r == nil || r.addrs == nil {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	ss, ok := r.addrs[strings.TrimSuffix(strings.ToLower(host), ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []net.IPAddr
	for _, s := range ss {
		a := netip.MustParseAddr(s)
		out = append(out, net.IPAddr{IP: a.AsSlice(), Zone: a.Zone()})
	}
	return out, nil
}

// config returns a client configuration for tests: the policy parsed from
// allow, the fake resolver, and a tripwire that fails the test — and
// refuses the connection — if the policy ever lets a non-loopback address
// through to connect(2). Tests send traffic to loopback only.
func config(t *testing.T, allow string, r webhook.Resolver) webhook.Config {
	t.Helper()
	p, err := webhook.ParsePolicy(allow)
	require.NoError(t, err)
	if r == nil {
		r = resolver(nil)
	}
	return webhook.WithBeforeConnect(webhook.Config{Policy: p, Resolver: r}, func(address string) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			t.Errorf("tripwire: the policy let %s through to connect", address)
			return errors.New("tripwire: not loopback")
		}
		return nil
	})
}

// receiver is a loopback HTTP server counting connections and requests.
type receiver struct {
	*httptest.Server
	conns atomic.Int64

	mu   sync.Mutex
	reqs []*recorded
}

type recorded struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, h http.HandlerFunc) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body := make([]byte, 0, 512)
		buf := make([]byte, 512)
		for {
			n, err := req.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		r.mu.Lock()
		r.reqs = append(r.reqs, &recorded{header: req.Header.Clone(), body: body})
		r.mu.Unlock()
		if h == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h(w, req)
	}))
	r.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.Start()
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []*recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*recorded(nil), r.reqs...)
}

// port returns the receiver's port.
func (r *receiver) port() string {
	_, p, _ := net.SplitHostPort(r.Listener.Addr().String())
	return p
}

// tlsReceiver is a loopback HTTPS server (certificate for example.com and
// 127.0.0.1) counting requests.
type tlsReceiver struct {
	*httptest.Server
	n atomic.Int64
}

func newTLSReceiver(t *testing.T) *tlsReceiver {
	t.Helper()
	r := &tlsReceiver{}
	r.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *tlsReceiver) hits() int { return int(r.n.Load()) }

func newSecret() string { return sw.NewSecret() }
