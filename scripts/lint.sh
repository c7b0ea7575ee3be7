#!/usr/bin/env bash
# make lint: gofmt, go vet, and golangci-lint (pinned in tools/go.mod) with
# the layering rules of .golangci.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "$unformatted"
	echo "gofmt: files above need formatting"
	exit 1
fi
"$GO" vet ./...
"$GO" tool -modfile=tools/go.mod golangci-lint run ./...
