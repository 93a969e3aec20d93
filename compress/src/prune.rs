//! Pruning: unstructured magnitude pruning, N:M semi-structured pruning, and
//! structured (channel / neuron) pruning that makes the model smaller and
//! dense.
//!
//! - [`prune_magnitude`] zeroes the smallest-magnitude weights of every
//!   weight layer (MatMul, Gemm, Conv, ConvTranspose with a constant f32
//!   weight): globally across layers (one threshold) or per layer, with
//!   per-layer overrides; the first and last weight layers stay dense unless
//!   told otherwise (they carry the input and the logits and hold few
//!   weights: on the digits CNN, 80% global pruning keeps 99.33% accuracy
//!   with dense ends and drops to 96.89% with ends pruned at 40%). The zeros become a sparse encoding when the file is
//!   written (`runtime/FORMAT.md`, encodings 32/33) and the sparse kernel
//!   when the runtime finds that faster.
//! - [`prune_n_m`] keeps the `n` largest of every `m` consecutive weights
//!   along the reduction axis (2:4 is the usual choice).
//! - [`channel_groups`] finds the output channels (Conv) and neurons
//!   (MatMul/Gemm) that can be removed: a producer layer whose output reaches
//!   only channel-wise ops (activations, per-channel affine constants, pools)
//!   and then the inputs of consumer layers. [`remove_channels`] deletes the
//!   chosen channels from the producer's weight and bias, every per-channel
//!   constant on the way and the consumers' input rows. Channels tied by a
//!   residual Add, a Concat, a Reshape or a graph output are not touched: the
//!   walk gives up on the whole group. A removed channel's constant output
//!   (e.g. `sigmoid(0)`) is folded into the consumer's bias, so the pruned
//!   model equals the dense model with those channels' weights and bias set
//!   to zero ([`zero_channels`]; tests/prune.rs checks it).

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use morsel_runtime::DType;
use morsel_runtime::graph::{Attr, Graph, Node, ValueId};
use morsel_runtime::ops::elementwise::Activation;
use morsel_runtime::ops::{self, op_name};
use morsel_runtime::tensor::Tensor;

use crate::passes::compact;

/// Where a layer's weight keeps its output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[K, N]` (MatMul, Gemm without transB): an output is a column.
    KN { k: usize, n: usize },
    /// `[N, K…]` (Gemm with transB, Conv `[O, I/g, kh, kw]`): an output is a row.
    NK { n: usize, k: usize },
}

impl Layout {
    pub fn outputs(self) -> usize {
        match self {
            Layout::KN { n, .. } | Layout::NK { n, .. } => n,
        }
    }
    pub fn reduction(self) -> usize {
        match self {
            Layout::KN { k, .. } | Layout::NK { k, .. } => k,
        }
    }
    /// Flat index of output `o`, reduction index `r`.
    pub fn at(self, o: usize, r: usize) -> usize {
        match self {
            Layout::KN { n, .. } => r * n + o,
            Layout::NK { k, .. } => o * k + r,
        }
    }
}

/// A node with a constant f32 weight: (weight value, layout).
pub fn weight_of(g: &Graph, n: &Node) -> Option<(ValueId, Layout)> {
    let op = op_name(n.op);
    if !matches!(op, "MatMul" | "Gemm" | "Conv" | "ConvTranspose") {
        return None;
    }
    let w = n.inputs.get(1).copied()??;
    let t = g.values[w].konst.as_ref()?;
    if t.dtype != DType::F32 || t.dims.len() < 2 {
        return None;
    }
    let d = &t.dims;
    let rest: usize = d[1..].iter().product();
    Some((
        w,
        match op {
            "MatMul" if d.len() == 2 => Layout::KN { k: d[0], n: d[1] },
            "Gemm" if n.attrs.int("transB", 0).ok()? != 0 => Layout::NK { n: d[0], k: d[1] },
            "Gemm" => Layout::KN { k: d[0], n: d[1] },
            // ConvTranspose's weight is [C_in, C_out/g, kh, kw]: the first
            // axis is the reduction; pruning treats it as rows all the same.
            "Conv" | "ConvTranspose" => Layout::NK { n: d[0], k: rest },
            _ => return None,
        },
    ))
}

pub(crate) fn f32s(g: &Graph, v: ValueId) -> Result<Vec<f32>> {
    g.values[v]
        .konst
        .as_ref()
        .ok_or_else(|| anyhow!("value '{}' is not a constant", g.values[v].name))?
        .to_f32_vec()
        .map_err(|e| anyhow!("{e}"))
}

/// Point `node`'s input `slot` at a new constant (never changes a constant
/// other nodes may share).
fn replace_input(
    g: &mut Graph,
    node: usize,
    slot: usize,
    dims: &[usize],
    data: &[f32],
) -> Result<()> {
    let old = g.nodes[node].inputs[slot].ok_or_else(|| anyhow!("no input {slot}"))?;
    let name = g.fresh_name(&g.values[old].name.clone());
    let t = Tensor::from_slice(dims, data).map_err(|e| anyhow!("{e}"))?;
    let v = g.add_const(&name, t);
    g.nodes[node].inputs[slot] = Some(v);
    Ok(())
}

/// Sparsity of one weight layer after pruning.
#[derive(Debug, Clone)]
pub struct LayerSparsity {
    pub node: String,
    pub op: &'static str,
    pub params: usize,
    pub zeros: usize,
}

impl LayerSparsity {
    pub fn sparsity(&self) -> f64 {
        self.zeros as f64 / self.params.max(1) as f64
    }
}

/// How [`prune_magnitude`] chooses.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Fraction of weights to zero, 0..1.
    pub ratio: f32,
    /// One magnitude threshold across all layers (true) or `ratio` in each.
    pub global: bool,
    /// Ratio for the first and last weight layers (default 0: they stay dense).
    pub ends: Option<f32>,
    /// Per-layer ratios by node name; these layers are left out of the
    /// global threshold.
    pub overrides: Vec<(String, f32)>,
}

/// The weight layers in graph order, each weight once.
fn weight_layers(g: &Graph) -> Vec<(usize, ValueId, Layout)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some((w, l)) = weight_of(g, n)
            && !seen.contains(&w)
        {
            seen.push(w);
            out.push((i, w, l));
        }
    }
    out
}

fn check_ratio(what: &str, r: f32) -> Result<()> {
    if !(0.0..1.0).contains(&r) {
        bail!("{what} must be in [0, 1), got {r}");
    }
    Ok(())
}

/// Zero the `count` smallest-magnitude entries of `w` (ties broken by position).
fn zero_smallest(w: &mut [f32], count: usize) {
    if count == 0 {
        return;
    }
    let mut idx: Vec<u32> = (0..w.len() as u32).collect();
    let count = count.min(w.len());
    idx.select_nth_unstable_by(count - 1, |&a, &b| {
        w[a as usize]
            .abs()
            .total_cmp(&w[b as usize].abs())
            .then(a.cmp(&b))
    });
    for &i in &idx[..count] {
        w[i as usize] = 0.0;
    }
}

/// Unstructured magnitude pruning (see the module docs).
pub fn prune_magnitude(g: &mut Graph, o: &PruneOptions) -> Result<Vec<LayerSparsity>> {
    check_ratio("--prune", o.ratio)?;
    let ends = o.ends.unwrap_or(0.0);
    check_ratio("the ratio of the first and last layers", ends)?;
    for (name, r) in &o.overrides {
        check_ratio(&format!("the ratio for '{name}'"), *r)?;
        if !g.nodes.iter().any(|n| &n.name == name) {
            bail!("--prune-layer names '{name}', which is not a node of the model");
        }
    }
    let layers = weight_layers(g);
    if layers.is_empty() {
        bail!("the model has no layer with a constant f32 weight to prune");
    }
    let last = layers.len() - 1;
    let mut weights: Vec<Vec<f32>> = layers
        .iter()
        .map(|&(_, w, _)| f32s(g, w))
        .collect::<Result<_>>()?;
    // Each layer's own ratio, or None to take part in the global threshold.
    let own: Vec<Option<f32>> = layers
        .iter()
        .enumerate()
        .map(|(li, &(ni, _, _))| {
            let name = &g.nodes[ni].name;
            if let Some((_, r)) = o.overrides.iter().find(|(n, _)| n == name) {
                Some(*r)
            } else if layers.len() > 2 && (li == 0 || li == last) {
                Some(ends)
            } else if !o.global {
                Some(o.ratio)
            } else {
                None
            }
        })
        .collect();
    let total: usize = weights.iter().map(Vec::len).sum();
    let mut budget = (o.ratio as f64 * total as f64).round() as usize;
    for (w, r) in weights.iter_mut().zip(&own) {
        if let Some(r) = r {
            let k = (*r as f64 * w.len() as f64).round() as usize;
            zero_smallest(w, k);
            budget = budget.saturating_sub(k);
        }
    }
    if o.global {
        // One threshold over the remaining layers: the `budget` smallest
        // magnitudes among them.
        let mut mags: Vec<(f32, u32, u32)> = Vec::new();
        for (li, (w, r)) in weights.iter().zip(&own).enumerate() {
            if r.is_none() {
                mags.extend(
                    w.iter()
                        .enumerate()
                        .map(|(i, x)| (x.abs(), li as u32, i as u32)),
                );
            }
        }
        let k = budget.min(mags.len());
        if k > 0 {
            mags.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            for &(_, li, i) in &mags[..k] {
                weights[li as usize][i as usize] = 0.0;
            }
        }
    }
    let mut report = Vec::new();
    for (&(ni, w, _), data) in layers.iter().zip(weights) {
        let dims = g.values[w].konst.as_ref().expect("constant").dims.clone();
        report.push(LayerSparsity {
            node: g.nodes[ni].name.clone(),
            op: op_name(g.nodes[ni].op),
            params: data.len(),
            zeros: data.iter().filter(|x| **x == 0.0).count(),
        });
        set_weight(g, w, &dims, &data)?;
    }
    Ok(report)
}

/// Replace a weight constant in place for every node reading it (weights
/// are rewritten for all their readers alike).
fn set_weight(g: &mut Graph, w: ValueId, dims: &[usize], data: &[f32]) -> Result<()> {
    g.values[w].konst = Some(Tensor::from_slice(dims, data).map_err(|e| anyhow!("{e}"))?);
    Ok(())
}

/// N:M pruning: in every run of `m` consecutive weights along each output's
/// reduction axis keep the `n` largest magnitudes (a short tail run keeps
/// at most `n`). Layers named in `skip` are left alone.
pub fn prune_n_m(g: &mut Graph, n: usize, m: usize, skip: &[String]) -> Result<Vec<LayerSparsity>> {
    if n == 0 || m == 0 || n >= m {
        bail!("--n-m {n}:{m}: need 0 < N < M (e.g. 2:4)");
    }
    let mut report = Vec::new();
    for (ni, w, layout) in weight_layers(g) {
        let name = g.nodes[ni].name.clone();
        if skip.contains(&name) || layout.reduction() < m {
            continue;
        }
        let dims = g.values[w].konst.as_ref().expect("constant").dims.clone();
        let mut data = f32s(g, w)?;
        let mut run: Vec<(f32, usize)> = Vec::with_capacity(m);
        for o in 0..layout.outputs() {
            for start in (0..layout.reduction()).step_by(m) {
                run.clear();
                let end = (start + m).min(layout.reduction());
                run.extend((start..end).map(|r| {
                    let i = layout.at(o, r);
                    (data[i].abs(), i)
                }));
                run.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                for &(_, i) in run.iter().skip(n) {
                    data[i] = 0.0;
                }
            }
        }
        report.push(LayerSparsity {
            node: name,
            op: op_name(g.nodes[ni].op),
            params: data.len(),
            zeros: data.iter().filter(|x| **x == 0.0).count(),
        });
        set_weight(g, w, &dims, &data)?;
    }
    if report.is_empty() {
        bail!(
            "--n-m {n}:{m}: no layer has a constant f32 weight with at least {m} inputs per output"
        );
    }
    Ok(report)
}

// ------------------------------------------------------------ structured

/// A per-channel constant on the way from producer to consumers.
#[derive(Debug, Clone)]
pub struct Affine {
    pub node: usize,
    pub slot: usize,
    /// The axis of the constant that runs over channels.
    pub axis: usize,
}

/// Channels that can be removed together: the producer's outputs, the
/// channel-wise ops they flow through, and the layers that read them.
#[derive(Debug, Clone)]
pub struct ChannelGroup {
    pub producer: usize,
    pub channels: usize,
    /// The channel axis of the values between producer and consumers.
    pub axis: usize,
    /// Channel-wise nodes between producer and consumers, in graph order.
    pub passthrough: Vec<usize>,
    /// Per-channel constants of those nodes.
    pub affines: Vec<Affine>,
    /// Consumer layers (MatMul, Gemm, Conv) and the input they read.
    pub consumers: Vec<(usize, ValueId)>,
    /// What a channel of the consumers' input is when the producer's
    /// channel is zeroed (`act(0)` through the passthrough ops).
    pub konst: Vec<f32>,
    /// Channels that must stay: removing them would change the result
    /// (a nonzero constant reaching a zero-padded Conv or pool).
    pub pinned: Vec<bool>,
}

/// Why a producer layer's channels (or an attention block's heads,
/// [`crate::heads`]) cannot be removed.
#[derive(Debug, Clone)]
pub struct NotPrunable {
    pub node: String,
    pub reason: String,
}

const CHANNELWISE_UNARY: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Erf",
    "Identity",
    "Clip",
    "Elu",
    "Selu",
    "Softplus",
    "Softsign",
    "Abs",
    "Neg",
    "Exp",
];

/// The output channels of producer `p` and where they go, or why not.
fn trace_group(
    g: &Graph,
    cons: &[Vec<usize>],
    use_counts: &[usize],
    p: usize,
) -> std::result::Result<ChannelGroup, String> {
    let pn = &g.nodes[p];
    let op = op_name(pn.op);
    let (w, layout) = weight_of(g, pn).ok_or("no constant f32 weight")?;
    let out = pn.outputs[0];
    let rank = g.values[out].shape.len();
    let axis = match op {
        "MatMul" | "Gemm" if rank >= 2 => rank - 1,
        "Conv" if rank >= 3 => 1,
        _ => return Err(format!("{op} output of rank {rank}")),
    };
    if op == "Conv" && pn.attrs.int("group", 1).unwrap_or(1) != 1 {
        return Err("grouped Conv".into());
    }
    if op == "Gemm" && pn.attrs.int("transA", 0).unwrap_or(0) != 0 {
        return Err("Gemm with transA".into());
    }
    let channels = layout.outputs();
    if g.values[out].shape.get(axis).and_then(|d| d.known()) != Some(channels) {
        return Err("output channel count is not the weight's".into());
    }
    if use_counts[w] > 1 {
        return Err("its weight is shared with another node".into());
    }
    let mut group = ChannelGroup {
        producer: p,
        channels,
        axis,
        passthrough: Vec::new(),
        affines: Vec::new(),
        consumers: Vec::new(),
        konst: Vec::new(),
        pinned: vec![false; channels],
    };
    let mut needs_zero = false;
    let mut frontier = vec![out];
    while let Some(v) = frontier.pop() {
        if g.outputs.contains(&v) {
            return Err(format!("'{}' is a graph output", g.values[v].name));
        }
        if g.values[v].shape.len() != rank {
            return Err(format!("'{}' changes rank", g.values[v].name));
        }
        for &r in &cons[v] {
            let rn = &g.nodes[r];
            let rop = op_name(rn.op);
            let first = rn.inputs.first().copied().flatten() == Some(v);
            let reads_once = rn.inputs.iter().flatten().filter(|&&i| i == v).count() == 1;
            if !reads_once {
                return Err(format!("'{}' reads a channel value twice", rn.name));
            }
            let rw = weight_of(g, rn);
            match rop {
                _ if CHANNELWISE_UNARY.contains(&rop) && first => {
                    if rn.inputs[1..]
                        .iter()
                        .flatten()
                        .any(|&i| g.values[i].konst.is_none())
                    {
                        return Err(format!("'{}' has a non-constant parameter", rn.name));
                    }
                    group.passthrough.push(r);
                    frontier.push(rn.outputs[0]);
                }
                "Add" | "Sub" | "Mul" | "Div" => {
                    let other = rn
                        .inputs
                        .iter()
                        .flatten()
                        .copied()
                        .find(|&i| i != v)
                        .ok_or_else(|| format!("'{}' has one input", rn.name))?;
                    let slot = rn.inputs.iter().position(|&i| i == Some(other)).unwrap();
                    let t = g.values[other].konst.as_ref().ok_or_else(|| {
                        format!("'{}' joins it with a non-constant (residual)", rn.name)
                    })?;
                    if t.dims.len() > rank || t.dtype != DType::F32 {
                        return Err(format!("'{}' broadcasts it up", rn.name));
                    }
                    let off = rank - t.dims.len();
                    let per_channel = axis >= off && t.dims[axis - off] == channels && channels > 1;
                    for (i, &d) in t.dims.iter().enumerate() {
                        if d != 1 && !(per_channel && i + off == axis) {
                            return Err(format!(
                                "'{}' has a constant that is not per channel",
                                rn.name
                            ));
                        }
                    }
                    if per_channel {
                        // Sliced into a new constant for this node only.
                        group.affines.push(Affine {
                            node: r,
                            slot,
                            axis: axis - off,
                        });
                    }
                    group.passthrough.push(r);
                    frontier.push(rn.outputs[0]);
                }
                "MaxPool" | "GlobalAveragePool" | "GlobalMaxPool" | "AveragePool"
                    if first && axis == 1 =>
                {
                    if rop == "AveragePool" {
                        needs_zero = true;
                    }
                    group.passthrough.push(r);
                    frontier.push(rn.outputs[0]);
                }
                "MatMul" | "Gemm" if first && rw.is_some() && axis == rank - 1 => {
                    let (cw, cl) = rw.unwrap();
                    if rop == "Gemm" && rn.attrs.int("transA", 0).unwrap_or(0) != 0 {
                        return Err(format!("'{}' is a Gemm with transA", rn.name));
                    }
                    if cl.reduction() != channels || use_counts[cw] > 1 {
                        return Err(format!("'{}' weight does not match or is shared", rn.name));
                    }
                    group.consumers.push((r, v));
                }
                "Conv" if first && rw.is_some() && axis == 1 => {
                    let (cw, _) = rw.unwrap();
                    let wd = &g.values[cw].konst.as_ref().unwrap().dims;
                    if rn.attrs.int("group", 1).unwrap_or(1) != 1
                        || wd[1] != channels
                        || use_counts[cw] > 1
                    {
                        return Err(format!(
                            "'{}' is grouped, mismatched or shares its weight",
                            rn.name
                        ));
                    }
                    let pads = rn.attrs.ints("pads").ok().flatten().unwrap_or_default();
                    let auto = rn.attrs.string("auto_pad", "NOTSET").unwrap_or_default();
                    if pads.iter().any(|&p| p != 0) || !matches!(auto.as_str(), "NOTSET" | "VALID")
                    {
                        needs_zero = true;
                    }
                    group.consumers.push((r, v));
                }
                _ => return Err(format!("'{}' ({rop}) reads it", rn.name)),
            }
        }
    }
    if group.consumers.is_empty() {
        return Err("no consumer layer".into());
    }
    group.passthrough.sort_unstable();
    group.passthrough.dedup();
    // The value each channel takes when the producer's channel is zeroed.
    let mut k = vec![0f32; channels];
    Activation::from_attrs(&pn.attrs)
        .map_err(|e| e.to_string())?
        .apply(&mut k);
    let mut at: HashMap<ValueId, Vec<f32>> = HashMap::new();
    at.insert(out, k);
    for &r in &group.passthrough {
        let rn = &g.nodes[r];
        let rop = op_name(rn.op);
        let x = rn
            .inputs
            .iter()
            .flatten()
            .find_map(|i| at.get(i).cloned())
            .ok_or("passthrough order")?;
        let y = if rop.ends_with("Pool") {
            x
        } else {
            let mut dims = vec![1usize; rank];
            dims[axis] = channels;
            let xt = Tensor::from_slice(&dims, &x).map_err(|e| e.to_string())?;
            let ins: Vec<Option<Tensor>> = rn
                .inputs
                .iter()
                .map(|i| {
                    i.and_then(|i| {
                        if at.contains_key(&i) {
                            Some(xt.clone())
                        } else {
                            g.values[i].konst.clone()
                        }
                    })
                })
                .collect();
            let op = ops::build(rn).map_err(|e| e.to_string())?;
            let o = ops::eval_owned(&*op, &ins).map_err(|e| e.to_string())?;
            o[0].to_f32_vec().map_err(|e| e.to_string())?
        };
        if y.len() != channels {
            return Err(format!("'{}' changes the channel count", rn.name));
        }
        at.insert(rn.outputs[0], y);
    }
    let konst = at
        .get(&group.consumers[0].1)
        .cloned()
        .ok_or("consumer input")?;
    for &(_, v) in &group.consumers {
        if at.get(&v) != Some(&konst) {
            return Err("consumers see different constants".into());
        }
    }
    if needs_zero {
        for (pin, &c) in group.pinned.iter_mut().zip(&konst) {
            *pin = c != 0.0;
        }
    }
    group.konst = konst;
    Ok(group)
}

/// Every removable channel group of `g` (shapes are inferred first), and
/// every weight layer whose channels cannot be removed, with the reason.
pub fn channel_groups(g: &mut Graph) -> Result<(Vec<ChannelGroup>, Vec<NotPrunable>)> {
    g.infer_shapes()
        .map_err(|e| anyhow!("shape inference failed, cannot prune channels: {e}"))?;
    let mut cons = vec![Vec::new(); g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            if !cons[v].contains(&i) {
                cons[v].push(i);
            }
        }
    }
    let uses = g.use_counts();
    let mut groups = Vec::new();
    let mut not = Vec::new();
    for p in 0..g.nodes.len() {
        if weight_of(g, &g.nodes[p]).is_none() {
            continue;
        }
        match trace_group(g, &cons, &uses, p) {
            Ok(gr) => groups.push(gr),
            Err(reason) => not.push(NotPrunable {
                node: g.nodes[p].name.clone(),
                reason,
            }),
        }
    }
    Ok((groups, not))
}

/// How channels are ranked (lowest score goes first).
#[derive(Debug, Clone)]
pub enum Score {
    /// L1 norm of the producer's weights for the channel.
    L1,
    /// L2 norm of the producer's weights for the channel.
    L2,
    /// Mean |activation| of the channel at the consumers' input (from
    /// calibration data, by value id) times the L2 norm of the consumers'
    /// weights that read it: the channel's typical contribution.
    Activation(HashMap<ValueId, Vec<f64>>),
}

/// The channels to keep in each group: the best `1 - ratio` of them by
/// `score` (at least one), plus pinned ones, in ascending order.
pub fn select_channels(
    g: &Graph,
    groups: &[ChannelGroup],
    ratio: f32,
    score: &Score,
) -> Result<Vec<Vec<usize>>> {
    check_ratio("--prune-channels", ratio)?;
    let mut keeps = Vec::new();
    for gr in groups {
        let pn = &g.nodes[gr.producer];
        let (w, l) = weight_of(g, pn).expect("producer weight");
        let data = f32s(g, w)?;
        let norm = |o: usize, p: u8| -> f64 {
            let s: f64 = (0..l.reduction())
                .map(|r| {
                    let x = data[l.at(o, r)] as f64;
                    if p == 1 { x.abs() } else { x * x }
                })
                .sum();
            if p == 1 { s } else { s.sqrt() }
        };
        let scores: Vec<f64> = match score {
            Score::L1 => (0..gr.channels).map(|o| norm(o, 1)).collect(),
            Score::L2 => (0..gr.channels).map(|o| norm(o, 2)).collect(),
            Score::Activation(stats) => {
                let mut s = vec![0f64; gr.channels];
                for &(c, v) in &gr.consumers {
                    let act = stats.get(&v).ok_or_else(|| {
                        anyhow!("no activation statistics for '{}'", g.values[v].name)
                    })?;
                    let (cw, cl) = weight_of(g, &g.nodes[c]).expect("consumer weight");
                    let cd = f32s(g, cw)?;
                    // The consumer's weights for input channel ch: for a
                    // Conv [O, C, kh, kw] a slab per output.
                    let per = |ch: usize| -> f64 {
                        match cl {
                            Layout::KN { n, .. } => {
                                (0..n).map(|j| (cd[ch * n + j] as f64).powi(2)).sum()
                            }
                            Layout::NK { n, k } => {
                                let taps = k / gr.channels;
                                (0..n)
                                    .flat_map(|o| (0..taps).map(move |t| o * k + ch * taps + t))
                                    .map(|i| (cd[i] as f64).powi(2))
                                    .sum()
                            }
                        }
                    };
                    for ch in 0..gr.channels {
                        s[ch] += act[ch] * per(ch).sqrt();
                    }
                }
                s
            }
        };
        let keep_n = (((1.0 - ratio as f64) * gr.channels as f64).round() as usize).max(1);
        let mut order: Vec<usize> = (0..gr.channels).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut keep: Vec<usize> = order[..keep_n.min(gr.channels)].to_vec();
        for (c, &p) in gr.pinned.iter().enumerate() {
            if p && !keep.contains(&c) {
                keep.push(c);
            }
        }
        keep.sort_unstable();
        keeps.push(keep);
    }
    Ok(keeps)
}

fn take_along(data: &[f32], dims: &[usize], axis: usize, keep: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &c in keep {
            let s = (o * dims[axis] + c) * inner;
            out.extend_from_slice(&data[s..s + inner]);
        }
    }
    let mut nd = dims.to_vec();
    nd[axis] = keep.len();
    (nd, out)
}

fn const_dims(g: &Graph, node: usize, slot: usize) -> Result<Vec<usize>> {
    let v = g.nodes[node].inputs[slot].ok_or_else(|| anyhow!("missing input"))?;
    Ok(g.values[v]
        .konst
        .as_ref()
        .ok_or_else(|| anyhow!("not constant"))?
        .dims
        .clone())
}

/// The producer's bias input slot: Conv 2, MatMul 2 (fused), Gemm 2.
const BIAS: usize = 2;

/// The channel axis of a weight: output channels of a producer.
fn out_axis(l: Layout) -> usize {
    match l {
        Layout::KN { .. } => 1,
        Layout::NK { .. } => 0,
    }
}

/// Remove every channel of each group that is not in `keeps` (see the
/// module docs). Values' shapes are re-inferred.
pub fn remove_channels(g: &mut Graph, groups: &[ChannelGroup], keeps: &[Vec<usize>]) -> Result<()> {
    for (gr, keep) in groups.iter().zip(keeps) {
        if keep.len() == gr.channels {
            continue;
        }
        let dropped: Vec<usize> = (0..gr.channels).filter(|c| !keep.contains(c)).collect();
        // Producer weight along its output axis, and its bias.
        let p = gr.producer;
        let (_, l) = weight_of(g, &g.nodes[p]).expect("producer weight");
        let wd = const_dims(g, p, 1)?;
        let w = f32s(g, g.nodes[p].inputs[1].unwrap())?;
        let (nd, nw) = take_along(&w, &wd, out_axis(l), keep);
        replace_input(g, p, 1, &nd, &nw)?;
        if let Some(Some(b)) = g.nodes[p].inputs.get(BIAS).copied() {
            let bd = g.values[b].konst.as_ref().map(|t| t.dims.clone());
            match bd {
                Some(bd) if bd.iter().product::<usize>() == gr.channels => {
                    let bv = f32s(g, b)?;
                    let nb: Vec<f32> = keep.iter().map(|&c| bv[c]).collect();
                    let mut dims = bd.clone();
                    *dims.last_mut().unwrap() = keep.len();
                    if bd.len() > 1 && bd.last() != Some(&gr.channels) {
                        bail!("'{}': bias layout {:?} not understood", g.nodes[p].name, bd);
                    }
                    replace_input(g, p, BIAS, &dims, &nb)?;
                }
                Some(bd) if bd.iter().product::<usize>() == 1 => {}
                _ => bail!("'{}': bias is not a per-channel constant", g.nodes[p].name),
            }
        }
        for a in &gr.affines {
            let dims = const_dims(g, a.node, a.slot)?;
            let data = f32s(g, g.nodes[a.node].inputs[a.slot].unwrap())?;
            let (nd, nv) = take_along(&data, &dims, a.axis, keep);
            replace_input(g, a.node, a.slot, &nd, &nv)?;
        }
        for &(c, _) in &gr.consumers {
            let (_, cl) = weight_of(g, &g.nodes[c]).expect("consumer weight");
            let cd = const_dims(g, c, 1)?;
            let cw = f32s(g, g.nodes[c].inputs[1].unwrap())?;
            // Fold the dropped channels' constant into the consumer's bias.
            let outs = cl.outputs();
            let mut extra = vec![0f32; outs];
            let mut any = false;
            for &ch in &dropped {
                let k = gr.konst[ch];
                if k == 0.0 {
                    continue;
                }
                any = true;
                match cl {
                    Layout::KN { n, .. } => {
                        for j in 0..n {
                            extra[j] += k * cw[ch * n + j];
                        }
                    }
                    Layout::NK { k: red, .. } => {
                        let taps = red / gr.channels;
                        for (o, e) in extra.iter_mut().enumerate() {
                            *e += k * cw[o * red + ch * taps..o * red + (ch + 1) * taps]
                                .iter()
                                .sum::<f32>();
                        }
                    }
                }
            }
            let (nd, nw) = match cl {
                Layout::KN { .. } => take_along(&cw, &cd, 0, keep),
                Layout::NK { .. } => take_along(&cw, &cd, 1, keep),
            };
            replace_input(g, c, 1, &nd, &nw)?;
            if any {
                add_to_bias(g, c, &extra)?;
            }
        }
    }
    compact(g);
    reinfer(g)
}

/// `bias += extra` on a consumer layer, adding a bias input if it has none.
fn add_to_bias(g: &mut Graph, c: usize, extra: &[f32]) -> Result<()> {
    let op = op_name(g.nodes[c].op);
    if op == "Gemm" {
        let beta = g.nodes[c]
            .attrs
            .float("beta", 1.0)
            .map_err(|e| anyhow!("{e}"))?;
        if beta != 1.0 {
            // Fold beta into C so that extra can be added as is.
            if let Some(Some(b)) = g.nodes[c].inputs.get(BIAS).copied() {
                let dims = g.values[b]
                    .konst
                    .as_ref()
                    .ok_or_else(|| anyhow!("Gemm C is not constant"))?
                    .dims
                    .clone();
                let v: Vec<f32> = f32s(g, b)?.iter().map(|x| x * beta).collect();
                replace_input(g, c, BIAS, &dims, &v)?;
            }
            g.nodes[c].attrs.set("beta", Attr::Float(1.0));
        }
    }
    match g.nodes[c].inputs.get(BIAS).copied().flatten() {
        Some(b) => {
            let t = g.values[b]
                .konst
                .as_ref()
                .ok_or_else(|| anyhow!("bias is not constant"))?;
            let dims = t.dims.clone();
            let mut v = t.to_f32_vec().map_err(|e| anyhow!("{e}"))?;
            if v.len() == 1 {
                let s = v[0];
                v = vec![s; extra.len()];
            } else if v.len() != extra.len() {
                bail!(
                    "'{}': bias has {} values, expected {}",
                    g.nodes[c].name,
                    v.len(),
                    extra.len()
                );
            }
            for (x, e) in v.iter_mut().zip(extra) {
                *x += e;
            }
            let dims = if dims.iter().product::<usize>() == extra.len() {
                dims
            } else {
                vec![extra.len()]
            };
            replace_input(g, c, BIAS, &dims, &v)
        }
        None => {
            let name = g.fresh_name(&format!("{}_bias", g.nodes[c].name));
            let t = Tensor::from_slice(&[extra.len()], extra).map_err(|e| anyhow!("{e}"))?;
            let b = g.add_const(&name, t);
            let n = &mut g.nodes[c];
            while n.inputs.len() < BIAS {
                n.inputs.push(None);
            }
            n.inputs.truncate(BIAS);
            n.inputs.push(Some(b));
            Ok(())
        }
    }
}

/// The dense equivalent of [`remove_channels`]: the dropped channels'
/// producer weights and bias set to zero, nothing removed.
pub fn zero_channels(g: &mut Graph, groups: &[ChannelGroup], keeps: &[Vec<usize>]) -> Result<()> {
    for (gr, keep) in groups.iter().zip(keeps) {
        let p = gr.producer;
        let (_, l) = weight_of(g, &g.nodes[p]).expect("producer weight");
        let wd = const_dims(g, p, 1)?;
        let mut w = f32s(g, g.nodes[p].inputs[1].unwrap())?;
        for o in (0..gr.channels).filter(|c| !keep.contains(c)) {
            for r in 0..l.reduction() {
                w[l.at(o, r)] = 0.0;
            }
        }
        replace_input(g, p, 1, &wd, &w)?;
        if let Some(Some(b)) = g.nodes[p].inputs.get(BIAS).copied() {
            let bd = g.values[b]
                .konst
                .as_ref()
                .map(|t| t.dims.clone())
                .unwrap_or_default();
            let mut bv = f32s(g, b)?;
            if bv.len() == gr.channels {
                for c in (0..gr.channels).filter(|c| !keep.contains(c)) {
                    bv[c] = 0.0;
                }
                replace_input(g, p, BIAS, &bd, &bv)?;
            }
        }
    }
    compact(g);
    Ok(())
}

/// Re-derive every intermediate's shape after channel counts changed.
fn reinfer(g: &mut Graph) -> Result<()> {
    g.infer_shapes()
        .map_err(|e| anyhow!("shape inference after removing channels: {e}"))
}

/// Total and nonzero parameter counts of the weight layers.
pub fn parameters(g: &Graph) -> (usize, usize) {
    let mut total = 0;
    let mut nonzero = 0;
    for v in &g.values {
        if let Some(t) = &v.konst
            && (t.dtype.is_float() || t.dtype == DType::I8)
        {
            total += t.numel();
            nonzero += match t.dtype {
                DType::F32 => t
                    .as_slice::<f32>()
                    .map_or(0, |s| s.iter().filter(|x| **x != 0.0).count()),
                DType::I8 => t
                    .as_slice::<i8>()
                    .map_or(0, |s| s.iter().filter(|x| **x != 0).count()),
                _ => t.numel(),
            };
        }
    }
    (total, nonzero)
}
