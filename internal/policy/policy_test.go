package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// matches returns "kind:text" for each finding, for readable assertions.
func matches(text string, f []Finding) []string {
	out := []string{}
	for _, x := range f {
		out = append(out, x.Kind+":"+text[x.Start:x.End])
	}
	return out
}

func TestDetect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		want []string
	}{
		// Cards.
		{name: "visa with spaces", text: "card 4111 1111 1111 1111 please", want: []string{"credit_card:4111 1111 1111 1111"}},
		{name: "visa contiguous", text: "4111111111111111", want: []string{"credit_card:4111111111111111"}},
		{name: "visa with dashes", text: "pay with 4111-1111-1111-1111.", want: []string{"credit_card:4111-1111-1111-1111"}},
		{name: "amex 4-6-5", text: "amex 3782 822463 10005", want: []string{"credit_card:3782 822463 10005"}},
		{name: "mastercard 2-series", text: "2223000048400011", want: []string{"credit_card:2223000048400011"}},
		{name: "19 digits", text: "6304 0000 0000 0000 018", want: []string{"credit_card:6304 0000 0000 0000 018"}},
		{name: "card followed by a year", text: "4111 1111 1111 1111 2025", want: []string{"credit_card:4111 1111 1111 1111"}},
		{name: "card next to another number", text: "4111111111111111 12", want: []string{"credit_card:4111111111111111"}},
		{name: "luhn fails", text: "card 4111 1111 1111 1112", want: []string{}},
		{name: "luhn fails contiguous", text: "4111111111111112", want: []string{}},
		{name: "too short", text: "411111111111", want: []string{}},
		{name: "digit run too long is an id, not a card", text: "41111111111111110000", want: []string{}},
		{name: "glued to letters", text: "VISA4111111111111111", want: []string{}},
		{name: "single-digit groups are not a card", text: "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", want: []string{}},
		{name: "order number with luhn-invalid digits", text: "order 1234567890123456 shipped", want: []string{}},
		// SSNs.
		{name: "ssn dashed", text: "my number is 123-45-6789.", want: []string{"ssn:123-45-6789"}},
		{name: "ssn dashed next to a year", text: "123-45-6789 2024", want: []string{"ssn:123-45-6789"}},
		{name: "ssn area 000", text: "000-12-3456", want: []string{}},
		{name: "ssn area 666", text: "666-12-3456", want: []string{}},
		{name: "ssn area 9xx", text: "912-34-5678", want: []string{}},
		{name: "ssn group 00", text: "123-00-4567", want: []string{}},
		{name: "ssn serial 0000", text: "123-45-0000", want: []string{}},
		{name: "order number prefix", text: "ORD-123-45-6789", want: []string{}},
		{name: "order number with area 000", text: "order #000-12-3456 shipped", want: []string{}},
		{name: "order number with group 00", text: "order 123-00-4567 shipped", want: []string{}},
		{name: "order number with serial 0000", text: "ref 432-10-0000", want: []string{}},
		{name: "invoice number in the 900s", text: "invoice 987-65-4321", want: []string{}},
		{name: "longer dashed number", text: "1-123-45-6789", want: []string{}},
		{name: "dashed number with suffix", text: "123-45-6789-01", want: []string{}},
		{name: "nine digits without context", text: "tracking 123456789", want: []string{}},
		{name: "nine digits with SSN context", text: "SSN: 123456789", want: []string{"ssn:123456789"}},
		{name: "nine digits after social security", text: "social security number 123456789 thanks", want: []string{"ssn:123456789"}},
		{name: "context after the number", text: "123456789 is my ssn", want: []string{"ssn:123456789"}},
		{name: "nine digits with context but invalid", text: "SSN 900123456", want: []string{}},
		{name: "spaced without context", text: "call 123 45 6789", want: []string{}},
		{name: "spaced with context", text: "SS# 123 45 6789", want: []string{"ssn:123 45 6789"}},
		{name: "context word inside another word", text: "classname 123456789", want: []string{}},
		{name: "decimal is not an ssn", text: "SSN 3.123456789", want: []string{}},
		{name: "context too far away", text: "SSN" + strings.Repeat(" lorem", 20) + " 123456789", want: []string{}},
		// E-mails.
		{name: "email", text: "write to jane.doe+x@mail.example.co.uk today", want: []string{"email:jane.doe+x@mail.example.co.uk"}},
		{name: "email in inline code", text: "run `git config user.email bot@corp.io`", want: []string{"email:bot@corp.io"}},
		{name: "email in fenced code", text: "```\nadmin@corp.io\n```", want: []string{"email:admin@corp.io"}},
		{name: "email in angle brackets", text: "Jane <jane@corp.io>", want: []string{"email:jane@corp.io"}},
		{name: "leading dot trimmed", text: "..jane@corp.io", want: []string{"email:jane@corp.io"}},
		{name: "no TLD", text: "user@localhost", want: []string{}},
		{name: "numeric TLD", text: "pkg@1.2.3", want: []string{}},
		{name: "python matmul", text: "y = a@b.T", want: []string{}},
		{name: "decorator", text: "@property\ndef x(self):", want: []string{}},
		{name: "double dot", text: "jane..doe@corp.io", want: []string{}},
		{name: "label starting with dash", text: "jane@-corp.io", want: []string{}},
		{name: "glued after TLD", text: "jane@corp.io5", want: []string{}},
		// Mixed.
		{name: "card digits as email local part", text: "4111111111111111@corp.io",
			want: []string{"credit_card:4111111111111111", "email:4111111111111111@corp.io"}},
		{name: "everything", text: "a@b.io 4111111111111111 123-45-6789",
			want: []string{"email:a@b.io", "credit_card:4111111111111111", "ssn:123-45-6789"}},
		{name: "empty", text: "", want: []string{}},
		{name: "non-ascii around", text: "é4111111111111111ü", want: []string{"credit_card:4111111111111111"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, matches(tt.text, Detect(tt.text)))
		})
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	pats, err := ParsePatterns("employee_id=\\bEMP-\\d{6}\\b;\n project = (?i)\\bproject\\s+falcon\\b ;")
	require.NoError(t, err)
	tests := []struct {
		name string
		cfg  Config
		text string
		want []string
	}{
		{name: "skip emails in code", cfg: Config{SkipEmailsInCode: true},
			text: "`bot@corp.io` and ``two\nlines x@corp.io`` but jane@corp.io\n  ~~~\ny@corp.io\n  ~~~\nz@corp.io",
			want: []string{"email:jane@corp.io", "email:z@corp.io"}},
		{name: "inline code ends at a paragraph", cfg: Config{SkipEmailsInCode: true},
			text: "`x\n\nw@corp.io`", want: []string{"email:w@corp.io"}},
		{name: "unclosed fence counts as code", cfg: Config{SkipEmailsInCode: true},
			text: "```go\n// x@corp.io", want: []string{}},
		{name: "allowed domain and subdomain", cfg: Config{AllowEmailDomains: []string{"Example.com"}},
			text: "a@example.com b@mail.example.com c@notexample.com", want: []string{"email:c@notexample.com"}},
		{name: "require IIN", cfg: Config{RequireKnownIIN: true},
			// 1234567812345670 passes Luhn but has no known issuer.
			text: "1234567812345670 4111111111111111", want: []string{"credit_card:4111111111111111"}},
		{name: "without IIN a luhn-valid number counts", cfg: Config{},
			text: "1234567812345670", want: []string{"credit_card:1234567812345670"}},
		{name: "only ssn", cfg: Config{Builtins: []string{KindSSN}},
			text: "a@b.io 4111111111111111 123-45-6789", want: []string{"ssn:123-45-6789"}},
		{name: "none", cfg: Config{Builtins: []string{}}, text: "a@b.io", want: []string{}},
		{name: "custom patterns", cfg: Config{Builtins: []string{}, Patterns: pats},
			text: "EMP-123456 on Project  Falcon, not EMP-1234567", want: []string{"employee_id:EMP-123456", "project:Project  Falcon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(tt.cfg)
			require.NoError(t, err)
			require.Equal(t, tt.want, matches(tt.text, p.Detect(tt.text)))
		})
	}
}

func TestParsePatternsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec string
		want string
	}{
		{name: "no equals", spec: "foo", want: "want name=regex"},
		{name: "bad name", spec: "Foo=x", want: "name must be"},
		{name: "builtin name", spec: "email=x", want: "built-in kind"},
		{name: "duplicate", spec: "a=x;a=y", want: "defined twice"},
		{name: "bad regex", spec: "a=(", want: "missing closing )"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParsePatterns(tt.spec)
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := New(Config{Builtins: []string{"phone"}})
	require.ErrorContains(t, err, "unknown built-in")
}

func TestApply(t *testing.T) {
	t.Parallel()
	const text = "mail jane@corp.io, card 4111 1111 1111 1111, ssn 123-45-6789, again bob@corp.io"
	tests := []struct {
		name    string
		text    string
		action  Action
		want    string
		summary Summary
		errMsg  string
	}{
		{name: "block", text: text, action: Block, summary: Summary{"email": 2, "credit_card": 1, "ssn": 1},
			errMsg: "prompt contains: credit_card, email, ssn"},
		{name: "block clean text", text: "hello", action: Block, want: "hello"},
		{name: "redact", text: text, action: Redact, summary: Summary{"email": 2, "credit_card": 1, "ssn": 1},
			want: "mail [REDACTED_EMAIL], card [REDACTED_CREDIT_CARD], ssn [REDACTED_SSN], again [REDACTED_EMAIL]"},
		{name: "redact overlapping takes the longest", text: "4111111111111111@corp.io x", action: Redact,
			summary: Summary{"email": 1, "credit_card": 1}, want: "[REDACTED_EMAIL] x"},
		{name: "allow", text: text, action: Allow, want: text, summary: Summary{"email": 2, "credit_card": 1, "ssn": 1}},
		{name: "unknown action", text: text, action: "warn", errMsg: "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, sum, err := Apply(tt.text, tt.action)
			if tt.errMsg != "" {
				require.Error(t, err)
				require.Equal(t, tt.errMsg, claudeq.ErrorMessage(err))
				require.Empty(t, out)
				if tt.action == Block {
					require.Equal(t, claudeq.KindContentPolicy, claudeq.ErrorKind(err))
					// The error never carries the matched text.
					require.NotContains(t, err.Error(), "4111")
					require.NotContains(t, err.Error(), "jane")
				}
			} else {
				require.NoError(t, err)
				require.Equal(t, tt.want, out)
			}
			require.Equal(t, tt.summary, sum)
		})
	}
}

// Redacting shortens text, which can bring a context word within reach of
// a nine-digit number; Apply redacts until nothing is left.
func TestRedactSettles(t *testing.T) {
	t.Parallel()
	long := "averyveryveryverylonglocalpart.with.many.dots@mail.subdomain.example.com"
	text := "SSN " + long + " 123456789"
	require.Equal(t, []string{"email:" + long}, matches(text, Detect(text)), "the number is too far from SSN at first")
	out, sum, err := Apply(text, Redact)
	require.NoError(t, err)
	require.Equal(t, "SSN [REDACTED_EMAIL] [REDACTED_SSN]", out)
	require.Equal(t, Summary{"email": 1, "ssn": 1}, sum)
	require.Empty(t, Detect(out))
}

func TestRedactFailsClosed(t *testing.T) {
	t.Parallel()
	// A pattern that matches a placeholder plus the next byte eats one byte
	// per pass and does not settle within the passes allowed.
	pats, err := ParsePatterns(`x=\[REDACTED_X\].`)
	require.NoError(t, err)
	p, err := New(Config{Patterns: pats})
	require.NoError(t, err)
	_, _, err = p.Apply("[REDACTED_X]"+strings.Repeat("y", 20), Redact)
	require.Equal(t, claudeq.KindContentPolicy, claudeq.ErrorKind(err))
}

func TestApplyMessages(t *testing.T) {
	t.Parallel()
	p, err := New(Config{})
	require.NoError(t, err)
	body := `{"model":"claude-sonnet-5-5","max_tokens":10,"metadata":{"n":12345678901234567890},
	"system":[{"type":"text","text":"reply to ops@corp.io"}],
	"messages":[
	 {"role":"user","content":"my card is 4111 1111 1111 1111 <b>"},
	 {"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"t","name":"n","input":{"e":"a@b.io"}}]},
	 {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"ssn 123-45-6789"}]},
	   {"type":"document","source":{"type":"text","media_type":"text/plain","data":"from x@corp.io"}},
	   {"type":"image","source":{"type":"base64","media_type":"image/png","data":"4111111111111111"}}]}]}`

	t.Run("redact", func(t *testing.T) {
		t.Parallel()
		out, sum, err := p.ApplyMessages([]byte(body), Redact)
		require.NoError(t, err)
		require.Equal(t, Summary{"email": 2, "credit_card": 1, "ssn": 1}, sum)
		var req struct {
			Metadata json.RawMessage `json:"metadata"`
			System   []struct{ Text string }
			Messages []struct {
				Content json.RawMessage
			}
		}
		require.NoError(t, json.Unmarshal(out, &req))
		require.JSONEq(t, `{"n":12345678901234567890}`, string(req.Metadata), "untouched fields keep their exact value")
		require.Equal(t, "reply to [REDACTED_EMAIL]", req.System[0].Text)
		require.Equal(t, `"my card is [REDACTED_CREDIT_CARD] <b>"`, string(req.Messages[0].Content))
		require.Contains(t, string(req.Messages[1].Content), `"input":{"e":"a@b.io"}`, "tool_use input is not checked")
		require.Contains(t, string(req.Messages[2].Content), `ssn [REDACTED_SSN]`)
		require.Contains(t, string(req.Messages[2].Content), `from [REDACTED_EMAIL]`)
		require.Contains(t, string(req.Messages[2].Content), `"data":"4111111111111111"`, "images are not checked")
	})
	t.Run("block", func(t *testing.T) {
		t.Parallel()
		out, sum, err := p.ApplyMessages([]byte(body), Block)
		require.Nil(t, out)
		require.Equal(t, Summary{"email": 2, "credit_card": 1, "ssn": 1}, sum)
		require.Equal(t, "prompt contains: credit_card, email, ssn", claudeq.ErrorMessage(err))
	})
	t.Run("allow returns the body unchanged", func(t *testing.T) {
		t.Parallel()
		out, sum, err := p.ApplyMessages([]byte(body), Allow)
		require.NoError(t, err)
		require.Equal(t, body, string(out))
		require.Len(t, sum, 3)
	})
	t.Run("clean body is returned as is", func(t *testing.T) {
		t.Parallel()
		clean := `{"system":"be nice","messages":[{"role":"user","content":"hi"}]}`
		out, sum, err := p.ApplyMessages([]byte(clean), Redact)
		require.NoError(t, err)
		require.Nil(t, sum)
		require.Equal(t, clean, string(out))
	})
	t.Run("response", func(t *testing.T) {
		t.Parallel()
		resp := `{"id":"msg_1","type":"message","content":[{"type":"text","text":"it is 123-45-6789"}]}`
		_, _, err := p.ApplyResponse([]byte(resp), Block)
		require.Equal(t, "response contains: ssn", claudeq.ErrorMessage(err))
		out, _, err := p.ApplyResponse([]byte(resp), Redact)
		require.NoError(t, err)
		require.Contains(t, string(out), `"text":"it is [REDACTED_SSN]"`)
	})
}

func TestApplyMessagesInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
	}{
		{name: "not json", body: `{`},
		{name: "array", body: `[]`},
		{name: "null", body: `null`},
		{name: "messages not an array", body: `{"messages":{}}`},
		{name: "content a number", body: `{"messages":[{"content":1}]}`},
		{name: "text a number", body: `{"system":[{"type":"text","text":1}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := Default().ApplyMessages([]byte(tt.body), Redact)
			require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(err), "%v", err)
			var ce *claudeq.Error
			require.True(t, errors.As(err, &ce))
		})
	}
}

func TestParseAction(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"block", " Redact ", "ALLOW"} {
		a, err := ParseAction(s)
		require.NoError(t, err)
		require.True(t, a.Valid())
	}
	_, err := ParseAction("warn")
	require.Error(t, err)
}

func TestLuhnAndSSNRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{name: "visa test number", in: "4111111111111111", want: true},
		{name: "amex test number", in: "378282246310005", want: true},
		{name: "off by one", in: "4111111111111112", want: false},
		{name: "all zeros pass luhn", in: "0000000000000", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, luhn(tt.in, []span{{0, len(tt.in)}}))
		})
	}
	require.True(t, validSSN("123456789"))
	require.False(t, validSSN("000456789"))
	require.False(t, validSSN("666456789"))
	require.False(t, validSSN("999456789"))
	require.False(t, validSSN("123006789"))
	require.False(t, validSSN("123450000"))
}
