package claudeq

import (
	"sort"
	"strings"
)

// Model is one Claude model the gateway may call.
type Model struct {
	ID              string // full id sent upstream, e.g. "claude-sonnet-5-5"
	Tier            string // "haiku", "sonnet" or "opus"
	MaxOutputTokens int    // the largest max_tokens the model accepts
}

// Catalog resolves the model names callers send (aliases and full ids) to
// models. It is read-only after construction and safe for concurrent use.
type Catalog struct {
	models  map[string]Model
	aliases map[string]string
}

// NewCatalog returns a catalog of models with aliases mapping a short name
// (e.g. "sonnet") to a model id.
func NewCatalog(models []Model, aliases map[string]string) *Catalog {
	c := &Catalog{models: make(map[string]Model, len(models)), aliases: make(map[string]string, len(aliases))}
	for _, m := range models {
		c.models[m.ID] = m
	}
	for a, id := range aliases {
		c.aliases[strings.ToLower(a)] = id
	}
	return c
}

// DefaultCatalog is the built-in table of current models (late 2026).
func DefaultCatalog() *Catalog {
	return NewCatalog([]Model{
		{ID: "claude-haiku-5-5", Tier: "haiku", MaxOutputTokens: 64000},
		{ID: "claude-sonnet-5-5", Tier: "sonnet", MaxOutputTokens: 64000},
		{ID: "claude-opus-5-5", Tier: "opus", MaxOutputTokens: 64000},
		{ID: "claude-haiku-4-5", Tier: "haiku", MaxOutputTokens: 64000},
		{ID: "claude-sonnet-4-5", Tier: "sonnet", MaxOutputTokens: 64000},
		{ID: "claude-opus-4-5", Tier: "opus", MaxOutputTokens: 64000},
	}, map[string]string{
		"haiku":  "claude-haiku-5-5",
		"sonnet": "claude-sonnet-5-5",
		"opus":   "claude-opus-5-5",
	})
}

// Resolve returns the model named by name, an alias or a full id.
func (c *Catalog) Resolve(name string) (Model, bool) {
	if id, ok := c.aliases[strings.ToLower(name)]; ok {
		name = id
	}
	m, ok := c.models[name]
	return m, ok
}

// Names returns the aliases and ids the catalog accepts, sorted, for error
// messages and /v1/models.
func (c *Catalog) Names() []string {
	out := make([]string, 0, len(c.models)+len(c.aliases))
	for a := range c.aliases {
		out = append(out, a)
	}
	for id := range c.models {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Models returns every model, sorted by id.
func (c *Catalog) Models() []Model {
	out := make([]Model, 0, len(c.models))
	for _, m := range c.models {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
