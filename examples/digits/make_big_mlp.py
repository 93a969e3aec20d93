#!/usr/bin/env python3
"""Generate a large (~100 MB) randomly initialised MLP as a single ONNX file.

Test fixture for large-model handling. NOT committed: tests generate it on demand.

  MLP: x [N,1024] -> Linear 4096 -> relu -> Linear 4096 -> relu -> Linear 1024 -> y [N,1024]
  (f32, ~25.2M parameters, ~101 MB of initializers, stored inline: no external data)

Writes:
  <out>                      the ONNX model (default target/fixtures/big_mlp.onnx)
  <out stem>_input.npy       random input, float32 [1,1024]
  <out stem>_ref_output.npy  onnxruntime (CPU) output for that input, float32 [1,1024]

Usage:  .venv/bin/python examples/digits/make_big_mlp.py [OUT.onnx] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Persistent XLA compilation cache (in the git-ignored target/ dir): jax2onnx
# jit-compiles many tiny functions while importing its plugins, which dominates
# the run time on a cold start. Set JAX_COMPILATION_CACHE_DIR to override.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(Path(__file__).resolve().parents[2] / "target" / "jax_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from jax2onnx import to_onnx  # noqa: E402

D_IN, D_HID, D_OUT = 1024, 4096, 1024
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "x", "y", "N"
OPSET = 17


class BigMLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(D_IN, D_HID, rngs=rngs)
        self.fc2 = nnx.Linear(D_HID, D_HID, rngs=rngs)
        self.fc3 = nnx.Linear(D_HID, D_OUT, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.fc3(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path("target/fixtures/big_mlp.onnx"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    model = BigMLP(rngs=nnx.Rngs(args.seed))
    proto = to_onnx(
        model,
        [(BATCH_DIM, D_IN)],
        model_name="big_mlp",
        opset=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        return_mode="proto",
    )
    del proto.graph.value_info[:]  # see make_digits_model.py: regenerate annotations
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto)  # < 2 GB, so the in-memory check works
    # Everything inline in one file (jax2onnx's file mode would spill to .onnx.data).
    onnx.save_model(proto, str(out), save_as_external_data=False)

    x = np.random.default_rng(args.seed).standard_normal((1, D_IN), dtype=np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float32)
    jax_y = np.asarray(model(x), dtype=np.float32)

    stem = out.with_suffix("")
    in_path = Path(f"{stem}_input.npy")
    ref_path = Path(f"{stem}_ref_output.npy")
    np.save(in_path, x)
    np.save(ref_path, y)

    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB), {in_path}, {ref_path}")
    print(f"ops: {[n.op_type for n in proto.graph.node]}")
    print(f"jax vs ort max abs diff: {float(np.max(np.abs(jax_y - y))):.3e}; "
          f"|y| max {float(np.max(np.abs(y))):.3f}; time {time.time() - t0:.1f}s")
    if size < 60 * 1024 * 1024:
        print("ERROR: model smaller than 60 MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
