#!/usr/bin/env bash
# Makes sure redis-server is on PATH for the tests, which start their own
# servers on free ports. Installs Debian's package when it can; otherwise
# stops with one line saying what to install.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -n "${CLAUDEQ_REDIS_SERVER:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "redis-server not found: installing Debian's redis-server package" >&2
  if $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; then
    exit 0
  fi
fi
if command -v brew >/dev/null 2>&1 && brew install redis >/dev/null; then
  exit 0
fi
echo "redis-server not found and could not be installed: install Redis 7 (e.g. 'apt-get install redis-server' or 'brew install redis') and rerun" >&2
exit 1
