# ARM Linux under qemu-user, and the C API (issue 8). `make test-arm`:
#   1. installs what it needs if missing: Debian cross gcc + qemu-user, the
#      rustup targets, cbindgen (pinned);
#   2. checks runtime/capi/include/morsel.h against a fresh cbindgen run;
#   3. runs the runtime's and the C API's tests for aarch64 and armv7 under
#      qemu (runners and linkers are in .cargo/config.toml);
#   4. runs the bundled digits model with runtime/examples/minimal.rs natively
#      and under qemu on both targets, and compares the outputs (1e-5);
#   5. builds examples/c/digits.c with gcc against libmorsel_capi.a, natively
#      and for aarch64, runs it (qemu-aarch64 for the latter) and checks its
#      argmax against the sample's label and its logits against native;
#   6. checks that a memory budget below the plan is refused with the amount.
# `make size-arm` builds the minimal binary, the libraries and the C example
# for both targets with --profile release-small, prints their sizes, checks
# the minimal binary is at most 1.5 MiB and runs both under qemu.

ARM_TARGETS := aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
ARM_APT := gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross \
	libc6-dev-armhf-cross qemu-user
CBINDGEN_VERSION := 0.29.4
ARM_OUT := target/arm-check
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
QEMU_aarch64-unknown-linux-gnu := qemu-aarch64 -L /usr/aarch64-linux-gnu
QEMU_armv7-unknown-linux-gnueabihf := qemu-arm -L /usr/arm-linux-gnueabihf
DIGITS_MORSEL := target/digits_cnn.morsel
SAMPLE_NPY := examples/digits/sample_input.npy
# The library and the minimal example, built with the same packages (so the
# same features) as `cargo test` above: cargo reuses that build.
ARM_BUILD := cargo build -q -p morsel-runtime -p morsel-capi --lib --example minimal

.PHONY: test-arm setup-arm arm-header arm-unit arm-e2e arm-c-example arm-native-ref size-arm

test-arm: setup-arm arm-header arm-unit arm-e2e arm-c-example
	@echo "test-arm: all ARM and C API checks passed"

setup-arm:
	@missing=$$(for p in $(ARM_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@for t in $(ARM_TARGETS); do \
	    rustup target list --installed | grep -qx $$t || rustup target add $$t; \
	done
	@cbindgen --version 2>/dev/null | grep -qx "cbindgen $(CBINDGEN_VERSION)" || \
	    cargo install cbindgen --version $(CBINDGEN_VERSION) --locked

# The committed header must be what cbindgen makes from the sources.
arm-header: setup-arm
	@mkdir -p $(ARM_OUT)
	cd runtime/capi && cbindgen --quiet --config cbindgen.toml --output $(CURDIR)/$(ARM_OUT)/morsel.h
	@diff -u runtime/capi/include/morsel.h $(ARM_OUT)/morsel.h || { \
	    echo "runtime/capi/include/morsel.h is out of date: run" \
	         "'cd runtime/capi && cbindgen --config cbindgen.toml --output include/morsel.h'"; \
	    exit 1; }
	@echo "morsel.h: no drift"

# Unit and integration tests under qemu (the runner in .cargo/config.toml).
arm-unit: $(addprefix arm-unit-,$(ARM_TARGETS))
arm-unit-%: setup-arm
	@echo "== cargo test --target $* (under $(word 1,$(QEMU_$*)))"
	cargo test -p morsel-runtime -p morsel-capi --target $*

# The bundled model through the minimal binary: each ARM target vs native.
$(ARM_OUT)/sample_input.f32: $(SAMPLE_NPY)
	@mkdir -p $(ARM_OUT)
	python3 -c "$$ARM_NPY_TO_RAW" $< $@

# The whole digits test split as raw f32, for the int8 check.
$(ARM_OUT)/digits450.f32: examples/digits/digits_test.npz | setup-python
	@mkdir -p $(ARM_OUT)
	$(PY) -c "import numpy as np, sys; np.load(sys.argv[1])['x'].astype('<f4').tofile(sys.argv[2])" $< $@

DIGITS_INT8 := $(ARM_OUT)/digits_int8.morsel

arm-native-ref: $(ARM_OUT)/sample_input.f32 $(ARM_OUT)/digits450.f32
	cargo run -q -p morsel-compress --bin morsel -- convert examples/digits/digits_cnn.onnx -o $(DIGITS_MORSEL)
	cargo run -q -p morsel-compress --bin morsel -- compress examples/digits/digits_cnn.onnx \
	    -o $(DIGITS_INT8) --quantize int8 --min-size 0 --latency-runs 0 > /dev/null
	$(ARM_BUILD)
	target/debug/examples/minimal $(DIGITS_MORSEL) $(ARM_OUT)/sample_input.f32 > $(ARM_OUT)/minimal-native.txt
	target/debug/examples/minimal $(DIGITS_INT8) $(ARM_OUT)/digits450.f32 > $(ARM_OUT)/int8-native.txt
	MORSEL_ISA=baseline target/debug/examples/minimal $(DIGITS_MORSEL) $(ARM_OUT)/digits450.f32 \
	    > $(ARM_OUT)/f32-native-baseline.txt
	@echo "== a budget below the plan is refused"
	@if target/debug/examples/minimal $(DIGITS_MORSEL) $(ARM_OUT)/sample_input.f32 --budget 1000 \
	    > /dev/null 2> $(ARM_OUT)/budget.txt; then echo "a 1000-byte budget should fail"; exit 1; fi
	@cat $(ARM_OUT)/budget.txt
	@grep -q "memory budget exceeded: this run needs [0-9]* bytes of activation memory, the budget is 1000 bytes" \
	    $(ARM_OUT)/budget.txt

arm-e2e: $(addprefix arm-e2e-,$(ARM_TARGETS))
arm-e2e-%: setup-arm arm-native-ref
	$(ARM_BUILD) --target $*
	$(QEMU_$*) target/$*/debug/examples/minimal $(DIGITS_MORSEL) $(ARM_OUT)/sample_input.f32 \
	    > $(ARM_OUT)/minimal-$*.txt
	@python3 -c "$$ARM_COMPARE" $(ARM_OUT)/minimal-native.txt $(ARM_OUT)/minimal-$*.txt $*
	@echo "== int8 digits (2 QConv + 2 QMatMul), 450 images: the same bits as native"
	$(QEMU_$*) target/$*/debug/examples/minimal $(DIGITS_INT8) $(ARM_OUT)/digits450.f32 \
	    > $(ARM_OUT)/int8-$*.txt
	@cmp $(ARM_OUT)/int8-native.txt $(ARM_OUT)/int8-$*.txt && \
	    echo "$*: int8 outputs bit-identical to native ($$(grep -vc '^output' $(ARM_OUT)/int8-native.txt) values)"
	@# armv7 computes f32 without FMA, like x86-64 held to its SSE2 loops
	@# (MORSEL_ISA=baseline, runtime/src/kernels/cpu.rs): the same bits.
	@if [ $* = armv7-unknown-linux-gnueabihf ]; then \
	    echo "== f32 digits, 450 images: armv7 vs x86-64 with MORSEL_ISA=baseline"; \
	    $(QEMU_$*) target/$*/debug/examples/minimal $(DIGITS_MORSEL) $(ARM_OUT)/digits450.f32 \
	        > $(ARM_OUT)/f32-$*.txt && \
	    cmp $(ARM_OUT)/f32-native-baseline.txt $(ARM_OUT)/f32-$*.txt && \
	    echo "$*: f32 outputs bit-identical to x86-64 baseline"; \
	fi

# The C example, native and aarch64 (linked against the dev-profile static lib).
C_AARCH64 := target/c-example/aarch64-unknown-linux-gnu-debug/digits
arm-c-example: setup-arm arm-native-ref
	$(MAKE) -s -C examples/c all PROFILE=dev CARGO_LIB="$(ARM_BUILD)"
	$(MAKE) -s -C examples/c all PROFILE=dev CARGO_LIB="$(ARM_BUILD)" \
	    TARGET=aarch64-unknown-linux-gnu CC=aarch64-linux-gnu-gcc
	target/c-example/native-debug/digits $(DIGITS_MORSEL) $(SAMPLE_NPY) > $(ARM_OUT)/c-native.txt
	@cat $(ARM_OUT)/c-native.txt
	$(QEMU_aarch64-unknown-linux-gnu) $(C_AARCH64) $(DIGITS_MORSEL) $(SAMPLE_NPY) > $(ARM_OUT)/c-aarch64.txt
	@cat $(ARM_OUT)/c-aarch64.txt
	@echo "== the same against libmorsel_capi.so"
	target/c-example/native-debug/digits-shared $(DIGITS_MORSEL) $(SAMPLE_NPY) > $(ARM_OUT)/c-native-so.txt
	$(QEMU_aarch64-unknown-linux-gnu) $(C_AARCH64)-shared $(DIGITS_MORSEL) $(SAMPLE_NPY) > $(ARM_OUT)/c-aarch64-so.txt
	@for f in c-native c-aarch64 c-native-so c-aarch64-so; do \
	    python3 -c "$$ARM_CHECK_C" $(ARM_OUT)/$$f.txt $(ARM_OUT)/minimal-native.txt \
	        examples/digits/REFERENCE.json || exit 1; \
	done
	@echo "== the C example with a budget below the plan (aarch64)"
	@if $(QEMU_aarch64-unknown-linux-gnu) $(C_AARCH64) $(DIGITS_MORSEL) $(SAMPLE_NPY) --budget 1024 \
	    > $(ARM_OUT)/c-budget.txt 2>&1; then echo "a 1024-byte budget should fail"; exit 1; fi
	@cat $(ARM_OUT)/c-budget.txt
	@grep -q "MORSEL_STATUS_MEMORY: memory budget exceeded: this run needs" $(ARM_OUT)/c-budget.txt

# Sizes of a device build: `--profile release-small` (opt-level z, LTO,
# panic=abort, stripped), runtime without default features (no mmap, no
# threads). Not part of test-arm: it is two more full builds per target.
ARM_SIZE_LIMIT := 1572864
CC_aarch64-unknown-linux-gnu := aarch64-linux-gnu-gcc
CC_armv7-unknown-linux-gnueabihf := arm-linux-gnueabihf-gcc
size-arm: $(addprefix size-arm-,$(ARM_TARGETS))
size-arm-%: setup-arm arm-native-ref
	cargo build -q -p morsel-runtime --example minimal --no-default-features --profile release-small --target $*
	$(MAKE) -s -C examples/c all PROFILE=release-small TARGET=$* CC=$(CC_$*) \
	    CARGO_LIB="cargo build -q -p morsel-capi --no-default-features" \
	    CFLAGS="-std=c11 -Os -Wall -Wextra -Werror" LDFLAGS="-Wl,--gc-sections -s"
	@d=target/$*/release-small; \
	printf '%s: minimal %d bytes, C example %d bytes (both stripped); libmorsel_capi.a %d bytes, libmorsel_capi.so %d bytes\n' $* \
	    $$(stat -c %s $$d/examples/minimal) $$(stat -c %s target/c-example/$*-release-small/digits) \
	    $$(stat -c %s $$d/libmorsel_capi.a) $$(stat -c %s $$d/libmorsel_capi.so); \
	test $$(stat -c %s $$d/examples/minimal) -le $(ARM_SIZE_LIMIT) || { echo "minimal is over $(ARM_SIZE_LIMIT) bytes"; exit 1; }
	$(QEMU_$*) target/$*/release-small/examples/minimal $(DIGITS_MORSEL) $(ARM_OUT)/sample_input.f32 \
	    > $(ARM_OUT)/minimal-small-$*.txt
	@python3 -c "$$ARM_COMPARE" $(ARM_OUT)/minimal-native.txt $(ARM_OUT)/minimal-small-$*.txt $*-release-small
	$(QEMU_$*) target/c-example/$*-release-small/digits $(DIGITS_MORSEL) $(SAMPLE_NPY) > $(ARM_OUT)/c-small-$*.txt
	@python3 -c "$$ARM_CHECK_C" $(ARM_OUT)/c-small-$*.txt $(ARM_OUT)/minimal-native.txt examples/digits/REFERENCE.json

# .npy (float32, C order) to raw little-endian f32.
define ARM_NPY_TO_RAW
import sys
d = open(sys.argv[1], "rb").read()
assert d[:6] == b"\x93NUMPY", "not a .npy file"
n = 10 + int.from_bytes(d[8:10], "little")
assert b"'descr': '<f4'" in d[:n] and b"'fortran_order': False" in d[:n], d[:n]
open(sys.argv[2], "wb").write(d[n:])
endef
export ARM_NPY_TO_RAW

# Two outputs of the minimal example: same names and dims, values within 1e-5.
define ARM_COMPARE
import sys
def read(path):
    heads, values = [], []
    for line in open(path):
        (heads if line.startswith("output ") else values).append(line.strip())
    return heads, [float(v) for v in values]
(ha, va), (hb, vb) = read(sys.argv[1]), read(sys.argv[2])
assert ha == hb and len(va) == len(vb) and va, (ha, hb)
diff = max(abs(a - b) for a, b in zip(va, vb))
print(f"{sys.argv[3]}: {' '.join(ha)}: {len(va)} values, max |diff| vs x86-64 {diff:.3g}")
assert diff <= 1e-5, "outputs differ by more than 1e-5"
endef
export ARM_COMPARE

# The C example's output: argmax is the sample's label, logits match native.
define ARM_CHECK_C
import json, sys
lines = open(sys.argv[1]).read().splitlines()
logits = [float(v) for v in next(l for l in lines if l.startswith("logits")).split(":")[1].split()]
argmax = int(next(l for l in lines if l.startswith("argmax")).split()[1])
native = [float(l) for l in open(sys.argv[2]) if not l.startswith("output ")]
label = json.load(open(sys.argv[3]))["sample_label"]
diff = max(abs(a - b) for a, b in zip(logits, native))
print(f"{sys.argv[1]}: argmax {argmax}, label {label}, max |diff| vs minimal (x86-64) {diff:.3g}")
assert argmax == label and len(logits) == len(native) == 10 and diff <= 1e-5
endef
export ARM_CHECK_C
