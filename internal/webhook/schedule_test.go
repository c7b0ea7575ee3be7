package webhook_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/claudeq"
	"github.com/claudeq/claudeq/internal/webhook"
)

func TestDefaultSchedule(t *testing.T) {
	t.Parallel()
	s := webhook.DefaultSchedule
	require.Equal(t, 7, s.MaxRetry())
	tests := []struct {
		name    string
		attempt int
		want    time.Duration
		wantOK  bool
	}{
		{name: "after attempt 1", attempt: 1, want: 5 * time.Second, wantOK: true},
		{name: "after attempt 2", attempt: 2, want: 5 * time.Minute, wantOK: true},
		{name: "after attempt 3", attempt: 3, want: 30 * time.Minute, wantOK: true},
		{name: "after attempt 4", attempt: 4, want: 2 * time.Hour, wantOK: true},
		{name: "after attempt 5", attempt: 5, want: 5 * time.Hour, wantOK: true},
		{name: "after attempt 6", attempt: 6, want: 10 * time.Hour, wantOK: true},
		{name: "after attempt 7", attempt: 7, want: 10 * time.Hour, wantOK: true},
		{name: "attempt 8 was the last", attempt: 8},
		{name: "nonsense", attempt: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, ok := s.Next(tt.attempt)
			require.Equal(t, tt.wantOK, ok)
			require.Equal(t, tt.want, d)
		})
	}
}

func TestScheduleScaleAndParse(t *testing.T) {
	t.Parallel()
	fast := webhook.DefaultSchedule.Scale(1.0 / 3600)
	require.Equal(t, webhook.Schedule{0, 5 * time.Second / 3600, 5 * time.Minute / 3600, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second, 10 * time.Second, 10 * time.Second}, fast)
	require.Equal(t, 5*time.Second, webhook.DefaultSchedule[1], "Scale copies")

	tests := []struct {
		name    string
		in      string
		want    webhook.Schedule
		wantErr bool
	}{
		{name: "empty is the default", in: "", want: webhook.DefaultSchedule},
		{name: "default spelled out", in: "0, 5s, 5m, 30m, 2h, 5h, 10h, 10h", want: webhook.DefaultSchedule},
		{name: "short", in: "0,1s", want: webhook.Schedule{0, time.Second}},
		{name: "negative", in: "0,-1s", wantErr: true},
		{name: "garbage", in: "0,soon", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := webhook.ParseSchedule(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	task := asynq.NewTask(webhook.TypeDeliver, nil)
	handlerErr := &claudeq.Error{Kind: claudeq.KindUpstream, Err: errors.New("503"), RetryAfter: 42 * time.Minute}
	tests := []struct {
		name string
		n    int
		err  error
		want time.Duration
	}{
		{name: "delay from the handler's error", n: 0, err: handlerErr, want: 42 * time.Minute},
		{name: "wrapped", n: 3, err: fmt.Errorf("x: %w", handlerErr), want: 42 * time.Minute},
		{name: "no delay in the error: schedule after retry 0", n: 0, err: errors.New("lease expired"), want: 5 * time.Second},
		{name: "no delay in the error: schedule after retry 2", n: 2, err: errors.New("lease expired"), want: 30 * time.Minute},
		{name: "beyond the schedule: its last wait", n: 20, err: errors.New("x"), want: 10 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, webhook.RetryDelay(tt.n, tt.err, task))
		})
	}
	fast := webhook.Schedule{0, time.Second, 2 * time.Second}.RetryDelayFunc()
	require.Equal(t, 2*time.Second, fast(1, errors.New("x"), task))
}
