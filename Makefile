# Nox. `make demo` and `make test` work on a fresh clone: both install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export ONNXRUNTIME_NODE_INSTALL := skip
export npm_config_fund := false
export npm_config_audit := false

NODE_STAMP := node_modules/.package-lock.json

.PHONY: help tools tools-demo tools-bench images deps build generate lint test test-unit demo bench bench-instructions clean reap

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

tools: ## Install every pinned tool the tests use under .tools/ (Envoy, etcd, Kubernetes, CoreDNS, helm; apt: Redis, PostgreSQL, containerd)
	@bash scripts/tools.sh test

tools-demo: ## Only what the demo runs (Envoy)
	@bash scripts/tools.sh demo

tools-bench: ## Only what the benchmarks run (Envoy, wrk, ghz, valgrind)
	@bash scripts/tools.sh bench

$(NODE_STAMP): package.json package-lock.json
	ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	@touch $@

deps: $(NODE_STAMP) ## Install npm dependencies from the lock file

build: deps ## Generate protobuf code and compile TypeScript to dist/
	npm run --silent build

generate: build ## Regenerate crds/ and common/resources/types.gen.ts from common/resources/kinds/
	node dist/scripts/gen-resources.js

lint: deps ## Biome lint + format check
	npx biome check .

images: tools ## Build the Nox, Redis and PostgreSQL images from images/ (no registry) into .run/images/
	@bash scripts/images.sh

test: tools build lint images ## Start every real component and run every test
	@bash scripts/test.sh

test-unit: build ## Only the tests that need no external component
	npx vitest run common sidecar operator proto

demo: tools-demo build ## Real Envoy + sidecar on the examples/ policy; prints what to try
	node dist/scripts/demo.js

bench: tools-bench build ## Load benchmarks (SCENARIO=name DURATION=s CONCURRENCY=n); not part of test
	node dist/bench/run.js $(SCENARIO)

bench-instructions: tools-bench build ## Instructions per check under callgrind (SCENARIO=allow|jwt-cached|jwt-fresh CHECKS=n WARMUP=n RUNS=n)
	node dist/bench/instructions.js $(SCENARIO) $(if $(CHECKS),--checks $(CHECKS)) $(if $(WARMUP),--warmup $(WARMUP)) $(if $(RUNS),--runs $(RUNS))

reap: ## Stop anything a crashed test run left running
	@bash scripts/reap.sh

clean: ## Remove build output and test scratch (keeps .tools/)
	rm -rf dist proto/generated .run
