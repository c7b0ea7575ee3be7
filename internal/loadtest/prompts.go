package loadtest

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Prompt is one line of a prompts file (JSONL):
//
//	{"prompt": "...", "model": "...", "max_tokens": N}
//
// model and max_tokens are optional.
type Prompt struct {
	Prompt    string `json:"prompt"`
	Model     string `json:"model,omitempty"`
	MaxTokens int    `json:"max_tokens,omitempty"`
}

// LoadPrompts reads prompts in JSONL from r; blank lines are skipped.
func LoadPrompts(r io.Reader) ([]Prompt, error) {
	var ps []Prompt
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var p Prompt
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if p.Prompt == "" {
			return nil, fmt.Errorf("line %d: no prompt", n)
		}
		if p.MaxTokens < 0 {
			return nil, fmt.Errorf("line %d: max_tokens %d", n, p.MaxTokens)
		}
		ps = append(ps, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("no prompts")
	}
	return ps, nil
}

// LoadPromptsFile reads a JSONL prompts file, see [LoadPrompts].
func LoadPromptsFile(path string) ([]Prompt, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ps, err := LoadPrompts(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ps, nil
}

// Distribution kinds of [TokenDist].
const (
	DistUniform   = "uniform"
	DistLognormal = "lognormal"
)

// maxPromptTokens bounds generated prompts (about 800 KB).
const maxPromptTokens = 200_000

// TokenDist is the size distribution of generated prompts, in tokens (a
// token is about 4 bytes of text, the heuristic of the simulator).
type TokenDist struct {
	// Kind is DistUniform or DistLognormal.
	Kind string
	// Min and Max bound the sizes: uniform draws from Min..Max; lognormal
	// clamps to them.
	Min, Max int
	// Median and Sigma parameterise the lognormal: exp(N(ln Median, Sigma²)).
	Median, Sigma float64
}

// ParseTokenDist parses a --prompt-tokens value:
//
//	200                     every prompt 200 tokens
//	50:500                  uniform between 50 and 500
//	lognormal:200:0.8       lognormal, median 200, sigma 0.8, clamped to 1..20×median
//	lognormal:200:0.8:4000  the same, clamped to 1..4000
func ParseTokenDist(s string) (TokenDist, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	atoi := func(p string) (int, error) {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return 0, fmt.Errorf("prompt tokens %q: %q is not a whole number", s, p)
		}
		return n, nil
	}
	var d TokenDist
	switch {
	case strings.EqualFold(parts[0], DistLognormal):
		if len(parts) != 3 && len(parts) != 4 {
			return d, fmt.Errorf("prompt tokens %q: want lognormal:MEDIAN:SIGMA[:MAX]", s)
		}
		med, err1 := strconv.ParseFloat(parts[1], 64)
		sig, err2 := strconv.ParseFloat(parts[2], 64)
		if err1 != nil || err2 != nil {
			return d, fmt.Errorf("prompt tokens %q: median and sigma must be numbers", s)
		}
		d = TokenDist{Kind: DistLognormal, Min: 1, Max: int(math.Min(20*med, maxPromptTokens)), Median: med, Sigma: sig}
		if len(parts) == 4 {
			m, err := atoi(parts[3])
			if err != nil {
				return d, err
			}
			d.Max = m
		}
	case len(parts) == 1:
		n, err := atoi(parts[0])
		if err != nil {
			return d, err
		}
		d = TokenDist{Kind: DistUniform, Min: n, Max: n}
	case len(parts) == 2:
		lo, err := atoi(parts[0])
		if err != nil {
			return d, err
		}
		hi, err := atoi(parts[1])
		if err != nil {
			return d, err
		}
		d = TokenDist{Kind: DistUniform, Min: lo, Max: hi}
	default:
		return d, fmt.Errorf("prompt tokens %q: want N, MIN:MAX or lognormal:MEDIAN:SIGMA[:MAX]", s)
	}
	return d, d.validate()
}

func (d TokenDist) validate() error {
	switch {
	case d.Kind != DistUniform && d.Kind != DistLognormal:
		return fmt.Errorf("prompt tokens: unknown distribution %q", d.Kind)
	case d.Min < 1 || d.Max < d.Min || d.Max > maxPromptTokens:
		return fmt.Errorf("prompt tokens: bounds %d..%d: want 1 ≤ min ≤ max ≤ %d", d.Min, d.Max, maxPromptTokens)
	case d.Kind == DistLognormal && (!(d.Median >= 1) || !(d.Sigma >= 0) || math.IsInf(d.Median, 0) || math.IsInf(d.Sigma, 0)):
		return fmt.Errorf("prompt tokens: lognormal median %v sigma %v: want median ≥ 1, sigma ≥ 0", d.Median, d.Sigma)
	}
	return nil
}

// String renders d the way ParseTokenDist reads it.
func (d TokenDist) String() string {
	if d.Kind == DistLognormal {
		return fmt.Sprintf("lognormal:%g:%g:%d", d.Median, d.Sigma, d.Max)
	}
	if d.Min == d.Max {
		return strconv.Itoa(d.Min)
	}
	return fmt.Sprintf("%d:%d", d.Min, d.Max)
}

func (d TokenDist) sample(rng *rand.Rand) int {
	var n int
	if d.Kind == DistLognormal {
		n = int(math.Round(math.Exp(math.Log(d.Median) + d.Sigma*rng.NormFloat64())))
	} else {
		n = d.Min + rng.IntN(d.Max-d.Min+1)
	}
	return min(max(n, d.Min), d.Max)
}

// repeatRing is how many recent fresh requests a repeat is drawn from.
const repeatRing = 1024

// generator produces request bodies: fresh ones (the next prompt of the
// file, or a generated prompt unique to this run) and, for the CacheRatio
// share, byte-identical repeats of a recent fresh one. Repeats are spread
// evenly: request i (from 0) repeats iff ⌊(i+1)·r⌋ > ⌊i·r⌋, so n requests
// hold exactly ⌊n·r⌋ repeats.
type generator struct {
	mode       Mode
	model      string
	maxTokens  int
	webhookURL string
	dist       TokenDist
	ratio      float64
	fileBodies [][]byte
	runID      string

	mu      sync.Mutex
	rng     *rand.Rand
	n       int64 // requests generated
	fresh   int64
	repeats int64
	ring    [][]byte
}

func newGenerator(c Config, webhookURL string) *generator {
	seed := c.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	var id [6]byte
	_, _ = crand.Read(id[:])
	g := &generator{
		mode: c.Mode, model: c.Model, maxTokens: c.MaxTokens, webhookURL: webhookURL,
		dist: c.PromptTokens, ratio: c.CacheRatio, runID: hex.EncodeToString(id[:]),
		rng: rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15)),
	}
	for _, p := range c.Prompts {
		m, mt := p.Model, p.MaxTokens
		if m == "" {
			m = c.Model
		}
		if mt == 0 {
			mt = c.MaxTokens
		}
		g.fileBodies = append(g.fileBodies, g.body(p.Prompt, m, mt))
	}
	return g
}

// next returns the body of the next request and whether it repeats an
// earlier one. Bodies are shared: callers must not modify them.
func (g *generator) next() (body []byte, repeat bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := g.n
	g.n++
	if i > 0 && len(g.ring) > 0 && math.Floor(float64(i+1)*g.ratio) > math.Floor(float64(i)*g.ratio) {
		g.repeats++
		return g.ring[g.rng.IntN(len(g.ring))], true
	}
	k := g.fresh
	g.fresh++
	if len(g.fileBodies) > 0 {
		body = g.fileBodies[k%int64(len(g.fileBodies))]
	} else {
		body = g.body(g.text(k, g.dist.sample(g.rng)), g.model, g.maxTokens)
	}
	if g.ratio > 0 {
		if len(g.ring) < repeatRing {
			g.ring = append(g.ring, body)
		} else {
			g.ring[k%repeatRing] = body
		}
	}
	return body, false
}

// text returns a prompt of about tokens tokens (4 bytes each), unique to
// this run and request k, so that no fresh prompt is a cache hit.
func (g *generator) text(k int64, tokens int) string {
	head := fmt.Sprintf("[loadtest %s #%d] ", g.runID, k)
	n := max(tokens*4-len(head), 0)
	c := corpus()
	var b strings.Builder
	b.Grow(len(head) + n)
	b.WriteString(head)
	for n > 0 {
		off := g.rng.IntN(len(c) / 2)
		m := min(n, len(c)-off)
		b.WriteString(c[off : off+m])
		n -= m
	}
	return b.String()
}

// body encodes one request for the mode.
func (g *generator) body(prompt, model string, maxTokens int) []byte {
	b := make([]byte, 0, len(prompt)+160)
	switch g.mode {
	case ModeAsync:
		b = append(b, `{"prompt":`...)
		b = appendJSONString(b, prompt)
		b = append(b, `,"model":`...)
		b = appendJSONString(b, model)
		b = append(b, `,"max_tokens":`...)
		b = strconv.AppendInt(b, int64(maxTokens), 10)
		if g.webhookURL != "" {
			b = append(b, `,"webhook_url":`...)
			b = appendJSONString(b, g.webhookURL)
		}
	default:
		b = append(b, `{"model":`...)
		b = appendJSONString(b, model)
		b = append(b, `,"max_tokens":`...)
		b = strconv.AppendInt(b, int64(maxTokens), 10)
		b = append(b, `,"messages":[{"role":"user","content":`...)
		b = appendJSONString(b, prompt)
		b = append(b, `}]`...)
		if g.mode == ModeStream {
			b = append(b, `,"stream":true`...)
		}
	}
	return append(b, '}')
}

// counts returns how many requests were generated and how many repeated
// an earlier one.
func (g *generator) counts() (n, repeats int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n, g.repeats
}

// appendJSONString appends s as a JSON string. s is valid UTF-8 (prompts
// come from JSON or from the ASCII corpus).
func appendJSONString(b []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

var corpusOnce = sync.OnceValue(func() string {
	words := strings.Fields(`the queue gateway worker job answer cache model token request
		latency prompt system message stream event redis mongo schedule retry timeout
		budget user team report summary analysis review classify extract sentiment data
		service cluster replica shard index table query result error status health metric
		alpha beta gamma delta river mountain forest ocean city garden window lantern
		quickly slowly carefully clearly briefly often rarely always never perhaps
		explain describe compare list outline draft translate rewrite improve check`)
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for b.Len() < 256<<10 {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(12) == 0 {
			b.WriteString(". ")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
})

// corpus is 256 KiB of filler text prompts are cut from.
func corpus() string { return corpusOnce() }
