package app_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/claudeq/claudeq/internal/sim"
)

// withNodes starts n simulators and writes a nodes file for them.
func (e *testEnv) withNodes(n int, cfg sim.Config) ([]*sim.Server, string) {
	e.t.Helper()
	var sims []*sim.Server
	var b strings.Builder
	b.WriteString("nodes:\n")
	for i := range n {
		s := sim.New(cfg)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(e.t, err)
		hs := &http.Server{Handler: s}
		go func() { _ = hs.Serve(ln) }()
		e.t.Cleanup(func() { _ = hs.Close() })
		sims = append(sims, s)
		e.sims = append(e.sims, s)
		fmt.Fprintf(&b, "  - name: node%d\n    url: http://%s\n    api_key: ${SIM_KEY}\n    weight: 1\n", i, ln.Addr())
	}
	path := filepath.Join(e.t.TempDir(), "nodes.yaml")
	require.NoError(e.t, os.WriteFile(path, []byte(b.String()), 0o600))
	e.env["SIM_KEY"] = "sim-key"
	return sims, path
}

func TestFleetRoutesAroundAFailingNode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Failures that count against a node at once: a 429 or 529 would put it
	// in a cooldown first (routed around before it is marked unhealthy), and
	// a timeout would hold a call for the upstream timeout.
	sims, nodes := e.withNodes(3, sim.Config{Faults: []string{"500", "reset"}})
	base := e.all("CLAUDEQ_NODES_FILE", nodes, "CLAUDEQ_BALANCER", "round_robin", "CLAUDEQ_HEALTH_INTERVAL", "1s",
		"CLAUDEQ_NODE_FAILURES", "3", "CLAUDEQ_NODE_COOLDOWN", "30s", "CLAUDEQ_WORKER_CONCURRENCY", "20")
	key, _ := e.key("alice", "research")
	admin, _ := e.key("root", "ops", "admin")

	sims[1].SetFaultRate(1) // node1 starts failing: 500s and connection resets
	const n = 200
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submit(t, base, key, map[string]any{"prompt": fmt.Sprintf("fleet job %d", i)})
	}
	for _, id := range ids {
		j := wait(t, base, key, id, 60*time.Second)
		require.Equal(t, "succeeded", j["status"], "no job fails because one node does: %v", j)
		nodes := j["nodes"].([]any)
		require.NotEqual(t, "node1", nodes[len(nodes)-1], "the answering node is a healthy one")
	}
	require.Greater(t, sims[0].Stats().Succeeded, int64(n/4))
	require.Greater(t, sims[2].Stats().Succeeded, int64(n/4))
	require.Zero(t, sims[1].Stats().Succeeded)
	require.Less(t, sims[1].Stats().Requests, int64(20), "node1 is ejected after a few failures, not tried for every job")

	// node1 is unhealthy after CLAUDEQ_NODE_FAILURES failures; the status
	// is read from Redis, where the last call's outcome may land a moment
	// after its job ended.
	status := map[string]string{}
	require.Eventually(t, func() bool {
		r := do(t, "GET", base+"/admin/nodes", admin, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		for _, nv := range r.json(t)["data"].([]any) {
			m := nv.(map[string]any)
			status[m["name"].(string)] = m["status"].(string)
		}
		return status["node1"] == "unhealthy"
	}, 10*time.Second, 100*time.Millisecond, "node1 is marked unhealthy")
	require.Contains(t, []string{"healthy", "degraded"}, status["node0"], "node0 serves")
	h := do(t, "GET", base+"/api/claude/health", "", nil).json(t)
	require.Equal(t, "degraded", h["status"])
	require.EqualValues(t, n, e.count("jobs", bson.D{{Key: "status", Value: "succeeded"}}))
}

// totalSimRequests counts the /v1/messages calls of every simulator.
func (e *testEnv) totalSimRequests() int64 {
	n := e.sim.Stats().Requests
	for _, s := range e.sims {
		n += s.Stats().Requests
	}
	return n
}
