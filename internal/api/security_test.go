package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/audit"
	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/pricing"
)

func testServer(t *testing.T, sec Security) *Server {
	t.Helper()
	return New(Deps{Models: FixedModels(claudeq.NewCatalog(pricing.Default().Catalog(), nil)), Options: Options{DefaultMaxTokens: 1024}, Security: sec})
}

func ctxFor(s *Server, method, body string) echo.Context {
	req := httptest.NewRequest(method, "/api/claude/chat", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return s.e.NewContext(req, httptest.NewRecorder())
}

func TestPolicyActionPrecedence(t *testing.T) {
	t.Parallel()
	s := testServer(t, Security{Policy: policy.Default(), PolicyAction: policy.Allow,
		PolicyDepartments: map[string]policy.Action{"legal": policy.Block}})
	tests := []struct {
		name, dept, keyAction string
		want                  policy.Action
	}{
		{name: "default", dept: "research", want: policy.Allow},
		{name: "department", dept: "legal", want: policy.Block},
		{name: "key wins over department", dept: "legal", keyAction: "redact", want: policy.Redact},
		{name: "invalid key value is ignored", dept: "legal", keyAction: "shred", want: policy.Block},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ctxFor(s, http.MethodPost, "{}")
			c.Set("principal", claudeq.Principal{KeyID: "key_1", UserID: "u", Department: tt.dept})
			c.Set(ctxKeyPolicy, tt.keyAction)
			require.Equal(t, tt.want, s.policyAction(c))
		})
	}
	require.Equal(t, policy.Redact, testServer(t, Security{}).defaultPolicy, "redact when none is configured")
}

func TestApplyPolicy(t *testing.T) {
	t.Parallel()
	body := []byte(`{"model":"claude-sonnet-5-5","max_tokens":10,"messages":[{"role":"user","content":"card 4111 1111 1111 1111, mail bob@corp.example.org"}]}`)

	s := testServer(t, Security{Policy: policy.Default()})
	c := ctxFor(s, http.MethodPost, "")
	out, err := s.applyPolicy(c, body)
	require.NoError(t, err)
	require.Contains(t, string(out), "[REDACTED_CREDIT_CARD]")
	require.Contains(t, string(out), "[REDACTED_EMAIL]")
	require.NotContains(t, string(out), "4111")
	require.Equal(t, map[string]int{"credit_card": 1, "email": 1}, auditRecord(c).PolicyKinds)

	block := testServer(t, Security{Policy: policy.Default(), PolicyAction: policy.Block})
	c = ctxFor(block, http.MethodPost, "")
	_, err = block.applyPolicy(c, body)
	require.Equal(t, claudeq.KindContentPolicy, claudeq.ErrorKind(err))
	require.Equal(t, "prompt contains: credit_card, email", claudeq.ErrorMessage(err))
	require.Equal(t, audit.DecisionPolicy, decision(err))

	none := testServer(t, Security{})
	out, err = none.applyPolicy(ctxFor(none, http.MethodPost, ""), body)
	require.NoError(t, err)
	require.Equal(t, body, out)
}

func TestEstimateTokensLeavesTheBodyForTheHandler(t *testing.T) {
	t.Parallel()
	s := testServer(t, Security{})
	body := `{"prompt":"` + strings.Repeat("a", 400) + `","max_tokens":100}`
	c := ctxFor(s, http.MethodPost, body)
	require.Equal(t, (len(body)+3)/4+100, s.estimateTokens(c))
	rest, err := io.ReadAll(c.Request().Body)
	require.NoError(t, err)
	require.Equal(t, body, string(rest))

	c = ctxFor(s, http.MethodPost, `{"prompt":"hi"}`)
	require.Equal(t, 4+1024, s.estimateTokens(c), "the default max_tokens")
	c = ctxFor(s, http.MethodPost, `{"user_id":"bob","department":"d"}`)
	require.Zero(t, s.estimateTokens(c), "not a prompt")
}

func TestDecision(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]string{
		nil: audit.DecisionAllowed,
		claudeq.Errorf(claudeq.KindAuthentication, "x"):                           audit.DecisionAuthFailed,
		claudeq.Errorf(claudeq.KindPermission, "x"):                               audit.DecisionAuthFailed,
		claudeq.Errorf(claudeq.KindRateLimit, "x"):                                audit.DecisionRateLimited,
		&claudeq.Error{Kind: claudeq.KindRequestTooLarge, Op: "ratelimit"}:        audit.DecisionRateLimited,
		claudeq.Errorf(claudeq.KindRequestTooLarge, "body"):                       audit.DecisionAllowed,
		claudeq.Errorf(claudeq.KindQuotaExceeded, "x"):                            audit.DecisionQuota,
		fmt.Errorf("wrapped: %w", claudeq.Errorf(claudeq.KindContentPolicy, "x")): audit.DecisionPolicy,
		claudeq.Errorf(claudeq.KindInvalidRequest, "x"):                           audit.DecisionAllowed,
		errors.New("plain"): audit.DecisionAllowed,
	} {
		require.Equal(t, want, decision(err), "%v", err)
	}
}

func TestAuditedPaths(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/api/claude/chat": true, "/api/claude/jobs/x": true, "/admin/keys": true, "/admin": true, "/v1/messages": true,
		"/api/claude/health": false, "/metrics": false, "/monitoring/": false, "/livez": false, "/administrator": false,
	} {
		require.Equal(t, want, audited(path), path)
	}
}
