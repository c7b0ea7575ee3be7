package policy

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// FuzzDetect checks, for any input: Detect does not panic; findings lie
// within the text, are non-empty and sorted; Redact leaves nothing Detect
// would find and never grows a match back; Allow and Block change nothing
// they should not.
func FuzzDetect(f *testing.F) {
	for _, s := range []string{
		"", "4111 1111 1111 1111", "4111-1111-1111-1111 2025", "378282246310005",
		"123-45-6789", "SSN 123456789", "ss# 123 45 6789", "ORD-123-45-6789",
		"jane.doe+x@mail.example.co.uk", "`bot@corp.io`", "```\na@b.io\n```",
		"4111111111111111@corp.io", "SSN averyverylonglocalpart@example.com 123456789",
		"[REDACTED_EMAIL]@x.io", "é4111111111111111ü", "1-2-3-4-5-6-7-8-9-0-1-2-3",
	} {
		f.Add(s)
	}
	p := Default()
	f.Fuzz(func(t *testing.T, text string) {
		findings := p.Detect(text)
		for i, x := range findings {
			if x.Start < 0 || x.End > len(text) || x.Start >= x.End {
				t.Fatalf("finding %+v out of bounds of %d bytes", x, len(text))
			}
			if i > 0 && (findings[i-1].Start > x.Start || (findings[i-1].Start == x.Start && findings[i-1].End > x.End)) {
				t.Fatalf("findings not sorted: %+v", findings)
			}
			if x.Kind != KindCreditCard && x.Kind != KindSSN && x.Kind != KindEmail {
				t.Fatalf("unknown kind %q", x.Kind)
			}
		}

		out, sum, err := p.Apply(text, Redact)
		if err != nil {
			t.Fatalf("redact failed: %v", err)
		}
		if left := p.Detect(out); len(left) > 0 {
			t.Fatalf("redact of %q left %v in %q", text, matches(out, left), out)
		}
		if len(findings) == 0 && out != text {
			t.Fatalf("redact changed clean text %q to %q", text, out)
		}
		n := 0
		for _, c := range sum {
			n += c
		}
		if n < len(findings) {
			t.Fatalf("summary %v counts fewer than the %d findings", sum, len(findings))
		}
		for _, x := range findings {
			// A match longer than a placeholder cannot survive verbatim
			// unless it occurs again outside any finding, which Detect
			// would then have reported too.
			if m := text[x.Start:x.End]; len(m) > 24 && strings.Contains(out, m) {
				t.Fatalf("redact left match %q in %q", m, out)
			}
		}
		if utf8.ValidString(text) && !utf8.ValidString(out) {
			t.Fatalf("redact broke UTF-8: %q -> %q", text, out)
		}

		if a, s, err := p.Apply(text, Allow); err != nil || a != text || len(s) != len(Summarize(findings)) {
			t.Fatalf("allow changed something: %q %v %v", a, s, err)
		}
		b, _, err := p.Apply(text, Block)
		if (err != nil) != (len(findings) > 0) {
			t.Fatalf("block error %v with %d findings", err, len(findings))
		}
		if err != nil && (b != "" || strings.Contains(err.Error(), text[findings[0].Start:findings[0].End])) && len(text[findings[0].Start:findings[0].End]) > 8 {
			t.Fatalf("block leaked the match: %v", err)
		}
	})
}

// FuzzParsePatterns parses fuzzed CLAUDEQ_POLICY_PATTERNS and runs the
// resulting policy on fuzzed text. Properties: accepted patterns have
// valid, unique, non-built-in names and make a valid policy; its findings
// lie within the text, are non-empty and sorted; Redact either leaves
// nothing the policy would find or fails closed with a content-policy error
// and no text; Block fails exactly when something is found.
func FuzzParsePatterns(f *testing.F) {
	for _, s := range []struct{ spec, text string }{
		{`employee_id=\bEMP-\d{6}\b; project=(?i)\bproject\s+falcon\b`, "EMP-123456 works on Project Falcon"},
		{"a=x\nb=y;;\n c = z ", "xyz"},
		{"redacted=REDACTED", "[REDACTED_EMAIL] REDACTED"},
		{"brackets=\\[|\\]", "a [b] c"},
		{"any=.", "abc"},
		{"empty=a*", "bbb"},
		{"email=x", "x"}, {"a=x;a=y", "x"}, {"A=x", "x"}, {"a=(", "x"}, {"a=", "x"}, {"=x", "x"}, {"a=\\x3b", "a;b"},
		{"long=x{1000}", "x"}, {"nested=(x{30}){30}", "x"}, {"utf=é+", "ééé \xff"},
	} {
		f.Add(s.spec, s.text)
	}
	f.Fuzz(func(t *testing.T, spec, text string) {
		if len(spec) > 512 || len(text) > 4096 {
			return
		}
		pats, err := ParsePatterns(spec)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range pats {
			if !nameRE.MatchString(p.Name) || seen[p.Name] || p.Re == nil || p.Name == KindCreditCard || p.Name == KindSSN || p.Name == KindEmail {
				t.Fatalf("pattern %+v of %q", p, spec)
			}
			seen[p.Name] = true
		}
		pol, err := New(Config{Patterns: pats})
		if err != nil {
			t.Fatalf("patterns %q make no policy: %v", spec, err)
		}
		findings := pol.Detect(text)
		for i, x := range findings {
			if x.Start < 0 || x.End > len(text) || x.Start >= x.End {
				t.Fatalf("finding %+v out of bounds of %d bytes", x, len(text))
			}
			if i > 0 && (findings[i-1].Start > x.Start || (findings[i-1].Start == x.Start && findings[i-1].End > x.End)) {
				t.Fatalf("findings not sorted: %+v", findings)
			}
		}
		out, _, err := pol.Apply(text, Redact)
		if err != nil {
			if claudeq.ErrorKind(err) != claudeq.KindContentPolicy || out != "" {
				t.Fatalf("redact failed with %q, %v", out, err)
			}
		} else if left := pol.Detect(out); len(left) > 0 {
			t.Fatalf("redact of %q left %v in %q", text, left, out)
		}
		if _, _, err := pol.Apply(text, Block); (err != nil) != (len(findings) > 0) {
			t.Fatalf("block error %v with %d findings", err, len(findings))
		}
	})
}
