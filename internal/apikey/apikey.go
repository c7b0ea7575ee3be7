// Package apikey makes and checks claudeq API keys. A key looks like
// "cqk_" + 40 base62 characters + a 6-character base62 CRC-32 checksum, so
// that a typo is refused without a database lookup and secret scanners can
// recognise leaked keys. Only the SHA-256 of a key is ever stored.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"math/big"
	"strings"
)

// Prefix starts every key claudeq generates.
const Prefix = "cqk_"

const (
	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	bodyLen  = 40
	sumLen   = 6
)

// New returns a fresh random key and its id (a non-secret handle for lists
// and revocation).
func New() (key, id string) {
	body := random(bodyLen)
	return Prefix + body + checksum(body), "key_" + random(12)
}

func random(n int) string {
	var b strings.Builder
	max := big.NewInt(int64(len(alphabet)))
	for range n {
		i, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		b.WriteByte(alphabet[i.Int64()])
	}
	return b.String()
}

func checksum(body string) string {
	n := uint64(crc32.ChecksumIEEE([]byte(body)))
	out := make([]byte, sumLen)
	for i := sumLen - 1; i >= 0; i-- {
		out[i] = alphabet[n%62]
		n /= 62
	}
	return string(out)
}

// WellFormed reports whether key could be valid: a key with our prefix must
// have the right length, alphabet and checksum. Keys without the prefix
// (claudeq dev's CLAUDEQ_DEV_API_KEY may be any string) are left to the
// lookup.
func WellFormed(key string) bool {
	if !strings.HasPrefix(key, Prefix) {
		return key != "" && len(key) <= 256
	}
	rest := key[len(Prefix):]
	if len(rest) != bodyLen+sumLen {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(alphabet, rest[i]) < 0 {
			return false
		}
	}
	return checksum(rest[:bodyLen]) == rest[bodyLen:]
}

// Hash returns the hex SHA-256 of key, the only form that is stored.
func Hash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// Display returns the first characters of key, safe to show in lists.
func Display(key string) string {
	if len(key) > 10 {
		return key[:10] + "…"
	}
	return "…"
}
