package batch

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzReadLines feeds arbitrary JSONL to the `claudeq batch submit` reader.
// Properties: an error (naming the input) XOR at least one request; one
// request per non-blank line, in order; each request is exactly
// {"custom_id", "params"} with a unique custom_id of the API's syntax and
// params a JSON object, the shape the api's create reader requires of every
// request (a line it would refuse must fail here, with its line number,
// not after part of the input was submitted).
func FuzzReadLines(f *testing.F) {
	for _, s := range []string{
		`{"custom_id":"a","params":{"model":"sonnet","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}}`,
		"{\"prompt\":\"hi\"}\n\n{\"prompt\":\"there\",\"system\":\"s\",\"model\":\"haiku\",\"max_tokens\":5,\"custom_id\":\"x_1\"}\r\n",
		`{"custom_id":"a","prompt":"x"}` + "\n" + `{"custom_id":"a","prompt":"y"}`,
		`{"custom_id":"a","params":{},"prompt":"x"}`, `{"custom_id":"a b","prompt":"x"}`, `{"custom_id":null,"prompt":null}`,
		`{"params":{}} {"params":{}}`,
		`{"other":1}`, `{}`, `[]`, "", "\n \n", "\xff", `{"prompt":"\ud800"}`, `{"prompt":"x","max_tokens":-1}`,
	} {
		f.Add([]byte(s), "sonnet", 1024)
	}
	f.Fuzz(func(t *testing.T, data []byte, model string, maxTokens int) {
		out, err := ReadLines(bytes.NewReader(data), "in.jsonl", model, maxTokens)
		if err != nil {
			if out != nil || !strings.HasPrefix(err.Error(), "in.jsonl") {
				t.Fatalf("error %v with %d requests", err, len(out))
			}
			return
		}
		if len(out) == 0 {
			t.Fatal("no requests and no error")
		}
		lines := 0
		for _, l := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if lines != len(out) {
			t.Fatalf("%d non-blank lines gave %d requests", lines, len(out))
		}
		seen := map[string]bool{}
		for i, obj := range out {
			var r struct {
				CustomID *string         `json:"custom_id"`
				Params   json.RawMessage `json:"params"`
			}
			dec := json.NewDecoder(bytes.NewReader(obj))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil || r.CustomID == nil {
				t.Fatalf("request %d %s: %v", i, obj, err)
			}
			if !customID.MatchString(*r.CustomID) || seen[*r.CustomID] {
				t.Fatalf("request %d: custom_id %q", i, *r.CustomID)
			}
			seen[*r.CustomID] = true
			if p := bytes.TrimSpace(r.Params); len(p) == 0 || p[0] != '{' {
				t.Fatalf("request %d: params %s are not a JSON object", i, r.Params)
			}
		}
	})
}
