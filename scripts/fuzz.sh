#!/usr/bin/env bash
# make fuzz: runs every Go fuzz target of the module for $1 (default 60s)
# each. go test runs one fuzz target per invocation, so they go one by one.
# Plain go test (make test, CI) runs their seed corpora and the inputs kept
# under testdata/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-60s}"
status=0
while IFS= read -r file; do
  pkg="./$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    echo "== $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" || status=1
  done
done < <(grep -rlE '^func Fuzz' --include='*_test.go' internal cmd pkg 2>/dev/null | sort)
exit "$status"
