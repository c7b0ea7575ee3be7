package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestContentPolicyBlocksOrRedactsBeforeUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	admin, _ := e.key("root", "ops", "admin")
	r := do(t, "POST", base+"/admin/keys", admin, map[string]any{"user_id": "strict", "department": "legal", "policy_action": "block"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	strict := r.json(t)["key"].(string)
	lenient, _ := e.key("alice", "research") // the default action: redact

	card := "4111 1111 1111 1111"
	r = do(t, "POST", base+"/api/claude/chat", strict, map[string]any{"prompt": "Charge card " + card + " please"})
	require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	requireErrorShape(t, r, "content_policy_violation", "credit_card")
	require.NotContains(t, string(r.Body), card, "the match is never echoed")

	// An invalid card number (Luhn) is not a finding.
	submit(t, base, strict, map[string]any{"prompt": "Order 4111 1111 1111 1112 shipped"})

	id := submit(t, base, lenient, map[string]any{"prompt": "Charge card " + card + " for alice@example.com", "session_id": "pii"})
	j := wait(t, base, lenient, id, 15*time.Second)
	require.Equal(t, "succeeded", j["status"])
	require.NotContains(t, j["text"], "4111", "the upstream never saw the number")
	convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "session_id", Value: "pii"}})
	require.NoError(t, err)
	require.Len(t, convs, 1)
	require.Contains(t, convs[0].Messages[0].Content, "[REDACTED_CREDIT_CARD]")
	require.Contains(t, convs[0].Messages[0].Content, "[REDACTED_EMAIL]")
	require.NotContains(t, convs[0].Messages[0].Content, card)
}
