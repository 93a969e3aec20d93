//! Per-layer weight encodings, for `morsel inspect`: every node that holds
//! a constant weight (MatMul, Gemm, Conv, ConvTranspose, Gather over a
//! constant table, and the int8 QMatMul/QGather), what its weight is
//! stored as, and what arithmetic it runs in. Layers that run in f32 say so.

use morsel_runtime::DType;
use morsel_runtime::graph::{Graph, Storage};
use morsel_runtime::ops::op_name;
use morsel_runtime::tensor::dims_str;
use serde_json::{Value as Json, json};

#[derive(Debug, Clone)]
pub struct Layer {
    pub node: String,
    pub op: &'static str,
    /// The weight: `dtype [dims]`.
    pub weight: String,
    pub weight_bytes: usize,
    /// How the weight is encoded and how the layer computes.
    pub encoding: &'static str,
    pub compute: &'static str,
    /// Share of the weight's values that are zero (pruned).
    pub sparsity: f64,
}

impl Layer {
    pub fn to_json(&self) -> Json {
        json!({"node": self.node, "op": self.op, "weight": self.weight, "weight_bytes": self.weight_bytes,
               "encoding": self.encoding, "compute": self.compute, "sparsity": self.sparsity})
    }
}

/// The weight-bearing layers of `g`, in graph order.
pub fn layers(g: &Graph) -> Vec<Layer> {
    let mut out = Vec::new();
    for n in &g.nodes {
        let op = op_name(n.op);
        let (slot, encoding, compute) = match op {
            "QMatMul" => (
                1,
                "int8 per output channel",
                "int8×int8→i32 compute, f32 out",
            ),
            "QGather" => (0, "int8 per row", "rows dequantized to f32"),
            "QConv" => (
                1,
                "int8 per output channel",
                "int8×int8→i32 compute (im2col patches per row), f32 out",
            ),
            "QLinearConv" | "QLinearMatMul" if qlinear_fits_kernels(g, n) => (
                3,
                "int8 (static: scales from calibration)",
                "int8 in, int8×int8→i32 on the int8 kernels, int8 out",
            ),
            "QLinearConv" | "QLinearMatMul" => (
                3,
                "int8 (static: scales from calibration)",
                "int8 in and out, exact scalar i32 loop (grouped, per-row scales, or a weight beyond [-127, 127] after its zero point: slow)",
            ),
            "MatMul" | "Gemm" => (1, "f32", "f32 compute"),
            "Conv" | "ConvTranspose" => (1, "f32", "f32 compute"),
            "Gather" => (0, "f32", "f32 rows"),
            _ => continue,
        };
        let Some(w) = n.inputs.get(slot).copied().flatten() else {
            continue;
        };
        let Some(t) = g.values[w].konst.as_ref() else {
            continue;
        };
        if op == "Gather" && !t.dtype.is_float() {
            continue; // shape bookkeeping, not a weight
        }
        let mut bytes = t.data.len();
        if matches!(
            op,
            "QMatMul" | "QGather" | "QConv" | "QLinearConv" | "QLinearMatMul"
        ) && let Some(s) = n.inputs.get(slot + 1).copied().flatten()
        {
            bytes += g.values[s].konst.as_ref().map_or(0, |s| s.data.len());
        }
        let zeros = match t.dtype {
            DType::F32 => t
                .as_slice::<f32>()
                .map_or(0, |v| v.iter().filter(|x| **x == 0.0).count()),
            DType::I8 => t
                .as_slice::<i8>()
                .map_or(0, |v| v.iter().filter(|x| **x == 0).count()),
            _ => 0,
        };
        let (mut encoding, mut compute) = (encoding, compute);
        if let Storage::Int8PerChannel { axis } = g.values[w].storage {
            // In memory it is f32 again; the file holds int8 + scales.
            if let Ok(x) = t.as_slice::<f32>() {
                let mut stored = Vec::new();
                morsel_runtime::format::int8::encode(x, &t.dims, axis, &mut stored);
                bytes = stored.len();
            }
            encoding = "int8 per channel in the file (weight-only)";
            compute = "widened to f32 at load; f32 compute";
        }
        out.push(Layer {
            sparsity: zeros as f64 / t.numel().max(1) as f64,
            node: n.name.clone(),
            op,
            weight: format!("{} {}", t.dtype, dims_str(&t.dims)),
            weight_bytes: bytes,
            encoding,
            compute,
        });
    }
    out
}

/// Whether a QLinearConv/QLinearMatMul runs on the int8 kernels (see
/// runtime/src/ops/qlinear.rs): group 1, one scale for its input, and a
/// constant weight whose values minus their zero point fit `[-127, 127]`.
fn qlinear_fits_kernels(g: &Graph, n: &morsel_runtime::graph::Node) -> bool {
    let konst = |i: usize| {
        n.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|v| g.values[v].konst.as_ref())
    };
    if n.attrs.int("group", 1).unwrap_or(1) != 1 || konst(1).is_some_and(|s| s.numel() != 1) {
        return false;
    }
    let ints = |t: &morsel_runtime::tensor::Tensor| -> Option<Vec<i32>> {
        match t.dtype {
            DType::I8 => Some(t.as_slice::<i8>().ok()?.iter().map(|&v| v as i32).collect()),
            DType::U8 => Some(t.as_slice::<u8>().ok()?.iter().map(|&v| v as i32).collect()),
            _ => None,
        }
    };
    let (Some(w), zp) = (konst(3).and_then(ints), konst(5).and_then(ints)) else {
        return false;
    };
    let zp = zp.unwrap_or_else(|| vec![0]);
    let per = if op_name(n.op) == "QLinearConv" {
        w.len() / zp.len().max(1)
    } else {
        1
    };
    w.iter().enumerate().all(|(i, &v)| {
        let z = if zp.len() == 1 {
            zp[0]
        } else if op_name(n.op) == "QLinearConv" {
            zp[(i / per.max(1)).min(zp.len() - 1)]
        } else {
            zp[i % zp.len()]
        };
        (-127..=127).contains(&(v - z))
    })
}
