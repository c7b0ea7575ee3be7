package sim

import (
	"cmp"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/pricing"
)

// modelInfo is one entry of GET /v1/models.
type modelInfo struct {
	id          string
	displayName string
	createdAt   string // RFC 3339
	maxInput    int64  // 0: not reported
	maxTokens   int64  // 0: not reported
}

// modelSet is the served list and its index; replaced whole by SetModels.
type modelSet struct {
	list  []modelInfo
	index map[string]int
}

const defaultCreatedAt = "2026-01-01T00:00:00Z"

// builtin is the lineup of claudeq's price table, by id.
var builtin = sync.OnceValue(func() map[string]claudeq.Model {
	out := map[string]claudeq.Model{}
	for _, m := range pricing.Default().Catalog() {
		out[m.ID] = m
	}
	return out
})

// buildModels makes the served list of models; an entry without a display
// name, date or limits takes them from the price table's model list when
// it knows the id (or its undated base), else a display name derived from
// the id, defaultCreatedAt and no limits.
func buildModels(models []claudeq.Model) *modelSet {
	set := &modelSet{list: make([]modelInfo, 0, len(models)), index: make(map[string]int, len(models))}
	for _, m := range models {
		if _, dup := set.index[m.ID]; dup || m.ID == "" {
			continue
		}
		base, _ := claudeq.SnapshotBase(m.ID)
		known, ok := builtin()[m.ID]
		if !ok {
			known = builtin()[base]
		}
		mi := modelInfo{id: m.ID, displayName: m.DisplayName, maxInput: m.MaxInputTokens, maxTokens: m.MaxOutputTokens}
		if mi.displayName == "" {
			mi.displayName = cmp.Or(known.DisplayName, displayName(m.ID))
		}
		mi.maxInput, mi.maxTokens = cmp.Or(mi.maxInput, known.MaxInputTokens), cmp.Or(mi.maxTokens, known.MaxOutputTokens)
		switch at := cmp.Or(m.CreatedAt, known.CreatedAt); {
		case !at.IsZero():
			mi.createdAt = at.UTC().Format(time.RFC3339)
		default:
			mi.createdAt = defaultCreatedAt
		}
		set.index[m.ID] = len(set.list)
		set.list = append(set.list, mi)
	}
	return set
}

// lookup finds the served model a request names: listed, a dated snapshot
// of a listed id, or an undated id whose snapshot is listed (as the real
// API answers the snapshots and aliases of the models it lists).
func (set *modelSet) lookup(id string) (*modelInfo, bool) {
	if i, ok := set.index[id]; ok {
		return &set.list[i], true
	}
	if base, dated := claudeq.SnapshotBase(id); dated {
		if i, ok := set.index[base]; ok {
			return &set.list[i], true
		}
		return nil, false
	}
	for i := range set.list {
		if base, dated := claudeq.SnapshotBase(set.list[i].id); dated && base == id {
			return &set.list[i], true
		}
	}
	return nil, false
}

// checkModel refuses a request for a model the server does not serve (404)
// or whose max_tokens is above the model's limit (400), as the API does.
func (s *Server) checkModel(pr *parsedRequest, countOnly bool) *apiError {
	m, ok := s.models.Load().lookup(pr.model)
	if !ok {
		return &apiError{status: http.StatusNotFound, typ: errNotFound, msg: "model: " + pr.model}
	}
	if !countOnly && m.maxTokens > 0 && pr.maxTokens > m.maxTokens {
		return &apiError{status: http.StatusBadRequest, typ: errInvalidRequest, msg: fmt.Sprintf(
			"max_tokens: %d > %d, which is the maximum allowed number of output tokens for %s", pr.maxTokens, m.maxTokens, pr.model)}
	}
	return nil
}

// SetModels replaces the served model list at runtime, as an upstream that
// adds or retires models does; nil restores DefaultModels. Entries are as
// in Config.Catalog.
func (s *Server) SetModels(models []claudeq.Model) {
	if len(models) == 0 {
		models = idsToModels(DefaultModels())
	}
	s.models.Store(buildModels(models))
}

func idsToModels(ids []string) []claudeq.Model {
	out := make([]claudeq.Model, len(ids))
	for i, id := range ids {
		out[i] = claudeq.Model{ID: id}
	}
	return out
}

// displayName turns "claude-sonnet-4-5" into "Claude Sonnet 4.5"; 8-digit
// date suffixes are dropped.
func displayName(id string) string {
	var words []string
	var version []string
	for _, p := range strings.Split(id, "-") {
		if p == "" {
			continue
		}
		if _, err := strconv.Atoi(p); err == nil {
			if len(p) < 8 {
				version = append(version, p)
			}
			continue
		}
		if len(version) > 0 {
			words = append(words, strings.Join(version, "."))
			version = nil
		}
		words = append(words, strings.ToUpper(p[:1])+p[1:])
	}
	if len(version) > 0 {
		words = append(words, strings.Join(version, "."))
	}
	return strings.Join(words, " ")
}

func appendModel(b []byte, m *modelInfo) []byte {
	b = append(b, `{"type":"model","id":`...)
	b = appendJSONString(b, m.id)
	b = append(b, `,"display_name":`...)
	b = appendJSONString(b, m.displayName)
	b = append(b, `,"created_at":`...)
	b = appendJSONString(b, m.createdAt)
	if m.maxInput > 0 {
		b = append(b, `,"max_input_tokens":`...)
		b = strconv.AppendInt(b, m.maxInput, 10)
	}
	if m.maxTokens > 0 {
		b = append(b, `,"max_tokens":`...)
		b = strconv.AppendInt(b, m.maxTokens, 10)
	}
	return append(b, '}')
}

// handleModels serves GET /v1/models with limit, after_id and before_id
// pagination.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request, reqID string) {
	if !s.authorized(r) {
		s.writeError(w, reqID, http.StatusUnauthorized, errAuthentication, "invalid x-api-key")
		return
	}
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, reqID, http.StatusBadRequest, errInvalidRequest, "limit: Input should be an integer between 1 and 1000")
			return
		}
		limit = n
	}
	set := s.models.Load()
	items := set.list
	hasMore := false
	if v := q.Get("before_id"); v != "" {
		i, ok := set.index[v]
		if !ok {
			i = 0
		}
		items = items[:i]
		if len(items) > limit {
			items, hasMore = items[len(items)-limit:], true
		}
	} else {
		if v := q.Get("after_id"); v != "" {
			i, ok := set.index[v]
			if !ok {
				i = len(items) - 1
			}
			items = items[i+1:]
		}
		if len(items) > limit {
			items, hasMore = items[:limit], true
		}
	}

	b := append(make([]byte, 0, 128+100*len(items)), `{"data":[`...)
	for i := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, &items[i])
	}
	b = append(b, `],"has_more":`...)
	b = strconv.AppendBool(b, hasMore)
	b = append(b, `,"first_id":`...)
	if len(items) > 0 {
		b = appendJSONString(b, items[0].id)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"last_id":`...)
	if len(items) > 0 {
		b = appendJSONString(b, items[len(items)-1].id)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, '}')
	s.setRateLimitHeaders(w.Header(), 0, false)
	writeJSON(w, http.StatusOK, b)
}

// handleModel serves GET /v1/models/{model_id}.
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request, reqID, id string) {
	if !s.authorized(r) {
		s.writeError(w, reqID, http.StatusUnauthorized, errAuthentication, "invalid x-api-key")
		return
	}
	m, ok := s.models.Load().lookup(id)
	if !ok {
		s.writeError(w, reqID, http.StatusNotFound, errNotFound, "model: "+id)
		return
	}
	s.setRateLimitHeaders(w.Header(), 0, false)
	writeJSON(w, http.StatusOK, appendModel(nil, m))
}
