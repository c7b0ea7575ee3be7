package upstream_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/redisbatch"
	"github.com/claudeq/claudeq/internal/sim"
	"github.com/claudeq/claudeq/internal/upstream"
)

func TestOpenInteractiveCallsSettleThroughTheBackground(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{Latency: time.Millisecond}, sim.Config{}, sim.Config{})
	for _, withBatch := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "batched"}[withBatch], func(t *testing.T) {
			f := b.fleet(t, upstream.FleetOptions{Strategy: upstream.LeastConnections})
			var bg *redisbatch.Batcher
			if withBatch {
				bg = redisbatch.New(b.rdb, 5*time.Millisecond, 0)
				f.SetBackground(bg)
			}
			before := b.total()
			var wg sync.WaitGroup
			errs := make(chan error, 120)
			for range 12 {
				wg.Go(func() {
					for range 10 {
						r, err := f.Open(context.Background(), upstream.Exchange{Model: model, Body: body, Beta: "x-test-beta"})
						if err == nil {
							if r.Usage.OutputTokens <= 0 || !strings.Contains(string(r.Raw), `"type":"message"`) {
								err = fmt.Errorf("bad answer %s, usage %+v", r.Raw, r.Usage)
							}
							r.Finish(r.Usage, nil)
						}
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			if bg != nil {
				require.NoError(t, bg.Close(context.Background()))
			}
			require.Equal(t, before+120, b.total())
			var requests int64
			for _, n := range []string{"a", "b", "c"} {
				s := status(t, f, n)
				require.Zero(t, s.InFlight, "every admission counted in flight was given back: %s", n)
				requests += s.Requests
			}
			require.GreaterOrEqual(t, requests, int64(120), "every outcome was recorded")
		})
	}
}

func TestOpenStreamsAndRetriesAnotherNode(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, sim.Config{})
	f := b.fleet(t, upstream.FleetOptions{Strategy: upstream.RoundRobin})
	stream := []byte(`{"model":"claude-sonnet-4-6","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	r, err := f.Open(context.Background(), upstream.Exchange{Model: model, Body: stream, Stream: true})
	require.NoError(t, err)
	first, err := bufio.NewReader(r.Body).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "event: message_start\n", first)
	r.Finish(claudeq.Usage{OutputTokens: 1}, nil)

	// A node answering 529 is left for the other one when MaxAttempts
	// allows; a 400 is the request's fault and is not retried.
	b.sims["a"].Script(sim.Fault529)
	b.sims["b"].Script(sim.Fault529)
	r, err = f.Open(context.Background(), upstream.Exchange{Model: model, Body: body, MaxAttempts: 2})
	require.Error(t, err, "both nodes were overloaded")
	require.Equal(t, claudeq.KindOverloaded, claudeq.ErrorKind(err))
	r, err = f.Open(context.Background(), upstream.Exchange{Model: model, Body: body, MaxAttempts: 2})
	require.NoError(t, err)
	r.Finish(r.Usage, nil)

	before := b.total()
	_, err = f.Open(context.Background(), upstream.Exchange{Model: model, MaxAttempts: 2,
		Body: []byte(`{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"robot","content":"hi"}]}`)})
	require.Equal(t, claudeq.KindInvalidRequest, claudeq.ErrorKind(err))
	require.Contains(t, claudeq.ErrorMessage(err), "messages.0.role", "the node's own message")
	var se *upstream.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 400, se.Code)
	require.Equal(t, before+1, b.total(), "not retried")
}

func TestOpenRespectsRPMWithoutTheFastPath(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{})
	b.nodes[0].RPM = 2
	f := b.fleet(t, upstream.FleetOptions{})
	f.SetBackground(redisbatch.New(b.rdb, time.Millisecond, 0))
	for range 2 {
		r, err := f.Open(context.Background(), upstream.Exchange{Model: model, Body: body})
		require.NoError(t, err)
		r.Finish(r.Usage, nil)
	}
	_, err := f.Open(context.Background(), upstream.Exchange{Model: model, Body: body})
	require.Equal(t, claudeq.KindNoUpstream, claudeq.ErrorKind(err), "a capped node is admitted by Redis, before the call")
}

func TestCountTokensAndServes(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{})
	b.nodes[0].Models = []string{"claude-haiku-*"}
	f := b.fleet(t, upstream.FleetOptions{})
	require.True(t, f.Serves(context.Background(), "claude-haiku-4-5"))
	require.False(t, f.Serves(context.Background(), model))
	out, err := f.CountTokens(context.Background(), "claude-haiku-4-5",
		[]byte(`{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"count these words please"}]}`), "", "")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(out), `{"input_tokens":`), "%s", out)
	_, err = io.Discard.Write(out)
	require.NoError(t, err)
}
