//! Graph passes run at import: constant folding, BatchNorm folding into the
//! preceding Conv/Gemm, fusions ([`crate::fuse`]), dead-node elimination. Each is
//! `fn(&mut Graph) -> Result<Report>` and can run alone.

use anyhow::{Result, anyhow};
use morsel_runtime::graph::{Attr, Graph, Node, ValueId};
use morsel_runtime::ops::{self, op_id};
use morsel_runtime::tensor::Tensor;

/// What a pass changed, for the compress report.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub pass: &'static str,
    pub changed: usize,
}

/// The import-time cleanup pipeline.
pub fn cleanup(g: &mut Graph) -> Result<Vec<Report>> {
    let mut reports = vec![
        fuse_qdq_weights(g)?,
        fold_constants(g)?,
        fold_batch_norm(g)?,
    ];
    reports.extend(crate::fuse::fuse_all(g)?);
    reports.push(fold_shape_copies(g)?);
    reports.push(eliminate_dead(g)?);
    reports.push(flush_subnormal_constants(g)?);
    Ok(reports)
}

/// f32 constants' subnormal values (nonzero, below 2⁻¹²⁶ ≈ 1.2e-38) become
/// zeros of the same sign. A product with a subnormal operand takes a
/// microcode assist on x86 (about a hundred cycles): PP-OCRv4 rec's two
/// squeeze-excite convs hold 17,485 of them (23% of one weight) and ran
/// 30× slower than with normal values (0.49 ms for a 480→120 product of one
/// position). Their contribution is below 1.2e-38 times an activation.
pub fn flush_subnormal_constants(g: &mut Graph) -> Result<Report> {
    use morsel_runtime::DType;
    let mut changed = 0;
    for v in &mut g.values {
        let Some(t) = v.konst.as_ref() else { continue };
        if t.dtype != DType::F32 {
            continue;
        }
        let Ok(x) = t.as_slice::<f32>() else { continue };
        if !x.iter().any(|v| v.is_subnormal()) {
            continue;
        }
        let y: Vec<f32> = x
            .iter()
            .map(|&v| {
                if v.is_subnormal() {
                    0f32.copysign(v)
                } else {
                    v
                }
            })
            .collect();
        changed += x.iter().filter(|v| v.is_subnormal()).count();
        v.konst = Some(Tensor::from_slice(&t.dims, &y)?);
    }
    Ok(Report {
        pass: "flush-subnormal-constants",
        changed,
    })
}

/// A Reshape whose target shape is assembled at run time from the input's
/// own dims (the flatten exporters write: `Shape(x) → Gather(j) →
/// [Squeeze →] Unsqueeze → Concat(…, [-1])`) gets a constant target instead,
/// with `0` ("copy the input's dim", ONNX Reshape without `allowzero`) where
/// the assembled shape took dim `j` of `x` at position `j`. The shape chain
/// is then dead. Only that exact form is folded: a dim taken from another
/// tensor or moved to another position is left alone.
pub fn fold_shape_copies(g: &mut Graph) -> Result<Report> {
    use morsel_runtime::DType;
    let [Some(reshape), Some(concat)] = [op_id("Reshape"), op_id("Concat")] else {
        return Ok(Report {
            pass: "fold-shape-copies",
            changed: 0,
        });
    };
    let producers = g.producers();
    let mut changed = 0;
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if n.op != reshape || n.attrs.int("allowzero", 0).unwrap_or(1) != 0 {
            continue;
        }
        let (Some(Some(x)), Some(Some(s))) = (n.inputs.first(), n.inputs.get(1)) else {
            continue;
        };
        let (x, s) = (*x, *s);
        if g.values[s].konst.is_some() {
            continue;
        }
        let Some(c) = producers[s].map(|p| &g.nodes[p]) else {
            continue;
        };
        if c.op != concat || c.attrs.int("axis", 0).ok() != Some(0) {
            continue;
        }
        // The target, piece by piece: constants as they are, `0` for dim
        // p of `x` taken at position p.
        let mut spec: Vec<i64> = Vec::new();
        let ok = c.inputs.iter().all(|u| {
            let Some(u) = *u else { return false };
            if let Some(t) = &g.values[u].konst {
                return t.dtype == DType::I64
                    && t.dims.len() == 1
                    && t.to_i64_vec().map(|v| spec.extend(v)).is_ok();
            }
            match dim_of(g, &producers, u, true) {
                Some((src, j)) if src == x && j == spec.len() => {
                    spec.push(0);
                    true
                }
                _ => false,
            }
        });
        if !ok || !spec.contains(&0) {
            continue;
        }
        let name = format!("{}_folded_shape", g.values[s].name);
        let t = Tensor::from_slice(&[spec.len()], &spec)?;
        let k = g.add_const(&name, t);
        g.nodes[i].inputs[1] = Some(k);
        changed += 1;
    }
    Ok(Report {
        pass: "fold-shape-copies",
        changed,
    })
}

/// `(x, j)` when value `v` is dim `j` of `x`, as a 1-element 1-D tensor
/// (`one_d`) or a scalar, built from `Shape(x)` by Gather, Squeeze and
/// Unsqueeze along axis 0.
fn dim_of(
    g: &Graph,
    producers: &[Option<usize>],
    v: ValueId,
    one_d: bool,
) -> Option<(ValueId, usize)> {
    let n = &g.nodes[producers[v]?];
    let name = ops::op_name(n.op);
    let input = |k: usize| n.inputs.get(k).copied().flatten();
    let const_ints =
        |k: usize| -> Option<Vec<i64>> { g.values[input(k)?].konst.as_ref()?.to_i64_vec().ok() };
    // Squeeze/Unsqueeze axes: an attribute before opset 13, an input after.
    let axes = || -> Option<Vec<i64>> {
        match n.attrs.ints("axes").ok().flatten() {
            Some(a) => Some(a),
            None => const_ints(1),
        }
    };
    match name {
        "Unsqueeze" if one_d && axes()? == [0] => dim_of(g, producers, input(0)?, false),
        "Squeeze" if !one_d && matches!(axes().as_deref(), None | Some([0])) => {
            dim_of(g, producers, input(0)?, true)
        }
        "Gather" => {
            let idx = g.values[input(1)?].konst.as_ref()?;
            let scalar = idx.dims.is_empty();
            if n.attrs.int("axis", 0).ok()? != 0 || scalar == one_d || idx.numel() != 1 {
                return None;
            }
            let j = usize::try_from(*idx.to_i64_vec().ok()?.first()?).ok()?;
            let shape = &g.nodes[producers[input(0)?]?];
            // Shape's optional start/end (opset 15) would renumber the dims.
            let plain = shape.attrs.get("start").is_none() && shape.attrs.get("end").is_none();
            (ops::op_name(shape.op) == "Shape" && plain)
                .then(|| shape.inputs.first().copied().flatten())
                .flatten()
                .map(|x| (x, j))
        }
        _ => None,
    }
}

/// Pre-quantized weights (QDQ ONNX, e.g. from ONNX Runtime's
/// `quantize_static`) into Morsel's int8 ops: a Conv (group 1), MatMul or
/// Gemm whose weight is `DequantizeLinear(q, scale)` of a constant int8 `q`
/// with zero zero points and one scale per output channel (or one for all)
/// becomes `QConv` / `QMatMul` on `q` itself, so it computes int8×int8 in
/// i32 and the file keeps the int8 weight. Its activations are quantized at
/// run time, as Morsel's own int8 is; the model's activation
/// Quantize/DequantizeLinear pairs stay and run as ONNX defines them.
/// Weights holding -128 (Morsel's int8 weights are symmetric, [-127, 127])
/// or other layouts are left to constant folding (f32 compute).
pub fn fuse_qdq_weights(g: &mut Graph) -> Result<Report> {
    use morsel_runtime::DType;
    use morsel_runtime::graph::Attrs;
    let ids = [
        op_id("DequantizeLinear"),
        op_id("Conv"),
        op_id("MatMul"),
        op_id("Gemm"),
        op_id("QConv"),
        op_id("QMatMul"),
    ];
    let [
        Some(dq),
        Some(conv),
        Some(matmul),
        Some(gemm),
        Some(qconv),
        Some(qmatmul),
    ] = ids
    else {
        return Ok(Report {
            pass: "fuse-qdq-weights",
            changed: 0,
        });
    };
    let mut changed = 0;
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if ![conv, matmul, gemm].contains(&n.op) {
            continue;
        }
        let Some(w) = n.inputs.get(1).copied().flatten() else {
            continue;
        };
        let Some(p) = g
            .nodes
            .iter()
            .find(|d| d.op == dq && d.outputs.first() == Some(&w))
        else {
            continue;
        };
        let konst = |k: usize| {
            p.inputs
                .get(k)
                .copied()
                .flatten()
                .and_then(|v| g.values[v].konst.as_ref())
        };
        let (Some(q), Some(s)) = (konst(0), konst(1)) else {
            continue;
        };
        if p.inputs.get(2).copied().flatten().is_some() {
            match konst(2) {
                Some(z) if z.data.as_bytes().iter().all(|&b| b == 0) => {}
                _ => continue,
            }
        }
        if q.dtype != DType::I8 || s.dtype != DType::F32 || s.dims.len() > 1 {
            continue;
        }
        let Ok(qv) = q.as_slice::<i8>() else { continue };
        if qv.contains(&i8::MIN) {
            continue;
        }
        let sv = s.to_f32_vec()?;
        let rank = q.dims.len();
        let axis = p.attrs.int("axis", 1)?;
        let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
        // (q as [K, N], output-channel axis of the original layout)
        let (op, weight, out_axis) = if n.op == conv {
            if n.attrs.int("group", 1)? != 1 || rank < 3 {
                continue;
            }
            (qconv, q.clone(), 0)
        } else {
            if rank != 2 {
                continue;
            }
            let trans_b = n.op == gemm && n.attrs.int("transB", 0)? != 0;
            if n.op == gemm
                && (n.attrs.int("transA", 0)? != 0
                    || n.attrs.float("alpha", 1.0)? != 1.0
                    || n.attrs.float("beta", 1.0)? != 1.0)
            {
                continue;
            }
            let (r, c) = (q.dims[0], q.dims[1]);
            if trans_b {
                let t: Vec<i8> = (0..r * c).map(|idx| qv[(idx % r) * c + idx / r]).collect();
                (qmatmul, Tensor::from_slice(&[c, r], &t[..])?, 0)
            } else {
                (qmatmul, q.clone(), 1)
            }
        };
        let channels = q.dims[out_axis];
        if sv.len() != 1 && (sv.len() != channels || axis != out_axis) {
            continue;
        }
        let scales = if sv.len() == 1 {
            vec![sv[0]; channels]
        } else {
            sv
        };
        // A Gemm bias must be one value per output channel.
        let bias = n.inputs.get(2).copied().flatten();
        if n.op == gemm
            && let Some(b) = bias
        {
            // A constant, or a DequantizeLinear of one (a QDQ int32 bias).
            let of_dq = g
                .nodes
                .iter()
                .find(|d| d.op == dq && d.outputs.first() == Some(&b))
                .and_then(|d| d.inputs.first().copied().flatten())
                .and_then(|v| g.values[v].konst.as_ref());
            let dims = g.values[b].konst.as_ref().or(of_dq).map(|t| t.dims.clone());
            if dims.as_deref() != Some(&[channels][..]) {
                continue;
            }
        }
        let (x, name, act) = (n.inputs[0], n.name.clone(), n.attrs.clone());
        let wq = g.add_const(&g.fresh_name(&format!("{name}.int8")), weight);
        let ws = g.add_const(
            &g.fresh_name(&format!("{name}.scale")),
            Tensor::from_slice(&[channels], &scales[..])?,
        );
        let n = &mut g.nodes[i];
        n.op = op;
        n.inputs = vec![x, Some(wq), Some(ws)];
        if let Some(b) = bias {
            n.inputs.push(Some(b));
        }
        if op == qmatmul {
            // QMatMul keeps only the fused-activation attributes.
            let mut attrs = Attrs::new();
            for (k, v) in act.0.iter().filter(|(k, _)| k.starts_with("activation")) {
                attrs.set(k, v.clone());
            }
            n.attrs = attrs;
        } else {
            n.attrs.0.remove("group");
        }
        changed += 1;
    }
    Ok(Report {
        pass: "fuse-qdq-weights",
        changed,
    })
}

/// Evaluate every node whose inputs are all constants; its outputs become constants.
pub fn fold_constants(g: &mut Graph) -> Result<Report> {
    let mut changed = 0;
    let mut keep = Vec::with_capacity(g.nodes.len());
    let nodes = std::mem::take(&mut g.nodes);
    for node in nodes {
        let all_const = node
            .inputs
            .iter()
            .flatten()
            .all(|&i| g.values[i].konst.is_some());
        if all_const {
            let op = ops::build(&node).map_err(|e| anyhow!("{e}"))?;
            let ins: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .map(|i| i.and_then(|i| g.values[i].konst.clone()))
                .collect();
            let outs = ops::eval_owned(&*op, &ins).map_err(|e| {
                anyhow!(
                    "folding node '{}': {}",
                    node.name,
                    e.in_node(&node.name, ops::op_name(node.op))
                )
            })?;
            for (&o, t) in node.outputs.iter().zip(outs) {
                g.values[o].dtype = t.dtype;
                g.values[o].shape = morsel_runtime::tensor::known_shape(&t.dims);
                g.values[o].konst = Some(t);
            }
            changed += 1;
        } else {
            keep.push(node);
        }
    }
    g.nodes = keep;
    Ok(Report {
        pass: "fold-constants",
        changed,
    })
}

fn konst(g: &Graph, v: Option<ValueId>) -> Option<Vec<f32>> {
    let t = g.values[v?].konst.as_ref()?;
    (t.dtype == morsel_runtime::DType::F32).then(|| t.to_f32_vec().ok())?
}

/// Fold an inference BatchNormalization into the Conv, ConvTranspose or
/// Gemm feeding it.
pub fn fold_batch_norm(g: &mut Graph) -> Result<Report> {
    let bn = op_id("BatchNormalization");
    let conv = op_id("Conv");
    let conv_t = op_id("ConvTranspose");
    let gemm = op_id("Gemm");
    let mut changed = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if Some(g.nodes[i].op) != bn {
            i += 1;
            continue;
        }
        let uses = g.use_counts();
        let producers = g.producers();
        let n = &g.nodes[i];
        let Some(x) = n.inputs.first().copied().flatten() else {
            i += 1;
            continue;
        };
        let eps = n.attrs.float("epsilon", 1e-5).unwrap_or(1e-5);
        let params: Option<Vec<Vec<f32>>> = (1..5)
            .map(|k| konst(g, n.inputs.get(k).copied().flatten()))
            .collect();
        let (Some(params), Some(pi)) = (params, producers[x]) else {
            i += 1;
            continue;
        };
        let p = &g.nodes[pi];
        let host = [conv, conv_t, gemm].contains(&Some(p.op));
        if uses[x] != 1 || !host || g.outputs.contains(&x) {
            i += 1;
            continue;
        }
        let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let c = scale.len();
        if [bias.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
            i += 1;
            continue;
        }
        let s: Vec<f32> = (0..c).map(|k| scale[k] / (var[k] + eps).sqrt()).collect();
        let w_id = p.inputs.get(1).copied().flatten();
        let Some(w) = w_id.and_then(|w| g.values[w].konst.clone()) else {
            i += 1;
            continue;
        };
        let mut wv = w.to_f32_vec()?;
        let is_conv_t = Some(p.op) == conv_t;
        let is_conv = Some(p.op) == conv || is_conv_t;
        let trans_b = p.attrs.int("transB", 0).unwrap_or(0) != 0;
        let (alpha, beta) = (p.attrs.float("alpha", 1.0)?, p.attrs.float("beta", 1.0)?);
        let conv_w = is_conv.then(|| ConvWeight::of(p, is_conv_t, &w.dims));
        // output channel count of the producer
        let out_c = match conv_w {
            Some(cw) => cw.map(|cw| cw.out_channels),
            None if trans_b => w.dims.first().copied(),
            None => w.dims.get(1).copied(),
        };
        if out_c != Some(c) || (!is_conv && w.dims.len() != 2) {
            i += 1;
            continue;
        }
        if let Some(Some(cw)) = conv_w {
            cw.scale(&mut wv, &w.dims, |k| s[k]);
        } else if trans_b {
            let per = wv.len() / c;
            for (k, chunk) in wv.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= s[k]);
            }
        } else {
            for row in wv.chunks_mut(c) {
                row.iter_mut().zip(&s).for_each(|(v, s)| *v *= s);
            }
        }
        let old_b: Vec<f32> = match p.inputs.get(2).copied().flatten() {
            None => vec![0.0; c],
            Some(b) => match konst(g, Some(b)) {
                Some(v) if v.len() == c => v
                    .into_iter()
                    .map(|x| x * if is_conv { 1.0 } else { beta })
                    .collect(),
                Some(v) if v.len() == 1 => vec![v[0] * if is_conv { 1.0 } else { beta }; c],
                _ => {
                    i += 1;
                    continue;
                }
            },
        };
        let _ = alpha;
        let new_b: Vec<f32> = (0..c)
            .map(|k| (old_b[k] - mean[k]) * s[k] + bias[k])
            .collect();
        let w_name = g.fresh_name(&format!(
            "{}_bnfolded",
            g.values[w_id.unwrap_or_default()].name
        ));
        let new_w = g.add_const(&w_name, Tensor::from_slice(&w.dims, &wv)?);
        let b_name = g.fresh_name(&format!("{}_bias_bnfolded", g.nodes[pi].name));
        let new_bias = g.add_const(&b_name, Tensor::from_slice(&[c], &new_b)?);
        let y = g.nodes[i].outputs[0];
        let p = &mut g.nodes[pi];
        p.inputs.resize(3, None);
        p.inputs[1] = Some(new_w);
        p.inputs[2] = Some(new_bias);
        if !is_conv {
            p.attrs.set("beta", Attr::Float(1.0));
        }
        p.outputs[0] = y;
        g.nodes.remove(i);
        changed += 1;
    }
    Ok(Report {
        pass: "fold-batchnorm",
        changed,
    })
}

/// A Conv weight ([C_out, C_in/group, k...]) or a ConvTranspose weight
/// ([C_in, C_out/group, k...]) seen by output channel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvWeight {
    pub out_channels: usize,
    transposed: bool,
    group: usize,
}

impl ConvWeight {
    /// For node `n`'s weight of `dims` (ConvTranspose when `transposed`);
    /// `None` when the rank is below 3 or `group` does not divide dim 0.
    pub(crate) fn of(n: &Node, transposed: bool, dims: &[usize]) -> Option<ConvWeight> {
        let group = n.attrs.int("group", 1).ok()?.max(1) as usize;
        if dims.len() < 3 || !dims[0].is_multiple_of(group) {
            return None;
        }
        let out_channels = if transposed { dims[1] * group } else { dims[0] };
        Some(ConvWeight {
            out_channels,
            transposed,
            group,
        })
    }

    /// Multiply the weight `w` (of the `dims` given to [`ConvWeight::of`])
    /// by `s(output channel)`.
    pub(crate) fn scale(&self, w: &mut [f32], dims: &[usize], s: impl Fn(usize) -> f32) {
        let taps: usize = dims[2..].iter().product();
        if !self.transposed {
            for (k, chunk) in w.chunks_mut(w.len() / dims[0].max(1)).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= s(k));
            }
            return;
        }
        // input channel ci (of group ci / (C_in/group)) feeds output
        // channels group·(C_out/group) + j
        let (c_in, c_out_g) = (dims[0], dims[1]);
        for (ci, per_in) in w.chunks_mut((c_out_g * taps).max(1)).enumerate() {
            let base = ci / (c_in / self.group).max(1) * c_out_g;
            for (j, kernel) in per_in.chunks_mut(taps.max(1)).enumerate() {
                kernel.iter_mut().for_each(|v| *v *= s(base + j));
            }
        }
    }
}

/// Remove nodes whose outputs nobody reads, then values nothing refers to.
pub fn eliminate_dead(g: &mut Graph) -> Result<Report> {
    let mut removed = 0;
    loop {
        let uses = g.use_counts();
        let before = g.nodes.len();
        g.nodes.retain(|n| n.outputs.iter().any(|&o| uses[o] > 0));
        if g.nodes.len() == before {
            break;
        }
        removed += before - g.nodes.len();
    }
    compact(g);
    Ok(Report {
        pass: "eliminate-dead",
        changed: removed,
    })
}

/// Drop values no node, input or output refers to, renumbering the rest.
pub fn compact(g: &mut Graph) {
    let mut live = vec![false; g.values.len()];
    for &i in g.inputs.iter().chain(&g.outputs) {
        live[i] = true;
    }
    for n in &g.nodes {
        for &v in n.inputs.iter().flatten().chain(&n.outputs) {
            live[v] = true;
        }
    }
    let mut remap = vec![usize::MAX; g.values.len()];
    let mut values = Vec::new();
    for (i, v) in std::mem::take(&mut g.values).into_iter().enumerate() {
        if live[i] {
            remap[i] = values.len();
            values.push(v);
        }
    }
    g.values = values;
    for i in g.inputs.iter_mut().chain(g.outputs.iter_mut()) {
        *i = remap[*i];
    }
    for n in &mut g.nodes {
        for i in n.inputs.iter_mut().flatten() {
            *i = remap[*i];
        }
        for o in &mut n.outputs {
            *o = remap[*o];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use morsel_runtime::DType;

    #[test]
    fn subnormal_constants_become_signed_zeros() {
        let mut g = Graph::default();
        let tiny = f32::MIN_POSITIVE / 4.0;
        let w = [1.0, tiny, -tiny, f32::MIN_POSITIVE, 0.0, -2.5e-39];
        let c = g.add_const("w", Tensor::from_slice(&[6], &w).unwrap());
        let i = g.add_const("i", Tensor::from_slice(&[1], &[7i64]).unwrap());
        let r = flush_subnormal_constants(&mut g).unwrap();
        assert_eq!(r.changed, 3);
        let got = g.values[c].konst.as_ref().unwrap().to_f32_vec().unwrap();
        let want = [1.0, 0.0, -0.0, f32::MIN_POSITIVE, 0.0, -0.0];
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{got:?}"
        );
        // other dtypes and constants without subnormals are left alone
        assert_eq!(g.values[i].konst.as_ref().unwrap().dtype, DType::I64);
        assert_eq!(flush_subnormal_constants(&mut g).unwrap().changed, 0);
    }

    /// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), j)), [-1]))`, the
    /// flatten exporters write; `j` is the dim taken.
    fn flatten_graph(j: i64) -> (Graph, usize) {
        use morsel_runtime::graph::Attrs;
        use morsel_runtime::tensor::Dim;
        let mut g = Graph::default();
        let x = g.add_value(
            "x",
            DType::F32,
            vec![Dim::Sym("N".into()), Dim::Known(4), Dim::Known(2)],
        );
        g.inputs.push(x);
        let shape = g.add_value("shape", DType::I64, vec![Dim::Known(3)]);
        let idx = g.add_const("idx", Tensor::from_slice(&[], &[j]).unwrap());
        let dim = g.add_value("dim", DType::I64, vec![]);
        let axes = g.add_const("axes", Tensor::from_slice(&[1], &[0i64]).unwrap());
        let dim1 = g.add_value("dim1", DType::I64, vec![Dim::Known(1)]);
        let rest = g.add_const("rest", Tensor::from_slice(&[1], &[-1i64]).unwrap());
        let spec = g.add_value("spec", DType::I64, vec![Dim::Known(2)]);
        let y = g.add_value("y", DType::F32, vec![Dim::Sym("N".into()), Dim::Known(8)]);
        let node = |op: &str, attrs: Attrs, inputs: &[usize], out: usize| Node {
            name: format!("{op}_{out}"),
            op: op_id(op).unwrap(),
            attrs,
            inputs: inputs.iter().map(|&i| Some(i)).collect(),
            outputs: vec![out],
        };
        g.nodes = vec![
            node("Shape", Attrs::new(), &[x], shape),
            node("Gather", Attrs::new(), &[shape, idx], dim),
            node("Unsqueeze", Attrs::new(), &[dim, axes], dim1),
            node(
                "Concat",
                Attrs::new().with("axis", Attr::Int(0)),
                &[dim1, rest],
                spec,
            ),
            node("Reshape", Attrs::new(), &[x, spec], y),
        ];
        g.outputs.push(y);
        (g, 4)
    }

    #[test]
    fn flatten_shape_chains_fold_to_a_constant_target() {
        let (mut g, r) = flatten_graph(0);
        assert_eq!(fold_shape_copies(&mut g).unwrap().changed, 1);
        let s = g.nodes[r].inputs[1].unwrap();
        let spec = g.values[s].konst.as_ref().unwrap().to_i64_vec().unwrap();
        assert_eq!(spec, [0, -1]);
        eliminate_dead(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "only the Reshape is left");
        // Dim 1 of x at position 0 is not a copy: left alone.
        let (mut g, _) = flatten_graph(1);
        assert_eq!(fold_shape_copies(&mut g).unwrap().changed, 0);
    }
}
