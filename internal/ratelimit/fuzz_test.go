package ratelimit

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// FuzzParseRateAndTiers parses a fuzzed string as CLAUDEQ_RATELIMIT_IP and
// as CLAUDEQ_RATELIMIT_TIERS. Properties: an accepted rate is off (the zero
// Rate) or a count ≥ 0 per positive period, and formats back to itself;
// accepted tiers have non-empty, unique names and limits ≥ 0, and format
// back to the same tiers.
func FuzzParseRateAndTiers(f *testing.F) {
	for _, s := range []string{"1000/15m", "60/m", " 5 / 1h30m ", "0", "off", "OFF", "0/1s", "-1/1m", "1/0s", "1/-1m", "1/", "/1m",
		"9223372036854775807/1ns", "1/2562047h47m16.854775807s", "1/9999999h", "standard=600/1000000,free=60/40000,internal=0/0",
		"a=1/2,a=3/4", "=1/2", "a=1", "a=-1/2", " a b = 1 / 2 ,, ", "a/b=1/2", "x=1/2=3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseRate(s); err == nil {
			if r != (Rate{}) {
				if r.Requests < 0 || r.Period <= 0 {
					t.Fatalf("ParseRate(%q) = %+v", s, r)
				}
				back, err := ParseRate(fmt.Sprintf("%d/%s", r.Requests, r.Period))
				if err != nil || back != r {
					t.Fatalf("ParseRate(%q) = %+v, back %+v, %v", s, r, back, err)
				}
			}
		} else if r != (Rate{}) {
			t.Fatalf("ParseRate(%q) = %+v with %v", s, r, err)
		}

		tiers, err := ParseTiers(s)
		if err != nil {
			return
		}
		var parts []string
		for name, l := range tiers {
			if name == "" || name != strings.TrimSpace(name) || l.RequestsPerMinute < 0 || l.TokensPerMinute < 0 {
				t.Fatalf("ParseTiers(%q): %q = %+v", s, name, l)
			}
			parts = append(parts, fmt.Sprintf("%s=%d/%d", name, l.RequestsPerMinute, l.TokensPerMinute))
		}
		sort.Strings(parts)
		back, err := ParseTiers(strings.Join(parts, ","))
		if err != nil || len(back) != len(tiers) {
			t.Fatalf("ParseTiers(%q) = %v, back %v, %v", s, tiers, back, err)
		}
		for name, l := range tiers {
			if back[name] != l {
				t.Fatalf("ParseTiers(%q) = %v, back %v", s, tiers, back)
			}
		}
	})
}
