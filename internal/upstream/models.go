package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// DefaultCatalogTTL is how long a Fleet reuses the model lists it read
// from Redis before it reads them again.
const DefaultCatalogTTL = 2 * time.Second

// maxModelPages bounds the pages a probe reads of GET /v1/models (1,000
// models a page).
const maxModelPages = 10

// listedModel is one entry of GET /v1/models, in Anthropic's shape.
type listedModel struct {
	Type           string    `json:"type,omitempty"`
	ID             string    `json:"id"`
	DisplayName    string    `json:"display_name,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	MaxInputTokens int64     `json:"max_input_tokens,omitempty"`
	MaxTokens      int64     `json:"max_tokens,omitempty"`
}

// errNoList is returned by Client.Models when the node answered but gave
// no model list (no such endpoint, an empty or unreadable list): the
// built-in list stands in for it.
var errNoList = errors.New("the node lists no models")

// Models reads the node's whole model list (GET /v1/models, every page).
// A node that answers without a list (404, an empty or malformed list)
// gives an error wrapping errNoList; other errors are classified by
// Classify.
func (c *Client) Models(ctx context.Context) ([]claudeq.Model, error) {
	var out []claudeq.Model
	after := ""
	for range maxModelPages {
		var page struct {
			Data    []listedModel `json:"data"`
			HasMore bool          `json:"has_more"`
			LastID  string        `json:"last_id"`
		}
		opts := []option.RequestOption{option.WithQuery("limit", "1000")}
		if after != "" {
			opts = append(opts, option.WithQuery("after_id", after))
		}
		var raw []byte
		if err := c.sdk.Get(ctx, "v1/models", nil, &raw, opts...); err != nil {
			err = Classify(err)
			if claudeq.ErrorKind(err) == claudeq.KindNotFound {
				return nil, fmt.Errorf("%w: %w", errNoList, err)
			}
			return nil, err
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, fmt.Errorf("%w: malformed list: %v", errNoList, err)
		}
		for _, m := range page.Data {
			if m.ID != "" {
				out = append(out, claudeq.Model{ID: m.ID, DisplayName: m.DisplayName, CreatedAt: m.CreatedAt,
					MaxInputTokens: max(m.MaxInputTokens, 0), MaxOutputTokens: max(m.MaxTokens, 0)})
			}
		}
		if !page.HasMore || page.LastID == "" || page.LastID == after {
			break
		}
		after = page.LastID
	}
	if len(out) == 0 {
		return nil, errNoList
	}
	return out, nil
}

// nodeList is what Redis holds of one node's models (the models hash,
// field = node name): the list the node gave, or Builtin when it answered
// without one.
type nodeList struct {
	At      int64         `json:"at"` // ms of the probe that read it
	Builtin bool          `json:"builtin,omitempty"`
	Models  []listedModel `json:"models,omitempty"`
}

// fleetModels is the model side of the shared state, as one process last
// read it. It is immutable.
type fleetModels struct {
	taken  time.Time          // monotonic, for CatalogTTL
	raw    []string           // the hash's value per node ("" = none), to skip rebuilds
	nodes  []*claudeq.Catalog // per node, its allow-list applied; nil: no list known and no built-in list: any model
	source []string           // per node: ModelsFromNode, ModelsBuiltin or "" (nil nodes entry)
	at     []time.Time        // per node: when its list was read (zero: never)
	union  *claudeq.Catalog   // what the fleet serves, with the aliases pinned
}

// Where a node's model list comes from (NodeStatus.ModelsSource).
const (
	// ModelsFromNode: the node's own GET /v1/models, read by a probe.
	ModelsFromNode = "node"
	// ModelsBuiltin: the built-in list (FleetOptions.Builtin), before the
	// node's first probe or because it answered without a list.
	ModelsBuiltin = "builtin"
)

// Catalog returns the models the fleet serves: the union of every
// non-drained node's list (its own once a probe has read it, else the
// built-in list), each cut to the node's allow-list, with
// FleetOptions.Aliases pinned. Health does not remove a model: a model
// whose every node is cooling down is still served, and calls for it
// wait or fail as overloaded, not as an unknown model. The lists are read
// from Redis at most every CatalogTTL; if Redis fails, the last ones read
// (or the built-in list) are used.
func (f *Fleet) Catalog(ctx context.Context) *claudeq.Catalog { return f.models(ctx).union }

// models returns the model state, refreshed once it is older than
// CatalogTTL; while one goroutine refreshes, the others use the old one.
func (f *Fleet) models(ctx context.Context) *fleetModels {
	m := f.mods.Load()
	if m != nil && time.Since(m.taken) < f.o.CatalogTTL {
		return m
	}
	if m != nil {
		if !f.modsMu.TryLock() {
			return m
		}
	} else {
		f.modsMu.Lock()
		if m = f.mods.Load(); m != nil {
			f.modsMu.Unlock()
			return m
		}
	}
	defer f.modsMu.Unlock()
	// Not the caller's context: a request canceled mid-read must not leave
	// every process-wide list at the built-in one.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), catalogReadWait)
	defer cancel()
	raw, err := f.rdb.HMGet(rctx, f.kModels, f.names...).Result()
	vals := make([]string, len(f.nodes))
	if err != nil {
		f.warn("model lists unavailable; serving the last known ones", err)
		if m != nil {
			vals = m.raw
		}
	} else {
		for i, v := range raw {
			vals[i], _ = v.(string)
		}
	}
	nm := f.buildModels(vals)
	if err != nil && m == nil {
		// Nothing read yet: try again soon rather than a whole CatalogTTL
		// on the built-in lists.
		nm.taken = time.Now().Add(catalogRetry - f.o.CatalogTTL)
	}
	f.mods.Store(nm)
	return nm
}

// catalogReadWait bounds one read of the model lists; catalogRetry is how
// soon a process that could not read them at all tries again.
const (
	catalogReadWait = time.Second
	catalogRetry    = 250 * time.Millisecond
)

// buildModels makes the model state from the hash's value per node,
// reusing the current catalogs when nothing changed.
func (f *Fleet) buildModels(vals []string) *fleetModels {
	if cur := f.mods.Load(); cur != nil && slices.Equal(cur.raw, vals) {
		c := *cur
		c.taken = time.Now()
		return &c
	}
	n := len(f.nodes)
	m := &fleetModels{taken: time.Now(), raw: vals, nodes: make([]*claudeq.Catalog, n), source: make([]string, n), at: make([]time.Time, n)}
	var all []claudeq.Model // what the serving nodes list, limits as they report them
	for i, nd := range f.nodes {
		var list []claudeq.Model
		var nl nodeList
		switch {
		case vals[i] != "" && json.Unmarshal([]byte(vals[i]), &nl) == nil && !nl.Builtin && len(nl.Models) > 0:
			m.source[i], m.at[i] = ModelsFromNode, time.UnixMilli(nl.At).UTC()
			for _, lm := range nl.Models {
				list = append(list, claudeq.Model{ID: lm.ID, DisplayName: lm.DisplayName, CreatedAt: lm.CreatedAt,
					MaxInputTokens: lm.MaxInputTokens, MaxOutputTokens: lm.MaxTokens})
			}
		case len(f.o.Builtin) > 0:
			m.source[i], list = ModelsBuiltin, f.o.Builtin
			if nl.Builtin {
				m.at[i] = time.UnixMilli(nl.At).UTC()
			}
		default:
			continue // no list at all: any model (the allow-list still applies)
		}
		list = slices.DeleteFunc(slices.Clone(list), func(m claudeq.Model) bool { return !nd.cfg.serves(m.ID) })
		m.nodes[i] = claudeq.NewCatalog(list, nil)
		if nd.cfg.Weight > 0 {
			all = append(all, list...)
		}
	}
	m.union = claudeq.NewCatalog(unionModels(all, f.o.Builtin), f.o.Aliases)
	return m
}

// unionModels merges the lists of the serving nodes: one entry per id,
// whose limits are the largest a node reported for it (a request one node
// takes is not refused here), and what no node reported (limits, display
// name, release date) comes from the built-in entry of the id, or of its
// undated id.
func unionModels(all []claudeq.Model, builtin []claudeq.Model) []claudeq.Model {
	byID := map[string]int{}
	var out []claudeq.Model
	for _, m := range all {
		i, ok := byID[m.ID]
		if !ok {
			byID[m.ID] = len(out)
			out = append(out, m)
			continue
		}
		cur := &out[i]
		cur.MaxInputTokens, cur.MaxOutputTokens = max(cur.MaxInputTokens, m.MaxInputTokens), max(cur.MaxOutputTokens, m.MaxOutputTokens)
		if cur.DisplayName == "" {
			cur.DisplayName = m.DisplayName
		}
		if cur.CreatedAt.IsZero() {
			cur.CreatedAt = m.CreatedAt
		}
	}
	for i := range out {
		m := &out[i]
		base, _ := claudeq.SnapshotBase(m.ID)
		j := slices.IndexFunc(builtin, func(b claudeq.Model) bool { return b.ID == m.ID })
		if j < 0 {
			j = slices.IndexFunc(builtin, func(b claudeq.Model) bool { return b.ID == base })
		}
		if j < 0 {
			continue
		}
		b := builtin[j]
		if m.DisplayName == "" {
			m.DisplayName = b.DisplayName
		}
		if m.CreatedAt.IsZero() {
			m.CreatedAt = b.CreatedAt
		}
		if m.MaxInputTokens == 0 {
			m.MaxInputTokens = b.MaxInputTokens
		}
		if m.MaxOutputTokens == 0 {
			m.MaxOutputTokens = b.MaxOutputTokens
		}
	}
	return out
}

// servesModel reports whether node i may be sent a call for model: its
// allow-list admits it and its model list (own or built-in) has it. A node
// with no list at all serves any model its allow-list admits.
func (m *fleetModels) servesModel(f *Fleet, i int, model string) bool {
	n := f.nodes[i]
	if model == "" {
		return true
	}
	if m.nodes[i] == nil {
		return n.cfg.serves(model)
	}
	return m.nodes[i].Serves(model)
}

// recordModels stores what a probe learnt of node i's models: its list,
// or that it answered without one (the built-in list stands in). Nothing
// is stored when the node could not be asked (err of another kind): its
// last list stays.
func (f *Fleet) recordModels(ctx context.Context, i int, list []claudeq.Model, err error) error {
	nl := nodeList{At: f.o.Now().UnixMilli()}
	switch {
	case err == nil:
		for _, m := range list {
			nl.Models = append(nl.Models, listedModel{ID: m.ID, DisplayName: m.DisplayName, CreatedAt: m.CreatedAt,
				MaxInputTokens: m.MaxInputTokens, MaxTokens: m.MaxOutputTokens})
		}
	case errors.Is(err, errNoList):
		nl.Builtin = true
	default:
		return nil
	}
	b, jerr := json.Marshal(nl)
	if jerr != nil {
		return jerr
	}
	if err := f.rdb.HSet(ctx, f.kModels, f.names[i], b).Err(); err != nil {
		return err
	}
	// This process sees its own probe at once; others within CatalogTTL.
	f.modsMu.Lock()
	defer f.modsMu.Unlock()
	cur := f.mods.Load()
	vals := make([]string, len(f.nodes))
	if cur != nil {
		copy(vals, cur.raw)
	}
	vals[i] = string(b)
	nm := f.buildModels(vals)
	if cur != nil {
		nm.taken = cur.taken
	}
	f.mods.Store(nm)
	return nil
}
