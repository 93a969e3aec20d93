//! Low-rank factorization: a weight `W` is replaced by two thinner factors
//! from its truncated SVD, `W ≈ (U_r √S_r)(√S_r V_rᵀ)`.
//!
//! - `MatMul(x, W[K, N], b)` (and `Gemm` without `transA`) becomes
//!   `MatMul(MatMul(x, A[K, r]), B[r, N], b)`; the bias and a fused
//!   activation stay on the second node.
//! - `Conv(x, W[O, I, kh, kw], b)` with one group becomes a `kh×kw` Conv to
//!   `r` channels (same strides, pads, dilations) followed by a `1×1` Conv to
//!   `O` with the bias and activation.
//!
//! The rank keeps the smallest `r` whose singular values hold the asked
//! share of `Σσ²` (`--low-rank 0.95`), or a fixed share of the full rank
//! (`--rank-ratio 0.5`). A layer is factorized only when `r·(K + N) <
//! K·N`, i.e. when it saves both parameters and multiply-adds; weights with
//! zeros from pruning (≥ 10%) are left alone (the factors would be dense).
//! The SVD runs in f64 with faer. With calibration statistics
//! ([`LowRankOptions::input_stats`]) the SVD is weighted by the typical size
//! of each input channel, as ASVD does (Yuan et al., 2023): the truncation
//! then removes directions the data rarely excites.

use anyhow::{Result, anyhow, bail};
use morsel_runtime::DType;
use morsel_runtime::graph::{Attrs, Graph, Node};
use morsel_runtime::ops::{op_id, op_name};
use morsel_runtime::tensor::Tensor;

use crate::passes::compact;

/// How the rank is chosen.
#[derive(Debug, Clone, Copy)]
pub enum Rank {
    /// Keep this share of the squared singular values (0..=1).
    Energy(f64),
    /// Keep this share of `min(K, N)` singular values.
    Ratio(f64),
}

#[derive(Debug, Clone)]
pub struct LowRankOptions {
    pub rank: Rank,
    /// Node names left alone.
    pub skip: Vec<String>,
    /// Weights with fewer elements are left alone.
    pub min_size: usize,
    /// Activation-aware factorization: mean |input| per input channel of a
    /// layer, by node name (from calibration data); the SVD is taken of
    /// `diag(s^alpha)·W` (rows are inputs; a Conv's columns) and the scale
    /// undone in the first factor. Layers without statistics use plain SVD.
    pub input_stats: std::collections::HashMap<String, Vec<f64>>,
    /// The exponent on the statistics (ASVD uses 0.5).
    pub alpha: f64,
}

/// One layer's outcome.
#[derive(Debug, Clone)]
pub struct Factorized {
    pub node: String,
    pub op: &'static str,
    /// `[rows, cols]` of the matrix factorized (`[K, N]`, or `[O, I·kh·kw]`).
    pub shape: [usize; 2],
    pub rank: usize,
    pub params_before: usize,
    pub params_after: usize,
    /// Share of `Σσ²` kept.
    pub energy: f64,
    /// `‖W − W_r‖ / ‖W‖`.
    pub rel_error: f64,
}

/// A layer left dense, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct LowRankReport {
    pub factorized: Vec<Factorized>,
    pub skipped: Vec<Skipped>,
}

/// The truncated factors of a row-major `rows × cols` matrix: `a` is
/// `rows × r` (`U√S`), `b` is `r × cols` (`√S Vᵀ`), both row-major.
struct Factors {
    rank: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    energy: f64,
    rel_error: f64,
}

/// Per-row or per-column weights of the SVD (activation-aware: the typical
/// size of the input each row or column meets).
#[derive(Clone, Copy)]
enum Scale<'a> {
    None,
    Rows(&'a [f64]),
    Cols(&'a [f64]),
}

fn factor(m: &[f32], rows: usize, cols: usize, rank: Rank, scale: Scale) -> Result<Factors> {
    let rs = |i: usize| match scale {
        Scale::Rows(s) => s[i],
        _ => 1.0,
    };
    let cs_of = |j: usize| match scale {
        Scale::Cols(s) => s[j],
        _ => 1.0,
    };
    let mat =
        faer::Mat::<f64>::from_fn(rows, cols, |i, j| m[i * cols + j] as f64 * rs(i) * cs_of(j));
    let svd = mat
        .thin_svd()
        .map_err(|e| anyhow!("SVD did not converge: {e:?}"))?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let full = rows.min(cols);
    let sig: Vec<f64> = (0..full).map(|i| s[i]).collect();
    let total: f64 = sig.iter().map(|x| x * x).sum();
    let r = match rank {
        Rank::Ratio(q) => ((q * full as f64).ceil() as usize).clamp(1, full),
        Rank::Energy(e) => {
            let mut acc = 0.0;
            let mut r = full;
            for (i, x) in sig.iter().enumerate() {
                acc += x * x;
                if acc >= e * total {
                    r = i + 1;
                    break;
                }
            }
            r.max(1)
        }
    };
    let kept: f64 = sig[..r].iter().map(|x| x * x).sum();
    let mut a = vec![0f32; rows * r];
    let mut b = vec![0f32; r * cols];
    for k in 0..r {
        let root = sig[k].sqrt();
        for i in 0..rows {
            a[i * r + k] = (u[(i, k)] * root / rs(i)) as f32;
        }
        for j in 0..cols {
            b[k * cols + j] = (v[(j, k)] * root / cs_of(j)) as f32;
        }
    }
    let energy = if total > 0.0 { kept / total } else { 1.0 };
    let rel_error = match scale {
        Scale::None => (1.0 - energy).max(0.0).sqrt(),
        // The weight's own error, not the scaled matrix's.
        _ => {
            let (mut e, mut n) = (0f64, 0f64);
            for i in 0..rows {
                for j in 0..cols {
                    let w = m[i * cols + j] as f64;
                    let p: f64 = (0..r)
                        .map(|k| a[i * r + k] as f64 * b[k * cols + j] as f64)
                        .sum();
                    e += (w - p) * (w - p);
                    n += w * w;
                }
            }
            if n > 0.0 { (e / n).sqrt() } else { 0.0 }
        }
    };
    Ok(Factors {
        rank: r,
        a,
        b,
        energy,
        rel_error,
    })
}

fn konst(g: &Graph, n: &Node, slot: usize) -> Option<Tensor> {
    let t = g.values[n.inputs.get(slot).copied()??].konst.clone()?;
    (t.dtype == DType::F32).then_some(t)
}

/// Factorize every MatMul, Gemm and Conv weight where it pays (see the
/// module docs).
pub fn factorize(g: &mut Graph, o: &LowRankOptions) -> Result<LowRankReport> {
    match o.rank {
        Rank::Energy(e) if !(e > 0.0 && e <= 1.0) => bail!("--low-rank must be in (0, 1], got {e}"),
        Rank::Ratio(q) if !(q > 0.0 && q <= 1.0) => {
            bail!("--rank-ratio must be in (0, 1], got {q}")
        }
        _ => {}
    }
    for name in &o.skip {
        if !g.nodes.iter().any(|n| &n.name == name) {
            bail!("'{name}' is not a node of the model");
        }
    }
    let uses = g.use_counts();
    let mut report = LowRankReport::default();
    let nodes = std::mem::take(&mut g.nodes);
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let op = op_name(node.op);
        if !matches!(op, "MatMul" | "Gemm" | "Conv") {
            out.push(node);
            continue;
        }
        let Some(w) = konst(g, &node, 1) else {
            out.push(node);
            continue;
        };
        let skip = |report: &mut LowRankReport, node: Node, out: &mut Vec<Node>, why: String| {
            report.skipped.push(Skipped {
                node: node.name.clone(),
                reason: why,
            });
            out.push(node);
        };
        if o.skip.contains(&node.name) {
            skip(&mut report, node, &mut out, "named in the skip list".into());
            continue;
        }
        if w.numel() < o.min_size {
            skip(
                &mut report,
                node,
                &mut out,
                format!("fewer than {} weights", o.min_size),
            );
            continue;
        }
        if uses[node.inputs[1].unwrap()] > 1 {
            skip(&mut report, node, &mut out, "its weight is shared".into());
            continue;
        }
        let data = w.to_f32_vec().map_err(|e| anyhow!("{e}"))?;
        let zeros = data.iter().filter(|x| **x == 0.0).count();
        if zeros * 10 >= data.len() {
            skip(&mut report, node, &mut out, "pruned (≥ 10% zeros)".into());
            continue;
        }
        // The matrix to factorize, row-major, and its orientation.
        let (rows, cols, mat) = match op {
            "MatMul" if w.dims.len() == 2 => (w.dims[0], w.dims[1], data),
            "Gemm" => {
                if node.attrs.int("transA", 0).map_err(|e| anyhow!("{e}"))? != 0 {
                    skip(&mut report, node, &mut out, "Gemm with transA".into());
                    continue;
                }
                let alpha = node.attrs.float("alpha", 1.0).map_err(|e| anyhow!("{e}"))?;
                let trans_b = node.attrs.int("transB", 0).map_err(|e| anyhow!("{e}"))? != 0;
                let (k, n) = if trans_b {
                    (w.dims[1], w.dims[0])
                } else {
                    (w.dims[0], w.dims[1])
                };
                let mut m = vec![0f32; k * n];
                if trans_b {
                    // B is [N, K]
                    for i in 0..n {
                        for j in 0..k {
                            m[j * n + i] = alpha * data[i * k + j];
                        }
                    }
                    (k, n, m)
                } else {
                    m.iter_mut().zip(&data).for_each(|(d, s)| *d = alpha * s);
                    (w.dims[0], w.dims[1], m)
                }
            }
            "Conv" if w.dims.len() >= 3 => {
                if node.attrs.int("group", 1).map_err(|e| anyhow!("{e}"))? != 1 {
                    skip(&mut report, node, &mut out, "grouped Conv".into());
                    continue;
                }
                (w.dims[0], w.numel() / w.dims[0], data)
            }
            _ => {
                skip(
                    &mut report,
                    node,
                    &mut out,
                    format!("{op} weight of rank {}", w.dims.len()),
                );
                continue;
            }
        };
        // Activation-aware: weight the inputs by their typical size, so the
        // truncation spends its error where inputs are small (ASVD).
        let stats = o.input_stats.get(&node.name).map(|s| {
            let max = s.iter().fold(0f64, |m, &x| m.max(x));
            s.iter()
                .map(|&x| x.max(max * 1e-6).max(f64::MIN_POSITIVE).powf(o.alpha))
                .collect::<Vec<f64>>()
        });
        let expanded;
        let scale = match (&stats, op) {
            (Some(s), "Conv") if cols % s.len().max(1) == 0 => {
                let taps = cols / s.len();
                expanded = s
                    .iter()
                    .flat_map(|&x| std::iter::repeat_n(x, taps))
                    .collect::<Vec<_>>();
                Scale::Cols(&expanded)
            }
            (Some(s), "MatMul" | "Gemm") if s.len() == rows => Scale::Rows(s),
            (Some(s), _) => bail!(
                "'{}': {} input statistics for a {rows}×{cols} weight",
                node.name,
                s.len()
            ),
            (None, _) => Scale::None,
        };
        let f = factor(&mat, rows, cols, o.rank, scale)?;
        let (before, after) = (rows * cols, f.rank * (rows + cols));
        if after >= before {
            skip(
                &mut report,
                node,
                &mut out,
                format!(
                    "rank {} of {}: two factors would not be smaller",
                    f.rank,
                    rows.min(cols)
                ),
            );
            continue;
        }
        let mid_name = g.fresh_name(&format!("{}_lowrank", node.name));
        let mid = g.add_value(&mid_name, DType::F32, Vec::new());
        let (first, second) = if op == "Conv" {
            // kh×kw conv to r channels (rows of √S Vᵀ), then 1×1 to O (U√S).
            let mut d1 = w.dims.clone();
            d1[0] = f.rank;
            let w1 = g.add_const(
                &format!("{mid_name}_w1"),
                Tensor::from_slice(&d1, &f.b).map_err(|e| anyhow!("{e}"))?,
            );
            let mut d2 = vec![rows, f.rank];
            d2.extend(std::iter::repeat_n(1, w.dims.len() - 2));
            let w2 = g.add_const(
                &format!("{mid_name}_w2"),
                Tensor::from_slice(&d2, &f.a).map_err(|e| anyhow!("{e}"))?,
            );
            let mut a1 = Attrs::new();
            for key in ["strides", "pads", "dilations", "auto_pad", "kernel_shape"] {
                if let Some(v) = node.attrs.get(key) {
                    a1.set(key, v.clone());
                }
            }
            let mut a2 = node.attrs.clone();
            for key in [
                "strides",
                "pads",
                "dilations",
                "auto_pad",
                "kernel_shape",
                "group",
            ] {
                a2.0.remove(key);
            }
            let first = Node {
                name: format!("{}_lr1", node.name),
                op: node.op,
                attrs: a1,
                inputs: vec![node.inputs[0], Some(w1)],
                outputs: vec![mid],
            };
            let mut inputs = vec![Some(mid), Some(w2)];
            inputs.extend(node.inputs.iter().skip(2).copied());
            (
                first,
                Node {
                    name: format!("{}_lr2", node.name),
                    op: node.op,
                    attrs: a2,
                    inputs,
                    outputs: node.outputs.clone(),
                },
            )
        } else {
            // x·A then ·B (+ bias, activation): A = U√S [K, r], B = √S Vᵀ [r, N].
            let matmul = op_id("MatMul").ok_or_else(|| anyhow!("no MatMul op"))?;
            let w1 = g.add_const(
                &format!("{mid_name}_a"),
                Tensor::from_slice(&[rows, f.rank], &f.a).map_err(|e| anyhow!("{e}"))?,
            );
            let w2 = g.add_const(
                &format!("{mid_name}_b"),
                Tensor::from_slice(&[f.rank, cols], &f.b).map_err(|e| anyhow!("{e}"))?,
            );
            let first = Node {
                name: format!("{}_lr1", node.name),
                op: matmul,
                attrs: Attrs::new(),
                inputs: vec![node.inputs[0], Some(w1)],
                outputs: vec![mid],
            };
            let mut attrs = Attrs::new();
            for (k, v) in &node.attrs.0 {
                if k.starts_with("activation") {
                    attrs.set(k, v.clone());
                }
            }
            let mut inputs = vec![Some(mid), Some(w2)];
            let bias = node.inputs.get(2).copied().flatten();
            if let Some(b) = bias {
                let bt = g.values[b]
                    .konst
                    .clone()
                    .ok_or_else(|| anyhow!("'{}': bias is not constant", node.name))?;
                let mut bv = bt.to_f32_vec().map_err(|e| anyhow!("{e}"))?;
                if op == "Gemm" {
                    let beta = node.attrs.float("beta", 1.0).map_err(|e| anyhow!("{e}"))?;
                    bv.iter_mut().for_each(|x| *x *= beta);
                }
                if bv.len() == 1 {
                    bv = vec![bv[0]; cols];
                }
                if bv.len() != cols {
                    // A Gemm C of another shape: keep the layer as it is.
                    report.skipped.push(Skipped {
                        node: node.name.clone(),
                        reason: "bias is not [N]".into(),
                    });
                    out.push(node);
                    continue;
                }
                let bn = g.fresh_name(&format!("{mid_name}_bias"));
                inputs.push(Some(g.add_const(
                    &bn,
                    Tensor::from_slice(&[cols], &bv).map_err(|e| anyhow!("{e}"))?,
                )));
            }
            (
                first,
                Node {
                    name: format!("{}_lr2", node.name),
                    op: matmul,
                    attrs,
                    inputs,
                    outputs: node.outputs.clone(),
                },
            )
        };
        report.factorized.push(Factorized {
            node: node.name.clone(),
            op,
            shape: [rows, cols],
            rank: f.rank,
            params_before: before,
            params_after: after,
            energy: f.energy,
            rel_error: f.rel_error,
        });
        out.push(first);
        out.push(second);
    }
    g.nodes = out;
    compact(g);
    g.infer_shapes()
        .map_err(|e| anyhow!("shape inference after factorizing: {e}"))?;
    Ok(report)
}
