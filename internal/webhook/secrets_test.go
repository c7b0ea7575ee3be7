package webhook_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/redistest"
	"github.com/claudeq/claudeq/internal/webhook"
	sw "github.com/claudeq/claudeq/pkg/webhook"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestSecretStore(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t).Client(t)
	clock := newClock(time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	s := webhook.NewSecretStore(rdb, clock.Now)
	ctx := t.Context()

	// Created on first use, concurrently: every caller sees the same one.
	var wg sync.WaitGroup
	got := make([][]string, 16)
	errs := make([]error, len(got))
	for i := range got {
		wg.Go(func() { got[i], errs[i] = s.Secrets(ctx, "user_1") })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	first := got[0]
	require.Len(t, first, 1)
	_, err := sw.ParseSecret(first[0])
	require.NoError(t, err)
	for _, g := range got {
		require.Equal(t, first, g)
	}
	again, err := s.Secrets(ctx, "user_1")
	require.NoError(t, err)
	require.Equal(t, first, again, "stable")
	other, err := s.Secrets(ctx, "user_2")
	require.NoError(t, err)
	require.NotEqual(t, first, other, "per owner")

	// Rotation with a grace period: both sign until it ends.
	rotated, err := s.Rotate(ctx, "user_1", time.Hour)
	require.NoError(t, err)
	require.NotEqual(t, first[0], rotated)
	both, err := s.Secrets(ctx, "user_1")
	require.NoError(t, err)
	require.Equal(t, []string{rotated, first[0]}, both, "current first, then the previous one")
	clock.Advance(59 * time.Minute)
	both, err = s.Secrets(ctx, "user_1")
	require.NoError(t, err)
	require.Len(t, both, 2)
	clock.Advance(time.Minute)
	after, err := s.Secrets(ctx, "user_1")
	require.NoError(t, err)
	require.Equal(t, []string{rotated}, after, "the old secret ends with the grace period")

	// Rotation without grace drops the old one at once.
	again2, err := s.Rotate(ctx, "user_1", 0)
	require.NoError(t, err)
	now, err := s.Secrets(ctx, "user_1")
	require.NoError(t, err)
	require.Equal(t, []string{again2}, now)

	// Rotating an owner without a secret just creates one.
	fresh, err := s.Rotate(ctx, "user_3", time.Hour)
	require.NoError(t, err)
	now, err = s.Secrets(ctx, "user_3")
	require.NoError(t, err)
	require.Equal(t, []string{fresh}, now)

	_, err = s.Secrets(ctx, "")
	require.Error(t, err)
}
