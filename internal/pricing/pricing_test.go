package pricing

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

var now = time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC)

func TestDefaultTableMatchesReference(t *testing.T) {
	t.Parallel()
	// USD per MTok, Anthropic's list prices of December 2026 (docs/models.md): input, output, cache write 5m / 1h, cache read.
	tests := []struct {
		name                string
		in, out, w5, w1, rd string
	}{
		{name: "claude-haiku-5-5", in: "0.10", out: "0.50", w5: "0.125", w1: "0.20", rd: "0.01"},
		{name: "claude-sonnet-5-5", in: "2", out: "10", w5: "2.50", w1: "4", rd: "0.10"},
		{name: "claude-sonnet-5", in: "2", out: "10", w5: "2.50", w1: "4", rd: "0.20"},
		{name: "claude-opus-5-5", in: "4", out: "20", w5: "5", w1: "8", rd: "0.20"},
		{name: "claude-opus-5", in: "5", out: "25", w5: "6.25", w1: "10", rd: "0.50"},
		{name: "claude-fable-5-2", in: "8", out: "40", w5: "10", w1: "16", rd: "0.20"},
		{name: "claude-mythos-5-2", in: "8", out: "40", w5: "10", w1: "16", rd: "0.20"},
		{name: "claude-fable-5-1", in: "10", out: "50", w5: "12.50", w1: "20", rd: "0.25"},
		{name: "claude-fable-5", in: "10", out: "50", w5: "12.50", w1: "20", rd: "1.00"},
		{name: "claude-haiku-4-5", in: "1", out: "5", w5: "1.25", w1: "2", rd: "0.10"},
		{name: "claude-sonnet-4-6", in: "3", out: "15", w5: "3.75", w1: "6", rd: "0.30"},
		{name: "claude-sonnet-4-5", in: "3", out: "15", w5: "3.75", w1: "6", rd: "0.30"},
		{name: "claude-opus-4-8", in: "5", out: "25", w5: "6.25", w1: "10", rd: "0.50"},
		{name: "claude-opus-4-5", in: "5", out: "25", w5: "6.25", w1: "10", rd: "0.50"},
		{name: "claude-opus-4-1", in: "15", out: "75", w5: "18.75", w1: "30", rd: "1.50"},
	}
	tab := Default()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vs := tab.Versions(tt.name)
			require.NotEmpty(t, vs)
			v := vs[len(vs)-1]
			rate := func(s string) Rate { r, err := ParseRate(s); require.NoError(t, err); return r }
			require.Equal(t, Rates{Input: rate(tt.in), Output: rate(tt.out), CacheWrite5m: rate(tt.w5), CacheWrite1h: rate(tt.w1), CacheRead: rate(tt.rd)}, v.Rates)
			require.Equal(t, int64(50), v.BatchDiscountPercent)
		})
	}
	// The built-in model list: every entry priced by its own line, with
	// its limits.
	cat := tab.Catalog()
	require.Len(t, cat, 17)
	for _, m := range cat {
		id, by := tab.Resolve(m.ID)
		require.Equal(t, ByTable, by, m.ID)
		require.Equal(t, m.ID, id)
		require.NotEmpty(t, m.DisplayName, m.ID)
		require.False(t, m.CreatedAt.IsZero(), m.ID)
		require.Positive(t, m.MaxInputTokens, m.ID)
		require.Positive(t, m.MaxOutputTokens, m.ID)
	}
	i := slices.IndexFunc(cat, func(m claudeq.Model) bool { return m.ID == "claude-haiku-4-5" })
	require.Equal(t, claudeq.Model{ID: "claude-haiku-4-5", DisplayName: "Claude Haiku 4.5", CreatedAt: time.Date(2025, 10, 15, 0, 0, 0, 0, time.UTC),
		MaxInputTokens: 200_000, MaxOutputTokens: 64_000}, cat[i])
}

// TestResolve: every model id has a price, found in this order: its own
// line, the longest line it starts with up to a "-", the dearest line of
// its family, the dearest line of all.
func TestResolve(t *testing.T) {
	t.Parallel()
	tab := Default()
	tests := []struct {
		name, model, want, by string
	}{
		{name: "listed", model: "claude-opus-4-8", want: "claude-opus-4-8", by: ByTable},
		{name: "any case", model: "Claude-Opus-4-8", want: "claude-opus-4-8", by: ByTable},
		{name: "dated snapshot", model: "claude-haiku-4-5-20251001", want: "claude-haiku-4-5", by: ByTable},
		{name: "dated snapshot listed as its own line", model: "claude-opus-4-20250514", want: "claude-opus-4-20250514", by: ByTable},
		{name: "a cloud provider's dated id", model: "claude-haiku-4-5-20251001-v1:0", want: "claude-haiku-4-5", by: ByTable},
		{name: "a variant word may cost more: fallback", model: "claude-opus-4-8-fast", want: "claude-opus-4-0", by: ByFallback},
		{name: "a prefix not at a dash is not a match", model: "claude-opus-55", want: "claude-opus-4-0", by: ByFallback},
		{name: "a longer version is another model", model: "claude-opus-5-7", want: "claude-opus-4-0", by: ByFallback},
		{name: "unknown fable: the dearest fable", model: "claude-fable-5-3", want: "claude-fable-5", by: ByFallback},
		{name: "unknown mythos", model: "claude-mythos-6", want: "claude-mythos-5", by: ByFallback},
		{name: "unknown opus: the dearest opus (4.0 at $75 out; 4.1 ties, ids break it)", model: "claude-opus-9", want: "claude-opus-4-0", by: ByFallback},
		{name: "unknown sonnet", model: "claude-sonnet-7", want: "claude-sonnet-4-5", by: ByFallback},
		{name: "unknown haiku: haiku 4.5 ($5 out) is dearer than 5.5", model: "claude-haiku-6", want: "claude-haiku-4-5", by: ByFallback},
		{name: "no family: the dearest of all", model: "claude-nova-1", want: "claude-opus-4-0", by: ByFallback},
		{name: "empty", model: "", want: "claude-opus-4-0", by: ByFallback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, by := tab.Resolve(tt.model)
			require.Equal(t, tt.want, id)
			require.Equal(t, tt.by, by)
		})
	}
}

func TestFallbackIsNeverZero(t *testing.T) {
	t.Parallel()
	tab := Default()
	c, p, err := tab.Cost("claude-fable-5-3", claudeq.Usage{InputTokens: 1000, OutputTokens: 1000}, false, now)
	require.NoError(t, err)
	require.Equal(t, claudeq.Micros(10_000+50_000), c, "never zero: priced as the dearest fable")
	require.True(t, p.Fallback)
	require.Equal(t, ByFallback, p.By())
	require.Contains(t, p.Note(), "claude-fable-5-3")
	_, p, err = tab.Cost("claude-fable-5-2", claudeq.Usage{InputTokens: 1000}, false, now)
	require.NoError(t, err)
	require.Equal(t, ByTable, p.By())
	est, p, err := tab.Estimate("claude-fable-5-3", 1000, 1000, false, now)
	require.NoError(t, err)
	require.True(t, p.Fallback)
	require.GreaterOrEqual(t, est, c, "the reservation uses the same price")
	c, p, err = tab.CostFor("claude-fable-5-3-20261201", "claude-fable-5-2", claudeq.Usage{InputTokens: 1000}, false, now)
	require.NoError(t, err)
	require.Equal(t, "claude-fable-5-2", p.Model, "an answering id the table lacks: the requested model's price")
	require.Equal(t, claudeq.Micros(8000), c)
	_, p, err = tab.CostFor("claude-opus-9", "claude-haiku-4-5", claudeq.Usage{InputTokens: 1000}, false, now)
	require.NoError(t, err)
	require.Equal(t, "claude-opus-4-0", p.Model, "an answering model of another family is not priced as the one asked for")
}

func TestCost(t *testing.T) {
	t.Parallel()
	tab := Default()
	tests := []struct {
		name      string
		model     string
		usage     claudeq.Usage
		batch     bool
		want      claudeq.Micros
		breakdown Breakdown
		priced    string // model id priced
		fallback  bool
		long      bool
		wantErr   claudeq.Kind
	}{
		{name: "sonnet input only", model: "claude-sonnet-5-5", usage: claudeq.Usage{InputTokens: 1_000_000},
			want: 2_000_000, breakdown: Breakdown{Input: 2_000_000}},
		{name: "every class with 5m/1h split", model: "claude-sonnet-5-5",
			usage: claudeq.Usage{InputTokens: 1234, OutputTokens: 567, CacheCreationInputTokens: 1000, CacheReadInputTokens: 2000,
				CacheCreation: &claudeq.CacheCreation{Ephemeral5mInputTokens: 400, Ephemeral1hInputTokens: 600}},
			want: 2468 + 5670 + 1000 + 2400 + 200, breakdown: Breakdown{Input: 2468, Output: 5670, CacheWrite5m: 1000, CacheWrite1h: 2400, CacheRead: 200}},
		{name: "no split: all cache writes are 5m", model: "claude-sonnet-5-5",
			usage: claudeq.Usage{CacheCreationInputTokens: 1000}, want: 2500, breakdown: Breakdown{CacheWrite5m: 2500}},
		{name: "split not covering the total: rest is 5m", model: "claude-sonnet-5-5",
			usage: claudeq.Usage{CacheCreationInputTokens: 1000, CacheCreation: &claudeq.CacheCreation{Ephemeral1hInputTokens: 300}},
			want:  1750 + 1200, breakdown: Breakdown{CacheWrite5m: 1750, CacheWrite1h: 1200}},
		{name: "one token rounds up to one micro", model: "claude-haiku-5-5", usage: claudeq.Usage{InputTokens: 1},
			want: 1, breakdown: Breakdown{Input: 1}},
		{name: "rounding is per class", model: "claude-haiku-5-5", usage: claudeq.Usage{InputTokens: 1, OutputTokens: 1, CacheReadInputTokens: 1},
			want: 3, breakdown: Breakdown{Input: 1, Output: 1, CacheRead: 1}},
		{name: "batch halves every class", model: "claude-sonnet-5-5", batch: true,
			usage: claudeq.Usage{InputTokens: 1_000_000, OutputTokens: 1000, CacheCreationInputTokens: 1000, CacheReadInputTokens: 1000,
				CacheCreation: &claudeq.CacheCreation{Ephemeral5mInputTokens: 500, Ephemeral1hInputTokens: 500}},
			want: 1_000_000 + 5000 + 625 + 1000 + 50, breakdown: Breakdown{Input: 1_000_000, Output: 5000, CacheWrite5m: 625, CacheWrite1h: 1000, CacheRead: 50}},
		{name: "batch rounds up", model: "claude-haiku-5-5", batch: true, usage: claudeq.Usage{CacheReadInputTokens: 3},
			want: 1, breakdown: Breakdown{CacheRead: 1}},
		{name: "haiku at exactly 100K prompt: base band", model: "claude-haiku-5-5", usage: claudeq.Usage{InputTokens: 100_000, OutputTokens: 1000},
			want: 10_000 + 500, breakdown: Breakdown{Input: 10_000, Output: 500}},
		{name: "haiku above 100K: every token at the long band", model: "claude-haiku-5-5", usage: claudeq.Usage{InputTokens: 100_001, OutputTokens: 1000},
			want: 50_001 + 2500, breakdown: Breakdown{Input: 50_001, Output: 2500}, long: true},
		{name: "haiku long band reached through cache reads", model: "claude-haiku-5-5",
			usage: claudeq.Usage{InputTokens: 10, CacheReadInputTokens: 100_000, CacheCreationInputTokens: 1000},
			want:  5 + 5000 + 625, breakdown: Breakdown{Input: 5, CacheRead: 5000, CacheWrite5m: 625}, long: true},
		{name: "haiku 4.5 every class at 1M", model: "claude-haiku-4-5",
			usage: claudeq.Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000, CacheCreationInputTokens: 2_000_000, CacheReadInputTokens: 1_000_000,
				CacheCreation: &claudeq.CacheCreation{Ephemeral5mInputTokens: 1_000_000, Ephemeral1hInputTokens: 1_000_000}},
			want:      1_000_000 + 5_000_000 + 1_250_000 + 2_000_000 + 100_000,
			breakdown: Breakdown{Input: 1_000_000, Output: 5_000_000, CacheWrite5m: 1_250_000, CacheWrite1h: 2_000_000, CacheRead: 100_000}},
		{name: "opus 4.5 output", model: "claude-opus-4-5", usage: claudeq.Usage{OutputTokens: 10_000}, want: 250_000, breakdown: Breakdown{Output: 250_000}},
		{name: "opus 5.5 input and output", model: "claude-opus-5-5", usage: claudeq.Usage{InputTokens: 3000, OutputTokens: 500}, want: 12_000 + 10_000,
			breakdown: Breakdown{Input: 12_000, Output: 10_000}},
		{name: "id in another case", model: "Claude-Sonnet-5-5", usage: claudeq.Usage{OutputTokens: 100}, want: 1000, breakdown: Breakdown{Output: 1000}, priced: "claude-sonnet-5-5"},
		{name: "dated snapshot id", model: "claude-haiku-4-5-20251001", usage: claudeq.Usage{InputTokens: 1000}, want: 1000, breakdown: Breakdown{Input: 1000}, priced: "claude-haiku-4-5"},
		{name: "zero usage costs zero", model: "claude-opus-5-5", want: 0},
		{name: "unknown model priced as the dearest of its family", model: "claude-opus-9", usage: claudeq.Usage{InputTokens: 1000},
			want: 15_000, breakdown: Breakdown{Input: 15_000}, priced: "claude-opus-4-0", fallback: true},
		{name: "negative tokens", model: "claude-opus-5-5", usage: claudeq.Usage{InputTokens: -1}, wantErr: claudeq.KindInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, p, err := tab.Cost(tt.model, tt.usage, tt.batch, now)
			if tt.wantErr != claudeq.KindInternal {
				require.Error(t, err)
				require.Equal(t, tt.wantErr, claudeq.ErrorKind(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.breakdown, p.Breakdown)
			require.Equal(t, got, p.Breakdown.Total())
			require.Equal(t, tt.fallback, p.Fallback)
			require.Equal(t, tt.long, p.LongPrompt)
			require.Equal(t, tt.batch, p.Batch)
			if tt.priced != "" {
				require.Equal(t, tt.priced, p.Model)
			}
			if tt.fallback {
				require.Contains(t, p.Note(), tt.model)
				require.Contains(t, p.Note(), tt.priced)
			} else {
				require.Empty(t, p.Note())
			}
		})
	}
}

func mustDecode(t *testing.T, b []byte) File {
	t.Helper()
	f, err := decode(b)
	require.NoError(t, err)
	return f
}

func TestVersions(t *testing.T) {
	t.Parallel()
	tab, err := Parse([]byte(`
models:
  m:
    - {effective_from: 2026-10-07, input: 2, output: 10, cache_write_5m: 2.5, cache_write_1h: 4, cache_read: 0.10, batch_discount_percent: 50}
    - {effective_from: 2026-01-01, input: 2, output: 10, cache_write_5m: 2.5, cache_write_1h: 4, cache_read: 0.20, batch_discount_percent: 50}
    - {effective_from: "2026-12-01T06:00:00Z", input: 3, output: 10, cache_write_5m: 2.5, cache_write_1h: 4, cache_read: 0.10, batch_discount_percent: 0}
`))
	require.NoError(t, err)
	tests := []struct {
		name      string
		at        time.Time
		readMicro claudeq.Micros // cost of 1M cache-read tokens
		inMicro   claudeq.Micros // cost of 1M input tokens, batch
		from      string
	}{
		{name: "before every version: the oldest applies", at: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), readMicro: 200_000, inMicro: 1_000_000, from: "2026-01-01"},
		{name: "first version", at: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), readMicro: 200_000, inMicro: 1_000_000, from: "2026-01-01"},
		{name: "last instant of the first version", at: time.Date(2026, 10, 6, 23, 59, 59, 999, time.UTC), readMicro: 200_000, inMicro: 1_000_000, from: "2026-01-01"},
		{name: "second version from its first instant", at: time.Date(2026, 10, 7, 0, 0, 0, 0, time.UTC), readMicro: 100_000, inMicro: 1_000_000, from: "2026-10-07"},
		{name: "same instant in another zone", at: time.Date(2026, 10, 7, 2, 0, 0, 0, time.FixedZone("CEST", 2*3600)), readMicro: 100_000, inMicro: 1_000_000, from: "2026-10-07"},
		{name: "third version at an exact time, no batch discount", at: time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC), readMicro: 100_000, inMicro: 3_000_000, from: "2026-12-01T06:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, p, err := tab.Cost("m", claudeq.Usage{CacheReadInputTokens: 1_000_000}, false, tt.at)
			require.NoError(t, err)
			require.Equal(t, tt.readMicro, c)
			require.Equal(t, tt.from, Date{p.EffectiveFrom}.String())
			c, _, err = tab.Cost("m", claudeq.Usage{InputTokens: 1_000_000}, true, tt.at)
			require.NoError(t, err)
			require.Equal(t, tt.inMicro, c)
		})
	}
}

func TestEstimate(t *testing.T) {
	t.Parallel()
	tab := Default()
	tests := []struct {
		name     string
		model    string
		in, out  int64
		batch    bool
		want     claudeq.Micros
		long     bool
		fallback bool
	}{
		// Input at the dearest input class (1h cache write, $4), output at max_tokens, +3 rounding headroom.
		{name: "sonnet", model: "claude-sonnet-5-5", in: 1000, out: 1000, want: 4000 + 10_000 + 3},
		{name: "sonnet batch", model: "claude-sonnet-5-5", in: 1000, out: 1000, batch: true, want: 2000 + 5000 + 3},
		{name: "haiku below 80% of the long-prompt threshold", model: "claude-haiku-5-5", in: 80_000, out: 1000, want: 16_000 + 500 + 3},
		{name: "haiku above 80% assumes the long band", model: "claude-haiku-5-5", in: 80_001, out: 1000, want: 80_001 + 2500 + 3, long: true},
		{name: "unknown model: the dearest of all (opus 4: $30 1h write, $75 out)", model: "gpt-5", in: 1000, out: 1000, want: 30_000 + 75_000 + 3, fallback: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, p, err := tab.Estimate(tt.model, tt.in, tt.out, tt.batch, now)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.long, p.LongPrompt)
			require.Equal(t, tt.fallback, p.Fallback)
		})
	}
}

// TestCostNeverAboveEstimate: whatever the mix of token classes, a call
// whose prompt and output stay within the estimate's counts costs at most
// the estimate — the property budget reservations rely on.
func TestCostNeverAboveEstimate(t *testing.T) {
	t.Parallel()
	tab := Default()
	r := rand.New(rand.NewPCG(1, 2))
	for _, model := range tab.Models() {
		for range 2000 {
			u := claudeq.Usage{InputTokens: r.Int64N(150_000), OutputTokens: r.Int64N(70_000), CacheReadInputTokens: r.Int64N(50_000)}
			if r.IntN(2) == 0 {
				cc := &claudeq.CacheCreation{Ephemeral5mInputTokens: r.Int64N(20_000), Ephemeral1hInputTokens: r.Int64N(20_000)}
				u.CacheCreation, u.CacheCreationInputTokens = cc, cc.Ephemeral5mInputTokens+cc.Ephemeral1hInputTokens
			} else {
				u.CacheCreationInputTokens = r.Int64N(20_000)
			}
			batch := r.IntN(2) == 0
			prompt := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
			cost, _, err := tab.Cost(model, u, batch, now)
			require.NoError(t, err)
			est, _, err := tab.Estimate(model, prompt, u.OutputTokens, batch, now)
			require.NoError(t, err)
			require.LessOrEqual(t, cost, est, "model %s usage %+v batch %v", model, u, batch)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	tests := []struct {
		name    string
		path    string
		wantErr string
		check   func(t *testing.T, tab *Table)
	}{
		{name: "yaml adds a version, a model and its catalog entry, keeps the rest",
			path: write("a.yaml", `
models:
  claude-sonnet-5-5:
    - effective_from: 2026-12-01
      input: 1.5
      output: 10
      cache_write_5m: 2.50
      cache_write_1h: 4
      cache_read: 0.10
      batch_discount_percent: 50
  claude-fable-5-3:
    - {effective_from: 2026-12-01, input: 6, output: 30, cache_write_5m: 7.5, cache_write_1h: 12, cache_read: 0.15}
catalog:
  claude-fable-5-3: {display_name: Claude Fable 5.3, created_at: 2026-12-01, max_input_tokens: 2000000, max_tokens: 128000}
`),
			check: func(t *testing.T, tab *Table) {
				require.Len(t, tab.Versions("claude-sonnet-5-5"), 3)
				c, _, err := tab.Cost("claude-sonnet-5-5", claudeq.Usage{InputTokens: 1_000_000}, false, time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
				require.NoError(t, err)
				require.Equal(t, claudeq.Micros(1_500_000), c)
				c, _, err = tab.Cost("claude-sonnet-5-5", claudeq.Usage{CacheReadInputTokens: 1_000_000}, false, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC))
				require.NoError(t, err)
				require.Equal(t, claudeq.Micros(200_000), c)
				require.Contains(t, tab.Models(), "claude-opus-4-5")
				id, by := tab.Resolve("claude-fable-5-3")
				require.Equal(t, "claude-fable-5-3", id)
				require.Equal(t, ByTable, by)
				require.Len(t, tab.Catalog(), 18)
			}},
		{name: "json replaces a same-date version", path: write("b.json",
			`{"models":{"claude-opus-5-5":[{"effective_from":"2026-01-01","input":4.5,"output":20,"cache_write_5m":5,"cache_write_1h":8,"cache_read":"0.20","batch_discount_percent":50}]}}`),
			check: func(t *testing.T, tab *Table) {
				require.Len(t, tab.Versions("claude-opus-5-5"), 1)
				c, _, err := tab.Cost("claude-opus-5-5", claudeq.Usage{InputTokens: 1_000_000}, false, now)
				require.NoError(t, err)
				require.Equal(t, claudeq.Micros(4_500_000), c)
			}},
		{name: "replace_defaults stands alone", path: write("c.yaml", `
replace_defaults: true
models:
  tiny-1: [{effective_from: 2026-01-01, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1}]
`),
			check: func(t *testing.T, tab *Table) {
				require.Equal(t, []string{"tiny-1"}, tab.Models())
				require.Empty(t, tab.Catalog())
				id, by := tab.Resolve("claude-sonnet-5-5")
				require.Equal(t, "tiny-1", id)
				require.Equal(t, ByFallback, by)
			}},
		{name: "an id in other case replaces the same model's version", path: write("b2.yaml",
			`models: {Claude-Opus-5-5: [{effective_from: 2026-01-01, input: 4.5, output: 20, cache_write_5m: 5, cache_write_1h: 8, cache_read: 0.2}]}`),
			check: func(t *testing.T, tab *Table) {
				require.Len(t, tab.Versions("claude-opus-5-5"), 1)
				c, _, err := tab.Cost("claude-opus-5-5", claudeq.Usage{InputTokens: 1_000_000}, false, now)
				require.NoError(t, err)
				require.Equal(t, claudeq.Micros(4_500_000), c)
			}},
		{name: "empty path is the default", path: "", check: func(t *testing.T, tab *Table) { require.Same(t, Default(), tab) }},
		{name: "unknown field", path: write("d.yaml", "modles: {}\n"), wantErr: "modles"},
		{name: "too many decimals", path: write("e.yaml", `models: {x: [{effective_from: 2026-01-01, input: 0.1234567, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1}]}`), wantErr: "more than 6 decimals"},
		{name: "negative price", path: write("f.yaml", `models: {x: [{effective_from: 2026-01-01, input: -1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1}]}`), wantErr: "negative"},
		{name: "missing price is not a silent zero", path: write("g.yaml", `models: {x: [{effective_from: 2026-01-01, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1}]}`), wantErr: "cache_read: must be a positive price"},
		{name: "aliases moved to CLAUDEQ_MODEL_ALIASES", path: write("h.yaml", "aliases: {opus: claude-opus-5-5}\n"), wantErr: "CLAUDEQ_MODEL_ALIASES"},
		{name: "default tier replaced by the family fallback", path: write("i.yaml", "default_tier: sonnet\n"), wantErr: "default_tier: no longer read"},
		{name: "a catalog entry without a price", path: write("i2.yaml", "catalog: {claude-nova-1: {display_name: Nova, created_at: 2026-01-01}}\n"), wantErr: "catalog: claude-nova-1: has no price"},
		{name: "bad date", path: write("j.yaml", `models: {x: [{effective_from: 07/10/2026, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1}]}`), wantErr: "YYYY-MM-DD"},
		{name: "batch discount of 100%", path: write("k.yaml", `models: {x: [{effective_from: 2026-01-01, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1, batch_discount_percent: 100}]}`), wantErr: "0–99"},
		{name: "one id in two cases", path: write("l.yaml", "replace_defaults: true\nmodels:\n  X: [{effective_from: 2026-01-01, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1}]\n"+
			"  x: [{effective_from: 2026-01-02, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1}]\n"), wantErr: "listed twice"},
		{name: "missing file", path: filepath.Join(dir, "nope.yaml"), wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tab, err := Load(tt.path)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, tab)
		})
	}
}

func TestParseUSD(t *testing.T) {
	t.Parallel()
	usd, err := ParseUSD("12.50")
	require.NoError(t, err)
	require.Equal(t, 12_500_000*claudeq.Micros(1), usd)
	_, err = ParseUSD("-1")
	require.Error(t, err)
}

func TestMicrosAndRates(t *testing.T) {
	t.Parallel()
	money := []struct {
		name string
		m    claudeq.Micros
		want string
	}{
		{name: "zero", m: 0, want: "$0.00"},
		{name: "one micro", m: 1, want: "$0.000001"},
		{name: "dollars and cents", m: 1_250_000, want: "$1.25"},
		{name: "all decimals", m: 12_345_678, want: "$12.345678"},
		{name: "negative", m: -500_000, want: "-$0.50"},
	}
	for _, tt := range money {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.m.String())
		})
	}
	rates := []struct {
		name    string
		in      string
		want    Rate
		wantErr bool
	}{
		{name: "integer", in: "3", want: 3_000_000},
		{name: "three decimals", in: "0.125", want: 125_000},
		{name: "trailing zero", in: "2.50", want: 2_500_000},
		{name: "leading dot", in: ".5", want: 500_000},
		{name: "trailing zeros past six decimals", in: "0.1230000", want: 123_000},
		{name: "seven decimals", in: "0.1234567", wantErr: true},
		{name: "negative", in: "-1", wantErr: true},
		{name: "exponent", in: "1e3", wantErr: true},
		{name: "text", in: "abc", wantErr: true},
	}
	for _, tt := range rates {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRate(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, r)
			b, err := json.Marshal(r)
			require.NoError(t, err)
			var back Rate
			require.NoError(t, json.Unmarshal(b, &back))
			require.Equal(t, r, back)
		})
	}
}

func TestEstimateInputTokens(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("abcd", 1000) // 4000 ASCII characters
	tests := []struct {
		name string
		body string
		want int64
	}{
		{name: "one short message", body: `{"messages":[{"role":"user","content":"Hello, world!"}]}`, want: 4 + 4 + 8},
		{name: "4000 characters", body: `{"messages":[{"role":"user","content":"` + long + `"}]}`, want: 1000 + 4 + 8},
		{name: "system string and text blocks", body: `{"system":"abcd","messages":[{"role":"user","content":[{"type":"text","text":"abcdabcd"}]},{"role":"assistant","content":"abcd"}]}`,
			want: 4 + 8 + 8},
		{name: "system blocks with cache_control", body: `{"system":[{"type":"text","text":"abcdabcd","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"abcd"}]}`,
			want: 3 + 4 + 8},
		{name: "non-ASCII counts a token per character", body: `{"messages":[{"role":"user","content":"你好世界"}]}`, want: 4 + 4 + 8},
		{name: "image block", body: `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"text","text":"abcd"}]}]}`,
			want: ImageTokens + 1 + 4 + 8},
		{name: "tool use and result", body: `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"calc","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"abcdabcd"}]}]}`,
			want: 4 /* "calc" + {"a":1} + abcdabcd = 4+7+8 = 19 → 5 */ + 1 + 8 + 8},
		{name: "tools add their JSON and the tool prompt", body: `{"tools":[{"name":"x"}],"messages":[{"role":"user","content":"abcd"}]}`,
			want: 5 /* 4 + 14 = 18 → 5 */ + ToolsOverheadTokens + 4 + 8},
		{name: "not JSON", body: `abcdabcd`, want: 2 + 8},
		{name: "empty", body: ``, want: 1 + 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, EstimateInputTokens([]byte(tt.body)))
		})
	}
}
