package policy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// The built-in finding kinds.
const (
	KindCreditCard = "credit_card"
	KindSSN        = "ssn"
	KindEmail      = "email"
)

// builtins are the built-in kinds, in the order they run.
var builtins = []string{KindCreditCard, KindSSN, KindEmail}

// Finding is one match: its kind and its byte range text[Start:End].
type Finding struct {
	Kind       string
	Start, End int
}

// Action is what happens to text with findings.
type Action string

// The actions.
const (
	Block  Action = "block"  // refuse the text
	Redact Action = "redact" // replace each match with [REDACTED_<KIND>]
	Allow  Action = "allow"  // pass it unchanged, but report the findings
)

// ParseAction parses "block", "redact" or "allow" (case-insensitive).
func ParseAction(s string) (Action, error) {
	a := Action(strings.ToLower(strings.TrimSpace(s)))
	if !a.Valid() {
		return "", fmt.Errorf("policy action %q: want block, redact or allow", s)
	}
	return a, nil
}

// Valid reports whether a is one of the three actions.
func (a Action) Valid() bool { return a == Block || a == Redact || a == Allow }

// Summary counts findings by kind. It never holds matched text, so it is
// safe to log, audit and show.
type Summary map[string]int

// Kinds returns the kinds found, sorted.
func (s Summary) Kinds() []string {
	out := make([]string, 0, len(s))
	for k, n := range s {
		if n > 0 {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// String returns "credit_card=1 email=2".
func (s Summary) String() string {
	var b strings.Builder
	for i, k := range s.Kinds() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, s[k])
	}
	return b.String()
}

func (s Summary) add(o Summary) {
	for k, n := range o {
		s[k] += n
	}
}

// Summarize counts findings by kind; nil when there are none.
func Summarize(findings []Finding) Summary {
	if len(findings) == 0 {
		return nil
	}
	s := make(Summary, 3)
	for _, f := range findings {
		s[f.Kind]++
	}
	return s
}

// BlockError is the error a blocked text gets: KindContentPolicy with a
// message that names the kinds found ("prompt contains: credit_card,
// email"), never the matches. subject says what was checked: "prompt",
// "response".
func BlockError(subject string, s Summary) *claudeq.Error {
	return &claudeq.Error{
		Kind: claudeq.KindContentPolicy,
		Op:   "policy.Apply",
		Msg:  subject + " contains: " + strings.Join(s.Kinds(), ", "),
	}
}

// Pattern is an operator-defined detector: every match of Re is a Finding
// of kind Name.
type Pattern struct {
	Name string
	Re   *regexp.Regexp
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// ParsePatterns parses custom detectors from configuration
// (CLAUDEQ_POLICY_PATTERNS): "name=regex" entries separated by newlines or
// ';'. A name is 1–32 characters of [a-z0-9_] starting with a letter and must
// not be a built-in kind; the regex is Go (RE2) syntax, so matching is linear
// in the text whatever the pattern. Write a literal ';' in a regex as \x3b.
// Blank entries are ignored; every problem is reported at once.
//
// Example: `employee_id=\bEMP-\d{6}\b; project=(?i)\bproject\s+falcon\b`
func ParsePatterns(spec string) ([]Pattern, error) {
	var out []Pattern
	var errs []error
	seen := map[string]bool{}
	for entry := range strings.FieldsFuncSeq(spec, func(r rune) bool { return r == '\n' || r == ';' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, expr, ok := strings.Cut(entry, "=")
		name, expr = strings.TrimSpace(name), strings.TrimSpace(expr)
		switch {
		case !ok || expr == "":
			errs = append(errs, fmt.Errorf("policy pattern %q: want name=regex", entry))
			continue
		case !nameRE.MatchString(name):
			errs = append(errs, fmt.Errorf("policy pattern %q: name must be 1-32 of [a-z0-9_], starting with a letter", name))
			continue
		case slices.Contains(builtins, name):
			errs = append(errs, fmt.Errorf("policy pattern %q: %s is a built-in kind", name, name))
			continue
		case seen[name]:
			errs = append(errs, fmt.Errorf("policy pattern %q: defined twice", name))
			continue
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy pattern %q: %w", name, err))
			continue
		}
		seen[name] = true
		out = append(out, Pattern{Name: name, Re: re})
	}
	return out, errors.Join(errs...)
}

// Config shapes a Policy. The zero Config runs every built-in detector and
// flags e-mail addresses in code.
type Config struct {
	// Builtins selects the built-in detectors by kind
	// (CLAUDEQ_POLICY_DETECT, comma-separated); nil means all of
	// credit_card, ssn and email, an empty non-nil slice none.
	Builtins []string
	// RequireKnownIIN makes a card number count only with a known issuer
	// prefix (CLAUDEQ_POLICY_CARD_REQUIRE_IIN, default false: any
	// Luhn-valid number of card shape is flagged, which errs on the side of
	// catching cards).
	RequireKnownIIN bool
	// SkipEmailsInCode ignores e-mail addresses inside Markdown code
	// (CLAUDEQ_POLICY_SKIP_EMAILS_IN_CODE, default false: they are flagged).
	SkipEmailsInCode bool
	// AllowEmailDomains are domains whose addresses (and subdomains') are
	// never flagged, e.g. example.com (CLAUDEQ_POLICY_ALLOW_EMAIL_DOMAINS,
	// comma-separated, default none).
	AllowEmailDomains []string
	// Patterns are custom detectors (CLAUDEQ_POLICY_PATTERNS, see
	// ParsePatterns).
	Patterns []Pattern
}

// Policy detects and acts on sensitive content. It is immutable and safe for
// concurrent use.
type Policy struct {
	cfg          Config
	card         bool
	ssn          bool
	email        bool
	allowDomains []string
}

// New returns a Policy for cfg.
func New(cfg Config) (*Policy, error) {
	p := &Policy{cfg: cfg}
	on := cfg.Builtins
	if on == nil {
		on = builtins
	}
	for _, k := range on {
		switch strings.TrimSpace(k) {
		case KindCreditCard:
			p.card = true
		case KindSSN:
			p.ssn = true
		case KindEmail:
			p.email = true
		default:
			return nil, fmt.Errorf("policy: unknown built-in detector %q (want %s)", k, strings.Join(builtins, ", "))
		}
	}
	for _, d := range cfg.AllowEmailDomains {
		if d = strings.ToLower(strings.Trim(strings.TrimSpace(d), ".@")); d != "" {
			p.allowDomains = append(p.allowDomains, d)
		}
	}
	for _, pat := range cfg.Patterns {
		if pat.Re == nil || !nameRE.MatchString(pat.Name) || slices.Contains(builtins, pat.Name) {
			return nil, fmt.Errorf("policy: invalid pattern %q", pat.Name)
		}
	}
	return p, nil
}

var defaultPolicy, _ = New(Config{})

// Default returns the policy of the zero Config: every built-in detector,
// e-mail addresses in code included.
func Default() *Policy { return defaultPolicy }

// Detect returns the findings of the default policy (every built-in
// detector, e-mails in code included) in text. See Policy.Detect.
func Detect(text string) []Finding { return defaultPolicy.Detect(text) }

// Apply applies action to text under the default policy. See Policy.Apply.
func Apply(text string, action Action) (string, Summary, error) {
	return defaultPolicy.Apply(text, action)
}

// Detect returns every finding in text, sorted by Start then End. Findings
// of different kinds may overlap (digits of a card number in an e-mail's
// local part).
func (p *Policy) Detect(text string) []Finding {
	var out []Finding
	if p.card || p.ssn {
		chains(text, func(c *chain) {
			if p.card {
				out = p.cards(text, c, out)
			}
			if p.ssn {
				out = p.ssns(text, c, out)
			}
		})
	}
	if p.email {
		var code []span
		if p.cfg.SkipEmailsInCode {
			code = codeSpans(text)
		}
		out = p.emails(text, code, out)
	}
	out = p.custom(text, out)
	slices.SortFunc(out, func(a, b Finding) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return a.End - b.End
	})
	return out
}

// maxRedactPasses bounds Redact's fixpoint loop; see Apply.
const maxRedactPasses = 8

// Apply applies action to text and returns the text to send on, with what
// was found.
//
//   - Block: if anything is found, out is "" and err is a *claudeq.Error of
//     KindContentPolicy naming the kinds ("prompt contains: credit_card,
//     email"); else out is text.
//   - Redact: each match is replaced by "[REDACTED_<KIND>]" (overlapping
//     matches become one placeholder, of the longest match's kind). The
//     output is checked again and redacted until nothing is found, since
//     shortening text can bring an SSN context word within reach of a
//     number; should that not settle within a few passes (a custom pattern
//     that matches around placeholders), Apply fails closed with the Block
//     error.
//   - Allow: out is text, unchanged.
//
// An invalid action is a KindInternal error (a configuration bug).
func (p *Policy) Apply(text string, action Action) (string, Summary, error) {
	return p.apply(text, action, "prompt")
}

func (p *Policy) apply(text string, action Action, subject string) (string, Summary, error) {
	switch action {
	case Allow:
		return text, Summarize(p.Detect(text)), nil
	case Block:
		s := Summarize(p.Detect(text))
		if len(s) > 0 {
			return "", s, BlockError(subject, s)
		}
		return text, nil, nil
	case Redact:
		var total Summary
		for range maxRedactPasses {
			f := p.Detect(text)
			if len(f) == 0 {
				return text, total, nil
			}
			if total == nil {
				total = make(Summary, 3)
			}
			total.add(Summarize(f))
			text = replace(text, f)
		}
		if f := p.Detect(text); len(f) > 0 {
			total.add(Summarize(f))
			return "", total, BlockError(subject, total)
		}
		return text, total, nil
	default:
		return "", nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: "policy.Apply",
			Err: fmt.Errorf("unknown policy action %q", action)}
	}
}

// Placeholder returns what Redact writes for a match of kind:
// "[REDACTED_CREDIT_CARD]".
func Placeholder(kind string) string { return "[REDACTED_" + strings.ToUpper(kind) + "]" }

// replace replaces the (sorted) findings of text by placeholders, merging
// overlaps.
func replace(text string, f []Finding) string {
	var b strings.Builder
	b.Grow(len(text))
	last := 0
	for i := 0; i < len(f); {
		start, end, kind, longest := f[i].Start, f[i].End, f[i].Kind, f[i].End-f[i].Start
		j := i + 1
		for ; j < len(f) && f[j].Start < end; j++ {
			if l := f[j].End - f[j].Start; l > longest {
				kind, longest = f[j].Kind, l
			}
			end = max(end, f[j].End)
		}
		b.WriteString(text[last:start])
		b.WriteString(Placeholder(kind))
		last, i = end, j
	}
	b.WriteString(text[last:])
	return b.String()
}
