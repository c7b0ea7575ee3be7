package config_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/claudeq/claudeq/internal/config"
	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/ratelimit"
)

func TestSecurityDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(config.Map(nil))
	require.NoError(t, err)
	require.Empty(t, c.TrustedProxies)
	require.Equal(t, 365*24*time.Hour, c.HSTSMaxAge)
	require.Empty(t, c.CORSAllowedOrigins)
	require.Equal(t, ratelimit.Rate{Requests: 1000, Period: 15 * time.Minute}, c.RateLimitIP)
	require.Equal(t, map[string]ratelimit.Limits{"standard": {RequestsPerMinute: 600, TokensPerMinute: 1_000_000}}, c.RateLimitTiers)
	require.Equal(t, "standard", c.RateLimitDefaultTier)
	require.Equal(t, policy.Redact, c.PolicyAction)
	require.Nil(t, c.PolicyDetect, "nil: every built-in detector")
	require.Nil(t, c.EncryptionRing())
	require.False(t, c.EncryptionRequired)
	require.Nil(t, c.AuditKey())
	require.Equal(t, 10000, c.AuditBuffer)
	require.Equal(t, 5*time.Minute, c.AuditAnchorInterval)
	require.Equal(t, "on", c.Monitoring)
	require.Equal(t, 365*24*time.Hour, c.SecureConfig().HSTSMaxAge)
}

func TestSecuritySettings(t *testing.T) {
	t.Parallel()
	key := crypt.GenerateKey()
	c, err := config.Load(config.Map(map[string]string{
		"CLAUDEQ_TRUSTED_PROXIES":         "10.0.0.0/8, 192.0.2.10",
		"CLAUDEQ_HSTS_MAX_AGE":            "0s",
		"CLAUDEQ_CORS_ALLOWED_ORIGINS":    "https://app.example.com,https://admin.example.com",
		"CLAUDEQ_RATELIMIT_IP":            "off",
		"CLAUDEQ_RATELIMIT_TIERS":         "standard=60/40000,internal=0/0",
		"CLAUDEQ_POLICY_ACTION":           "BLOCK",
		"CLAUDEQ_POLICY_DEPARTMENTS":      "legal=block, research=allow",
		"CLAUDEQ_POLICY_DETECT":           "none",
		"CLAUDEQ_POLICY_PATTERNS":         `employee_id=\bEMP-\d{6}\b`,
		"CLAUDEQ_ENCRYPTION_KEYS":         "k2:" + key + ",k1:" + crypt.GenerateKey(),
		"CLAUDEQ_ENCRYPTION_REQUIRED":     "1",
		"CLAUDEQ_AUDIT_HMAC_KEY":          key,
		"CLAUDEQ_AUDIT_SPILL_DIR":         "/var/lib/claudeq/audit",
		"CLAUDEQ_MONITORING":              "read-only",
		"CLAUDEQ_HSTS_INCLUDE_SUBDOMAINS": "true",
	}))
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.10/32")}, c.TrustedProxies)
	require.Negative(t, c.SecureConfig().HSTSMaxAge, "0s sends no HSTS")
	require.Equal(t, ratelimit.Rate{}, c.RateLimitIP)
	require.Equal(t, ratelimit.Limits{RequestsPerMinute: 60, TokensPerMinute: 40000}, c.RateLimitTiers["standard"])
	require.Equal(t, policy.Block, c.PolicyAction)
	require.Equal(t, map[string]policy.Action{"legal": policy.Block, "research": policy.Allow}, c.PolicyDepartments)
	require.Equal(t, []string{}, c.PolicyDetect)
	require.Len(t, c.PolicyPatterns, 1)
	require.Equal(t, "k2", c.EncryptionRing().Current())
	require.Len(t, c.AuditKey(), 32)
	require.Equal(t, "read-only", c.Monitoring)
	require.Contains(t, c.Security.EncryptionKeys.String(), "REDACTED")
}

func TestSecurityProblemsAreReportedTogether(t *testing.T) {
	t.Parallel()
	_, err := config.Load(config.Map(map[string]string{
		"CLAUDEQ_TRUSTED_PROXIES":       "10.0.0.0/33",
		"CLAUDEQ_CORS_ALLOWED_ORIGINS":  "app.example.com",
		"CLAUDEQ_RATELIMIT_IP":          "lots",
		"CLAUDEQ_RATELIMIT_TIERS":       "standard=fast",
		"CLAUDEQ_POLICY_ACTION":         "shred",
		"CLAUDEQ_POLICY_DEPARTMENTS":    "legal",
		"CLAUDEQ_POLICY_DETECT":         "iban",
		"CLAUDEQ_POLICY_PATTERNS":       "email=x",
		"CLAUDEQ_ENCRYPTION_KEYS":       "k1:c2hvcnQ=",
		"CLAUDEQ_ENCRYPTION_REQUIRED":   "maybe",
		"CLAUDEQ_AUDIT_HMAC_KEY":        "c2hvcnQ=",
		"CLAUDEQ_AUDIT_ANCHOR_INTERVAL": "0s",
		"CLAUDEQ_AUDIT_BUFFER":          "0",
		"CLAUDEQ_MONITORING":            "maybe",
	}))
	require.Error(t, err)
	for _, v := range []string{"CLAUDEQ_TRUSTED_PROXIES", "CLAUDEQ_CORS_ALLOWED_ORIGINS", "CLAUDEQ_RATELIMIT_IP", "CLAUDEQ_RATELIMIT_TIERS",
		"CLAUDEQ_POLICY_ACTION", "CLAUDEQ_POLICY_DEPARTMENTS", "CLAUDEQ_POLICY_DETECT", "CLAUDEQ_POLICY_PATTERNS",
		"CLAUDEQ_ENCRYPTION_KEYS", "CLAUDEQ_ENCRYPTION_REQUIRED", "CLAUDEQ_AUDIT_HMAC_KEY", "CLAUDEQ_AUDIT_ANCHOR_INTERVAL",
		"CLAUDEQ_AUDIT_BUFFER", "CLAUDEQ_MONITORING"} {
		require.Contains(t, err.Error(), v)
	}
	require.NotContains(t, err.Error(), "c2hvcnQ", "no key material in errors")
}
