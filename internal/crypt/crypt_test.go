package crypt

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func ring(t *testing.T, spec string) *Ring {
	t.Helper()
	r, err := ParseKeys(spec)
	require.NoError(t, err)
	return r
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	r := ring(t, "k1:"+GenerateKey())
	tests := []struct {
		name string
		pt   []byte
		aad  []byte
	}{
		{name: "text", pt: []byte("hello, claude"), aad: []byte("jobs/j1/result")},
		{name: "empty", pt: []byte{}, aad: nil},
		{name: "nil aad", pt: []byte("x"), aad: nil},
		{name: "binary", pt: []byte{0, 1, 2, 255}, aad: []byte{0}},
		{name: "large", pt: []byte(strings.Repeat("a", 1<<20)), aad: []byte("big")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ct, err := r.Encrypt(tt.pt, tt.aad)
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(ct, "enc:v1:k1:"), ct)
			require.True(t, IsEncrypted(ct))
			pt, err := r.Decrypt(ct, tt.aad)
			require.NoError(t, err)
			require.Equal(t, tt.pt, pt)
			ct2, err := r.Encrypt(tt.pt, tt.aad)
			require.NoError(t, err)
			require.NotEqual(t, ct, ct2, "fresh nonce each time")
		})
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := GenerateKey(), GenerateKey()
	before := ring(t, "old:"+oldKey)
	ct, err := before.Encrypt([]byte("secret"), []byte("aad"))
	require.NoError(t, err)

	after := ring(t, "new:"+newKey+", old:"+oldKey)
	require.Equal(t, "new", after.Current())
	require.Equal(t, []string{"new", "old"}, after.KeyIDs())
	pt, err := after.Decrypt(ct, []byte("aad"))
	require.NoError(t, err)
	require.Equal(t, "secret", string(pt))
	require.True(t, after.NeedsRotation(ct))

	ct2, err := after.Encrypt([]byte("secret"), []byte("aad"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(ct2, "enc:v1:new:"))
	require.False(t, after.NeedsRotation(ct2))
	require.False(t, after.NeedsRotation("plain text"))

	// The old ring cannot read what the new key wrote.
	_, err = before.Decrypt(ct2, []byte("aad"))
	require.ErrorIs(t, err, ErrUnknownKey)
}

func TestDecryptFailures(t *testing.T) {
	t.Parallel()
	key := GenerateKey()
	r := ring(t, "k1:"+key)
	ct, err := r.Encrypt([]byte("secret payload"), []byte("jobs/1"))
	require.NoError(t, err)
	// Same kid, other key material.
	wrong := ring(t, "k1:"+GenerateKey())

	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(ct, "enc:v1:k1:"))
	require.NoError(t, err)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return "enc:v1:k1:" + base64.RawURLEncoding.EncodeToString(b)
	}

	tests := []struct {
		name string
		r    *Ring
		ct   string
		aad  string
		want error
	}{
		{name: "wrong key", r: wrong, ct: ct, aad: "jobs/1", want: ErrAuth},
		{name: "aad mismatch", r: r, ct: ct, aad: "jobs/2", want: ErrAuth},
		{name: "tampered nonce", r: r, ct: flip(0), aad: "jobs/1", want: ErrAuth},
		{name: "tampered ciphertext", r: r, ct: flip(14), aad: "jobs/1", want: ErrAuth},
		{name: "tampered tag", r: r, ct: flip(len(raw) - 1), aad: "jobs/1", want: ErrAuth},
		{name: "truncated", r: r, ct: ct[:len(ct)-4], aad: "jobs/1", want: ErrAuth},
		{name: "too short", r: r, ct: "enc:v1:k1:AAAA", aad: "jobs/1", want: ErrFormat},
		{name: "not base64", r: r, ct: "enc:v1:k1:!!!", aad: "jobs/1", want: ErrFormat},
		{name: "unknown kid", r: r, ct: strings.Replace(ct, ":k1:", ":k9:", 1), aad: "jobs/1", want: ErrUnknownKey},
		{name: "plaintext", r: r, ct: "secret payload", aad: "jobs/1", want: ErrFormat},
		{name: "other version", r: r, ct: strings.Replace(ct, "enc:v1:", "enc:v2:", 1), aad: "jobs/1", want: ErrFormat},
		{name: "no data", r: r, ct: "enc:v1:k1:", aad: "jobs/1", want: ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.r.Decrypt(tt.ct, []byte(tt.aad))
			require.ErrorIs(t, err, tt.want)
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	k := GenerateKey()
	raw, err := base64.StdEncoding.DecodeString(k)
	require.NoError(t, err)
	tests := []struct {
		name    string
		spec    string
		current string
		errMsg  string
	}{
		{name: "one", spec: "a:" + k, current: "a"},
		{name: "spaces and trailing comma", spec: " a : " + k + " , b:" + GenerateKey() + ",", current: "a"},
		{name: "url-safe unpadded", spec: "a:" + base64.RawURLEncoding.EncodeToString(raw), current: "a"},
		{name: "empty", spec: "", errMsg: "no keys"},
		{name: "no colon", spec: k, errMsg: "want kid:base64key"},
		{name: "bad kid", spec: "a b:" + k, errMsg: "kid must be"},
		{name: "duplicate", spec: "a:" + k + ",a:" + GenerateKey(), errMsg: "appears twice"},
		{name: "short key", spec: "a:" + base64.StdEncoding.EncodeToString(raw[:16]), errMsg: "16 bytes, want 32"},
		{name: "not base64", spec: "a:%%%", errMsg: "not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseKeys(tt.spec)
			if tt.errMsg != "" {
				require.ErrorContains(t, err, tt.errMsg)
				require.NotContains(t, err.Error(), k, "errors never show key material")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.current, r.Current())
			require.NotContains(t, r.String(), k)
		})
	}
}

func TestIsEncrypted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    string
		want bool
	}{
		{name: "ciphertext", s: "enc:v1:k1:AAAA", want: true},
		{name: "plain", s: "hello", want: false},
		{name: "prefix only", s: "enc:v1:", want: false},
		{name: "no data", s: "enc:v1:k1:", want: false},
		{name: "bad kid", s: "enc:v1:k 1:AAAA", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, IsEncrypted(tt.s))
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	r := ring(t, "k1:"+GenerateKey())
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for range 50 {
				ct, err := r.Encrypt([]byte{byte(i)}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				pt, err := r.Decrypt(ct, nil)
				if err != nil || pt[0] != byte(i) {
					t.Error("round trip failed", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestLoadOrCreateDevKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	spec, created, err := LoadOrCreateDevKey(dir)
	require.NoError(t, err)
	require.True(t, created)
	r := ring(t, spec)
	require.Equal(t, "dev1", r.Current())
	fi, err := os.Stat(filepath.Join(dir, DevKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	ct, err := r.Encrypt([]byte("kept"), nil)
	require.NoError(t, err)
	spec2, created, err := LoadOrCreateDevKey(dir)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, spec, spec2)
	pt, err := ring(t, spec2).Decrypt(ct, nil)
	require.NoError(t, err)
	require.Equal(t, "kept", string(pt))

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary files left behind")

	require.NoError(t, os.Chmod(filepath.Join(dir, DevKeyFile), 0o644))
	_, _, err = LoadOrCreateDevKey(dir)
	require.ErrorContains(t, err, "chmod 600")
}

func TestLoadOrCreateDevKeyConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	specs := make([]string, 8)
	var created sync.Map
	var wg sync.WaitGroup
	for i := range specs {
		wg.Go(func() {
			s, c, err := LoadOrCreateDevKey(dir)
			if err != nil {
				t.Error(err)
			}
			specs[i] = s
			if c {
				created.Store(i, true)
			}
		})
	}
	wg.Wait()
	n := 0
	created.Range(func(any, any) bool { n++; return true })
	require.Equal(t, 1, n, "exactly one caller creates the key")
	for _, s := range specs {
		require.Equal(t, specs[0], s)
	}
}

func TestLoadOrCreateDevKeyBadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, DevKeyFile), []byte("garbage\n"), 0o600))
	_, _, err := LoadOrCreateDevKey(dir)
	require.Error(t, err)
	require.ErrorContains(t, err, "want kid:base64key")
}
