package pricing

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Token-count heuristic constants, see EstimateInputTokens.
const (
	// ImageTokens is what one image block is counted as: the most an image
	// costs once the API has scaled it down to ~1.15 megapixels.
	ImageTokens = 1600
	// ToolsOverheadTokens is the tool-use system prompt the API adds when
	// tools are present.
	ToolsOverheadTokens = 350
	// MessageOverheadTokens is counted per message (role and separators).
	MessageOverheadTokens = 4
	// RequestOverheadTokens is counted once per request.
	RequestOverheadTokens = 8
)

// EstimateInputTokens estimates the input tokens of a Messages API request
// body without a tokenizer, for budget reservations and routing. The
// heuristic:
//
//   - text is gathered from system (string or text blocks), every message's
//     content (string, text blocks, tool_use inputs as JSON, tool_result
//     contents, thinking text) and the tools array as raw JSON;
//   - ASCII characters count ¼ token each (the usual ~4 characters per
//     token of English and code), every non-ASCII character a whole token
//     (CJK and other scripts run near one token per character), and the sum
//     is rounded up;
//   - each image block counts ImageTokens; other blocks (documents…) count
//     their raw JSON as text, which overestimates base64 PDFs;
//   - plus MessageOverheadTokens per message, RequestOverheadTokens per
//     request and ToolsOverheadTokens when tools are present.
//
// English prose lands within about ±20 % of the real count. A body that is
// not JSON is counted as text in full. The result is at least 1.
func EstimateInputTokens(body []byte) int64 {
	var req struct {
		System   json.RawMessage `json:"system"`
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Tools json.RawMessage `json:"tools"`
	}
	var c counter
	if err := json.Unmarshal(body, &req); err != nil {
		c.text(body)
		return c.total() + RequestOverheadTokens
	}
	c.content(req.System)
	for _, m := range req.Messages {
		c.content(m.Content)
		c.tokens += MessageOverheadTokens
	}
	if t := bytes.TrimSpace(req.Tools); len(t) > 0 && !bytes.Equal(t, []byte("null")) && !bytes.Equal(t, []byte("[]")) {
		c.text(t)
		c.tokens += ToolsOverheadTokens
	}
	return c.total() + RequestOverheadTokens
}

type counter struct {
	ascii  int64 // ASCII bytes seen, counted ¼ token each
	tokens int64 // whole tokens
}

func (c *counter) total() int64 { return max(1, c.tokens+(c.ascii+3)/4) }

func (c *counter) text(b []byte) {
	for len(b) > 0 {
		if b[0] < utf8.RuneSelf {
			c.ascii++
			b = b[1:]
			continue
		}
		_, n := utf8.DecodeRune(b)
		c.tokens++
		b = b[n:]
	}
}

func (c *counter) str(s string) { c.text([]byte(s)) }

// content counts a content value: a string or an array of blocks.
func (c *counter) content(raw json.RawMessage) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			c.str(s)
			return
		}
	case '[':
		var blocks []json.RawMessage
		if json.Unmarshal(raw, &blocks) == nil {
			for _, b := range blocks {
				c.block(b)
			}
			return
		}
	}
	c.text(raw)
}

func (c *counter) block(raw json.RawMessage) {
	var b struct {
		Type     string          `json:"type"`
		Text     string          `json:"text"`
		Thinking string          `json:"thinking"`
		Name     string          `json:"name"`
		Input    json.RawMessage `json:"input"`
		Content  json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &b) != nil {
		c.text(raw)
		return
	}
	switch b.Type {
	case "text":
		c.str(b.Text)
	case "thinking":
		c.str(b.Thinking)
	case "image":
		c.tokens += ImageTokens
	case "tool_use", "server_tool_use":
		c.str(b.Name)
		c.text(b.Input)
	case "tool_result", "web_search_tool_result":
		c.content(b.Content)
	default:
		c.text(raw)
	}
}
