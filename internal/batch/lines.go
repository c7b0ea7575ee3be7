package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
)

// customID is the custom_id syntax of the Message Batches API.
var customID = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ReadLines reads the JSONL input of `claudeq batch submit` and returns
// each line as an Anthropic batch request object {"custom_id", "params"}.
// A line is either {"custom_id", "params"} or the simple form {"custom_id",
// "prompt", "system", "model", "max_tokens"}, whose model and max_tokens
// default to model and maxTokens; custom_id defaults to "line-N". Blank
// lines are skipped; the first bad line is an error naming path:line.
func ReadLines(r io.Reader, path, model string, maxTokens int) ([]json.RawMessage, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var out []json.RawMessage
	seen := map[string]int{}
	for n := 1; sc.Scan(); n++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, n)
		var line struct {
			CustomID  *string         `json:"custom_id"`
			Params    json.RawMessage `json:"params"`
			Prompt    *string         `json:"prompt"`
			System    string          `json:"system"`
			Model     string          `json:"model"`
			MaxTokens *int            `json:"max_tokens"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&line); err != nil {
			return nil, fmt.Errorf("%s: %v (want {\"custom_id\", \"params\"} or {\"custom_id\", \"prompt\", \"model\", \"max_tokens\"})", where, err)
		}
		id := fmt.Sprintf("line-%d", n)
		if line.CustomID != nil {
			id = *line.CustomID
		}
		if !customID.MatchString(id) {
			return nil, fmt.Errorf("%s: custom_id %q must be 1 to 64 characters of letters, digits, _ and -", where, id)
		}
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("%s: custom_id %q is used before, on line %d; custom ids must be unique", where, id, first)
		}
		seen[id] = n
		var params json.RawMessage
		switch {
		case len(line.Params) > 0 && (line.Prompt != nil || line.Model != "" || line.MaxTokens != nil || line.System != ""):
			return nil, fmt.Errorf("%s: give params, or prompt/model/max_tokens/system, not both", where)
		case len(line.Params) > 0:
			// The api refuses a whole batch for one request whose params
			// are not an object: refuse the line here, before any part of
			// the input is submitted.
			if line.Params[0] != '{' {
				return nil, fmt.Errorf("%s: params must be a JSON object (a Messages API request)", where)
			}
			params = line.Params
		case line.Prompt != nil:
			m, mt := model, maxTokens
			if line.Model != "" {
				m = line.Model
			}
			if line.MaxTokens != nil {
				mt = *line.MaxTokens
			}
			p := map[string]any{"model": m, "max_tokens": mt,
				"messages": []map[string]string{{"role": "user", "content": *line.Prompt}}}
			if line.System != "" {
				p["system"] = line.System
			}
			params, _ = json.Marshal(p)
		default:
			return nil, fmt.Errorf("%s: no params and no prompt", where)
		}
		obj, _ := json.Marshal(struct {
			CustomID string          `json:"custom_id"`
			Params   json.RawMessage `json:"params"`
		}{id, params})
		out = append(out, obj)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no requests", path)
	}
	return out, nil
}
