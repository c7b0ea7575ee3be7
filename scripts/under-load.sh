#!/usr/bin/env bash
# under-load.sh N CMD [ARGS...] runs CMD N times in a row while
# scripts/machineload keeps both CPUs busy (two spinning threads at normal
# priority) and opens 2,000 outgoing loopback connections a second; it
# prints each run's result and time, and stops at the first failure.
#
#   scripts/under-load.sh 20 go test -tags chaos -count=1 -timeout 30m ./internal/chaos
#   scripts/under-load.sh 3 make test
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1
shift
go build -o /tmp/claudeq-machineload ./scripts/machineload
/tmp/claudeq-machineload -cpus "${LOAD_CPUS:-2}" -conns "${LOAD_CONNS:-2000}" >/tmp/claudeq-machineload.log 2>&1 &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
sleep 2
for i in $(seq 1 "$n"); do
	start=$(date +%s)
	if "$@" >"/tmp/under-load-$i.log" 2>&1; then
		echo "run $i/$n: ok in $(($(date +%s) - start)) s ($(tail -1 /tmp/claudeq-machineload.log))"
	else
		echo "run $i/$n: FAILED after $(($(date +%s) - start)) s; log: /tmp/under-load-$i.log"
		exit 1
	fi
done
