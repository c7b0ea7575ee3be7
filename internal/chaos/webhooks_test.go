//go:build chaos

package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Scenario 7: the webhook receiver is down (connection refused) for a long
// stretch while jobs finish, with a compressed retry schedule
// (CLAUDEQ_WEBHOOK_SCHEDULE). Once it is back every event arrives, exactly
// one per webhook-id after de-duplication.
func TestWebhookReceiverDown(t *testing.T) {
	t.Parallel()
	schedule := scaled("0,1s,2s,4s,8s,16s,16s,16s", "0,5s,15s,30s,1m,2m,4m,4m")
	down := scaled(20*time.Second, 5*time.Minute)
	c := newCluster(t, clusterOptions{Webhooks: true, Sim: simOptions{Latency: 50 * time.Millisecond, Jitter: 100 * time.Millisecond},
		Env: map[string]string{"CLAUDEQ_WEBHOOK_SCHEDULE": schedule}})
	c.startAPI()
	c.startScheduler()
	c.startWorker(20)
	c.startWorker(20)
	s := newSubmitter("webhook-down", []user{c.user("alice", "research"), c.user("bob", "sales")}, c.apiURLs)
	s.webhook = c.hooks.URL()

	c.hooks.Down()
	downAt := time.Now()
	n := scaled(150, 1000)
	s.count(context.Background(), n, 16)
	c.waitTerminal(s.ids(), 2*time.Minute)
	time.Sleep(down - time.Since(downAt))
	c.hooks.Up()
	upAt := time.Now()

	a := c.account(s, scaled(2*time.Minute, 10*time.Minute))
	c.requireRunning()
	require.Equal(t, n, a.WebhookEvents)
	ev, _ := c.hooks.events()
	var last time.Time
	for _, ds := range ev {
		if ds[0].At.After(last) {
			last = ds[0].At
		}
	}
	failed, err := c.db.Collection("webhook_attempts").CountDocuments(context.Background(), bson.D{{Key: "status", Value: 0}})
	require.NoError(t, err)
	record(t, "receiver down", "%.0f s, schedule %s", secs(upAt.Sub(downAt)), schedule)
	record(t, "receiver up to last event delivered", "%.1f s", secs(last.Sub(upAt)))
	record(t, "deliveries", "%d events, %d deliveries received (duplicates dropped by webhook-id), %d attempts refused while down", a.WebhookEvents, a.Deliveries, failed)
	record(t, "accounting", "%s", a)
}
