#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium for the browser test
# of /monitoring (internal/monitor/browser_test.go, part of go test). The
# test never installs anything itself: without Chromium it skips, or fails
# under CLAUDEQ_REQUIRE_INTEGRATION=1 (CI). This script installs the
# package when it can (root or passwordless sudo, and apt-get); otherwise it
# prints one line and lets the tests run (and, in CI, stops here).
set -euo pipefail
if [ -x "${CLAUDEQ_CHROMIUM:-/usr/bin/chromium}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "chromium not found: installing Debian's chromium package" >&2
  if $sudo apt-get update -qq >/dev/null 2>&1 &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "chromium not found and could not be installed (needs apt-get and root): the /monitoring browser test will skip; install it with 'apt-get install chromium'" >&2
[ "${CLAUDEQ_REQUIRE_INTEGRATION:-}" != "1" ]
