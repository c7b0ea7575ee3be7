package webhook

import "net/netip"

// WithBeforeConnect returns c with a tripwire run after the policy allowed
// an address and before connect(2).
func WithBeforeConnect(c Config, f func(address string) error) Config {
	c.beforeConnect = f
	return c
}

// BlockedIP exposes blockedIP.
func BlockedIP(ip netip.Addr) string { return blockedIP(ip) }

// ParseRetryAfter exposes parseRetryAfter.
var ParseRetryAfter = parseRetryAfter
