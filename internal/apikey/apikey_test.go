package apikey

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewKeysAreWellFormedAndDistinct(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		k, id := New()
		require.True(t, strings.HasPrefix(k, Prefix))
		require.Len(t, k, len(Prefix)+bodyLen+sumLen)
		require.True(t, WellFormed(k), k)
		require.True(t, strings.HasPrefix(id, "key_"))
		require.False(t, seen[k])
		seen[k] = true
	}
}

func TestWellFormedRefusesTypos(t *testing.T) {
	t.Parallel()
	k, _ := New()
	flip := func(i int) string {
		b := []byte(k)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{name: "valid", key: k, ok: true},
		{name: "one character changed in the body", key: flip(len(Prefix) + 3), ok: false},
		{name: "one character changed in the checksum", key: flip(len(k) - 1), ok: false},
		{name: "too short", key: k[:len(k)-1], ok: false},
		{name: "bad alphabet", key: k[:10] + "-" + k[11:], ok: false},
		{name: "foreign key of any form is left to the lookup", key: "my dev key!", ok: true},
		{name: "empty", key: "", ok: false},
		{name: "absurdly long", key: strings.Repeat("x", 300), ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.ok, WellFormed(tt.key))
		})
	}
}

func TestHashIsHexSHA256(t *testing.T) {
	t.Parallel()
	require.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Hash(""))
	require.Equal(t, "cqk_abcdef…", Display("cqk_abcdefghijkl"))
}
