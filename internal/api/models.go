package api

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/claudeq"
)

// The models a caller can use are those the upstream nodes list
// (docs/models.md): upstream.Fleet.Catalog, read through Models. Every
// surface resolves a model name here, checks the request against the
// model's limits here, and refuses a model no node serves here.

// unknownModel is the error for a model name no node serves: 404
// not_found_error naming the model and where the served ones are listed.
func unknownModel(cat *claudeq.Catalog, name string) error {
	if id, ok := cat.Pinned(name); ok {
		return claudeq.Errorf(claudeq.KindNotFound, "model: %s is pinned to %s (CLAUDEQ_MODEL_ALIASES), which no upstream node serves now; GET /v1/models lists the models you can use", name, id)
	}
	return claudeq.Errorf(claudeq.KindNotFound, "model: %s is not served here (no upstream node lists it); GET /v1/models lists the models you can use", name)
}

// model resolves a job's model name (the configured default when empty)
// among the served models.
func (s *Server) model(cat *claudeq.Catalog, name string) (claudeq.Model, error) {
	if name == "" {
		name = s.opt.DefaultModel
	}
	m, ok := cat.Resolve(name)
	if !ok {
		return m, unknownModel(cat, name)
	}
	return m, nil
}

// contextBeta is the prefix of the anthropic-beta value that opens a
// model's 1M-token context window (context-1m-2025-08-07).
const contextBeta = "context-1m-"

// checkContext refuses a prompt that cannot fit m's context window: 400
// invalid_request_error when the estimated input (pricing.EstimateInputTokens)
// is above MaxInputTokens, or above 1,000,000 when the request carries a
// context-1m beta. Unknown limits (0) are the upstream's to enforce.
func checkContext(m claudeq.Model, inputTokens int64, beta string) error {
	limit := m.MaxInputTokens
	if strings.Contains(beta, contextBeta) {
		limit = max(limit, 1_000_000)
	}
	if limit > 0 && inputTokens > limit {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "prompt is too long: about %d tokens (estimated), above %s's context window of %d tokens", inputTokens, m.ID, limit)
	}
	return nil
}

// familyRank orders the families by price for key tiers: a key whose tier
// is a family name may use that family and the cheaper ones. A model of
// no known family ranks with the dearest (it is priced as the dearest).
var familyRank = map[string]int{claudeq.FamilyHaiku: 0, claudeq.FamilySonnet: 1, claudeq.FamilyOpus: 2, claudeq.FamilyMythos: 3, claudeq.FamilyFable: 3}

// tierAllows reports whether a key of keyTier may use a model of family:
// any when the key's tier is not a family name (e.g. "standard").
func tierAllows(keyTier, family string) bool {
	k, ok := familyRank[strings.ToLower(strings.TrimSpace(keyTier))]
	if !ok {
		return true
	}
	m, ok := familyRank[family]
	if !ok {
		m = 3
	}
	return m <= k
}

// modelObject is one model of GET /v1/models, in Anthropic's shape.
type modelObject struct {
	Type           string `json:"type"`
	ID             string `json:"id"`
	DisplayName    string `json:"display_name"`
	CreatedAt      string `json:"created_at"`
	MaxInputTokens int64  `json:"max_input_tokens,omitempty"`
	MaxTokens      int64  `json:"max_tokens,omitempty"`
}

// modelEpoch is the created_at of a model whose release date is unknown
// (Anthropic uses an epoch value then too).
const modelEpoch = "1970-01-01T00:00:00Z"

func modelObjectOf(m claudeq.Model) modelObject {
	o := modelObject{Type: "model", ID: m.ID, DisplayName: cmp.Or(m.DisplayName, displayName(m.ID)), CreatedAt: modelEpoch,
		MaxInputTokens: m.MaxInputTokens, MaxTokens: m.MaxOutputTokens}
	if !m.CreatedAt.IsZero() {
		o.CreatedAt = m.CreatedAt.UTC().Format(time.RFC3339)
	}
	return o
}

// v1Models returns the served models the caller may use (within the key's
// tier), newest release first.
func (s *Server) v1Models(c echo.Context, cat *claudeq.Catalog) []modelObject {
	tier := principalOf(c).Tier
	var out []modelObject
	for _, m := range cat.Models() {
		if tierAllows(tier, m.Family()) {
			out = append(out, modelObjectOf(m))
		}
	}
	slices.SortStableFunc(out, func(a, b modelObject) int {
		if a.CreatedAt != b.CreatedAt {
			return strings.Compare(b.CreatedAt, a.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// displayName turns "claude-sonnet-4-5" into "Claude Sonnet 4.5"; a
// snapshot date is left out.
func displayName(id string) string {
	base, _ := claudeq.SnapshotBase(id)
	var words, version []string
	for _, p := range strings.Split(base, "-") {
		if p == "" {
			continue
		}
		if _, err := strconv.Atoi(p); err == nil {
			version = append(version, p)
			continue
		}
		if len(version) > 0 {
			words, version = append(words, strings.Join(version, ".")), nil
		}
		words = append(words, strings.ToUpper(p[:1])+p[1:])
	}
	if len(version) > 0 {
		words = append(words, strings.Join(version, "."))
	}
	return strings.Join(words, " ")
}

// listModels serves GET /v1/models: Anthropic's list shape (data,
// has_more, first_id, last_id) with limit (1–1000, default 20), after_id
// and before_id.
func (s *Server) listModels(c echo.Context) error {
	all := s.v1Models(c, s.catalog(c.Request().Context()))
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "limit: an integer from 1 to 1000")
		}
		limit = n
	}
	index := func(param string) (int, error) {
		id := c.QueryParam(param)
		i := slices.IndexFunc(all, func(m modelObject) bool { return m.ID == id })
		if i < 0 {
			return 0, claudeq.Errorf(claudeq.KindInvalidRequest, "%s: no model %q in this list", param, id)
		}
		return i, nil
	}
	page, more := all, false
	switch {
	case c.QueryParam("before_id") != "" && c.QueryParam("after_id") != "":
		return claudeq.Errorf(claudeq.KindInvalidRequest, "before_id, after_id: send at most one")
	case c.QueryParam("before_id") != "":
		i, err := index("before_id")
		if err != nil {
			return err
		}
		page = all[:i]
		if len(page) > limit {
			page, more = page[len(page)-limit:], true
		}
	default:
		if c.QueryParam("after_id") != "" {
			i, err := index("after_id")
			if err != nil {
				return err
			}
			page = all[i+1:]
		}
		if len(page) > limit {
			page, more = page[:limit], true
		}
	}
	out := map[string]any{"data": page, "has_more": more, "first_id": nil, "last_id": nil}
	if page == nil {
		out["data"] = []modelObject{}
	}
	if len(page) > 0 {
		out["first_id"], out["last_id"] = page[0].ID, page[len(page)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// getModel serves GET /v1/models/{id}: an id, a dated snapshot or an
// alias, answered with the model it resolves to.
func (s *Server) getModel(c echo.Context) error {
	cat := s.catalog(c.Request().Context())
	m, err := s.v1Model(c, cat, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, modelObjectOf(m))
}
