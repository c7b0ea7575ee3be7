package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// maxBodyBytes is the Messages API request size limit (32 MB).
const maxBodyBytes = 32 << 20

// apiError is an error answer in Anthropic shape.
type apiError struct {
	status int
	typ    string
	msg    string
}

func invalid(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: errInvalidRequest, msg: fmt.Sprintf(format, args...)}
}

// parsedRequest is the part of a Messages request the simulator needs.
type parsedRequest struct {
	model       string
	maxTokens   int64
	stream      bool
	stops       []string
	inputTokens int64
	hash        uint64 // FNV-1a of the canonical request
	prompt      string // text of the last user message
}

// wireRequest is the top level of a Messages request; fields stay raw so
// that each can be validated with an Anthropic-like message. Unknown fields
// are ignored.
type wireRequest struct {
	Model         json.RawMessage `json:"model"`
	MaxTokens     json.RawMessage `json:"max_tokens"`
	Messages      json.RawMessage `json:"messages"`
	System        json.RawMessage `json:"system"`
	StopSequences json.RawMessage `json:"stop_sequences"`
	Stream        json.RawMessage `json:"stream"`
	Temperature   json.RawMessage `json:"temperature"`
	TopP          json.RawMessage `json:"top_p"`
	TopK          json.RawMessage `json:"top_k"`
	Tools         json.RawMessage `json:"tools"`
	ToolChoice    json.RawMessage `json:"tool_choice"`
	Thinking      json.RawMessage `json:"thinking"`
	Metadata      json.RawMessage `json:"metadata"`
}

type wireMessage struct {
	Role    json.RawMessage `json:"role"`
	Content json.RawMessage `json:"content"`
}

type wireBlock struct {
	Type json.RawMessage `json:"type"`
	Text json.RawMessage `json:"text"`
}

// readBody reads the request body into a pooled buffer (release with
// putBuf), enforcing maxBodyBytes.
func readBody(r *http.Request) (*[]byte, *apiError) {
	buf := getBuf()
	if n := r.ContentLength; n > maxBodyBytes {
		putBuf(buf)
		return nil, tooLarge()
	} else if n > 0 && int64(cap(*buf)) < n+1 {
		*buf = make([]byte, 0, n+1)
	}
	b := *buf
	lr := io.LimitReader(r.Body, maxBodyBytes+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*buf = b
			putBuf(buf)
			return nil, invalid("failed to read request body: %v", err)
		}
	}
	*buf = b
	if len(b) > maxBodyBytes {
		putBuf(buf)
		return nil, tooLarge()
	}
	return buf, nil
}

func tooLarge() *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, typ: errTooLarge, msg: "Request exceeds the maximum allowed number of bytes."}
}

func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || (len(raw) == 4 && string(raw) == "null")
}

// decodeString decodes a JSON string, with a copy-only fast path.
func decodeString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// decodeInt decodes a JSON number with an integral value.
func decodeInt(raw json.RawMessage) (int64, bool) {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	f, ok := decodeNumber(raw)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

func decodeNumber(raw json.RawMessage) (float64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

func isObject(raw json.RawMessage) bool { return len(raw) > 0 && raw[0] == '{' }
func isArray(raw json.RawMessage) bool  { return len(raw) > 0 && raw[0] == '[' }

// parseRequest validates a Messages (or, with countOnly, a count_tokens)
// request body like the Anthropic API does and extracts what the simulator
// needs.
func parseRequest(body []byte, countOnly bool) (parsedRequest, *apiError) {
	var pr parsedRequest
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return pr, invalid("request body is empty; expected a JSON object")
	}
	var wr wireRequest
	if err := json.Unmarshal(body, &wr); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) || trimmed[0] != '{' {
			return pr, invalid("request body must be a JSON object")
		}
		return pr, invalid("There was an error parsing the body of your request as JSON: %v", err)
	}
	if trimmed[0] != '{' {
		return pr, invalid("request body must be a JSON object")
	}

	// model
	if absent(wr.Model) {
		return pr, invalid("model: Field required")
	}
	model, ok := decodeString(wr.Model)
	if !ok {
		return pr, invalid("model: Input should be a valid string")
	}
	pr.model = model

	// max_tokens
	if !countOnly {
		if absent(wr.MaxTokens) {
			return pr, invalid("max_tokens: Field required")
		}
		n, ok := decodeInt(wr.MaxTokens)
		if !ok {
			return pr, invalid("max_tokens: Input should be a valid integer")
		}
		if n < 1 {
			return pr, invalid("max_tokens: Input should be greater than or equal to 1")
		}
		pr.maxTokens = n
	}

	h := fnvSep(fnvString(fnvOffset64, model), 'm')

	// system
	if !absent(wr.System) {
		var err *apiError
		h, err = parseSystem(wr.System, h, &pr)
		if err != nil {
			return pr, err
		}
	}

	// messages
	if absent(wr.Messages) {
		return pr, invalid("messages: Field required")
	}
	if !isArray(wr.Messages) {
		return pr, invalid("messages: Input should be a valid list")
	}
	var msgs []wireMessage
	if err := json.Unmarshal(wr.Messages, &msgs); err != nil {
		return pr, invalid("messages: Input should be a valid list of message objects")
	}
	if len(msgs) == 0 {
		return pr, invalid("messages: at least one message is required")
	}
	for i := range msgs {
		var err *apiError
		h, err = parseMessage(&msgs[i], i, i == len(msgs)-1, h, &pr)
		if err != nil {
			return pr, err
		}
	}

	// stop_sequences
	if !absent(wr.StopSequences) {
		if err := json.Unmarshal(wr.StopSequences, &pr.stops); err != nil {
			return pr, invalid("stop_sequences: Input should be a valid list of strings")
		}
		for i, ss := range pr.stops {
			if len(bytes.TrimSpace([]byte(ss))) == 0 {
				return pr, invalid("stop_sequences.%d: each stop sequence must contain non-whitespace", i)
			}
		}
	}

	// stream
	if !absent(wr.Stream) {
		switch string(wr.Stream) {
		case "true":
			pr.stream = true
		case "false":
		default:
			return pr, invalid("stream: Input should be a valid boolean")
		}
	}

	if err := checkRange("temperature", wr.Temperature, 0, 1); err != nil {
		return pr, err
	}
	if err := checkRange("top_p", wr.TopP, 0, 1); err != nil {
		return pr, err
	}
	if !absent(wr.TopK) {
		k, ok := decodeInt(wr.TopK)
		if !ok {
			return pr, invalid("top_k: Input should be a valid integer")
		}
		if k < 0 {
			return pr, invalid("top_k: Input should be greater than or equal to 0")
		}
	}

	// tools
	if !absent(wr.Tools) {
		if err := checkTools(wr.Tools); err != nil {
			return pr, err
		}
		pr.inputTokens += tokensOfLen(len(wr.Tools))
		h = fnvSep(fnvString(h, string(wr.Tools)), 't')
	}
	if !absent(wr.ToolChoice) {
		if err := checkToolChoice(wr.ToolChoice); err != nil {
			return pr, err
		}
	}
	if !absent(wr.Thinking) {
		if err := checkThinking(wr.Thinking, pr.maxTokens, countOnly); err != nil {
			return pr, err
		}
	}
	if !absent(wr.Metadata) {
		var md struct {
			UserID json.RawMessage `json:"user_id"`
		}
		if !isObject(wr.Metadata) || json.Unmarshal(wr.Metadata, &md) != nil {
			return pr, invalid("metadata: Input should be a valid dictionary")
		}
		if !absent(md.UserID) {
			if _, ok := decodeString(md.UserID); !ok {
				return pr, invalid("metadata.user_id: Input should be a valid string")
			}
		}
	}

	pr.hash = h
	return pr, nil
}

func parseSystem(raw json.RawMessage, h uint64, pr *parsedRequest) (uint64, *apiError) {
	if s, ok := decodeString(raw); ok {
		pr.inputTokens += CountTokens(s)
		return fnvSep(fnvString(h, s), 's'), nil
	}
	if !isArray(raw) {
		return h, invalid("system: Input should be a valid string or a list of text blocks")
	}
	var blocks []wireBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return h, invalid("system: Input should be a valid list of text blocks")
	}
	for i, b := range blocks {
		if typ, _ := decodeString(b.Type); typ != "text" {
			return h, invalid("system.%d.type: Input should be 'text'", i)
		}
		text, ok := decodeString(b.Text)
		if !ok {
			return h, invalid("system.%d.text: Field required", i)
		}
		pr.inputTokens += CountTokens(text)
		h = fnvSep(fnvString(h, text), 's')
	}
	return h, nil
}

func parseMessage(m *wireMessage, i int, last bool, h uint64, pr *parsedRequest) (uint64, *apiError) {
	role, _ := decodeString(m.Role)
	switch {
	case absent(m.Role):
		return h, invalid("messages.%d.role: Field required", i)
	case role != "user" && role != "assistant":
		return h, invalid("messages.%d.role: Input should be 'user' or 'assistant'", i)
	}
	if absent(m.Content) {
		return h, invalid("messages.%d.content: Field required", i)
	}
	h = fnvSep(fnvString(h, role), 'r')
	isUser := role == "user"
	emptyErr := func() *apiError {
		return invalid("messages.%d: all messages must have non-empty content except for the optional final assistant message", i)
	}

	if s, ok := decodeString(m.Content); ok {
		if s == "" && (isUser || !last) {
			return h, emptyErr()
		}
		pr.inputTokens += CountTokens(s)
		if isUser {
			pr.prompt = s
		}
		return fnvSep(fnvString(h, s), 'c'), nil
	}
	if !isArray(m.Content) {
		return h, invalid("messages.%d.content: Input should be a valid string or a list of content blocks", i)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(m.Content, &raws); err != nil {
		return h, invalid("messages.%d.content: Input should be a valid list of content blocks", i)
	}
	if len(raws) == 0 && (isUser || !last) {
		return h, emptyErr()
	}
	prompt := ""
	for j, raw := range raws {
		var b wireBlock
		if !isObject(raw) || json.Unmarshal(raw, &b) != nil {
			return h, invalid("messages.%d.content.%d: Input should be a valid dictionary", i, j)
		}
		if absent(b.Type) {
			return h, invalid("messages.%d.content.%d.type: Field required", i, j)
		}
		typ, ok := decodeString(b.Type)
		if !ok {
			return h, invalid("messages.%d.content.%d.type: Input should be a valid string", i, j)
		}
		if typ != "text" {
			pr.inputTokens += tokensOfLen(len(raw))
			h = fnvSep(fnvString(h, string(raw)), 'b')
			continue
		}
		if absent(b.Text) {
			return h, invalid("messages.%d.content.%d.text: Field required", i, j)
		}
		text, ok := decodeString(b.Text)
		if !ok {
			return h, invalid("messages.%d.content.%d.text: Input should be a valid string", i, j)
		}
		if text == "" {
			return h, invalid("messages: text content blocks must be non-empty")
		}
		pr.inputTokens += CountTokens(text)
		h = fnvSep(fnvString(h, text), 'c')
		if isUser {
			if prompt == "" {
				prompt = text
			} else {
				prompt += " " + text
			}
		}
	}
	if isUser {
		pr.prompt = prompt
	}
	return h, nil
}

func checkRange(name string, raw json.RawMessage, lo, hi float64) *apiError {
	if absent(raw) {
		return nil
	}
	f, ok := decodeNumber(raw)
	switch {
	case !ok:
		return invalid("%s: Input should be a valid number", name)
	case f < lo:
		return invalid("%s: Input should be greater than or equal to %g", name, lo)
	case f > hi:
		return invalid("%s: Input should be less than or equal to %g", name, hi)
	}
	return nil
}

func checkTools(raw json.RawMessage) *apiError {
	if !isArray(raw) {
		return invalid("tools: Input should be a valid list")
	}
	var tools []struct {
		Name json.RawMessage `json:"name"`
	}
	if err := json.Unmarshal(raw, &tools); err != nil {
		return invalid("tools: Input should be a valid list of tool definitions")
	}
	for i, t := range tools {
		if absent(t.Name) {
			return invalid("tools.%d.name: Field required", i)
		}
		if name, ok := decodeString(t.Name); !ok || name == "" {
			return invalid("tools.%d.name: String should have at least 1 character", i)
		}
	}
	return nil
}

func checkToolChoice(raw json.RawMessage) *apiError {
	var tc struct {
		Type json.RawMessage `json:"type"`
		Name json.RawMessage `json:"name"`
	}
	if !isObject(raw) || json.Unmarshal(raw, &tc) != nil {
		return invalid("tool_choice: Input should be a valid dictionary")
	}
	typ, _ := decodeString(tc.Type)
	switch typ {
	case "auto", "any", "none":
	case "tool":
		if name, ok := decodeString(tc.Name); !ok || name == "" {
			return invalid("tool_choice.tool.name: Field required")
		}
	default:
		return invalid("tool_choice: Input tag '%s' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'", typ)
	}
	return nil
}

func checkThinking(raw json.RawMessage, maxTokens int64, countOnly bool) *apiError {
	var th struct {
		Type         json.RawMessage `json:"type"`
		BudgetTokens json.RawMessage `json:"budget_tokens"`
	}
	if !isObject(raw) || json.Unmarshal(raw, &th) != nil {
		return invalid("thinking: Input should be a valid dictionary")
	}
	typ, _ := decodeString(th.Type)
	switch typ {
	case "disabled", "adaptive":
	case "enabled":
		if absent(th.BudgetTokens) {
			return invalid("thinking.enabled.budget_tokens: Field required")
		}
		n, ok := decodeInt(th.BudgetTokens)
		if !ok {
			return invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
		}
		if n < 1024 {
			return invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
		}
		if !countOnly && maxTokens <= n {
			return invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size")
		}
	default:
		return invalid("thinking: Input tag '%s' found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'", typ)
	}
	return nil
}
