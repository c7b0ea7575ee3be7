package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/pricing"
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

// FuzzBatchCreate feeds arbitrary bodies to the Message Batches create
// reader and each request's params to the params validation, as create
// does. Properties: every refusal is a caller error (KindInvalidRequest);
// readRequests hands on at most maxRequests requests, in order, each a JSON
// object, and accepts only a body that is one JSON object; accepted params
// are a fixed point (the body sent upstream validates to itself), and
// redacting it with the default policy keeps it valid.
func FuzzBatchCreate(f *testing.F) {
	for _, s := range []string{
		`{"requests":[{"custom_id":"a","params":{"model":"sonnet","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}}]}`,
		`{"requests":[{"custom_id":"a-1","params":{"model":"claude-haiku-5-5","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"mail bob@corp.example.org"}]}],` +
			`"system":"s","temperature":0.5,"top_p":0.9,"top_k":5,"stop_sequences":["x"],"tools":[{"name":"t","input_schema":{}}],"tool_choice":{"type":"auto"},"thinking":{"type":"enabled","budget_tokens":1024},"metadata":{"user_id":"u"}}},` +
			`{"custom_id":"b_2","params":{"model":"opus","max_tokens":99999,"messages":[]}}]}`,
		`{"requests":[]}`, `{"requests":[{"custom_id":"a","params":{}}, {"custom_id":"a","params":{}}]}`,
		`{"requests":[{"custom_id":null,"params":{}}]}`, `{"requests":[{"params":{}}]}`, `{"requests":[{"custom_id":"a","params":null}]}`,
		`{"requests":[{"custom_id":"a","params":{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"a"}],"stream":true}}]}`,
		`{"requests":[],"requests":[]}`, `{"other":1}`, `{}`, `[]`, `{"requests":[]} x`, `{"requests":[`, "", "\xff",
		`{"requests":[{"custom_id":"a","params":{"model":"sonnet","max_tokens":10,"messages":[{"role":"user","content":"4111 1111 1111 1111"}],"system":[{"type":"text","text":"123-45-6789"}]}}]}`,
	} {
		f.Add([]byte(s))
	}
	cat := claudeq.NewCatalog(pricing.Default().Catalog(), nil)
	s := New(Deps{Models: FixedModels(cat), Options: Options{DefaultMaxTokens: 1024}})
	h := &batchAPI{s: s}
	pol := policy.Default()
	const maxRequests = 8
	f.Fuzz(func(t *testing.T, body []byte) {
		calls := 0
		err := readRequests(bytes.NewReader(body), maxRequests, func(i int, customID string, params json.RawMessage) error {
			if i != calls {
				t.Fatalf("request %d handed on as %d", calls, i)
			}
			calls++
			if p := bytes.TrimSpace(params); len(p) == 0 || p[0] != '{' || !json.Valid(p) {
				t.Fatalf("params %q handed on", params)
			}
			if !customIDRe.MatchString(customID) {
				return claudeq.Errorf(claudeq.KindInvalidRequest, "custom_id")
			}
			req, _, err := h.params(cat, params)
			if err != nil {
				if k := claudeq.ErrorKind(err); k != claudeq.KindInvalidRequest && k != claudeq.KindNotFound {
					t.Fatalf("params error of kind %v: %v", claudeq.ErrorKind(err), err)
				}
				return nil
			}
			out, err := json.Marshal(req)
			if err != nil {
				t.Fatalf("marshal %+v: %v", req, err)
			}
			again, _, err := h.params(cat, out)
			if err != nil {
				t.Fatalf("the upstream body %s of accepted params %s is refused: %v", out, params, err)
			}
			if out2, _ := json.Marshal(again); !bytes.Equal(out, out2) {
				t.Fatalf("params are not a fixed point:\n%s\n%s", out, out2)
			}
			red, _, err := pol.ApplyMessages(out, policy.Redact)
			if err != nil {
				if claudeq.ErrorKind(err) != claudeq.KindContentPolicy {
					t.Fatalf("redact %s: %v", out, err)
				}
				return nil
			}
			if _, _, err := h.params(cat, red); err != nil {
				t.Fatalf("redacted body %s is refused: %v", red, err)
			}
			return nil
		})
		if calls > maxRequests {
			t.Fatalf("%d requests handed on, limit %d", calls, maxRequests)
		}
		if err != nil {
			if claudeq.ErrorKind(err) != claudeq.KindInvalidRequest {
				t.Fatalf("error of kind %v: %v", claudeq.ErrorKind(err), err)
			}
			return
		}
		var whole struct {
			Requests []json.RawMessage `json:"requests"`
		}
		if !json.Valid(body) || json.Unmarshal(body, &whole) != nil || len(whole.Requests) != calls {
			t.Fatalf("accepted %q with %d requests", body, calls)
		}
	})
}
