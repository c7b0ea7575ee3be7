#!/usr/bin/env bash
# Makes sure promtool (Debian's prometheus package) is on PATH for the
# tests that lint the metrics and check deployments/prometheus
# (internal/metrics, deployments: part of go test). The tests never install
# anything themselves: without promtool they skip, or fail under
# CLAUDEQ_REQUIRE_INTEGRATION=1 (CI). This script installs the package when
# it can (root or passwordless sudo, and apt-get); otherwise it prints one
# line and lets the tests run (and, in CI, stops here).
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "promtool not found: installing Debian's prometheus package" >&2
  # RUNLEVEL=1 keeps the package from starting a Prometheus server.
  if $sudo apt-get update -qq >/dev/null 2>&1 &&
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "promtool not found and could not be installed (needs apt-get and root): the promtool checks will skip; install it with 'apt-get install prometheus'" >&2
[ "${CLAUDEQ_REQUIRE_INTEGRATION:-}" != "1" ]
