package sim

import (
	"net/http"
	"strconv"
	"strings"
)

// modelInfo is one entry of GET /v1/models.
type modelInfo struct {
	id          string
	displayName string
	createdAt   string // RFC 3339
}

// knownReleases holds plausible created_at values for well-known models.
var knownReleases = map[string]string{
	"claude-opus-4-5":   "2025-11-24T00:00:00Z",
	"claude-haiku-4-5":  "2025-10-15T00:00:00Z",
	"claude-sonnet-4-5": "2025-09-29T00:00:00Z",
	"claude-opus-4-1":   "2025-08-05T00:00:00Z",
	"claude-opus-4-0":   "2025-05-22T00:00:00Z",
	"claude-sonnet-4-0": "2025-05-22T00:00:00Z",
}

const defaultCreatedAt = "2026-01-01T00:00:00Z"

func buildModels(ids []string) ([]modelInfo, map[string]int) {
	models := make([]modelInfo, 0, len(ids))
	index := make(map[string]int, len(ids))
	for _, id := range ids {
		if _, dup := index[id]; dup || id == "" {
			continue
		}
		created, ok := knownReleases[id]
		if !ok {
			created = defaultCreatedAt
		}
		index[id] = len(models)
		models = append(models, modelInfo{id: id, displayName: displayName(id), createdAt: created})
	}
	return models, index
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
	items := s.models
	hasMore := false
	if v := q.Get("before_id"); v != "" {
		i, ok := s.modelIndex[v]
		if !ok {
			i = 0
		}
		items = items[:i]
		if len(items) > limit {
			items, hasMore = items[len(items)-limit:], true
		}
	} else {
		if v := q.Get("after_id"); v != "" {
			i, ok := s.modelIndex[v]
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
	i, ok := s.modelIndex[id]
	if !ok {
		s.writeError(w, reqID, http.StatusNotFound, errNotFound, "model: "+id)
		return
	}
	s.setRateLimitHeaders(w.Header(), 0, false)
	writeJSON(w, http.StatusOK, appendModel(nil, &s.models[i]))
}
