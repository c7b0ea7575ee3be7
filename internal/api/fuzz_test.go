package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// FuzzDecodeChat feeds arbitrary bodies to the strict decoder and the chat
// validation: never a panic, and every refusal is a caller error.
func FuzzDecodeChat(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"hi"}`, `{"prompt":"hi"} x`, `null`, `[]`, `{"messages":[{"role":"user","content":"a"}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"system":[{"type":"text","text":"s"}]}`,
		"{\"prompt\":\"\xff\"}", `{"max_tokens":"1"}`, `{"prompt":1e400}`, `{"metadata":{"a":{"b":[1,2,{"c":null}]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b chatBody
		err := decodeStrict(body, &b)
		if err != nil {
			if claudeq.ErrorKind(err) != claudeq.KindInvalidRequest {
				t.Fatalf("decode error of kind %v: %v", claudeq.ErrorKind(err), err)
			}
			return
		}
		if len(b.Messages) > 0 {
			if c, err := checkMessages(b.Messages); err == nil && !json.Valid(c) {
				t.Fatalf("canonical messages are not JSON: %s", c)
			} else if err != nil && claudeq.ErrorKind(err) != claudeq.KindInvalidRequest {
				t.Fatalf("messages error of kind %v", claudeq.ErrorKind(err))
			}
		}
		if _, err := checkSystem(b.System); err != nil && claudeq.ErrorKind(err) != claudeq.KindInvalidRequest {
			t.Fatalf("system error of kind %v", claudeq.ErrorKind(err))
		}
	})
}

// FuzzCredential parses arbitrary Authorization and x-api-key headers: never
// a panic, a refusal is always an authentication error, and an accepted key
// is the trimmed token.
func FuzzCredential(f *testing.F) {
	for _, s := range []string{"Bearer cqk_x", "bearer  k ", "Basic dXNlcjpwYXNz", "Bearer", "", "Token a b", "Bearer \x00"} {
		f.Add(s, "")
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, auth, xkey string) {
		r, _ := http.NewRequest("GET", "/", nil)
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		if xkey != "" {
			r.Header["X-Api-Key"] = []string{xkey}
		}
		k, err := credential(r)
		if err != nil {
			if claudeq.ErrorKind(err) != claudeq.KindAuthentication {
				t.Fatalf("kind %v", claudeq.ErrorKind(err))
			}
			return
		}
		if k == "" || k != strings.TrimSpace(k) {
			t.Fatalf("accepted key %q", k)
		}
	})
}
