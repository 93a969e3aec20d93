# Morsel's two entry points (see README):
#   make demo   convert the bundled digits CNN, inspect it, evaluate it
#   make test   install what the tests need, then fmt, clippy and all tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_TESTS := target/onnx-node-tests
MORSEL := target/release/morsel

.PHONY: demo test setup setup-rust setup-python lint conformance-data fuzz

demo: $(MORSEL)
	$(MORSEL) convert examples/digits/digits_cnn.onnx -o target/digits_cnn.morsel
	$(MORSEL) inspect target/digits_cnn.morsel
	$(MORSEL) eval target/digits_cnn.morsel --data examples/digits/digits_test.npz \
	    --reference examples/digits/digits_test_ref_logits.npy
	$(MORSEL) run target/digits_cnn.morsel --input x=examples/digits/sample_input.npy -d target/digits_out
	$(MORSEL) bench target/digits_cnn.morsel --dim N=1

$(MORSEL): FORCE
	cargo build --release -p morsel-compress --bin morsel
FORCE:

setup: setup-rust setup-python

setup-rust:
	rustup component add rustfmt clippy

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

setup-python: $(VENV)/.installed

conformance-data: setup-python
	$(PY) tests/conformance/generate.py $(NODE_TESTS)

lint: setup-rust
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p morsel-runtime --lib --no-default-features -- -D warnings

test: setup lint conformance-data
	cargo test --workspace --all-targets
	cargo test --workspace --doc
	$(MAKE) test-arm
	$(MAKE) test-wasm

# Per-platform test targets live in their own files.
include .ci/arm.mk
include .ci/wasm.mk

# Fuzz the reader (needs cargo-fuzz; stable toolchain with RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 600
fuzz:
	cd runtime && RUSTC_BOOTSTRAP=1 cargo fuzz run from_bytes -- -max_total_time=$(FUZZ_SECONDS)
