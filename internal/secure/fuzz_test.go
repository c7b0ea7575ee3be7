package secure

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzClientIP parses fuzzed CLAUDEQ_TRUSTED_PROXIES and resolves the client
// address of a request with a fuzzed peer address, X-Forwarded-For (one
// header value per line) and X-Forwarded-Proto. Properties: accepted
// prefixes are canonical and format back to themselves; a peer that is not
// a trusted proxy cannot choose its address (the client is the peer) nor
// claim HTTPS; a trusted one may only name an address of its chain; and the
// two places that decide whether the peer is trusted (X-Forwarded-For and
// X-Forwarded-Proto) agree.
func FuzzClientIP(f *testing.F) {
	for _, s := range []struct{ trusted, remote, xff string }{
		{"", "203.0.113.9:1234", "198.51.100.1"},
		{"10.0.0.0/8", "10.1.2.3:1234", "198.51.100.1, 10.0.0.7"},
		{"10.0.0.0/8, 192.0.2.10", "192.0.2.10:80", "198.51.100.1\n10.0.0.7"},
		{"10.0.0.0/8", "203.0.113.9:1234", "198.51.100.1"},
		{"fd00::/8 ::1", "[::1]:443", "[2001:db8::1], fd00::2"},
		{"10.0.0.0/8", "[::ffff:10.1.2.3]:1234", "198.51.100.1"},
		{"::ffff:0.0.0.0/96", "192.0.2.1:1", "garbage, 10.0.0.1"},
		{"10.0.0.0/8", "10.0.0.1:1", "10.0.0.2, 10.0.0.3"},
		{"10.0.0.0/8", "10.0.0.1", "198.51.100.1"},
		{"0.0.0.0/0", "[fe80::1%eth0]:1", "198.51.100.1"},
		{"10.0.0.0/33, x, 1.2.3.4/-1", "bogus", ""},
	} {
		f.Add(s.trusted, s.remote, s.xff, "https")
	}
	f.Fuzz(func(t *testing.T, trusted, remote, xff, proto string) {
		prefixes, err := ParsePrefixes(trusted)
		if err != nil {
			return
		}
		var parts []string
		for _, p := range prefixes {
			if p != p.Masked() || !p.IsValid() {
				t.Fatalf("prefix %v of %q is not canonical", p, trusted)
			}
			parts = append(parts, p.String())
		}
		back, err := ParsePrefixes(strings.Join(parts, ","))
		if err != nil || len(back) != len(prefixes) {
			t.Fatalf("%q: %v formats back to %v, %v", trusted, prefixes, back, err)
		}
		for i := range back {
			if back[i] != prefixes[i] {
				t.Fatalf("%q: %v formats back to %v", trusted, prefixes, back)
			}
		}

		s, err := New(Config{TrustedProxies: prefixes})
		if err != nil {
			t.Fatal(err)
		}
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		if xff != "" {
			r.Header["X-Forwarded-For"] = strings.Split(xff, "\n")
		}
		r.Header["X-Forwarded-Proto"] = []string{proto}

		peer := remote
		if h, _, err := net.SplitHostPort(remote); err == nil {
			peer = h
		}

		ip := s.ClientIP(r)
		// Echo may trim white space around RemoteAddr's host
		// ("192.0.2.1\r:80", which net/http never sets, gives 192.0.2.1):
		// still the peer's own address.
		same := ip == peer || (ip != "" && ip == strings.TrimSpace(peer))
		if a, err := netip.ParseAddr(peer); err == nil && a.Zone() == "" {
			same = same || ip == net.IP(a.AsSlice()).String()
		}
		trustedPeer := s.peerTrusted(r)
		if !trustedPeer {
			if !same && !(ip == "" && net.ParseIP(peer) == nil) {
				t.Fatalf("untrusted peer %q (trusted %v) set its address to %q with X-Forwarded-For %q", remote, prefixes, ip, xff)
			}
			if s.IsHTTPS(r) {
				t.Fatalf("untrusted peer %q claimed HTTPS", remote)
			}
			return
		}
		if !same {
			found := false
			for _, e := range strings.Split(strings.Join(r.Header["X-Forwarded-For"], ","), ",") {
				e = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(e), "["), "]")
				if e == ip || (net.ParseIP(e) != nil && net.ParseIP(e).String() == ip) {
					found = true
				}
			}
			if !found {
				t.Fatalf("client %q is neither the peer %q nor in X-Forwarded-For %q", ip, remote, xff)
			}
		}
	})
}

// FuzzRedactURL checks the two readers of a request's query: nothing
// RedactURL blanks is let through by RefuseQueryKeys, and what RedactURL
// returns carries no key-shaped value and no value of a key parameter.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"", "a=1&b=2", "api_key=cqk_x", "x=cqk_abc", "x=%20sk-ant-abc", "x=%zz&key", "API-KEY=1&=&&", "q=sk%2Dant-x",
		"a=b=c", "%61pi_key=1", "x=+cqk_1", "x=cqk_%", ";x=cqk_1"} {
		f.Add("/v1/messages", s)
	}
	s, _ := New(Config{})
	f.Fuzz(func(t *testing.T, path, query string) {
		u := &url.URL{Path: path, RawQuery: query}
		red := s.RedactURL(u)
		if red != u.EscapedPath()+map[bool]string{true: "", false: "?" + query}[query == ""] {
			if _, refused := s.keyInQuery(query); !refused {
				t.Fatalf("RedactURL changed %q to %q, but RefuseQueryKeys lets it through", query, red)
			}
		}
		_, rq, _ := strings.Cut(red, "?")
		for part := range strings.SplitSeq(rq, "&") {
			name, val, hasVal := strings.Cut(part, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if hasVal && val != "REDACTED" && s.sensitive(name, val) {
				t.Fatalf("RedactURL(%q) = %q keeps %q", query, red, part)
			}
		}
	})
}
