package crypt

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// FuzzParseKeys parses fuzzed CLAUDEQ_ENCRYPTION_KEYS and uses the ring on a
// fuzzed plaintext and a fuzzed stored value. Properties: an error XOR a
// ring whose current key is its first; the error and the ring's String
// never contain key material; what Encrypt makes Decrypt opens with the
// same aad only, and NeedsRotation is false for it; any stored value either
// decrypts or fails with one of the three documented errors.
func FuzzParseKeys(f *testing.F) {
	k1, k2 := strings.Repeat("A", 43)+"=", "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA"
	for _, s := range []struct{ spec, stored string }{
		{"k1:" + k1, "enc:v1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{" new:" + k2 + " , old:" + k1 + " ,", "enc:v1:old:x"},
		{"k1:" + k1 + ",k1:" + k2, "enc:v1:k1:"},
		{"k1:c2hvcnQ=", "plain text"}, {"k1", ""}, {"k1:", ""}, {":" + k1, ""}, {"bad kid!:" + k1, ""}, {"", ""}, {",,", ""},
		{"k1:" + k1 + ":extra", "enc:v1:k1:!!!!"}, {"k:" + strings.Repeat("_", 43), "enc:v1:" + strings.Repeat("a", 33) + ":x"},
	} {
		f.Add(s.spec, []byte("prompt"), s.stored)
	}
	f.Fuzz(func(t *testing.T, spec string, plaintext []byte, stored string) {
		r, err := ParseKeys(spec)
		if (err == nil) == (r == nil) {
			t.Fatalf("ParseKeys = %v, %v", r, err)
		}
		var material []string // the key parts of the spec
		for entry := range strings.SplitSeq(spec, ",") {
			if _, key, ok := strings.Cut(strings.TrimSpace(entry), ":"); ok && len(strings.TrimSpace(key)) >= 8 {
				material = append(material, strings.TrimSpace(key))
			}
		}
		shown := fmt.Sprint(err)
		if r != nil {
			shown += r.String() + fmt.Sprintf("%v %+v", r, r)
		}
		for _, m := range material {
			if strings.Contains(shown, m) && !kidRE.MatchString(m) {
				t.Fatalf("key material %q shows in %q", m, shown)
			}
		}
		if err != nil {
			return
		}
		ids := r.KeyIDs()
		if len(ids) == 0 || ids[0] != r.Current() {
			t.Fatalf("ring %v: current %q", ids, r.Current())
		}

		c, err := r.Encrypt(plaintext, []byte("aad"))
		if err != nil || !IsEncrypted(c) || r.NeedsRotation(c) {
			t.Fatalf("Encrypt = %q, %v", c, err)
		}
		if p, err := r.Decrypt(c, []byte("aad")); err != nil || !bytes.Equal(p, plaintext) || p == nil {
			t.Fatalf("Decrypt(Encrypt(%q)) = %q, %v", plaintext, p, err)
		}
		if _, err := r.Decrypt(c, []byte("other")); !errors.Is(err, ErrAuth) {
			t.Fatalf("Decrypt with another aad: %v", err)
		}

		p, err := r.Decrypt(stored, []byte("aad"))
		switch {
		case err == nil:
			if !IsEncrypted(stored) || p == nil {
				t.Fatalf("Decrypt(%q) = %q", stored, p)
			}
		case errors.Is(err, ErrFormat), errors.Is(err, ErrUnknownKey), errors.Is(err, ErrAuth):
			if p != nil {
				t.Fatalf("Decrypt(%q) = %q, %v", stored, p, err)
			}
			if !IsEncrypted(stored) && !errors.Is(err, ErrFormat) {
				t.Fatalf("Decrypt(%q) of a plaintext: %v", stored, err)
			}
		default:
			t.Fatalf("Decrypt(%q): undocumented error %v", stored, err)
		}
	})
}
