package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout bounds one delivery attempt: connect, TLS, request and
// response headers (Standard Webhooks: 15 s).
const DefaultTimeout = 15 * time.Second

// Resolver looks up the addresses of a host name. *net.Resolver (and
// net.DefaultResolver) implements it; tests inject their own, so that a
// name can "resolve" to any address without DNS.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Config configures NewClient and NewDeliverer. The zero value is usable:
// default policy, system resolver, 15 s timeout.
type Config struct {
	// Policy decides which destinations are allowed; nil is the default
	// policy (public https only). Set from CLAUDEQ_WEBHOOK_ALLOW.
	Policy *Policy
	// Resolver resolves host names at connect time; nil means
	// net.DefaultResolver.
	Resolver Resolver
	// Timeout bounds one attempt; zero means DefaultTimeout (15 s).
	Timeout time.Duration
	// TLSConfig, if set, replaces the default TLS settings (tests use it
	// to trust a test server's certificate).
	TLSConfig *tls.Config
	// UserAgent is sent with every delivery; "" means "claudeq-webhooks/1".
	UserAgent string
	// Now is the clock for webhook-timestamp and Retry-After dates; nil
	// means time.Now.
	Now func() time.Time

	// beforeConnect, set only by tests, runs after the policy allowed an
	// address and before connect(2): a tripwire that keeps a policy bug from
	// sending test traffic anywhere but loopback.
	beforeConnect func(address string) error
}

// NewClient returns the HTTP client webhooks are sent with. It:
//   - resolves names through c.Resolver and checks every address it is
//     about to connect to against c.Policy in the dialer's Control
//     function, before connect(2): a name that resolves (or rebinds) to a
//     private address is refused with an error wrapping ErrBlocked;
//   - never uses a proxy from the environment (a proxy would dial for us,
//     unchecked);
//   - follows no redirects: a 3xx is returned as is (and counts as a
//     failed delivery);
//   - gives up after c.Timeout (15 s).
//
// The client is safe for concurrent use.
func NewClient(c Config) *http.Client {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	d := &dialer{policy: c.Policy, resolver: c.Resolver, timeout: timeout, beforeConnect: c.beforeConnect}
	if d.resolver == nil {
		d.resolver = net.DefaultResolver
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        c.TLSConfig,
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		ExpectContinueTimeout:  time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

type dialer struct {
	policy        *Policy
	resolver      Resolver
	timeout       time.Duration
	beforeConnect func(address string) error
}

// DialContext resolves addr's host through the resolver and dials the
// addresses in turn with a net.Dialer whose Control function enforces the
// policy on the exact address being connected to.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		name := strings.TrimSuffix(strings.ToLower(host), ".")
		if _, numeric := endsInNumber(name); numeric {
			// A resolver might read it as an address (inet_aton); CheckURL
			// refuses such hosts, this is the backstop.
			return nil, fmt.Errorf("webhook: %w: numeric host %q", ErrBlocked, host)
		}
		addrs, err := d.resolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				ips = append(ips, ip.WithZone(a.Zone))
			}
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
	}
	control := d.policy.DialControl(host)
	if d.beforeConnect != nil {
		check := control
		control = func(network, address string, c syscall.RawConn) error {
			if err := check(network, address, c); err != nil {
				return err
			}
			return d.beforeConnect(address)
		}
	}
	nd := &net.Dialer{Timeout: d.timeout, KeepAlive: 30 * time.Second, Control: control}
	var errs []error
	for _, ip := range ips {
		p, err := netip.ParseAddrPort(net.JoinHostPort(ip.String(), port))
		if err != nil {
			return nil, err
		}
		conn, err := nd.DialContext(ctx, network, p.String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
