package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestLargePromptPassesThroughRedis: a prompt far larger than the Redis
// clients' connection buffers (app.RedisBufferSize) is written into the
// task by the api and read back whole by the worker, which runs the job
// and stores the prompt intact.
func TestLargePromptPassesThroughRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.all()
	key, _ := e.key("alice", "research")
	prompt := strings.Repeat("All work and no play makes a large prompt. ", 5000) // 215 KB
	id := submit(t, base, key, map[string]any{"prompt": prompt, "model": "haiku", "max_tokens": 100})
	j := wait(t, base, key, id, 30*time.Second)
	require.Equal(t, "succeeded", j["status"], "%v", j["error"])
	require.Contains(t, j["text"], "Simulated reply to: All work and no play")

	convs, err := e.store.Conversations(t.Context(), bson.D{{Key: "job_ids", Value: id}})
	require.NoError(t, err)
	require.Len(t, convs, 1)
	require.Equal(t, prompt, convs[0].Messages[0].Content)
}
