package app_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/app"
)

// The logs an operator collects are JSON lines; a job's lines name the job,
// its task, the user and the node; neither the prompt, the answer nor the
// API key appears in any of them, even at debug level.
func TestLogsAreJSONWithJobContextAndNoContent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	over := []string{"CLAUDEQ_LOG_FORMAT", "json", "CLAUDEQ_LOG_LEVEL", "debug"}
	a, _, apiLogs := e.runWithLogs(app.Roles{API: true}, over...)
	_, _, workerLogs := e.runWithLogs(app.Roles{Worker: true}, over...)
	base := "http://" + a.Addr()
	key, _ := e.key("alice", "research")

	const prompt = "zebra-cobalt-marmalade: summarise the quarterly numbers"
	id := submit(t, base, key, map[string]any{"prompt": prompt, "model": "claude-haiku-4-5", "max_tokens": 64})
	j := wait(t, base, key, id, 30*time.Second)
	require.Equal(t, "succeeded", j["status"])
	answer, _ := j["text"].(string)
	require.NotEmpty(t, answer)

	var finished map[string]any
	require.Eventually(t, func() bool {
		for _, l := range jsonLines(t, []byte(workerLogs.String())) {
			if l["msg"] == "job finished" && l["job_id"] == id {
				finished = l
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "the worker logs the job's end")
	require.Equal(t, "alice", finished["user_id"])
	require.Equal(t, "succeeded", finished["status"])
	require.NotEmpty(t, finished["node"])
	require.Equal(t, id, finished["task_id"], "the asynq task id is the job id")
	require.Equal(t, "default", finished["queue"])
	require.EqualValues(t, 1, finished["attempt"])

	for name, logs := range map[string]string{"api": apiLogs.String(), "worker": workerLogs.String()} {
		jsonLines(t, []byte(logs)) // every line is a JSON object
		require.NotContains(t, logs, "zebra-cobalt", "%s logs contain the prompt", name)
		require.NotContains(t, logs, answer[:min(len(answer), 40)], "%s logs contain the answer", name)
		require.NotContains(t, logs, key, "%s logs contain the API key", name)
		require.NotContains(t, logs, key[len(key)-12:], "%s logs contain part of the API key", name)
	}
}
