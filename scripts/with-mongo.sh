#!/bin/sh
# with-mongo.sh CMD [ARGS...] runs CMD with CLAUDEQ_TEST_MONGO_URI pointing at
# a MongoDB-wire server of its own: the embedded FerretDB of internal/devmongo
# (SQLite backend) as a separate process, built without -race, on a free
# loopback port and a temporary data directory, stopped when CMD ends.
#
# Why: without the variable, every test binary embeds that server in its own
# process, and under `go test -race` the server's code runs with the race
# detector too, about ten times slower; the end-to-end tests of internal/app
# spent most of their time there. Tests still get a fresh database each
# (internal/mongotest.DB); tests that stop and start a server of their own
# (mongotest.NewServer) still embed one.
#
# When CLAUDEQ_TEST_MONGO_URI is already set (a real MongoDB), CMD runs as is.
set -eu

if [ -n "${CLAUDEQ_TEST_MONGO_URI:-}" ]; then
	exec "$@"
fi

GO=${GO:-go}
dir=$(mktemp -d "${TMPDIR:-/tmp}/claudeq-test-mongo-XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$GO" build -o "$dir/mongoserver" ./internal/chaos/mongoserver
mkdir "$dir/data"
"$dir/mongoserver" --addr 127.0.0.1:0 --dir "$dir/data" >"$dir/out" 2>"$dir/err" &
pid=$!

uri=
i=0
while [ -z "$uri" ]; do
	uri=$(sed -n 's/^mongoserver listening on //p' "$dir/out")
	[ -n "$uri" ] && break
	if ! kill -0 "$pid" 2>/dev/null || [ "$i" -ge 300 ]; then
		echo "with-mongo.sh: the test MongoDB-wire server did not start:" >&2
		cat "$dir/err" >&2
		exit 1
	fi
	i=$((i + 1))
	sleep 0.1
done

echo "== tests use the MongoDB-wire server at $uri (FerretDB, its own process, no -race)"
rc=0
CLAUDEQ_TEST_MONGO_URI=$uri "$@" || rc=$?
exit "$rc"
