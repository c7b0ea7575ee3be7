package sim

import (
	"strings"
	"unicode/utf8"
)

// CountTokens is the simulator's token heuristic: ceil(len(utf8 bytes)/4)
// tokens for a piece of text, 0 for the empty string. Input tokens are this
// count summed per piece of text: the system prompt (string or each text
// block), each message's string content or each content block (text blocks
// count their text, other blocks their raw JSON as sent) and the JSON array
// of tool definitions as sent. Output tokens are the count of the generated
// text (at least 1).
func CountTokens(text string) int64 { return tokensOfLen(len(text)) }

func tokensOfLen(n int) int64 { return (int64(n) + 3) / 4 }

// Reply length bounds, in tokens, before max_tokens capping.
const (
	minReplyTokens = 24
	maxReplyTokens = 200
	excerptWords   = 12
	excerptBytes   = 120
)

// fillerWords is the fixed vocabulary of generated replies.
var fillerWords = strings.Fields(`
	the a of and to in is it that for on with as this be are by at from or
	an was not can will which more all one about when there their what some
	so if into than then also these time only other new most such make like
	well over just any after very through where much should because each
	those while system request model token queue worker latency throughput
	response message stream result answer context prompt reply budget cache
	shard replica leader follower node cluster partition retry backoff limit
	window signal event batch buffer channel pipeline schedule deadline
	priority fairness tenant account session upstream downstream gateway
	proxy router balancer health probe metric counter gauge histogram trace
	span log record index journal snapshot checkpoint ledger commit offset
	cursor page chunk frame packet byte kernel thread process memory disk
	network socket connection handshake certificate secret config flag value
	simple clear steady quick careful precise robust gentle quiet bright
	small large early late first last next previous current final partial
	complete consistent durable idle busy ready pending active stale fresh
	stable safe valid known typical useful simulated deterministic
	handle route forward accept reject admit defer drain flush
	measure observe compare verify confirm estimate predict balance shape
	throttle pause resume restart recover replay persist publish consume`)

// capitalWords holds fillerWords with an upper-case first letter.
var capitalWords = func() []string {
	c := make([]string, len(fillerWords))
	for i, w := range fillerWords {
		c[i] = strings.ToUpper(w[:1]) + w[1:]
	}
	return c
}()

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// fnvString folds s into the FNV-1a hash h.
func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// fnvSep folds a separator that cannot occur in text into h.
func fnvSep(h uint64, tag byte) uint64 {
	h ^= 0xff
	h *= fnvPrime64
	h ^= uint64(tag)
	h *= fnvPrime64
	return h
}

// splitmix64 is a tiny deterministic generator for filler words.
type splitmix64 uint64

func (x *splitmix64) next() uint64 {
	*x += 0x9e3779b97f4a7c15
	z := uint64(*x)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// generateText returns the full (uncapped) reply for a request whose
// canonical hash is h and whose last user message text is prompt.
func generateText(h uint64, prompt string) string {
	target := minReplyTokens + int(h%(maxReplyTokens-minReplyTokens+1))
	b := make([]byte, 0, target*4+8)
	b = append(b, "Simulated reply to: "...)
	b = appendExcerpt(b, prompt)
	b = append(b, '.')

	rng := splitmix64(h)
	inSentence := 0 // words left in the current sentence
	for {
		r := rng.next()
		word := fillerWords[r%uint64(len(fillerWords))]
		// +2: the leading space and a possible final period.
		if tokensOfLen(len(b)+len(word)+2) > int64(target) {
			break
		}
		b = append(b, ' ')
		if inSentence == 0 {
			inSentence = 4 + int((r>>32)%10)
			word = capitalWords[r%uint64(len(fillerWords))]
		}
		b = append(b, word...)
		inSentence--
		if inSentence == 0 {
			b = append(b, '.')
		}
	}
	if b[len(b)-1] != '.' {
		b = append(b, '.')
	}
	return string(b)
}

// appendExcerpt appends the first excerptWords words of prompt, separated by
// single spaces, limited to excerptBytes bytes (cut on a rune boundary) and
// without trailing punctuation.
func appendExcerpt(b []byte, prompt string) []byte {
	start := len(b)
	words := 0
	for f := range strings.FieldsSeq(prompt) {
		if words == excerptWords {
			break
		}
		if words > 0 {
			b = append(b, ' ')
		}
		b = append(b, f...)
		words++
		if len(b)-start >= excerptBytes {
			break
		}
	}
	if len(b)-start > excerptBytes {
		cut := start + excerptBytes
		for cut > start && !utf8.RuneStart(b[cut]) {
			cut--
		}
		b = b[:cut]
	}
	for len(b) > start && strings.IndexByte(".,;:!?", b[len(b)-1]) >= 0 {
		b = b[:len(b)-1]
	}
	if len(b) == start {
		b = append(b, "your message"...)
	}
	return b
}

// reply is a generated answer after stop sequences and max_tokens apply.
type reply struct {
	text         string
	stopReason   string
	stopSequence string // "" = null
	outputTokens int64
}

// finish applies stop sequences and the max_tokens cap to the full text.
// A stop sequence wins only if it occurs before the cap.
func finish(full string, stops []string, maxTokens int64) reply {
	out := reply{text: full, stopReason: "end_turn"}
	best := -1
	for _, ss := range stops {
		if i := strings.Index(full, ss); i >= 0 && (best < 0 || i < best) {
			best, out.stopSequence = i, ss
		}
	}
	switch {
	case best >= 0 && tokensOfLen(best) <= maxTokens:
		out.text, out.stopReason = full[:best], "stop_sequence"
	case tokensOfLen(len(full)) > maxTokens:
		cut := int(maxTokens * 4) // < len(full), so no overflow
		for cut > 0 && !utf8.RuneStart(full[cut]) {
			cut--
		}
		out.text, out.stopReason, out.stopSequence = full[:cut], "max_tokens", ""
	default:
		out.stopSequence = ""
	}
	out.outputTokens = max(CountTokens(out.text), 1)
	return out
}
