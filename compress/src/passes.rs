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
    let mut reports = vec![fold_constants(g)?, fold_batch_norm(g)?];
    reports.extend(crate::fuse::fuse_all(g)?);
    reports.push(eliminate_dead(g)?);
    Ok(reports)
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
        if dims.len() < 3 || dims[0] % group != 0 {
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
