#!/usr/bin/env bash
# Build the npm package of the Morsel runtime and the demo site, or run the
# wasm-bindgen-test suite in headless Chromium with the same build settings.
#
#   wasm/build.sh test-browser  wasm/tests/*.rs in headless Chromium (needs chromium + chromedriver)
#   wasm/build.sh            -> target/wasm-pkg/   package.json, README.md, and per target
#                                                  {web,bundler,node}/morsel_wasm.{js,d.ts} + morsel_wasm_bg.wasm
#                            -> target/wasm-site/  examples/web + pkg/ (web build) + digits_cnn.morsel
#
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen (the CLI at the
# exact version wasm/Cargo.toml pins), wasm-opt (tests/web/node_modules/.bin,
# from npm binaryen), and target/digits_cnn.morsel for the site (`make
# test-wasm` and `make web-demo` make all of these). Prints the shipped
# .wasm's size raw and gzip -9.
set -euo pipefail
cd "$(dirname "$0")/.."

# The workspace's small profile (LTO, one codegen unit, panic=abort), with
# symbols kept (wasm-bindgen reads the target_features section; wasm-opt
# strips the rest) and opt-level 3: on the digits CNN in Chromium, opt-level
# s gives 494 KB raw / 195 KB gzip but runs batch 450 in 81 ms; 3 gives
# 697 KB / 250 KB and 51 ms.
PROFILE=${MORSEL_WASM_PROFILE:-release-small}
export CARGO_PROFILE_RELEASE_SMALL_OPT_LEVEL=${MORSEL_WASM_OPT_LEVEL:-3}
export CARGO_PROFILE_RELEASE_SMALL_STRIP=false
# SIMD for the wasm target only (host build scripts and proc-macros unaffected).
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128"
# The second build adds relaxed SIMD (the int8 kernel `RelaxedDot`: one
# `i32x4.relaxed_dot_i8x16_i7x16_add_s` per 16 multiply-adds, 34.7 vs 63 ms
# on MiniLM int8 in Chromium). An engine without relaxed SIMD rejects the
# whole module, so it is a second .wasm that the web and Node loaders pick
# only where `WebAssembly.validate` accepts relaxed SIMD; inside it the
# kernel is used only where a probe finds the dot product exact. Its own
# target dir: different flags would rebuild every crate in turn.
RELAXED_FLAGS="-C target-feature=+simd128,+relaxed-simd"
RELAXED_TARGET_DIR=target/wasm-relaxed
WASM_OPT=${WASM_OPT:-tests/web/node_modules/.bin/wasm-opt}
PKG=target/wasm-pkg
SITE=target/wasm-site

pinned=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p' wasm/Cargo.toml)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
if [[ "$have" != "$pinned" ]]; then
    echo "wasm/build.sh: need wasm-bindgen $pinned, found '${have:-none}' (cargo install wasm-bindgen-cli --version $pinned)" >&2
    exit 1
fi

if [[ "${1:-}" == test-browser ]]; then
    export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
    cargo test -p morsel-wasm --target wasm32-unknown-unknown --profile "$PROFILE" --test browser
    # The same tests on the relaxed-SIMD build (its int8 kernel among the
    # ones int8_kernels_are_exact checks, where the probe takes it).
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$RELAXED_FLAGS" \
        exec cargo test -p morsel-wasm --target wasm32-unknown-unknown --profile "$PROFILE" \
        --target-dir "$RELAXED_TARGET_DIR" --test browser
fi

cargo build -p morsel-wasm --lib --target wasm32-unknown-unknown --profile "$PROFILE"
raw=target/wasm32-unknown-unknown/$PROFILE/morsel_wasm.wasm
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$RELAXED_FLAGS" \
    cargo build -p morsel-wasm --lib --target wasm32-unknown-unknown --profile "$PROFILE" \
    --target-dir "$RELAXED_TARGET_DIR"
raw_relaxed=$RELAXED_TARGET_DIR/wasm32-unknown-unknown/$PROFILE/morsel_wasm.wasm

WASM_OPT_FEATURES=(--enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int
    --enable-sign-ext --enable-mutable-globals --enable-multivalue --enable-reference-types)
# Picks the .wasm at load: the relaxed-SIMD one where the engine validates
# a module using `i32x4.relaxed_dot_i8x16_i7x16_add_s`. Spliced into the web
# and Node glue below, in place of wasm-bindgen's fixed file name.
RELAXED_PROBE='(() => { try { return WebAssembly.validate(new Uint8Array([0,97,115,109,1,0,0,0,1,4,1,96,0,0,3,2,1,0,5,3,1,0,1,10,31,1,29,0,65,48,65,0,253,0,4,0,65,16,253,0,4,0,65,32,253,0,4,0,253,147,2,253,11,4,0,11])); } catch { return false; } })()'

rm -rf "$PKG"
mkdir -p "$PKG"
for t in web bundler node; do
    wasm-bindgen --target "$([[ $t == node ]] && echo nodejs || echo $t)" --out-dir "$PKG/$t" "$raw"
    # wasm-bindgen's output uses exactly these features (Rust's wasm32 defaults + simd128).
    "$WASM_OPT" -Oz --strip-debug --strip-producers "${WASM_OPT_FEATURES[@]}" \
        "$PKG/$t/morsel_wasm_bg.wasm" -o "$PKG/$t/morsel_wasm_bg.wasm"
done
# The relaxed-SIMD .wasm for the web and Node builds (a bundler's static
# `import` of the .wasm cannot choose; that build stays simd128). The glue
# wasm-bindgen writes for it is the same as for the simd128 build (checked
# here): one .js loads either.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in web node; do
    wasm-bindgen --target "$([[ $t == node ]] && echo nodejs || echo $t)" --out-dir "$tmp/$t" "$raw_relaxed"
    if ! cmp -s "$tmp/$t/morsel_wasm.js" "$PKG/$t/morsel_wasm.js"; then
        echo "wasm/build.sh: the relaxed-SIMD build's $t glue differs from the simd128 build's" >&2
        exit 1
    fi
    "$WASM_OPT" -Oz --strip-debug --strip-producers "${WASM_OPT_FEATURES[@]}" --enable-relaxed-simd \
        "$tmp/$t/morsel_wasm_bg.wasm" -o "$PKG/$t/morsel_wasm_relaxed_bg.wasm"
done
# Point the loaders at the right file (fail loudly if wasm-bindgen's glue
# changed shape and the line is not there).
web_line="module_or_path = new URL('morsel_wasm_bg.wasm', import.meta.url);"
node_line='const wasmPath = `${__dirname}/morsel_wasm_bg.wasm`;'
grep -qF "$web_line" "$PKG/web/morsel_wasm.js" || { echo "wasm/build.sh: web glue: no '$web_line'" >&2; exit 1; }
grep -qF "$node_line" "$PKG/node/morsel_wasm.js" || { echo "wasm/build.sh: node glue: no '$node_line'" >&2; exit 1; }
WEB_LINE=$web_line NODE_LINE=$node_line PROBE=$RELAXED_PROBE PKG=$PKG python3 - <<'PY'
import os
pkg, probe = os.environ["PKG"], os.environ["PROBE"]
for target, line, new in [
    ("web", os.environ["WEB_LINE"],
     f"module_or_path = new URL({probe} ? 'morsel_wasm_relaxed_bg.wasm' : 'morsel_wasm_bg.wasm', import.meta.url);"),
    ("node", os.environ["NODE_LINE"],
     "const wasmPath = `${__dirname}/${" + probe + " ? 'morsel_wasm_relaxed_bg.wasm' : 'morsel_wasm_bg.wasm'}`;"),
]:
    path = os.path.join(pkg, target, "morsel_wasm.js")
    src = open(path).read()
    open(path, "w").write(src.replace(line, new, 1))
PY
# The package is "type": "module"; the Node build is CommonJS.
echo '{ "type": "commonjs" }' > "$PKG/node/package.json"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
sed "s/@VERSION@/$version/" wasm/js/package.json > "$PKG/package.json"
cp wasm/js/README.md "$PKG/README.md"

# A page downloads one of the two .wasm files; both are reported.
sizes=()
for f in morsel_wasm_bg morsel_wasm_relaxed_bg; do
    wasm=$PKG/web/$f.wasm
    raw_bytes=$(wc -c < "$wasm")
    gz_bytes=$(gzip -9 -c "$wasm" | wc -c)
    echo "morsel-wasm $version: $wasm  raw $raw_bytes bytes ($(awk "BEGIN{printf \"%.3f\", $raw_bytes/1e6}") MB)  gzip -9 $gz_bytes bytes ($(awk "BEGIN{printf \"%.3f\", $gz_bytes/1e6}") MB)"
    sizes+=("$raw_bytes" "$gz_bytes")
done
mkdir -p target/wasm-test
printf '{"raw": %d, "gzip9": %d, "relaxed": {"raw": %d, "gzip9": %d}}\n' "${sizes[@]}" > target/wasm-test/size.json

# The demo site: the page, the web build, the bundled digits model.
rm -rf "$SITE"
mkdir -p "$SITE/pkg"
cp examples/web/index.html examples/web/main.js examples/web/style.css "$SITE/"
cp "$PKG"/web/morsel_wasm.js "$PKG"/web/morsel_wasm_bg.wasm "$PKG"/web/morsel_wasm_relaxed_bg.wasm "$SITE/pkg/"
if [[ -f target/digits_cnn.morsel ]]; then
    cp target/digits_cnn.morsel "$SITE/"
else
    echo "wasm/build.sh: target/digits_cnn.morsel missing; the demo's drawing pad needs it (make demo converts it)" >&2
fi
echo "demo site: $SITE (serve it with any static server, e.g. python3 -m http.server -d $SITE)"
