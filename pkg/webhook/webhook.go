// Package webhook signs and verifies webhooks the Standard Webhooks v1 way
// (https://www.standardwebhooks.com), as claudeq sends them. Receivers import
// it to check that a callback really comes from their claudeq gateway:
//
//	v, err := webhook.NewVerifier(os.Getenv("CLAUDEQ_WEBHOOK_SECRET"))
//	...
//	body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
//	if err := v.Verify(r.Header, body); err != nil {
//		http.Error(w, "bad signature", http.StatusUnauthorized)
//		return
//	}
//
// Every delivery carries three headers: webhook-id (the same on every retry
// of one event: use it to drop duplicates, since delivery is at least once),
// webhook-timestamp (Unix seconds) and webhook-signature, a space-separated
// list of "v1,<base64>" entries: one per secret that is valid at the time,
// so that a receiver keeps verifying while its secret is rotated. Each entry
// is the base64 HMAC-SHA256, keyed with the secret's bytes, of
// "<webhook-id>.<webhook-timestamp>.<raw body>".
//
// The package depends on the standard library only.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every secret claudeq hands out: "whsec_" followed by
// the standard base64 of the key bytes.
const SecretPrefix = "whsec_"

// Key sizes accepted in a secret, in bytes (Standard Webhooks: 24–64).
// NewSecret makes 32-byte keys.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
	secretBytes    = 32
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock, in either direction, before Verify rejects it.
const DefaultTolerance = 5 * time.Minute

// Errors returned (wrapped) by Verify, Sign and NewVerifier. Test with
// errors.Is.
var (
	// ErrMissingHeaders: webhook-id, webhook-timestamp or webhook-signature
	// is missing or empty.
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	// ErrTimestamp: webhook-timestamp is not a Unix time, or is more than
	// the tolerance away from now (a replay, or a skewed clock).
	ErrTimestamp = errors.New("webhook: timestamp invalid or outside tolerance")
	// ErrSignature: no v1 signature in webhook-signature matches the body
	// under any of the verifier's secrets.
	ErrSignature = errors.New("webhook: no matching signature")
	// ErrSecret: a secret is not "whsec_" (optional) + base64 of 24–64
	// bytes.
	ErrSecret = errors.New("webhook: invalid secret")
)

// NewSecret returns a fresh secret: "whsec_" + base64 of 32 random bytes.
// It panics only if the system's random source fails, which crypto/rand
// documents as irrecoverable.
func NewSecret() string {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("webhook: crypto/rand: %v", err))
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// ParseSecret decodes a secret into its key bytes. The "whsec_" prefix is
// optional; the rest must be standard base64 of 24–64 bytes.
func ParseSecret(secret string) ([]byte, error) {
	s := strings.TrimPrefix(strings.TrimSpace(secret), SecretPrefix)
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64 after %q", ErrSecret, SecretPrefix)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return nil, fmt.Errorf("%w: %d bytes, want %d to %d", ErrSecret, len(key), MinSecretBytes, MaxSecretBytes)
	}
	return key, nil
}

// Sign returns the signature entry "v1,<base64 HMAC-SHA256>" of one message
// under secret ("whsec_<base64>"). The webhook-signature header is the
// space-separated list of the entries for every valid secret.
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := ParseSecret(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, ts.Unix(), body)), nil
}

func mac(key []byte, id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verifier checks webhook signatures against one or more secrets (more than
// one while a secret is being rotated: a message signed with any of them is
// accepted).
//
// Set Tolerance and Now, if at all, before the first Verify. A Verifier is
// then safe for concurrent use.
type Verifier struct {
	// Tolerance is how far webhook-timestamp may be from Now; zero means
	// DefaultTolerance (5 minutes).
	Tolerance time.Duration
	// Now returns the current time; nil means time.Now. Tests inject a
	// clock here.
	Now func() time.Time

	keys [][]byte
}

// NewVerifier returns a Verifier that accepts messages signed with any of
// secrets. It fails with ErrSecret if a secret is malformed or none is
// given.
func NewVerifier(secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: no secret given", ErrSecret)
	}
	v := &Verifier{}
	for i, s := range secrets {
		k, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		v.keys = append(v.keys, k)
	}
	return v, nil
}

// Verify checks that body, received with headers, was signed by one of the
// verifier's secrets less than the tolerance ago (or ahead). It returns nil,
// or an error wrapping ErrMissingHeaders, ErrTimestamp or ErrSignature.
// Signature entries of other versions than v1, or malformed ones, are
// skipped. Comparisons take constant time.
func (v *Verifier) Verify(headers http.Header, body []byte) error {
	id := headers.Get(HeaderID)
	tsRaw := headers.Get(HeaderTimestamp)
	sigs := headers.Get(HeaderSignature)
	if id == "" || tsRaw == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not a Unix time in seconds", ErrTimestamp, tsRaw)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	// Compare in seconds, without subtracting ts: absurd timestamps would
	// overflow.
	n, t := now().Unix(), int64(tol/time.Second)
	if ts < n-t || ts > n+t {
		return fmt.Errorf("%w: %s is more than %s away from now (%d)", ErrTimestamp, tsRaw, tol, n)
	}
	want := make([][]byte, len(v.keys))
	for i, k := range v.keys {
		want[i] = mac(k, id, ts, body)
	}
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		for _, w := range want {
			if hmac.Equal(got, w) {
				return nil
			}
		}
	}
	return ErrSignature
}
