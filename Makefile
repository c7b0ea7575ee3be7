# claudeq — run `make help` for the list of targets.
SHELL := /usr/bin/env bash
GO    ?= go

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run everything in one process (claudeq dev): embedded Redis, FerretDB and simulated upstream
	@scripts/require-go.sh && $(GO) run ./cmd/claudeq dev

.PHONY: test
test: ## Run all tests against real servers (installs redis-server, chromium and promtool if it can), then every fuzz target for TEST_FUZZTIME (5000x: executions), then the short reliability scenarios
	@scripts/require-go.sh && scripts/ensure-redis.sh && scripts/ensure-chromium.sh && scripts/ensure-promtool.sh && GO=$(GO) scripts/with-mongo.sh $(GO) test -race -count=1 -timeout 20m ./... \
	  && scripts/fuzz.sh $(or $(TEST_FUZZTIME),5000x) \
	  && echo "== reliability scenarios, short scale (internal/chaos, 2–6 minutes)" && $(GO) test -tags chaos -count=1 -timeout 20m ./internal/chaos

.PHONY: chaos
chaos: ## Reliability scenarios at full scale (kill, restart, starve every part; about an hour), then their figures
	@scripts/require-go.sh && scripts/ensure-redis.sh && scripts/chaos.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 60s)
	@scripts/require-go.sh && scripts/fuzz.sh $(or $(FUZZTIME),60s)

.PHONY: bench
bench: ## Measure the job path and write docs/benchmarks.md
	@scripts/require-go.sh && scripts/ensure-redis.sh && $(GO) run ./scripts/bench -out docs/benchmarks.md

.PHONY: lint
lint: ## gofmt, go vet, and golangci-lint's layering rules (.golangci.yml; the linter is pinned in tools/go.mod)
	@scripts/require-go.sh && GO=$(GO) scripts/lint.sh

.PHONY: build
build: ## Build the binaries into bin/ (as the Dockerfile does: stripped, with the commit in --version)
	$(GO) build -trimpath -ldflags "-s -w -X github.com/claudeq/claudeq/internal/app.commit=$$(git rev-parse HEAD 2>/dev/null)" -o bin/ ./cmd/...
