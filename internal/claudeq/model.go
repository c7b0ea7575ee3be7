package claudeq

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// Model families, in the order of their price: a family name is also the
// alias of the newest served model of the family.
const (
	FamilyHaiku  = "haiku"
	FamilySonnet = "sonnet"
	FamilyOpus   = "opus"
	FamilyMythos = "mythos"
	FamilyFable  = "fable"
)

// Families are the known model families, cheapest first.
var Families = []string{FamilyHaiku, FamilySonnet, FamilyOpus, FamilyMythos, FamilyFable}

// Model is one Claude model, as an upstream node lists it (GET /v1/models)
// or as the built-in list describes it. It is a plain value.
type Model struct {
	ID          string    // sent upstream, e.g. "claude-sonnet-5-5" or "claude-haiku-4-5-20251001"
	DisplayName string    // e.g. "Claude Sonnet 5.5"
	CreatedAt   time.Time // the release date; zero when unknown
	// MaxInputTokens is the model's context window, MaxOutputTokens the
	// largest max_tokens it accepts; 0 when unknown (the upstream decides).
	MaxInputTokens  int64
	MaxOutputTokens int64
}

// Family returns the model's family (FamilyOf its id).
func (m Model) Family() string { return FamilyOf(m.ID) }

// FamilyOf returns the family named in a model id ("opus" for
// "claude-opus-4-8"), or "" when the id names none of Families.
func FamilyOf(id string) string {
	for _, p := range strings.Split(strings.ToLower(id), "-") {
		if slices.Contains(Families, p) {
			return p
		}
	}
	return ""
}

// SnapshotBase returns id without a trailing -YYYYMMDD snapshot date, and
// whether it had one: ("claude-haiku-4-5", true) for
// "claude-haiku-4-5-20251001".
func SnapshotBase(id string) (string, bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 || len(id)-i-1 != 8 {
		return id, false
	}
	for _, c := range id[i+1:] {
		if c < '0' || c > '9' {
			return id, false
		}
	}
	return id[:i], true
}

// version returns the numbers of a model id other than snapshot dates (8
// digits), and how many words it has beyond "claude" and its family: [4 8]
// and 0 for "claude-opus-4-8", [5] for "claude-opus-5", [3 5] for
// "claude-3-5-sonnet-20241022", [4] and 1 for
// "claude-sonnet-4-20250514-v1:0", [4 8] and 1 for "claude-opus-4-8-fast".
func version(id string) (v []int, words int) {
	for _, p := range strings.Split(strings.ToLower(id), "-") {
		n, err := strconv.Atoi(p)
		switch {
		case err == nil && len(p) == 8: // a snapshot date
		case err == nil:
			v = append(v, n)
		case p != "claude" && !slices.Contains(Families, p):
			words++
		}
	}
	return v, words
}

// Newer reports whether a is a newer model than b: a higher version (by
// the numbers in the id, "5-5" above "5" above "4-8"), then the plain
// model before a variant of it ("claude-opus-4-8" before
// "claude-opus-4-8-fast"), then a later release date, then a later
// snapshot date.
func Newer(a, b Model) bool {
	va, wa := version(a.ID)
	vb, wb := version(b.ID)
	if c := slices.Compare(va, vb); c != 0 {
		return c > 0
	}
	if wa != wb {
		return wa < wb
	}
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

// Catalog is the set of models the gateway serves: the union of what its
// upstream nodes list, with aliases. It resolves the model names callers
// send (aliases, ids, dated snapshot ids) to served models. It is
// immutable and safe for concurrent use.
type Catalog struct {
	models []Model // newest first
	byID   map[string]int
	pins   map[string]string // alias → id, from configuration
}

// NewCatalog returns a catalog of models (duplicates by id keep the first).
// pins map an alias (lower case) to a model id: a family name pinned there
// stops resolving to the family's newest model, and any other name
// becomes an alias too.
func NewCatalog(models []Model, pins map[string]string) *Catalog {
	c := &Catalog{byID: make(map[string]int, len(models)), pins: make(map[string]string, len(pins))}
	for _, m := range models {
		if _, dup := c.byID[m.ID]; dup || m.ID == "" {
			continue
		}
		c.byID[m.ID] = 0
		c.models = append(c.models, m)
	}
	slices.SortStableFunc(c.models, func(a, b Model) int {
		switch {
		case Newer(a, b):
			return -1
		case Newer(b, a):
			return 1
		}
		return 0
	})
	for i, m := range c.models {
		c.byID[m.ID] = i
	}
	for a, id := range pins {
		c.pins[strings.ToLower(strings.TrimSpace(a))] = strings.ToLower(strings.TrimSpace(id)) // model ids are lower case
	}
	return c
}

// Resolve returns the served model a caller's name stands for:
//   - an alias pinned by configuration: the pinned id's model;
//   - a family name ("opus"): the family's newest served model;
//   - an id the catalog lists;
//   - an id without a snapshot date whose dated snapshot is listed
//     ("claude-haiku-4-5" when a node lists "claude-haiku-4-5-20251001"):
//     the newest such snapshot;
//   - a dated snapshot id whose undated id is listed: that model, with the
//     dated id the caller asked for (nodes answer the snapshots of the
//     models they list).
//
// Ids are matched exactly (model ids are lower case); aliases in any case.
// ok is false when no served model matches.
func (c *Catalog) Resolve(name string) (Model, bool) {
	name = strings.TrimSpace(name)
	alias := strings.ToLower(name)
	if id, ok := c.pins[alias]; ok {
		if slices.Contains(Families, id) { // pinned to a family: its newest
			return c.newest(id)
		}
		return c.Lookup(id)
	}
	if slices.Contains(Families, alias) {
		return c.newest(alias)
	}
	return c.Lookup(name)
}

// newest returns the family's newest served model.
func (c *Catalog) newest(family string) (Model, bool) {
	for _, m := range c.models { // newest first
		if m.Family() == family {
			return m, true
		}
	}
	return Model{}, false
}

// Serves reports whether a call for id (an id Resolve returned) may go to
// a node with this list: the list has id, or id is a dated snapshot of an
// id it has. An undated id whose only listed form is dated does not match:
// a strict node may not know the undated name.
func (c *Catalog) Serves(id string) bool {
	if _, ok := c.byID[id]; ok {
		return true
	}
	base, dated := SnapshotBase(id)
	_, ok := c.byID[base]
	return dated && ok
}

// Lookup finds a model by id alone (no aliases): listed, a dated snapshot
// of a listed id (returned with the dated id), or an undated id whose
// dated snapshot is listed (the newest such snapshot).
func (c *Catalog) Lookup(id string) (Model, bool) {
	if i, ok := c.byID[id]; ok {
		return c.models[i], true
	}
	if base, dated := SnapshotBase(id); dated {
		if i, ok := c.byID[base]; ok {
			m := c.models[i]
			m.ID = id
			return m, true
		}
		return Model{}, false
	}
	var best *Model
	for i := range c.models {
		if base, dated := SnapshotBase(c.models[i].ID); dated && base == id && (best == nil || c.models[i].ID > best.ID) {
			best = &c.models[i]
		}
	}
	if best != nil {
		return *best, true
	}
	return Model{}, false
}

// Models returns the served models, newest first.
func (c *Catalog) Models() []Model { return slices.Clone(c.models) }

// Len returns the number of served models.
func (c *Catalog) Len() int { return len(c.models) }

// Aliases returns the names Resolve accepts besides ids: the families that
// have a served model and the pinned aliases, sorted.
func (c *Catalog) Aliases() []string {
	var out []string
	for _, f := range Families {
		if _, ok := c.pins[f]; ok {
			continue
		}
		if _, ok := c.Resolve(f); ok {
			out = append(out, f)
		}
	}
	for a := range c.pins {
		if _, ok := c.Resolve(a); ok {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// Pinned returns the id an alias is pinned to, if it is.
func (c *Catalog) Pinned(alias string) (string, bool) {
	id, ok := c.pins[strings.ToLower(strings.TrimSpace(alias))]
	return id, ok
}
