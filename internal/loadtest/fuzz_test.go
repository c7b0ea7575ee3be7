package loadtest

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// FuzzLoadPrompts reads a fuzzed prompts file (--prompts) and builds the
// request bodies of every mode from it. Properties: an error XOR at least
// one prompt, each non-empty with max_tokens ≥ 0; the prompts written back
// as JSONL read back the same; and every body the generator writes (with
// its own JSON string encoder) is valid JSON carrying exactly the prompt,
// model and webhook URL.
func FuzzLoadPrompts(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"hi"}`,
		"{\"prompt\":\"a \\\"quoted\\\" line\\nwith\\ttabs \\u0001 and \\u2028\",\"model\":\"haiku\",\"max_tokens\":5}\n\n  {\"prompt\":\"日本語\"}\r\n",
		`{"prompt":""}`, `{"prompt":"x","max_tokens":-1}`, `{"prompt":"x","colour":1}`, `{"prompt":"x"} {"prompt":"y"}`, "", "\n", "\xff",
		`{"prompt":"\ud800 lone surrogate"}`, `{"prompt":"x","model":"a\\\\b\u007f"}`,
	} {
		f.Add([]byte(s), "https://hooks.example.com/x?a=\"b\"")
	}
	f.Fuzz(func(t *testing.T, data []byte, webhook string) {
		ps, err := LoadPrompts(bytes.NewReader(data))
		if (err == nil) != (len(ps) > 0) {
			t.Fatalf("LoadPrompts = %d prompts, %v", len(ps), err)
		}
		if err != nil {
			return
		}
		var back bytes.Buffer
		for _, p := range ps {
			if p.Prompt == "" || p.MaxTokens < 0 {
				t.Fatalf("prompt %+v", p)
			}
			b, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			back.Write(append(b, '\n'))
		}
		again, err := LoadPrompts(&back)
		if err != nil || len(again) != len(ps) {
			t.Fatalf("prompts written back read as %d, %v", len(again), err)
		}
		for i := range ps {
			if again[i] != ps[i] {
				t.Fatalf("prompt %d: %+v read back as %+v", i, ps[i], again[i])
			}
		}

		webhook = strings.ToValidUTF8(webhook, "\uFFFD")
		for _, mode := range []Mode{ModeAsync, ModeSync, ModeStream} {
			g := &generator{mode: mode, webhookURL: webhook}
			for _, p := range ps[:min(len(ps), 4)] {
				b := g.body(p.Prompt, p.Model, p.MaxTokens)
				var req struct {
					Prompt    *string `json:"prompt"`
					Model     string  `json:"model"`
					MaxTokens int     `json:"max_tokens"`
					Webhook   string  `json:"webhook_url"`
					Stream    bool    `json:"stream"`
					Messages  []struct {
						Role    string `json:"role"`
						Content string `json:"content"`
					} `json:"messages"`
				}
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&req); err != nil || dec.More() {
					t.Fatalf("%s body %q is not the JSON it should be: %v", mode, b, err)
				}
				text := ""
				if mode == ModeAsync {
					if req.Prompt != nil {
						text = *req.Prompt
					}
					if req.Webhook != webhook {
						t.Fatalf("webhook %q became %q", webhook, req.Webhook)
					}
				} else if len(req.Messages) == 1 && req.Messages[0].Role == "user" {
					text = req.Messages[0].Content
				}
				if text != p.Prompt || req.Model != p.Model || req.MaxTokens != p.MaxTokens || req.Stream != (mode == ModeStream) {
					t.Fatalf("%s body %q does not carry %+v", mode, b, p)
				}
			}
		}
	})
}

// FuzzParseTokenDist parses a fuzzed --prompt-tokens value. Properties: an
// accepted distribution is valid, formats back to itself, and samples
// only sizes within its bounds.
func FuzzParseTokenDist(f *testing.F) {
	for _, s := range []string{"200", "50:500", "lognormal:200:0.8", "LogNormal:200:0.8:4000", "0", "5:1", "1:200001", "lognormal:0.5:1",
		"lognormal:200:-1", "lognormal:NaN:1", "lognormal:Inf:0", "lognormal:1e308:1", "lognormal:200:1e308", "lognormal:200", "a:b:c", " 7 ", ":"} {
		f.Add(s, uint64(1))
	}
	f.Fuzz(func(t *testing.T, s string, seed uint64) {
		d, err := ParseTokenDist(s)
		if err != nil {
			return
		}
		if d.validate() != nil {
			t.Fatalf("ParseTokenDist(%q) = invalid %+v", s, d)
		}
		back, err := ParseTokenDist(d.String())
		if err != nil || back != d {
			t.Fatalf("ParseTokenDist(%q) = %+v, formatted %q, back %+v, %v", s, d, d.String(), back, err)
		}
		rng := rand.New(rand.NewPCG(seed, seed))
		for range 16 {
			if n := d.sample(rng); n < d.Min || n > d.Max {
				t.Fatalf("%+v sampled %d", d, n)
			}
		}
	})
}
