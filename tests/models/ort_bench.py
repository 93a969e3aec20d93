"""ONNX Runtime latency on the real-model fixtures, to set beside Morsel's own timings.

ORT 1.32 CPU, ORT_ENABLE_ALL, sequential execution, intra_op_num_threads 1 and 2;
warm-up runs, then the median (and p90, min) of --runs timed runs per case:

  minilm  batch 1 x 128 tokens    (target/models/minilm/inputs_b1.npz)
  det     PP-OCRv4 det 1x3x640x640 (target/models/ocr/det_inputs.npz)
  rec     PP-OCRv4 rec 1x3x48x320  (first line of rec_inputs.npz)
  cls     PP-OCR v2.0 cls 1x3x48x192 (first line of cls_inputs.npz)

Run after make_minilm_reference.py and make_ocr_inputs.py:
    .venv/bin/python tests/models/ort_bench.py [--runs 30] [--warmup 5] [--threads 1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

from _common import MINILM, MINILM_ONNX, OCR, OCR_CLS, OCR_DET, OCR_REC, need, ort_session


def cases():
    b1 = dict(np.load(MINILM / "inputs_b1.npz"))
    return [
        ("minilm", "b1 x 128", MINILM_ONNX, b1),
        ("ocr det", "1x3x640x640", OCR_DET, {"x": np.load(OCR / "det_inputs.npz")["x"][:1]}),
        ("ocr rec", "1x3x48x320", OCR_REC, {"x": np.load(OCR / "rec_inputs.npz")["x"][:1]}),
        ("ocr cls", "1x3x48x192", OCR_CLS, {"x": np.load(OCR / "cls_inputs.npz")["x"][:1]}),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args()
    need(MINILM / "inputs_b1.npz", OCR / "det_inputs.npz", OCR / "rec_inputs.npz", OCR / "cls_inputs.npz")
    threads = [int(t) for t in a.threads.split(",")]

    rows = []
    print(f"onnxruntime {ort.__version__} CPU, ORT_ENABLE_ALL, {platform.processor() or platform.machine()}, "
          f"{a.warmup} warm-up + {a.runs} timed runs, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cpus (others' work slows the numbers)")
    print(f"{'model':10} {'input':14} {'threads':>7} {'median ms':>10} {'p90 ms':>9} {'min ms':>9}")
    for name, shape, path, feeds in cases():
        for t in threads:
            sess = ort_session(path, threads=t)
            for _ in range(a.warmup):
                sess.run(None, feeds)
            ts = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                ts.append((time.perf_counter() - t0) * 1e3)
            ts = np.array(ts)
            r = dict(model=name, input=shape, threads=t, median_ms=float(np.median(ts)),
                     p90_ms=float(np.percentile(ts, 90)), min_ms=float(ts.min()), runs=a.runs)
            rows.append(r)
            print(f"{name:10} {shape:14} {t:>7} {r['median_ms']:>10.2f} {r['p90_ms']:>9.2f} {r['min_ms']:>9.2f}",
                  flush=True)
            del sess
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
