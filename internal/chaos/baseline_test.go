//go:build chaos

package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The harness itself: with nothing broken, every job succeeds and the
// accounting check passes.
func TestBaseline(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Webhooks: true, Sim: simOptions{Latency: 50 * time.Millisecond}})
	c.startAPI()
	c.startScheduler()
	c.startWorker(10)
	s := newSubmitter("baseline", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)
	s.webhook = c.hooks.URL()
	s.count(context.Background(), 40, 8)
	t.Log(s.summary())
	a := c.account(s, time.Minute)
	t.Log(a)
	require.Equal(t, 40, a.Accepted)
	require.Equal(t, 40, a.Succeeded)
	require.Equal(t, 40, a.WebhookEvents)
	require.Equal(t, 40, a.Calls)
}
