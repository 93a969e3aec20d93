# wasm32 build, browser and Node tests (issue 7): `make test-wasm`.
#
# Installs what it needs, idempotently: Debian's chromium + chromium-driver
# (only when missing), the wasm32 target, wasm-bindgen-cli at exactly the
# version wasm/Cargo.toml pins (only when missing or different; built from
# source, ~6 min once, without TLS: the test runner only talks HTTP to the
# local chromedriver), the npm tooling of tests/web (npm ci, when the lock
# changed). Then builds the package (wasm/build.sh: release, simd128,
# wasm-bindgen, wasm-opt -Oz; prints the .wasm's raw and gzip -9 sizes) and
# runs: wasm-bindgen-test in headless Chromium, the TypeScript types check,
# the Node test, the playwright e2e test (demo page + side-by-side bench).
#
#   make wasm-pkg    just the npm package (target/wasm-pkg) and demo site (target/wasm-site)
#   make web-demo    the same, then serve the demo on http://127.0.0.1:8000/
#   make wasm-models the real models for tests/web/models.test.mjs (MiniLM f32
#                    and int8, PP-OCR det and cls): .morsel files, the .onnx
#                    files onnxruntime-web loads, inputs as .npy and native
#                    Morsel's outputs, in target/web-models/ (needs `make
#                    models`: run here when its files are missing)
WASM_WEB := tests/web
WASM_BINDGEN_VERSION := $(shell sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p' wasm/Cargo.toml)
# The native CLI for the digits model and the reference outputs: the debug
# build `cargo test --workspace --all-targets` has already made.
WASM_CLI := target/debug/morsel

.PHONY: test-wasm wasm-setup wasm-pkg web-demo wasm-digits wasm-models

wasm-setup: $(WASM_WEB)/node_modules/.installed
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@if [ "$$(wasm-bindgen --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	    cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --no-default-features; fi

$(WASM_WEB)/node_modules/.installed: $(WASM_WEB)/package.json $(WASM_WEB)/package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd $(WASM_WEB) && npm ci --no-audit --no-fund
	touch $@

wasm-digits:
	cargo build -p morsel-compress --bin morsel
	$(WASM_CLI) convert examples/digits/digits_cnn.onnx -o target/digits_cnn.morsel

wasm-pkg: wasm-setup wasm-digits
	bash wasm/build.sh

# tests/web/prepare_models.py remakes only what is missing or older than its
# sources (the CLI binary included); a no-op run takes about a second.
wasm-models: wasm-digits
	@test -f $(MODELS_DIR)/minilm/inputs_b1.npz -a -f $(MODELS_DIR)/ocr/cls_inputs.npz \
	    -a -f $(VENV)/.models-installed || $(MAKE) --no-print-directory models
	MORSEL_MODELS_DIR=$(MODELS_DIR) $(PY) $(WASM_WEB)/prepare_models.py --cli $(WASM_CLI)

test-wasm: wasm-pkg wasm-models
	bash wasm/build.sh test-browser
	$(WASM_WEB)/node_modules/.bin/tsc -p $(WASM_WEB)/tsconfig.json
	MORSEL_CLI=$(WASM_CLI) node --test $(WASM_WEB)/node.test.mjs
	MORSEL_CLI=$(WASM_CLI) node --test $(WASM_WEB)/e2e.test.mjs
	node --test $(WASM_WEB)/models.test.mjs

web-demo: wasm-pkg
	node $(WASM_WEB)/server.mjs 8000
