package mongotest

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestDBIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	start := time.Now()
	a := DB(t)
	t.Logf("first DB (shared server start if first): %v", time.Since(start))
	b := DB(t)
	require.NotEqual(t, a.Name(), b.Name())

	_, err := a.Collection("items").InsertOne(ctx, bson.M{"_id": "k", "v": "a"})
	require.NoError(t, err)
	_, err = b.Collection("items").InsertOne(ctx, bson.M{"_id": "k", "v": "b"})
	require.NoError(t, err, "same _id in another database must not conflict")

	var got bson.M
	require.NoError(t, a.Collection("items").FindOne(ctx, bson.M{"_id": "k"}).Decode(&got))
	require.Equal(t, "a", got["v"])
	require.NoError(t, b.Collection("items").FindOne(ctx, bson.M{"_id": "k"}).Decode(&got))
	require.Equal(t, "b", got["v"])

	n, err := a.Collection("items").CountDocuments(ctx, bson.M{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestDBDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	var name string
	t.Run("use", func(t *testing.T) {
		db := DB(t)
		name = db.Name()
		_, err := db.Collection("c").InsertOne(ctx, bson.M{"x": 1})
		require.NoError(t, err)
	})

	client, err := mongo.Connect(options.Client().ApplyURI(URI(t)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	names, err := client.ListDatabaseNames(ctx, bson.M{})
	require.NoError(t, err)
	require.NotContains(t, names, name)
}

func TestDBName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	for _, tn := range []string{
		"TestX",
		"TestFoo/sub_test#01",
		"Test/" + strings.Repeat("VeryLong-Name ", 20),
		"/",
		"Ünïcödé/テスト",
	} {
		got := dbName(tn, "abc123", 12345)
		require.Regexp(t, valid, got, tn)
		require.True(t, strings.HasPrefix(got, "t_"), got)
		require.True(t, strings.HasSuffix(got, "_abc123_12345"), got)
	}
	require.Equal(t, "t_testfoo_sub_test_01_r_7", dbName("TestFoo/sub_test#01", "r", 7))
}

func TestServerStopStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	start := time.Now()
	s := NewServer(t)
	t.Logf("NewServer: %v", time.Since(start))

	client, err := mongo.Connect(options.Client().ApplyURI(s.URI()).
		SetServerSelectionTimeout(time.Second).SetConnectTimeout(time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	require.NoError(t, client.Ping(ctx, nil))

	coll := client.Database("app").Collection("jobs")
	_, err = coll.InsertOne(ctx, bson.M{"_id": "j1", "state": "queued"})
	require.NoError(t, err)

	start = time.Now()
	s.Stop()
	t.Logf("Stop: %v", time.Since(start))
	s.Stop() // idempotent

	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	require.Error(t, client.Ping(pctx, nil), "ping must fail while stopped")
	_, err = coll.InsertOne(pctx, bson.M{"_id": "j2"})
	require.Error(t, err)

	start = time.Now()
	s.Start()
	t.Logf("Start: %v", time.Since(start))
	s.Start() // no-op while running

	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return client.Ping(ctx, nil) == nil
	}, 10*time.Second, 50*time.Millisecond, "same client reconnects after Start")

	var got bson.M
	require.NoError(t, coll.FindOne(ctx, bson.M{"_id": "j1"}).Decode(&got))
	require.Equal(t, "queued", got["state"], "data survives Stop/Start")
}

func TestServersAreIndependent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := NewServer(t), NewServer(t)
	require.NotEqual(t, a.URI(), b.URI())

	ca, err := mongo.Connect(options.Client().ApplyURI(a.URI()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = ca.Disconnect(context.Background()) })
	cb, err := mongo.Connect(options.Client().ApplyURI(b.URI()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cb.Disconnect(context.Background()) })

	_, err = ca.Database("d").Collection("c").InsertOne(ctx, bson.M{"_id": 1})
	require.NoError(t, err)
	n, err := cb.Database("d").Collection("c").CountDocuments(ctx, bson.M{})
	require.NoError(t, err)
	require.Zero(t, n)

	a.Stop()
	require.NoError(t, cb.Ping(ctx, nil), "stopping one server leaves the other up")
}
