package pricing

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// Rates are the prices of the five token classes.
type Rates struct {
	Input        Rate `json:"input" yaml:"input"`
	Output       Rate `json:"output" yaml:"output"`
	CacheWrite5m Rate `json:"cache_write_5m" yaml:"cache_write_5m"`
	CacheWrite1h Rate `json:"cache_write_1h" yaml:"cache_write_1h"`
	CacheRead    Rate `json:"cache_read" yaml:"cache_read"`
}

func (r Rates) validate() error {
	for _, c := range []struct {
		name string
		v    Rate
	}{{"input", r.Input}, {"output", r.Output}, {"cache_write_5m", r.CacheWrite5m}, {"cache_write_1h", r.CacheWrite1h}, {"cache_read", r.CacheRead}} {
		// A zero price is far more likely a missing line than a free model,
		// and a silent zero is what this table must never produce.
		if c.v <= 0 {
			return fmt.Errorf("%s: must be a positive price", c.name)
		}
	}
	return nil
}

// LongPrompt is a price band for calls whose prompt (input + cache writes +
// cache reads) is above AboveTokens: every token of such a call, output
// included, is priced at these Rates.
type LongPrompt struct {
	AboveTokens int64 `json:"above_tokens" yaml:"above_tokens"`
	Rates       `yaml:",inline"`
}

// Version is one price list of a model, effective from a date.
type Version struct {
	EffectiveFrom Date `json:"effective_from" yaml:"effective_from"`
	Rates         `yaml:",inline"`
	// BatchDiscountPercent is taken off every token class of Message
	// Batches calls (50 for Anthropic's batch API).
	BatchDiscountPercent int64       `json:"batch_discount_percent" yaml:"batch_discount_percent"`
	LongPrompt           *LongPrompt `json:"long_prompt,omitempty" yaml:"long_prompt,omitempty"`
}

// File is the price file format, in YAML or JSON (see default.yaml).
type File struct {
	// ReplaceDefaults drops the embedded table instead of adding to it.
	ReplaceDefaults bool `json:"replace_defaults,omitempty" yaml:"replace_defaults,omitempty"`
	// DefaultTier and Aliases are no longer read: they are refused with a
	// message saying what replaced them (see New).
	DefaultTier string            `json:"default_tier,omitempty" yaml:"default_tier,omitempty"`
	Aliases     map[string]string `json:"aliases,omitempty" yaml:"aliases,omitempty"`
	// Models map a model id to its price versions.
	Models map[string][]Version `json:"models" yaml:"models"`
	// Catalog is the built-in model list: what is known of a model besides
	// its price. It stands in for a node's GET /v1/models until the node
	// has been probed, or when its list cannot be read.
	Catalog map[string]ModelInfo `json:"catalog,omitempty" yaml:"catalog,omitempty"`
}

// ModelInfo is one model of the built-in list.
type ModelInfo struct {
	DisplayName string `json:"display_name" yaml:"display_name"`
	CreatedAt   Date   `json:"created_at" yaml:"created_at"`
	// MaxInputTokens is the context window, MaxTokens the largest
	// max_tokens; 0 (or absent) when unknown.
	MaxInputTokens  int64 `json:"max_input_tokens,omitempty" yaml:"max_input_tokens,omitempty"`
	MaxOutputTokens int64 `json:"max_tokens,omitempty" yaml:"max_tokens,omitempty"`
}

// Table is a versioned price table and the built-in model list. It is
// immutable and safe for concurrent use.
type Table struct {
	models  map[string][]Version // sorted by EffectiveFrom, ascending
	catalog []claudeq.Model      // the built-in model list, by id
	dearest map[string]string    // family ("" for all models) → its dearest priced id
}

//go:embed default.yaml
var defaultYAML []byte

var defaultTable = sync.OnceValues(func() (*Table, error) { return Parse(defaultYAML) })

// Default returns the embedded price table. It panics if the embedded file
// is broken, which a test guards against.
func Default() *Table {
	t, err := defaultTable()
	if err != nil {
		panic("pricing: embedded default.yaml: " + err.Error())
	}
	return t
}

// Load reads the price file at path (YAML or JSON; JSON is valid YAML) and
// returns the embedded table with the file's entries added: a version with
// the same effective_from as an embedded one replaces it, and a catalog
// entry replaces the embedded one of its id. With replace_defaults: true
// the file stands alone. Unknown fields are errors, and so are aliases and
// default_tier (replaced by CLAUDEQ_MODEL_ALIASES and the family
// fallback). An empty path returns Default().
func Load(path string) (*Table, error) {
	if path == "" {
		return Default(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pricing: %w", err)
	}
	f, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("pricing: %s: %w", path, err)
	}
	var base File
	if !f.ReplaceDefaults {
		base, _ = decode(defaultYAML)
	}
	f, err = merge(base, f)
	if err != nil {
		return nil, fmt.Errorf("pricing: %s: %w", path, err)
	}
	t, err := New(f)
	if err != nil {
		return nil, fmt.Errorf("pricing: %s: %w", path, err)
	}
	return t, nil
}

// Parse builds a table from one price file's contents alone (no merge with
// the embedded table).
func Parse(data []byte) (*Table, error) {
	f, err := decode(data)
	if err != nil {
		return nil, err
	}
	return New(f)
}

func decode(data []byte) (File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return File{}, err
	}
	return f, nil
}

// merge adds over to base; ids are compared in lower case, as New does,
// and over must not list one id twice in different cases.
func merge(base, over File) (File, error) {
	ids := map[string]string{}
	for id := range over.Models {
		k := strings.ToLower(strings.TrimSpace(id))
		if other, dup := ids[k]; dup {
			return File{}, fmt.Errorf("model %q: listed twice, also as %q (ids are not case-sensitive)", max(id, other), min(id, other))
		}
		ids[k] = id
	}
	out := File{DefaultTier: over.DefaultTier, Aliases: over.Aliases, Models: map[string][]Version{}, Catalog: map[string]ModelInfo{}}
	for _, c := range []map[string]ModelInfo{base.Catalog, over.Catalog} {
		for id, mi := range c {
			out.Catalog[strings.ToLower(strings.TrimSpace(id))] = mi
		}
	}
	for id, vs := range base.Models {
		id = strings.ToLower(strings.TrimSpace(id))
		out.Models[id] = append(out.Models[id], vs...)
	}
	for id, vs := range over.Models {
		id = strings.ToLower(strings.TrimSpace(id)) // as New compares them
	next:
		for _, v := range vs {
			cur := out.Models[id]
			for i := range cur {
				if cur[i].EffectiveFrom.Equal(v.EffectiveFrom.Time) {
					cur[i] = v
					continue next
				}
			}
			out.Models[id] = append(cur, v)
		}
	}
	return out, nil
}

// New validates f and builds its table.
func New(f File) (*Table, error) {
	t := &Table{models: map[string][]Version{}, dearest: map[string]string{}}
	var errs []error
	if f.DefaultTier != "" {
		errs = append(errs, errors.New("default_tier: no longer read: a model without a price is priced as the dearest model of its family "+
			"(or of all), and says so (priced_by: fallback); remove the line, and add the model's prices instead"))
	}
	if len(f.Aliases) > 0 {
		errs = append(errs, errors.New("aliases: no longer read from the price file: haiku, sonnet, opus and fable name the newest served model "+
			"of their family; pin one with CLAUDEQ_MODEL_ALIASES (e.g. sonnet=claude-sonnet-5-5)"))
	}
	for id, vs := range f.Models {
		written := id
		id = strings.ToLower(strings.TrimSpace(id))
		if id == "" || len(vs) == 0 {
			errs = append(errs, fmt.Errorf("model %q: needs an id and at least one version", id))
			continue
		}
		if _, dup := t.models[id]; dup {
			// Ids are compared in lower case: keeping either list would
			// depend on map order.
			errs = append(errs, fmt.Errorf("model %q: listed twice (ids are not case-sensitive)", written))
			continue
		}
		vs = append([]Version(nil), vs...)
		sort.Slice(vs, func(i, j int) bool { return vs[i].EffectiveFrom.Before(vs[j].EffectiveFrom.Time) })
		for i, v := range vs {
			where := fmt.Sprintf("model %s, effective_from %s", id, v.EffectiveFrom)
			if v.EffectiveFrom.IsZero() {
				errs = append(errs, fmt.Errorf("model %s: a version lacks effective_from", id))
			}
			if i > 0 && v.EffectiveFrom.Equal(vs[i-1].EffectiveFrom.Time) {
				errs = append(errs, fmt.Errorf("%s: two versions with the same date", where))
			}
			if err := v.Rates.validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
			if v.BatchDiscountPercent < 0 || v.BatchDiscountPercent >= 100 {
				errs = append(errs, fmt.Errorf("%s: batch_discount_percent must be 0–99", where))
			}
			if lp := v.LongPrompt; lp != nil {
				if lp.AboveTokens <= 0 {
					errs = append(errs, fmt.Errorf("%s: long_prompt.above_tokens must be positive", where))
				}
				if err := lp.Rates.validate(); err != nil {
					errs = append(errs, fmt.Errorf("%s: long_prompt: %w", where, err))
				}
			}
		}
		t.models[id] = vs
	}
	for id, mi := range f.Catalog {
		id = strings.ToLower(strings.TrimSpace(id))
		switch {
		case id == "":
			errs = append(errs, errors.New("catalog: an entry has no id"))
			continue
		case mi.MaxInputTokens < 0 || mi.MaxOutputTokens < 0:
			errs = append(errs, fmt.Errorf("catalog: %s: max_input_tokens and max_tokens must not be negative", id))
		}
		if _, ok := t.models[id]; !ok {
			if _, by := t.resolve(id); by != ByTable {
				// A listed model must never be served at a price guessed
				// from another family.
				errs = append(errs, fmt.Errorf("catalog: %s: has no price in models", id))
			}
		}
		t.catalog = append(t.catalog, claudeq.Model{ID: id, DisplayName: mi.DisplayName, CreatedAt: mi.CreatedAt.Time,
			MaxInputTokens: mi.MaxInputTokens, MaxOutputTokens: mi.MaxOutputTokens})
	}
	sort.Slice(t.catalog, func(i, j int) bool { return t.catalog[i].ID < t.catalog[j].ID })
	if len(t.models) == 0 {
		errs = append(errs, errors.New("no models"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for id := range t.models {
		for _, fam := range []string{"", claudeq.FamilyOf(id)} {
			if cur, ok := t.dearest[fam]; !ok || dearer(t.latest(id), t.latest(cur), id, cur) {
				t.dearest[fam] = id
			}
		}
	}
	return t, nil
}

// latest returns a model's newest price version.
func (t *Table) latest(id string) Version {
	vs := t.models[id]
	return vs[len(vs)-1]
}

// dearer reports whether a (of id ai) costs more than b (of id bi):
// output first, then input, then the long-prompt band's output; ids break
// ties so that the choice does not depend on map order.
func dearer(a, b Version, ai, bi string) bool {
	lp := func(v Version) Rate {
		if v.LongPrompt != nil {
			return v.LongPrompt.Output
		}
		return v.Output
	}
	switch {
	case a.Output != b.Output:
		return a.Output > b.Output
	case a.Input != b.Input:
		return a.Input > b.Input
	case lp(a) != lp(b):
		return lp(a) > lp(b)
	}
	return ai < bi
}

// How a model's price was found (Priced.By).
const (
	// ByTable: the table lists the id, or the id is a dated snapshot of an
	// id it lists: the longest listed id that the model id continues after
	// a "-" with a snapshot date (claude-haiku-4-5-20251001 is
	// claude-haiku-4-5; claude-fable-5-3 is not claude-fable-5, nor is
	// claude-opus-4-8-fast claude-opus-4-8).
	ByTable = "table"
	// ByFallback: the table knows nothing of the id: it is priced as the
	// dearest listed model of its family (fable, mythos, opus, sonnet,
	// haiku), or of all models when its id names no family.
	ByFallback = "fallback"
)

// dateNext reports whether rest (what follows a listed id and a "-")
// starts with a snapshot date: claude-haiku-4-5-20251001 (and a cloud
// provider's claude-haiku-4-5-20251001-v1:0) is claude-haiku-4-5; but
// claude-fable-5-3 is another model than claude-fable-5, and
// claude-opus-4-8-fast a variant that may cost more (fast mode does).
func dateNext(rest string) bool {
	seg, _, _ := strings.Cut(rest, "-")
	if len(seg) != 8 {
		return false
	}
	for _, c := range seg {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// resolve finds the priced id of model, and how.
func (t *Table) resolve(model string) (string, string) {
	name := strings.ToLower(strings.TrimSpace(model))
	if _, ok := t.models[name]; ok {
		return name, ByTable
	}
	best := ""
	for id := range t.models {
		if len(id) > len(best) && strings.HasPrefix(name, id+"-") && dateNext(name[len(id)+1:]) {
			best = id
		}
	}
	if best != "" {
		return best, ByTable
	}
	if id, ok := t.dearest[claudeq.FamilyOf(name)]; ok {
		return id, ByFallback
	}
	return t.dearest[""], ByFallback
}

// Resolve returns the priced model id whose prices apply to model, and how
// it was found (ByTable or ByFallback). Every model has a price: one the
// table does not know is priced as the dearest of its family, or of all.
func (t *Table) Resolve(model string) (id, by string) { return t.resolve(model) }

// Catalog returns the built-in model list, sorted by id.
func (t *Table) Catalog() []claudeq.Model { return slices.Clone(t.catalog) }

// Models returns the priced model ids, sorted.
func (t *Table) Models() []string {
	out := make([]string, 0, len(t.models))
	for id := range t.models {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Versions returns the price versions of a priced model id, oldest first.
func (t *Table) Versions(id string) []Version {
	return append([]Version(nil), t.models[strings.ToLower(id)]...)
}

// version returns the version of id in effect at at: the latest one not
// after it, or the oldest one for a call older than every version.
func (t *Table) version(id string, at time.Time) Version {
	vs := t.models[id]
	i := sort.Search(len(vs), func(i int) bool { return vs[i].EffectiveFrom.After(at) })
	if i == 0 {
		return vs[0]
	}
	return vs[i-1]
}

// Breakdown is a cost split by token class.
type Breakdown struct {
	Input        claudeq.Micros `json:"input" bson:"input"`
	Output       claudeq.Micros `json:"output" bson:"output"`
	CacheWrite5m claudeq.Micros `json:"cache_write_5m" bson:"cache_write_5m"`
	CacheWrite1h claudeq.Micros `json:"cache_write_1h" bson:"cache_write_1h"`
	CacheRead    claudeq.Micros `json:"cache_read" bson:"cache_read"`
}

// Total is the sum of the classes.
func (b Breakdown) Total() claudeq.Micros {
	return addSat(addSat(addSat(addSat(b.Input, b.Output), b.CacheWrite5m), b.CacheWrite1h), b.CacheRead)
}

// Priced says how a cost was computed.
type Priced struct {
	// Requested is the model name the cost was asked for.
	Requested string `json:"requested"`
	// Model is the id whose prices were applied.
	Model string `json:"model"`
	// Fallback is true when the table knows nothing of Requested and it
	// was priced as the dearest model of its family, or of all (Model).
	Fallback bool `json:"fallback,omitempty"`
	// EffectiveFrom is the date of the price version applied.
	EffectiveFrom time.Time `json:"effective_from"`
	// LongPrompt is true when the long-prompt band applied.
	LongPrompt bool `json:"long_prompt,omitempty"`
	// Batch is true when the batch discount applied.
	Batch bool `json:"batch,omitempty"`
	// Breakdown is the cost per token class.
	Breakdown Breakdown `json:"breakdown"`
}

// By returns how the price was found: ByTable or ByFallback.
func (p Priced) By() string {
	if p.Fallback {
		return ByFallback
	}
	return ByTable
}

// Note returns a sentence for logs and response headers when the price is
// a fallback, else "".
func (p Priced) Note() string {
	if !p.Fallback {
		return ""
	}
	return fmt.Sprintf("model %q is not in the price table; priced as %s, the dearest model of its family or of all (add its price with CLAUDEQ_PRICING_FILE)", p.Requested, p.Model)
}

// Cost prices one finished call of model with usage u, made at at, with the
// batch discount when batch is set.
//
// Cache writes are split by lifetime when u.CacheCreation is present; any
// cache_creation_input_tokens it does not attribute (all of them when it
// is absent) are priced as 5-minute writes. Negative token counts are a
// KindInvalidRequest error.
func (t *Table) Cost(model string, u claudeq.Usage, batch bool, at time.Time) (claudeq.Micros, Priced, error) {
	id, by := t.resolve(model)
	fallback := by == ByFallback
	if u.InputTokens < 0 || u.OutputTokens < 0 || u.CacheCreationInputTokens < 0 || u.CacheReadInputTokens < 0 ||
		(u.CacheCreation != nil && (u.CacheCreation.Ephemeral5mInputTokens < 0 || u.CacheCreation.Ephemeral1hInputTokens < 0)) {
		return 0, Priced{Requested: model}, claudeq.Errorf(claudeq.KindInvalidRequest, "negative token count in usage")
	}
	w5, w1 := u.CacheCreationInputTokens, int64(0)
	if cc := u.CacheCreation; cc != nil {
		w5, w1 = cc.Ephemeral5mInputTokens, cc.Ephemeral1hInputTokens
		if rest := u.CacheCreationInputTokens - w5 - w1; rest > 0 {
			w5 += rest
		}
	}
	v := t.version(id, at)
	p := Priced{Requested: model, Model: id, Fallback: fallback, EffectiveFrom: v.EffectiveFrom.Time, Batch: batch}
	r := v.Rates
	if lp := v.LongPrompt; lp != nil && u.InputTokens+w5+w1+u.CacheReadInputTokens > lp.AboveTokens {
		r, p.LongPrompt = lp.Rates, true
	}
	d := int64(0)
	if batch {
		d = v.BatchDiscountPercent
	}
	p.Breakdown = Breakdown{
		Input:        classCost(u.InputTokens, r.Input, d),
		Output:       classCost(u.OutputTokens, r.Output, d),
		CacheWrite5m: classCost(w5, r.CacheWrite5m, d),
		CacheWrite1h: classCost(w1, r.CacheWrite1h, d),
		CacheRead:    classCost(u.CacheReadInputTokens, r.CacheRead, d),
	}
	return p.Breakdown.Total(), p, nil
}

// CostFor prices a finished call that sent requested and was answered by
// answered (the model id the upstream reported; "" when it reported none):
// answered's own price when the table has one, else requested's when the
// table has that and both ids name the same family (an upstream may report
// an id of its own for the model it was asked for), else the fallback.
// Errors are Cost's.
func (t *Table) CostFor(answered, requested string, u claudeq.Usage, batch bool, at time.Time) (claudeq.Micros, Priced, error) {
	if answered == "" {
		answered = requested
	}
	if _, by := t.resolve(answered); by == ByFallback && requested != answered && claudeq.FamilyOf(answered) == claudeq.FamilyOf(requested) {
		if _, rby := t.resolve(requested); rby == ByTable {
			answered = requested
		}
	}
	return t.Cost(answered, u, batch, at)
}

// Estimate returns the most a call of model can cost before it is made:
// inputTokens priced at the dearest prompt class (a prompt may be written to
// the 1-hour cache, which costs up to twice the input price; a price file
// could even make cache reads dearer than input) and output at
// its full maxOutputTokens (max_tokens caps output, extended thinking
// included). It is meant for budget reservations, which are settled to the
// real cost afterwards.
//
// So when the call's prompt (input + cache writes + cache reads) is at most
// inputTokens and its output at most maxOutputTokens, Cost never exceeds
// Estimate. Since inputTokens is usually itself an estimate
// (EstimateInputTokens), the long-prompt band is assumed once inputTokens
// is above 80 % of its threshold. Errors are those of Resolve.
func (t *Table) Estimate(model string, inputTokens, maxOutputTokens int64, batch bool, at time.Time) (claudeq.Micros, Priced, error) {
	id, by := t.resolve(model)
	fallback := by == ByFallback
	v := t.version(id, at)
	p := Priced{Requested: model, Model: id, Fallback: fallback, EffectiveFrom: v.EffectiveFrom.Time, Batch: batch}
	r := v.Rates
	if lp := v.LongPrompt; lp != nil && inputTokens*5 > lp.AboveTokens*4 {
		// Near the threshold the call may land on either side of it: the
		// dearer rate of each class (the band's, in any sane table).
		r, p.LongPrompt = maxRates(r, lp.Rates), true
	}
	d := int64(0)
	if batch {
		d = v.BatchDiscountPercent
	}
	in := max(r.Input, r.CacheWrite5m, r.CacheWrite1h, r.CacheRead)
	p.Breakdown = Breakdown{
		// +3: Cost rounds five classes up one by one, this two; the
		// headroom keeps Cost ≤ Estimate whenever the token counts are.
		Input:  addSat(classCost(max(inputTokens, 0), in, d), 3),
		Output: classCost(max(maxOutputTokens, 0), r.Output, d),
	}
	return p.Breakdown.Total(), p, nil
}

// maxRates is the dearer rate of a and b in each class.
func maxRates(a, b Rates) Rates {
	return Rates{Input: max(a.Input, b.Input), Output: max(a.Output, b.Output), CacheWrite5m: max(a.CacheWrite5m, b.CacheWrite5m),
		CacheWrite1h: max(a.CacheWrite1h, b.CacheWrite1h), CacheRead: max(a.CacheRead, b.CacheRead)}
}
