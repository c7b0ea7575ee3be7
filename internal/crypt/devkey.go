package crypt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DevKeyFile is the file LoadOrCreateDevKey keeps its key ring spec in.
const DevKeyFile = "encryption.keys"

// devKeyID is the kid of the generated development key.
const devKeyID = "dev1"

// LoadOrCreateDevKey returns the key ring spec kept in dir/encryption.keys,
// creating the file with one new key ("dev1:<key>", mode 0600, dir 0700)
// when there is none; created reports whether it did. It is for claudeq dev
// (CLAUDEQ_DATA_DIR), so that a local installation encrypts at rest without
// setup and can still read its data after a restart. Production sets
// CLAUDEQ_ENCRYPTION_KEYS from a secret store instead.
//
// It refuses a key file that others can read or write (mode & 0o077 != 0),
// as ssh does, and one that does not parse. Concurrent callers (two
// processes starting at once) end up with the same key: the file appears
// atomically and only once, and the loser reads the winner's.
func LoadOrCreateDevKey(dir string) (spec string, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("crypt: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, DevKeyFile)
	if _, err := os.Lstat(path); err == nil {
		spec, err := readKeyFile(path)
		return spec, false, err
	}
	// Write a temporary file, then link it into place: the link fails if the
	// file exists, so the key file appears atomically, complete, and only
	// once.
	spec = devKeyID + ":" + GenerateKey()
	tmp, err := os.CreateTemp(dir, DevKeyFile+".tmp*")
	if err != nil {
		return "", false, fmt.Errorf("crypt: create key file in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(spec + "\n")
	merr := tmp.Chmod(0o600)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, merr, serr, cerr); err != nil {
		return "", false, fmt.Errorf("crypt: write key file in %s: %w", dir, err)
	}
	switch err := os.Link(tmp.Name(), path); {
	case err == nil:
		return spec, true, nil
	case errors.Is(err, fs.ErrExist):
		spec, err := readKeyFile(path)
		return spec, false, err
	default:
		return "", false, fmt.Errorf("crypt: create %s: %w", path, err)
	}
}

func readKeyFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("crypt: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("crypt: %s is accessible by others (mode %v); run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("crypt: %w", err)
	}
	spec := strings.TrimSpace(string(b))
	if _, err := ParseKeys(spec); err != nil {
		return "", fmt.Errorf("crypt: %s: %w", path, err)
	}
	return spec, nil
}
