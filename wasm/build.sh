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
    exec cargo test -p morsel-wasm --target wasm32-unknown-unknown --profile "$PROFILE" --test browser
fi

cargo build -p morsel-wasm --lib --target wasm32-unknown-unknown --profile "$PROFILE"
raw=target/wasm32-unknown-unknown/$PROFILE/morsel_wasm.wasm

rm -rf "$PKG"
mkdir -p "$PKG"
for t in web bundler node; do
    wasm-bindgen --target "$([[ $t == node ]] && echo nodejs || echo $t)" --out-dir "$PKG/$t" "$raw"
    # wasm-bindgen's output uses exactly these features (Rust's wasm32 defaults + simd128).
    "$WASM_OPT" -Oz --strip-debug --strip-producers \
        --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-multivalue --enable-reference-types \
        "$PKG/$t/morsel_wasm_bg.wasm" -o "$PKG/$t/morsel_wasm_bg.wasm"
done
# The package is "type": "module"; the Node build is CommonJS.
echo '{ "type": "commonjs" }' > "$PKG/node/package.json"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
sed "s/@VERSION@/$version/" wasm/js/package.json > "$PKG/package.json"
cp wasm/js/README.md "$PKG/README.md"

wasm=$PKG/web/morsel_wasm_bg.wasm
raw_bytes=$(wc -c < "$wasm")
gz_bytes=$(gzip -9 -c "$wasm" | wc -c)
echo "morsel-wasm $version: $wasm  raw $raw_bytes bytes ($(awk "BEGIN{printf \"%.3f\", $raw_bytes/1e6}") MB)  gzip -9 $gz_bytes bytes ($(awk "BEGIN{printf \"%.3f\", $gz_bytes/1e6}") MB)"
mkdir -p target/wasm-test
printf '{"raw": %d, "gzip9": %d}\n' "$raw_bytes" "$gz_bytes" > target/wasm-test/size.json

# The demo site: the page, the web build, the bundled digits model.
rm -rf "$SITE"
mkdir -p "$SITE/pkg"
cp examples/web/index.html examples/web/main.js examples/web/style.css "$SITE/"
cp "$PKG"/web/morsel_wasm.js "$PKG"/web/morsel_wasm_bg.wasm "$SITE/pkg/"
if [[ -f target/digits_cnn.morsel ]]; then
    cp target/digits_cnn.morsel "$SITE/"
else
    echo "wasm/build.sh: target/digits_cnn.morsel missing; the demo's drawing pad needs it (make demo converts it)" >&2
fi
echo "demo site: $SITE (serve it with any static server, e.g. python3 -m http.server -d $SITE)"
