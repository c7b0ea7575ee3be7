package pricing

import (
	"encoding/json"
	"fmt"
	"github.com/claudeq/claudeq/internal/claudeq"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ParseUSD parses a non-negative decimal amount of dollars ("5", "12.50",
// "0.000001") exactly into claudeq.Micros; at most six decimals. For budgets read
// from configuration.
func ParseUSD(s string) (claudeq.Micros, error) {
	v, err := parseDecimal(s, 6)
	if err != nil {
		return 0, fmt.Errorf("amount %q: %w", s, err)
	}
	return claudeq.Micros(v), nil
}

// Rate is a price in micro-dollars per million tokens: "$3 / MTok" is
// Rate(3_000_000), "$0.125 / MTok" is Rate(125_000).
type Rate int64

// ParseRate parses a decimal number of dollars per million tokens ("3",
// "0.125", "2.50") exactly, without floating point. At most six decimals.
func ParseRate(s string) (Rate, error) {
	v, err := parseDecimal(s, 6)
	if err != nil {
		return 0, fmt.Errorf("price %q: %w", s, err)
	}
	return Rate(v), nil
}

// String formats r as dollars per million tokens without trailing zeros,
// e.g. "3", "0.125".
func (r Rate) String() string { return decimal(int64(r), 6, 0) }

// UnmarshalYAML reads a rate written as a plain decimal number (0.125) or a
// string ("0.125"), exactly.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a price must be a number of USD per million tokens", n.Line)
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*r = v
	return nil
}

// MarshalYAML writes r as a decimal string.
func (r Rate) MarshalYAML() (any, error) { return r.String(), nil }

// UnmarshalJSON reads a rate written as a JSON number or string, exactly.
func (r *Rate) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalJSON writes r as a JSON number in dollars per million tokens.
func (r Rate) MarshalJSON() ([]byte, error) { return []byte(r.String()), nil }

// Date is a calendar date (UTC midnight) or an exact instant, written
// "2026-10-07" or in RFC 3339.
type Date struct{ time.Time }

// ParseDate parses "2006-01-02" (as UTC midnight) or an RFC 3339 time,
// whose year in UTC must be 0 to 9999 (so that String can write it).
func ParseDate(s string) (Date, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return Date{t.UTC()}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return Date{}, fmt.Errorf("date %q: want YYYY-MM-DD or RFC 3339", s)
	}
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return Date{}, fmt.Errorf("date %q: year %d in UTC, want 0 to 9999", s, y)
	}
	return Date{t.UTC()}, nil
}

// String formats d as YYYY-MM-DD when it is a UTC midnight, else RFC 3339
// (with the fraction of a second, if any): ParseDate reads it back exactly.
func (d Date) String() string {
	if d.Equal(d.Truncate(24 * time.Hour)) {
		return d.UTC().Format(time.DateOnly)
	}
	return d.UTC().Format(time.RFC3339Nano)
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Date) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDate(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Date) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Date) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("date: want a string")
	}
	v, err := ParseDate(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Date) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// classCost is ceil(tokens × rate × (100 − discountPct) / (100 × 10⁶)) in
// 128-bit arithmetic, saturating at MaxInt64 (unreachable with real
// numbers: it would take 10¹³ dollars).
func classCost(tokens int64, rate Rate, discountPct int64) claudeq.Micros {
	if tokens <= 0 || rate <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(tokens), uint64(rate))
	f := uint64(100 - discountPct)
	h2, lo2 := bits.Mul64(lo, f)
	hh, h3 := bits.Mul64(hi, f)
	h2, carry := bits.Add64(h2, h3, 0)
	const den = 100 * 1_000_000
	if hh != 0 || carry != 0 || h2 >= den {
		return math.MaxInt64
	}
	q, r := bits.Div64(h2, lo2, den)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return claudeq.Micros(q)
}

// addSat adds without overflowing.
func addSat(a, b claudeq.Micros) claudeq.Micros {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// parseDecimal parses a non-negative decimal with at most scale decimals
// into an integer scaled by 10^scale.
func parseDecimal(s string, scale int) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty")
	}
	if s[0] == '-' {
		return 0, fmt.Errorf("negative")
	}
	s = strings.TrimPrefix(s, "+")
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" {
		whole = "0"
	}
	if len(frac) > scale {
		if strings.Trim(frac[scale:], "0") != "" {
			return 0, fmt.Errorf("more than %d decimals", scale)
		}
		frac = frac[:scale]
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("not a decimal number")
			}
		}
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("too large")
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", scale-len(frac)), 10, 64)
	}
	p := int64(1)
	for range scale {
		p *= 10
	}
	if w > (math.MaxInt64-f)/p {
		return 0, fmt.Errorf("too large")
	}
	return w*p + f, nil
}

// decimal formats v/10^scale with between minFrac and scale decimals.
func decimal(v int64, scale, minFrac int) string {
	neg := v < 0
	u := uint64(v)
	if neg {
		u = uint64(-v) // MinInt64 wraps to itself as uint64, which is right
	}
	p := uint64(1)
	for range scale {
		p *= 10
	}
	s := strconv.FormatUint(u/p, 10)
	frac := fmt.Sprintf("%0*d", scale, u%p)
	frac = strings.TrimRight(frac, "0")
	for len(frac) < minFrac {
		frac += "0"
	}
	if frac != "" {
		s += "." + frac
	}
	if neg {
		s = "-" + s
	}
	return s
}
