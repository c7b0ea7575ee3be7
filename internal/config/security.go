package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/claudeq/claudeq/internal/claudeq"
	"net/netip"
	"strings"
	"time"

	"github.com/claudeq/claudeq/internal/crypt"
	"github.com/claudeq/claudeq/internal/policy"
	"github.com/claudeq/claudeq/internal/ratelimit"
	"github.com/claudeq/claudeq/internal/secure"
)

// Security is the part of Config about HTTP hardening, rate limits, the
// content policy, encryption at rest, the audit log, metrics and the
// monitoring UI. It is embedded in Config, so its fields read as
// cfg.TrustedProxies and so on. Each field names its environment variable
// and default.
type Security struct {
	// TrustedProxies are the proxies whose X-Forwarded-For (and
	// X-Forwarded-Proto) the api believes. CLAUDEQ_TRUSTED_PROXIES,
	// comma-separated CIDRs or addresses; default none: the TCP peer is the
	// client, whatever X-Forwarded-For says.
	TrustedProxies []netip.Prefix
	// HSTSMaxAge is the Strict-Transport-Security max-age, sent on HTTPS
	// requests only (TLS, or X-Forwarded-Proto: https from a trusted proxy).
	// CLAUDEQ_HSTS_MAX_AGE, default 8760h (a year); 0s sends none.
	HSTSMaxAge time.Duration
	// HSTSIncludeSubdomains adds includeSubDomains to HSTS.
	// CLAUDEQ_HSTS_INCLUDE_SUBDOMAINS, default false.
	HSTSIncludeSubdomains bool
	// CORSAllowedOrigins turns CORS on for these origins
	// ("https://app.example.com", or "*"). CLAUDEQ_CORS_ALLOWED_ORIGINS,
	// comma-separated; default none: no CORS headers, browsers refuse
	// cross-origin calls.
	CORSAllowedOrigins []string

	// RateLimitIP is the per-client-IP limit on /api/claude/*, checked
	// before authentication; it fails open when Redis is down.
	// CLAUDEQ_RATELIMIT_IP, "requests/period", default 1000/15m; "off"
	// disables it (zero Rate).
	RateLimitIP ratelimit.Rate
	// RateLimitTiers are the per-key limits by key tier: requests and
	// (estimated) tokens per minute of submissions (POST).
	// CLAUDEQ_RATELIMIT_TIERS, "tier=rpm/tpm,…" with 0 meaning unlimited;
	// default standard=600/1000000.
	RateLimitTiers map[string]ratelimit.Limits
	// RateLimitDefaultTier applies to keys whose tier is not in
	// RateLimitTiers. CLAUDEQ_RATELIMIT_DEFAULT_TIER, default standard; a
	// tier that is not defined means no per-key limit for such keys.
	RateLimitDefaultTier string
	// RateLimitKeyFailOpen lets requests through the per-key limiter when
	// Redis fails. CLAUDEQ_RATELIMIT_KEY_FAIL_OPEN, default false (503).
	RateLimitKeyFailOpen bool

	// PolicyAction is what the content policy does with sensitive data in
	// a prompt (credit cards, SSNs, e-mail addresses, PolicyPatterns):
	// block, redact or allow (report only). CLAUDEQ_POLICY_ACTION, default
	// redact. A key's own policy_action, then PolicyDepartments, override it.
	PolicyAction policy.Action
	// PolicyDepartments override PolicyAction per department.
	// CLAUDEQ_POLICY_DEPARTMENTS, "department=action,…"; default none.
	PolicyDepartments map[string]policy.Action
	// PolicyDetect selects the built-in detectors. CLAUDEQ_POLICY_DETECT,
	// comma-separated of credit_card, ssn, email; default all; "none" for
	// none (only PolicyPatterns).
	PolicyDetect []string
	// PolicyPatterns are custom detectors. CLAUDEQ_POLICY_PATTERNS,
	// "name=regex" entries separated by ';' or newlines; default none.
	PolicyPatterns []policy.Pattern
	// PolicyCardRequireIIN flags card numbers only with a known issuer
	// prefix. CLAUDEQ_POLICY_CARD_REQUIRE_IIN, default false.
	PolicyCardRequireIIN bool
	// PolicySkipEmailsInCode ignores e-mail addresses in Markdown code.
	// CLAUDEQ_POLICY_SKIP_EMAILS_IN_CODE, default false.
	PolicySkipEmailsInCode bool
	// PolicyAllowEmailDomains are domains whose addresses are never
	// flagged. CLAUDEQ_POLICY_ALLOW_EMAIL_DOMAINS, comma-separated; default
	// none.
	PolicyAllowEmailDomains []string

	// EncryptionKeys is the key ring that encrypts job results and
	// conversation messages in MongoDB (AES-256-GCM):
	// CLAUDEQ_ENCRYPTION_KEYS, "kid:base64key[,kid:base64key…]", the first
	// key encrypting, all decrypting. Default none: stored in plaintext
	// (claudeq dev generates a key in CLAUDEQ_DATA_DIR instead). Every
	// process (api, worker, scheduler, CLI) needs the same ring.
	EncryptionKeys claudeq.Secret
	// EncryptionRequired makes api, worker and scheduler refuse to start
	// without EncryptionKeys. CLAUDEQ_ENCRYPTION_REQUIRED, default false.
	EncryptionRequired bool

	// AuditSpillDir is where the audit writer spills records it cannot
	// write to MongoDB in time, to replay them later; one directory per
	// process (pod). CLAUDEQ_AUDIT_SPILL_DIR, default none (claudeq dev:
	// DATA_DIR/audit-spill): requests are then refused with 503 once the
	// in-memory buffer is full.
	AuditSpillDir string
	// AuditBuffer is how many audit records may wait in memory.
	// CLAUDEQ_AUDIT_BUFFER, default 10000.
	AuditBuffer int
	// AuditBlockTimeout is how long a request waits for room in a full
	// audit buffer before spilling. CLAUDEQ_AUDIT_BLOCK_TIMEOUT, default 20ms.
	AuditBlockTimeout time.Duration
	// AuditFlushInterval is how long the audit writer gathers records into
	// one append. CLAUDEQ_AUDIT_FLUSH_INTERVAL, default 50ms.
	AuditFlushInterval time.Duration
	// AuditLog turns the per-request audit log off. Only for measuring
	// what it costs (make bench); the api logs a warning at start when it
	// is off. CLAUDEQ_AUDIT_LOG, default on.
	AuditLog bool
	// AuditHMACKey makes the audit chain's hashes HMAC-SHA-256 under this
	// key (base64, at least 32 bytes), so that someone who can write to
	// MongoDB cannot forge a consistent chain. CLAUDEQ_AUDIT_HMAC_KEY,
	// default none (plain SHA-256). Every process and the CLI need the same
	// key.
	AuditHMACKey claudeq.Secret
	// AuditAnchorInterval is how often the scheduler verifies the records
	// since the last anchor and stores a new one.
	// CLAUDEQ_AUDIT_ANCHOR_INTERVAL, default 5m.
	AuditAnchorInterval time.Duration

	// Monitoring serves the asynq UI at /monitoring on the api, behind a
	// browser login with an admin key: on, off or read-only.
	// CLAUDEQ_MONITORING, default on.
	Monitoring string
}

// auditHMACKey returns the decoded audit HMAC key (nil when none).
func (s Security) auditHMACKey() ([]byte, error) {
	v := strings.TrimSpace(s.AuditHMACKey.Reveal())
	if v == "" {
		return nil, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(v); err == nil {
			if len(b) < 32 {
				return nil, fmt.Errorf("is %d bytes; use at least 32 (e.g. openssl rand -base64 32)", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("is not base64")
}

// AuditKey returns the decoded CLAUDEQ_AUDIT_HMAC_KEY, nil when none (Load
// has checked it).
func (s Security) AuditKey() []byte {
	b, _ := s.auditHMACKey()
	return b
}

// EncryptionRing returns the key ring of CLAUDEQ_ENCRYPTION_KEYS, nil when
// none is configured (Load has checked it).
func (s Security) EncryptionRing() *crypt.Ring {
	if s.EncryptionKeys == "" {
		return nil
	}
	r, _ := crypt.ParseKeys(s.EncryptionKeys.Reveal())
	return r
}

// list splits a comma-separated value, dropping blanks.
func list(v string) []string {
	var out []string
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (l *loader) bool(key string, def bool) bool {
	switch v := strings.ToLower(strings.TrimSpace(l.getenv(key))); v {
	case "":
		return def
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	default:
		l.errs = append(l.errs, fmt.Errorf("%s: %q, want true or false", key, v))
		return def
	}
}

// security reads the Security fields, adding every problem to l.errs.
func (l *loader) security() Security {
	var s Security
	var err error
	if s.TrustedProxies, err = secure.ParsePrefixes(l.str("CLAUDEQ_TRUSTED_PROXIES", "")); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_TRUSTED_PROXIES: %w", err))
	}
	s.HSTSMaxAge = l.dur("CLAUDEQ_HSTS_MAX_AGE", 365*24*time.Hour)
	s.HSTSIncludeSubdomains = l.bool("CLAUDEQ_HSTS_INCLUDE_SUBDOMAINS", false)
	s.CORSAllowedOrigins = list(l.str("CLAUDEQ_CORS_ALLOWED_ORIGINS", ""))
	if _, err := secure.New(secure.Config{AllowedOrigins: s.CORSAllowedOrigins}); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_CORS_ALLOWED_ORIGINS: %w", err))
	}

	if s.RateLimitIP, err = ratelimit.ParseRate(l.str("CLAUDEQ_RATELIMIT_IP", "1000/15m")); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_RATELIMIT_IP: %w", err))
	} else if s.RateLimitIP != (ratelimit.Rate{}) && s.RateLimitIP.Requests == 0 {
		l.errs = append(l.errs, errors.New("CLAUDEQ_RATELIMIT_IP: 0 requests per period; use off to disable the limit"))
	}
	if s.RateLimitTiers, err = ratelimit.ParseTiers(l.str("CLAUDEQ_RATELIMIT_TIERS", "standard=600/1000000")); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_RATELIMIT_TIERS: %w", err))
	}
	s.RateLimitDefaultTier = l.str("CLAUDEQ_RATELIMIT_DEFAULT_TIER", "standard")
	s.RateLimitKeyFailOpen = l.bool("CLAUDEQ_RATELIMIT_KEY_FAIL_OPEN", false)

	if s.PolicyAction, err = policy.ParseAction(l.str("CLAUDEQ_POLICY_ACTION", string(policy.Redact))); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_POLICY_ACTION: %w", err))
		s.PolicyAction = policy.Redact
	}
	s.PolicyDepartments = map[string]policy.Action{}
	for _, pair := range list(l.str("CLAUDEQ_POLICY_DEPARTMENTS", "")) {
		dept, act, ok := strings.Cut(pair, "=")
		a, aerr := policy.ParseAction(act)
		if !ok || strings.TrimSpace(dept) == "" || aerr != nil {
			l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_POLICY_DEPARTMENTS: %q is not department=block|redact|allow", pair))
			continue
		}
		s.PolicyDepartments[strings.TrimSpace(dept)] = a
	}
	if v := l.str("CLAUDEQ_POLICY_DETECT", ""); v != "" {
		s.PolicyDetect = []string{}
		if !strings.EqualFold(v, "none") {
			s.PolicyDetect = list(v)
		}
	}
	if s.PolicyPatterns, err = policy.ParsePatterns(l.getenv("CLAUDEQ_POLICY_PATTERNS")); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_POLICY_PATTERNS: %w", err))
	}
	s.PolicyCardRequireIIN = l.bool("CLAUDEQ_POLICY_CARD_REQUIRE_IIN", false)
	s.PolicySkipEmailsInCode = l.bool("CLAUDEQ_POLICY_SKIP_EMAILS_IN_CODE", false)
	s.PolicyAllowEmailDomains = list(l.str("CLAUDEQ_POLICY_ALLOW_EMAIL_DOMAINS", ""))
	if _, err := policy.New(s.PolicyConfig()); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_POLICY_DETECT: %w", err))
	}

	s.EncryptionKeys = claudeq.Secret(l.str("CLAUDEQ_ENCRYPTION_KEYS", ""))
	if s.EncryptionKeys != "" {
		if _, err := crypt.ParseKeys(s.EncryptionKeys.Reveal()); err != nil {
			l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_ENCRYPTION_KEYS: %w", err))
		}
	}
	s.EncryptionRequired = l.bool("CLAUDEQ_ENCRYPTION_REQUIRED", false)

	s.AuditSpillDir = l.str("CLAUDEQ_AUDIT_SPILL_DIR", "")
	s.AuditBuffer = int(l.int("CLAUDEQ_AUDIT_BUFFER", 10000, 1))
	s.AuditBlockTimeout = l.dur("CLAUDEQ_AUDIT_BLOCK_TIMEOUT", 20*time.Millisecond)
	s.AuditFlushInterval = l.dur("CLAUDEQ_AUDIT_FLUSH_INTERVAL", 50*time.Millisecond)
	s.AuditLog = l.bool("CLAUDEQ_AUDIT_LOG", true)
	s.AuditHMACKey = claudeq.Secret(l.str("CLAUDEQ_AUDIT_HMAC_KEY", ""))
	if _, err := s.auditHMACKey(); err != nil {
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_AUDIT_HMAC_KEY: %w", err))
	}
	s.AuditAnchorInterval = l.dur("CLAUDEQ_AUDIT_ANCHOR_INTERVAL", 5*time.Minute)
	if s.AuditAnchorInterval == 0 {
		l.errs = append(l.errs, errors.New("CLAUDEQ_AUDIT_ANCHOR_INTERVAL: must be positive"))
	}
	s.Monitoring = strings.ToLower(l.str("CLAUDEQ_MONITORING", "on"))
	switch s.Monitoring {
	case "on", "off", "read-only":
	default:
		l.errs = append(l.errs, fmt.Errorf("CLAUDEQ_MONITORING: %q, want on, off or read-only", s.Monitoring))
	}
	return s
}

// PolicyConfig returns the policy.Config of the CLAUDEQ_POLICY_* settings.
func (s Security) PolicyConfig() policy.Config {
	return policy.Config{
		Builtins:          s.PolicyDetect,
		RequireKnownIIN:   s.PolicyCardRequireIIN,
		SkipEmailsInCode:  s.PolicySkipEmailsInCode,
		AllowEmailDomains: s.PolicyAllowEmailDomains,
		Patterns:          s.PolicyPatterns,
	}
}

// SecureConfig returns the secure.Config of the HTTP hardening settings;
// /monitoring gets secure.MonitoringCSP.
func (s Security) SecureConfig() secure.Config {
	hsts := s.HSTSMaxAge
	if hsts == 0 {
		hsts = -1 // secure: negative sends none
	}
	return secure.Config{
		TrustedProxies:        s.TrustedProxies,
		HSTSMaxAge:            hsts,
		HSTSIncludeSubdomains: s.HSTSIncludeSubdomains,
		AllowedOrigins:        s.CORSAllowedOrigins,
		PathCSP:               map[string]string{"/monitoring": secure.MonitoringCSP},
	}
}
