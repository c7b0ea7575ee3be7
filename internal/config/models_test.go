package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/config"
)

func TestModelAliases(t *testing.T) {
	t.Parallel()
	c, err := config.Load(config.Map(nil))
	require.NoError(t, err)
	require.Empty(t, c.ModelAliases, "no pins: the families float to their newest served model")

	c, err = config.Load(config.Map(map[string]string{"CLAUDEQ_MODEL_ALIASES": " Sonnet = Claude-Sonnet-5-5 , fast=claude-haiku-4-5-20251001,big=fable"}))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"sonnet": "claude-sonnet-5-5", "fast": "claude-haiku-4-5-20251001", "big": "fable"}, c.ModelAliases)

	tests := []struct{ name, value, want string }{
		{name: "not a pair", value: "sonnet", want: `"sonnet" is not alias=model-id`},
		{name: "empty id", value: "sonnet=", want: "is not alias=model-id"},
		{name: "auto is reserved", value: "auto=claude-opus-4-8", want: `"auto" is the automatic model choice`},
		{name: "pinned twice", value: "opus=claude-opus-4-8,OPUS=claude-opus-5", want: "opus is pinned twice"},
		{name: "pinned to another pin", value: "fast=claude-haiku-4-5,quick=fast", want: "quick=fast: pin an alias to a model id or a family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(config.Map(map[string]string{"CLAUDEQ_MODEL_ALIASES": tt.value}))
			require.ErrorContains(t, err, "CLAUDEQ_MODEL_ALIASES: ")
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err = config.Load(config.Map(map[string]string{"CLAUDEQ_PRICING_DEFAULT_TIER": "sonnet"}))
	require.ErrorContains(t, err, "CLAUDEQ_PRICING_DEFAULT_TIER: no longer read")
}
