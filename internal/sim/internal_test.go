package sim

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestAppendJSONString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string // decoded value; defaults to in
	}{
		{name: "plain", in: "hello world"},
		{name: "quotes and backslash", in: `say "hi" \ bye`},
		{name: "controls", in: "a\nb\rc\td\x00e\x1f"},
		{name: "html kept", in: "<a href='x'>&amp;</a>"},
		{name: "unicode", in: "héllo 世界 🙂"},
		{name: "line separators", in: "a\u2028b\u2029c"},
		{name: "invalid utf8", in: "a\xffb", want: "a\uFFFDb"},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := appendJSONString(nil, tt.in)
			require.True(t, json.Valid(b), string(b))
			var got string
			require.NoError(t, json.Unmarshal(b, &got))
			want := tt.want
			if want == "" {
				want = tt.in
			}
			require.Equal(t, want, got)
			require.NotContains(t, string(b), "\u2028")
		})
	}
}

func TestGenerateText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		prompt string
		prefix string
	}{
		{name: "short", prompt: "Hi!", prefix: "Simulated reply to: Hi."},
		{name: "empty", prompt: "", prefix: "Simulated reply to: your message."},
		{name: "long words", prompt: strings.Repeat("é", 500), prefix: "Simulated reply to: " + strings.Repeat("é", 60) + "."},
		{name: "many words", prompt: "one two three four five six seven eight nine ten eleven twelve thirteen", prefix: "Simulated reply to: one two three four five six seven eight nine ten eleven twelve."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for h := range uint64(300) {
				h := h * 0x9e3779b97f4a7c15
				text := generateText(h, tt.prompt)
				require.True(t, strings.HasPrefix(text, tt.prefix), text)
				require.True(t, utf8.ValidString(text))
				n := CountTokens(text)
				require.GreaterOrEqual(t, n, int64(20), text)
				require.LessOrEqual(t, n, int64(maxReplyTokens), text)
				require.Equal(t, text, generateText(h, tt.prompt))

				capped := finish(text, nil, 7)
				require.Equal(t, "max_tokens", capped.stopReason)
				require.LessOrEqual(t, capped.outputTokens, int64(7))
				require.True(t, utf8.ValidString(capped.text))
			}
		})
	}
}

func TestDisplayName(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, id, want string }{
		{name: "sonnet", id: "claude-sonnet-4-5", want: "Claude Sonnet 4.5"},
		{name: "dated", id: "claude-haiku-4-5-20251001", want: "Claude Haiku 4.5"},
		{name: "old style", id: "claude-3-5-haiku-20241022", want: "Claude 3.5 Haiku"},
		{name: "custom", id: "my-model", want: "My Model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, displayName(tt.id))
		})
	}
}
