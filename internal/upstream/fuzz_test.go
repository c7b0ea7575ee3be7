package upstream_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/claudeq/claudeq/internal/upstream"
)

var fuzzNodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// FuzzLoadNodes writes fuzzed bytes as a nodes file and loads it, with a
// getenv that knows one variable. Properties: an error XOR at least one
// node; accepted nodes are valid (names unique and well formed, http(s)
// URLs with a host, no negative weight or limit, model patterns with at
// most a trailing *) and written back as YAML load to the same nodes; a
// literal api_key never appears in the error, nor in the nodes printed.
func FuzzLoadNodes(f *testing.F) {
	for _, s := range []string{
		"nodes:\n  - name: anthropic-1\n    url: https://api.anthropic.com\n    api_key: ${ANTHROPIC_API_KEY_1}\n    weight: 3\n" +
			"    models: [claude-sonnet-4-6, \"claude-haiku-*\"]\n    rpm: 4000\n    tpm: 2000000\n" +
			"  - name: proxy.b_2\n    url: http://10.0.0.2:8080/v1\n    api_key: sk-ant-literal-0123456789\n    weight: 0\n",
		`{"nodes":[{"name":"a","url":"https://x.example","api_key":"k"}]}`,
		"nodes: []", "", "nodes:", "nodes: [{}]", "nodes:\n  - name: a\n    url: https://x\n    colour: red\n",
		"nodes:\n  - name: a\n    url: https://u:sk-ant-in-url-0123@x/?q=1#f\n    api_key: sk-ant-other-key-0123456789\n",
		"nodes:\n  - name: -a\n    url: ftp://x\n    api_key: ${UNSET}\n    weight: -1\n    rpm: -1\n    tpm: -1\n    models: ['', '*', 'a*b*']\n",
		"nodes:\n  - {name: a, url: 'https://x', api_key: 'pre-${X}-post'}\n  - {name: a, url: 'https://[::1'}\n",
		"nodes:\n  - name: sk-ant-name-is-a-key-0123\n    url: https://x\n    api_key: sk-ant-name-is-a-key-0123\n    weight: x\n",
		"nodes: &a [*a]", "- a\n- b", "nodes:\n  - name: a\n    url: https://x\n---\nnodes: 5\n",
	} {
		f.Add([]byte(s))
	}
	getenv := func(k string) string {
		if k == "ANTHROPIC_API_KEY_1" {
			return "sk-ant-from-env-0123456789"
		}
		return ""
	}
	// One file per worker process, rewritten by each input: a directory per
	// input would cost more than the parse.
	path := filepath.Join(f.TempDir(), "nodes.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		nodes, err := upstream.LoadNodes(path, getenv)
		if (err == nil) == (len(nodes) == 0) {
			t.Fatalf("LoadNodes = %d nodes, %v", len(nodes), err)
		}
		if err != nil {
			for _, k := range literalKeys(data) {
				if strings.Contains(err.Error(), k) {
					t.Fatalf("api_key %q shows in the error: %v", k, err)
				}
			}
			return
		}

		type raw struct {
			Name   string   `yaml:"name"`
			URL    string   `yaml:"url"`
			APIKey string   `yaml:"api_key"`
			Weight int      `yaml:"weight"`
			Models []string `yaml:"models,omitempty"`
			RPM    int      `yaml:"rpm,omitempty"`
			TPM    int      `yaml:"tpm,omitempty"`
		}
		var out struct {
			Nodes []raw `yaml:"nodes"`
		}
		seen := map[string]bool{}
		var public strings.Builder // what may show: names, URLs, models
		for _, n := range nodes {
			fmt.Fprintln(&public, n.Name, n.URL, n.Models)
		}
		for _, n := range nodes {
			if !fuzzNodeName.MatchString(n.Name) || seen[n.Name] {
				t.Fatalf("node name %q", n.Name)
			}
			seen[n.Name] = true
			if u, err := url.Parse(n.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
				t.Fatalf("node url %q", n.URL)
			}
			if n.Weight < 0 || n.RPM < 0 || n.TPM < 0 {
				t.Fatalf("node %+v", n)
			}
			for _, m := range n.Models {
				if m == "" || m == "*" || strings.Contains(strings.TrimSuffix(m, "*"), "*") {
					t.Fatalf("model pattern %q", m)
				}
			}
			if k := n.APIKey.Reveal(); len(k) >= 8 {
				for _, s := range []string{fmt.Sprint(nodes), fmt.Sprintf("%+v", nodes), fmt.Sprintf("%#v", nodes)} {
					if strings.Contains(s, k) && !strings.Contains(public.String(), k) {
						t.Fatalf("api_key %q shows in %s", k, s)
					}
				}
			}
			out.Nodes = append(out.Nodes, raw{n.Name, n.URL, n.APIKey.Reveal(), n.Weight, n.Models, n.RPM, n.TPM})
		}
		b, err := yaml.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := upstream.LoadNodes(path, nil)
		if err != nil || len(again) != len(nodes) {
			t.Fatalf("nodes written back as\n%s\nload as %d nodes, %v", b, len(again), err)
		}
		for i := range nodes {
			a, n := again[i], nodes[i]
			if a.Name != n.Name || a.URL != n.URL || a.APIKey != n.APIKey || a.Weight != n.Weight || a.RPM != n.RPM || a.TPM != n.TPM ||
				strings.Join(a.Models, "\x00") != strings.Join(n.Models, "\x00") || len(a.Models) != len(n.Models) {
				t.Fatalf("node %d: %#v became %#v (%s)", i, n, a, b)
			}
		}
	})
}

// literalKeys returns the api_key values of data that are at least 8 bytes
// and occur nowhere else in it (a key that is also a name may show).
func literalKeys(data []byte) []string {
	var f struct {
		Nodes []struct {
			APIKey string `yaml:"api_key"`
		} `yaml:"nodes"`
	}
	if yaml.Unmarshal(data, &f) != nil {
		return nil
	}
	var out []string
	for _, n := range f.Nodes {
		if len(n.APIKey) >= 8 && strings.Count(string(data), n.APIKey) == 1 {
			out = append(out, n.APIKey)
		}
	}
	return out
}
