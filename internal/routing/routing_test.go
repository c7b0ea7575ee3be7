package routing

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// req builds a request from alternating user/assistant texts.
func req(maxTokens int, texts ...string) claudeq.MessageRequest {
	type m struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	msgs := make([]m, len(texts))
	for i, t := range texts {
		msgs[i] = m{Role: []string{"user", "assistant"}[i%2], Content: t}
	}
	b, _ := json.Marshal(msgs)
	return claudeq.MessageRequest{Model: "auto", MaxTokens: maxTokens, Messages: b}
}

func with(r claudeq.MessageRequest, f func(*claudeq.MessageRequest)) claudeq.MessageRequest {
	f(&r)
	return r
}

const article = `The city council approved a new budget on Tuesday that shifts funding from road
construction to public transit. The plan adds three bus lines, extends the evening schedule of
the tram network and freezes fares for two years. Opponents argued that the road repairs being
postponed are overdue and that delaying them will raise costs later. Supporters pointed to
ridership numbers that have grown for six consecutive quarters and to a survey in which most
residents said they would drive less if service were more frequent. The budget also sets aside
money for a study of congestion pricing in the old town, a proposal that has been debated for a
decade. The mayor said the study would report within eighteen months. `

const contract = `Section 12. Limitation of liability. Except for breaches of confidentiality or
indemnification obligations, neither party shall be liable for indirect, incidental, special or
consequential damages, including lost profits, even if advised of their possibility. Each
party's aggregate liability arising out of this agreement shall not exceed the fees paid in the
twelve months preceding the claim. Section 13. Indemnification. The supplier shall defend and
indemnify the customer against third-party claims alleging that the services infringe any
intellectual property right, provided the customer gives prompt notice and reasonable
cooperation. `

const goService = "```go\n" + `package cache

type Cache struct {
	mu    sync.Mutex
	items map[string]*entry
	evict chan string
}

func (c *Cache) Get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		return nil, false
	}
	if e.expired() {
		c.evict <- key
		return nil, false
	}
	return e.value, true
}

func (c *Cache) evictor() {
	for key := range c.evict {
		c.mu.Lock()
		delete(c.items, key)
		c.mu.Unlock()
	}
}
` + "```\n"

const goHandler = "```go\n" + `func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	v, ok := s.cache.Get(r.URL.Path)
	if !ok {
		v = s.render(r)
		s.cache.Set(r.URL.Path, v)
	}
	w.Write(v)
}
` + "```\n"

const legacyJS = "```js\n" + `function processOrders(orders, users, discounts, taxTable, log) {
  var out = [];
  for (var i = 0; i < orders.length; i++) {
    var o = orders[i];
    var u = null;
    for (var j = 0; j < users.length; j++) { if (users[j].id == o.userId) { u = users[j]; } }
    if (!u) { log.push('no user ' + o.userId); continue; }
    var total = 0;
    for (var k = 0; k < o.items.length; k++) {
      var it = o.items[k];
      var price = it.price * it.qty;
      for (var d = 0; d < discounts.length; d++) {
        if (discounts[d].sku == it.sku && discounts[d].active) { price = price * (1 - discounts[d].rate); }
      }
      total += price;
    }
    var tax = taxTable[u.country] || 0;
    total = total + total * tax;
    if (u.vip) { total = total * 0.95; }
    out.push({ id: o.id, user: u.name, total: Math.round(total * 100) / 100 });
  }
  return out;
}
` + "```\n"

// TestLabelledPrompts: every prompt of a hand-labelled set lands in its
// tier under the default thresholds.
func TestLabelledPrompts(t *testing.T) {
	t.Parallel()
	tools := json.RawMessage(`[{"name":"get_weather","description":"Current weather and forecast for a city","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`)
	thinking := json.RawMessage(`{"type":"enabled","budget_tokens":8000}`)
	tests := []struct {
		name string
		req  claudeq.MessageRequest
		want string
	}{
		// Simple: lookups, short transformations, one-line answers.
		{name: "greeting", req: req(256, "Hi! How are you today?"), want: TierHaiku},
		{name: "translation", req: req(1024, "Translate 'good morning, see you tomorrow' into French."), want: TierHaiku},
		{name: "capital", req: req(1024, "What is the capital of Australia?"), want: TierHaiku},
		{name: "definition", req: req(1024, "Define the word 'ephemeral'."), want: TierHaiku},
		{name: "typo", req: req(1024, "Fix the typo in this sentence: 'Teh meeting is at noon.'"), want: TierHaiku},
		{name: "sentiment", req: req(64, "Classify the sentiment of this review as positive, negative or neutral: 'The delivery was late but the food was great.'"), want: TierHaiku},
		{name: "extraction", req: req(1024, "Extract the email address from: 'Contact Jane at jane.doe@example.com for details.'"), want: TierHaiku},
		{name: "unit conversion", req: req(1024, "Convert 72 degrees Fahrenheit to Celsius."), want: TierHaiku},
		{name: "synonym", req: req(1024, "Give me a synonym for 'happy'."), want: TierHaiku},
		{name: "polite rewrite", req: req(1024, "Rephrase this more politely: 'Send me the report now.'"), want: TierHaiku},
		{name: "yes or no", req: req(1024, "Is Python dynamically typed? Answer yes or no."), want: TierHaiku},
		{name: "single why", req: req(1024, "Why is the sky blue?"), want: TierHaiku},
		{name: "one-sentence summary", req: req(1024, "Summarize in one sentence: the quarterly meeting moved to Thursday because the CFO is travelling."), want: TierHaiku},
		{name: "short poem", req: req(1024, "Write a haiku about autumn leaves."), want: TierHaiku},

		// Medium: code generation, multi-part explanations, structured writing, summaries of long text.
		{name: "multi-question explanation", req: req(2048, "Explain how HTTPS keeps data private. What happens during the TLS handshake, and why can't an eavesdropper read the session key?"), want: TierSonnet},
		{name: "function with tests", req: req(2048, "Write a Python function that parses ISO 8601 dates and returns a datetime, with tests."), want: TierSonnet},
		{name: "small code review", req: req(2048, "Review this function and suggest improvements:\n```go\nfunc Sum(xs []int) int {\n\ts := 0\n\tfor i := 0; i < len(xs); i++ {\n\t\ts += xs[i]\n\t}\n\treturn s\n}\n```"), want: TierSonnet},
		{name: "email with requirements", req: req(1024, "Draft an email to the team announcing the new on-call rotation. Include:\n- the start date (March 3)\n- the rotation order\n- how to swap shifts\n- who to contact with questions"), want: TierSonnet},
		{name: "article summary", req: req(1024, "Summarize the following article in five bullet points.\n\n"+strings.Repeat(article, 4)), want: TierSonnet},
		{name: "database pros and cons", req: req(2048, "What are the pros and cons of PostgreSQL versus MongoDB for an e-commerce product catalog? Which would you pick?"), want: TierSonnet},
		{name: "sql query", req: req(1024, "Write a SQL query that returns the top 5 customers by total order value in 2025 from tables orders(id, customer_id, total, created_at) and customers(id, name)."), want: TierSonnet},
		{name: "tutoring conversation", req: req(1024,
			"Can you help me understand recursion?", "Sure! Recursion is when a function calls itself on a smaller version of the problem.",
			"So how does it know when to stop?", "Through a base case: a condition where it returns without calling itself.",
			"Got it. Can you explain it with the factorial example?"), want: TierSonnet},
		{name: "agent with tools", req: with(req(4096, "Plan my trip to Lisbon next weekend: check the weather and suggest what to pack."), func(r *claudeq.MessageRequest) { r.Tools = tools }), want: TierSonnet},
		{name: "regex", req: req(1024, "Write a regular expression that matches valid IPv4 addresses and explain each part."), want: TierSonnet},
		{name: "short debugging", req: req(2048, "Why does this print 3 three times instead of 0 1 2?\n```js\nfor (var i = 0; i < 3; i++) { setTimeout(() => console.log(i)); }\n```"), want: TierSonnet},

		// Complex: proofs, design and trade-offs, deep debugging, long analyses, extended thinking.
		{name: "rigorous proof", req: req(4096, "Prove that there are infinitely many primes of the form 4k+3. Give a rigorous proof, step by step."), want: TierOpus},
		{name: "system design", req: req(8000, "Design an architecture for a multi-region payment system that must tolerate a full region outage. Compare active-active and active-passive, analyze the consistency trade-offs, and explain how you would handle idempotency and reconciliation."), want: TierOpus},
		{name: "deadlock hunt", req: req(4096, "This Go service deadlocks under load. Find the root cause and explain why it happens, then propose a fix.\n\n"+goService+"\n"+goHandler), want: TierOpus},
		{name: "contract analysis", req: req(8000, "Analyze the liability and indemnification clauses below and compare them with market-standard SaaS terms. What are the implications for us as the customer?\n\n"+strings.Repeat(contract, 40)), want: TierOpus},
		{name: "proof with thinking", req: with(req(16000, "Either prove or give a counterexample: every continuous function on [0,1] is uniformly continuous."), func(r *claudeq.MessageRequest) { r.Thinking = thinking }), want: TierOpus},
		{name: "streaming algorithm", req: req(4096, "Design an algorithm that finds the k most frequent elements of a stream with bounded memory. Analyze its time and space complexity and prove its error bound."), want: TierOpus},
		{name: "strategy evaluation", req: req(4096, "Evaluate our go-to-market strategy for the new analytics product and recommend one option. Context:\n"+
			"- Option A: self-serve freemium with usage-based pricing\n- Option B: sales-led enterprise contracts\n- Option C: partner channel through cloud marketplaces\n- Constraints: 9 months of runway, a sales team of two\n\n"+strings.Repeat(article, 3)+
			"\nWhat are the risks of each? Which metrics should we track? How would the choice change if runway doubled? What would you do first?"), want: TierOpus},
		{name: "legacy refactor", req: req(8192, "Refactor this function into small, testable functions without changing its behaviour, and explain the trade-offs of your decomposition.\n\n"+legacyJS), want: TierOpus},
		{name: "derivation", req: req(4096, "Derive the closed-form solution of ridge regression and explain why the matrix is always invertible for lambda > 0, step by step."), want: TierOpus},
		{name: "research questions", req: req(16000, "I am preparing a lecture on quantum error correction. Explain the difference between bit-flip and phase-flip errors. "+
			"Why can't we simply copy qubits? How does the surface code detect errors without measuring the data qubits? Compare the surface code with concatenated codes in overhead and threshold. "+
			"What are the implications of a 1% physical error rate?"), want: TierOpus},
	}
	counts := map[string]int{}
	for _, tt := range tests {
		counts[tt.want]++
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := Route(tt.req, DefaultThresholds(), "")
			t.Logf("%s, score %d: %s", d.Tier, d.Score, strings.Join(d.Reasons, "; "))
			require.Equal(t, tt.want, d.Tier, "score %d: %s", d.Score, strings.Join(d.Reasons, "; "))
		})
	}
	require.GreaterOrEqual(t, len(tests), 30)
	for _, tier := range []string{TierHaiku, TierSonnet, TierOpus} {
		require.GreaterOrEqual(t, counts[tier], 10, tier)
	}
}

func TestScoreReasons(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		req     claudeq.MessageRequest
		score   int
		reasons []string
	}{
		{name: "nothing to say", req: req(1024, "hello"), score: 0, reasons: nil},
		{name: "never negative", req: req(100, "Translate 'yes' and give a synonym."), score: 0,
			reasons: []string{"simple-task words: translate, synonym (-2)", "max_tokens 100 (-1)"}},
		{name: "code and reasoning", req: req(4096, "Compare these:\n```py\na = 1\n```\n```py\nb = 2\n```"), score: 3 + 2 + 1,
			reasons: []string{"code blocks: 2 (+3)", "reasoning words: compare (+2)", "max_tokens 4096 (+1)"}},
		{name: "reasoning capped", req: req(1024, "prove theorem rigorous derive formally"), score: 6,
			reasons: []string{"reasoning words: prove, derive, rigorous, formally, theorem (+6)"}},
		{name: "system prompt and blocks count", req: with(req(1024, "ok"), func(r *claudeq.MessageRequest) {
			r.System = json.RawMessage(`[{"type":"text","text":"Always analyze step by step."}]`)
			r.Messages = json.RawMessage(`[{"role":"user","content":[{"type":"image","source":{}},{"type":"text","text":"why?"}]}]`)
		}), score: 4 + 1 + 1, reasons: []string{"reasoning words: step by step, analyze, why (+5)", "1 images (+1)"}},
		{name: "thinking disabled is no signal", req: with(req(1024, "hi"), func(r *claudeq.MessageRequest) { r.Thinking = json.RawMessage(`{"type":"disabled"}`) }), score: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			score, reasons := Score(tt.req)
			require.Equal(t, tt.score, score, reasons)
			if tt.reasons != nil {
				require.Equal(t, tt.reasons, reasons)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	t.Parallel()
	th := Thresholds{Sonnet: 3, Opus: 7}
	tests := []struct {
		name   string
		score  int
		cap    string
		want   string
		reason string
	}{
		{name: "low", score: 0, want: TierHaiku, reason: "score 0 < sonnet threshold 3"},
		{name: "just sonnet", score: 3, want: TierSonnet, reason: "score 3 ≥ sonnet threshold 3"},
		{name: "just below opus", score: 6, want: TierSonnet},
		{name: "opus", score: 7, want: TierOpus, reason: "score 7 ≥ opus threshold 7"},
		{name: "capped at sonnet", score: 9, cap: "sonnet", want: TierSonnet, reason: "score 9 ≥ opus threshold 7; capped at sonnet by the key's tier (wanted opus)"},
		{name: "capped at haiku", score: 5, cap: "Haiku", want: TierHaiku},
		{name: "cap above the choice changes nothing", score: 4, cap: "opus", want: TierSonnet, reason: "score 4 ≥ sonnet threshold 3"},
		{name: "a non-tier key tier caps nothing", score: 9, cap: "standard", want: TierOpus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tier, reason := Choose(tt.score, th, tt.cap)
			require.Equal(t, tt.want, tier)
			if tt.reason != "" {
				require.Equal(t, tt.reason, reason)
			}
		})
	}
	require.NoError(t, DefaultThresholds().Validate())
	require.Error(t, Thresholds{Sonnet: 5, Opus: 5}.Validate())
	require.Error(t, Thresholds{Sonnet: 0, Opus: 5}.Validate())

	d := Route(req(4096, "Compare these two approaches step by step."), th, "sonnet")
	require.Equal(t, "sonnet; score 5 >= sonnet threshold 3; reasoning words: step by step, compare (+4), max_tokens 4096 (+1)", d.Header())
}
