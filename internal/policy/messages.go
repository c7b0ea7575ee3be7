package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// ApplyMessages applies action to every text of a Messages API request body:
// "system" (a string or an array of text blocks) and the "content" of each
// of "messages" (a string or an array of blocks). In blocks it checks the
// "text" of text blocks, the "content" of tool_result blocks (string or
// blocks, recursively) and the "data" of document blocks whose source is
// {"type":"text"}. It does not look into images, base64 documents, tool_use
// inputs or thinking blocks (redacting those would break their signature).
//
// The result follows Apply: for Block, the first return is nil and err names
// every kind found anywhere in the request; for Redact, it is the body with
// the texts rewritten (the other fields kept as they were, though key order
// may change); for Allow, or when nothing was found, it is body itself,
// unchanged. A body that is not a JSON object, or whose system/messages have
// the wrong shape, is a KindInvalidRequest error.
func (p *Policy) ApplyMessages(body []byte, action Action) ([]byte, Summary, error) {
	return p.applyJSON(body, action, "prompt", []string{"system", "messages"})
}

// ApplyResponse is ApplyMessages for a Messages API response body: it checks
// the text blocks of "content", and a block names the "response".
func (p *Policy) ApplyResponse(body []byte, action Action) ([]byte, Summary, error) {
	return p.applyJSON(body, action, "response", []string{"content"})
}

func (p *Policy) applyJSON(body []byte, action Action, subject string, fields []string) ([]byte, Summary, error) {
	if !action.Valid() {
		_, _, err := p.apply("", action, subject)
		return nil, nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, nil, &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: "policy.ApplyMessages",
			Msg: "request body must be a JSON object", Err: err}
	}
	w := walker{p: p, subject: subject, redact: action == Redact, total: Summary{}}
	changed := false
	for _, f := range fields {
		raw, ok := top[f]
		if !ok {
			continue
		}
		var out json.RawMessage
		var c bool
		var err error
		switch f {
		case "system", "content":
			out, c, err = w.content(raw)
		case "messages":
			out, c, err = w.messages(raw)
		}
		if err != nil {
			return nil, nil, &claudeq.Error{Kind: claudeq.KindInvalidRequest, Op: "policy.ApplyMessages",
				Msg: fmt.Sprintf("%s: %v", f, err)}
		}
		if w.err != nil {
			return nil, w.total, w.err
		}
		if c {
			top[f], changed = out, true
		}
	}
	if len(w.total) == 0 {
		w.total = nil
	}
	if action == Block && len(w.total) > 0 {
		return nil, w.total, BlockError(subject, w.total)
	}
	if !changed {
		return body, w.total, nil
	}
	out, err := marshal(top)
	if err != nil {
		return nil, nil, &claudeq.Error{Kind: claudeq.KindInternal, Op: "policy.ApplyMessages", Err: err}
	}
	return out, w.total, nil
}

// walker visits the texts of a request; it redacts when redact is set and
// only counts otherwise.
type walker struct {
	p       *Policy
	subject string
	redact  bool
	total   Summary
	err     error // a redaction that did not settle
}

func (w *walker) text(s string) (string, bool) {
	if !w.redact {
		w.total.add(Summarize(w.p.Detect(s)))
		return s, false
	}
	out, sum, err := w.p.apply(s, Redact, w.subject)
	w.total.add(sum)
	if err != nil && w.err == nil {
		w.err = err
	}
	return out, out != s
}

func (w *walker) messages(raw json.RawMessage) (json.RawMessage, bool, error) {
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, false, fmt.Errorf("want an array of message objects")
	}
	changed := false
	for i, m := range msgs {
		c, ok := m["content"]
		if !ok {
			continue
		}
		out, ch, err := w.content(c)
		if err != nil {
			return nil, false, fmt.Errorf("message %d: %w", i, err)
		}
		if ch {
			m["content"], changed = out, true
		}
	}
	if !changed {
		return raw, false, nil
	}
	out, err := marshal(msgs)
	return out, err == nil, err
}

// content handles a string or an array of content blocks.
func (w *walker) content(raw json.RawMessage) (json.RawMessage, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return raw, false, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		out, ch := w.text(s)
		if !ch {
			return raw, false, nil
		}
		b, err := marshal(out)
		return b, err == nil, err
	}
	var blocks []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, false, fmt.Errorf("content must be a string or an array of blocks")
	}
	changed := false
	for _, b := range blocks {
		var typ string
		_ = json.Unmarshal(b["type"], &typ)
		switch typ {
		case "text":
			if ch, err := w.stringField(b, "text"); err != nil {
				return nil, false, err
			} else if ch {
				changed = true
			}
		case "tool_result":
			if c, ok := b["content"]; ok {
				out, ch, err := w.content(c)
				if err != nil {
					return nil, false, err
				}
				if ch {
					b["content"], changed = out, true
				}
			}
		case "document":
			var src map[string]json.RawMessage
			if json.Unmarshal(b["source"], &src) != nil || src == nil {
				continue
			}
			var st string
			_ = json.Unmarshal(src["type"], &st)
			if st != "text" {
				continue
			}
			ch, err := w.stringField(src, "data")
			if err != nil {
				return nil, false, err
			}
			if ch {
				out, err := marshal(src)
				if err != nil {
					return nil, false, err
				}
				b["source"], changed = out, true
			}
		}
	}
	if !changed {
		return raw, false, nil
	}
	out, err := marshal(blocks)
	return out, err == nil, err
}

func (w *walker) stringField(m map[string]json.RawMessage, key string) (bool, error) {
	raw, ok := m[key]
	if !ok {
		return false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return false, fmt.Errorf("%s must be a string", key)
	}
	out, ch := w.text(s)
	if !ch {
		return false, nil
	}
	b, err := marshal(out)
	if err != nil {
		return false, err
	}
	m[key] = b
	return true, nil
}

// marshal encodes v without escaping <, > and & (the texts are prompts, not
// HTML) and without the encoder's trailing newline.
func marshal(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
