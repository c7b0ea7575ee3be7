// Package routing picks a model tier for requests that ask for model
// "auto": Score rates how demanding a request looks from its text alone
// (length, structure, code, reasoning words, requested output size, tools,
// extended thinking) and Choose maps the score to haiku, sonnet or opus
// under configurable thresholds and the caller's key tier.
//
// Scoring is a cheap, explainable heuristic, not a classifier: every point
// comes with a reason, so the api can say in a response header why a model
// was chosen. Package-level functions are pure and safe for concurrent use.
package routing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// The tiers, cheapest first.
const (
	TierHaiku  = "haiku"
	TierSonnet = "sonnet"
	TierOpus   = "opus"
)

var tierRank = map[string]int{TierHaiku: 0, TierSonnet: 1, TierOpus: 2}

// Thresholds are the lowest scores that pick sonnet and opus.
type Thresholds struct {
	Sonnet int // CLAUDEQ_ROUTING_SONNET_SCORE, default 3
	Opus   int // CLAUDEQ_ROUTING_OPUS_SCORE, default 7
}

// DefaultThresholds are the thresholds the labelled prompt set was checked
// with.
func DefaultThresholds() Thresholds { return Thresholds{Sonnet: 3, Opus: 7} }

// Validate reports thresholds that cannot order the tiers.
func (t Thresholds) Validate() error {
	if t.Sonnet < 1 || t.Opus <= t.Sonnet {
		return fmt.Errorf("routing thresholds: want 1 ≤ sonnet (%d) < opus (%d)", t.Sonnet, t.Opus)
	}
	return nil
}

// Scoring weights.
const (
	maxReasoning = 6 // cap on the points of reasoning words
	maxSimple    = 2 // cap on the points taken off by simple-task words
)

var (
	fence    = regexp.MustCompile("(?m)^\\s*```")
	listItem = regexp.MustCompile(`(?m)^\s*(?:[-*•]|\d{1,2}[.)])\s+\S`)
	codeLine = regexp.MustCompile(`(?m)(?:^\s*(?:func|def|class|import|package|public|private|return|for|while|if)\b.*$|[;{}]\s*$)`)
)

type marker struct {
	word   string
	points int
	re     *regexp.Regexp
}

func markers(points int, words ...string) []marker {
	out := make([]marker, len(words))
	for i, w := range words {
		out[i] = marker{word: w, points: points, re: regexp.MustCompile(`\b` + regexp.QuoteMeta(w) + `\b`)}
	}
	return out
}

// reasoningWords signal multi-step thinking; simpleWords signal a lookup
// or a mechanical transformation.
var (
	reasoningWords = append(markers(2,
		"prove", "proof", "step by step", "step-by-step", "derive", "analyze", "analyse", "compare",
		"trade-off", "trade-offs", "tradeoffs", "architecture", "design a", "design an", "optimize", "optimise",
		"debug", "root cause", "refactor", "evaluate", "critique", "rigorous", "formally", "algorithm",
		"complexity", "strategy", "implications", "counterexample", "theorem", "implement", "function that", "sql"),
		markers(1, "why", "explain", "how does", "how do", "pros and cons", "reason", "plan", "review", "improve",
			"difference between", "versus", "vs", "draft", "write a", "compose", "summarize", "summarise",
			"regular expression", "regex", "unit tests", "with tests", "essay")...)
	simpleWords = markers(1,
		"translate", "what is the capital", "define", "definition of", "spell", "convert", "fix the typo", "typo",
		"yes or no", "one word", "classify", "extract", "rephrase", "reword", "synonym", "tl;dr", "one sentence",
		"what time", "how many days", "say hello", "thank")
)

// Score rates how demanding req looks, ≥ 0, with one reason per
// contribution ("code blocks: 2 (+3)"). It reads the system prompt, every
// message's text, tools, thinking and max_tokens; the model field is
// ignored.
func Score(req claudeq.MessageRequest) (int, []string) {
	var text strings.Builder
	collect(&text, req.System)
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(req.Messages, &msgs)
	images := 0
	for _, m := range msgs {
		images += collect(&text, m.Content)
		text.WriteByte('\n')
	}
	s := text.String()
	lower := strings.ToLower(s)

	score := 0
	var reasons []string
	add := func(points int, format string, args ...any) {
		if points == 0 {
			return
		}
		score += points
		reasons = append(reasons, fmt.Sprintf(format+" (%+d)", append(args, points)...))
	}

	// Length, in estimated tokens (~4 characters each).
	tokens := (utf8.RuneCountInString(s) + 3) / 4
	switch {
	case tokens >= 8000:
		add(4, "long prompt: ~%d tokens", tokens)
	case tokens >= 2000:
		add(3, "long prompt: ~%d tokens", tokens)
	case tokens >= 600:
		add(2, "medium prompt: ~%d tokens", tokens)
	case tokens >= 150:
		add(1, "prompt of ~%d tokens", tokens)
	}

	// Code.
	if blocks := len(fence.FindAllStringIndex(s, -1)) / 2; blocks > 0 {
		add(min(blocks+1, 3), "code blocks: %d", blocks)
	} else if lines := len(codeLine.FindAllStringIndex(s, -1)); lines >= 3 {
		add(1, "code-like lines: %d", lines)
	}

	// Structure: lists and several questions.
	// A list of three or more items is usually a set of requirements.
	if items := len(listItem.FindAllStringIndex(s, -1)); items >= 3 {
		add(2, "list of %d items", items)
	}
	if q := asks(s); q >= 4 {
		add(2, "%d questions or requests", q)
	} else if q >= 2 {
		add(1, "%d questions or requests", q)
	}

	// Reasoning and simple-task words, each counted once.
	var found []string
	points := 0
	for _, m := range reasoningWords {
		if m.re.MatchString(lower) {
			found = append(found, m.word)
			points += m.points
		}
	}
	if points > 0 {
		add(min(points, maxReasoning), "reasoning words: %s", strings.Join(found, ", "))
	}
	found, points = nil, 0
	for _, m := range simpleWords {
		if m.re.MatchString(lower) {
			found = append(found, m.word)
			points += m.points
		}
	}
	if points > 0 {
		add(-min(points, maxSimple), "simple-task words: %s", strings.Join(found, ", "))
	}

	// Requested output size.
	switch {
	case req.MaxTokens >= 32000:
		add(3, "max_tokens %d", req.MaxTokens)
	case req.MaxTokens >= 16000:
		add(2, "max_tokens %d", req.MaxTokens)
	case req.MaxTokens >= 4096:
		add(1, "max_tokens %d", req.MaxTokens)
	case req.MaxTokens > 0 && req.MaxTokens <= 256:
		add(-1, "max_tokens %d", req.MaxTokens)
	}

	// Tools, thinking, conversation length, images.
	if t := bytes.TrimSpace(req.Tools); len(t) > 2 && !bytes.Equal(t, []byte("null")) {
		add(1, "tools")
	}
	if thinkingOn(req.Thinking) {
		add(3, "extended thinking requested")
	}
	if len(msgs) >= 6 {
		add(1, "%d-message conversation", len(msgs))
	}
	if images > 0 {
		add(1, "%d images", images)
	}
	return max(score, 0), reasons
}

var (
	sentence = regexp.MustCompile(`[^.?!\n]+[.?!]?`)
	askVerbs = map[string]bool{"explain": true, "describe": true, "compare": true, "list": true, "show": true,
		"write": true, "give": true, "tell": true, "outline": true, "suggest": true, "propose": true, "recommend": true}
)

// asks counts the questions and requests in s: sentences that end with a
// question mark or start with an asking verb ("Explain how…").
func asks(s string) int {
	n := 0
	for _, sen := range sentence.FindAllString(s, -1) {
		sen = strings.TrimSpace(sen)
		if strings.HasSuffix(sen, "?") {
			n++
			continue
		}
		first, _, _ := strings.Cut(sen, " ")
		if askVerbs[strings.ToLower(first)] {
			n++
		}
	}
	return n
}

// thinkingOn reports whether a thinking parameter enables thinking.
func thinkingOn(raw json.RawMessage) bool {
	var t struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &t) != nil {
		return false
	}
	return t.Type != "" && t.Type != "disabled"
}

// collect appends the text of a content value (string or blocks) to b and
// returns the number of image blocks.
func collect(b *strings.Builder, raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		b.WriteString(s)
		b.WriteByte('\n')
		return 0
	}
	var blocks []struct {
		Type    string          `json:"type"`
		Text    string          `json:"text"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &blocks) != nil {
		return 0
	}
	images := 0
	for _, bl := range blocks {
		switch bl.Type {
		case "text":
			b.WriteString(bl.Text)
			b.WriteByte('\n')
		case "tool_result":
			images += collect(b, bl.Content)
		case "image", "document":
			images++
		}
	}
	return images
}

// Choose maps a score to a tier: opus from t.Opus, sonnet from t.Sonnet,
// else haiku. capTier, the caller's key tier, caps the result when it is a
// tier name (haiku, sonnet, opus); any other value ("", "standard") caps
// nothing. The reason is one sentence for logs and the response header.
func Choose(score int, t Thresholds, capTier string) (tier, reason string) {
	switch {
	case score >= t.Opus:
		tier, reason = TierOpus, fmt.Sprintf("score %d ≥ opus threshold %d", score, t.Opus)
	case score >= t.Sonnet:
		tier, reason = TierSonnet, fmt.Sprintf("score %d ≥ sonnet threshold %d", score, t.Sonnet)
	default:
		tier, reason = TierHaiku, fmt.Sprintf("score %d < sonnet threshold %d", score, t.Sonnet)
	}
	capTier = strings.ToLower(strings.TrimSpace(capTier))
	if c, ok := tierRank[capTier]; ok && tierRank[tier] > c {
		reason += fmt.Sprintf("; capped at %s by the key's tier (wanted %s)", capTier, tier)
		tier = capTier
	}
	return tier, reason
}

// Decision is a routing result.
type Decision struct {
	Tier    string   `json:"tier"`
	Score   int      `json:"score"`
	Reason  string   `json:"reason"`
	Reasons []string `json:"reasons"`
}

// Route scores req and chooses its tier.
func Route(req claudeq.MessageRequest, t Thresholds, capTier string) Decision {
	score, reasons := Score(req)
	tier, reason := Choose(score, t, capTier)
	return Decision{Tier: tier, Score: score, Reason: reason, Reasons: reasons}
}

// Header is the decision as one header value, e.g.
// "sonnet; score 5 ≥ sonnet threshold 3; code blocks: 1 (+2), reasoning words: compare (+2), max_tokens 4096 (+1)".
// Non-ASCII characters are replaced so that the value is a valid header.
func (d Decision) Header() string {
	s := d.Tier + "; " + d.Reason
	if len(d.Reasons) > 0 {
		s += "; " + strings.Join(d.Reasons, ", ")
	}
	s = strings.ReplaceAll(s, "≥", ">=")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
