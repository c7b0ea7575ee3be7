#!/usr/bin/env bash
# Runs every Go fuzz target of the module, one by one (go test fuzzes one
# target per invocation), for $1 each: a duration (make fuzz: 60s) or a
# number of executions (make test, after the tests pass: 5000x). The first
# run of a package also builds its instrumented test binary.
#
# A failing input is written under the package's testdata/fuzz/<Target>/:
# commit it with the fix, and plain go test replays it from then on (plain
# go test runs the seed corpora and those inputs, without fuzzing).
#
# Go before 1.27 can fail a duration-bounded run with a bare "context
# deadline exceeded" when the time is up (golang/go#75804), most often on a
# loaded machine; such a run, with no failing input written, is run once
# more. A count (5000x) has no deadline to race, which is why make test
# uses one.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60s}"
status=0
failed=()
start=$SECONDS
out=$(mktemp)
trap 'rm -f "$out"' EXIT
while IFS= read -r file; do
  pkg="./$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    for try in 1 2; do
      echo "== $pkg $target ($budget)"
      if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$pkg" 2>&1 | tee "$out"; then
        break
      fi
      if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
        echo "fuzz: $target stopped with a bare deadline error (golang/go#75804?); running it again"
        continue
      fi
      status=1
      failed+=("$pkg $target")
      break
    done
  done
done < <(grep -rlE '^func Fuzz' --include='*_test.go' internal cmd pkg 2>/dev/null | sort)
echo "fuzz: $((SECONDS - start))s in all"
if [ "$status" -ne 0 ]; then
  printf 'fuzz: FAILED %s\n' "${failed[@]}"
fi
exit "$status"
