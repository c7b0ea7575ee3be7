#!/usr/bin/env bash
# Validates deployments/prometheus with promtool: the alerting rules parse
# (check rules), behave as their unit tests say (test rules), and
# prometheus.yml is a valid configuration (check config). Installs Debian's
# prometheus package (which ships promtool) when promtool is missing
# (scripts/ensure-promtool.sh). go test runs it too (deployments).
set -euo pipefail
cd "$(dirname "$0")/.."
CLAUDEQ_REQUIRE_INTEGRATION=1 scripts/ensure-promtool.sh
dir=deployments/prometheus
promtool --version 2>&1 | head -n1
promtool check rules "$dir/alerts.yaml"
# Relative rule_files in the test are resolved from the test file's folder.
promtool test rules "$dir/alerts_test.yaml"
# check config also reads the rule_files prometheus.yml names; they are
# mounted at /etc/prometheus in compose and Kubernetes, so check a copy
# whose rule_files point at this tree.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/etc/prometheus/alerts.yaml#$PWD/$dir/alerts.yaml#" "$dir/prometheus.yml" >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"
sed "s#/etc/prometheus/alerts.yaml#$PWD/$dir/alerts.yaml#" "$dir/prometheus-kubernetes.yml" >"$tmp/prometheus-kubernetes.yml"
# Debian builds promtool without the Kubernetes service discovery, so it
# cannot parse kubernetes_sd_configs; upstream builds can. Say so rather
# than fail on a missing plugin.
if out=$(promtool check config "$tmp/prometheus-kubernetes.yml" 2>&1); then
  echo "$out"
elif grep -q "field kubernetes_sd_configs not found" <<<"$out"; then
  echo "SKIPPED: $dir/prometheus-kubernetes.yml: this promtool was built without Kubernetes service discovery"
else
  echo "$out" >&2
  exit 1
fi
