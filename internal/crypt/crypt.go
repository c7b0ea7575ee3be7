// Package crypt encrypts data at rest (prompts, responses, conversation
// turns) with AES-256-GCM under a key ring.
//
// A ring is configured as CLAUDEQ_ENCRYPTION_KEYS="kid1:base64key,kid2:base64key":
// every key is 32 random bytes in standard or URL-safe base64 (padded or
// not; GenerateKey makes one), a kid is 1–32 characters of [A-Za-z0-9_.-].
// The first key is the current one and encrypts; every key decrypts. A
// ciphertext is the string "enc:v1:<kid>:<base64url(nonce ‖ sealed)>", so it
// names the key that made it: to rotate, put a new key first and keep the
// old ones after it; old records stay readable, new ones use the new key, and
// NeedsRotation tells a re-encryption sweep which records still use an old
// one. Drop an old key only once nothing is encrypted under it.
//
// Each Encrypt uses a fresh random 96-bit nonce. The NIST bound for random
// nonces is 2^32 encryptions per key; rotate well before that (a busy
// gateway writing 100 encrypted fields a second reaches it in about 1.4
// years).
//
// The additional data (aad) is authenticated but not stored: pass something
// that ties a ciphertext to its place, such as "jobs/<id>/result", so that a
// ciphertext copied into another record or field fails to decrypt.
//
// A Ring is immutable and safe for concurrent use.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// Prefix starts every ciphertext of format version 1.
const Prefix = "enc:v1:"

// KeySize is the size of a key in bytes (AES-256).
const KeySize = 32

// Errors returned by Decrypt; test them with errors.Is.
var (
	// ErrFormat: the string is not an "enc:v1:" ciphertext.
	ErrFormat = errors.New("crypt: not a valid enc:v1 ciphertext")
	// ErrUnknownKey: the ciphertext names a kid that is not in the ring.
	ErrUnknownKey = errors.New("crypt: ciphertext key is not in the key ring")
	// ErrAuth: the ciphertext, its key or its additional data does not
	// match (tampered, wrong key material, or wrong aad).
	ErrAuth = errors.New("crypt: message authentication failed")
)

var kidRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// Ring holds the keys. The zero value is not usable; use ParseKeys.
type Ring struct {
	current string
	ids     []string
	aeads   map[string]cipher.AEAD
}

// ParseKeys parses a key ring spec, "kid1:base64key,kid2:base64key", the
// first key being the current one. Whitespace around entries is ignored; an
// empty spec, a duplicate kid or a key that is not 32 bytes is an error. The
// error never contains key material.
func ParseKeys(spec string) (*Ring, error) {
	r := &Ring{aeads: map[string]cipher.AEAD{}}
	var errs []error
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		kid, b64, ok := strings.Cut(entry, ":")
		kid, b64 = strings.TrimSpace(kid), strings.TrimSpace(b64)
		if !ok || b64 == "" {
			errs = append(errs, fmt.Errorf("crypt: key %d: want kid:base64key", i+1))
			continue
		}
		if !kidRE.MatchString(kid) {
			errs = append(errs, fmt.Errorf("crypt: key %d: kid must be 1-32 of [A-Za-z0-9_.-]", i+1))
			continue
		}
		if _, dup := r.aeads[kid]; dup {
			errs = append(errs, fmt.Errorf("crypt: key %q appears twice", kid))
			continue
		}
		key, err := decodeKey(b64)
		if err != nil {
			errs = append(errs, fmt.Errorf("crypt: key %q: %w", kid, err))
			continue
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("crypt: key %q: %w", kid, err))
			continue
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			errs = append(errs, fmt.Errorf("crypt: key %q: %w", kid, err))
			continue
		}
		if r.current == "" {
			r.current = kid
		}
		r.ids = append(r.ids, kid)
		r.aeads[kid] = aead
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if r.current == "" {
		return nil, errors.New("crypt: no keys: want kid1:base64key[,kid2:base64key…]")
	}
	return r, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("key is %d bytes, want %d (generate one with crypt.GenerateKey or `openssl rand -base64 32`)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("key is not base64")
}

// GenerateKey returns a new random 32-byte key in standard base64, for the
// "kid:key" spec.
func GenerateKey() string {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it)
	return base64.StdEncoding.EncodeToString(b)
}

// Current returns the kid that Encrypt uses.
func (r *Ring) Current() string { return r.current }

// KeyIDs returns the kids of the ring, current first.
func (r *Ring) KeyIDs() []string { return append([]string(nil), r.ids...) }

// String describes the ring without key material.
func (r *Ring) String() string {
	return fmt.Sprintf("crypt.Ring{current: %s, keys: %s}", r.current, strings.Join(r.ids, ","))
}

// LogValue implements slog.LogValuer: kids only.
func (r *Ring) LogValue() slog.Value {
	return slog.GroupValue(slog.String("current", r.current), slog.String("keys", strings.Join(r.ids, ",")))
}

var b64 = base64.RawURLEncoding

// Encrypt seals plaintext under the current key, authenticating aad too, and
// returns "enc:v1:<kid>:<base64url(nonce ‖ ciphertext ‖ tag)>".
func (r *Ring) Encrypt(plaintext, aad []byte) (string, error) {
	aead := r.aeads[r.current]
	buf := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("crypt: nonce: %w", err)
	}
	buf = aead.Seal(buf, buf[:aead.NonceSize()], plaintext, aad)
	return Prefix + r.current + ":" + b64.EncodeToString(buf), nil
}

// Decrypt opens a ciphertext made by Encrypt under any key of the ring with
// the same aad. Errors wrap ErrFormat, ErrUnknownKey or ErrAuth.
func (r *Ring) Decrypt(s string, aad []byte) ([]byte, error) {
	kid, data, err := split(s)
	if err != nil {
		return nil, err
	}
	aead, ok := r.aeads[kid]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
	}
	raw, err := b64.DecodeString(data)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrFormat
	}
	out, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], aad)
	if err != nil {
		return nil, ErrAuth
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// NeedsRotation reports whether s is a ciphertext under a key other than the
// current one (false for plaintext and malformed strings).
func (r *Ring) NeedsRotation(s string) bool {
	kid, _, err := split(s)
	return err == nil && kid != r.current
}

func split(s string) (kid, data string, err error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return "", "", ErrFormat
	}
	kid, data, ok = strings.Cut(rest, ":")
	if !ok || !kidRE.MatchString(kid) || data == "" {
		return "", "", ErrFormat
	}
	return kid, data, nil
}

// IsEncrypted reports whether s looks like a ciphertext of this package
// ("enc:v1:<kid>:…"). Stores use it to read records written before
// encryption was turned on: such a field is plaintext.
func IsEncrypted(s string) bool {
	_, _, err := split(s)
	return err == nil
}
