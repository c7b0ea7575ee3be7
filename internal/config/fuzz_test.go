package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envKeys are the variables Load reads with an empty environment (the
// nodes file adds the ${NAME} variables its api keys name).
var envKeys = func() []string {
	var keys []string
	_, _ = Load(func(k string) string { keys = append(keys, k); return "" })
	return keys
}()

// secretKeys are the variables whose values must never show.
var secretKeys = []string{"CLAUDEQ_REDIS_URL", "CLAUDEQ_CACHE_REDIS_URL", "CLAUDEQ_MONGO_URI",
	"CLAUDEQ_UPSTREAM_API_KEY", "CLAUDEQ_DEV_API_KEY", "CLAUDEQ_ENCRYPTION_KEYS", "CLAUDEQ_AUDIT_HMAC_KEY"}

// parseEnv reads "NAME=value" lines; a name without the CLAUDEQ_ prefix
// gets it (short names are cheaper for the fuzzer to mutate).
func parseEnv(data []byte) map[string]string {
	env := map[string]string{}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok {
			continue
		}
		key := strings.TrimSpace(string(k))
		if !strings.HasPrefix(key, "CLAUDEQ_") && strings.ToUpper(key) == key && key != "" && !strings.Contains(key, "_KEY_") {
			key = "CLAUDEQ_" + key
		}
		env[key] = string(v)
	}
	return env
}

// FuzzLoad runs Load on a fuzzed environment (NAME=value lines, a map-backed
// getenv) and a fuzzed nodes file (written to a temporary file when
// CLAUDEQ_NODES_FILE is set; no other file is read but time zones).
// Properties: an accepted configuration keeps the invariants Load promises
// (positive intervals, known enum values, RetryMax ≥ RetryBase, …); and a
// secret (a value of the URL, key and password variables, or the password
// of a URL) shows neither in the error nor in the configuration printed
// with %v, %+v, %#v or as JSON.
func FuzzLoad(f *testing.F) {
	full := strings.Join([]string{
		"HTTP_ADDR=127.0.0.1:8080", "REDIS_URL=redis://:hunter2-redis@127.0.0.1:6379/0", "MONGO_URI=mongodb://u:hunter2-mongo@127.0.0.1:27017",
		"MONGO_DATABASE=claudeq", "UPSTREAM_URL=https://api.anthropic.com", "UPSTREAM_API_KEY=sk-ant-api03-secretsecret",
		"UPSTREAM_TIMEOUT=5m", "DEV_API_KEY=cqk_devdevdevdev", "CACHE_TTL=1h", "MAX_BODY_BYTES=1048576", "WORKER_CONCURRENCY=100",
		"JOB_MAX_RETRIES=8", "RETRY_BASE=1s", "RETRY_MAX=5m", "TIMEZONE=Europe/Berlin", "QUOTA_USER_DAILY_USD=12.50",
		"BALANCER=round_robin", "FALLBACK_MODELS=opus=sonnet,sonnet=haiku", "WEBHOOK_ALLOW=http://127.0.0.1, 10.0.0.0/8",
		"WEBHOOK_SCHEDULE=0,5s,5m", "CACHE_REDIS_URL=rediss://:hunter3-cache@cache:6380", "LOG_LEVEL=debug", "LOG_FORMAT=text",
		"TRUSTED_PROXIES=10.0.0.0/8,192.0.2.10", "CORS_ALLOWED_ORIGINS=https://app.example.com", "RATELIMIT_IP=60/m",
		"RATELIMIT_TIERS=standard=600/1000000,free=60/40000", "POLICY_ACTION=block", "POLICY_DEPARTMENTS=legal=block",
		"POLICY_DETECT=email", `POLICY_PATTERNS=employee_id=\bEMP-\d{6}\b; project=(?i)falcon`,
		"ENCRYPTION_KEYS=k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "AUDIT_HMAC_KEY=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw==",
		"MONITORING=read-only", "BATCH_MAX_REQUESTS=10", "BATCH_EXPIRY=1h",
	}, "\n")
	nodes := "nodes:\n  - name: a\n    url: https://api.anthropic.com\n    api_key: ${ANTHROPIC_KEY_1}\n    weight: 2\n" +
		"  - name: b\n    url: http://10.0.0.2:8080/v1\n    api_key: sk-ant-literal-node-key\n    models: [\"claude-haiku-*\"]\n"
	for _, s := range []struct{ env, nodes string }{
		{"", ""},
		{full, ""},
		{full + "\nNODES_FILE=nodes.yaml\nANTHROPIC_KEY_1=sk-ant-from-env-1234", nodes},
		{"NODES_FILE=x\n", "nodes: []"},
		{"REDIS_URL=hunter2secret:pw@host\nMONGO_URI=mongodb://a:b@c:d:e", ""},
		{"REDIS_URL=redis://user:hunter2@[::1\nUPSTREAM_URL=ftp://x\nRETRY_BASE=1h\nRETRY_MAX=1m", ""},
		{"TIMEZONE=../../etc/passwd\nTIMEZONE=Local", ""},
		{"ENCRYPTION_KEYS=k1:c2hvcnQ=,k1:AAAA\nAUDIT_HMAC_KEY=c2hvcnQ=", ""},
		{"HEALTH_INTERVAL=0s\nIDEMPOTENCY_TTL=1s\nBALANCER=x\nLOG_LEVEL=x\nMONITORING=x\nHSTS_INCLUDE_SUBDOMAINS=maybe", ""},
		{"QUOTA_USER_DAILY_USD=-1\nMAX_BODY_BYTES=1\nFALLBACK_MODELS=a,=b\nPOLICY_DEPARTMENTS=x=shred", ""},
	} {
		f.Add([]byte(s.env), []byte(s.nodes))
	}
	path := filepath.Join(f.TempDir(), "nodes.yaml") // one per worker process, rewritten by each input
	f.Fuzz(func(t *testing.T, data, nodesFile []byte) {
		env := parseEnv(data)
		if strings.TrimSpace(env["CLAUDEQ_NODES_FILE"]) != "" {
			if err := os.WriteFile(path, nodesFile, 0o600); err != nil {
				t.Fatal(err)
			}
			env["CLAUDEQ_NODES_FILE"] = path
		}
		c, err := Load(Map(env))

		var secrets []string
		for _, k := range secretKeys {
			secrets = append(secrets, secretParts(env[k])...)
		}
		var shown []string
		if err != nil {
			shown = append(shown, err.Error())
		}
		js, jerr := json.Marshal(c)
		if jerr != nil {
			t.Fatalf("configuration does not marshal: %v", jerr)
		}
		shown = append(shown, string(js), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c))
		for _, s := range secrets {
			if publicToo(env, nodesFile, s) {
				continue
			}
			for _, out := range shown {
				if strings.Contains(out, s) {
					t.Fatalf("secret %q shows in %.300q", s, out)
				}
			}
		}
		if err != nil {
			return
		}

		switch {
		case c.HealthInterval <= 0, c.RetentionInterval <= 0, c.ReconcileInterval <= 0, c.Batches.Expiry <= 0,
			c.Batches.SweepInterval <= 0, c.Security.AuditAnchorInterval <= 0:
			t.Fatalf("an interval is not positive: %+v", c)
		case c.IdempotencyTTL < time.Minute, c.RetryMax < c.RetryBase:
			t.Fatalf("idempotency %v, retry %v..%v", c.IdempotencyTTL, c.RetryBase, c.RetryMax)
		case c.MaxBodyBytes < 1024, c.WorkerConcurrency < 1, c.DefaultMaxTokens < 1, c.NodeFailures < 1,
			c.Batches.MaxRequests < 1, c.Batches.MaxBytes < 1024, c.WebhookMaxBytes < 1024, c.Security.AuditBuffer < 1:
			t.Fatalf("a bound is below its minimum: %+v", c)
		case c.QuotaUserDaily < 0, c.QuotaDepartmentDaily < 0, c.QuotaTotalDaily < 0, c.QuotaTotalMonthly < 0:
			t.Fatalf("a negative quota: %+v", c)
		case c.LogFormat != "json" && c.LogFormat != "text":
			t.Fatalf("log format %q", c.LogFormat)
		case c.Timezone == nil, c.WebhookAllow == nil, len(c.WebhookSchedule) == 0:
			t.Fatalf("a nil setting: %+v", c)
		case c.Security.Monitoring != "on" && c.Security.Monitoring != "off" && c.Security.Monitoring != "read-only":
			t.Fatalf("monitoring %q", c.Security.Monitoring)
		case !c.Security.PolicyAction.Valid():
			t.Fatalf("policy action %q", c.Security.PolicyAction)
		}
		if env["CLAUDEQ_NODES_FILE"] != "" && len(c.Nodes) == 0 {
			t.Fatal("a nodes file gave no nodes and no error")
		}
		for _, d := range []time.Duration{c.UpstreamTimeout, c.CacheTTL, c.JobTimeout, c.Retention, c.KeyCacheTTL,
			c.ShutdownTimeout, c.WebhookTimeout, c.WebhookSecretGrace, c.NodeCooldown, c.QuotaReconcileAfter} {
			if d < 0 {
				t.Fatalf("a negative duration: %+v", c)
			}
		}
		for _, w := range c.WebhookSchedule {
			if w < 0 {
				t.Fatalf("schedule %v", c.WebhookSchedule)
			}
		}
		for from, to := range c.FallbackModels {
			if from == "" || len(to) == 0 || slicesContain(to, "") {
				t.Fatalf("fallback models %v", c.FallbackModels)
			}
		}
		if (c.Security.EncryptionKeys != "") != (c.Security.EncryptionRing() != nil) {
			t.Fatal("encryption keys accepted but no key ring")
		}
	})
}

// secretParts returns what of a secret value must not show: the value, and
// the password of a URL. Short strings are skipped: they occur anywhere.
func secretParts(v string) []string {
	v = strings.TrimSpace(v)
	var out []string
	if len(v) >= 8 {
		out = append(out, v)
	}
	if u, err := url.Parse(v); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && len(pw) >= 8 {
			out = append(out, pw)
		}
	}
	return out
}

// publicToo reports whether s is also (part of) a value that is not
// secret, of the nodes file, or of the text Load writes itself (defaults,
// messages: anything in the source of internal/...), so may show.
func publicToo(env map[string]string, nodesFile []byte, s string) bool {
	if strings.Contains(staticText, s) || bytes.Contains(nodesFile, []byte(s)) {
		return true
	}
	for k, v := range env {
		if !slicesContain(secretKeys, k) && strings.Contains(v, s) {
			return true
		}
	}
	return false
}

// staticText is the default configuration printed, and the source of the
// packages whose messages Load returns.
var staticText = func() string {
	c, _ := Load(Map(nil))
	var b strings.Builder
	fmt.Fprintf(&b, "%v\n%+v\n%#v\n", c, c, c)
	files, _ := filepath.Glob("../*/*.go")
	for _, f := range files {
		if src, err := os.ReadFile(f); err == nil && !strings.HasSuffix(f, "_test.go") {
			b.Write(src)
		}
	}
	return b.String()
}()

func slicesContain(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
