# pgwarden developer targets. CI runs `make test` (see .ci/run).
#
#   make test          go vet, then every package's tests with the race detector
#   make build         bin/pgwarden
#   make demo          bin/pgwarden demo (throwaway PostgreSQL + pgwarden; Ctrl-C stops both)
#   make lint          gofmt check + go vet
#   make staticcheck   staticcheck, the version go.mod pins as a tool (go tool staticcheck);
#                      CI runs it after the tests
#   make bench         quick benchmark (about 2 minutes): pgwarden beside PgBouncer
#                      and direct PostgreSQL, written to bench/RESULTS.md
#   make bench-full    the full benchmark matrix (see bench/README.md)
#   make reliability   the reliability scorecard, RELIABILITY.md (hours; reliability-quick: minutes;
#                      soak-short: the soak for 30 s, as CI runs it)
#   make image         the container image (deploy/container; podman, buildah or docker)
#   make check-deploy  the Helm chart's checks (deploy/check, a Go module of its own:
#                      helm lint and template, strict decoding, config validation)
#   make fuzz          every Go fuzz target, FUZZTIME each (default 10m), one after
#                      the other; per-target figures on stdout and as JSON in FUZZJSON
#   make fuzz-short    the same for 10s a target (what CI runs)
#
# PKGS narrows vet/test/lint, e.g. `make test PKGS=./pooler/pgtest/`.
#
# Tests start their own PostgreSQL (pooler/pgtest): initdb, pg_ctl and
# postgres must be installed (Debian: apt-get install postgresql).

export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)

GO   ?= go
PKGS ?= ./...

.DEFAULT_GOAL := build
.PHONY: test build demo deps lint staticcheck bench bench-full reliability reliability-quick soak-short image check-deploy fuzz fuzz-short

# deps installs what a fresh Debian machine lacks (PostgreSQL server and
# client, pgbench, make/gcc) with apt, as .ci/run does; it does nothing when
# they are present. Installing needs root.
deps:
	@if [ -z "$$PGWARDEN_DEPS_DONE" ] && ! { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } ; then \
		bash .ci/run --install-only; \
	fi

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	# The relay without the event loop (event_loop = off): what TLS and
	# session-mode clients, and larger machines, use.
	PGWARDEN_TEST_EVENT_LOOP=off $(GO) test -race -count=1 -timeout 10m ./pooler/

build:
	$(GO) build -o bin/pgwarden ./cmd/pgwarden

# Built, then run (not `go run`, which exits 1 on Ctrl-C and makes make
# report an error after a clean stop).
demo: deps
	$(GO) build -o bin/pgwarden ./cmd/pgwarden
	bin/pgwarden demo

lint:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) tool staticcheck $(PKGS)

# BENCHFLAGS adds harness flags, e.g. `make bench BENCHFLAGS='-note "busy machine"'`.
bench:
	$(GO) run ./bench -quick $(BENCHFLAGS)

bench-full:
	$(GO) run ./bench $(BENCHFLAGS)

# The reliability scorecard, RELIABILITY.md: fault, identity-provider,
# throttling and security tests, every fuzz target (10 minutes each), a
# 10,000-client soak and a 1,000/s TLS sign-in storm. Takes hours; the
# quick variant takes a few minutes. RELFLAGS adds flags, e.g.
# `make reliability RELFLAGS='-sections soak,signin'`.
reliability:
	$(GO) run ./bench reliability $(RELFLAGS)

reliability-quick:
	$(GO) run ./bench reliability -quick $(RELFLAGS)

# The soak's short variant, run by CI: 1,000 transaction-mode clients for
# 30 s against pool size 20; fails on any error or failed sign-in. Its
# report goes to bin/, not RELIABILITY.md.
soak-short: deps
	$(GO) run ./bench reliability -quick -sections soak -soak-clients 1000 -soak-duration 30s -check -out bin/RELIABILITY-soak-short.md

# IMAGE names the image (default pgwarden:<version> and pgwarden:latest).
image:
	deploy/container/build.sh $(if $(IMAGE),-t $(IMAGE))

# deploy/check has its own go.mod (Helm and the Kubernetes API types stay
# out of the main one), so ./... above does not reach it.
check-deploy:
	cd deploy/check && $(GO) vet ./... && $(GO) test -count=1 ./...

# Fuzzing (see README, Testing): internal/fuzzrun finds the FuzzXxx targets,
# runs `go test -fuzz` on each for FUZZTIME with FUZZPARALLEL workers, and
# writes executions, new interesting inputs, corpus size and any failing
# input per target to FUZZJSON. A failing input is saved under the
# package's testdata/fuzz/FuzzXxx and the target fails. FUZZRUN narrows
# the targets by regexp, e.g. `make fuzz FUZZTIME=1m FUZZRUN=FuzzStartup`.
# The pooler package's targets start a throwaway PostgreSQL (like its
# tests), in each fuzzing process.
FUZZTIME     ?= 10m
FUZZPARALLEL ?= 1
FUZZJSON     ?= bin/fuzz-results.json
FUZZRUN      ?=

fuzz: deps
	$(GO) run ./internal/fuzzrun -fuzztime $(FUZZTIME) -parallel $(FUZZPARALLEL) -json $(FUZZJSON) $(if $(FUZZRUN),-run '$(FUZZRUN)')

fuzz-short:
	$(MAKE) fuzz FUZZTIME=10s FUZZJSON=bin/fuzz-short.json
