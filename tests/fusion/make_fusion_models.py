#!/usr/bin/env python3
"""Small ONNX models, one per fusion pattern of compress/src/fuse.rs, with
ONNX Runtime's outputs on seeded random inputs; tests/fusion.rs imports each
model (fusions run at import), checks which fusions happened, runs it through
the .morsel writer/reader and compares with these references.

For every case <name> this writes, next to this script:

  <name>.onnx   the model (opset 17 unless the case says otherwise)
  <name>.npz    inputs under their graph input names, and ONNX Runtime's
                outputs under "out:<output name>" (same dtypes as the graph)

CASES at the bottom lists them with what the fusion passes must do (tests/fusion.rs
holds the matching expectations). Weights and inputs come from one
numpy Generator seeded per case, so reruns on the same numpy reproduce the
files byte for byte. References come from ORT with graph optimisations
disabled (ORT_DISABLE_ALL), so they are the plain unfused computation.
The committed files were made with onnx 1.23.2, onnxruntime 1.32.0, numpy 2.4.6
(58 cases, about 155 KB).

Usage:  .venv/bin/python tests/fusion/make_fusion_models.py
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17
SQRT2 = float(np.sqrt(np.float32(2.0)))
INV_SQRT2 = float(np.float32(1.0) / np.sqrt(np.float32(2.0)))


class B:
    """A graph under construction: nodes, initializers, inputs with their data."""

    def __init__(self, name: str):
        self.name = name
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.k = 0

    def fresh(self, base: str) -> str:
        self.k += 1
        return f"{base}_{self.k}"

    def input(self, name: str, arr: np.ndarray) -> str:
        ty = helper.np_dtype_to_tensor_dtype(arr.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, ty, list(arr.shape)))
        self.feeds[name] = arr
        return name

    def randn(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def const(self, arr, base: str = "c") -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def scalar(self, v: float, shape: tuple[int, ...] = ()) -> str:
        return self.const(np.full(shape, v, np.float32), "s")

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        name = self.fresh(op_type)
        out = out or f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def model(self, outputs: list[str], opset: int = OPSET) -> onnx.ModelProto:
        outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
        g = helper.make_graph(self.nodes, self.name, self.inputs, outs, self.inits)
        m = helper.make_model(
            g,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name="morsel tests/fusion",
        )
        m.ir_version = 5 if opset <= 10 else 8 if opset <= 17 else 9
        # Declare the outputs' types and shapes as ONNX shape inference finds them.
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        known = {v.name: v for v in inferred.graph.value_info}
        for o in m.graph.output:
            o.CopyFrom(known[o.name])
        return m

    # ---- building blocks

    def linear(self, x: str, k: int, n: int, bias_first: bool = False, bias_shape=None) -> str:
        """MatMul(x, W[k,n]) + b."""
        w = self.const(self.randn(k, n, scale=k**-0.5), "W")
        y = self.op("MatMul", [x, w])
        b = self.const(self.randn(*(bias_shape or (n,)), scale=0.5), "b")
        return self.op("Add", [b, y] if bias_first else [y, b])

    def erf_arg(self, x: str, div: bool) -> str:
        if div:
            return self.op("Div", [x, self.scalar(SQRT2)])
        return self.op("Mul", [self.scalar(INV_SQRT2), x])

    def gelu(self, x: str, order: str, div: bool, half: float = 0.5, cshape=()) -> str:
        """x·½·(1+erf(x/√2)) with ½ on the product, on x, or on (1+erf)."""
        e = self.op("Erf", [self.erf_arg(x, div)])
        one_erf = self.op("Add", [e, self.scalar(1.0, cshape)])
        h = self.scalar(half, cshape)
        if order == "product":  # (x·(1+erf))·½
            return self.op("Mul", [self.op("Mul", [x, one_erf]), h])
        if order == "half_x":  # (x·½)·(1+erf)   (HF BERT)
            return self.op("Mul", [self.op("Mul", [h, x]), one_erf])
        if order == "half_erf":  # ((1+erf)·½)·x
            return self.op("Mul", [x, self.op("Mul", [one_erf, h])])
        raise ValueError(order)

    def conv(self, x: str, cin: int, cout: int, k: int = 3, **attrs) -> str:
        w = self.const(self.randn(cout, cin, k, k, scale=(cin * k * k) ** -0.5), "Wc")
        b = self.const(self.randn(cout, scale=0.5), "bc")
        return self.op("Conv", [x, w, b], pads=[1, 1, 1, 1], **attrs)


# ---------------------------------------------------------------- cases
# Each returns (model, [output names]). Sizes are odd on purpose (edge tiles).


def gelu_after_linear(order: str, div: bool):
    def build(b: B):
        x = b.input("x", b.randn(2, 5, 12))
        y = b.gelu(b.linear(x, 12, 19), order, div)
        return b.model([y], OPSET), [y]

    return build


def gelu_of_input(order: str, div: bool):
    def build(b: B):
        x = b.input("x", b.randn(3, 37, scale=2.0))
        y = b.gelu(x, order, div)
        return b.model([y]), [y]

    return build


def gelu_op20(b: B):
    x = b.input("x", b.randn(4, 12))
    y = b.op("Gelu", [b.linear(x, 12, 21)])
    return b.model([y], 20), [y]


def gelu_tanh_op20(b: B):
    x = b.input("x", b.randn(4, 12))
    y = b.op("Gelu", [b.linear(x, 12, 21)], approximate="tanh")
    return b.model([y], 20), [y]


def bias(bias_first: bool, rank3: bool):
    def build(b: B):
        x = b.input("x", b.randn(2, 7, 10) if rank3 else b.randn(7, 10))
        shape = (1, 1, 13) if rank3 else (13,)
        y = b.linear(x, 10, 13, bias_first=bias_first, bias_shape=shape)
        return b.model([y]), [y]

    return build


def bias_1d_input(b: B):
    # x [K] @ W [K, N] + b [N]: MatMul's 1-D promotion, output [N].
    x = b.input("x", b.randn(10))
    y = b.linear(x, 10, 13)
    return b.model([y]), [y]


def bias_row_2d(b: B):
    x = b.input("x", b.randn(7, 10))
    y = b.linear(x, 10, 13, bias_shape=(1, 13))
    return b.model([y]), [y]


def neg_bias_raises_rank(b: B):
    # [1,1,N] bias on a 2-D product broadcasts the output up to rank 3.
    x = b.input("x", b.randn(7, 10))
    y = b.linear(x, 10, 13, bias_shape=(1, 1, 13))
    return b.model([y]), [y]


def conv_act(act: str):
    def build(b: B):
        x = b.input("x", b.randn(1, 3, 9, 11))
        c = b.conv(x, 3, 5)
        if act == "Relu":
            y = b.op("Relu", [c])
        elif act == "Clip06":
            y = b.op("Clip", [c, b.scalar(0.0), b.scalar(6.0)])
        elif act == "ClipMax":
            y = b.op("Clip", [c, "", b.scalar(0.25)])
        elif act == "HardSwish":
            y = b.op("HardSwish", [c])
        elif act == "HardSigmoid":
            y = b.op("HardSigmoid", [c], alpha=1.0 / 6.0, beta=0.5)
        else:
            raise ValueError(act)
        return b.model([y]), [y]

    return build


def convtranspose_leakyrelu(b: B):
    x = b.input("x", b.randn(1, 4, 5, 6))
    w = b.const(b.randn(4, 3, 3, 3, scale=0.3), "Wt")
    bb = b.const(b.randn(3, scale=0.5), "bt")
    c = b.op("ConvTranspose", [x, w, bb], strides=[2, 2], pads=[1, 1, 1, 1])
    y = b.op("LeakyRelu", [c], alpha=0.1)
    return b.model([y]), [y]


def bn(b: B, x: str, c: int) -> str:
    """An inference BatchNormalization over c channels with random statistics."""
    scale = b.const(b.randn(c, scale=0.5) + 1.0, "bn_scale")
    bias = b.const(b.randn(c, scale=0.5), "bn_bias")
    mean = b.const(b.randn(c, scale=0.5), "bn_mean")
    var = b.const(np.abs(b.randn(c)) + 0.2, "bn_var")
    return b.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)


def conv_bn_relu(b: B):
    # Conv without bias, BatchNormalization, Relu: one Conv with a bias.
    x = b.input("x", b.randn(1, 3, 7, 8))
    w = b.const(b.randn(5, 3, 3, 3, scale=0.4), "Wc")
    c = b.op("Conv", [x, w], pads=[1, 1, 1, 1])
    y = b.op("Relu", [bn(b, c, 5)])
    return b.model([y]), [y]


def convtranspose_bn_relu(b: B):
    # PP-OCR det's head: ConvTranspose (kernel = stride = 2) with a bias,
    # BatchNormalization, Relu.
    x = b.input("x", b.randn(1, 6, 5, 6))
    w = b.const(b.randn(6, 4, 2, 2, scale=0.4), "Wt")
    bb = b.const(b.randn(4, scale=0.5), "bt")
    c = b.op("ConvTranspose", [x, w, bb], strides=[2, 2])
    y = b.op("Relu", [bn(b, c, 4)])
    return b.model([y]), [y]


def convtranspose_grouped_bn(b: B):
    # Grouped ConvTranspose (weight [C_in, C_out/group, k, k]) without bias,
    # then BatchNormalization over its 2·3 output channels.
    x = b.input("x", b.randn(1, 4, 4, 5))
    w = b.const(b.randn(4, 3, 3, 3, scale=0.4), "Wt")
    c = b.op("ConvTranspose", [x, w], strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    y = bn(b, c, 6)
    return b.model([y]), [y]


def convtranspose_add_bn_relu(b: B):
    # As paddle2onnx writes PP-OCR det's head: ConvTranspose without bias,
    # the bias as an Add of a [C, 1, 1] constant, BatchNormalization, Relu.
    x = b.input("x", b.randn(1, 6, 5, 6))
    w = b.const(b.randn(6, 4, 2, 2, scale=0.4), "Wt")
    c = b.op("ConvTranspose", [x, w], strides=[2, 2])
    c = b.op("Add", [c, b.const(b.randn(4, 1, 1, scale=0.5), "bt")])
    y = b.op("Relu", [bn(b, c, 4)])
    return b.model([y]), [y]


def convtranspose_grouped_affine(b: B):
    # Grouped ConvTranspose, then s·y + t per channel ([1, C, 1, 1]).
    x = b.input("x", b.randn(1, 4, 4, 5))
    w = b.const(b.randn(4, 3, 3, 3, scale=0.4), "Wt")
    bb = b.const(b.randn(6, scale=0.5), "bt")
    c = b.op("ConvTranspose", [x, w, bb], strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    s = b.const(b.randn(1, 6, 1, 1), "s")
    t = b.const(b.randn(1, 6, 1, 1), "t")
    y = b.op("Add", [b.op("Mul", [c, s]), t])
    return b.model([y]), [y]


def gemm_transb_sigmoid(b: B):
    x = b.input("x", b.randn(6, 10))
    w = b.const(b.randn(17, 10, scale=0.5), "Wg")
    c = b.const(b.randn(17, scale=0.5), "bg")
    y = b.op("Sigmoid", [b.op("Gemm", [x, w, c], transB=1, alpha=0.75, beta=1.5)])
    return b.model([y]), [y]


def gemm_gelu(b: B):
    x = b.input("x", b.randn(6, 10))
    w = b.const(b.randn(10, 11, scale=0.5), "Wg")
    c = b.const(b.randn(11, scale=0.5), "bg")
    y = b.gelu(b.op("Gemm", [x, w, c]), "half_x", div=True)
    return b.model([y]), [y]


def gelu_residual(b: B):
    # x = MatMul + bias feeds the GELU and a residual Add: GELU and the bias
    # fuse, the activation cannot (x has two readers).
    x = b.input("x", b.randn(2, 3, 8))
    h = b.linear(x, 8, 8)
    y = b.op("Add", [b.gelu(h, "half_x", div=True), h])
    return b.model([y]), [y]


def conv_relu_sigmoid(b: B):
    # Two activations in a row: the first fuses, the second stays.
    x = b.input("x", b.randn(1, 3, 6, 7))
    y = b.op("Sigmoid", [b.op("Relu", [b.conv(x, 3, 4)])])
    return b.model([y]), [y]


def conv_clip_attr_opset10(b: B):
    # Clip's bounds as attributes (opset < 11): the importer makes them constants.
    x = b.input("x", b.randn(1, 3, 6, 7, scale=4.0))
    y = b.op("Clip", [b.conv(x, 3, 4)], min=0.0, max=6.0)
    return b.model([y], 10), [y]


def matmul_tanh(b: B):
    x = b.input("x", b.randn(3, 4, 10))
    y = b.op("Tanh", [b.linear(x, 10, 9)])
    return b.model([y]), [y]


def hard_swish(b: B, x: str, form: str, hi: float = 6.0, cshape=()) -> str:
    """x·clip(x+3, 0, hi)/6 as (x·clip)/6 ("mul_div") or x·(clip·⅙) ("div_mul")."""
    c = b.op("Clip", [b.op("Add", [x, b.scalar(3.0, cshape)]), b.scalar(0.0), b.scalar(hi)])
    if form == "mul_div":
        return b.op("Div", [b.op("Mul", [x, c]), b.scalar(6.0, cshape)])
    return b.op("Mul", [b.op("Mul", [c, b.scalar(1.0 / 6.0, cshape)]), x])


def hardswish_spelled_conv(b: B):
    x = b.input("x", b.randn(1, 3, 6, 7, scale=2.0))
    y = hard_swish(b, b.conv(x, 3, 4), "mul_div")
    return b.model([y]), [y]


def hardswish_spelled_input(b: B):
    x = b.input("x", b.randn(3, 41, scale=4.0))
    y = hard_swish(b, x, "div_mul")
    return b.model([y]), [y]


def conv_affine(b: B):
    # Conv(x)·s + t, s a scalar, t per channel [1, M, 1, 1] (PP-OCR's learnable affine).
    x = b.input("x", b.randn(1, 3, 6, 7))
    c = b.conv(x, 3, 5)
    y = b.op("Add", [b.op("Mul", [c, b.scalar(1.7)]), b.const(b.randn(1, 5, 1, 1), "t")])
    return b.model([y]), [y]


def conv_affine_grouped_relu(b: B):
    # Grouped Conv without bias, then t + s·Conv(x) with s, t per channel [M, 1, 1]
    # (constants first), then Relu.
    x = b.input("x", b.randn(1, 4, 6, 7))
    w = b.const(b.randn(6, 2, 3, 3, scale=0.4), "Wc")
    c = b.op("Conv", [x, w], pads=[1, 1, 1, 1], group=2)
    s = b.const(b.randn(6, 1, 1), "s")
    t = b.const(b.randn(6, 1, 1), "t")
    y = b.op("Relu", [b.op("Add", [t, b.op("Mul", [s, c])])])
    return b.model([y]), [y]


def conv_hardswish_affine(b: B):
    # Conv, HardSwish, then a learnable affine block: Mul by a [1] scalar, Add
    # a [1] scalar (PP-LCNet in PP-OCRv4, as paddle2onnx writes it).
    x = b.input("x", b.randn(1, 3, 9, 11, scale=2.0))
    h = b.op("HardSwish", [b.conv(x, 3, 5)])
    y = b.op("Add", [b.op("Mul", [h, b.scalar(0.83, (1,))]), b.scalar(-0.21, (1,))])
    return b.model([y]), [y]


def matmul_relu_shift(b: B):
    # MatMul + bias, Relu, then only an Add (constant first).
    x = b.input("x", b.randn(5, 19))
    y = b.op("Add", [b.scalar(0.5), b.op("Relu", [b.linear(x, 19, 23)])])
    return b.model([y]), [y]


def attention_scores_div(b: B):
    # Attention's scores: Q·Kᵀ per head (batched MatMul of two inputs), then
    # divided by √d (d = 8, not a power of two).
    q = b.input("q", b.randn(1, 2, 6, 8))
    kt = b.input("kt", b.randn(1, 2, 8, 5))
    d = b.const(np.float32(np.sqrt(np.float32(8.0))), "sqrt_d")
    y = b.op("Div", [b.op("MatMul", [q, kt]), d])
    return b.model([y]), [y]


def matmul_scale_shift(b: B):
    # MatMul + bias without an activation, then Mul and Add by scalars.
    x = b.input("x", b.randn(5, 19))
    y = b.op("Add", [b.op("Mul", [b.linear(x, 19, 23), b.scalar(0.7)]), b.scalar(-0.25)])
    return b.model([y]), [y]


def neg_scalar_div_by_matmul(b: B):
    # c / (MatMul(x) + 30) is not an affine of the product: the Div stays
    # (the + 30, fused as a shift, keeps the quotient well conditioned).
    x = b.input("x", b.randn(5, 19))
    y = b.op("Div", [b.scalar(2.0), b.op("Add", [b.linear(x, 19, 23), b.scalar(30.0)])])
    return b.model([y]), [y]


def neg_affine_per_channel_after_act(b: B):
    # A per-channel scale after the activation is not a scalar affine: it stays.
    x = b.input("x", b.randn(1, 3, 6, 7))
    h = b.op("Relu", [b.conv(x, 3, 4)])
    y = b.op("Mul", [h, b.const(b.randn(1, 4, 1, 1), "s")])
    return b.model([y]), [y]


def neg_affine_after_gelu(b: B):
    # The runtime has no affine after a fused GELU: the Mul stays.
    x = b.input("x", b.randn(4, 13))
    y = b.op("Mul", [b.op("Gelu", [b.linear(x, 13, 17)]), b.scalar(1.5)])
    return b.model([y], opset=20), [y]


# ---- negative: fusion must not happen (or only the parts that are safe)


def neg_hardswish_clip_0_5(b: B):
    x = b.input("x", b.randn(3, 41, scale=4.0))
    y = hard_swish(b, x, "mul_div", hi=5.0)
    return b.model([y]), [y]


def neg_hardswish_constants_raise_rank(b: B):
    # The 3 and the 6 are [1, 1, 1]: the output is [1, 3, 41].
    x = b.input("x", b.randn(3, 41, scale=4.0))
    y = hard_swish(b, x, "mul_div", cshape=(1, 1, 1))
    return b.model([y]), [y]


def neg_conv_affine_not_per_channel(b: B):
    # Scale per column [1, 1, 1, W] and shift per row [H, 1], with H = W = M
    # channels: as many values as channels, on the wrong axes.
    x = b.input("x", b.randn(1, 3, 7, 7))
    c = b.conv(x, 3, 7)
    y = b.op("Mul", [c, b.const(b.randn(1, 1, 1, 7), "s")])
    y = b.op("Add", [y, b.const(b.randn(7, 1), "t")])
    return b.model([y]), [y]


def neg_conv_affine_raises_rank(b: B):
    # A one-element scale of shape [1, 1, 1, 1, 1] makes the output 5-D.
    x = b.input("x", b.randn(1, 3, 6, 7))
    y = b.op("Mul", [b.conv(x, 3, 4), b.scalar(1.5, (1, 1, 1, 1, 1))])
    return b.model([y]), [y]




def neg_matmul_output_is_graph_output(b: B):
    x = b.input("x", b.randn(5, 10))
    w = b.const(b.randn(10, 8, scale=0.3), "W")
    mm = b.op("MatMul", [x, w], out="mm")
    y = b.op("Add", [mm, b.const(b.randn(8), "b")], out="y")
    c = b.conv(b.input("img", b.randn(1, 2, 5, 5)), 2, 3)
    z = b.op("Relu", [c])
    return b.model([mm, y, c, z]), [mm, y, c, z]


def neg_second_reader(b: B):
    x = b.input("x", b.randn(5, 10))
    w = b.const(b.randn(10, 8, scale=0.3), "W")
    mm = b.op("MatMul", [x, w])
    y = b.op("Add", [mm, b.const(b.randn(8), "b")])
    y2 = b.op("Sigmoid", [mm])
    c = b.conv(b.input("img", b.randn(1, 2, 5, 5)), 2, 3)
    z = b.op("Relu", [c])
    z2 = b.op("Mul", [c, b.scalar(3.0)])
    return b.model([y, y2, z, z2]), [y, y2, z, z2]


def neg_bias_is_input(b: B):
    x = b.input("x", b.randn(5, 10))
    w = b.const(b.randn(10, 8, scale=0.3), "W")
    y = b.op("Add", [b.op("MatMul", [x, w]), b.input("bias", b.randn(8))])
    return b.model([y]), [y]


def neg_weight_is_input(b: B):
    x = b.input("x", b.randn(5, 10))
    w = b.input("w", b.randn(10, 8))
    y = b.op("Add", [b.op("MatMul", [x, w]), b.const(b.randn(8), "b")])
    return b.model([y]), [y]


def neg_clip_bounds_are_inputs(b: B):
    x = b.input("x", b.randn(1, 3, 6, 7))
    lo = b.input("lo", np.array(-0.25, np.float32))
    hi = b.input("hi", np.array(0.5, np.float32))
    y = b.op("Clip", [b.conv(x, 3, 4), lo, hi])
    return b.model([y]), [y]


def neg_gelu_wrong_half(b: B):
    x = b.input("x", b.randn(2, 5, 12))
    y = b.gelu(b.linear(x, 12, 19), "half_x", div=True, half=0.6)
    return b.model([y]), [y]


def neg_gelu_erf_is_output(b: B):
    x = b.input("x", b.randn(3, 17))
    e = b.op("Erf", [b.op("Div", [x, b.scalar(SQRT2)])], out="erf")
    y = b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [e, b.scalar(1.0)])], out="y")
    return b.model([y, e]), [y, e]


def neg_gelu_constants_raise_rank(b: B):
    # The "scalar" constants are [1,1,1]: the output is [1, 3, 17], not [3, 17].
    x = b.input("x", b.randn(3, 17))
    y = b.gelu(x, "product", div=False, cshape=(1, 1, 1))
    return b.model([y]), [y]


def neg_int_matmul_relu(b: B):
    # An integer product followed by Relu: the fused activation only exists for f32.
    x = b.input("x", b.rng.integers(-9, 9, (4, 6)).astype(np.int32))
    w = b.const(b.rng.integers(-9, 9, (6, 5)).astype(np.int32), "Wi")
    y = b.op("Relu", [b.op("MatMul", [x, w])])
    return b.model([y]), [y]


def layer_norm(b: B, x: str, square: str, affine: bool, axes=(-1,), eps=1e-5) -> str:
    """LayerNorm spelled out as opset < 17 exporters (and Paddle's p2o) write it."""
    m = b.op("ReduceMean", [x], axes=list(axes))
    d = b.op("Sub", [x, m])
    sq = b.op("Pow", [d, b.scalar(2.0)]) if square == "pow" else b.op("Mul", [d, d])
    v = b.op("ReduceMean", [sq], axes=list(axes))
    s = b.op("Sqrt", [b.op("Add", [v, b.scalar(eps)])])
    y = b.op("Div", [d, s])
    if affine:
        n = b.feeds[x].shape[-1]
        y = b.op("Mul", [y, b.const(b.randn(n), "gamma")])
        y = b.op("Add", [b.const(b.randn(n), "beta"), y])
    return y


def layer_norm_pow_affine(b: B):
    x = b.input("x", b.randn(2, 5, 24, scale=3.0) + 1.5)
    y = layer_norm(b, x, "pow", affine=True)
    return b.model([y]), [y]


def layer_norm_mul_plain(b: B):
    x = b.input("x", b.randn(7, 33, scale=0.2))
    y = layer_norm(b, x, "mul", affine=False, eps=1e-6)
    return b.model([y]), [y]


def neg_layer_norm_axis0(b: B):
    x = b.input("x", b.randn(6, 4))
    y = layer_norm(b, x, "pow", affine=False, axes=(0,))
    return b.model([y]), [y]


CASES = {
    # LayerNorm spelled out: one LayerNormalization.
    "layer_norm_pow_affine": layer_norm_pow_affine,
    "layer_norm_mul_plain": layer_norm_mul_plain,
    "neg_layer_norm_axis0": neg_layer_norm_axis0,
    # GELU spelled out after MatMul+bias: everything becomes one MatMul(x, W, b) with gelu.
    "gelu_product_div_linear": gelu_after_linear("product", div=True),
    "gelu_half_x_div_linear": gelu_after_linear("half_x", div=True),
    "gelu_half_erf_mul_linear": gelu_after_linear("half_erf", div=False),
    # ... of a graph input: one Gelu.
    "gelu_product_mul_input": gelu_of_input("product", div=False),
    "gelu_half_x_mul_input": gelu_of_input("half_x", div=False),
    "gelu_half_erf_div_input": gelu_of_input("half_erf", div=True),
    # ONNX Gelu (opset 20) after MatMul+bias.
    "gelu_op20_linear": gelu_op20,
    "gelu_tanh_op20_linear": gelu_tanh_op20,
    # MatMul + Add bias.
    "bias_second": bias(bias_first=False, rank3=False),
    "bias_first": bias(bias_first=True, rank3=False),
    "bias_111n_rank3": bias(bias_first=False, rank3=True),
    "bias_1n_rank2": bias_row_2d,
    "bias_1d_input": bias_1d_input,
    # Activations into their producer.
    "conv_relu": conv_act("Relu"),
    "conv_clip_0_6": conv_act("Clip06"),
    "conv_clip_max_only": conv_act("ClipMax"),
    "conv_hardswish": conv_act("HardSwish"),
    "conv_hardsigmoid": conv_act("HardSigmoid"),
    "convtranspose_leakyrelu": convtranspose_leakyrelu,
    # BatchNormalization folded into the producer's weights and bias.
    "conv_bn_relu": conv_bn_relu,
    "convtranspose_bn_relu": convtranspose_bn_relu,
    "convtranspose_grouped_bn": convtranspose_grouped_bn,
    "convtranspose_add_bn_relu": convtranspose_add_bn_relu,
    "convtranspose_grouped_affine": convtranspose_grouped_affine,
    "gemm_transb_sigmoid": gemm_transb_sigmoid,
    "matmul_bias_tanh": matmul_tanh,
    "gemm_gelu": gemm_gelu,
    "gelu_residual": gelu_residual,
    "conv_relu_sigmoid": conv_relu_sigmoid,
    "conv_clip_attr_opset10": conv_clip_attr_opset10,
    # HardSwish spelled out; a constant affine after a Conv.
    "hardswish_spelled_conv": hardswish_spelled_conv,
    "hardswish_spelled_input": hardswish_spelled_input,
    "conv_affine": conv_affine,
    "conv_affine_grouped_relu": conv_affine_grouped_relu,
    # A scalar affine after a fused activation.
    "conv_hardswish_affine": conv_hardswish_affine,
    "matmul_relu_shift": matmul_relu_shift,
    "neg_affine_per_channel_after_act": neg_affine_per_channel_after_act,
    "neg_affine_after_gelu": neg_affine_after_gelu,
    # A scalar affine with no activation before it; Div as a scale.
    "attention_scores_div": attention_scores_div,
    "matmul_scale_shift": matmul_scale_shift,
    "neg_scalar_div_by_matmul": neg_scalar_div_by_matmul,
    # Negative.
    "neg_matmul_output_is_graph_output": neg_matmul_output_is_graph_output,
    "neg_second_reader": neg_second_reader,
    "neg_bias_is_input": neg_bias_is_input,
    "neg_weight_is_input": neg_weight_is_input,
    "neg_bias_raises_rank": neg_bias_raises_rank,
    "neg_clip_bounds_are_inputs": neg_clip_bounds_are_inputs,
    "neg_gelu_wrong_half": neg_gelu_wrong_half,
    "neg_gelu_erf_is_output": neg_gelu_erf_is_output,
    "neg_gelu_constants_raise_rank": neg_gelu_constants_raise_rank,
    "neg_int_matmul_relu": neg_int_matmul_relu,
    "neg_hardswish_clip_0_5": neg_hardswish_clip_0_5,
    "neg_hardswish_constants_raise_rank": neg_hardswish_constants_raise_rank,
    "neg_conv_affine_not_per_channel": neg_conv_affine_not_per_channel,
    "neg_conv_affine_raises_rank": neg_conv_affine_raises_rank,
}


def main() -> None:
    total = 0
    for name, build in CASES.items():
        b = B(name)
        model, outputs = build(b)
        onnx.checker.check_model(model, full_check=True)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        got = sess.run(outputs, b.feeds)
        arrays = dict(b.feeds)
        for o, v in zip(outputs, got):
            arrays[f"out:{o}"] = v
        onnx.save(model, HERE / f"{name}.onnx")
        np.savez(HERE / f"{name}.npz", **arrays)
        size = (HERE / f"{name}.onnx").stat().st_size + (HERE / f"{name}.npz").stat().st_size
        total += size
        shapes = ", ".join(f"{o}{list(v.shape)}" for o, v in zip(outputs, got))
        print(f"{name:38s} {size:6d} B  {shapes}")
    print(f"{len(CASES)} cases, {total} bytes")


if __name__ == "__main__":
    main()
