package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// EnvAllow names the environment variable holding the allow-list (see
// ParsePolicy for its syntax). internal/config reads it; this package only
// parses the value.
const EnvAllow = "CLAUDEQ_WEBHOOK_ALLOW"

// MaxURLLength is the longest webhook URL accepted.
const MaxURLLength = 2048

// ErrBlocked is wrapped by every refusal that is about where a webhook would
// go: a blocked address or name at registration, or at connect time (DNS
// rebinding). Test with errors.Is.
var ErrBlocked = errors.New("destination not allowed")

// AllowEntry is one entry of the allow-list: a host name or an IP range
// that webhooks may reach although the default policy forbids it, on any
// port. Exactly one of Host and Prefix is set.
type AllowEntry struct {
	// Host is a lower-case host name without a trailing dot. A leading
	// "*." matches every name below it (not the name itself).
	Host string
	// Prefix is an IP range; a single address is a /32 or /128.
	Prefix netip.Prefix
	// HTTP permits plain http (https is always permitted).
	HTTP bool
}

// String returns the entry in CLAUDEQ_WEBHOOK_ALLOW syntax.
func (e AllowEntry) String() string {
	s := e.Host
	if s == "" {
		s = e.Prefix.String()
		if e.Prefix.IsSingleIP() {
			s = e.Prefix.Addr().String()
		}
	}
	if e.HTTP {
		return "http://" + s
	}
	return s
}

func (e AllowEntry) matchesHost(host string) bool {
	if e.Host == "" || host == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(e.Host, "*."); ok {
		return strings.HasSuffix(host, "."+rest)
	}
	return host == e.Host
}

func (e AllowEntry) matchesIP(ip netip.Addr) bool {
	return e.Host == "" && e.Prefix.IsValid() && e.Prefix.Contains(ip)
}

// Policy decides where webhooks may go. By default only https on port 443
// to a public host name or a public IP address; the allow-list opens
// private destinations, other ports and plain http, entry by entry.
//
// The zero Policy (and a nil *Policy) is the default policy. A Policy must
// not be changed once in use; it is then safe for concurrent use.
type Policy struct {
	// Allow lists the exceptions; see ParsePolicy for their meaning.
	Allow []AllowEntry
}

// ParsePolicy parses the value of CLAUDEQ_WEBHOOK_ALLOW: entries separated
// by commas and/or white space, each one of
//
//	203.0.113.7        an IP address (IPv6 with or without brackets)
//	10.0.0.0/8         an IP range in CIDR notation (fd00::/8 for IPv6)
//	hooks.corp.example a host name, matched exactly (case-insensitive)
//	*.corp.example     every name below corp.example
//
// optionally prefixed with "http://" to permit plain http as well as https
// ("https://" is accepted and means the same as no prefix). An entry
// permits every port. Examples:
//
//	CLAUDEQ_WEBHOOK_ALLOW="http://127.0.0.1, 10.0.0.0/8, hooks.internal.example"
//	CLAUDEQ_WEBHOOK_ALLOW="http://*.svc.corp.example http://[::1]"
//
// What an entry allows:
//   - at registration (CheckURL), a URL whose host is that name, or an IP
//     literal inside that range, may use any port, and plain http if the
//     entry says so, and may be a private address or a local name;
//   - at connect time, an address inside an allowed range may be dialled
//     whatever name led to it, and every address a listed name resolves to
//     may be dialled: list only names whose DNS you control.
//
// An IP range entry does not open plain http or other ports for host names
// that happen to resolve into it (registration does not resolve names):
// list the name too. An empty value is the default policy. All malformed
// entries are reported at once.
func ParsePolicy(allow string) (*Policy, error) {
	p := &Policy{}
	var errs []error
	for _, f := range strings.FieldsFunc(allow, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		e, err := ParseAllowEntry(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.Allow = append(p.Allow, e)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", EnvAllow, errors.Join(errs...))
	}
	return p, nil
}

// ParseAllowEntry parses one entry of CLAUDEQ_WEBHOOK_ALLOW (see
// ParsePolicy).
func ParseAllowEntry(s string) (AllowEntry, error) {
	orig := s
	var e AllowEntry
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "http://"):
		e.HTTP, s = true, s[len("http://"):]
	case strings.HasPrefix(lower, "https://"):
		s = s[len("https://"):]
	case strings.Contains(s, "://"):
		return e, fmt.Errorf("entry %q: only http:// or https:// may prefix an entry", orig)
	}
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return e, fmt.Errorf("entry %q: empty", orig)
	}
	// [v6], [v6]/n
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return e, fmt.Errorf("entry %q: missing ]", orig)
		}
		rest := s[end+1:]
		if rest != "" && !strings.HasPrefix(rest, "/") {
			return e, fmt.Errorf("entry %q: an entry has no port; it permits every port", orig)
		}
		s = s[1:end] + rest
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return e, fmt.Errorf("entry %q: not a CIDR range: %v", orig, err)
		}
		if pfx.Addr().Is4In6() {
			return e, fmt.Errorf("entry %q: write IPv4 ranges in IPv4 form", orig)
		}
		e.Prefix = pfx.Masked()
		return e, nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.Zone() != "" {
			return e, fmt.Errorf("entry %q: no zone in an address", orig)
		}
		ip = ip.Unmap()
		e.Prefix = netip.PrefixFrom(ip, ip.BitLen())
		return e, nil
	}
	if strings.Contains(s, ":") {
		return e, fmt.Errorf("entry %q: an entry has no port; it permits every port", orig)
	}
	host := strings.TrimSuffix(strings.ToLower(s), ".")
	name := strings.TrimPrefix(host, "*.")
	if _, ok := endsInNumber(name); ok {
		return e, fmt.Errorf("entry %q: write IP addresses in dotted-decimal form", orig)
	}
	if err := validName(name); err != nil {
		return e, fmt.Errorf("entry %q: %v", orig, err)
	}
	e.Host = host
	return e, nil
}

// String returns the policy in CLAUDEQ_WEBHOOK_ALLOW syntax.
func (p *Policy) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(p.Allow))
	for i, e := range p.Allow {
		s[i] = e.String()
	}
	return strings.Join(s, ",")
}

// entryForHost returns the allow entry matching a URL host (a name or an IP
// literal).
func (p *Policy) entryForHost(host string, ip netip.Addr) (AllowEntry, bool) {
	if p == nil {
		return AllowEntry{}, false
	}
	for _, e := range p.Allow {
		if ip.IsValid() && e.matchesIP(ip) || !ip.IsValid() && e.matchesHost(host) {
			return e, true
		}
	}
	return AllowEntry{}, false
}

// invalid returns the caller-facing error of a rejected webhook URL.
func invalid(cause error, format string, args ...any) error {
	return &claudeq.Error{
		Kind: claudeq.KindInvalidRequest,
		Op:   "webhook.CheckURL",
		Msg:  "webhook_url: " + fmt.Sprintf(format, args...),
		Err:  cause,
	}
}

// CheckURL checks a webhook URL at registration. It allows https on port
// 443 to a public host; the allow-list may permit more (see ParsePolicy).
// The URL must be absolute, without user information or fragment, at most
// MaxURLLength bytes, and its host must be a fully qualified DNS name (not
// "localhost", *.local, *.internal, *.localhost, *.home.arpa or a
// single-label name) or an IP address outside the blocked ranges, in
// whichever spelling (decimal 2130706433, hex 0x7f000001, octal 0177.0.0.1,
// short 127.1, IPv4-mapped IPv6 …). Names are not resolved here: the
// client checks every address it dials (DialControl).
//
// The error is a *claudeq.Error of KindInvalidRequest whose message starts
// with "webhook_url: " and says what to change; refusals because of where
// the URL points also wrap ErrBlocked.
func (p *Policy) CheckURL(raw string) error {
	if raw == "" {
		return invalid(nil, "required")
	}
	if len(raw) > MaxURLLength {
		return invalid(nil, "longer than %d bytes", MaxURLLength)
	}
	if strings.TrimSpace(raw) != raw {
		return invalid(nil, "must not start or end with white space")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid(err, "not a valid URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return invalid(nil, "scheme must be https, not %q", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return invalid(nil, "must be an absolute URL like https://hooks.example.com/claudeq")
	}
	if u.User != nil {
		return invalid(nil, "must not contain user information (user:password@); authenticate the webhook with its signature")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return invalid(nil, "must not contain a fragment (#…): it is never sent")
	}
	host := u.Hostname()
	port := u.Port()
	if host == "" {
		return invalid(nil, "has no host")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return invalid(err, "port %q is not a number between 1 and 65535", port)
		}
	}

	var ip netip.Addr
	if strings.Contains(host, ":") { // IPv6 literal (Hostname drops the brackets)
		a, err := netip.ParseAddr(host)
		if err != nil {
			return invalid(err, "host %q is not a valid IPv6 address", host)
		}
		ip = a.WithZone("").Unmap()
	} else {
		host = strings.ToLower(host)
		if a, ok := endsInNumber(strings.TrimSuffix(host, ".")); ok {
			if !a.IsValid() {
				return invalid(nil, "host %q is neither a DNS name nor a valid IPv4 address", host)
			}
			if a.String() != host {
				if reason := blockedIP(a); reason != "" {
					if _, ok := p.entryForHost("", a); !ok {
						return invalid(ErrBlocked, "host %q is the IP address %s, which is %s; webhooks cannot target it", host, a, reason)
					}
				}
				return invalid(nil, "host %q is the IP address %s in a non-standard form; write it as %s", host, a, a)
			}
			ip = a
		}
	}

	entry, allowed := p.entryForHost(strings.TrimSuffix(host, "."), ip)
	if ip.IsValid() {
		if reason := blockedIP(ip); reason != "" && !allowed {
			return invalid(ErrBlocked, "host %s is %s; webhooks cannot target it (an operator may allow it in %s)", ip, reason, EnvAllow)
		}
	} else {
		if err := validName(strings.TrimSuffix(host, ".")); err != nil {
			return invalid(err, "host %q: %v", host, err)
		}
		if reason := blockedName(strings.TrimSuffix(host, ".")); reason != "" && !allowed {
			return invalid(ErrBlocked, "host %q is %s; webhooks cannot target it (an operator may allow it in %s)", host, reason, EnvAllow)
		}
	}
	if scheme == "http" && !(allowed && entry.HTTP) {
		return invalid(nil, "must use https (plain http is allowed only for hosts listed as http:// in %s)", EnvAllow)
	}
	if port != "" && port != "443" && !allowed {
		return invalid(nil, "port must be 443 (other ports only for hosts listed in %s)", EnvAllow)
	}
	return nil
}

// DialControl returns a net.Dialer Control function for connections made
// on behalf of URL host host (a name or an IP literal). It runs after the
// socket is created and before connect(2), so a refused address never sees
// a packet: it refuses a blocked address unless host is an allow-listed
// name or the address is inside an allow-listed range.
func (p *Policy) DialControl(host string) func(network, address string, c syscall.RawConn) error {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return func(network, address string, _ syscall.RawConn) error {
		return p.checkDial(host, address)
	}
}

func (p *Policy) checkDial(host, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &net.AddrError{Err: "webhook: refusing unparsable address: " + err.Error(), Addr: address}
	}
	ip := ap.Addr().WithZone("").Unmap()
	reason := blockedIP(ip)
	if reason == "" {
		return nil
	}
	if p != nil {
		for _, e := range p.Allow {
			if e.matchesIP(ip) || e.matchesHost(host) {
				return nil
			}
		}
	}
	if host != "" && host != ip.String() {
		return fmt.Errorf("webhook: %w: %s resolves to %s, which is %s", ErrBlocked, host, ip, reason)
	}
	return fmt.Errorf("webhook: %w: %s is %s", ErrBlocked, ip, reason)
}

// blockedName says why a (valid, lower-case, dotless-suffix) host name is
// refused by default, or "".
func blockedName(host string) string {
	switch {
	case host == "localhost" || strings.HasSuffix(host, ".localhost") ||
		host == "localhost.localdomain" || host == "ip6-localhost" || host == "ip6-loopback":
		return "a loopback name"
	case !strings.Contains(host, "."):
		return "a single-label name (resolved through local search domains)"
	case strings.HasSuffix(host, ".local") || strings.HasSuffix(host, ".localdomain") ||
		strings.HasSuffix(host, ".internal") || strings.HasSuffix(host, ".home.arpa") ||
		strings.HasSuffix(host, ".lan"):
		return "a local-network name"
	}
	return ""
}

// validName checks the syntax of a DNS host name: ASCII letters, digits,
// hyphens and underscores, labels of 1–63 bytes, at most 253 bytes.
func validName(host string) error {
	if host == "" {
		return errors.New("empty host name")
	}
	if len(host) > 253 {
		return errors.New("host name longer than 253 bytes")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("host name has an empty or over-long label")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 0x80:
				return errors.New("host name is not ASCII; write internationalized names in punycode (xn--…)")
			default:
				return fmt.Errorf("host name contains %q", c)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("host name label starts or ends with a hyphen")
		}
	}
	return nil
}

// endsInNumber implements the WHATWG URL rule: a host whose last label is
// a number (decimal, or 0x hex) is an IPv4 address, parsed the inet_aton
// way (1–4 parts; each decimal, 0x hex or 0-prefixed octal; the last part
// fills the remaining bytes). ok reports whether the host must be treated
// as an address; the address is invalid when ok but it does not parse.
// This is how a browser, curl or glibc's resolver would read the host, so
// "2130706433", "0x7f.1" and "0177.0.0.1" are all 127.0.0.1.
func endsInNumber(host string) (netip.Addr, bool) {
	if host == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(host, ".")
	last := parts[len(parts)-1]
	if !isNumber(last) {
		return netip.Addr{}, false
	}
	if len(parts) > 4 {
		return netip.Addr{}, true
	}
	var nums []uint64
	for _, part := range parts {
		n, ok := parseIPv4Part(part)
		if !ok {
			return netip.Addr{}, true
		}
		nums = append(nums, n)
	}
	var v uint64
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, true
		}
		v |= n << (8 * (3 - i))
	}
	lastN := nums[len(nums)-1]
	if lastN >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, true
	}
	v |= lastN
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		for _, c := range s[2:] {
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
		return true
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseIPv4Part(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, s = 16, s[2:]
		if s == "" {
			return 0, true
		}
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil || n > 1<<32 {
		return 0, false
	}
	return n, true
}
