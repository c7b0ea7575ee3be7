package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// decodeStrict decodes a JSON object body into v: invalid UTF-8, null,
// unknown fields, wrong types and trailing data are all invalid requests
// that name what is wrong.
func decodeStrict(body []byte, v any) error {
	if !utf8.Valid(body) {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "request body is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "request body is empty: send a JSON object")
	}
	if trimmed[0] != '{' {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "request body must be a JSON object")
	}
	if err := checkKeys(trimmed, v); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "request body has data after the JSON object")
	}
	return nil
}

// checkKeys refuses what encoding/json would quietly accept in a body's
// top-level object: a key given twice (the last would win, so the body
// could be checked as one model and run as another) and, for a struct, a
// key that matches a field only in another case ("MODEL"). Malformed JSON
// is left to the decoder to report.
func checkKeys(body []byte, v any) error {
	if !gjson.ValidBytes(body) {
		return nil
	}
	fields := jsonFields(reflect.TypeOf(v))
	seen := make(map[string]struct{}, 16)
	var err error
	gjson.ParseBytes(body).ForEach(func(k, _ gjson.Result) bool {
		name := k.Str
		if _, dup := seen[name]; dup {
			err = claudeq.Errorf(claudeq.KindInvalidRequest, "%s: appears more than once", name)
			return false
		}
		seen[name] = struct{}{}
		if _, ok := fields[name]; fields != nil && !ok {
			for f := range fields {
				if strings.EqualFold(f, name) {
					err = claudeq.Errorf(claudeq.KindInvalidRequest, "%s: unknown field (field names are case-sensitive: %s)", name, f)
					return false
				}
			}
		}
		return true
	})
	return err
}

// fieldSets caches jsonFields per struct type.
var fieldSets sync.Map // reflect.Type → map[string]struct{}

// jsonFields returns the JSON names of t's fields (t a struct or a pointer
// to one), or nil for any other type.
func jsonFields(t reflect.Type) map[string]struct{} {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	if f, ok := fieldSets.Load(t); ok {
		return f.(map[string]struct{})
	}
	out := map[string]struct{}{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = sf.Name
		}
		out[name] = struct{}{}
	}
	fieldSets.Store(t, out)
	return out
}

func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return claudeq.Errorf(claudeq.KindInvalidRequest, "malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return claudeq.Errorf(claudeq.KindInvalidRequest, "%s: expected %s, got JSON %s", field, jsonType(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return claudeq.Errorf(claudeq.KindInvalidRequest, "malformed JSON: body ends early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return claudeq.Errorf(claudeq.KindInvalidRequest, "%s: unknown field", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return claudeq.Errorf(claudeq.KindInvalidRequest, "malformed JSON")
}

func jsonType(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "int", "int64", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "slice":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	}
	return goKind
}

// canonical re-encodes raw JSON with sorted object keys and no insignificant
// space, so that equal requests hash equal.
func canonical(raw json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// checkMessages validates a Messages API messages array and returns it in
// canonical form.
func checkMessages(raw json.RawMessage) (json.RawMessage, error) {
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages: expected an array of {role, content} objects")
	}
	if len(msgs) == 0 {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages: at least one message is required")
	}
	for i, m := range msgs {
		if m.Role != "user" && m.Role != "assistant" {
			return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.%d.role: must be \"user\" or \"assistant\"", i)
		}
		c := bytes.TrimSpace(m.Content)
		switch {
		case len(c) == 0 || string(c) == "null":
			return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.%d.content: required", i)
		case c[0] == '"':
			var s string
			if json.Unmarshal(c, &s) != nil || strings.TrimSpace(s) == "" {
				return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.%d.content: must not be empty", i)
			}
		case c[0] == '[':
			var blocks []map[string]json.RawMessage
			if json.Unmarshal(c, &blocks) != nil || len(blocks) == 0 {
				return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.%d.content: expected a string or a non-empty array of content blocks", i)
			}
			for j, b := range blocks {
				if _, ok := b["type"]; !ok {
					return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.%d.content.%d.type: required", i, j)
				}
			}
		default:
			return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.%d.content: expected a string or an array of content blocks", i)
		}
	}
	if msgs[0].Role != "user" {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages.0.role: the first message must be from the user")
	}
	c, err := canonical(raw)
	if err != nil {
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "messages: malformed")
	}
	return c, nil
}

// checkSystem validates a system prompt (a string or text blocks).
func checkSystem(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "system: malformed string")
		}
		if s == "" {
			return nil, nil
		}
	case '[':
		var blocks []struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &blocks); err != nil {
			return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "system: expected a string or an array of text blocks")
		}
		for i, b := range blocks {
			if b.Type != "text" {
				return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "system.%d.type: must be \"text\"", i)
			}
		}
	default:
		return nil, claudeq.Errorf(claudeq.KindInvalidRequest, "system: expected a string or an array of text blocks")
	}
	return canonical(raw)
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

func checkSampling(temperature, topP *float64, topK *int) error {
	if temperature != nil && (*temperature < 0 || *temperature > 1) {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "temperature: must be between 0 and 1")
	}
	if topP != nil && (*topP < 0 || *topP > 1) {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "top_p: must be between 0 and 1")
	}
	if topK != nil && *topK < 0 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "top_k: must not be negative")
	}
	return nil
}

func checkMaxTokens(n *int, def int, m claudeq.Model) (int, error) {
	limit := int(m.MaxOutputTokens)
	if limit <= 0 {
		limit = math.MaxInt // unknown: the upstream's to enforce
	}
	if n == nil {
		return min(def, limit), nil
	}
	if *n <= 0 {
		return 0, claudeq.Errorf(claudeq.KindInvalidRequest, "max_tokens: must be greater than 0")
	}
	if *n > limit {
		return 0, claudeq.Errorf(claudeq.KindInvalidRequest, "max_tokens: %d is above %s's limit of %d", *n, m.ID, m.MaxOutputTokens)
	}
	return *n, nil
}

func checkMetadata(md map[string]any) error {
	if len(md) == 0 {
		return nil
	}
	b, _ := json.Marshal(md)
	if len(b) > 4096 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "metadata: at most 4096 bytes of JSON")
	}
	return nil
}

func checkSession(id string) error {
	if len(id) > 128 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "session_id: at most 128 characters")
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "session_id: control characters are not allowed")
		}
	}
	return nil
}

func fieldErr(field, format string, args ...any) error {
	return claudeq.Errorf(claudeq.KindInvalidRequest, "%s: %s", field, fmt.Sprintf(format, args...))
}
