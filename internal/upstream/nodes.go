package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// NodeConfig describes one upstream node of a Fleet. It is a plain value;
// copies are independent.
type NodeConfig struct {
	// Name identifies the node in logs, metrics, Redis keys and the admin
	// API: 1–64 characters of [A-Za-z0-9._-], starting with a letter or
	// digit, unique in a fleet.
	Name string `json:"name" yaml:"name"`
	// URL is the base URL of the Messages API (http or https, with a host,
	// e.g. https://api.anthropic.com). It may carry a path prefix for a
	// proxy, but no credentials, query or fragment.
	URL string `json:"url" yaml:"url"`
	// APIKey is sent as x-api-key. It never prints or marshals (see claudeq.Secret).
	// Empty is allowed for proxies that add the key themselves.
	APIKey claudeq.Secret `json:"api_key" yaml:"api_key"`
	// Weight is the node's relative share under weighted_random and its
	// capacity under least_connections (in-flight ÷ weight). LoadNodes
	// defaults an absent weight to 1. 0 drains the node: no strategy picks
	// it, but Probe and Nodes still report it.
	Weight int `json:"weight" yaml:"weight"`
	// Models is an allow-list of model IDs the node may be sent; empty
	// means every model it lists. An entry ending in "*" matches by prefix
	// ("claude-haiku-*"); an id admits its dated snapshots too.
	Models []string `json:"models,omitempty" yaml:"models,omitempty"`
	// RPM caps requests started per UTC minute on this node, across every
	// process sharing the Redis (0 = unlimited).
	RPM int `json:"rpm,omitempty" yaml:"rpm,omitempty"`
	// TPM caps tokens per UTC minute on this node (0 = unlimited). A
	// request is admitted on an estimate (max_tokens + request bytes ÷ 4),
	// corrected to the real usage when it ends; see Fleet.
	TPM int `json:"tpm,omitempty" yaml:"tpm,omitempty"`
}

// serves reports whether the node's allow-list admits model ("" = any).
func (n *NodeConfig) serves(model string) bool {
	if len(n.Models) == 0 || model == "" {
		return true
	}
	for _, m := range n.Models {
		if p, ok := strings.CutSuffix(m, "*"); ok {
			if strings.HasPrefix(model, p) {
				return true
			}
		} else if base, _ := claudeq.SnapshotBase(model); m == model || m == base {
			return true
		}
	}
	return false
}

// nodeFile is the YAML layout read by LoadNodes.
type nodeFile struct {
	Nodes []rawNode `yaml:"nodes"`
}

type rawNode struct {
	Name   string   `yaml:"name"`
	URL    string   `yaml:"url"`
	APIKey string   `yaml:"api_key"`
	Weight *int     `yaml:"weight"` // pointer: absent means 1, explicit 0 drains
	Models []string `yaml:"models"`
	RPM    int      `yaml:"rpm"`
	TPM    int      `yaml:"tpm"`
}

var (
	envRef   = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)
	nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// LoadNodes reads a YAML file of upstream nodes:
//
//	nodes:
//	  - name: anthropic-1
//	    url: https://api.anthropic.com
//	    api_key: ${ANTHROPIC_API_KEY_1}   # or a literal key
//	    weight: 3                          # default 1; 0 drains the node
//	    models: [claude-sonnet-4-6, "claude-haiku-*"]   # default: all
//	    rpm: 4000                          # default 0 = unlimited
//	    tpm: 2000000                       # default 0 = unlimited
//
// Unknown fields are errors. An api_key written exactly "${NAME}" is read
// through getenv (nil getenv: every variable is unset); an unset or empty
// variable is an error. Every problem in the file is reported at once,
// joined, each naming the node by index and name.
func LoadNodes(path string, getenv func(string) string) ([]NodeConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream nodes: %w", err)
	}
	nodes, err := parseNodes(b, getenv)
	if err != nil {
		return nil, fmt.Errorf("upstream nodes %s: %w", path, err)
	}
	return nodes, nil
}

func parseNodes(b []byte, getenv func(string) string) ([]NodeConfig, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f nodeFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no nodes: the file is empty")
		}
		return nil, err
	}
	var errs []error
	nodes := make([]NodeConfig, len(f.Nodes))
	for i, r := range f.Nodes {
		n := NodeConfig{Name: r.Name, URL: r.URL, Weight: 1, Models: r.Models, RPM: r.RPM, TPM: r.TPM}
		if r.Weight != nil {
			n.Weight = *r.Weight
		}
		switch m := envRef.FindStringSubmatch(r.APIKey); {
		case m != nil:
			v := getenv(m[1])
			if v == "" {
				errs = append(errs, nodeErr(i, r.Name, "api_key: environment variable %s is unset or empty", m[1]))
			}
			n.APIKey = claudeq.Secret(v)
		case strings.Contains(r.APIKey, "${"):
			errs = append(errs, nodeErr(i, r.Name, `api_key: write a variable as the whole value, "${NAME}"`))
		default:
			n.APIKey = claudeq.Secret(r.APIKey)
		}
		nodes[i] = n
	}
	errs = append(errs, validateNodes(nodes)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nodes, nil
}

func nodeErr(i int, name, format string, args ...any) error {
	label := fmt.Sprintf("nodes[%d]", i)
	if name != "" {
		label += fmt.Sprintf(" (%s)", name)
	}
	return fmt.Errorf(label+": "+format, args...)
}

// validateNodes returns every problem with nodes.
func validateNodes(nodes []NodeConfig) []error {
	if len(nodes) == 0 {
		return []error{errors.New("no nodes: configure at least one")}
	}
	var errs []error
	seen := make(map[string]int, len(nodes))
	for i, n := range nodes {
		bad := func(format string, args ...any) { errs = append(errs, nodeErr(i, n.Name, format, args...)) }
		switch {
		case n.Name == "":
			bad("name: required")
		case !nodeName.MatchString(n.Name):
			bad("name: %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", n.Name)
		default:
			if j, dup := seen[n.Name]; dup {
				bad("name: %q already used by nodes[%d]", n.Name, j)
			} else {
				seen[n.Name] = i
			}
		}
		if err := validateURL(n.URL); err != nil {
			bad("url: %v", err)
		}
		if n.Weight < 0 {
			bad("weight: %d: must be 0 or more", n.Weight)
		}
		if n.RPM < 0 {
			bad("rpm: %d: must be 0 (unlimited) or more", n.RPM)
		}
		if n.TPM < 0 {
			bad("tpm: %d: must be 0 (unlimited) or more", n.TPM)
		}
		for j, m := range n.Models {
			if m == "" || m == "*" || strings.Contains(strings.TrimSuffix(m, "*"), "*") {
				bad(`models[%d]: %q: give a model ID, or a prefix ending in "*"`, j, m)
			}
		}
	}
	return errs
}

func validateURL(raw string) error {
	if raw == "" {
		return errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL") // url.Error repeats the input, which may hold a secret
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme must be http or https, not %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return errors.New("host missing")
	case u.User != nil:
		return errors.New("must not contain credentials; use api_key")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	}
	return nil
}
