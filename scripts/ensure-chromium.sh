#!/usr/bin/env bash
# Makes sure Debian's chromium is installed at /usr/bin/chromium for the
# browser test of /monitoring (internal/monitor, build tag "browser"). The
# test never installs anything itself: it skips without /usr/bin/chromium,
# or fails under CLAUDEQ_REQUIRE_INTEGRATION=1. Run this first.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "chromium not found: installing Debian's chromium package" >&2
  if $sudo apt-get update -qq >/dev/null &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
    exit 0
  fi
fi
echo "chromium not found and could not be installed: install Chromium (e.g. 'apt-get install chromium') so that /usr/bin/chromium exists, and rerun" >&2
exit 1
