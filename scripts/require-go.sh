#!/usr/bin/env bash
# Stops with one clear line when Go is missing or too old.
set -euo pipefail
if ! command -v go >/dev/null 2>&1; then
  echo "claudeq needs Go 1.26 or newer: install it from https://go.dev/dl/ and put it on PATH" >&2
  exit 1
fi
v=$(go env GOVERSION | sed 's/^go//')
major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 26 ]; }; then
  echo "claudeq needs Go 1.26 or newer (found $v)" >&2
  exit 1
fi
