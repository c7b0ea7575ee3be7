package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

func readAll(r io.Reader) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

func asMaxBytes(err error, t **http.MaxBytesError) bool { return errors.As(err, t) }
