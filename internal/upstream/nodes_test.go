package upstream_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/upstream"
)

const secretKey = "sk-ant-api03-TOPSECRET-0123456789"

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nodes.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadNodes(t *testing.T) {
	t.Parallel()
	p := writeFile(t, `
nodes:
  - name: anthropic-1
    url: https://api.anthropic.com
    api_key: ${ANTHROPIC_KEY_1}
    weight: 3
    models: [claude-sonnet-4-6, "claude-haiku-*"]
    rpm: 4000
    tpm: 2000000
  - name: proxy.eu
    url: http://127.0.0.1:8089/anthropic
    api_key: literal-key
  - name: drained
    url: http://127.0.0.1:8090
    weight: 0
`)
	nodes, err := upstream.LoadNodes(p, env(map[string]string{"ANTHROPIC_KEY_1": secretKey}))
	require.NoError(t, err)
	require.Equal(t, []upstream.NodeConfig{
		{Name: "anthropic-1", URL: "https://api.anthropic.com", APIKey: secretKey, Weight: 3,
			Models: []string{"claude-sonnet-4-6", "claude-haiku-*"}, RPM: 4000, TPM: 2000000},
		{Name: "proxy.eu", URL: "http://127.0.0.1:8089/anthropic", APIKey: "literal-key", Weight: 1},
		{Name: "drained", URL: "http://127.0.0.1:8090", Weight: 0},
	}, nodes)
	require.Equal(t, secretKey, nodes[0].APIKey.Reveal())
}

func TestLoadNodesErrors(t *testing.T) {
	t.Parallel()
	getenv := env(map[string]string{"SET": "x"})
	tests := []struct {
		name string
		file string
		want []string // substrings of the error, all present
	}{
		{name: "empty file", file: "", want: []string{"no nodes: the file is empty"}},
		{name: "empty list", file: "nodes: []\n", want: []string{"no nodes: configure at least one"}},
		{name: "unknown top-level field", file: "nodes: []\nbalancer: rr\n", want: []string{"field balancer not found"}},
		{name: "unknown node field", file: "nodes:\n  - name: a\n    url: http://h\n    wieght: 2\n", want: []string{"field wieght not found"}},
		{name: "not yaml", file: "nodes: [\n", want: []string{"yaml:"}},
		{name: "wrong type", file: "nodes:\n  - name: a\n    url: http://h\n    weight: heavy\n", want: []string{"cannot unmarshal"}},
		{
			name: "every problem at once",
			file: `
nodes:
  - url: http://h
  - name: "bad name!"
    url: ftp://h
  - name: dup
    url: http://
    weight: -1
    rpm: -5
    tpm: -6
  - name: dup
    url: "https://user:pw@h"
    api_key: ${UNSET_VAR}
  - name: e
    url: http://h?x=1
    api_key: sk-${SET}
    models: ["", "*", "a*b*"]
`,
			want: []string{
				"nodes[0]: name: required",
				`nodes[1] (bad name!): name: "bad name!": use 1-64 letters`,
				`nodes[1] (bad name!): url: scheme must be http or https, not "ftp"`,
				"nodes[2] (dup): url: host missing",
				"nodes[2] (dup): weight: -1: must be 0 or more",
				"nodes[2] (dup): rpm: -5",
				"nodes[2] (dup): tpm: -6",
				`nodes[3] (dup): name: "dup" already used by nodes[2]`,
				"nodes[3] (dup): url: must not contain credentials; use api_key",
				"nodes[3] (dup): api_key: environment variable UNSET_VAR is unset or empty",
				"nodes[4] (e): url: must not have a query or fragment",
				`nodes[4] (e): api_key: write a variable as the whole value, "${NAME}"`,
				`nodes[4] (e): models[0]: ""`,
				`nodes[4] (e): models[1]: "*"`,
				`nodes[4] (e): models[2]: "a*b*"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, tt.file)
			nodes, err := upstream.LoadNodes(p, getenv)
			require.Error(t, err)
			require.Nil(t, nodes)
			require.Contains(t, err.Error(), p)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "pw@")
		})
	}

	_, err := upstream.LoadNodes(filepath.Join(t.TempDir(), "missing.yaml"), getenv)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestAPIKeyNeverPrinted(t *testing.T) {
	t.Parallel()
	n := upstream.NodeConfig{Name: "a", URL: "https://h", APIKey: secretKey, Weight: 1}
	j, err := json.Marshal([]upstream.NodeConfig{n})
	require.NoError(t, err)
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("node", "node", n, "key", n.APIKey)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("node", "node", n, "key", n.APIKey)

	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", n), "%+v": fmt.Sprintf("%+v", n), "%#v": fmt.Sprintf("%#v", n),
		"%s": fmt.Sprintf("%s", n.APIKey), "%q": fmt.Sprintf("%q", n.APIKey),
		"pointer %+v": fmt.Sprintf("%+v", &n), "json": string(j), "slog": logBuf.String(),
	}
	for name, out := range outputs {
		require.NotContains(t, out, "TOPSECRET", name)
		require.Contains(t, out, "REDACTED", name)
	}
	require.NotContains(t, fmt.Sprintf("%x", n.APIKey), fmt.Sprintf("%x", secretKey))
	require.Contains(t, string(j), `"api_key":"REDACTED"`)
}
