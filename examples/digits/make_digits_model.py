#!/usr/bin/env python3
"""Train a small CNN on scikit-learn's bundled 8x8 digits and export it to ONNX.

Produces (in the directory of this script unless --out-dir is given):

  digits_cnn.onnx                 the exported model (input "x" [N,1,8,8] f32 -> "logits" [N,10] f32)
  digits_train.npz                training split: x float32 [N,1,8,8], y int64 [N]
  digits_test.npz                 test split:     x float32 [N,1,8,8], y int64 [N]
  digits_test_ref_logits.npy      onnxruntime (CPU) logits on the whole test split, float32 [N_test,10]
  sample_input.npy                first test image, float32 [1,1,8,8]
  sample_ref_logits.npy           onnxruntime logits for sample_input, float32 [1,10]
  REFERENCE.json                  versions, sha256 of the model, I/O, accuracies, jax-vs-ORT diff

Everything is seeded; reruns on the same package versions (see requirements.txt)
and the same CPU should reproduce the same model.

Usage:  .venv/bin/python examples/digits/make_digits_model.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import random
import sys
import time
from pathlib import Path

# Determinism / small machine: CPU only, no multi-threaded Eigen in XLA.
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
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from jax2onnx import to_onnx  # noqa: E402

SEED = 0
TEST_SIZE = 0.25
EPOCHS = 15
BATCH = 64
LR = 2e-3
OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "logits"
BATCH_DIM = "N"


VERSIONED_DISTS = [
    "jax", "jaxlib", "flax", "optax", "jax2onnx", "onnx", "onnx-ir",
    "onnxruntime", "numpy", "scikit-learn", "ml_dtypes", "protobuf",
]


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


def load_data():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]  # [N,1,8,8]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    return (
        np.ascontiguousarray(x_tr, dtype=np.float32),
        np.ascontiguousarray(y_tr, dtype=np.int64),
        np.ascontiguousarray(x_te, dtype=np.float32),
        np.ascontiguousarray(y_te, dtype=np.int64),
    )


class DigitsCNN(nnx.Module):
    """NCHW input [N,1,8,8] -> logits [N,10].

    Flax convs are channel-last, so the model transposes NCHW -> NHWC first
    (this shows up as a Transpose in the exported ONNX graph).
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.bn2 = nnx.BatchNorm(32, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.fc1 = nnx.Linear(4 * 4 * 32, 64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        x = jnp.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))  # [N,4,4,32]
        x = x.reshape((x.shape[0], -1))
        x = nnx.relu(self.fc1(x))
        return self.fc2(x)


def train(model: DigitsCNN, x_tr, y_tr, x_te, y_te):
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    def loss_fn(m, xb, yb):
        logits = m(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @nnx.jit
    def train_step(m, opt, xb, yb):
        loss, grads = nnx.value_and_grad(loss_fn)(m, xb, yb)
        opt.update(m, grads)
        return loss

    @nnx.jit
    def predict(m, xb):
        return m(xb)

    rng = np.random.default_rng(SEED)
    n = x_tr.shape[0]
    steps_per_epoch = n // BATCH  # drop the ragged last batch: fixed shapes, single compile
    for epoch in range(EPOCHS):
        model.train()
        perm = rng.permutation(n)
        losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            losses.append(float(train_step(model, optimizer, x_tr[idx], y_tr[idx])))
        model.eval()
        acc = float((np.asarray(predict(model, x_te)).argmax(-1) == y_te).mean())
        print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test acc {acc:.4f}")
    model.eval()
    return predict


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def io_desc(values):
    out = []
    for v in values:
        tt = v.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tt.shape.dim]
        out.append(
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                "shape": dims,
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    random.seed(SEED)
    np.random.seed(SEED)
    t0 = time.time()

    x_tr, y_tr, x_te, y_te = load_data()
    print(f"train {x_tr.shape} test {x_te.shape}")
    np.savez(out / "digits_train.npz", x=x_tr, y=y_tr)
    np.savez(out / "digits_test.npz", x=x_te, y=y_te)

    model = DigitsCNN(rngs=nnx.Rngs(SEED))
    predict = train(model, x_tr, y_tr, x_te, y_te)
    jax_logits = np.asarray(predict(model, x_te), dtype=np.float32)
    jax_acc = float((jax_logits.argmax(-1) == y_te).mean())
    print(f"jax test accuracy: {jax_acc:.4f}  (train time {time.time() - t0:.1f}s)")

    # ---- export ---------------------------------------------------------------
    onnx_path = out / "digits_cnn.onnx"
    model.eval()
    proto = to_onnx(
        model,
        [(BATCH_DIM, 1, 8, 8)],
        model_name="digits_cnn",
        opset=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        return_mode="proto",
    )
    # jax2onnx (0.17.1) removes the NHWC<->NCHW Transpose pairs around the convs
    # but leaves stale NHWC value_info annotations on the intermediate tensors
    # (e.g. Relu output annotated [N,8,8,16] while it really is [N,16,8,8]).
    # Drop all intermediate annotations and let ONNX shape inference redo them,
    # so consumers that trust value_info see correct shapes.
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(
        proto, check_type=True, strict_mode=True, data_prop=True
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(onnx_path), save_as_external_data=False)

    # ---- ORT reference ----------------------------------------------------------
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    ort_logits = sess.run([out_name], {in_name: x_te})[0].astype(np.float32)
    ort_acc = float((ort_logits.argmax(-1) == y_te).mean())
    max_abs_diff = float(np.max(np.abs(ort_logits - jax_logits)))
    np.save(out / "digits_test_ref_logits.npy", ort_logits)

    sample = np.ascontiguousarray(x_te[:1], dtype=np.float32)
    sample_logits = sess.run([out_name], {in_name: sample})[0].astype(np.float32)
    np.save(out / "sample_input.npy", sample)
    np.save(out / "sample_ref_logits.npy", sample_logits)

    # ---- report -----------------------------------------------------------------
    m = onnx.load(str(onnx_path))
    op_counts: dict[str, int] = {}
    for node in m.graph.node:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    ref = {
        "model_file": onnx_path.name,
        "model_sha256": sha256(onnx_path),
        "model_bytes": onnx_path.stat().st_size,
        "opset": [{"domain": o.domain or "ai.onnx", "version": o.version} for o in m.opset_import],
        "ir_version": m.ir_version,
        "inputs": io_desc(m.graph.input),
        "outputs": io_desc(m.graph.output),
        "op_types": dict(sorted(op_counts.items())),
        "num_nodes": len(m.graph.node),
        "num_initializers": len(m.graph.initializer),
        "num_params": int(sum(int(np.prod(i.dims)) for i in m.graph.initializer)),
        "dataset": {
            "name": "sklearn.datasets.load_digits",
            "preprocess": "pixels/16 -> [0,1], float32, NCHW [N,1,8,8]",
            "split": f"train_test_split(test_size={TEST_SIZE}, random_state={SEED}, stratify=y)",
            "n_train": int(x_tr.shape[0]),
            "n_test": int(x_te.shape[0]),
        },
        "training": {"seed": SEED, "epochs": EPOCHS, "batch": BATCH, "optimizer": f"adam(lr={LR})"},
        "jax_test_accuracy": jax_acc,
        "ort_test_accuracy": ort_acc,
        "jax_vs_ort_max_abs_diff": max_abs_diff,
        "jax_vs_ort_argmax_agree": float((ort_logits.argmax(-1) == jax_logits.argmax(-1)).mean()),
        "sample_label": int(y_te[0]),
        "sample_pred": int(sample_logits.argmax(-1)[0]),
        "versions": {"python": sys.version.split()[0]}
        | {name: dist_version(name) for name in VERSIONED_DISTS},
    }
    with open(out / "REFERENCE.json", "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    print(json.dumps(ref, indent=2))
    print(f"total time {time.time() - t0:.1f}s")

    if ort_acc < 0.95:
        print(f"WARNING: ORT accuracy {ort_acc:.4f} below 0.95", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
