//! Dynamic int8 quantization: weights become int8 at compress time,
//! activations are quantized at run time.
//!
//! [`quantize_dynamic`] rewrites, in place:
//! - `MatMul(A, W[, bias])` with a constant f32 2-D `W` `[K, N]` (with the
//!   bias input and `activation` attributes the fusion passes add) and
//!   `Gemm(A, B[, C])` with a constant `B` (`transB` is transposed here,
//!   `alpha` folded into the weight, `beta·C` into the bias when `C` is
//!   `[N]`, `[1, N]` or a scalar) into `QMatMul(A, Wq, W_scale[, bias])`:
//!   `Wq` int8 `[K, N]`, symmetric per output channel, `scale_j =
//!   max_k |W[k][j]| / 127`, values `round_half_even(W/scale)` clamped to
//!   `[-127, 127]`. The runtime quantizes each row of `A` when it runs
//!   (asymmetric, over the row's range) and multiplies int8×int8 into i32
//!   (runtime/src/ops/qmatmul.rs).
//! - `Conv(X, W[M, C, k…][, bias])` with one group and a constant f32 `W`
//!   into `QConv(X, Wq, W_scale[, bias])`, symmetric per output channel
//!   over `C·k…`; at run time each im2col patch row is quantized like a row
//!   of `A` (runtime/src/ops/qconv.rs). Grouped/depthwise convs and
//!   ConvTranspose stay f32, with the reason in the report.
//! - `Gather(table, indices)` along axis 0 of a constant f32 table (an
//!   embedding) into `QGather(Tq, scale, indices)`, symmetric per row.
//!
//! Weights smaller than [`QuantOptions::min_size`] stay f32 (quantizing
//! their activations costs more than the int8 product saves, and they weigh
//! nothing), as do nodes named in [`QuantOptions::keep_float`]. The
//! [`QuantReport`] lists every node converted (with the weight's relative
//! quantization error) and every weight-bearing node left in f32 with the
//! reason. [`measure_error`] runs the f32 and the int8 model on the same
//! data and compares their outputs.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use morsel_runtime::format::int8;
use morsel_runtime::graph::{Attrs, Graph, Node, Storage, ValueId};
use morsel_runtime::ops::{OpId, op_id, op_name};
use morsel_runtime::tensor::{Tensor, dims_str};
use morsel_runtime::{DType, Model, Options};
use serde_json::{Value as Json, json};

use crate::passes::compact;

/// What [`quantize_dynamic`] converts.
#[derive(Debug, Clone)]
pub struct QuantOptions {
    /// Node names left in f32.
    pub keep_float: Vec<String>,
    /// Weights with fewer elements than this stay f32.
    pub min_size: usize,
    /// Convs whose reduction per output (input channels per group × kernel
    /// taps) is shorter than this compute in f32 (their weights stored
    /// int8), where quantizing the image and the outputs costs more than
    /// the int8 product saves. On AVX2 without VNNI (PP-OCR det, one
    /// thread) 1×1 convs of 48–384 channels ran 1.03–2.5× slower in int8
    /// and 3×3 convs of 96 channels (864) 1.25× faster; with 512, det ran
    /// 11% faster than f32 instead of 7%, but its text-map IoU vs f32 fell
    /// from 0.962 to 0.943 (f32 compute on int8-stored weights came out
    /// further from f32 than int8 compute, layer by layer closer). So the
    /// default is 0: every conv that int8 can compute.
    pub min_reduction: usize,
    /// Of the `keep_float` nodes, those whose constant weights and bias are
    /// rounded to IEEE halves (2 bytes each in the file; compute stays f32,
    /// each value moves by at most 2⁻¹¹ of itself, or 2⁻²⁵ below 6·10⁻⁵):
    /// the layers `--max-error` puts back, at half the bytes of f32.
    pub half_weights: Vec<String>,
}

impl Default for QuantOptions {
    fn default() -> QuantOptions {
        QuantOptions {
            keep_float: Vec::new(),
            min_size: 4096,
            min_reduction: 0,
            half_weights: Vec::new(),
        }
    }
}

/// One node turned int8.
#[derive(Debug, Clone)]
pub struct Converted {
    pub node: String,
    /// The op it was (`MatMul`, `Gemm`, `Gather`).
    pub from: &'static str,
    /// The op it is now (`QMatMul`, `QGather`).
    pub to: &'static str,
    /// The int8 weight's shape: `[K, N]`, or `[rows, width]` for a table.
    pub shape: [usize; 2],
    /// `‖W − dequant(Wq)‖ / ‖W‖` (Frobenius).
    pub weight_rel_error: f64,
    pub f32_bytes: usize,
    /// int8 values plus f32 scales.
    pub int8_bytes: usize,
}

/// One weight-bearing node left in f32, and why.
#[derive(Debug, Clone)]
pub struct Kept {
    pub node: String,
    pub op: String,
    pub reason: String,
    /// The f32 weight is stored int8 per channel in the file (widened at
    /// load; the layer computes in f32): `(f32 bytes, stored bytes,
    /// relative error ‖W−Ŵ‖/‖W‖)`.
    pub int8_storage: Option<(usize, usize, f64)>,
    /// The weight (and bias) are stored as IEEE halves (`half_weights`).
    pub half_storage: bool,
}

#[derive(Debug, Clone, Default)]
pub struct QuantReport {
    pub converted: Vec<Converted>,
    pub kept: Vec<Kept>,
    /// Biases rounded to IEEE halves (see [`round_biases_to_f16`]):
    /// `(tensors, values)`, and the bias tensors left f32.
    pub biases_f16: (usize, usize),
    pub biases_f32: usize,
}

impl QuantReport {
    pub fn to_json(&self) -> Json {
        json!({
            "converted": self.converted.iter().map(|c| json!({
                "node": c.node, "from": c.from, "to": c.to, "shape": c.shape,
                "weight_rel_error": c.weight_rel_error,
                "f32_bytes": c.f32_bytes, "int8_bytes": c.int8_bytes,
            })).collect::<Vec<_>>(),
            "kept_float": self.kept.iter().map(|k| json!({
                "node": k.node, "op": k.op, "reason": k.reason,
                "int8_storage": k.int8_storage.map(|(f, q, rel)| json!({"f32_bytes": f, "stored_bytes": q, "weight_rel_error": rel})),
            })).collect::<Vec<_>>(),
        })
    }

    /// Weight bytes of the converted nodes, before and after.
    pub fn weight_bytes(&self) -> (usize, usize) {
        self.converted
            .iter()
            .fold((0, 0), |(a, b), c| (a + c.f32_bytes, b + c.int8_bytes))
    }
}

/// Symmetric int8 of `w` (`rows×cols`, row-major) with one scale per
/// column (`per_col`) or per row: `(values, scales, relative error)`.
/// Add a quantized weight (its int8 values in the weight's `dims`, one
/// scale per channel) as two constants named after the f32 weight `w`,
/// and record the conversion of `node` (`shape` is the weight as 2-D).
fn add_quantized(
    g: &mut Graph,
    report: &mut QuantReport,
    (w, dims, shape): (ValueId, &[usize], [usize; 2]),
    (node, from, to): (&str, &'static str, &'static str),
    (qv, sv, rel): (Vec<i8>, Vec<f32>, f64),
) -> Result<(ValueId, ValueId)> {
    let base = g.values[w].name.clone();
    let (qn, sn) = (
        g.fresh_name(&format!("{base}.int8")),
        g.fresh_name(&format!("{base}.scale")),
    );
    let q = g.add_const(&qn, Tensor::from_slice(dims, &qv)?);
    let s = g.add_const(&sn, Tensor::from_slice(&[sv.len()], &sv)?);
    let numel = shape[0] * shape[1];
    report.converted.push(Converted {
        node: node.to_string(),
        from,
        to,
        shape,
        weight_rel_error: rel,
        f32_bytes: numel * 4,
        int8_bytes: numel + scale_bytes(&sv),
    });
    Ok((q, s))
}

/// Bytes the writer stores `scales` in: 2 each when all are exact halves
/// (they are, rounded up to the half grid, unless one is over 65504).
fn scale_bytes(scales: &[f32]) -> usize {
    let halves = scales.iter().all(|&v| half::f16::from_f32(v).to_f32() == v);
    scales.len() * if halves { 2 } else { 4 }
}

fn quantize_weight(w: &[f32], rows: usize, cols: usize, per_col: bool) -> (Vec<i8>, Vec<f32>, f64) {
    let groups = if per_col { cols } else { rows };
    let at = |g: usize, i: usize| if per_col { i * cols + g } else { g * cols + i };
    let len = if per_col { rows } else { cols };
    let mut q = vec![0i8; rows * cols];
    let mut scales = vec![0f32; groups];
    let (mut err, mut norm) = (0f64, 0f64);
    for g in 0..groups {
        let m = (0..len).map(|i| w[at(g, i)].abs()).fold(0f32, f32::max);
        let s = int8::f16_grid_up(m / 127.0);
        scales[g] = s;
        for i in 0..len {
            let x = w[at(g, i)];
            let v = if s == 0.0 {
                0
            } else {
                (x / s).round_ties_even().clamp(-127.0, 127.0) as i8
            };
            q[at(g, i)] = v;
            err += (x as f64 - v as f64 * s as f64).powi(2);
            norm += (x as f64).powi(2);
        }
    }
    let rel = if norm > 0.0 { (err / norm).sqrt() } else { 0.0 };
    (q, scales, rel)
}

/// Where a QMatMul's bias comes from.
enum Bias {
    None,
    Value(ValueId),
    New(Vec<f32>),
}

/// A MatMul/Gemm to convert: the activation, the weight `[K, N]` as f32
/// (already transposed and scaled), and the bias.
struct LinearPlan {
    a: ValueId,
    /// The f32 weight value and how it was changed (for sharing).
    key: (ValueId, bool, u32),
    w: Vec<f32>,
    k: usize,
    n: usize,
    bias: Bias,
}

fn const_f32<'g>(g: &'g Graph, v: Option<ValueId>, what: &str) -> Result<&'g Tensor, String> {
    let Some(v) = v else {
        return Err(format!("no {what}"));
    };
    let Some(t) = g.values[v].konst.as_ref() else {
        return Err(format!(
            "{what} '{}' is not a constant (an activation × activation product)",
            g.values[v].name
        ));
    };
    if t.dtype != DType::F32 {
        return Err(format!("{what} is {}, not f32", t.dtype));
    }
    Ok(t)
}

/// Store the f32 weight `w` of a layer that computes in f32 as int8, one
/// scale per slice along `axis` (its output channels): a quarter of the
/// bytes in the file, widened to f32 at load (FORMAT.md, encoding 16).
/// Returns `(f32 bytes, stored bytes, relative error ‖W−Ŵ‖/‖W‖)`, or `None`
/// where it does not pay or cannot be done (not f32, fewer than 16 values
/// or 2 per channel, NaN or infinite values).
fn store_weight_int8(g: &mut Graph, w: ValueId, axis: usize) -> Option<(usize, usize, f64)> {
    let t = g.values[w].konst.as_ref()?;
    let (dims, n) = (t.dims.clone(), t.numel());
    if t.dtype != DType::F32 || axis >= dims.len() || n < 16 || n < 2 * dims[axis] {
        return None;
    }
    let x = t.as_slice::<f32>().ok()?;
    finite(x).ok()?;
    let mut enc = Vec::new();
    let e = int8::encode(x, &dims, axis, &mut enc);
    let y = int8::decode(&enc, &dims, axis, e).ok()?;
    let (err, norm) = x.iter().zip(&y).fold((0f64, 0f64), |(e, m), (&a, &b)| {
        (e + ((a - b) as f64).powi(2), m + (a as f64).powi(2))
    });
    g.values[w].storage = Storage::Int8PerChannel { axis };
    Some((
        4 * n,
        enc.len(),
        if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
    ))
}

fn finite(w: &[f32]) -> Result<(), String> {
    if w.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err("the weight has NaN or infinite values".into())
    }
}

fn big_enough(k: usize, n: usize, min: usize) -> Result<(), String> {
    if k.saturating_mul(n) < min {
        return Err(format!(
            "{k}×{n} = {} weights, under the minimum {min}: int8 would not pay",
            k * n
        ));
    }
    Ok(())
}

fn plan_matmul(g: &Graph, n: &Node, min: usize) -> Result<LinearPlan, String> {
    let a = n.inputs.first().copied().flatten().ok_or("no A input")?;
    let b = n.inputs.get(1).copied().flatten();
    let t = const_f32(g, b, "B")?;
    let [k, cols] = t.dims[..] else {
        return Err(format!("B is {}, not a 2-D weight", dims_str(&t.dims)));
    };
    big_enough(k, cols, min)?;
    let w = t.to_f32_vec().map_err(|e| e.to_string())?;
    finite(&w)?;
    let bias = match n.inputs.get(2).copied().flatten() {
        None => Bias::None,
        Some(v) => {
            let val = &g.values[v];
            if val.dtype != DType::F32 || val.shape.len() != 1 {
                return Err(format!("the bias is not f32 [N] ({})", g.describe_value(v)));
            }
            Bias::Value(v)
        }
    };
    Ok(LinearPlan {
        a,
        key: (b.unwrap_or(usize::MAX), false, 1f32.to_bits()),
        w,
        k,
        n: cols,
        bias,
    })
}

fn plan_gemm(g: &Graph, n: &Node, min: usize) -> Result<LinearPlan, String> {
    let flag = |key: &str| n.attrs.int(key, 0).map_err(|e| e.to_string());
    let alpha = n.attrs.float("alpha", 1.0).map_err(|e| e.to_string())?;
    let beta = n.attrs.float("beta", 1.0).map_err(|e| e.to_string())?;
    if flag("transA")? != 0 {
        return Err("transA = 1 (A transposed) is not supported by QMatMul".into());
    }
    let trans_b = flag("transB")? != 0;
    let a = n.inputs.first().copied().flatten().ok_or("no A input")?;
    let b = n.inputs.get(1).copied().flatten();
    let t = const_f32(g, b, "B")?;
    let [r, c] = t.dims[..] else {
        return Err(format!("B is {}, not 2-D", dims_str(&t.dims)));
    };
    let (k, cols) = if trans_b { (c, r) } else { (r, c) };
    big_enough(k, cols, min)?;
    let raw = t.to_f32_vec().map_err(|e| e.to_string())?;
    let mut w = if trans_b {
        let mut w = vec![0f32; k * cols];
        for j in 0..cols {
            for p in 0..k {
                w[p * cols + j] = raw[j * k + p];
            }
        }
        w
    } else {
        raw
    };
    if alpha != 1.0 {
        w.iter_mut().for_each(|x| *x *= alpha);
    }
    finite(&w)?;
    let bias = match n.inputs.get(2).copied().flatten() {
        None => Bias::None,
        Some(_) if beta == 0.0 => Bias::None,
        Some(cv) => {
            let ct = const_f32(g, Some(cv), "C")?;
            let vals = ct.to_f32_vec().map_err(|e| e.to_string())?;
            let row_like = ct.dims.iter().rev().skip(1).all(|&d| d == 1) && ct.dims.len() <= 2;
            let b: Vec<f32> = if row_like && vals.len() == cols {
                vals.iter().map(|x| beta * x).collect()
            } else if row_like && vals.len() == 1 {
                vec![beta * vals[0]; cols]
            } else {
                return Err(format!(
                    "C is {}: only a [N] (or [1, N], or scalar) C folds into a bias",
                    dims_str(&ct.dims)
                ));
            };
            finite(&b)?;
            Bias::New(b)
        }
    };
    Ok(LinearPlan {
        a,
        key: (b.unwrap_or(usize::MAX), trans_b, alpha.to_bits()),
        w,
        k,
        n: cols,
        bias,
    })
}

/// A Gather to convert: `(table, rows, width)` as f32. `Ok(None)` for a
/// Gather that is not a weight lookup (data not a constant f32 table).
fn plan_gather(g: &Graph, n: &Node, min: usize) -> Result<Option<(ValueId, usize, usize)>, String> {
    let Some(d) = n.inputs.first().copied().flatten() else {
        return Ok(None);
    };
    let Some(t) = g.values[d].konst.as_ref() else {
        return Ok(None);
    };
    if t.dtype != DType::F32 {
        return Ok(None);
    }
    if t.dims.len() < 2 {
        return Err(format!(
            "the table is {}, not 2-D or more",
            dims_str(&t.dims)
        ));
    }
    let axis = n.attrs.int("axis", 0).map_err(|e| e.to_string())?;
    if axis != 0 && axis != -(t.dims.len() as i64) {
        return Err(format!("axis {axis}: only rows (axis 0) are quantized"));
    }
    let rows = t.dims[0];
    let width: usize = t.dims[1..].iter().product();
    big_enough(rows, width, min)?;
    Ok(Some((d, rows, width)))
}

fn op_is(n: &Node, id: Option<OpId>) -> bool {
    Some(n.op) == id
}

/// Quantize every eligible MatMul, Gemm and embedding Gather (module docs).
/// Errors: a `keep_float` name that is no node of the graph, or a graph that
/// does not type-check afterwards.
pub fn quantize_dynamic(g: &mut Graph, opts: &QuantOptions) -> Result<QuantReport> {
    let unknown: Vec<&str> = opts
        .keep_float
        .iter()
        .filter(|k| !g.nodes.iter().any(|n| &n.name == *k))
        .map(|k| k.as_str())
        .collect();
    if !unknown.is_empty() {
        bail!(
            "--keep-float: no node named {} in the graph (`morsel inspect` lists the layers)",
            unknown
                .iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let ids = |name: &str| op_id(name).ok_or_else(|| anyhow!("this runtime has no {name} op"));
    let (matmul, gemm, gather) = (op_id("MatMul"), op_id("Gemm"), op_id("Gather"));
    let (conv, conv_t) = (op_id("Conv"), op_id("ConvTranspose"));
    let (qmatmul, qgather) = (ids("QMatMul")?, ids("QGather")?);
    let mut report = QuantReport::default();
    // Weights already quantized (shared by several nodes): key -> (q, scale).
    let mut done: HashMap<(ValueId, bool, u32), (ValueId, ValueId)> = HashMap::new();
    // Layers that stay f32 next to the first layer: weights as halves.
    let mut stem: Vec<String> = Vec::new();
    for i in 0..g.nodes.len() {
        let node = &g.nodes[i];
        let (name, op) = (node.name.clone(), op_name(node.op));
        let keep = |report: &mut QuantReport, reason: String| {
            report.kept.push(Kept {
                node: name.clone(),
                op: op.to_string(),
                reason,
                int8_storage: None,
                half_storage: false,
            })
        };
        // A Conv or ConvTranspose that stays in f32 (not by --keep-float)
        // still stores its weight int8 (output channels: axis 0 of a Conv
        // weight, 1 of a ConvTranspose one).
        let keep_storing =
            |g: &mut Graph, report: &mut QuantReport, w: ValueId, axis: usize, reason: String| {
                report.kept.push(Kept {
                    node: name.clone(),
                    op: op.to_string(),
                    reason,
                    int8_storage: store_weight_int8(g, w, axis),
                    half_storage: false,
                })
            };
        let is_linear = op_is(node, matmul) || op_is(node, gemm);
        if op_is(node, conv_t) {
            let w = node.inputs.get(1).copied().flatten();
            if let Some(w) = w.filter(|&w| g.values[w].konst.is_some()) {
                let why = "int8 ConvTranspose is not implemented: runs in f32".to_string();
                if opts.keep_float.contains(&name) {
                    keep(&mut report, format!("{why} (named in --keep-float)"));
                } else {
                    keep_storing(g, &mut report, w, 1, why);
                }
            }
            continue;
        }
        if op_is(node, conv) {
            let Some(w) = node.inputs.get(1).copied().flatten() else {
                continue;
            };
            let Some(t) = g.values[w].konst.as_ref() else {
                continue;
            };
            let group = node.attrs.int("group", 1).unwrap_or(1);
            let why = if t.dtype != DType::F32 || t.dims.len() < 3 {
                Some("weight is not an f32 conv kernel".to_string())
            } else if group != 1 {
                // no per-layer numbers (group, weight count) in these
                // reasons: the metadata groups layers by reason
                Some("grouped Conv: runs in f32 (memory-bound; int8 covers group 1)".to_string())
            } else if t.numel() < opts.min_size {
                Some(format!(
                    "under the minimum {} weights: int8 would not pay",
                    opts.min_size
                ))
            } else if t.numel() / t.dims[0].max(1) < opts.min_reduction {
                Some(format!(
                    "reduction per output under --min-reduction {}: quantizing the image and outputs costs more than int8 saves",
                    opts.min_reduction
                ))
            } else if opts.keep_float.contains(&name) {
                Some("named in --keep-float".into())
            } else {
                None
            };
            if let Some(why) = why {
                if opts.keep_float.contains(&name) || t.dims.len() < 3 {
                    keep(&mut report, why);
                } else if reads_model_input(g, i) {
                    // The first layer, on the raw input, is the sensitive
                    // one: int8-stored it cost PP-OCR det 0.014 of text-map
                    // IoU (0.964 -> 0.950) for 1.2 KB.
                    keep(
                        &mut report,
                        format!("{why}; the first layer (reads the model input): weight kept f32"),
                    );
                } else if next_to_first_layer(g, i) {
                    // Its weights' error reaches every later layer too: on
                    // PP-OCR rec, this 144-weight depthwise conv stored int8
                    // was the layer --max-error measured as most sensitive
                    // (9e-3 alone, twice the next). Halves cost 1 byte a
                    // weight more.
                    keep(&mut report, format!("{why}; fed by the first layer"));
                    stem.push(name.clone());
                } else {
                    keep_storing(g, &mut report, w, 0, why);
                }
                continue;
            }
            let dims = t.dims.clone();
            let (m, kk) = (dims[0], t.numel() / dims[0].max(1));
            let (q, s) = match done.get(&(w, false, 1)) {
                Some(&ids) => ids,
                None => {
                    let wv = t.to_f32_vec()?;
                    if let Err(reason) = finite(&wv) {
                        keep(&mut report, reason);
                        continue;
                    }
                    let quantized = quantize_weight(&wv, m, kk, false);
                    let (q, s) = add_quantized(
                        g,
                        &mut report,
                        (w, &dims, [m, kk]),
                        (&name, "Conv", "QConv"),
                        quantized,
                    )?;
                    done.insert((w, false, 1), (q, s));
                    (q, s)
                }
            };
            let qconv = ids("QConv")?;
            let n = &mut g.nodes[i];
            let x = n.inputs.first().copied().flatten();
            let bias = n.inputs.get(2).copied().flatten();
            n.op = qconv;
            n.inputs = vec![x, Some(q), Some(s)];
            if let Some(b) = bias {
                n.inputs.push(Some(b));
            }
            continue;
        }
        if op_is(node, gather) {
            let plan = match plan_gather(g, node, opts.min_size) {
                Ok(None) => continue,
                Ok(Some(p)) if !opts.keep_float.contains(&name) => p,
                Ok(Some(_)) => {
                    keep(&mut report, "named in --keep-float".into());
                    continue;
                }
                Err(reason) => {
                    keep(&mut report, reason);
                    continue;
                }
            };
            let (d, rows, width) = plan;
            let (q, s) = match done.get(&(d, false, 0)) {
                Some(&ids) => ids,
                None => {
                    let t = g.values[d].konst.as_ref().context("table vanished")?;
                    let w = t.to_f32_vec()?;
                    if let Err(reason) = finite(&w) {
                        keep(&mut report, reason);
                        continue;
                    }
                    let (qv, sv, rel) = quantize_weight(&w, rows, width, false);
                    let base = g.values[d].name.clone();
                    let qt = Tensor::from_slice(&t.dims, &qv)?;
                    let (qn, sn) = (
                        g.fresh_name(&format!("{base}.int8")),
                        g.fresh_name(&format!("{base}.scale")),
                    );
                    let q = g.add_const(&qn, qt);
                    let s = g.add_const(&sn, Tensor::from_slice(&[rows], &sv)?);
                    report.converted.push(Converted {
                        node: name.clone(),
                        from: "Gather",
                        to: "QGather",
                        shape: [rows, width],
                        weight_rel_error: rel,
                        f32_bytes: rows * width * 4,
                        int8_bytes: rows * width + scale_bytes(&sv),
                    });
                    done.insert((d, false, 0), (q, s));
                    (q, s)
                }
            };
            let n = &mut g.nodes[i];
            let idx = n.inputs.get(1).copied().flatten();
            n.op = qgather;
            n.inputs = vec![Some(q), Some(s), idx];
            n.attrs = Attrs::new();
            continue;
        }
        if !is_linear {
            continue;
        }
        let plan = if op_is(node, matmul) {
            plan_matmul(g, node, opts.min_size)
        } else {
            plan_gemm(g, node, opts.min_size)
        };
        let plan = match plan {
            Ok(p) if !opts.keep_float.contains(&name) => p,
            Ok(_) => {
                keep(&mut report, "named in --keep-float".into());
                continue;
            }
            Err(reason) => {
                keep(&mut report, reason);
                continue;
            }
        };
        let mut attrs = Attrs::new();
        for key in [
            "activation",
            "activation_alpha",
            "activation_beta",
            "activation_scale",
            "activation_shift",
        ] {
            if let Some(v) = node.attrs.get(key) {
                attrs.set(key, v.clone());
            }
        }
        let from = op;
        let LinearPlan {
            a,
            key,
            w,
            k,
            n: cols,
            bias,
        } = plan;
        let (q, s) = match done.get(&key) {
            Some(&ids) => ids,
            None => {
                let quantized = quantize_weight(&w, k, cols, true);
                let from = if from == "Gemm" { "Gemm" } else { "MatMul" };
                let (q, s) = add_quantized(
                    g,
                    &mut report,
                    (key.0, &[k, cols], [k, cols]),
                    (&name, from, "QMatMul"),
                    quantized,
                )?;
                done.insert(key, (q, s));
                (q, s)
            }
        };
        let bias = match bias {
            Bias::None => None,
            Bias::Value(v) => Some(v),
            Bias::New(b) => {
                let bn = g.fresh_name(&format!("{name}.bias"));
                Some(g.add_const(&bn, Tensor::from_slice(&[cols], &b)?))
            }
        };
        let n = &mut g.nodes[i];
        n.op = qmatmul;
        n.inputs = vec![Some(a), Some(q), Some(s)];
        if let Some(b) = bias {
            n.inputs.push(Some(b));
        }
        n.attrs = attrs;
    }
    round_biases_to_f16(g, &mut report);
    stem.extend(opts.half_weights.iter().cloned());
    store_halves(g, &mut report, &stem);
    compact(g);
    g.infer_shapes()
        .map_err(|e| anyhow!("the quantized graph does not type-check: {e}"))?;
    Ok(report)
}

/// How int8 rounds one node, for quantization-aware training
/// ([`crate::train::Student::fake_quantize`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// QMatMul / QConv: the weight int8 per output channel
    /// ([`fake_quantize_weight`]), the input quantized per row at run time.
    Compute,
    /// A layer computing in f32 on a weight stored int8 per output channel
    /// (axis 0; [`fake_quantize_stored`]).
    Stored,
    /// QGather: the table int8 per row.
    Table,
    /// A layer kept in f32 whose weight and bias the file stores as IEEE
    /// halves (the layer after the first; `--max-error`'s put-backs).
    Half,
}

/// The nodes [`quantize_dynamic`] with `opts` rounds, and how: what
/// quantization-aware training mirrors. Found by quantizing a copy of `g`,
/// so the two cannot disagree.
pub fn qat_plan(g: &Graph, opts: &QuantOptions) -> Result<Vec<(String, Rounding)>> {
    let mut copy = g.clone();
    let r = quantize_dynamic(&mut copy, opts)?;
    let mut plan: Vec<(String, Rounding)> = r
        .converted
        .iter()
        .map(|c| {
            let how = if c.from == "Gather" {
                Rounding::Table
            } else {
                Rounding::Compute
            };
            (c.node.clone(), how)
        })
        .collect();
    plan.extend(r.kept.iter().filter_map(|k| {
        let how = if k.int8_storage.is_some() {
            Rounding::Stored
        } else if k.half_storage {
            Rounding::Half
        } else {
            return None;
        };
        Some((k.node.clone(), how))
    }));
    Ok(plan)
}

/// `w` (`rows×cols`) as its int8 weight dequantizes: symmetric with one
/// scale per column (`per_col`) or per row, exactly as [`quantize_dynamic`]
/// stores it.
pub fn fake_quantize_weight(w: &[f32], rows: usize, cols: usize, per_col: bool) -> Vec<f32> {
    let (q, s, _) = quantize_weight(w, rows, cols, per_col);
    q.iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * s[if per_col { i % cols } else { i / cols }])
        .collect()
}

/// `w` (of shape `dims`) as a kept layer's int8-stored weight (per channel
/// along `axis`) widens at load.
pub fn fake_quantize_stored(w: &[f32], dims: &[usize], axis: usize) -> Result<Vec<f32>> {
    let mut enc = Vec::new();
    let e = int8::encode(w, dims, axis, &mut enc);
    int8::decode(&enc, dims, axis, e).map_err(|e| anyhow!("{e}"))
}

/// Round the constant f32 inputs (weights, bias) of the kept-f32 nodes named
/// in `names` to IEEE halves, where every value stays finite and the
/// constant feeds that node alone; the writer stores them in 2 bytes.
fn store_halves(g: &mut Graph, report: &mut QuantReport, names: &[String]) {
    let single = sole_reader(g);
    for k in report.kept.iter_mut().filter(|k| names.contains(&k.node)) {
        let Some(n) = g.nodes.iter().find(|n| n.name == k.node) else {
            continue;
        };
        let consts: Vec<ValueId> = n
            .inputs
            .iter()
            .flatten()
            .copied()
            .filter(|&v| single[v])
            .collect();
        for v in consts {
            let Some(t) = g.values[v].konst.as_ref() else {
                continue;
            };
            let Ok(x) = t.as_slice::<f32>() else { continue };
            if let Some(h) = as_halves(x)
                && let Ok(r) = Tensor::from_slice(&t.dims, &h)
            {
                g.values[v].konst = Some(r);
                k.half_storage = true;
            }
        }
    }
}

/// Per value: whether one node reads it and it is not a graph output (a
/// constant that can be rounded for that node alone).
fn sole_reader(g: &Graph) -> Vec<bool> {
    crate::fuse::consumers(g)
        .iter()
        .enumerate()
        .map(|(v, c)| c.len() == 1 && !g.outputs.contains(&v))
        .collect()
}

/// The largest relative move of rounding to the nearest normal half (2⁻¹¹).
const HALF_ROUNDING: f32 = 1.0 / 2048.0;

/// Round the f32 biases of the layers whose weights went int8 (computed,
/// or stored int8 and widened at load) to the nearest IEEE half, where the
/// half is finite and moves each value by at most 2⁻¹¹ of itself (the
/// half's precision; an int8 activation step is 1/255 of its range, 8×
/// coarser) or by half its channel's weight step (values below the normal
/// halves). The writer then stores them in 2 bytes per value (an f32
/// tensor of exact halves is written `f16`, losslessly). A bias shared with
/// another node, or one that does not pass, stays f32. With the scales
/// (also halves, `int8::f16_grid_up`), this takes PP-OCR det and rec from 3.7×
/// to 3.8× smaller than f32: their per-channel biases and scales were
/// 3–4% of the int8 file.
fn round_biases_to_f16(g: &mut Graph, report: &mut QuantReport) {
    let ids = ["QConv", "QMatMul", "Conv", "ConvTranspose"].map(op_id);
    let single = sole_reader(g);
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        let input = |k: usize| n.inputs.get(k).copied().flatten();
        let konst = |v: Option<ValueId>| v.and_then(|v| g.values[v].konst.as_ref());
        let (bias, steps) = if op_is(n, ids[0]) || op_is(n, ids[1]) {
            let Some(s) = konst(input(2)).and_then(|t| t.to_f32_vec().ok()) else {
                continue;
            };
            (input(3), s)
        } else if op_is(n, ids[2]) || op_is(n, ids[3]) {
            let Some(w) = input(1) else { continue };
            let Storage::Int8PerChannel { axis } = g.values[w].storage else {
                continue;
            };
            let Some(t) = konst(Some(w)) else { continue };
            let Ok(x) = t.as_slice::<f32>() else { continue };
            let m = int8::slice_max(x, &t.dims, axis);
            (input(2), m.iter().map(|m| m / 127.0).collect())
        } else {
            continue;
        };
        let Some(b) = bias else { continue };
        let Some(t) = g.values[b].konst.as_ref() else {
            continue;
        };
        let rounded = match t.as_slice::<f32>() {
            Ok(x) if single[b] && x.len() == steps.len() => x
                .iter()
                .zip(&steps)
                .map(|(&v, &step)| bias_half(v, step))
                .collect::<Option<Vec<f32>>>(),
            _ => None,
        };
        match rounded.and_then(|r| Tensor::from_slice(&t.dims, &r).ok()) {
            Some(r) => {
                report.biases_f16.0 += 1;
                report.biases_f16.1 += r.numel();
                g.values[b].konst = Some(r);
            }
            None => report.biases_f32 += 1,
        }
    }
}

/// Bias value `v` of a layer whose weight step is `step`, as the nearest
/// half if [`round_biases_to_f16`] may store it so.
fn bias_half(v: f32, step: f32) -> Option<f32> {
    let r = half::f16::from_f32(v).to_f32();
    let moved = (r - v).abs();
    let ok = moved <= v.abs() * HALF_ROUNDING || moved <= 0.5 * step;
    (r.is_finite() && ok).then_some(r)
}

/// `x` as halves, as [`store_halves`] stores a kept layer's constants;
/// `None` (it stays f32) if a value would not be finite.
pub fn as_halves(x: &[f32]) -> Option<Vec<f32>> {
    let h: Vec<f32> = x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
    h.iter().all(|v| v.is_finite()).then_some(h)
}

/// An int8 layer's bias as the file will hold it (for quantization-aware
/// training): rounded to halves when every value may be, else unchanged.
/// (Without the weight steps, a value below the normal halves counts only
/// when the half is within 2⁻¹¹ of it; [`round_biases_to_f16`] accepts half
/// a weight step there too.)
pub fn bias_as_stored(b: &[f32]) -> Vec<f32> {
    b.iter()
        .map(|&v| bias_half(v, 0.0))
        .collect::<Option<Vec<f32>>>()
        .unwrap_or_else(|| b.to_vec())
}

/// How far one output of the int8 model is from the f32 model's.
#[derive(Debug, Clone)]
pub struct OutputError {
    pub name: String,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    /// Over the whole output, flattened.
    pub cosine: f64,
    /// Per sample (rows of the leading dim): min and mean cosine.
    pub min_row_cosine: f64,
    pub mean_row_cosine: f64,
    /// Largest |value| of the f32 output, for scale.
    pub max_abs_ref: f64,
    pub samples: usize,
}

impl OutputError {
    pub fn to_json(&self) -> Json {
        json!({
            "output": self.name, "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff, "cosine": self.cosine,
            "min_sample_cosine": self.min_row_cosine, "mean_sample_cosine": self.mean_row_cosine,
            "max_abs_f32": self.max_abs_ref, "samples": self.samples,
        })
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += x as f64 * y as f64;
        na += (x as f64).powi(2);
        nb += (y as f64).powi(2);
    }
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        d / (na.sqrt() * nb.sqrt())
    }
}

/// Rows `[lo, hi)` of the leading dim.
fn rows_of(t: &Tensor, lo: usize, hi: usize) -> Result<Tensor> {
    let per = t.dims[1..].iter().product::<usize>() * t.dtype.size();
    let mut dims = t.dims.clone();
    dims[0] = hi - lo;
    let bytes = t
        .data
        .as_bytes()
        .get(lo * per..hi * per)
        .context("rows out of range")?;
    Ok(Tensor::new(
        t.dtype,
        dims,
        morsel_runtime::tensor::Blob::owned(morsel_runtime::tensor::AlignedBuf::from_bytes(bytes)),
    )?)
}

/// Run `reference` (f32) and `quantized` on `data` (inputs by name; when
/// they share a leading dim, in batches of `batch` rows of it — or of the
/// model's own leading dim when that is fixed) and compare every output.
pub fn measure_error(
    reference: &Model,
    quantized: &Model,
    data: &[(String, Tensor)],
    batch: usize,
    threads: usize,
) -> Result<Vec<OutputError>> {
    let g = reference.graph();
    let names: Vec<String> = g
        .outputs
        .iter()
        .map(|&o| g.values[o].name.clone())
        .collect();
    let lead: Vec<usize> = data
        .iter()
        .map(|(_, t)| t.dims.first().copied().unwrap_or(1))
        .collect();
    let total = lead.first().copied().unwrap_or(1);
    let batched = !data.is_empty()
        && data.iter().all(|(_, t)| !t.dims.is_empty())
        && lead.iter().all(|&l| l == total);
    if data.is_empty() {
        bail!("no input data to measure the error on");
    }
    let opts = Options {
        threads,
        ..Options::default()
    };
    let (mut s_ref, mut s_q) = (reference.session(opts.clone()), quantized.session(opts));
    #[derive(Default, Clone)]
    struct Acc {
        max: f64,
        sum: f64,
        count: usize,
        dot: f64,
        na: f64,
        nb: f64,
        row_min: f64,
        row_sum: f64,
        rows: usize,
        max_ref: f64,
    }
    let mut acc = vec![
        Acc {
            row_min: f64::INFINITY,
            ..Acc::default()
        };
        names.len()
    ];
    // A model with a fixed leading dim takes batches of exactly that size.
    let fixed: Vec<Option<usize>> = g
        .inputs
        .iter()
        .map(|&i| g.values[i].shape.first().and_then(|d| d.known()))
        .collect();
    let batch = match fixed.first() {
        Some(&Some(d)) if fixed.iter().all(|&f| f == Some(d)) => d,
        _ => batch,
    };
    let step = if batched { batch.max(1) } else { total.max(1) };
    let mut lo = 0;
    while lo < total.max(1) {
        let hi = if batched {
            (lo + step).min(total)
        } else {
            total.max(1)
        };
        let feed: Vec<(String, Tensor)> = if batched {
            data.iter()
                .map(|(k, t)| Ok((k.clone(), rows_of(t, lo, hi)?)))
                .collect::<Result<_>>()?
        } else {
            data.to_vec()
        };
        let refs: Vec<(&str, _)> = feed.iter().map(|(k, t)| (k.as_str(), t.view())).collect();
        let a = s_ref
            .run(&refs)
            .map_err(|e| anyhow!("running the f32 model: {e}"))?;
        let b = s_q
            .run(&refs)
            .map_err(|e| anyhow!("running the int8 model: {e}"))?;
        for ((x, y), s) in a.iter().zip(&b).zip(acc.iter_mut()) {
            let (xv, yv) = (x.to_f32_vec()?, y.to_f32_vec()?);
            if xv.len() != yv.len() {
                bail!(
                    "an output is {} in f32 and {} in int8",
                    dims_str(&x.dims),
                    dims_str(&y.dims)
                );
            }
            for (&p, &q) in xv.iter().zip(&yv) {
                let d = (p as f64 - q as f64).abs();
                s.max = s.max.max(d);
                s.sum += d;
                s.dot += p as f64 * q as f64;
                s.na += (p as f64).powi(2);
                s.nb += (q as f64).powi(2);
                s.max_ref = s.max_ref.max((p as f64).abs());
            }
            s.count += xv.len();
            let rows = if x.dims.len() >= 2 { x.dims[0] } else { 1 };
            let per = xv.len().checked_div(rows).unwrap_or(0).max(1);
            for (p, q) in xv.chunks(per).zip(yv.chunks(per)) {
                let c = cosine(p, q);
                s.row_min = s.row_min.min(c);
                s.row_sum += c;
                s.rows += 1;
            }
        }
        lo = hi;
    }
    Ok(names
        .into_iter()
        .zip(acc)
        .map(|(name, s)| OutputError {
            name,
            max_abs_diff: s.max,
            mean_abs_diff: s.sum / s.count.max(1) as f64,
            cosine: if s.na == 0.0 && s.nb == 0.0 {
                1.0
            } else {
                s.dot / (s.na.sqrt() * s.nb.sqrt())
            },
            min_row_cosine: s.row_min,
            mean_row_cosine: s.row_sum / s.rows.max(1) as f64,
            max_abs_ref: s.max_ref,
            samples: s.rows,
        })
        .collect())
}

/// What an int8 method stores and computes, for `morsel inspect`:
/// `(weights, activations)`. A file's own `weights` / `activations` entries
/// (older files; int8-static's, which count its convs) take precedence.
pub fn method_text(method: &str) -> (&'static str, &'static str) {
    let weights = "int8 symmetric, per output channel (QMatMul, QConv) or per row (QGather); round half to even; [-127, 127]; int8×int8→i32, one f32 rescale per output (+ bias, activation)";
    match method {
        "int8-dynamic" | "int8-static" => (
            weights,
            "int8 asymmetric per row (scale and zero point from the row's range), quantized at run time",
        ),
        _ => ("?", "?"),
    }
}

/// The `quantization` metadata entry: method, report, measured error.
pub fn metadata_json(
    report: &QuantReport,
    opts: &QuantOptions,
    error: Option<&[OutputError]>,
) -> Json {
    let (before, after) = report.weight_bytes();
    // What the method means (weights, activations, compute) is fixed per
    // method, so `morsel inspect` prints it from the method name
    // ([`method_text`]) rather than every file carrying the sentences.
    let mut j = json!({
        "method": "int8-dynamic",
        "min_size": opts.min_size,
        "min_reduction": opts.min_reduction,
        "weights_as_halves": opts.half_weights,
        "keep_float": opts.keep_float,
        "nodes_converted": report.converted.len(),
        "nodes_kept_float": report.kept.len(),
        "weight_bytes_f32": before,
        "weight_bytes_int8": after,
    });
    if report.biases_f16.0 + report.biases_f32 > 0 {
        // Bias tensors rounded to IEEE half (each value moved by at most
        // 2^-11 of itself, or half its channel's weight step), their
        // values, and bias tensors kept f32.
        j["biases"] = json!({"f16": report.biases_f16.0, "f16_values": report.biases_f16.1,
            "f32": report.biases_f32});
    }
    // Compact, so the metadata stays a small part of the file (PP-OCR det:
    // 13 KB as one object per layer): converted layers by op with their
    // weight error (3 digits), kept layers by reason. Bytes per layer are
    // in the tensors (`morsel inspect`) and in `--json` (`layers`).
    let mut converted = serde_json::Map::new();
    for c in &report.converted {
        let by_op = converted.entry(c.to).or_insert_with(|| json!({}));
        by_op[&c.node] = json!(three_digits(c.weight_rel_error));
    }
    j["converted"] = Json::Object(converted);
    let mut kept: Vec<(String, Vec<String>)> = Vec::new();
    for k in &report.kept {
        let reason = match (k.int8_storage, k.half_storage) {
            (Some(_), _) => format!("{}; weight stored int8 per channel", k.reason),
            (None, true) => format!("{}; weights stored as IEEE halves", k.reason),
            (None, false) => k.reason.clone(),
        };
        match kept.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, nodes)) => nodes.push(k.node.clone()),
            None => kept.push((reason, vec![k.node.clone()])),
        }
    }
    j["kept_float"] = kept
        .into_iter()
        .map(|(reason, nodes)| json!({"reason": reason, "nodes": nodes}))
        .collect();
    j["error"] = match error {
        Some(e) => Json::Array(e.iter().map(|o| o.to_json()).collect()),
        None => Json::String("not measured (no --data given)".into()),
    };
    j
}

/// `x` to three significant digits (for metadata).
pub fn three_digits(x: f64) -> f64 {
    format!("{x:.2e}").parse().unwrap_or(x)
}

/// What `--max-error` measured and chose.
#[derive(Debug, Clone)]
pub struct Guard {
    pub max_error: f64,
    /// Output error with every eligible layer int8.
    pub error_all_int8: f64,
    /// Per int8 layer (computed or stored): the error with it alone int8.
    pub sensitivity: Vec<(String, f64)>,
    /// Layers the guard put back in f32, most sensitive first.
    pub kept: Vec<String>,
    /// The error of what was chosen.
    pub error: f64,
}

impl Guard {
    pub fn to_json(&self) -> Json {
        json!({
            "max_error": self.max_error,
            "metric": "1 - cosine(f32, int8) per sample, mean over samples, worst output",
            "error_all_int8": self.error_all_int8,
            "sensitivity_error_alone_int8": self.sensitivity.iter().map(|(n, e)| json!([n, three_digits(*e)])).collect::<Vec<_>>(),
            "kept_f32": self.kept,
            "error": self.error,
        })
    }
}

/// The output error `--max-error` bounds: 1 − cosine between the f32 and
/// int8 outputs of each sample, the mean over samples, the worst output.
/// (The worst sample alone moved by 20× between neighbouring choices on
/// PP-OCR rec: one line decides it.)
pub fn output_error(errors: &[OutputError]) -> f64 {
    errors
        .iter()
        .map(|e| 1.0 - e.mean_row_cosine)
        .fold(0.0, f64::max)
}

/// `--max-error`: per-layer sensitivity on `feed` (each layer that int8
/// computes or stores made int8 alone, the rest f32), then layers put back
/// in f32, the most error per byte first, until the whole model's error (see [`output_error`]) is at
/// most `max_error` (their weights stored as halves: `half_weights`). `g`
/// is the graph before quantization, and the f32 reference. Returns the options to quantize with (the caller's
/// `keep_float` plus the guard's layers) and what was measured.
pub fn sensitivity_guard(
    g: &Graph,
    opts: &QuantOptions,
    max_error: f64,
    feed: &[(String, Tensor)],
    batch: usize,
    threads: usize,
    mut say: impl FnMut(String),
) -> Result<(QuantOptions, Guard)> {
    if !(max_error >= 0.0 && max_error.is_finite()) {
        bail!("--max-error must be a finite number ≥ 0, got {max_error}");
    }
    let reference = Model::from_graph(g.clone()).map_err(|e| anyhow!("the f32 model: {e}"))?;
    // The layers the guard puts back keep f32 compute with half weights
    // (the caller's --keep-float ones stay exactly f32).
    let options = |keep: &[String]| QuantOptions {
        keep_float: keep.to_vec(),
        min_size: opts.min_size,
        min_reduction: opts.min_reduction,
        half_weights: keep
            .iter()
            .filter(|k| !opts.keep_float.contains(k))
            .cloned()
            .collect(),
    };
    let error_with = |keep: &[String]| -> Result<(f64, QuantReport)> {
        let mut q = g.clone();
        let o = options(keep);
        let r = quantize_dynamic(&mut q, &o)?;
        let bytes = morsel_runtime::format::writer::to_bytes(
            &q,
            morsel_runtime::format::writer::FloatStorage::F32,
        )
        .map_err(|e| anyhow!("{e}"))?;
        let m = Model::from_bytes(&bytes).map_err(|e| anyhow!("the int8 model: {e}"))?;
        Ok((
            output_error(&measure_error(&reference, &m, feed, batch, threads)?),
            r,
        ))
    };
    let (error_all_int8, all) = error_with(&opts.keep_float)?;
    say(format!(
        "--max-error {max_error:.2e}: with every eligible layer int8 the output error is {error_all_int8:.2e} (mean over samples of 1 - cosine)"
    ));
    let mut guard = Guard {
        max_error,
        error_all_int8,
        sensitivity: Vec::new(),
        kept: Vec::new(),
        error: error_all_int8,
    };
    if error_all_int8 <= max_error {
        return Ok((opts.clone(), guard));
    }
    // Candidates: every layer int8 computes, or stores int8, with the bytes
    // putting it back costs (its weights as halves instead of int8).
    let layers: Vec<(String, usize)> = all
        .converted
        .iter()
        .map(|c| {
            (
                c.node.clone(),
                (c.f32_bytes / 2).saturating_sub(c.int8_bytes),
            )
        })
        .chain(all.kept.iter().filter_map(|k| {
            k.int8_storage
                .map(|(f, q, _)| (k.node.clone(), (f / 2).saturating_sub(q)))
        }))
        .collect();
    let mut cost = HashMap::new();
    for (l, bytes) in &layers {
        let mut keep = opts.keep_float.clone();
        keep.extend(layers.iter().filter(|k| k.0 != *l).map(|k| k.0.clone()));
        let (e, _) = error_with(&keep)?;
        guard.sensitivity.push((l.clone(), e));
        cost.insert(l.clone(), *bytes);
    }
    guard.sensitivity.sort_by(|a, b| b.1.total_cmp(&a.1));
    say("  sensitivity (error with that layer alone int8; bytes it costs back in f32), most sensitive first:".into());
    for (l, e) in &guard.sensitivity {
        say(format!("    {l:<56} {e:.2e} {:>9} B", cost[l]));
    }
    // Layers go back in the order of error per byte (a 144-weight layer as
    // sensitive as a 150 KB one goes first), then the shortest prefix of
    // that order that brings the error within the bound: a binary search
    // over its length (the error falls, if not strictly, as more go back).
    let mut order: Vec<&(String, f64)> = guard.sensitivity.iter().collect();
    let per_byte = |s: &(String, f64)| s.1 / cost[&s.0].max(64) as f64;
    order.sort_by(|a, b| per_byte(b).total_cmp(&per_byte(a)));
    let order: Vec<String> = order.into_iter().map(|s| s.0.clone()).collect();
    let with_first = |k: usize| -> Vec<String> {
        let mut keep = opts.keep_float.clone();
        keep.extend(order[..k].iter().cloned());
        keep
    };
    let (mut lo, mut hi) = (0, order.len());
    let mut at_hi = error_with(&with_first(hi))?.0;
    say(format!("  all {hi} back in f32: output error {at_hi:.2e}"));
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let (e, _) = error_with(&with_first(mid))?;
        say(format!(
            "  the first {mid} by error per byte in f32: output error {e:.2e}"
        ));
        if e <= max_error {
            (hi, at_hi) = (mid, e);
        } else {
            lo = mid;
        }
    }
    let keep = with_first(hi);
    guard.kept = order[..hi].to_vec();
    guard.error = at_hi;
    if guard.error > max_error {
        say(format!(
            "  every int8 layer is back in f32 and the error is still {:.2e}",
            guard.error
        ));
    } else {
        say(format!(
            "  chose {hi} layers (the most error per byte) in f32, {} B more: output error {:.2e}",
            guard.kept.iter().map(|l| cost[l]).sum::<usize>(),
            guard.error
        ));
    }
    Ok((options(&keep), guard))
}

/// Append a step to the `recipe` metadata (a JSON object with `steps`).
pub fn add_recipe_step(g: &mut Graph, step: &str) {
    let mut recipe: Json = g
        .metadata
        .get("recipe")
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| json!({"steps": []}));
    if let Some(steps) = recipe.get_mut("steps").and_then(|s| s.as_array_mut()) {
        steps.push(Json::String(step.into()));
    } else {
        recipe["steps"] = json!([step]);
    }
    g.metadata.insert("recipe".into(), recipe.to_string());
}

/// Whether node `i`'s data input is a model input.
fn reads_model_input(g: &Graph, i: usize) -> bool {
    g.nodes[i]
        .inputs
        .first()
        .copied()
        .flatten()
        .is_some_and(|x| g.inputs.contains(&x))
}

/// Whether node `i`'s data input comes from a node that reads a model
/// input, through nodes with one non-constant input and no more than one
/// value per channel in their constants (activations, per-channel affine):
/// the layer after the first, as a Conv's input is its first input.
fn next_to_first_layer(g: &Graph, i: usize) -> bool {
    let producer = g.producers();
    let mut v = g.nodes[i].inputs.first().copied().flatten();
    // A few steps: a stem is short.
    for _ in 0..8 {
        let Some(p) = v.and_then(|v| producer[v]) else {
            return false;
        };
        if reads_model_input(g, p) {
            return true;
        }
        let n = &g.nodes[p];
        let mut data = n
            .inputs
            .iter()
            .flatten()
            .filter(|&&x| g.values[x].konst.is_none());
        let small_consts = n.inputs.iter().flatten().all(|&x| {
            g.values[x]
                .konst
                .as_ref()
                .is_none_or(|t| t.dims.iter().filter(|&&d| d > 1).count() <= 1)
        });
        match (data.next(), data.next()) {
            (Some(&x), None) if small_consts => v = Some(x),
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_quantize_per_column_with_ties_to_even() {
        // column 0: max 127 → scale 1; 2.5 rounds to 2, -0.5 to -0 (ties to even)
        let w = [127.0f32, 1.0, 2.5, 0.0, -0.5, 0.0];
        let (q, s, _) = quantize_weight(&w, 3, 2, true);
        // 1/127 is not a half: the next half up, so 1.0 still fits in 127
        let up = int8::f16_grid_up(1.0 / 127.0);
        assert_eq!(s, [1.0, up]);
        assert!((1.0 / 127.0..1.0 / 127.0 * (1.0 + 1e-3)).contains(&up));
        assert_eq!(q, [127, 127, 2, 0, 0, 0]);
        let (q, s, rel) = quantize_weight(&[0.0; 4], 2, 2, false);
        assert_eq!((q, s, rel), (vec![0; 4], vec![0.0; 2], 0.0));
    }
}
