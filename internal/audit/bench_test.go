package audit

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/claudeq/claudeq/internal/mongotest"
	"github.com/claudeq/claudeq/internal/redistest"
)

// BenchmarkLog measures what Log costs a request: normalizing the record
// and handing it to the buffer. The store is unreachable, so nothing drains
// the buffer and nothing else competes for the CPU.
func BenchmarkLog(b *testing.B) {
	client, err := mongo.Connect(options.Client().ApplyURI("mongodb://127.0.0.1:1/").SetServerSelectionTimeout(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	c, err := New(Config{DB: client.Database("x")})
	if err != nil {
		b.Fatal(err)
	}
	w, err := c.NewWriter(WriterOptions{Buffer: b.N + 1000, RetryMin: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rec := request(1)
	rec.PolicyKinds = map[string]int{"email": 1}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := w.Log(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if st := w.Stats(); st.Blocked != 0 {
		b.Fatalf("Log blocked: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	_ = w.Close(ctx) // the records are lost, on purpose
}

// BenchmarkWriterThroughput measures how fast one Writer appends to the
// embedded FerretDB (with the Redis lease): ns/op is per record, from the
// first Log until all are stored.
func BenchmarkWriterThroughput(b *testing.B) {
	c, err := New(Config{DB: mongotest.DB(b), Redis: redistest.New(b).Client(b)})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.EnsureIndexes(context.Background()); err != nil {
		b.Fatal(err)
	}
	w, err := c.NewWriter(WriterOptions{Buffer: b.N + 1000})
	if err != nil {
		b.Fatal(err)
	}
	rec := request(1)
	b.ResetTimer()
	for range b.N {
		if err := w.Log(rec); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	if st := w.Stats(); st.Written != uint64(b.N) {
		b.Fatalf("stats %+v", st)
	}
}
