package pricing

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// FuzzParse parses a fuzzed price file (CLAUDEQ_PRICING_FILE) and prices
// fuzzed usage with it. Properties: an error XOR a table with at least one
// model; each priced id resolves to itself, its versions are in date order
// with positive rates; the file written back as YAML parses to the same
// table; and Cost, for any usage, is never negative nor above the Estimate
// for the same prompt and output (the reservation promise).
func FuzzParse(f *testing.F) {
	f.Add(defaultYAML, int64(1000), int64(500), int64(100), int64(50), int64(10), int64(1_800_000_000))
	for _, s := range []string{
		`{"models":{"m":[{"effective_from":"2026-01-01","input":1,"output":2,"cache_write_5m":1.25,"cache_write_1h":2,"cache_read":"0.1"}]}}`,
		"models:\n  m:\n    - effective_from: 2026-01-01T12:30:00Z\n      input: 3\n      output: 15\n      cache_write_5m: 3.75\n      cache_write_1h: 6\n      cache_read: 0.3\n" +
			"      long_prompt: {above_tokens: 200000, input: 6, output: 22.5, cache_write_5m: 7.5, cache_write_1h: 12, cache_read: 0.6}\n" +
			"    - effective_from: 2027-01-01\n      input: 1\n      output: 1\n      cache_write_5m: 1\n      cache_write_1h: 1\n      cache_read: 1\n      batch_discount_percent: 99\n" +
			"catalog: {m: {display_name: M, created_at: 2026-01-01, max_input_tokens: 1000, max_tokens: 100}}\n",
		"models:\n  m:\n    - {effective_from: 2026-01-01, input: 1, output: 1, cache_write_5m: 1, cache_write_1h: 1, cache_read: 1,\n" +
			"       long_prompt: {above_tokens: 10, input: 0.5, output: 0.5, cache_write_5m: 0.5, cache_write_1h: 0.5, cache_read: 0.5}}\n",
		"models: {m: [{effective_from: 2026-01-01, input: 0, output: -1, cache_write_5m: 1e3, cache_write_1h: 0.0000001, cache_read: x, batch_discount_percent: 100}]}",
		"replace_defaults: true\nmodels: {}\n", "", "models:", "colour: red", "models: {m: []}", "aliases: {a: b}\nmodels: {b: [{}]}",
	} {
		f.Add([]byte(s), int64(150_000), int64(70_000), int64(50_000), int64(20_000), int64(20_000), int64(1_800_000_000))
	}
	f.Fuzz(func(t *testing.T, data []byte, in, out, read, w5, w1, at int64) {
		tab, err := Parse(data)
		if (err == nil) == (tab == nil) {
			t.Fatalf("Parse = %v, %v", tab, err)
		}
		if err != nil {
			return
		}
		models := tab.Models()
		if len(models) == 0 {
			t.Fatal("a table without models")
		}
		for _, id := range models {
			if got, by := tab.Resolve(id); got != id || by != ByTable {
				t.Fatalf("Resolve(%q) = %q, %v", id, got, by)
			}
			vs := tab.Versions(id)
			for i, v := range vs {
				if i > 0 && !vs[i-1].EffectiveFrom.Before(v.EffectiveFrom.Time) {
					t.Fatalf("%s: versions out of order: %v", id, vs)
				}
				if v.Rates.validate() != nil || v.BatchDiscountPercent < 0 || v.BatchDiscountPercent > 99 {
					t.Fatalf("%s: invalid version %+v", id, v)
				}
			}
		}

		// Written back, the file gives the same table.
		file, err := decode(data)
		if err != nil {
			t.Fatal(err)
		}
		b, err := yaml.Marshal(file)
		if err != nil {
			t.Fatalf("marshal %+v: %v", file, err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("the table written back as\n%s\ndoes not parse: %v", b, err)
		}
		if a, w := dump(again), dump(tab); a != w {
			t.Fatalf("round trip through\n%s\nchanged the table:\n%s\n%s", b, w, a)
		}

		// Any name has a price: its own, or a listed model's.
		for _, name := range []string{string(data[:min(len(data), 40)]), "claude-opus-99", "gpt-5", ""} {
			if id, _ := tab.Resolve(name); len(tab.Versions(id)) == 0 {
				t.Fatalf("Resolve(%q) = %q, which has no price", name, id)
			}
		}

		// Cost never exceeds Estimate for the same prompt and output.
		abs := func(n int64) int64 { return max(n, -n, 0) % (1 << 40) }
		u := claudeq.Usage{InputTokens: abs(in), OutputTokens: abs(out), CacheReadInputTokens: abs(read),
			CacheCreationInputTokens: abs(w5) + abs(w1), CacheCreation: &claudeq.CacheCreation{Ephemeral5mInputTokens: abs(w5), Ephemeral1hInputTokens: abs(w1)}}
		prompt := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
		when := time.Unix(at%(1<<35), 0)
		for i, id := range models {
			if i == 4 {
				break
			}
			for _, batch := range []bool{false, true} {
				cost, _, err := tab.Cost(id, u, batch, when)
				if err != nil || cost < 0 {
					t.Fatalf("Cost(%s, %+v) = %v, %v", id, u, cost, err)
				}
				est, _, err := tab.Estimate(id, prompt, u.OutputTokens, batch, when)
				if err != nil || cost > est {
					t.Fatalf("%s at %v (batch %v): usage %+v costs %v, above the estimate %v (%v)", id, when, batch, u, cost, est, err)
				}
			}
		}
	})
}

// dump writes a table in a comparable form.
func dump(t *Table) string {
	var b strings.Builder
	for _, id := range t.Models() {
		b.WriteString(id + ":")
		for _, v := range t.Versions(id) {
			j, _ := json.Marshal(v)
			b.Write(j)
			b.WriteString(" " + v.EffectiveFrom.UTC().Format(time.RFC3339Nano))
		}
		b.WriteString("\n")
	}
	catalog, _ := json.Marshal(t.catalog)
	b.Write(catalog)
	return b.String()
}

// FuzzParseAmounts parses a fuzzed string as a dollar amount, a rate and a
// date, as price files and CLAUDEQ_QUOTA_*_USD are read. Properties: an
// accepted amount or rate is non-negative and formats back to a string
// that parses to the same value; an accepted date formats back to itself.
func FuzzParseAmounts(f *testing.F) {
	for _, s := range []string{"5", "12.50", "0.000001", "0.0000001", "1.0000000", "+3", "-1", ".5", "5.", "", " 7 ", "1e3", "0x10",
		"9223372036854.775807", "9223372036854.775808", "99999999999999999999", "2026-10-07", "2026-10-07T12:00:00Z",
		"2026-10-07T12:00:00+02:00", "0000-01-01", "2026-02-30"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseUSD(s); err == nil {
			if m < 0 {
				t.Fatalf("ParseUSD(%q) = %d", s, m)
			}
			if back, err := ParseUSD(strings.TrimPrefix(m.String(), "$")); err != nil || back != m {
				t.Fatalf("ParseUSD(%q) = %d, formatted %s, parsed back %d, %v", s, m, m, back, err)
			}
		}
		if r, err := ParseRate(s); err == nil {
			if r < 0 {
				t.Fatalf("ParseRate(%q) = %d", s, r)
			}
			if back, err := ParseRate(r.String()); err != nil || back != r {
				t.Fatalf("ParseRate(%q) = %d, formatted %s, parsed back %d, %v", s, r, r, back, err)
			}
			var j Rate
			if b, _ := r.MarshalJSON(); json.Unmarshal(b, &j) != nil || j != r {
				t.Fatalf("rate %v does not round-trip through JSON %s: %v", r, b, j)
			}
		}
		if d, err := ParseDate(s); err == nil {
			back, err := ParseDate(d.String())
			if err != nil || !back.Equal(d.Time) {
				t.Fatalf("ParseDate(%q) = %v, formatted %q, parsed back %v, %v", s, d.Time, d.String(), back.Time, err)
			}
		}
	})
}

// FuzzEstimateInputTokens estimates the tokens of a fuzzed request body:
// never a panic, at least 1, and at most what the heuristic can give for
// its size (an image block of 16 bytes counts 1600 tokens).
func FuzzEstimateInputTokens(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hello"}]}`,
		`{"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"image","source":{}},{"type":"text","text":"日本語"},` +
			`{"type":"tool_use","input":{"a":1}},{"type":"tool_result","content":[{"type":"text","text":"r"}]},{"type":"thinking","thinking":"t"},{"type":"document"}]}],"tools":[{"name":"t"}]}`,
		`{"messages":null,"tools":[]}`, `not json`, "", "\xff\xfe", `{"messages":[{"content":{"type":"image"}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n := EstimateInputTokens(body)
		if limit := int64(RequestOverheadTokens+ToolsOverheadTokens) + int64(len(body))*(ImageTokens/16+MessageOverheadTokens+1); n < 1 || n > limit {
			t.Fatalf("EstimateInputTokens(%q) = %d, want 1..%d", body, n, limit)
		}
		if n == math.MaxInt64 {
			t.Fatal("saturated")
		}
	})
}
