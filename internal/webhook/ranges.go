package webhook

import "net/netip"

// blockedRange is an address range webhooks may not reach unless
// allow-listed, with the reason given in errors.
type blockedRange struct {
	prefix netip.Prefix
	reason string
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// blocked4 and blocked6 are the ranges refused by default: everything that
// is not a globally reachable unicast address (IANA special-purpose
// registries), so that a webhook can never reach the gateway's own host,
// its private network, a cloud metadata service or a multicast group.
// Order matters only for the reason reported: specific ranges come first.
var blocked4 = []blockedRange{
	{mustPrefix("0.0.0.0/8"), `"this network" (unspecified, 0.0.0.0/8)`},
	{mustPrefix("10.0.0.0/8"), "a private address (RFC 1918, 10.0.0.0/8)"},
	{mustPrefix("100.64.0.0/10"), "a shared carrier-grade NAT address (100.64.0.0/10)"},
	{mustPrefix("127.0.0.0/8"), "a loopback address (127.0.0.0/8)"},
	{mustPrefix("169.254.169.254/32"), "the cloud metadata service (link-local 169.254.169.254)"},
	{mustPrefix("169.254.0.0/16"), "a link-local address (169.254.0.0/16)"},
	{mustPrefix("172.16.0.0/12"), "a private address (RFC 1918, 172.16.0.0/12)"},
	{mustPrefix("192.0.0.0/24"), "an IETF protocol assignment (192.0.0.0/24)"},
	{mustPrefix("192.0.2.0/24"), "a documentation address (TEST-NET-1, 192.0.2.0/24)"},
	{mustPrefix("192.88.99.0/24"), "a reserved 6to4 relay address (192.88.99.0/24)"},
	{mustPrefix("192.168.0.0/16"), "a private address (RFC 1918, 192.168.0.0/16)"},
	{mustPrefix("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"},
	{mustPrefix("198.51.100.0/24"), "a documentation address (TEST-NET-2, 198.51.100.0/24)"},
	{mustPrefix("203.0.113.0/24"), "a documentation address (TEST-NET-3, 203.0.113.0/24)"},
	{mustPrefix("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"},
	{mustPrefix("255.255.255.255/32"), "the broadcast address"},
	{mustPrefix("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"},
}

var blocked6 = []blockedRange{
	{mustPrefix("::/128"), "the unspecified address (::)"},
	{mustPrefix("::1/128"), "the IPv6 loopback address (::1)"},
	{mustPrefix("::/96"), "an IPv4-compatible IPv6 address (deprecated, ::/96)"},
	{mustPrefix("::ffff:0:0:0/96"), "an IPv4-translated address (::ffff:0:0:0/96)"},
	{mustPrefix("64:ff9b:1::/48"), "a local-use NAT64 address (64:ff9b:1::/48)"},
	{mustPrefix("100::/64"), "a discard-only address (100::/64)"},
	{mustPrefix("2001::/32"), "a Teredo address (2001::/32)"},
	{mustPrefix("2001:2::/48"), "a benchmarking address (2001:2::/48)"},
	{mustPrefix("2001:10::/28"), "an ORCHID address (2001:10::/28)"},
	{mustPrefix("2001:20::/28"), "an ORCHIDv2 address (2001:20::/28)"},
	{mustPrefix("2001:db8::/32"), "a documentation address (2001:db8::/32)"},
	{mustPrefix("3fff::/20"), "a documentation address (3fff::/20)"},
	{mustPrefix("fc00::/7"), "a unique local address (ULA, fc00::/7)"},
	{mustPrefix("fe80::/10"), "a link-local address (fe80::/10)"},
	{mustPrefix("fec0::/10"), "a site-local address (deprecated, fec0::/10)"},
	{mustPrefix("ff00::/8"), "a multicast address (ff00::/8)"},
}

var (
	nat64     = mustPrefix("64:ff9b::/96")
	sixToFour = mustPrefix("2002::/16")
)

// blockedIP says why ip may not be reached by default, or "" when it is a
// public address. IPv4-mapped IPv6 addresses are judged as IPv4; NAT64
// (64:ff9b::/96) and 6to4 (2002::/16) addresses as the IPv4 address they
// embed.
func blockedIP(ip netip.Addr) string {
	if !ip.IsValid() {
		return "not an address"
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is4() {
		for _, r := range blocked4 {
			if r.prefix.Contains(ip) {
				return r.reason
			}
		}
		return ""
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		if r := blockedIP(netip.AddrFrom4([4]byte(b[12:16]))); r != "" {
			return "a NAT64 address (64:ff9b::/96) of " + r
		}
		return ""
	}
	if sixToFour.Contains(ip) {
		b := ip.As16()
		if r := blockedIP(netip.AddrFrom4([4]byte(b[2:6]))); r != "" {
			return "a 6to4 address (2002::/16) of " + r
		}
		return ""
	}
	for _, r := range blocked6 {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	if !ip.IsGlobalUnicast() {
		return "not a global unicast address"
	}
	return ""
}
