package policy

import (
	"regexp"
	"strings"
)

// A digit chain is a maximal run of ASCII digit groups joined by single
// spaces or dashes: "4111 1111-1111 1111", "123-45-6789", "2025". Both the
// card and the SSN detector work on chains, so that a number is never looked
// at without its neighbours.
type chain struct {
	groups []span // the digit groups, in order
	seps   []byte // seps[i] joins groups[i] and groups[i+1]
}

type span struct{ start, end int }

func (s span) len() int { return s.end - s.start }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// isIdent reports whether c can be part of an identifier around a number.
func isIdent(c byte) bool { return isAlnum(c) || c == '_' }

// chains calls fn for every digit chain of text, left to right. The chain's
// slices are reused between calls.
func chains(text string, fn func(c *chain)) {
	var c chain
	for i := 0; i < len(text); {
		if !isDigit(text[i]) {
			i++
			continue
		}
		c.groups, c.seps = c.groups[:0], c.seps[:0]
		j := i
		for {
			start := j
			for j < len(text) && isDigit(text[j]) {
				j++
			}
			c.groups = append(c.groups, span{start, j})
			if j+1 < len(text) && (text[j] == ' ' || text[j] == '-') && isDigit(text[j+1]) {
				c.seps = append(c.seps, text[j])
				j++
				continue
			}
			break
		}
		fn(&c)
		i = j
	}
}

// luhn reports whether the digits of text in the given groups pass the Luhn
// check.
func luhn(text string, groups []span) bool {
	sum, double := 0, false
	for g := len(groups) - 1; g >= 0; g-- {
		for i := groups[g].end - 1; i >= groups[g].start; i-- {
			d := int(text[i] - '0')
			if double {
				d *= 2
				if d > 9 {
					d -= 9
				}
			}
			sum += d
			double = !double
		}
	}
	return sum%10 == 0
}

// digitsOf returns the first n digits of the groups (for IIN checks).
func digitsOf(text string, groups []span, n int) string {
	var b strings.Builder
	for _, g := range groups {
		for i := g.start; i < g.end && b.Len() < n; i++ {
			b.WriteByte(text[i])
		}
	}
	return b.String()
}

// knownIIN reports whether a card number starts with a prefix of a major
// network (the ranges of the public IIN tables; good enough to tell cards from
// other Luhn-valid numbers).
func knownIIN(text string, groups []span) bool {
	p := digitsOf(text, groups, 6)
	in := func(lo, hi int, n int) bool {
		if len(p) < n {
			return false
		}
		v := 0
		for i := range n {
			v = v*10 + int(p[i]-'0')
		}
		return v >= lo && v <= hi
	}
	switch {
	case in(4, 4, 1): // Visa
	case in(51, 55, 2), in(2221, 2720, 4): // Mastercard
	case in(34, 34, 2), in(37, 37, 2): // Amex
	case in(6011, 6011, 4), in(644, 649, 3), in(65, 65, 2): // Discover
	case in(3528, 3589, 4): // JCB
	case in(300, 305, 3), in(36, 36, 2), in(38, 39, 2): // Diners
	case in(62, 62, 2): // UnionPay
	case in(50, 50, 2), in(56, 69, 2): // Maestro
	default:
		return false
	}
	return true
}

// cards appends the credit-card findings of chain c.
func (p *Policy) cards(text string, c *chain, out []Finding) []Finding {
	leftOK := func(g int) bool { // nothing glued before group g
		st := c.groups[g].start
		return g > 0 || st == 0 || !isAlnum(text[st-1])
	}
	rightOK := func(g int) bool { // nothing glued after group g
		en := c.groups[g].end
		return g < len(c.groups)-1 || en == len(text) || !isAlnum(text[en])
	}
	accept := func(from, to int) bool {
		gs := c.groups[from : to+1]
		return leftOK(from) && rightOK(to) && luhn(text, gs) && (!p.cfg.RequireKnownIIN || knownIIN(text, gs))
	}
	for s := 0; s < len(c.groups); {
		// A lone group of card length: "4111111111111111", also inside a
		// chain ("4111111111111111 2025").
		if n := c.groups[s].len(); n >= 13 && n <= 19 {
			if accept(s, s) {
				out = append(out, Finding{Kind: KindCreditCard, Start: c.groups[s].start, End: c.groups[s].end})
			}
			s++
			continue
		}
		// Grouped: the longest span of 3–6-digit groups with 13–19 digits.
		best, n := -1, 0
		for e := s; e < len(c.groups); e++ {
			gl := c.groups[e].len()
			if gl < 3 || gl > 6 {
				break
			}
			if n += gl; n > 19 {
				break
			}
			if n >= 13 && accept(s, e) {
				best = e
			}
		}
		if best >= 0 {
			out = append(out, Finding{Kind: KindCreditCard, Start: c.groups[s].start, End: c.groups[best].end})
			s = best + 1
			continue
		}
		s++
	}
	return out
}

// ssnContextWindow is how far (bytes) from a number without dashes a
// context word may be.
const ssnContextWindow = 48

var ssnContext = regexp.MustCompile(`(?i)\b(?:ssns?|social[\s_-]*security|soc\.?\s*sec|ss\s*(?:no|num|number))\b|\bss\s*#`)

func (p *Policy) ssnContextNear(text string, start, end int) bool {
	lo, hi := max(0, start-ssnContextWindow), min(len(text), end+ssnContextWindow)
	// Widen to word boundaries so that \b means the same as in text.
	for lo > 0 && isIdent(text[lo-1]) {
		lo--
	}
	for hi < len(text) && isIdent(text[hi]) {
		hi++
	}
	return ssnContext.MatchString(text[lo:hi])
}

// freeStanding reports whether text[start:end] is not part of a longer
// identifier: not glued to letters, digits or '_', and not joined to one by
// '-', '.' or '/' ("ORD-123-45-6789", "3.123456789").
func freeStanding(text string, start, end int) bool {
	return freeLeft(text, start) && freeRight(text, end)
}

func freeLeft(text string, start int) bool {
	if start == 0 {
		return true
	}
	c := text[start-1]
	if isIdent(c) {
		return false
	}
	return !((c == '-' || c == '.' || c == '/') && start > 1 && isIdent(text[start-2]))
}

func freeRight(text string, end int) bool {
	if end >= len(text) {
		return true
	}
	c := text[end]
	if isIdent(c) {
		return false
	}
	return !((c == '-' || c == '.' || c == '/') && end+1 < len(text) && isIdent(text[end+1]))
}

// validSSN applies the SSA rules to 9 digits.
func validSSN(d string) bool {
	area, group, serial := d[0:3], d[3:5], d[5:9]
	return area != "000" && area != "666" && area[0] != '9' && group != "00" && serial != "0000"
}

// ssns appends the SSN findings of chain c.
func (p *Policy) ssns(text string, c *chain, out []Finding) []Finding {
	// Nine bare digits, alone or next to space-separated numbers ("SSN
	// 123456789 2024"), need a context word.
	for k, g := range c.groups {
		if g.len() != 9 {
			continue
		}
		left := (k == 0 && freeLeft(text, g.start)) || (k > 0 && c.seps[k-1] == ' ')
		right := (k == len(c.groups)-1 && freeRight(text, g.end)) || (k < len(c.seps) && c.seps[k] == ' ')
		if left && right && validSSN(text[g.start:g.end]) && p.ssnContextNear(text, g.start, g.end) {
			out = append(out, Finding{Kind: KindSSN, Start: g.start, End: g.end})
		}
	}
	for k := 0; k+2 < len(c.groups); k++ {
		a, g, s := c.groups[k], c.groups[k+1], c.groups[k+2]
		if a.len() != 3 || g.len() != 2 || s.len() != 4 || c.seps[k] != c.seps[k+1] {
			continue
		}
		sep := c.seps[k]
		// Neighbouring groups joined by the same separator make it a longer
		// number ("12-123-45-6789"); a different one only sits next to it
		// ("SSN 123-45-6789 2024").
		if (k > 0 && c.seps[k-1] == sep) || (k+2 < len(c.seps) && c.seps[k+2] == sep) {
			continue
		}
		if (k == 0 && !freeLeft(text, a.start)) || (k+3 == len(c.groups) && !freeRight(text, s.end)) {
			continue
		}
		d := text[a.start:a.end] + text[g.start:g.end] + text[s.start:s.end]
		if !validSSN(d) {
			continue
		}
		if sep != '-' && !p.ssnContextNear(text, a.start, s.end) {
			continue
		}
		out = append(out, Finding{Kind: KindSSN, Start: a.start, End: s.end})
		k += 2
	}
	return out
}

func isLocalChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func isDomainChar(c byte) bool { return isAlnum(c) || c == '.' || c == '-' }

// emails finds addresses around each '@': the local part is the run of
// local-part characters before it, the domain the run of domain characters
// after it without trailing dots. Scanning outwards from each '@' (rather
// than running a regular expression over the whole text) keeps this linear
// and fast: every byte is looked at a bounded number of times.
func (p *Policy) emails(text string, code []span, out []Finding) []Finding {
	lower := 0 // nothing before this can be part of an address
	for i := 0; i < len(text); i++ {
		at := strings.IndexByte(text[i:], '@')
		if at < 0 {
			break
		}
		at += i
		i = at
		start := at
		for start > lower && isLocalChar(text[start-1]) {
			start--
		}
		end := at + 1
		for end < len(text) && isDomainChar(text[end]) {
			end++
		}
		for end > at+1 && text[end-1] == '.' {
			end--
		}
		lower = at + 1
		for start < at && text[start] == '.' {
			start++
		}
		local, domain := text[start:at], text[at+1:end]
		if local == "" || len(local) > 64 || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
			continue
		}
		if end < len(text) && (isIdent(text[end]) || text[end] == '-') {
			continue // "a@b.com_x": not an address as written
		}
		if !validDomain(domain) || p.allowedDomain(domain) {
			continue
		}
		if p.cfg.SkipEmailsInCode && inside(code, start, end) {
			continue
		}
		out = append(out, Finding{Kind: KindEmail, Start: start, End: end})
		lower = end
	}
	return out
}

// validDomain: at least two labels of 1–63 letters, digits and inner
// hyphens, the last (the TLD) 2–63 letters; at most 253 bytes.
func validDomain(d string) bool {
	if len(d) > 253 {
		return false
	}
	labels, tld := 0, ""
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		labels, tld = labels+1, label
	}
	if labels < 2 || len(tld) < 2 {
		return false
	}
	for i := 0; i < len(tld); i++ {
		if c := tld[i]; !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func (p *Policy) allowedDomain(domain string) bool {
	domain = strings.ToLower(domain)
	for _, a := range p.allowDomains {
		if domain == a || strings.HasSuffix(domain, "."+a) {
			return true
		}
	}
	return false
}

// codeSpans returns the byte ranges of Markdown code in text: fenced blocks
// (a line starting with ``` or ~~~ up to the next line starting with the same
// fence, or the end) and inline spans (a run of n backticks up to the next
// run of exactly n in the same paragraph). It approximates CommonMark,
// closely enough to tell code from prose.
func codeSpans(text string) []span {
	if strings.IndexByte(text, '`') < 0 && !strings.Contains(text, "~~~") {
		return nil
	}
	var out []span
	run := func(i int) int { // length of the backtick run at i
		n := 0
		for i+n < len(text) && text[i+n] == '`' {
			n++
		}
		return n
	}
	lineEnd := func(i int) int {
		if e := strings.IndexByte(text[i:], '\n'); e >= 0 {
			return i + e
		}
		return len(text)
	}
	atLineStart := true
	for i := 0; i < len(text); {
		if atLineStart {
			atLineStart = false
			line := strings.TrimLeft(text[i:lineEnd(i)], " \t")
			if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
				fence, start := line[:3], i
				end := len(text)
				for j := lineEnd(i) + 1; j < len(text); j = lineEnd(j) + 1 {
					if strings.HasPrefix(strings.TrimLeft(text[j:lineEnd(j)], " \t"), fence) {
						end = lineEnd(j)
						break
					}
				}
				out = append(out, span{start, end})
				i, atLineStart = end+1, true
				continue
			}
		}
		switch text[i] {
		case '\n':
			i, atLineStart = i+1, true
			continue
		case '`':
		default:
			i++
			continue
		}
		n := run(i)
		limit := len(text)
		if p := strings.Index(text[i:], "\n\n"); p >= 0 {
			limit = i + p
		}
		closed := false
		for j := i + n; j < limit; {
			if text[j] != '`' {
				j++
				continue
			}
			m := run(j)
			if m == n {
				out = append(out, span{i, j + m})
				i, closed = j+m, true
				break
			}
			j += m
		}
		if !closed {
			i += n
		}
	}
	return out
}

func inside(spans []span, start, end int) bool {
	for _, s := range spans {
		if start >= s.start && end <= s.end {
			return true
		}
	}
	return false
}

// placeholderRE matches what Redact writes, so that custom patterns never
// match (and re-redact) a placeholder.
var placeholderRE = regexp.MustCompile(`\[REDACTED_[A-Z0-9_]+\]`)

func (p *Policy) custom(text string, out []Finding) []Finding {
	if len(p.cfg.Patterns) == 0 {
		return out
	}
	var ph [][]int
	if strings.Contains(text, "[REDACTED_") {
		ph = placeholderRE.FindAllStringIndex(text, -1)
	}
	for _, pat := range p.cfg.Patterns {
		for _, m := range pat.Re.FindAllStringIndex(text, -1) {
			if m[0] == m[1] {
				continue
			}
			if inPlaceholder(ph, m[0], m[1]) {
				continue
			}
			out = append(out, Finding{Kind: pat.Name, Start: m[0], End: m[1]})
		}
	}
	return out
}

func inPlaceholder(ph [][]int, start, end int) bool {
	for _, s := range ph {
		if start >= s[0] && end <= s[1] {
			return true
		}
	}
	return false
}
