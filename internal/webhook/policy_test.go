package webhook_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/webhook"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allow   string
		want    string // Policy.String(); ignored when wantErr
		wantErr []string
	}{
		{name: "empty", allow: "", want: ""},
		{name: "only separators", allow: " ,, \n", want: ""},
		{name: "brief example", allow: "127.0.0.1, 10.0.0.0/8, hooks.internal.example, http://127.0.0.1",
			want: "127.0.0.1,10.0.0.0/8,hooks.internal.example,http://127.0.0.1"},
		{name: "white space separated", allow: "http://[::1]\tfd00::/8\n*.svc.corp.example", want: "http://::1,fd00::/8,*.svc.corp.example"},
		{name: "https prefix and trailing slash", allow: "https://Hooks.Example.COM/", want: "hooks.example.com"},
		{name: "CIDR is masked", allow: "10.1.2.3/8", want: "10.0.0.0/8"},
		{name: "bracketed v6 range", allow: "http://[fd00::]/8", want: "http://fd00::/8"},
		{name: "mapped address is unmapped", allow: "::ffff:127.0.0.1", want: "127.0.0.1"},
		{name: "trailing dot on a name", allow: "hooks.example.", want: "hooks.example"},
		{name: "port", allow: "127.0.0.1:8080", wantErr: []string{`"127.0.0.1:8080"`, "no port"}},
		{name: "name with port", allow: "hooks.example:8443", wantErr: []string{"no port"}},
		{name: "v6 with port", allow: "[::1]:80", wantErr: []string{"no port"}},
		{name: "other scheme", allow: "ftp://127.0.0.1", wantErr: []string{"only http:// or https://"}},
		{name: "bad CIDR", allow: "10.0.0.0/33", wantErr: []string{"not a CIDR range"}},
		{name: "numeric name", allow: "2130706433", wantErr: []string{"dotted-decimal"}},
		{name: "bad name", allow: "hooks!.example", wantErr: []string{"contains"}},
		{name: "empty after scheme", allow: "http://", wantErr: []string{"empty"}},
		{name: "all errors reported", allow: "127.0.0.1:1, ok.example, 10.0.0.0/99", wantErr: []string{"127.0.0.1:1", "10.0.0.0/99", webhook.EnvAllow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := webhook.ParsePolicy(tt.allow)
			if len(tt.wantErr) > 0 {
				require.Error(t, err)
				for _, w := range tt.wantErr {
					require.ErrorContains(t, err, w)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, p.String())
		})
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allow   string
		url     string
		wantErr string // "" = accepted
		blocked bool   // the error wraps ErrBlocked
	}{
		// Scheme, port, shape.
		{name: "public https", url: "https://hooks.example.com/claudeq?x=1"},
		{name: "explicit 443", url: "https://hooks.example.com:443/"},
		{name: "public IP literal", url: "https://93.184.215.14/hook"},
		{name: "public IPv6 literal", url: "https://[2606:4700::6810:84e5]/hook"},
		{name: "upper-case scheme and host", url: "HTTPS://HOOKS.EXAMPLE.COM/"},
		{name: "trailing dot", url: "https://hooks.example.com./"},
		{name: "empty", url: "", wantErr: "required"},
		{name: "plain http", url: "http://hooks.example.com/", wantErr: "must use https"},
		{name: "other scheme", url: "ftp://hooks.example.com/", wantErr: "scheme must be https"},
		{name: "javascript", url: "javascript:alert(1)", wantErr: "scheme must be https"},
		{name: "no scheme", url: "hooks.example.com/x", wantErr: "scheme must be https"},
		{name: "opaque", url: "https:hooks.example.com", wantErr: "absolute URL"},
		{name: "other port", url: "https://hooks.example.com:8443/", wantErr: "port must be 443"},
		{name: "port 0", url: "https://hooks.example.com:0/", wantErr: "between 1 and 65535"},
		{name: "port too large", url: "https://hooks.example.com:70000/", wantErr: "between 1 and 65535"},
		{name: "userinfo", url: "https://user:pw@hooks.example.com/", wantErr: "user information"},
		{name: "user only", url: "https://user@hooks.example.com/", wantErr: "user information"},
		{name: "fragment", url: "https://hooks.example.com/#frag", wantErr: "fragment"},
		{name: "empty fragment", url: "https://hooks.example.com/#", wantErr: "fragment"},
		{name: "white space", url: " https://hooks.example.com/", wantErr: "white space"},
		{name: "too long", url: "https://hooks.example.com/" + string(make([]byte, 2100)), wantErr: "longer than"},
		{name: "not ASCII", url: "https://hööks.example.com/", wantErr: "punycode"},
		{name: "punycode", url: "https://xn--hks-qoaa.example.com/"},
		{name: "bad label", url: "https://-hooks.example.com/", wantErr: "hyphen"},

		// Blocked names.
		{name: "localhost", url: "https://localhost/", wantErr: "loopback name", blocked: true},
		{name: "LOCALHOST.", url: "https://LOCALHOST./", wantErr: "loopback name", blocked: true},
		{name: "sub.localhost", url: "https://app.localhost/", wantErr: "loopback name", blocked: true},
		{name: "localhost.localdomain", url: "https://localhost.localdomain/", wantErr: "loopback name", blocked: true},
		{name: "ip6-localhost", url: "https://ip6-localhost/", wantErr: "loopback name", blocked: true},
		{name: "single label", url: "https://redis/", wantErr: "single-label", blocked: true},
		{name: "mDNS", url: "https://printer.local/", wantErr: "local-network name", blocked: true},
		{name: "k8s service", url: "https://api.default.svc.cluster.local/", wantErr: "local-network name", blocked: true},
		{name: "metadata name", url: "https://metadata.google.internal/", wantErr: "local-network name", blocked: true},
		{name: "home.arpa", url: "https://nas.home.arpa/", wantErr: "local-network name", blocked: true},

		// Blocked addresses, in every spelling.
		{name: "loopback", url: "https://127.0.0.1/", wantErr: "loopback address", blocked: true},
		{name: "loopback elsewhere in 127/8", url: "https://127.45.6.7/", wantErr: "loopback", blocked: true},
		{name: "decimal", url: "http://2130706433/", wantErr: `"2130706433" is the IP address 127.0.0.1, which is a loopback`, blocked: true},
		{name: "hex", url: "https://0x7f000001/", wantErr: "127.0.0.1, which is a loopback", blocked: true},
		{name: "hex dotted", url: "https://0x7f.0x0.0x0.0x1/", wantErr: "127.0.0.1", blocked: true},
		{name: "octal", url: "https://0177.0.0.1/", wantErr: "127.0.0.1", blocked: true},
		{name: "short form", url: "https://127.1/", wantErr: "127.0.0.1", blocked: true},
		{name: "short form three parts", url: "https://10.1.1/", wantErr: "10.1.0.1, which is a private", blocked: true},
		{name: "mixed forms", url: "https://0xa9.254.0251.254/", wantErr: "169.254.169.254", blocked: true},
		{name: "percent-encoded host", url: "https://%31%32%37.0.0.1/", wantErr: "not a valid URL"},
		{name: "trailing dot on an address", url: "https://127.0.0.1./", wantErr: "loopback", blocked: true},
		{name: "public in odd spelling", url: "https://134744072/", wantErr: "write it as 8.8.8.8"},
		{name: "leading zero is octal", url: "https://010.0.0.1/", wantErr: "write it as 8.0.0.1"},
		{name: "numeric garbage", url: "https://1.2.3.4.5/", wantErr: "neither a DNS name nor a valid IPv4"},
		{name: "octet too large", url: "https://256.1.1.1/", wantErr: "neither a DNS name nor a valid IPv4"},
		{name: "name ending in a number", url: "https://hooks.example.123/", wantErr: "neither a DNS name nor a valid IPv4"},
		{name: "private 10/8", url: "https://10.0.0.5/", wantErr: "private address", blocked: true},
		{name: "private 172.16/12", url: "https://172.31.255.1/", wantErr: "private address", blocked: true},
		{name: "172.32 is public", url: "https://172.32.0.1/"},
		{name: "private 192.168/16", url: "https://192.168.1.1/", wantErr: "private address", blocked: true},
		{name: "metadata", url: "https://169.254.169.254/latest/meta-data/", wantErr: "cloud metadata", blocked: true},
		{name: "link-local", url: "https://169.254.1.1/", wantErr: "link-local", blocked: true},
		{name: "CGNAT", url: "https://100.64.0.1/", wantErr: "carrier-grade NAT", blocked: true},
		{name: "Alibaba metadata in CGNAT", url: "https://100.100.100.200/", wantErr: "carrier-grade NAT", blocked: true},
		{name: "unspecified", url: "https://0.0.0.0/", wantErr: "this network", blocked: true},
		{name: "zero", url: "https://0/", wantErr: "this network", blocked: true},
		{name: "multicast", url: "https://224.0.0.1/", wantErr: "multicast", blocked: true},
		{name: "broadcast", url: "https://255.255.255.255/", wantErr: "broadcast", blocked: true},
		{name: "reserved", url: "https://240.0.0.1/", wantErr: "reserved", blocked: true},
		{name: "benchmarking", url: "https://198.18.0.1/", wantErr: "benchmarking", blocked: true},
		{name: "TEST-NET-1", url: "https://192.0.2.1/", wantErr: "documentation", blocked: true},
		{name: "TEST-NET-2", url: "https://198.51.100.1/", wantErr: "documentation", blocked: true},
		{name: "TEST-NET-3", url: "https://203.0.113.1/", wantErr: "documentation", blocked: true},
		{name: "IPv6 loopback", url: "https://[::1]/", wantErr: "IPv6 loopback", blocked: true},
		{name: "IPv6 loopback long form", url: "https://[0:0:0:0:0:0:0:1]/", wantErr: "IPv6 loopback", blocked: true},
		{name: "IPv6 unspecified", url: "https://[::]/", wantErr: "unspecified", blocked: true},
		{name: "IPv4-mapped dotted", url: "https://[::ffff:127.0.0.1]/", wantErr: "loopback address (127", blocked: true},
		{name: "IPv4-mapped hex", url: "https://[::ffff:7f00:1]/", wantErr: "loopback address (127", blocked: true},
		{name: "IPv4-mapped metadata", url: "https://[::ffff:a9fe:a9fe]/", wantErr: "cloud metadata", blocked: true},
		{name: "IPv4-compatible", url: "https://[::127.0.0.1]/", wantErr: "IPv4-compatible", blocked: true},
		{name: "IPv4-translated", url: "https://[::ffff:0:7f00:1]/", wantErr: "IPv4-translated", blocked: true},
		{name: "NAT64 of loopback", url: "https://[64:ff9b::127.0.0.1]/", wantErr: "NAT64", blocked: true},
		{name: "NAT64 of metadata", url: "https://[64:ff9b::a9fe:a9fe]/", wantErr: "NAT64 address (64:ff9b::/96) of the cloud metadata", blocked: true},
		{name: "NAT64 of a public address", url: "https://[64:ff9b::808:808]/"},
		{name: "local NAT64", url: "https://[64:ff9b:1::1]/", wantErr: "local-use NAT64", blocked: true},
		{name: "6to4 of private", url: "https://[2002:0a00:0001::1]/", wantErr: "6to4", blocked: true},
		{name: "link-local v6", url: "https://[fe80::1]/", wantErr: "link-local", blocked: true},
		{name: "link-local v6 with zone", url: "https://[fe80::1%25eth0]/", wantErr: "link-local", blocked: true},
		{name: "ULA", url: "https://[fd12:3456::1]/", wantErr: "unique local", blocked: true},
		{name: "ULA fc", url: "https://[fc00::1]/", wantErr: "unique local", blocked: true},
		{name: "site-local", url: "https://[fec0::1]/", wantErr: "site-local", blocked: true},
		{name: "multicast v6", url: "https://[ff02::1]/", wantErr: "multicast", blocked: true},
		{name: "documentation v6", url: "https://[2001:db8::1]/", wantErr: "documentation", blocked: true},
		{name: "Teredo", url: "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", wantErr: "Teredo", blocked: true},
		{name: "bad v6", url: "https://[::g]/", wantErr: "not a valid URL"},

		// The allow-list.
		{name: "allowed IP, https, other port", allow: "127.0.0.1", url: "https://127.0.0.1:8443/hook"},
		{name: "allowed IP, http not permitted", allow: "127.0.0.1", url: "http://127.0.0.1:8080/hook", wantErr: "must use https"},
		{name: "allowed IP with http", allow: "http://127.0.0.1", url: "http://127.0.0.1:8080/hook"},
		{name: "allowed IP does not allow its neighbour", allow: "http://127.0.0.1", url: "http://127.0.0.2:8080/", wantErr: "loopback", blocked: true},
		{name: "allowed CIDR", allow: "10.0.0.0/8", url: "https://10.20.30.40/"},
		{name: "allowed CIDR short form", allow: "10.0.0.0/8", url: "https://10.1/", wantErr: "write it as 10.0.0.1"},
		{name: "allowed v6", allow: "http://[::1]", url: "http://[::1]:9000/"},
		{name: "allowed v4 matches mapped v6", allow: "http://127.0.0.1", url: "http://[::ffff:127.0.0.1]:9000/"},
		{name: "allowed name", allow: "hooks.internal.example", url: "https://hooks.internal.example:8443/"},
		{name: "allowed name case-insensitive", allow: "hooks.internal.example", url: "https://HOOKS.internal.example./"},
		{name: "allowed name, http not permitted", allow: "hooks.internal.example", url: "http://hooks.internal.example/", wantErr: "must use https"},
		{name: "allowed name with http", allow: "http://hooks.internal.example", url: "http://hooks.internal.example:8080/"},
		{name: "allowed name is not a wildcard", allow: "internal.example", url: "https://hooks.internal.example:8443/", wantErr: "port must be 443"},
		{name: "wildcard", allow: "*.svc.corp", url: "https://a.b.svc.corp:8443/"},
		{name: "wildcard excludes the apex", allow: "*.svc.corp", url: "https://svc.corp:8443/", wantErr: "port must be 443"},
		{name: "allowed localhost", allow: "http://localhost", url: "http://localhost:3000/"},
		{name: "allowed single label", allow: "receiver", url: "https://receiver/"},
		{name: "IP entry does not allow a name", allow: "http://127.0.0.1", url: "http://localhost:3000/", wantErr: "loopback name", blocked: true},
		{name: "IP entry does not allow http for names", allow: "http://10.0.0.0/8", url: "http://hooks.corp.example/", wantErr: "must use https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := webhook.ParsePolicy(tt.allow)
			require.NoError(t, err)
			err = p.CheckURL(tt.url)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(err))
			msg := claudeq.ErrorMessage(err)
			require.Contains(t, msg, tt.wantErr)
			require.Regexp(t, `^webhook_url: `, msg)
			require.Equal(t, tt.blocked, errors.Is(err, webhook.ErrBlocked), "ErrBlocked")
		})
	}
}

func TestNilPolicyIsDefault(t *testing.T) {
	t.Parallel()
	var p *webhook.Policy
	require.NoError(t, p.CheckURL("https://hooks.example.com/"))
	require.ErrorIs(t, p.CheckURL("https://127.0.0.1/"), webhook.ErrBlocked)
	require.ErrorIs(t, p.DialControl("x.example")("tcp4", "127.0.0.1:443", nil), webhook.ErrBlocked)
}

// TestDialControl calls the Control function directly, with no socket: it
// must refuse every blocked address, whatever name led to it, unless
// allow-listed.
func TestDialControl(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allow   string
		host    string
		address string
		wantErr string // "" = allowed
	}{
		{name: "public v4", host: "hooks.example.com", address: "93.184.215.14:443"},
		{name: "public v6", host: "hooks.example.com", address: "[2606:4700::6810:84e5]:443"},
		{name: "rebinding to loopback", host: "hooks.example.com", address: "127.0.0.1:443", wantErr: "hooks.example.com resolves to 127.0.0.1, which is a loopback"},
		{name: "rebinding to metadata", host: "hooks.example.com", address: "169.254.169.254:80", wantErr: "cloud metadata"},
		{name: "rebinding to private", host: "hooks.example.com", address: "10.0.0.1:443", wantErr: "private"},
		{name: "rebinding to CGNAT", host: "hooks.example.com", address: "100.64.1.1:443", wantErr: "carrier-grade"},
		{name: "rebinding to unspecified", host: "hooks.example.com", address: "0.0.0.0:443", wantErr: "this network"},
		{name: "rebinding to v6 loopback", host: "hooks.example.com", address: "[::1]:443", wantErr: "IPv6 loopback"},
		{name: "rebinding to mapped loopback", host: "hooks.example.com", address: "[::ffff:127.0.0.1]:443", wantErr: "loopback address (127"},
		{name: "rebinding to link-local v6 with zone", host: "hooks.example.com", address: "[fe80::1%eth0]:443", wantErr: "link-local"},
		{name: "rebinding to ULA", host: "hooks.example.com", address: "[fd00::1]:443", wantErr: "unique local"},
		{name: "rebinding to NAT64 of private", host: "hooks.example.com", address: "[64:ff9b::a00:1]:443", wantErr: "NAT64"},
		{name: "IP literal host", host: "10.0.0.1", address: "10.0.0.1:443", wantErr: "webhook: destination not allowed: 10.0.0.1 is a private"},
		{name: "unparsable", host: "x", address: "nonsense", wantErr: "unparsable"},
		{name: "allowed range", allow: "127.0.0.0/8", host: "hooks.example.com", address: "127.0.0.9:8080"},
		{name: "allowed name", allow: "hooks.internal.example", host: "HOOKS.internal.example.", address: "10.1.2.3:443"},
		{name: "allowed wildcard", allow: "*.internal.example", host: "a.internal.example", address: "10.1.2.3:443"},
		{name: "other name not allowed", allow: "hooks.internal.example", host: "evil.example", address: "10.1.2.3:443", wantErr: "private"},
		{name: "allowed range, other address", allow: "127.0.0.1", host: "hooks.example.com", address: "127.0.0.2:80", wantErr: "loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := webhook.ParsePolicy(tt.allow)
			require.NoError(t, err)
			err = p.DialControl(tt.host)("tcp", tt.address, nil)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			if tt.name != "unparsable" {
				require.ErrorIs(t, err, webhook.ErrBlocked)
			}
		})
	}
}

func TestBlockedIPPublic(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"1.1.1.1", "8.8.8.8", "93.184.215.14", "172.32.0.1", "100.128.0.1", "2606:4700::1", "2a00:1450::1", "64:ff9b::808:808", "2002:808:808::1"} {
		require.Empty(t, webhook.BlockedIP(netip.MustParseAddr(s)), s)
	}
}
