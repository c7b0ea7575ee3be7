// Package pricing turns token usage into money: a versioned price table per
// model, the cost of a finished call and the worst-case estimate of a call
// before it is made.
//
// All money is integer micro-dollars ([claudeq.Micros]); prices are integer
// micro-dollars per million tokens ([Rate]). Floats appear nowhere, not even
// in the price file: "0.125" is parsed as a decimal, exactly.
//
// # The table
//
// A [Table] maps model ids to one or more price [Version]s, each effective
// from a date; the version whose EffectiveFrom is the latest one not after
// the call's time applies (a call older than every version gets the oldest
// one). The embedded default ([Default]) holds the list prices of December
// 2026 and the built-in model list ([Table.Catalog]: display names, release
// dates, context and output limits), which stands in for a node's GET
// /v1/models before it has been probed; [Load] reads a YAML or JSON file
// that adds to or replaces both.
//
// Every model id has a price ([Table.Resolve]): its own entry; else the
// longest entry it starts with up to a "-" (a dated snapshot such as
// claude-haiku-4-5-20251001 is priced as claude-haiku-4-5); else the dearest
// entry of the family its id names (fable, mythos, opus, sonnet, haiku);
// else the dearest entry of all. The last two are fallbacks, and
// [Priced].Fallback says so. A cost is never zero because a price is
// missing, and a model an upstream serves is never refused for want of one.
//
// # Rounding
//
// Each token class (input, output, cache write 5m, cache write 1h, cache
// read) is priced on its own and rounded up to a whole micro-dollar:
// ceil(tokens × rate × (100 − batch discount %) / (100 × 10⁶)). Rounding up
// per class means a bill is never below the exact price and at most five
// micro-dollars above it.
//
// # Long prompts
//
// A version may carry a long-prompt band (LongPrompt): when a call's prompt
// (input + cache writes + cache reads) is above LongPrompt.AboveTokens, every
// token of that call, output included, is priced at the band's rates. The
// embedded claude-haiku-5-5 uses it: Anthropic's model page lists $0.10 /
// $0.50 (input / output) for prompts up to 100,000 tokens and $0.50 / $2.50,
// with cache writes $0.625 / $1.00 and cache reads $0.05, above that.
//
// Table is immutable after construction and safe for concurrent use.
package pricing
