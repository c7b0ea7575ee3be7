package api

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/claudeq/claudeq/internal/apikey"
	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/store"
)

// DefaultRotationGrace is how long a rotated key keeps working unless the
// request says otherwise: long enough to roll the new key out everywhere.
const DefaultRotationGrace = 24 * time.Hour

// adminWrites requires the full admin scope for anything but GET: the
// admin:read scope only reads.
func (s *Server) adminWrites(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method != http.MethodGet && c.Request().Method != http.MethodHead {
			if !slices.Contains(principalOf(c).Scopes, claudeq.ScopeAdmin) {
				return claudeq.Errorf(claudeq.KindPermission, "this API key lacks the %q scope", claudeq.ScopeAdmin)
			}
		}
		return next(c)
	}
}

func (s *Server) listKeys(c echo.Context) error {
	keys, err := s.st.Keys(c.Request().Context())
	if err != nil {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.listKeys", Msg: "key store unavailable", Err: err}
	}
	if keys == nil {
		keys = []store.APIKey{}
	}
	return c.JSON(http.StatusOK, map[string]any{"data": keys})
}

type createKeyBody struct {
	UserID     string   `json:"user_id"`
	Department string   `json:"department"`
	Tier       string   `json:"tier"`
	Name       string   `json:"name"`
	Scopes     []string `json:"scopes"`
	ExpiresIn  string   `json:"expires_in"`
	// PolicyAction overrides the content policy for this key: block,
	// redact or allow.
	PolicyAction string `json:"policy_action"`
	// RequestsPerDay caps the key's submits per quota day (0 = no cap).
	RequestsPerDay int `json:"requests_per_day"`
	// OnQuota is "refuse" (default) or "defer": park over-budget jobs until
	// the budget resets.
	OnQuota string `json:"on_quota"`
	// WebhookURL is the default webhook of the key's jobs.
	WebhookURL string `json:"webhook_url"`
}

// NewKey validates the attributes of a key to create and returns it with
// its secret. Shared by the admin API and the CLI.
func NewKey(user, dept, tier, name string, scopes []string, expiresIn string, now time.Time) (store.APIKey, string, error) {
	if strings.TrimSpace(user) == "" {
		return store.APIKey{}, "", claudeq.Errorf(claudeq.KindInvalidRequest, "user_id: required")
	}
	if strings.TrimSpace(dept) == "" {
		return store.APIKey{}, "", claudeq.Errorf(claudeq.KindInvalidRequest, "department: required")
	}
	if tier == "" {
		tier = "standard"
	}
	if len(scopes) == 0 {
		scopes = []string{claudeq.ScopeJobs, claudeq.ScopeBatches}
	}
	for _, sc := range scopes {
		if !slices.Contains(claudeq.KnownScopes, sc) {
			return store.APIKey{}, "", claudeq.Errorf(claudeq.KindInvalidRequest, "scopes: unknown scope %q; use %s", sc, strings.Join(claudeq.KnownScopes, ", "))
		}
	}
	key, id := apikey.New()
	k := store.APIKey{ID: id, Hash: apikey.Hash(key), Prefix: apikey.Display(key), Name: name, UserID: user,
		Department: dept, Tier: tier, Scopes: scopes, CreatedAt: now.UTC()}
	if expiresIn != "" {
		d, err := time.ParseDuration(expiresIn)
		if err != nil || d <= 0 {
			return store.APIKey{}, "", claudeq.Errorf(claudeq.KindInvalidRequest, "expires_in: a positive duration such as 720h")
		}
		t := now.Add(d).UTC()
		k.ExpiresAt = &t
	}
	return k, key, nil
}

func (s *Server) createKey(c echo.Context) error {
	var b createKeyBody
	if err := s.readJSON(c, &b); err != nil {
		return err
	}
	k, key, err := NewKey(b.UserID, b.Department, b.Tier, b.Name, b.Scopes, b.ExpiresIn, s.now())
	if err != nil {
		return err
	}
	if b.PolicyAction != "" {
		a, err := policy.ParseAction(b.PolicyAction)
		if err != nil {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "policy_action: block, redact or allow")
		}
		k.PolicyAction = string(a)
	}
	if b.RequestsPerDay < 0 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "requests_per_day: 0 (no cap) or more")
	}
	switch b.OnQuota {
	case "", "refuse", "defer":
	default:
		return claudeq.Errorf(claudeq.KindInvalidRequest, "on_quota: refuse or defer")
	}
	if b.WebhookURL != "" {
		if err := s.wh.Policy.CheckURL(b.WebhookURL); err != nil {
			return err
		}
	}
	k.RequestsPerDay, k.OnQuota, k.WebhookURL = b.RequestsPerDay, b.OnQuota, b.WebhookURL
	if err := s.st.CreateKey(c.Request().Context(), k); err != nil {
		return err
	}
	s.auditAdmin(c, audit.ActionKeyCreated, k.ID)
	s.log.Info("admin: key created", "key_id", k.ID, "user_id", k.UserID, "by", principalOf(c).KeyID)
	return c.JSON(http.StatusCreated, map[string]any{"key": key, "data": k})
}

func (s *Server) revokeKey(c echo.Context) error {
	id := c.Param("id")
	if err := s.st.RevokeKey(c.Request().Context(), id, s.now().UTC()); err != nil {
		return err
	}
	s.keys.dropID(id) // here at once; the other apis within CLAUDEQ_KEY_WATCH_INTERVAL
	s.auditAdmin(c, audit.ActionKeyRevoked, id)
	s.log.Info("admin: key revoked", "key_id", id, "by", principalOf(c).KeyID)
	k, err := s.st.Key(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"data": k})
}

func (s *Server) rotateKey(c echo.Context) error {
	id := c.Param("id")
	grace := DefaultRotationGrace
	if g := c.QueryParam("grace"); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil || d < 0 {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "grace: a duration such as 24h (0s ends the old key now)")
		}
		grace = d
	}
	now := s.now()
	key, newID := apikey.New()
	next := store.APIKey{ID: newID, Hash: apikey.Hash(key), Prefix: apikey.Display(key), CreatedAt: now.UTC()}
	if err := s.st.RotateKey(c.Request().Context(), id, next, now.Add(grace).UTC()); err != nil {
		return err
	}
	s.keys.dropID(id)
	s.auditAdmin(c, audit.ActionKeyRotated, id+" -> "+newID)
	s.log.Info("admin: key rotated", "key_id", id, "new_key_id", newID, "grace", grace, "by", principalOf(c).KeyID)
	k, err := s.st.Key(c.Request().Context(), newID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]any{"key": key, "data": k, "old_key_expires_at": now.Add(grace).UTC()})
}

type updateKeyBody struct {
	Tier   string   `json:"tier"`
	Scopes []string `json:"scopes"`
}

// updateKey serves PATCH /admin/keys/{id}: a new tier and/or scopes, in
// effect at every api within CLAUDEQ_KEY_WATCH_INTERVAL.
func (s *Server) updateKey(c echo.Context) error {
	id := c.Param("id")
	var b updateKeyBody
	if err := s.readJSON(c, &b); err != nil {
		return err
	}
	b.Tier = strings.TrimSpace(b.Tier)
	if b.Tier == "" && len(b.Scopes) == 0 {
		return claudeq.Errorf(claudeq.KindInvalidRequest, "tier, scopes: send at least one")
	}
	for _, sc := range b.Scopes {
		if !slices.Contains(claudeq.KnownScopes, sc) {
			return claudeq.Errorf(claudeq.KindInvalidRequest, "scopes: unknown scope %q; use %s", sc, strings.Join(claudeq.KnownScopes, ", "))
		}
	}
	ctx := c.Request().Context()
	if err := s.st.UpdateKey(ctx, id, b.Tier, b.Scopes, s.now()); err != nil {
		return err
	}
	s.keys.dropID(id)
	s.auditAdmin(c, audit.ActionKeyUpdated, id)
	s.log.Info("admin: key updated", "key_id", id, "tier", b.Tier, "scopes", b.Scopes, "by", principalOf(c).KeyID)
	k, err := s.st.Key(ctx, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"data": k})
}

// nodeView is one upstream node as GET /admin/nodes shows it.
type nodeView struct {
	Name          string     `json:"name"`
	URL           string     `json:"url"`
	Status        string     `json:"status"`
	HalfOpen      bool       `json:"half_open"`
	InFlight      int64      `json:"in_flight"`
	Failures      int64      `json:"failures"`
	P50MS         float64    `json:"p50_ms"`
	P95MS         float64    `json:"p95_ms"`
	CooldownUntil *time.Time `json:"cooldown_until"`
	LastCheck     *time.Time `json:"last_check"`
	Requests      int64      `json:"requests"`
	Errors        int64      `json:"errors"`
	LastError     string     `json:"last_error,omitempty"`
	Weight        int        `json:"weight"`
	Models        []string   `json:"models,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (s *Server) nodes(c echo.Context) error {
	ns, err := s.fl.Nodes(c.Request().Context())
	if err != nil {
		return &claudeq.Error{Kind: claudeq.KindUnavailable, Op: "api.nodes", Msg: "node health unavailable", Err: err}
	}
	out := make([]nodeView, 0, len(ns))
	for _, n := range ns {
		v := nodeView{Name: n.Name, URL: n.URL, Status: n.Status, HalfOpen: n.HalfOpen, InFlight: n.InFlight,
			Failures: n.Failures, P50MS: ms(n.P50), P95MS: ms(n.P95), Requests: n.Requests, Errors: n.Errors,
			LastError: n.LastError, Weight: n.Weight, Models: n.Models}
		if n.CooldownUntil.After(s.now()) {
			v.CooldownUntil = tp(n.CooldownUntil.UTC())
		}
		if !n.LastCheck.IsZero() {
			v.LastCheck = tp(n.LastCheck.UTC())
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"data": out})
}
