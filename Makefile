# Keybroker: the two commands a fresh Debian 12 / Ubuntu machine needs are
# `make run` and `make test`. Both install missing system packages first.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PACKAGES := softhsm2 swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config opensc openssl libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus curl python3-jwt python3-cryptography postgresql gdb
DEV_DIR := $(CURDIR)/.dev
export CARGO_TERM_COLOR ?= never
# Incremental caches tripled the target directory (tens of GB) and a full disk
# failed a CI build; one-shot builds (CI, `make test`) gain nothing from them.
export CARGO_INCREMENTAL ?= 0

.PHONY: deps test lint run demo hsm-tour bench fuzz soak soak-memory

## Install missing system packages (apt-get, with sudo when not root) and cargo-nextest.
deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

## Formatting and lints, warnings denied.
lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## The whole suite: unit tests and every test against real SoftHSM2 tokens and swtpm.
test: lint
	cargo nextest run --workspace --locked --no-fail-fast

## Start Keybroker in dev mode (SoftHSM2 token, swtpm, development CA) in the foreground.
run: deps
	cargo build --locked -q -p broker --bin keybroker
	./target/debug/keybroker serve --dev --state-dir $(DEV_DIR)/broker

## The end-to-end demo: a development broker in a temporary directory; an admin makes
## keys, a workload signs, encrypts and decrypts, and the policy refuses what it must.
demo: deps
	./scripts/demo.sh

## The HSM tour: a token in ./.dev, keys made inside it, and their use.
hsm-tour: deps
	@mkdir -p $(DEV_DIR)/tokens && chmod 700 $(DEV_DIR)
	@printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
	  "$(DEV_DIR)/tokens" > $(DEV_DIR)/softhsm2.conf
	SOFTHSM2_CONF=$(DEV_DIR)/softhsm2.conf cargo run --locked -q -p hsm-backend --example tour -- $(DEV_DIR)

## Throughput of direct backend operations: HSM (1 and 2 threads) and TPM; then signing
## through the broker (gRPC + mTLS) beside the same token used directly.
bench: deps
	cargo bench --locked -p hsm-backend --bench throughput
	cargo bench --locked -p softhsm-tests --bench broker
	cargo bench --locked -p softhsm-tests --bench identity
	cargo bench --locked -p softhsm-tests --bench secrets
	cargo bench --locked -p softhsm-tests --bench leases
	cargo bench --locked -p softhsm-tests --bench startup
	cargo bench --locked -p tpm-backend --bench throughput
	cargo bench --locked -p attest --bench verify
	cargo bench --locked -p sealed-format --bench throughput
	cargo bench --locked -p softhsm-tests --bench sealing
	cargo nextest run --locked -p softhsm-tests --test broker_sealing --run-ignored ignored-only two_gib

## Fuzz the attestation parsers and the sealed-data format (nightly toolchain,
## cargo-fuzz); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 180
fuzz: deps
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd attest && for t in snp_report tpm_quote policy; do \
	  cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
	cd sealed-format && for t in envelope round_trip; do \
	  cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## The kill -9 harness (not part of `make test`): a release broker killed SOAK_KILLS times
## (default 100) at random moments (SOAK_SEED) under concurrent clients, on one token, swtpm
## and store; fails if an acknowledged operation was lost or an orphan was left.
soak: deps
	cargo bench --locked -p softhsm-tests --bench soak

## The memory soak (not part of `make test`): the broker's RSS under 8 clients for
## SOAK_MINUTES (default 30); SOAK_HEAPTRACK=<prefix> profiles it with heaptrack.
soak-memory: deps
	@if [ -n "$$SOAK_HEAPTRACK" ] && ! command -v heaptrack >/dev/null; then \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq heaptrack gdb; fi
	cargo bench --locked -p softhsm-tests --bench soak_memory
