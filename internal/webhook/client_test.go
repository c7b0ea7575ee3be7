package webhook_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/webhook"
)

// TestConnectTimeRebinding: a name that passes registration but resolves
// to 127.0.0.1 is refused at connect time — no connection reaches the
// listener — unless the allow-list permits the name or the address.
func TestConnectTimeRebinding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allow   string
		host    string
		addrs   []string
		wantErr string // "" = delivered
	}{
		{name: "no allow entry", host: "hooks.example.com", addrs: []string{"127.0.0.1"},
			wantErr: "hooks.example.com resolves to 127.0.0.1, which is a loopback address"},
		{name: "allowed by name", allow: "http://hooks.example.com", host: "hooks.example.com", addrs: []string{"127.0.0.1"}},
		{name: "allowed by wildcard", allow: "*.example.com", host: "hooks.example.com", addrs: []string{"127.0.0.1"}},
		{name: "allowed by address", allow: "127.0.0.1", host: "hooks.example.com", addrs: []string{"127.0.0.1"}},
		{name: "allowed by range", allow: "127.0.0.0/8", host: "hooks.example.com", addrs: []string{"127.0.0.1"}},
		{name: "another address allowed", allow: "127.0.0.2", host: "hooks.example.com", addrs: []string{"127.0.0.1"}, wantErr: "loopback"},
		{name: "another name allowed", allow: "http://other.example.com", host: "hooks.example.com", addrs: []string{"127.0.0.1"}, wantErr: "loopback"},
		{name: "mapped loopback", host: "hooks.example.com", addrs: []string{"::ffff:127.0.0.1"}, wantErr: "loopback address (127"},
		{name: "first address refused, second allowed", allow: "127.0.0.1", host: "hooks.example.com", addrs: []string{"10.0.0.1", "127.0.0.1"}},
		{name: "every address refused", host: "hooks.example.com", addrs: []string{"10.0.0.1", "127.0.0.1"}, wantErr: "10.0.0.1, which is a private"},
		{name: "name does not resolve", host: "nowhere.example.com", wantErr: "no such host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rcv := newReceiver(t, nil)
			res := resolver(map[string][]string{tt.host: tt.addrs})
			if tt.addrs == nil {
				res = resolver(nil)
			}
			c := webhook.NewClient(config(t, tt.allow, res))
			resp, err := c.Post(fmt.Sprintf("http://%s:%s/hook", tt.host, rcv.port()), "application/json", nil)
			if tt.wantErr == "" {
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, http.StatusNoContent, resp.StatusCode)
				require.Len(t, rcv.requests(), 1)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			if tt.addrs != nil {
				require.ErrorIs(t, err, webhook.ErrBlocked)
			}
			require.Zero(t, rcv.conns.Load(), "no connection reached the listener")
		})
	}
}

// TestConnectTimeBlocksEveryRange resolves a name to addresses of every
// blocked range. The dialer's Control function must refuse each one after
// the socket is created and before connect(2): nothing is sent (and the
// tripwire in config would fail the test, refusing the connection, if the
// policy let one through).
func TestConnectTimeBlocksEveryRange(t *testing.T) {
	t.Parallel()
	addrs := []string{
		"10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "169.254.0.1", "100.64.0.1",
		"0.0.0.0", "224.0.0.1", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1",
		"::ffff:10.0.0.1", "::ffff:169.254.169.254",
	}
	if v6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		v6.Close()
		addrs = append(addrs, "::1", "::", "fe80::1", "fd00::1", "ff02::1", "64:ff9b::a9fe:a9fe", "2001:db8::1")
	} else {
		t.Logf("no IPv6 sockets here (%v): IPv6 addresses are covered by TestDialControl only", err)
	}
	for _, addr := range addrs {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			c := webhook.NewClient(config(t, "", resolver(map[string][]string{"rebind.example.com": {addr}})))
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://rebind.example.com/hook", nil)
			require.NoError(t, err)
			_, err = c.Do(req)
			require.ErrorIs(t, err, webhook.ErrBlocked)
			require.ErrorContains(t, err, "rebind.example.com resolves to")
		})
	}
}

// TestNumericHostRefusedAtDial: hosts that a resolver could read as an IPv4
// address are refused before any lookup (CheckURL refuses them first; this
// is the backstop when the client is used directly).
func TestNumericHostRefusedAtDial(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, nil)
	res := resolver(nil)
	c := webhook.NewClient(config(t, "", res))
	for _, host := range []string{"2130706433", "0x7f000001", "127.1"} {
		_, err := c.Get(fmt.Sprintf("http://%s:%s/", host, rcv.port()))
		require.ErrorIs(t, err, webhook.ErrBlocked, host)
	}
	require.Zero(t, res.lookups.Load())
	require.Zero(t, rcv.conns.Load())
}

func TestClientUsesNoProxy(t *testing.T) {
	t.Parallel()
	c := webhook.NewClient(webhook.Config{})
	tr, ok := c.Transport.(*http.Transport)
	require.True(t, ok)
	require.Nil(t, tr.Proxy, "a proxy from the environment would dial unchecked")
	require.Equal(t, webhook.DefaultTimeout, c.Timeout)
}

// TestRedirectNotFollowed: a receiver that redirects to another loopback
// listener gets a failed delivery; the second listener sees nothing.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			target := newReceiver(t, nil)
			redirector := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/stolen", code)
			})
			d := webhook.NewDeliverer(config(t, "http://127.0.0.1", nil))
			res := d.Deliver(t.Context(), webhook.Delivery{ID: "msg_1", URL: redirector.URL + "/hook", Secrets: []string{newSecret()}, Body: []byte(`{}`)})
			require.Error(t, res.Err)
			require.ErrorContains(t, res.Err, "not followed")
			require.Equal(t, code, res.Status)
			require.False(t, res.Disable)
			require.Len(t, redirector.requests(), 1)
			require.Zero(t, target.conns.Load(), "the redirect target was never contacted")
		})
	}
}

// TestHTTPSThroughResolver delivers over TLS to a name the injected
// resolver maps to a loopback test server, allow-listed by name (its port
// is not 443).
func TestHTTPSThroughResolver(t *testing.T) {
	t.Parallel()
	tlsSrv := newTLSReceiver(t)
	pool := x509.NewCertPool()
	pool.AddCert(tlsSrv.Certificate())
	cfg := config(t, "example.com", resolver(map[string][]string{"example.com": {"127.0.0.1"}}))
	cfg.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	d := webhook.NewDeliverer(cfg)
	_, port, _ := net.SplitHostPort(tlsSrv.Listener.Addr().String())
	res := d.Deliver(t.Context(), webhook.Delivery{ID: "msg_tls", URL: "https://example.com:" + port + "/hook", Secrets: []string{newSecret()}, Body: []byte(`{}`)})
	require.NoError(t, res.Err)
	require.Equal(t, http.StatusNoContent, res.Status)
	require.Equal(t, 1, tlsSrv.hits())
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	cfg := config(t, "http://127.0.0.1", nil)
	cfg.Timeout = 200 * time.Millisecond
	res := webhook.NewDeliverer(cfg).Deliver(t.Context(), webhook.Delivery{ID: "msg_1", URL: rcv.URL, Secrets: []string{newSecret()}, Body: []byte(`{}`)})
	require.Error(t, res.Err)
	require.Zero(t, res.Status)
	require.GreaterOrEqual(t, res.Latency, 200*time.Millisecond)
}
