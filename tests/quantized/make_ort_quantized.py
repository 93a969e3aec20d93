"""Pre-quantized ONNX fixtures from ONNX Runtime's own quantizer (issue 4,
"import pre-quantized ONNX"), made from the bundled digits CNN:

  digits_ort_dynamic.onnx  quantize_dynamic (QInt8 weights): DynamicQuantizeLinear,
                           ConvInteger, MatMulInteger (QOperator-style integer ops)
  digits_ort_qdq.onnx      quantize_static, QDQ format (QUInt8 activations, QInt8
                           per-channel weights, calibrated on the first 128 test
                           images): QuantizeLinear / DequantizeLinear around Conv, Gemm
  digits_ort_qop.onnx      quantize_static, QOperator format, convs only (Gemm would
                           become com.microsoft QGemm): QuantizeLinear, QLinearConv
                           (u8 activations, i8 per-channel weights), DequantizeLinear;
                           reduce_range (7-bit weights), without which ORT's AVX2
                           u8×s8 kernel saturates its i16 pair sums (255·127·2 >
                           32767) and departs from ONNX's definition by up to 37
                           codes on this model, where Morsel's exact i32 does not
  *_logits.npy             ONNX Runtime's outputs on examples/digits/digits_test.npz:
                           the dynamic model as ORT runs it; the QDQ model with graph
                           optimizations off (ORT_DISABLE_ALL), i.e. the ops as ONNX
                           defines them, because ORT's optimizer fuses QDQ into
                           QLinearConv/QGemm and rounds differently (printed below)

    .venv/bin/python tests/quantized/make_ort_quantized.py   (onnxruntime==1.32.0)
"""
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parents[1] / "examples" / "digits"


class Calibration(CalibrationDataReader):
    def __init__(self, x):
        self.batches = iter([{"x": x[i:i + 16]} for i in range(0, 128, 16)])

    def get_next(self):
        return next(self.batches, None)


def main():
    src = DIGITS / "digits_cnn.onnx"
    test = np.load(DIGITS / "digits_test.npz")
    x, y = test["x"].astype(np.float32), test["y"]
    dyn, qdq = HERE / "digits_ort_dynamic.onnx", HERE / "digits_ort_qdq.onnx"
    qop = HERE / "digits_ort_qop.onnx"
    quantize_dynamic(str(src), str(dyn), weight_type=QuantType.QInt8)
    quantize_static(str(src), str(qdq), Calibration(x), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    quantize_static(str(src), str(qop), Calibration(x), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=["Conv"], reduce_range=True)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    acc = lambda l: (l.argmax(1) == y).mean()
    d = ort.InferenceSession(str(dyn)).run(None, {"x": x})[0]
    q = ort.InferenceSession(str(qdq), plain).run(None, {"x": x})[0]
    q_fused = ort.InferenceSession(str(qdq)).run(None, {"x": x})[0]
    np.save(HERE / "digits_ort_dynamic_logits.npy", d)
    np.save(HERE / "digits_ort_qdq_logits.npy", q)
    o = ort.InferenceSession(str(qop), plain).run(None, {"x": x})[0]
    np.save(HERE / "digits_ort_qop_logits.npy", o)
    print(f"QOperator (QLinearConv) accuracy {acc(o):.4f}")
    print(f"onnxruntime {ort.__version__}: dynamic accuracy {acc(d):.4f}; QDQ {acc(q):.4f} "
          f"(ORT's fused QLinear path: {acc(q_fused):.4f}, max |diff| to the unfused "
          f"{np.abs(q_fused - q).max():.3f})")


if __name__ == "__main__":
    main()
