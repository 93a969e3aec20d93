//! Static int8 quantization (`--quantize int8-static`): activation ranges
//! measured on calibration data, so convs take and give int8 and a chain
//! Conv→Relu→Conv stays int8 between its layers.
//!
//! Steps, after [`crate::quantize::quantize_dynamic`] has made the int8
//! weights:
//! 1. [`check_feed`]: the calibration set is not empty and holds only
//!    finite numbers.
//! 2. [`calibrate`]: the f32 model runs on it with the input and output of
//!    every `QConv` as extra outputs, and each such tensor gets a range by
//!    [`Method`] (min-max, a percentile, or the entropy/KL threshold).
//! 3. [`quantize_static`]: each `QConv` whose activation is none, `relu`,
//!    or a `clip` whose interval holds 0 becomes
//!    `QLinearConv(xq, …) → yq` with an i32 bias; a `QuantizeLinear` is
//!    added where a tensor first enters int8 and a `DequantizeLinear` where
//!    an f32 op (or a graph output) reads one. Each tensor has one
//!    (scale, zero point), so a conv feeding a conv passes int8 straight
//!    through. A fused Relu is the output's saturation: its range starts
//!    at 0, whose code is -128. Other QConvs stay dynamic, with the reason.
//!
//! The zero point makes 0 exact (padding reads it): `scale = (hi − lo) /
//! 255`, `zp = round(−128 − lo/scale)`, with `lo ≤ 0 ≤ hi`.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use morsel_runtime::graph::{Attrs, Graph, Node, ValueId};
use morsel_runtime::ops::op_id;
use morsel_runtime::tensor::{Tensor, dims_str};
use morsel_runtime::{DType, Model, Options};
use serde_json::{Value as Json, json};

use crate::measure::{Feed, feed_rows};
use crate::passes;

/// How a tensor's range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip the tails: the `p`-th and `(100 − p)`-th percentiles (`p` in
    /// percent, e.g. 99.99).
    Percentile(f64),
    /// The clipping threshold whose quantized histogram is closest to the
    /// observed one in KL divergence (as TensorRT's entropy calibrator).
    Entropy,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile {p}"),
            Method::Entropy => "entropy".into(),
        }
    }
}

/// Bins of the calibration histograms.
const BINS: usize = 2048;

/// Samples in the calibration set; errors if it is empty, the inputs
/// disagree on it, or a float input holds NaN or infinity.
pub fn check_feed(feed: &Feed) -> Result<usize> {
    let mut n = None;
    for (name, t) in feed {
        let rows = t.dims.first().copied().unwrap_or(1);
        if rows == 0 || t.numel() == 0 {
            bail!(
                "the calibration set is empty: input '{name}' is {}",
                dims_str(&t.dims)
            );
        }
        match n {
            Some(m) if m != rows => bail!(
                "calibration inputs disagree on the number of samples: '{name}' has {rows}, another input {m}"
            ),
            _ => n = Some(rows),
        }
        if t.dtype == DType::F32 {
            let v = t.to_f32_vec()?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                let per = (v.len() / rows).max(1);
                bail!(
                    "calibration input '{name}' holds {} (sample {}, element {}): calibration data must be finite",
                    v[i],
                    i / per,
                    i % per
                );
            }
        }
    }
    n.context("the calibration set has no inputs")
}

/// What calibration saw of one tensor.
#[derive(Debug, Clone)]
struct Stats {
    min: f32,
    max: f32,
    /// Counts over `[min(min,0), max(max,0)]` (second pass only).
    hist: Vec<u64>,
    /// Exact zeros among them.
    zeros: u64,
}

/// The range `(lo, hi)` (with `lo ≤ 0 ≤ hi`) of each named value over the
/// calibration feed, as `method` picks it. `g` is the f32 model.
pub fn calibrate(
    g: &Graph,
    names: &[String],
    feed: &Feed,
    batch: usize,
    threads: usize,
    method: Method,
) -> Result<HashMap<String, (f32, f32)>> {
    if let Method::Percentile(p) = method
        && !(50.0..=100.0).contains(&p)
    {
        bail!("--percentile {p}: it must be in [50, 100]");
    }
    let samples = check_feed(feed)?;
    let mut probe = g.clone();
    let mut ids = Vec::new();
    for name in names {
        let v = g
            .values
            .iter()
            .position(|v| &v.name == name)
            .with_context(|| format!("calibration: no value named '{name}'"))?;
        ids.push(v);
    }
    // Graph inputs are read from the feed; the rest become extra outputs.
    let mut slot = Vec::new();
    for &v in &ids {
        if g.inputs.contains(&v) {
            let name = &g.values[v].name;
            let i = feed
                .iter()
                .position(|(k, _)| k == name)
                .with_context(|| format!("calibration: no data for input '{name}'"))?;
            slot.push(Err(i));
        } else {
            slot.push(Ok(probe.outputs.len()));
            probe.outputs.push(v);
        }
    }
    let model = Model::from_graph(probe).map_err(|e| anyhow!("calibration model: {e}"))?;
    let mut session = model.session(Options {
        threads,
        ..Options::default()
    });
    let mut stats: Vec<Stats> = names
        .iter()
        .map(|_| Stats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: Vec::new(),
            zeros: 0,
        })
        .collect();
    let passes = if method == Method::MinMax { 1 } else { 2 };
    for pass in 0..passes {
        if pass == 1 {
            for s in &mut stats {
                s.hist = vec![0; BINS];
            }
        }
        let mut a = 0;
        while a < samples {
            let b = (a + batch.max(1)).min(samples);
            let chunk = feed_rows(feed, a, b)?;
            let refs: Vec<(&str, _)> = chunk.iter().map(|(k, t)| (k.as_str(), t.view())).collect();
            let outs = session
                .run(&refs)
                .map_err(|e| anyhow!("calibration, samples {a}..{b}: {e}"))?;
            for (i, s) in stats.iter_mut().enumerate() {
                let x = match slot[i] {
                    Ok(o) => outs[o].to_f32_vec()?,
                    Err(f) => chunk[f].1.to_f32_vec()?,
                };
                if pass == 0 {
                    for &v in &x {
                        if !v.is_finite() {
                            bail!(
                                "calibration: '{}' computes {v} on samples {a}..{b}: the model overflows on this data",
                                names[i]
                            );
                        }
                        s.min = s.min.min(v);
                        s.max = s.max.max(v);
                    }
                } else {
                    let (lo, hi) = (s.min.min(0.0), s.max.max(0.0));
                    let w = (hi - lo) / BINS as f32;
                    if w > 0.0 {
                        for &v in &x {
                            let k = (((v - lo) / w) as usize).min(BINS - 1);
                            s.hist[k] += 1;
                            s.zeros += (v == 0.0) as u64;
                        }
                    }
                }
            }
            a = b;
        }
    }
    Ok(names
        .iter()
        .zip(&stats)
        .map(|(n, s)| (n.clone(), pick(s, method)))
        .collect())
}

/// The range `method` picks from `s`, always holding 0.
fn pick(s: &Stats, method: Method) -> (f32, f32) {
    let (lo, hi) = (s.min.min(0.0), s.max.max(0.0));
    let w = (hi - lo) / BINS as f32;
    let total: u64 = s.hist.iter().sum();
    if w <= 0.0 || total == 0 {
        return (lo, hi);
    }
    let edge = |k: usize| lo + w * k as f32;
    match method {
        Method::MinMax => (lo, hi),
        Method::Percentile(p) => {
            let tail = ((1.0 - p / 100.0) * total as f64).floor() as u64;
            let (mut below, mut k_lo) = (0u64, 0);
            while k_lo < BINS && below + s.hist[k_lo] <= tail {
                below += s.hist[k_lo];
                k_lo += 1;
            }
            let (mut above, mut k_hi) = (0u64, BINS);
            while k_hi > 0 && above + s.hist[k_hi - 1] <= tail {
                above += s.hist[k_hi - 1];
                k_hi -= 1;
            }
            (edge(k_lo).min(0.0), edge(k_hi).max(0.0))
        }
        Method::Entropy => {
            // |x| in BINS bins of width w over [0, max(|lo|, hi)].
            let a = (-lo).max(hi);
            let wa = a / BINS as f32;
            // Exact zeros stay exact at any threshold: left out, or a
            // Relu's spike at 0 makes the KL favour thresholds so narrow
            // that the spike keeps a bin of its own (on the digits CNN
            // that clipped conv1 at 0.84 of 4.55 and cost 6 points).
            let mut hist = s.hist.clone();
            let k0 = ((-lo / w) as usize).min(BINS - 1);
            hist[k0] -= s.zeros.min(hist[k0]);
            let mut abs = vec![0f64; BINS];
            for (k, &c) in hist.iter().enumerate() {
                let mid = (lo + w * (k as f32 + 0.5)).abs();
                abs[((mid / wa) as usize).min(BINS - 1)] += c as f64;
            }
            // Codes per side: 255 steps for a one-signed tensor, 127 else.
            let levels = if lo == 0.0 || hi == 0.0 { 255 } else { 127 };
            let t = kl_threshold(&abs, levels) as f32 * wa;
            ((-t).max(lo), t.min(hi))
        }
    }
}

/// The number of bins `i` (from `levels` to all) whose clipped histogram
/// `P` (the tail folded into bin `i − 1`) and its `levels`-level
/// quantization `Q` have the least KL(P‖Q).
fn kl_threshold(hist: &[f64], levels: usize) -> usize {
    let n = hist.len();
    if n <= levels {
        return n;
    }
    let mut best = (f64::INFINITY, n);
    let mut tail: f64 = hist[levels..].iter().sum();
    for i in levels..=n {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += tail;
        if i < n {
            tail -= hist[i];
        }
        // Q: each of `levels` chunks of hist[..i] spread over its nonzero bins.
        let mut q = vec![0f64; i];
        for c in 0..levels {
            let (s, e) = (
                c * i / levels,
                ((c + 1) * i / levels).max(c * i / levels + 1),
            );
            let e = e.min(i);
            let sum: f64 = hist[s..e].iter().sum();
            let nz = hist[s..e].iter().filter(|&&v| v > 0.0).count();
            if nz > 0 {
                for k in s..e {
                    if hist[k] > 0.0 {
                        q[k] = sum / nz as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps <= 0.0 || qs <= 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (&pk, &qk) in p.iter().zip(&q) {
            if pk > 0.0 {
                let (pk, qk) = (pk / ps, qk / qs);
                kl += if qk > 0.0 {
                    pk * (pk / qk).ln()
                } else {
                    pk * 1e3
                };
            }
        }
        // Ties go to the wider range: on a spiky histogram (integer
        // pixels) many thresholds quantize it exactly, and the narrowest
        // would clip most of it.
        if kl <= best.0 + 1e-12 {
            best = (kl.min(best.0), i);
        }
    }
    best.1
}

/// `(scale, zero point)` of an int8 range holding 0.
pub fn params(lo: f32, hi: f32) -> (f32, i8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        return (1.0, 0);
    }
    let z = (-128.0 - lo / scale).round_ties_even().clamp(-128.0, 127.0);
    (scale, z as i8)
}

/// One conv made static.
#[derive(Debug, Clone)]
pub struct StaticLayer {
    pub node: String,
    pub input_range: (f32, f32),
    pub output_range: (f32, f32),
}

#[derive(Debug, Clone, Default)]
pub struct StaticReport {
    pub method: String,
    pub samples: usize,
    pub converted: Vec<StaticLayer>,
    /// QConvs left dynamic, and why.
    pub dynamic: Vec<(String, String)>,
    /// Conversions to and from f32 left in the graph.
    pub quantize_nodes: usize,
    pub dequantize_nodes: usize,
}

impl StaticReport {
    pub fn to_json(&self) -> Json {
        json!({
            "method": self.method, "samples": self.samples,
            "static": self.converted.iter().map(|c| json!({"node": c.node,
                "input_range": [c.input_range.0, c.input_range.1],
                "output_range": [c.output_range.0, c.output_range.1]})).collect::<Vec<_>>(),
            "dynamic": self.dynamic.iter().map(|(n, r)| json!({"node": n, "reason": r})).collect::<Vec<_>>(),
            "quantize_nodes": self.quantize_nodes, "dequantize_nodes": self.dequantize_nodes,
        })
    }
}

/// The values whose ranges [`quantize_static`] needs: input and output
/// of every `QConv`, by name.
pub fn wanted(g: &Graph) -> Vec<String> {
    let qconv = op_id("QConv");
    let mut names = Vec::new();
    for n in g.nodes.iter().filter(|n| Some(n.op) == qconv) {
        for v in [
            n.inputs.first().copied().flatten(),
            n.outputs.first().copied(),
        ]
        .into_iter()
        .flatten()
        {
            let name = &g.values[v].name;
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// Why a QConv cannot be static, from its fused activation; else the
/// interval its output is clipped to.
fn activation_bounds(n: &Node) -> Result<(f32, f32), String> {
    let act = n.attrs.string("activation", "").unwrap_or_default();
    match act.as_str() {
        "" => Ok((f32::NEG_INFINITY, f32::INFINITY)),
        "relu" => Ok((0.0, f32::INFINITY)),
        "clip" => {
            let a = n
                .attrs
                .float("activation_alpha", f32::NEG_INFINITY)
                .unwrap_or(f32::NAN);
            let b = n
                .attrs
                .float("activation_beta", f32::INFINITY)
                .unwrap_or(f32::NAN);
            if a <= 0.0 && 0.0 <= b {
                Ok((a, b))
            } else {
                Err(format!("its clip [{a}, {b}] does not hold 0"))
            }
        }
        other => Err(format!(
            "its fused {other} is not a clamp, so it cannot run on int8 codes: stays dynamic"
        )),
    }
}

/// Turn the `QConv`s of `g` (dynamic, from `quantize_dynamic`) static with
/// the calibrated `ranges` (by value name), as the module docs say.
pub fn quantize_static(
    g: &mut Graph,
    ranges: &HashMap<String, (f32, f32)>,
    method: Method,
    samples: usize,
) -> Result<StaticReport> {
    let id = |name: &str| op_id(name).ok_or_else(|| anyhow!("this runtime has no {name} op"));
    let (qconv, qlinear, quant, dequant) = (
        id("QConv")?,
        id("QLinearConv")?,
        id("QuantizeLinear")?,
        id("DequantizeLinear")?,
    );
    let mut report = StaticReport {
        method: method.name(),
        samples,
        ..StaticReport::default()
    };
    // f32 value -> (its int8 twin, scale, zero point).
    let mut twin: HashMap<ValueId, (ValueId, ValueId, ValueId)> = HashMap::new();
    // (scale, zero point) constants per f32 value.
    let mut consts: HashMap<ValueId, (ValueId, ValueId)> = HashMap::new();
    let mut out_nodes: Vec<Node> = Vec::with_capacity(g.nodes.len());
    let old = std::mem::take(&mut g.nodes);
    for node in old {
        if node.op != qconv {
            out_nodes.push(node);
            continue;
        }
        let plan = (|| -> Result<_, String> {
            let bounds = activation_bounds(&node)?;
            let x = node.inputs.first().copied().flatten().ok_or("no input")?;
            let y = *node.outputs.first().ok_or("no output")?;
            let range = |v: ValueId| {
                ranges
                    .get(&g.values[v].name)
                    .copied()
                    .ok_or_else(|| format!("no calibrated range for '{}'", g.values[v].name))
            };
            let (xr, yr) = (range(x)?, range(y)?);
            let yr = (yr.0.max(bounds.0).min(0.0), yr.1.min(bounds.1).max(0.0));
            let ws = node
                .inputs
                .get(2)
                .copied()
                .flatten()
                .ok_or("no weight scale")?;
            let ws = g.values[ws]
                .konst
                .as_ref()
                .and_then(|t| t.to_f32_vec().ok())
                .ok_or("weight scale is not a constant")?;
            let bias = match node.inputs.get(3).copied().flatten() {
                None => None,
                Some(b) => Some(
                    g.values[b]
                        .konst
                        .as_ref()
                        .and_then(|t| t.to_f32_vec().ok())
                        .ok_or("bias is not a constant")?,
                ),
            };
            Ok((x, y, xr, yr, ws, bias))
        })();
        let (x, y, xr, yr, ws, bias) = match plan {
            Ok(p) => p,
            Err(why) => {
                report.dynamic.push((node.name.clone(), why));
                out_nodes.push(node);
                continue;
            }
        };
        let xs = params(xr.0, xr.1).0;
        // The i32 bias, at scale x_scale·w_scale.
        let bias_q = match &bias {
            None => None,
            Some(b) => {
                let mut q = Vec::with_capacity(b.len());
                for (j, &v) in b.iter().enumerate() {
                    let r = (v as f64 / (xs as f64 * ws[j] as f64)).round();
                    if r.is_nan() || r.abs() >= 2f64.powi(30) {
                        break;
                    }
                    q.push(r as i32);
                }
                if q.len() != b.len() {
                    report.dynamic.push((
                        node.name.clone(),
                        "its bias does not fit i32 at scale x_scale·w_scale: stays dynamic".into(),
                    ));
                    out_nodes.push(node);
                    continue;
                }
                Some(q)
            }
        };
        let mut param_consts = |g: &mut Graph, v: ValueId, (lo, hi): (f32, f32)| {
            *consts.entry(v).or_insert_with(|| {
                let (s, z) = params(lo, hi);
                let base = g.values[v].name.clone();
                let sn = g.fresh_name(&format!("{base}.q_scale"));
                let zn = g.fresh_name(&format!("{base}.q_zero_point"));
                let sv = g.add_const(&sn, Tensor::scalar(s));
                let zv = g.add_const(&zn, Tensor::scalar(z));
                (sv, zv)
            })
        };
        // The int8 input: the twin of a static producer's output, or a new
        // QuantizeLinear.
        let xq = match twin.get(&x) {
            Some(&(q, _, _)) => q,
            None => {
                let (sv, zv) = param_consts(g, x, xr);
                let name = g.fresh_name(&format!("{}.int8", g.values[x].name));
                let q = g.add_value(&name, DType::I8, g.values[x].shape.clone());
                out_nodes.push(Node {
                    name: format!("{}.quantize", node.name),
                    op: quant,
                    attrs: Attrs::new(),
                    inputs: vec![Some(x), Some(sv), Some(zv)],
                    outputs: vec![q],
                });
                twin.insert(x, (q, sv, zv));
                q
            }
        };
        let (xsv, xzv) = {
            let (_, s, z) = twin[&x];
            (s, z)
        };
        let (ysv, yzv) = param_consts(g, y, yr);
        let name = g.fresh_name(&format!("{}.int8", g.values[y].name));
        let yq = g.add_value(&name, DType::I8, g.values[y].shape.clone());
        let m = ws.len();
        let wzn = g.fresh_name(&format!("{}.w_zero_point", node.name));
        let wz = g.add_const(&wzn, Tensor::from_slice(&[m], &vec![0i8; m])?);
        let mut inputs = vec![
            Some(xq),
            Some(xsv),
            Some(xzv),
            node.inputs[1],
            node.inputs[2],
            Some(wz),
            Some(ysv),
            Some(yzv),
        ];
        if let Some(b) = bias_q {
            let bn = g.fresh_name(&format!("{}.bias_i32", node.name));
            inputs.push(Some(g.add_const(&bn, Tensor::from_slice(&[m], &b)?)));
        }
        let mut attrs = node.attrs.clone();
        for k in ["activation", "activation_alpha", "activation_beta"] {
            attrs.0.remove(k);
        }
        report.converted.push(StaticLayer {
            node: node.name.clone(),
            input_range: xr,
            output_range: yr,
        });
        out_nodes.push(Node {
            name: node.name.clone(),
            op: qlinear,
            attrs,
            inputs,
            outputs: vec![yq],
        });
        // f32 readers of y (if any) get it back through a DequantizeLinear;
        // dead-code elimination drops it when none is left.
        out_nodes.push(Node {
            name: format!("{}.dequantize", node.name),
            op: dequant,
            attrs: Attrs::new(),
            inputs: vec![Some(yq), Some(ysv), Some(yzv)],
            outputs: vec![y],
        });
        twin.insert(y, (yq, ysv, yzv));
    }
    g.nodes = out_nodes;
    passes::eliminate_dead(g)?;
    report.quantize_nodes = g.nodes.iter().filter(|n| n.op == quant).count();
    report.dequantize_nodes = g.nodes.iter().filter(|n| n.op == dequant).count();
    Ok(report)
}
