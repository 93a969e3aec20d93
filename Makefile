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

test: setup lint conformance-data models
	cargo test --workspace --all-targets
	cargo test --workspace --doc
	# the kernels again held to the portable code (runtime/src/kernels/cpu.rs):
	# the paths a CPU without AVX2 or VNNI takes, and the refusal to pack for them
	MORSEL_ISA=baseline cargo test -p morsel-runtime --lib kernels
	$(MAKE) test-arm
	$(MAKE) test-wasm

# Per-platform test targets live in their own files.
include .ci/arm.mk
include .ci/wasm.mk

# Fuzz the reader (needs cargo-fuzz; stable toolchain with RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 600
fuzz:
	cd runtime && RUSTC_BOOTSTRAP=1 cargo fuzz run from_bytes -- -max_total_time=$(FUZZ_SECONDS)

# Real-model fixtures for tests/real_models.rs (tests/models/README.md):
# all-MiniLM-L6-v2 and PP-OCR det/rec/cls, their inputs and ONNX Runtime's
# outputs, in target/models/ (or $MORSEL_MODELS_DIR). Idempotent: fetch.sh
# only re-checks hashes once the files are there, and each script reruns only
# when its output is older than the script or its inputs.
MODELS_DIR := $(or $(MORSEL_MODELS_DIR),target/models)
MODELS_SRC := tests/models
.PHONY: models

models: setup-python
	bash $(MODELS_SRC)/fetch.sh
	@$(MAKE) --no-print-directory $(VENV)/.models-installed \
	    $(MODELS_DIR)/minilm/ref_b1_sentence_embedding.npy $(MODELS_DIR)/minilm/transfer.npz \
	    $(MODELS_DIR)/ocr/rec_eval_labels.txt

$(VENV)/.models-installed: $(MODELS_SRC)/requirements.txt requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check -r $(MODELS_SRC)/requirements.txt
	touch $@

$(MODELS_DIR)/minilm/model.onnx: $(MODELS_SRC)/build_minilm_onnx.py $(MODELS_SRC)/_common.py \
    $(MODELS_DIR)/minilm/model.safetensors | $(VENV)/.models-installed
	$(PY) $(MODELS_SRC)/build_minilm_onnx.py

# written last by its script, after inputs*.npz and the other references
$(MODELS_DIR)/minilm/ref_b1_sentence_embedding.npy: $(MODELS_SRC)/make_minilm_reference.py \
    $(MODELS_SRC)/_common.py $(MODELS_SRC)/sentences.txt $(MODELS_DIR)/minilm/model.onnx \
    | $(VENV)/.models-installed
	$(PY) $(MODELS_SRC)/make_minilm_reference.py

# MiniLM distillation data (issue 6): heldout.npz, then transfer.npz, from
# the committed tests/models/transfer_sentences.txt
$(MODELS_DIR)/minilm/transfer.npz: $(MODELS_SRC)/make_minilm_transfer.py $(MODELS_SRC)/_common.py \
    $(MODELS_SRC)/transfer_sentences.txt $(MODELS_DIR)/minilm/model.onnx | $(VENV)/.models-installed
	$(PY) $(MODELS_SRC)/make_minilm_transfer.py

# written last by its script, after the inputs, references and ref_cls.npy
$(MODELS_DIR)/ocr/rec_eval_labels.txt: $(MODELS_SRC)/make_ocr_inputs.py $(MODELS_SRC)/_common.py \
    $(MODELS_DIR)/ocr/ch_PP-OCRv4_det_infer.onnx $(MODELS_DIR)/ocr/ch_PP-OCRv4_rec_infer.onnx \
    $(MODELS_DIR)/ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx | $(VENV)/.models-installed
	$(PY) $(MODELS_SRC)/make_ocr_inputs.py

# Morsel beside ONNX Runtime on the real models (benches/side_by_side.py;
# needs `make models`): latency and peak RSS as ratios, threads 1 and 2,
# interleaved rounds. BENCH_ARGS adds options, e.g. BENCH_ARGS="--models minilm".
# The criterion benches of the same cases: cargo bench --bench models.
BENCH_JSON := target/bench/side_by_side.json
.PHONY: bench bench-quick

bench: $(MORSEL) setup-python $(VENV)/.models-installed
	$(PY) benches/side_by_side.py --runs 20 --warmup 3 --rounds 4 --markdown --json $(BENCH_JSON) $(BENCH_ARGS)

bench-quick: $(MORSEL) setup-python $(VENV)/.models-installed
	$(PY) benches/side_by_side.py --runs 6 --warmup 1 --rounds 2 --json $(BENCH_JSON) $(BENCH_ARGS)
