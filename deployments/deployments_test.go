// Package deployments_test checks the deployment files that can be checked
// without a container engine or a cluster: every YAML file parses, the
// Grafana dashboard and the alerting rules query only metrics that
// internal/metrics exports (and scrape jobs that prometheus.yml defines),
// and the compose file and Kubernetes manifests hold together (selectors
// match pods, probes and resources are set, the autoscalers target the
// worker and read asynq's pending lists). promtool checks the Prometheus
// files themselves: scripts/promtool-check.sh.
package deployments_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/claudeq/claudeq/internal/metrics"
)

// decodeAll returns every document of a YAML file.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, path)
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

// decodeInto decodes a one-document YAML file into v, refusing unknown
// fields.
func decodeInto(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(v), path)
}

func TestEveryYAMLFileParses(t *testing.T) {
	t.Parallel()
	var n int
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			n++
			docs := decodeAll(t, path)
			require.NotEmpty(t, docs, "%s has no document", path)
		}
		return nil
	})
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 15)
}

// knownSeries are the series names dashboards and alerts may use.
func knownSeries() map[string]bool {
	known := map[string]bool{"up": true}
	for _, n := range metrics.Names() {
		known[n] = true
	}
	for _, h := range metrics.Histograms() {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			known[h+s] = true
		}
	}
	return known
}

var (
	// metricRef finds claudeq's metric names in a PromQL expression.
	metricRef = regexp.MustCompile(`\b(?:claude|claudeq|asynq)_[a-zA-Z0-9_]+\b`)
	jobRef    = regexp.MustCompile(`job="([^"]+)"`)
)

// checkExpr fails when expr uses a metric internal/metrics does not export
// or a scrape job prometheus.yml does not define.
func checkExpr(t *testing.T, where, expr string, known map[string]bool, jobs []string) {
	t.Helper()
	for _, m := range metricRef.FindAllString(expr, -1) {
		require.True(t, known[m], "%s: %q is not exported by internal/metrics (metrics.Names)", where, m)
	}
	for _, m := range jobRef.FindAllStringSubmatch(expr, -1) {
		require.Contains(t, jobs, m[1], "%s: no scrape job %q in prometheus.yml", where, m[1])
	}
}

func scrapeJobs(t *testing.T) []string {
	t.Helper()
	var cfg struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile("prometheus/prometheus.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	return jobs
}

func TestPrometheusScrapesEveryRole(t *testing.T) {
	t.Parallel()
	jobs := scrapeJobs(t)
	for _, j := range []string{"claudeq-api", "claudeq-worker", "claudeq-scheduler"} {
		require.Contains(t, jobs, j)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
			DNSSD   []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile("prometheus/prometheus.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	require.Equal(t, []string{"/etc/prometheus/alerts.yaml"}, cfg.RuleFiles)
	services := composeServices(t)
	for _, sc := range cfg.ScrapeConfigs {
		for _, sd := range sc.DNSSD {
			require.Equal(t, 9464, sd.Port, "%s scrapes CLAUDEQ_METRICS_ADDR's port", sc.JobName)
			for _, n := range sd.Names {
				require.Contains(t, services, n, "%s resolves a compose service", sc.JobName)
			}
		}
	}
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	var rules struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	decodeInto(t, "prometheus/alerts.yaml", &rules)
	var tests struct {
		RuleFiles          []string `yaml:"rule_files"`
		EvaluationInterval string   `yaml:"evaluation_interval"`
		Tests              []struct {
			Name          string `yaml:"name"`
			Interval      string `yaml:"interval"`
			InputSeries   []any  `yaml:"input_series"`
			AlertRuleTest []struct {
				EvalTime  string `yaml:"eval_time"`
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	decodeInto(t, "prometheus/alerts_test.yaml", &tests)
	require.Equal(t, []string{"alerts.yaml"}, tests.RuleFiles)
	firingTested := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				firingTested[at.Alertname] = true
			}
		}
	}

	known, jobs := knownSeries(), scrapeJobs(t)
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: only alerting rules here", g.Name)
			require.NotContains(t, names, r.Alert, "duplicate alert")
			names = append(names, r.Alert)
			require.Contains(t, []string{"info", "warning", "critical"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			require.NotEmpty(t, r.Annotations["description"], r.Alert)
			checkExpr(t, r.Alert, r.Expr, known, jobs)
			require.True(t, firingTested[r.Alert], "%s has no test in alerts_test.yaml in which it fires", r.Alert)
		}
	}
	// The alerts the brief of issue 8 asks for.
	for _, a := range []string{"ClaudeqQueueBacklogGrowing", "ClaudeqUpstreamNodeUnhealthy", "ClaudeqUpstreamErrorRatioHigh",
		"ClaudeqBudgetNearlyExhausted", "ClaudeqWorkersAbsent"} {
		require.Contains(t, names, a)
	}
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("grafana/claudeq.json")
	require.NoError(t, err)
	var dash struct {
		UID        string         `json:"uid"`
		Title      string         `json:"title"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	require.Equal(t, "claudeq-overview", dash.UID)
	require.NotEmpty(t, dash.Title)
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
		if q, ok := v.Query.(map[string]any); ok {
			checkExpr(t, "variable "+v.Name, q["query"].(string), knownSeries(), scrapeJobs(t))
		}
	}
	require.Contains(t, vars, "datasource")

	known, jobs := knownSeries(), scrapeJobs(t)
	ids := map[int]bool{}
	var exprs []string
	for _, p := range dash.Panels {
		require.False(t, ids[p.ID], "duplicate panel id %d", p.ID)
		ids[p.ID] = true
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotNil(t, p.Datasource, p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, p.Title)
			checkExpr(t, p.Title, tg.Expr, known, jobs)
			exprs = append(exprs, tg.Expr)
		}
	}
	// What the dashboard must show (issue 8): request rate, latency
	// percentiles, errors by type, tokens and cost by model and department,
	// queue depth and latency, node health, quota refusals.
	all := strings.Join(exprs, "\n")
	for _, want := range []string{
		"rate(claude_requests_total", "histogram_quantile(0.95, sum by (le) (rate(claude_response_time_seconds_bucket",
		"sum by (error_type) (rate(claude_errors_total", "sum by (model) (rate(claude_tokens_consumed_total",
		"sum by (model) (rate(claudeq_cost_usd_total", "sum by (department) (rate(claudeq_cost_usd_total",
		"asynq_tasks_enqueued_total", "asynq_queue_latency_seconds", "claudeq_upstream_node_health",
		"claudeq_quota_refusals_total",
	} {
		require.Contains(t, all, want)
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	t.Parallel()
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, Access, URL string
			IsDefault                    bool           `yaml:"isDefault"`
			Editable                     bool           `yaml:"editable"`
			JSONData                     map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	decodeInto(t, "grafana/provisioning/datasources/prometheus.yaml", &ds)
	require.Len(t, ds.Datasources, 1)
	require.Equal(t, "prometheus", ds.Datasources[0].UID)
	require.Equal(t, "http://prometheus:9090", ds.Datasources[0].URL)
	require.Contains(t, composeServices(t), "prometheus")
}

// compose is the part of compose.yaml the checks read.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Deploy      struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"deploy"`
		DependsOn   any `yaml:"depends_on"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Profiles []string
	} `yaml:"services"`
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	require.NoError(t, err)
	var c compose
	require.NoError(t, yaml.Unmarshal(b, &c)) // resolves the anchors and merge keys
	return c
}

func composeServices(t *testing.T) []string {
	t.Helper()
	var out []string
	for name := range loadCompose(t).Services {
		out = append(out, name)
	}
	return out
}

func TestCompose(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	s := c.Services
	for _, name := range []string{"api", "worker", "scheduler", "redis-queue", "redis-cache",
		"mongo-1", "mongo-2", "mongo-3", "mongo-init", "prometheus", "grafana", "claude-sim"} {
		require.Contains(t, s, name)
	}
	require.Equal(t, 2, s["api"].Deploy.Replicas)
	require.Equal(t, 2, s["worker"].Deploy.Replicas)
	require.Equal(t, []string{"/usr/local/bin/api"}, s["api"].Command)
	require.Equal(t, []string{"/usr/local/bin/worker"}, s["worker"].Command)
	require.Equal(t, []string{"/usr/local/bin/scheduler"}, s["scheduler"].Command)
	for _, role := range []string{"api", "worker", "scheduler"} {
		env := s[role].Environment
		require.Equal(t, "redis://redis-queue:6379/0", env["CLAUDEQ_REDIS_URL"], role)
		require.Equal(t, "redis://redis-cache:6379/0", env["CLAUDEQ_CACHE_REDIS_URL"], role)
		require.Contains(t, env["CLAUDEQ_MONGO_URI"], "replicaSet=rs0", role)
		require.Equal(t, "0.0.0.0:9464", env["CLAUDEQ_METRICS_ADDR"], role)
		require.Equal(t, []string{"CMD", "/usr/local/bin/" + role, "healthcheck"}, s[role].Healthcheck.Test,
			"%s: a healthcheck that works in the distroless image (no shell, no curl)", role)
	}
	queue := strings.Join(s["redis-queue"].Command, " ")
	require.Contains(t, queue, "--maxmemory-policy noeviction")
	require.Contains(t, queue, "--appendonly yes")
	require.Contains(t, queue, "--appendfsync always")
	require.Contains(t, strings.Join(s["redis-cache"].Command, " "), "--maxmemory-policy allkeys-lru")
	for _, m := range []string{"mongo-1", "mongo-2", "mongo-3"} {
		require.Contains(t, strings.Join(s[m].Command, " "), "--replSet rs0", m)
	}
	init := strings.Join(s["mongo-init"].Command, " ")
	for _, m := range []string{"mongo-1:27017", "mongo-2:27017", "mongo-3:27017"} {
		require.Contains(t, init, m)
	}
	require.Contains(t, s["prometheus"].Volumes, "./prometheus/alerts.yaml:/etc/prometheus/alerts.yaml:ro")
	require.Contains(t, s["grafana"].Volumes, "./grafana/claudeq.json:/var/lib/grafana/dashboards/claudeq.json:ro")
	for _, v := range append(s["prometheus"].Volumes, s["grafana"].Volumes...) {
		if src, _, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(src, "./") {
			_, err := os.Stat(src)
			require.NoError(t, err, "mounted file %s", src)
		}
	}
}

// k8s is the part of a Kubernetes object the checks read.
type k8s struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []struct {
					Name    string   `yaml:"name"`
					Image   string   `yaml:"image"`
					Command []string `yaml:"command"`
					Ports   []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					LivenessProbe  map[string]any `yaml:"livenessProbe"`
					ReadinessProbe map[string]any `yaml:"readinessProbe"`
					Resources      struct {
						Requests map[string]string `yaml:"requests"`
						Limits   map[string]string `yaml:"limits"`
					} `yaml:"resources"`
					SecurityContext struct {
						ReadOnlyRootFilesystem   bool `yaml:"readOnlyRootFilesystem"`
						AllowPrivilegeEscalation bool `yaml:"allowPrivilegeEscalation"`
					} `yaml:"securityContext"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount int `yaml:"minReplicaCount"`
		MaxReplicaCount int `yaml:"maxReplicaCount"`
		MinReplicas     int `yaml:"minReplicas"`
		MaxReplicas     int `yaml:"maxReplicas"`
		Triggers        []struct {
			Type              string            `yaml:"type"`
			Metadata          map[string]string `yaml:"metadata"`
			AuthenticationRef struct {
				Name string `yaml:"name"`
			} `yaml:"authenticationRef"`
		} `yaml:"triggers"`
		SecretTargetRef []struct {
			Parameter, Name, Key string
		} `yaml:"secretTargetRef"`
	} `yaml:"spec"`
}

// serviceSelector is a Service's spec.selector (a plain map, unlike the
// label selectors of Deployments and PDBs).
type serviceSelector struct {
	Spec struct {
		Selector map[string]string `yaml:"selector"`
	} `yaml:"spec"`
}

func loadK8s(t *testing.T) (objs []k8s, services map[string]map[string]string) {
	t.Helper()
	services = map[string]map[string]string{}
	files, err := filepath.Glob("kubernetes/*.yaml")
	require.NoError(t, err)
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var node yaml.Node
			if err := dec.Decode(&node); errors.Is(err, io.EOF) {
				break
			} else {
				require.NoError(t, err, f)
			}
			var o k8s
			require.NoError(t, node.Decode(&o), f)
			require.NotEmpty(t, o.APIVersion, f)
			require.NotEmpty(t, o.Kind, f)
			require.NotEmpty(t, o.Metadata.Name, f)
			if o.Kind == "Service" {
				var s serviceSelector
				require.NoError(t, node.Decode(&s), f)
				services[o.Metadata.Name] = s.Spec.Selector
			}
			objs = append(objs, o)
		}
	}
	return objs, services
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	objs, services := loadK8s(t)
	byKind := map[string][]k8s{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
		if o.Kind != "Namespace" {
			require.Equal(t, "claudeq", o.Metadata.Namespace, "%s/%s", o.Kind, o.Metadata.Name)
		}
	}
	var cm, secret k8s
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			cm = o
		case "Secret":
			secret = o
		}
	}
	shutdown, err := time.ParseDuration(cm.Data["CLAUDEQ_SHUTDOWN_TIMEOUT"])
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:9464", cm.Data["CLAUDEQ_METRICS_ADDR"])
	for _, k := range []string{"CLAUDEQ_REDIS_URL", "CLAUDEQ_CACHE_REDIS_URL", "CLAUDEQ_MONGO_URI", "CLAUDEQ_UPSTREAM_API_KEY"} {
		require.Contains(t, secret.StringData, k)
	}
	require.Contains(t, secret.StringData["CLAUDEQ_MONGO_URI"], "replicaSet=")

	deployments := map[string]k8s{}
	for _, d := range byKind["Deployment"] {
		deployments[d.Metadata.Name] = d
		tpl := d.Spec.Template
		require.True(t, subset(d.Spec.Selector.MatchLabels, tpl.Metadata.Labels), "%s: selector does not select its pods", d.Metadata.Name)
		require.True(t, tpl.Spec.SecurityContext.RunAsNonRoot, d.Metadata.Name)
		require.Greater(t, time.Duration(tpl.Spec.TerminationGracePeriodSeconds)*time.Second, shutdown,
			"%s: the grace period must exceed CLAUDEQ_SHUTDOWN_TIMEOUT", d.Metadata.Name)
		require.Equal(t, "true", tpl.Metadata.Annotations["prometheus.io/scrape"], d.Metadata.Name)
		require.Equal(t, "9464", tpl.Metadata.Annotations["prometheus.io/port"], d.Metadata.Name)
		require.NotEmpty(t, tpl.Metadata.Labels["app.kubernetes.io/component"], d.Metadata.Name)
		require.Len(t, tpl.Spec.Containers, 1, d.Metadata.Name)
		c := tpl.Spec.Containers[0]
		require.Equal(t, []string{"/usr/local/bin/" + c.Name}, c.Command, d.Metadata.Name)
		require.NotEmpty(t, c.LivenessProbe, d.Metadata.Name)
		require.NotEmpty(t, c.ReadinessProbe, d.Metadata.Name)
		for _, r := range []string{"cpu", "memory"} {
			require.NotEmpty(t, c.Resources.Requests[r], "%s requests.%s", d.Metadata.Name, r)
			require.NotEmpty(t, c.Resources.Limits[r], "%s limits.%s", d.Metadata.Name, r)
		}
		require.True(t, c.SecurityContext.ReadOnlyRootFilesystem, d.Metadata.Name)
		require.False(t, c.SecurityContext.AllowPrivilegeEscalation, d.Metadata.Name)
		var portNames []string
		for _, p := range c.Ports {
			portNames = append(portNames, p.Name)
		}
		require.Contains(t, portNames, "metrics", d.Metadata.Name)
		for probe, path := range map[*map[string]any]string{&c.LivenessProbe: "/livez", &c.ReadinessProbe: "/readyz"} {
			get, ok := (*probe)["httpGet"].(map[string]any)
			require.True(t, ok, "%s: probes ask the process's %s, not just its port", d.Metadata.Name, path)
			require.Equal(t, path, get["path"], d.Metadata.Name)
			require.Contains(t, portNames, get["port"], "%s probe port", d.Metadata.Name)
		}
	}
	for _, name := range []string{"claudeq-api", "claudeq-worker", "claudeq-scheduler"} {
		require.Contains(t, deployments, name)
	}

	for name, sel := range services {
		matched := false
		for _, d := range deployments {
			if subset(sel, d.Spec.Template.Metadata.Labels) {
				matched = true
			}
		}
		require.True(t, matched, "Service %s selects no Deployment's pods", name)
	}
	require.NotEmpty(t, byKind["PodDisruptionBudget"])
	for _, p := range byKind["PodDisruptionBudget"] {
		matched := false
		for _, d := range deployments {
			if subset(p.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
				matched = true
			}
		}
		require.True(t, matched, "PodDisruptionBudget %s selects no Deployment's pods", p.Metadata.Name)
	}

	// Worker autoscaling: KEDA on every asynq queue's pending list, or an HPA.
	require.Len(t, byKind["ScaledObject"], 1)
	so := byKind["ScaledObject"][0]
	require.Equal(t, "claudeq-worker", so.Spec.ScaleTargetRef.Name)
	require.GreaterOrEqual(t, so.Spec.MinReplicaCount, 1)
	require.Greater(t, so.Spec.MaxReplicaCount, so.Spec.MinReplicaCount)
	auths := map[string]k8s{}
	for _, a := range byKind["TriggerAuthentication"] {
		auths[a.Metadata.Name] = a
	}
	var lists []string
	for _, tr := range so.Spec.Triggers {
		require.Equal(t, "redis", tr.Type)
		lists = append(lists, tr.Metadata["listName"])
		require.NotEmpty(t, tr.Metadata["listLength"])
		a, ok := auths[tr.AuthenticationRef.Name]
		require.True(t, ok, "trigger authentication %s", tr.AuthenticationRef.Name)
		for _, ref := range a.Spec.SecretTargetRef {
			require.Equal(t, secret.Metadata.Name, ref.Name)
			require.Contains(t, secret.StringData, ref.Key)
		}
	}
	slices.Sort(lists)
	require.Equal(t, []string{"asynq:{batch}:pending", "asynq:{critical}:pending", "asynq:{default}:pending", "asynq:{webhooks}:pending"}, lists)
	require.Len(t, byKind["HorizontalPodAutoscaler"], 1)
	require.Equal(t, "claudeq-worker", byKind["HorizontalPodAutoscaler"][0].Spec.ScaleTargetRef.Name)

	// kustomization.yaml lists existing files and one autoscaler, not both.
	var kz struct {
		Resources []string `yaml:"resources"`
	}
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &kz))
	for _, r := range kz.Resources {
		_, err := os.Stat(filepath.Join("kubernetes", r))
		require.NoError(t, err, r)
	}
	require.NotContains(t, kz.Resources, "secret.example.yaml")
	require.False(t, slices.Contains(kz.Resources, "hpa.yaml") && slices.Contains(kz.Resources, "keda-scaledobject.yaml"))
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../Dockerfile")
	require.NoError(t, err)
	df := string(b)
	require.Contains(t, df, "CGO_ENABLED=0")
	require.Contains(t, df, "go build -trimpath")
	require.Contains(t, df, "./cmd/...")
	require.Regexp(t, `(?m)^FROM gcr\.io/distroless/static-debian12:nonroot$`, df)
	require.Regexp(t, `(?m)^USER 65532:65532$`, df)
	ignore, err := os.ReadFile("../.dockerignore")
	require.NoError(t, err)
	require.Contains(t, strings.Fields(string(ignore)), ".git")
}
