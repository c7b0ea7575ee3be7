package webhook

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// FuzzCheckURL parses an allow-list and checks a webhook URL against it and
// against the default policy. Nothing here resolves a name or opens a
// socket: connect-time checks go through the dialer's Control function with
// a made-up address, as a fake resolver would return it. Properties:
//   - ParsePolicy: an error XOR a policy, and the policy's String parses
//     back to the same policy;
//   - CheckURL: a refusal is a KindInvalidRequest *claudeq.Error saying
//     "webhook_url: …"; the allow-list only ever opens (what the default
//     policy accepts, every policy accepts);
//   - an accepted URL is absolute http(s) with a host and no user info or
//     fragment, and a default-accepted one is https on 443;
//   - registration and connection agree: an accepted IP literal may be
//     dialled; an accepted name is not an IP address in any spelling
//     a resolver might read, and if it "resolves" to a blocked address the
//     dial is refused unless the allow-list opens that address or name.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []struct{ allow, url string }{
		{"", "https://hooks.example.com/claudeq?x=1"},
		{"", "https://93.184.215.14/hook"},
		{"", "https://[2606:4700::6810:84e5]:443/hook"},
		{"", "HTTPS://HOOKS.EXAMPLE.COM./"},
		{"", "https://2130706433/"},
		{"", "https://0x7f.1/"},
		{"", "https://0177.0.0.1/"},
		{"", "https://[::ffff:127.0.0.1]/"},
		{"", "https://[64:ff9b::a00:1]/"},
		{"", "https://[2002:7f00:1::]/"},
		{"", "https://[fe80::1%25eth0]/"},
		{"", "https://169.254.169.254/latest/meta-data"},
		{"", "https://localhost/"},
		{"", "https://hooks.local/"},
		{"", "https://user:pw@hooks.example.com/"},
		{"", "https://hooks.example.com/#frag"},
		{"", "https://hooks.example.com:8443/"},
		{"", "javascript:alert(1)"},
		{"", "https:hooks.example.com"},
		{"", "https://xn--nxasmq6b.example/"},
		{"", "https://exa%6dple.com/"},
		{"http://127.0.0.1, 10.0.0.0/8, hooks.internal.example", "http://127.0.0.1:8080/hook"},
		{"http://*.svc.corp.example http://[::1]", "http://a.svc.corp.example:9000/"},
		{"http://[::1]", "http://[::1]:8080/"},
		{"fd00::/8", "https://[fd00::1]/"},
		{"::ffff:127.0.0.1", "https://127.0.0.1/"},
		{"hooks.internal", "https://hooks.internal:444/"},
		{"https://Hooks.Example.COM/", "https://hooks.example.com/"},
		{"127.0.0.1:8080, ftp://x, 10.0.0.0/33", "https://10.0.0.1/"},
	} {
		f.Add(s.allow, s.url, []byte{127, 0, 0, 1})
		f.Add(s.allow, s.url, []byte{93, 184, 215, 14})
	}
	f.Add("", "https://hooks.example.com/", netip.MustParseAddr("::ffff:10.0.0.1").AsSlice())
	f.Add("", "https://hooks.example.com/", netip.MustParseAddr("64:ff9b::7f00:1").AsSlice())
	f.Add("", "https://hooks.example.com/", netip.MustParseAddr("2606:4700::1").AsSlice())
	f.Fuzz(func(t *testing.T, allow, raw string, resolved []byte) {
		p, err := ParsePolicy(allow)
		if (err == nil) == (p == nil) {
			t.Fatalf("ParsePolicy(%q) = %v, %v", allow, p, err)
		}
		if err == nil {
			again, err := ParsePolicy(p.String())
			if err != nil || again.String() != p.String() || len(again.Allow) != len(p.Allow) {
				t.Fatalf("policy %q does not round-trip: %v, %v", p.String(), again, err)
			}
			for i := range p.Allow {
				if again.Allow[i] != p.Allow[i] {
					t.Fatalf("entry %d: %+v became %+v", i, p.Allow[i], again.Allow[i])
				}
			}
		}

		var def *Policy
		defErr := checked(t, def, raw)
		pErr := defErr
		if p != nil {
			pErr = checked(t, p, raw)
			if defErr == nil && pErr != nil {
				t.Fatalf("the allow-list %q refuses %q, which the default policy accepts: %v", allow, raw, pErr)
			}
		}
		if pErr != nil {
			return
		}

		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q does not parse: %v", raw, err)
		}
		if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
			t.Fatalf("accepted %q: %#v", raw, u)
		}
		if defErr == nil && (u.Scheme != "https" || (u.Port() != "" && u.Port() != "443")) {
			t.Fatalf("default policy accepted %q", raw)
		}

		port := uint16(443)
		if u.Port() != "" {
			n, err := strconv.ParseUint(u.Port(), 10, 16)
			if err != nil || n == 0 {
				t.Fatalf("accepted port %q", u.Port())
			}
			port = uint16(n)
		} else if u.Scheme == "http" {
			port = 80
		}
		host := u.Hostname()
		dial := p.DialControl(host)
		if ip, err := netip.ParseAddr(host); err == nil {
			// What the client dials for an IP literal (DialContext).
			if err := dial("tcp", netip.AddrPortFrom(ip, port).String(), nil); err != nil {
				t.Fatalf("%q accepted at registration, refused at connect: %v", raw, err)
			}
			return
		}
		name := strings.TrimSuffix(strings.ToLower(host), ".")
		if numericHost(name) {
			t.Fatalf("accepted %q, whose host a resolver may read as an IP address", raw)
		}
		a, ok := netip.AddrFromSlice(resolved)
		if !ok {
			return
		}
		err = dial("tcp", netip.AddrPortFrom(a, port).String(), nil)
		opened := false
		for _, e := range p.allow() {
			opened = opened || e.matchesIP(a.Unmap()) || e.matchesHost(name)
		}
		if reason := blockedIP(a); reason != "" && !opened {
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("%q resolving to %s (%s) was not refused at connect: %v", raw, a, reason, err)
			}
		} else if err != nil {
			t.Fatalf("%q resolving to %s was refused at connect: %v", raw, a, err)
		}
	})
}

// checked runs p.CheckURL(raw) and checks the shape of its error.
func checked(t *testing.T, p *Policy, raw string) error {
	err := p.CheckURL(raw)
	if err == nil {
		return nil
	}
	var ce *claudeq.Error
	if !errors.As(err, &ce) || ce.Kind != claudeq.KindInvalidRequest || !strings.HasPrefix(ce.Msg, "webhook_url: ") {
		t.Fatalf("CheckURL(%q): error %T %v", raw, err, err)
	}
	return err
}

func (p *Policy) allow() []AllowEntry {
	if p == nil {
		return nil
	}
	return p.Allow
}

// numericHost is an independent reading of what inet_aton would take for
// an address: one to four dot-separated numbers, each decimal, 0x hex or
// 0-prefixed octal (valid or not: a resolver may still try).
func numericHost(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) > 4 {
		return false
	}
	for _, part := range parts {
		digits := strings.TrimPrefix(strings.TrimPrefix(part, "0x"), "0X")
		if part == "" || strings.Trim(digits, "0123456789abcdefABCDEF") != "" ||
			(digits == part && strings.Trim(part, "0123456789") != "") {
			return false
		}
	}
	return true
}

// FuzzParseAllowEntry: an entry parses to exactly one of a host and a
// range (or an error), and its String parses back to the same entry.
func FuzzParseAllowEntry(f *testing.F) {
	for _, s := range []string{
		"203.0.113.7", "10.1.2.3/8", "hooks.corp.example", "*.corp.example", "http://127.0.0.1",
		"https://Hooks.Example.COM/", "[::1]", "http://[fd00::]/8", "::ffff:127.0.0.1", "::ffff:10.0.0.0/104",
		"hooks.example.", "127.0.0.1:8080", "[::1]:80", "ftp://x", "10.0.0.0/33", "2130706433", "0x7f.1",
		"fe80::1%eth0", "hooks!.example", "http://", "*.", "*.*.x", "-a.example", "a_b.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseAllowEntry(s)
		if err != nil {
			if e.Host != "" || e.Prefix.IsValid() {
				t.Fatalf("error %v with entry %+v", err, e)
			}
			return
		}
		if (e.Host == "") == !e.Prefix.IsValid() {
			t.Fatalf("%q: entry %+v has not exactly one of host and range", s, e)
		}
		if e.Prefix.IsValid() && (e.Prefix != e.Prefix.Masked() || e.Prefix.Addr().Is4In6() || e.Prefix.Addr().Zone() != "") {
			t.Fatalf("%q: range %v is not canonical", s, e.Prefix)
		}
		if e.Host != "" && (e.Host != strings.ToLower(e.Host) || strings.HasSuffix(e.Host, ".")) {
			t.Fatalf("%q: host %q is not canonical", s, e.Host)
		}
		again, err := ParseAllowEntry(e.String())
		if err != nil || again != e {
			t.Fatalf("%q: %+v does not round-trip through %q: %+v, %v", s, e, e.String(), again, err)
		}
	})
}

// FuzzParseSchedule: an error XOR a schedule of waits ≥ 0 that formats and
// parses back to itself.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "  ", "0,5s,5m,30m,2h,5h,10h,10h", "1s", " 1s , 2m ", "-1s", "1s,,2s", "1.5h", "9223372036854775807ns", "2562048h", "1d", "0", "1s,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sch, err := ParseSchedule(s)
		if (err == nil) == (sch == nil) {
			t.Fatalf("ParseSchedule(%q) = %v, %v", s, sch, err)
		}
		if err != nil {
			return
		}
		parts := make([]string, len(sch))
		for i, d := range sch {
			if d < 0 {
				t.Fatalf("%q: negative wait %v", s, d)
			}
			parts[i] = d.String()
		}
		again, err := ParseSchedule(strings.Join(parts, ","))
		if err != nil || len(again) != len(sch) {
			t.Fatalf("%q: %v does not round-trip: %v, %v", s, sch, again, err)
		}
		for i := range sch {
			if again[i] != sch[i] {
				t.Fatalf("%q: %v does not round-trip: %v", s, sch, again)
			}
		}
		if sch.MaxRetry() != len(sch)-1 {
			t.Fatalf("MaxRetry %d of %d waits", sch.MaxRetry(), len(sch))
		}
	})
}

// FuzzParseRetryAfter reads a receiver's Retry-After header: never a
// panic, always a wait between 0 and MaxRetryAfter.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "-5", "120", " 30 ", "99999999999999999999", "9223372036854775807",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "soon", "1.5"} {
		f.Add(s, int64(1445412480))
	}
	f.Fuzz(func(t *testing.T, v string, now int64) {
		d := parseRetryAfter(v, time.Unix(now, 0))
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("Retry-After %q: %v", v, d)
		}
	})
}
