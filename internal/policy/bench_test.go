package policy

import (
	"strings"
	"testing"
)

// benchText is prose with a few numbers, code and addresses, repeated to
// about 1 MiB: the largest prompt the api accepts by default.
var benchText = strings.Repeat("Please summarise order 12345678 for jane.doe@example.com; "+
	"the card 4111 1111 1111 1111 was charged on 2025-01-02. `ssh git@github.com` and SSN 123-45-6789. "+
	"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\n", 1<<20/260)

func BenchmarkDetect(b *testing.B) {
	p := Default()
	b.SetBytes(int64(len(benchText)))
	for b.Loop() {
		_ = p.Detect(benchText)
	}
}

func BenchmarkRedact(b *testing.B) {
	p := Default()
	b.SetBytes(int64(len(benchText)))
	for b.Loop() {
		_, _, _ = p.Apply(benchText, Redact)
	}
}

func BenchmarkDetectClean(b *testing.B) {
	text := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 1<<20/57)
	p := Default()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = p.Detect(text)
	}
}
