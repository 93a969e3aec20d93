"""Real models for the browser test (issue 7): `make wasm-models`.

Writes target/web-models/ from the fixtures `make models` fetched into
target/models/ (or $MORSEL_MODELS_DIR):

  {case}.morsel         Morsel's file, for the wasm package in Chromium
                        (minilm, det, cls: `morsel convert`; minilm_int8:
                        `morsel compress --quantize int8 --data inputs_b1.npz`,
                        dynamic int8)
  {case}.onnx           what onnxruntime-web loads on the same page: a copy
                        (hard link when possible) of the ONNX model, and for
                        minilm_int8 ONNX Runtime's own dynamic int8 model
                        (quantize_dynamic, QInt8 weights, as
                        benches/side_by_side.py prepare_int8 does)
  {input}/*.npy         the inputs, one .npy per input name: MiniLM's three
                        int64 [1, 128] arrays from inputs_b1.npz; det: the one
                        1x3x640x640 image of det_inputs.npz; cls: the first
                        1x3x48x192 line of cls_inputs.npz (the same examples
                        benches/side_by_side.py times)
  ref/{case}/*.npy      native Morsel's outputs on those files (`morsel run`)
  ref_baseline/{case}/*.npy
                        the same with MORSEL_ISA=baseline: x86-64 held to its
                        SSE2 loops and portable tiles, no FMA, the arithmetic
                        of the wasm simd128 build (runtime/src/kernels/cpu.rs)

Idempotent: each file is remade only when it is missing or older than what
it is made from (the CLI binary included, for .morsel files and references).

    .venv/bin/python tests/web/prepare_models.py [--cli target/debug/morsel]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("MORSEL_MODELS_DIR", ROOT / "target" / "models"))
OUT = ROOT / "target" / "web-models"

ONNX = {
    "minilm": MODELS / "minilm" / "model.onnx",
    "det": MODELS / "ocr" / "ch_PP-OCRv4_det_infer.onnx",
    "cls": MODELS / "ocr" / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
# input set -> (source npz, rows of "x" to keep, or None for every array as is)
INPUTS = {
    "minilm": (MODELS / "minilm" / "inputs_b1.npz", None),
    "det": (MODELS / "ocr" / "det_inputs.npz", 1),
    "cls": (MODELS / "ocr" / "cls_inputs.npz", 1),
}
# case -> (source model, quantized?, input set)
CASES = {
    "minilm": ("minilm", False, "minilm"),
    "minilm_int8": ("minilm", True, "minilm"),
    "det": ("det", False, "det"),
    "cls": ("cls", False, "cls"),
}


def stale(out: Path, *sources: Path) -> bool:
    return not out.exists() or any(out.stat().st_mtime < s.stat().st_mtime for s in sources)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    shown = " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *cmd])
    if r.returncode != 0:
        sys.exit(f"error: `{shown}` failed (status {r.returncode}):\n{r.stderr.strip()}")
    print(f"  {shown}  ({time.monotonic() - t0:.1f} s)", flush=True)


def link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dst)
    print(f"  {dst.relative_to(ROOT)} <- {src}", flush=True)


def prepare_inputs(name: str) -> list[Path]:
    import numpy as np

    src, keep = INPUTS[name]
    d = OUT / "inputs" / name
    d.mkdir(parents=True, exist_ok=True)
    with np.load(src) as z:
        names = ["x"] if keep is not None else list(z.files)
        files = [d / f"{n}.npy" for n in names]
        if any(stale(f, src) for f in files):
            for n, f in zip(names, files):
                a = np.ascontiguousarray(z[n][:keep] if keep is not None else z[n])
                tmp = f.with_name(f.name + ".tmp.npy")
                np.save(tmp, a)
                tmp.replace(f)
                print(f"  {f.relative_to(ROOT)}: {a.dtype} {list(a.shape)}", flush=True)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cli", default=str(ROOT / "target" / "debug" / "morsel"), help="the native morsel CLI")
    args = ap.parse_args()
    cli = Path(args.cli)
    for p in [cli, *ONNX.values(), *(s for s, _ in INPUTS.values())]:
        if not p.exists():
            sys.exit(f"error: {p} is missing (`make models` fetches the models; `cargo build -p morsel-compress --bin morsel` the CLI)")
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = {name: prepare_inputs(name) for name in INPUTS}

    for case, (src, int8, inp) in CASES.items():
        onnx = ONNX[src]
        morsel = OUT / f"{case}.morsel"
        if stale(morsel, onnx, cli):
            tmp = morsel.with_name(morsel.name + ".tmp")
            if int8:
                # --data: without it compress times the model on random
                # inputs, and random int64 token_type_ids (0..99) are out of
                # range for MiniLM's 2-row embedding; with the real tokens it
                # also prints the int8 model's error against f32.
                run([str(cli), "compress", str(onnx), "-o", str(tmp), "--quantize", "int8",
                     "--data", str(INPUTS[inp][0]), "--latency-runs", "0"])
            else:
                run([str(cli), "convert", str(onnx), "-o", str(tmp)])
            tmp.replace(morsel)
        theirs = OUT / f"{case}.onnx"
        if int8:
            if stale(theirs, onnx):
                import logging

                from onnxruntime.quantization import QuantType, quantize_dynamic

                logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" warning
                tmp = theirs.with_name(theirs.name + ".tmp.onnx")
                quantize_dynamic(str(onnx), str(tmp), weight_type=QuantType.QInt8)
                tmp.replace(theirs)
                print(f"  {theirs.relative_to(ROOT)}: onnxruntime quantize_dynamic(weight_type=QInt8)", flush=True)
        elif stale(theirs, onnx):
            link_or_copy(onnx, theirs)
        # Native Morsel's outputs on the same files; the marker is written last.
        for kind, env in (("ref", {}), ("ref_baseline", {"MORSEL_ISA": "baseline"})):
            ref = OUT / kind / case
            done = ref / ".done"
            if stale(done, morsel, cli, *inputs[inp]):
                shutil.rmtree(ref, ignore_errors=True)
                ref.mkdir(parents=True)
                feeds = [a for f in inputs[inp] for a in ("--input", f"{f.stem}={f}")]
                run([str(cli), "run", str(morsel), *feeds, "-d", str(ref)], env)
                done.touch()
    print(f"web models ready in {OUT.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
