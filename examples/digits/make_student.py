#!/usr/bin/env python3
"""Export a small, randomly initialised MLP student for the digits CNN.

The student for `morsel distill` (knowledge distillation, student mode):
same input and output as digits_cnn.onnx, a quarter of its parameters or
fewer, and no training at all: Morsel trains it.

  x [N,1,8,8] -> reshape [N,64] -> Linear 96 -> relu -> Linear 10 -> logits [N,10]
  64*96 + 96 + 96*10 + 10 = 7,210 parameters (teacher: 38,282; 18.8%)

Writes (next to this script unless --out is given):
  digits_student_mlp.onnx

The export is checked against the jax model with onnxruntime. Seeded:
reruns on the same package versions (requirements.txt) give the same file.

Usage:  .venv/bin/python examples/digits/make_student.py [--out FILE] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# See make_digits_model.py: a persistent XLA cache in the git-ignored target/.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(Path(__file__).resolve().parents[2] / "target" / "jax_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from flax import nnx  # noqa: E402
from jax2onnx import to_onnx  # noqa: E402

HIDDEN = 96
TEACHER_PARAMS = 38282
OPSET = 17


class StudentMLP(nnx.Module):
    """NCHW [N,1,8,8] -> logits [N,10]."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(64, HIDDEN, rngs=rngs)
        self.fc2 = nnx.Linear(HIDDEN, 10, rngs=rngs)

    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        return self.fc2(nnx.relu(self.fc1(x)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "digits_student_mlp.onnx"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = StudentMLP(rngs=nnx.Rngs(args.seed))
    proto = to_onnx(
        model,
        [("N", 1, 8, 8)],
        model_name="digits_student_mlp",
        opset=OPSET,
        input_names=["x"],
        output_names=["logits"],
        return_mode="proto",
    )
    del proto.graph.value_info[:]  # see make_digits_model.py: regenerate annotations
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(args.out), save_as_external_data=False)

    params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type == 1)
    x = np.random.default_rng(args.seed).random((5, 1, 8, 8), dtype=np.float32)
    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    want = np.asarray(model(x))
    diff = float(np.max(np.abs(got - want)))
    print(f"wrote {args.out}: {params} float parameters ({100 * params / TEACHER_PARAMS:.1f}% "
          f"of the teacher's {TEACHER_PARAMS}); onnxruntime vs jax max |diff| {diff:.2e}")
    if params * 4 > TEACHER_PARAMS or diff > 1e-5:
        print("ERROR: too many parameters or the export disagrees with jax", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
