//! Attention-head pruning (`morsel compress --prune-heads R`): whole heads
//! of multi-head self-attention are removed, so the Q, K and V projections,
//! the per-head products and the output projection all get smaller and the
//! model runs the same kernels on less work.
//!
//! The block is found in the form BERT exporters write (after import's
//! fusions, MiniLM's layers look exactly like this):
//!
//! ```text
//! q = MatMul(x, Wq[E, H·D] (+ bq))  → Reshape [.., .., H, D] → Transpose (0,2,1,3)
//! k = MatMul(x, Wk (+ bk))          → Reshape [.., .., H, D] → Transpose (0,2,3,1)
//! v = MatMul(x, Wv (+ bv))          → Reshape [.., .., H, D] → Transpose (0,2,1,3)
//! p = Softmax(MatMul(q, k) [+ mask broadcast over heads], axis -1)
//! y = MatMul(p, v) → Transpose (0,2,1,3) → Reshape [.., .., H·D] → MatMul(·, Wo[H·D, E'] (+ bo))
//! ```
//!
//! Head `h` is columns `h·D..(h+1)·D` of Wq, Wk, Wv (and their biases) and
//! rows `h·D..(h+1)·D` of Wo. Removing it takes those out and rewrites the
//! reshape targets (`H → H'`, `H·D → H'·D`). A head whose V columns and
//! bias are zero contributes exactly zero to `y` (its softmax rows sum to
//! one over zero vectors), which is what [`zero_heads`] does for the test
//! that the pruned model equals the dense one with those heads zeroed.
//! Heads are ranked by `‖Wv_h‖·‖Wo_h‖` (the size of what the head can
//! write), the lowest removed first. Anything that does not match (a mask
//! with a per-head axis, a shared weight, a value used elsewhere) is left
//! whole, with the reason.

use anyhow::{Result, anyhow};
use morsel_runtime::DType;

use crate::prune::{NotPrunable, f32s};
use morsel_runtime::graph::{Graph, ValueId};
use morsel_runtime::ops::op_name;
use morsel_runtime::tensor::{Dim, Tensor};

/// One attention block's nodes and its head layout.
#[derive(Debug, Clone)]
pub struct Attention {
    /// The Q, K and V projection MatMuls (weight `[E, H·D]`, input 2 an
    /// optional bias `[H·D]`).
    pub qkv: [usize; 3],
    /// The Reshapes to `[.., .., H, D]` after each projection.
    pub split: [usize; 3],
    /// The Reshape to `[.., .., H·D]` before the output projection.
    pub merge: usize,
    /// The output projection MatMul (weight `[H·D, E']`).
    pub out: usize,
    pub heads: usize,
    pub dim: usize,
}

type Found = std::result::Result<Attention, String>;

/// Every attention block of `g` in the form above (shapes are inferred
/// first), and the candidates that did not fit, with the reason. A
/// candidate is a MatMul of two computed values whose first input is a
/// Softmax.
pub fn attention_blocks(g: &mut Graph) -> Result<(Vec<Attention>, Vec<NotPrunable>)> {
    g.infer_shapes()
        .map_err(|e| anyhow!("shape inference failed, cannot prune heads: {e}"))?;
    let producers = g.producers();
    let uses = g.use_counts();
    let mut consumers = vec![Vec::new(); g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            consumers[v].push(i);
        }
    }
    let (mut found, mut not) = (Vec::new(), Vec::new());
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if op_name(n.op) != "MatMul" || n.inputs.len() != 2 {
            continue;
        }
        let (Some(Some(p)), Some(Some(_))) = (n.inputs.first(), n.inputs.get(1)) else {
            continue;
        };
        if producers[*p].is_none_or(|s| op_name(g.nodes[s].op) != "Softmax") {
            continue;
        }
        match block(g, &producers, &uses, &consumers, i) {
            Ok(a) => found.push(a),
            Err(reason) => not.push(NotPrunable {
                node: n.name.clone(),
                reason,
            }),
        }
    }
    Ok((found, not))
}

fn input(g: &Graph, node: usize, k: usize) -> Option<ValueId> {
    g.nodes[node].inputs.get(k).copied().flatten()
}

fn ints(g: &Graph, v: ValueId) -> Option<Vec<i64>> {
    let t = g.values[v].konst.as_ref()?;
    (t.dtype == DType::I64).then(|| t.to_i64_vec().ok())?
}

/// The attention block whose `softmax · V` product is node `ctx`.
fn block(
    g: &Graph,
    producers: &[Option<usize>],
    uses: &[usize],
    consumers: &[Vec<usize>],
    ctx: usize,
) -> Found {
    // `what`'s producer, if it is `op` and its output is used only here.
    let from = |v: ValueId, op: &str, what: &str| -> std::result::Result<usize, String> {
        let p = producers[v].ok_or_else(|| format!("{what} is not computed"))?;
        if op_name(g.nodes[p].op) != op {
            return Err(format!(
                "{what} comes from {}, not {op}",
                op_name(g.nodes[p].op)
            ));
        }
        if uses[v] != 1 || g.outputs.contains(&v) {
            return Err(format!("{what} is used elsewhere too"));
        }
        Ok(p)
    };
    let perm = |node: usize| g.nodes[node].attrs.ints("perm").ok().flatten();
    // The only consumer of `v`, if it is `op`.
    let next = |v: ValueId, op: &str, what: &str| -> std::result::Result<usize, String> {
        match consumers[v].as_slice() {
            [c] if op_name(g.nodes[*c].op) == op && !g.outputs.contains(&v) => Ok(*c),
            _ => Err(format!("{what} does not go only to a {op}")),
        }
    };
    // Transpose(perm) ← Reshape [.., .., H, D] ← MatMul(x, W[E, H·D] (+b)):
    // (projection, reshape, H, D).
    let branch = |v: ValueId,
                  want: &[i64],
                  what: &str|
     -> std::result::Result<(usize, usize, usize, usize), String> {
        let t = from(v, "Transpose", what)?;
        if perm(t).as_deref() != Some(want) {
            return Err(format!(
                "{what}: Transpose perm {:?}, not {want:?}",
                perm(t)
            ));
        }
        let r = from(input(g, t, 0).ok_or("no input")?, "Reshape", what)?;
        let spec = input(g, r, 1)
            .and_then(|s| ints(g, s))
            .ok_or_else(|| format!("{what}: the Reshape target is not a constant"))?;
        let [.., h, d] = spec[..] else {
            return Err(format!("{what}: Reshape target {spec:?}"));
        };
        if spec.len() != 4 || h <= 0 || d <= 0 {
            return Err(format!(
                "{what}: Reshape target {spec:?} is not [.., .., H, D]"
            ));
        }
        let (h, d) = (h as usize, d as usize);
        let m = from(input(g, r, 0).ok_or("no input")?, "MatMul", what)?;
        let w = input(g, m, 1).ok_or("no weight")?;
        match g.values[w].konst.as_ref() {
            Some(t) if t.dtype == DType::F32 && t.dims.len() == 2 && t.dims[1] == h * d => {}
            _ => {
                return Err(format!(
                    "{what}: the projection has no constant f32 [E, {}] weight",
                    h * d
                ));
            }
        }
        if uses[w] != 1 {
            return Err(format!("{what}: the projection weight is shared"));
        }
        if let Some(b) = input(g, m, 2)
            && (g.values[b]
                .konst
                .as_ref()
                .is_none_or(|t| t.numel() != h * d)
                || uses[b] != 1)
        {
            return Err(format!(
                "{what}: the projection bias is not a constant of its own"
            ));
        }
        Ok((m, r, h, d))
    };
    let (p, vh) = (
        input(g, ctx, 0).ok_or("no input")?,
        input(g, ctx, 1).ok_or("no input")?,
    );
    let (vm, vr, h, d) = branch(vh, &[0, 2, 1, 3], "V")?;
    let sm = from(p, "Softmax", "the attention weights")?;
    let axis = g.nodes[sm].attrs.int("axis", -1).unwrap_or(0);
    if axis != -1 && axis != 3 {
        return Err(format!("Softmax over axis {axis}"));
    }
    let mut s = input(g, sm, 0).ok_or("no input")?;
    if let Some(a) = producers[s].filter(|&a| op_name(g.nodes[a].op) == "Add") {
        // A mask added to the scores must broadcast over the heads.
        from(s, "Add", "the masked scores")?;
        let (x, y) = (
            input(g, a, 0).ok_or("no input")?,
            input(g, a, 1).ok_or("no input")?,
        );
        let (scores, mask) = if producers[x].is_some_and(|q| op_name(g.nodes[q].op) == "MatMul") {
            (x, y)
        } else {
            (y, x)
        };
        let ms = &g.values[mask].shape;
        if ms.len() >= 3 && ms[ms.len() - 3] != Dim::Known(1) {
            return Err("the mask has a per-head axis".into());
        }
        s = scores;
    }
    let qk = from(s, "MatMul", "the scores")?;
    let (qm, qr, hq, dq) = branch(input(g, qk, 0).ok_or("no input")?, &[0, 2, 1, 3], "Q")?;
    let (km, kr, hk, dk) = branch(input(g, qk, 1).ok_or("no input")?, &[0, 2, 3, 1], "K")?;
    if (hq, dq) != (h, d) || (hk, dk) != (h, d) {
        return Err(format!(
            "Q, K, V split differently: {hq}x{dq}, {hk}x{dk}, {h}x{d}"
        ));
    }
    let y = g.nodes[ctx].outputs[0];
    let t = next(y, "Transpose", "the heads' output")?;
    if perm(t).as_deref() != Some(&[0, 2, 1, 3][..]) {
        return Err(format!("the heads' output Transpose perm {:?}", perm(t)));
    }
    let merge = next(g.nodes[t].outputs[0], "Reshape", "the transposed heads")?;
    let spec = input(g, merge, 1)
        .and_then(|s| ints(g, s))
        .ok_or("the merging Reshape target is not a constant")?;
    if spec.len() != 3 || spec[2] != (h * d) as i64 {
        return Err(format!(
            "merging Reshape target {spec:?} is not [.., .., {}]",
            h * d
        ));
    }
    let out = next(g.nodes[merge].outputs[0], "MatMul", "the merged heads")?;
    let wo = input(g, out, 1).ok_or("no weight")?;
    match g.values[wo].konst.as_ref() {
        Some(t) if t.dtype == DType::F32 && t.dims.len() == 2 && t.dims[0] == h * d => {}
        _ => {
            return Err(format!(
                "the output projection has no constant f32 [{}, E] weight",
                h * d
            ));
        }
    }
    if uses[wo] != 1 || input(g, out, 0) != Some(g.nodes[merge].outputs[0]) {
        return Err("the output projection weight is shared or reads the heads second".into());
    }
    Ok(Attention {
        qkv: [qm, km, vm],
        split: [qr, kr, vr],
        merge,
        out,
        heads: h,
        dim: d,
    })
}

fn weight(g: &Graph, node: usize) -> Result<(ValueId, Vec<usize>)> {
    let w = input(g, node, 1).ok_or_else(|| anyhow!("'{}' has no weight", g.nodes[node].name))?;
    let dims = g.values[w]
        .konst
        .as_ref()
        .map(|t| t.dims.clone())
        .unwrap_or_default();
    Ok((w, dims))
}

/// The heads to keep in each block: the best `1 - ratio` by `‖Wv_h‖·‖Wo_h‖`
/// (at least one), in ascending order.
pub fn select_heads(g: &Graph, blocks: &[Attention], ratio: f32) -> Result<Vec<Vec<usize>>> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(anyhow!("--prune-heads must be in [0, 1), got {ratio}"));
    }
    let mut keeps = Vec::new();
    for a in blocks {
        let (wv, vd) = weight(g, a.qkv[2])?;
        let (wo, od) = weight(g, a.out)?;
        let (v, o) = (f32s(g, wv)?, f32s(g, wo)?);
        let (e, eo, d) = (vd[0], od[1], a.dim);
        let n = a.heads * d;
        let score = |h: usize| -> f64 {
            let vs: f64 = (0..e)
                .flat_map(|r| (h * d..(h + 1) * d).map(move |c| r * n + c))
                .map(|i| (v[i] as f64).powi(2))
                .sum();
            let os: f64 = o[h * d * eo..(h + 1) * d * eo]
                .iter()
                .map(|&x| (x as f64).powi(2))
                .sum();
            vs.sqrt() * os.sqrt()
        };
        let scores: Vec<f64> = (0..a.heads).map(score).collect();
        let keep_n = (((1.0 - ratio as f64) * a.heads as f64).round() as usize).clamp(1, a.heads);
        let mut order: Vec<usize> = (0..a.heads).collect();
        order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]).then(x.cmp(&y)));
        let mut keep = order[..keep_n].to_vec();
        keep.sort_unstable();
        keeps.push(keep);
    }
    Ok(keeps)
}

/// Columns (or rows) `h·D..(h+1)·D` of each kept head, in order.
fn head_index(keep: &[usize], d: usize) -> Vec<usize> {
    keep.iter().flat_map(|&h| h * d..(h + 1) * d).collect()
}

fn set(g: &mut Graph, v: ValueId, dims: &[usize], data: &[f32]) -> Result<()> {
    g.values[v].konst = Some(Tensor::from_slice(dims, data)?);
    g.values[v].shape = morsel_runtime::tensor::known_shape(dims);
    Ok(())
}

/// Remove every head not in `keeps[i]` from block `i`.
pub fn remove_heads(g: &mut Graph, blocks: &[Attention], keeps: &[Vec<usize>]) -> Result<()> {
    for (a, keep) in blocks.iter().zip(keeps) {
        if keep.len() == a.heads {
            continue;
        }
        let cols = head_index(keep, a.dim);
        let n = a.heads * a.dim;
        for &m in &a.qkv {
            let (w, dims) = weight(g, m)?;
            let x = f32s(g, w)?;
            let e = dims[0];
            let x = &x;
            let y: Vec<f32> = (0..e)
                .flat_map(|r| cols.iter().map(move |&c| x[r * n + c]))
                .collect();
            set(g, w, &[e, cols.len()], &y)?;
            if let Some(b) = input(g, m, 2) {
                let x = f32s(g, b)?;
                let y: Vec<f32> = cols.iter().map(|&c| x[c]).collect();
                set(g, b, &[cols.len()], &y)?;
            }
        }
        let (wo, od) = weight(g, a.out)?;
        let x = f32s(g, wo)?;
        let eo = od[1];
        let y: Vec<f32> = cols
            .iter()
            .flat_map(|&r| x[r * eo..(r + 1) * eo].iter().copied())
            .collect();
        set(g, wo, &[cols.len(), eo], &y)?;
        // New targets (a shape constant may be shared with other nodes).
        for (k, &r) in a.split.iter().enumerate() {
            let s = input(g, r, 1).ok_or_else(|| anyhow!("reshape without a target"))?;
            let mut spec = ints(g, s).ok_or_else(|| anyhow!("reshape target is not constant"))?;
            spec[2] = keep.len() as i64;
            let name = format!("{}_heads{}", g.values[s].name, ["q", "k", "v"][k]);
            let c = g.add_const(&name, Tensor::from_slice(&[4], &spec)?);
            g.nodes[r].inputs[1] = Some(c);
        }
        let s = input(g, a.merge, 1).ok_or_else(|| anyhow!("reshape without a target"))?;
        let mut spec = ints(g, s).ok_or_else(|| anyhow!("reshape target is not constant"))?;
        spec[2] = cols.len() as i64;
        let name = format!("{}_heads", g.values[s].name);
        let c = g.add_const(&name, Tensor::from_slice(&[3], &spec)?);
        g.nodes[a.merge].inputs[1] = Some(c);
    }
    crate::passes::eliminate_dead(g)?;
    g.infer_shapes()
        .map_err(|e| anyhow!("shape inference after removing heads: {e}"))?;
    Ok(())
}

/// Zero the V columns and bias of every head not in `keeps[i]` (the heads
/// then add nothing): the dense model [`remove_heads`] must equal.
pub fn zero_heads(g: &mut Graph, blocks: &[Attention], keeps: &[Vec<usize>]) -> Result<()> {
    for (a, keep) in blocks.iter().zip(keeps) {
        let gone: Vec<usize> = (0..a.heads).filter(|h| !keep.contains(h)).collect();
        let cols = head_index(&gone, a.dim);
        let n = a.heads * a.dim;
        let m = a.qkv[2];
        let (w, dims) = weight(g, m)?;
        let mut x = f32s(g, w)?;
        for r in 0..dims[0] {
            for &c in &cols {
                x[r * n + c] = 0.0;
            }
        }
        set(g, w, &dims, &x)?;
        if let Some(b) = input(g, m, 2) {
            let mut x = f32s(g, b)?;
            for &c in &cols {
                x[c] = 0.0;
            }
            set(g, b, &[n], &x)?;
        }
    }
    Ok(())
}
