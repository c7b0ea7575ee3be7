#!/usr/bin/env bash
# make chaos: the reliability scenarios of internal/chaos at full scale, one
# at a time (their figures are measured alone), then a summary of the
# figures. Pass a pattern to run some: scripts/chaos.sh 'TestKillRedis|TestKillAPI'.
# The figures are kept in chaos-report.json (CLAUDEQ_CHAOS_REPORT).
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:-.}"
report="${CLAUDEQ_CHAOS_REPORT:-$PWD/chaos-report.json}"
log="${report%.json}.log"
echo "chaos: full scale, scenarios '$run' one at a time (about an hour for all); log: $log"
status=0
CLAUDEQ_CHAOS=full CLAUDEQ_CHAOS_REPORT="$report" CLAUDEQ_REQUIRE_INTEGRATION=1 \
  go test -tags chaos -count=1 -v -parallel 1 -timeout 3h -run "$run" ./internal/chaos >"$log" 2>&1 || status=$?
grep -E '^(--- (PASS|FAIL)|ok|FAIL)' "$log" || true
echo
echo "figures ($report):"
go run ./scripts/chaos-summary "$report" || true
exit "$status"
