//! Fusion passes: rewrite the primitive-op spellings that exporters emit
//! into the fused forms the runtime's kernels run in one pass.
//!
//! - [`fuse_layer_norm`]: `(x - mean(x))/sqrt(mean((x - mean(x))²) + ε)·γ + β`
//!   over the last axis, as older exporters (opset < 17, Paddle's p2o) spell
//!   it in ReduceMean/Sub/Pow/Add/Sqrt/Div/Mul/Add, becomes one
//!   `LayerNormalization`.
//! - [`fuse_gelu`]: `x·½·(1 + erf(x/√2))` in its usual orders (Div by √2 or
//!   Mul by 1/√2; the ½ on either side) becomes one `Gelu`.
//! - [`fuse_hard_swish`]: `x·clip(x + 3, 0, 6)/6` (MobileNetV3 and PP-OCR
//!   exports; also `x·(clip(x + 3, 0, 6)/6)`) becomes one `HardSwish`.
//! - [`fold_conv_affine`]: a constant scale and/or shift (scalar or per
//!   output channel) right after a Conv, as exporters write learnable
//!   affine blocks and un-folded norms, is folded into its weight and bias.
//! - [`fuse_bias`]: `MatMul(x, W) + b` with constant `W` [K, N] and `b` [N]
//!   (or [1, …, N]) becomes `MatMul(x, W, b)`: the kernel starts its
//!   accumulators from the bias.
//! - [`fuse_activation`]: an activation (Relu, LeakyRelu, Sigmoid, Tanh,
//!   HardSigmoid, HardSwish, Clip with constant bounds, Gelu) right after a
//!   MatMul, Gemm, Conv or ConvTranspose becomes that node's `activation`
//!   attribute, applied to each finished block of output while it is in cache.
//! - [`fuse_post_affine`]: a constant scalar Mul and/or Add right after such
//!   a fused unary activation (PP-LCNet's learnable affine block after each
//!   HardSwish) becomes `activation_scale` / `activation_shift`.
//!
//! Every pass only fires when the intermediate values have no other reader
//! and are not graph outputs, so results are unchanged up to float rounding
//! (the fused GELU uses the runtime's erf; tested end to end against ONNX
//! Runtime on MiniLM, and pattern by pattern in tests/fusion.rs).
//!
//! The importer gives node outputs placeholder types (f32, rank 0) until
//! shape inference, so each pass first infers every value's dtype and shape
//! (the checks below need them: a fused activation only exists for f32, and
//! neither a bias nor the "scalar" constants of GELU, HardSwish or a Conv
//! affine may raise the output's rank). When inference fails, the pass
//! changes nothing.

use anyhow::Result;
use morsel_runtime::DType;
use morsel_runtime::graph::{Attr, Graph, Node, ValueId};
use morsel_runtime::ops::{OpId, op_id};
use morsel_runtime::tensor::Tensor;

use crate::passes::{ConvWeight, Report, compact};

/// All fusions, in the order they compose (bias before activation).
pub fn fuse_all(g: &mut Graph) -> Result<Vec<Report>> {
    Ok(vec![
        fuse_layer_norm(g)?,
        fuse_gelu(g)?,
        fuse_hard_swish(g)?,
        fold_conv_affine(g)?,
        // again: a BatchNormalization after a conv's separate bias Add
        // (paddle2onnx's ConvTranspose → Add → BatchNormalization)
        crate::passes::fold_batch_norm(g)?,
        fuse_bias(g)?,
        fuse_activation(g)?,
        fuse_post_affine(g)?,
    ])
}

/// Who reads each value: node indices.
pub(crate) fn consumers(g: &Graph) -> Vec<Vec<usize>> {
    let mut c = vec![Vec::new(); g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            if !c[v].contains(&i) {
                c[v].push(i);
            }
        }
    }
    c
}

/// A constant f32 scalar (any shape with one element).
fn scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let t = g.values[v].konst.as_ref()?;
    if t.dtype != DType::F32 || t.numel() != 1 {
        return None;
    }
    t.to_f32_vec().ok().map(|v| v[0])
}

fn near(x: f32, want: f32) -> bool {
    (x - want).abs() <= 1e-4 * want.abs()
}

/// The binary node `i`'s (other input, scalar) when one input is a
/// constant scalar near `want`.
fn with_scalar(g: &Graph, n: &Node, want: f32) -> Option<ValueId> {
    let (a, b) = (n.inputs.first().copied()??, n.inputs.get(1).copied()??);
    if scalar(g, b).is_some_and(|s| near(s, want)) {
        Some(a)
    } else if scalar(g, a).is_some_and(|s| near(s, want)) {
        Some(b)
    } else {
        None
    }
}

/// The single reader of `v` if there is exactly one (and `v` is not an output).
fn only_reader(g: &Graph, cons: &[Vec<usize>], v: ValueId) -> Option<usize> {
    (cons[v].len() == 1 && !g.outputs.contains(&v)).then(|| cons[v][0])
}

fn is(n: &Node, op: Option<OpId>) -> bool {
    Some(n.op) == op
}

/// Give every value its real dtype and shape; false when inference fails.
fn typed(g: &mut Graph) -> bool {
    g.infer_shapes().is_ok()
}

/// Drop the values no node refers to any more, and report `changed`.
fn compacted(g: &mut Graph, pass: &'static str, changed: usize) -> Result<Report> {
    compact(g);
    Ok(Report { pass, changed })
}

fn unchanged(pass: &'static str) -> Result<Report> {
    Ok(Report { pass, changed: 0 })
}

/// A one-input node.
fn unary(name: String, op: OpId, x: ValueId, out: ValueId) -> Node {
    Node {
        name,
        op,
        attrs: Default::default(),
        inputs: vec![Some(x)],
        outputs: vec![out],
    }
}

/// Replace a matched pattern's `nodes` by `node`, which takes the place of
/// the pattern's last node (its inputs are computed before that), marking
/// the others dead. False, changing nothing, when a node of the pattern is
/// already part of another.
fn collapse(g: &mut Graph, dead: &mut [bool], nodes: &[usize], node: Node) -> bool {
    let Some(&last) = nodes.iter().max() else {
        return false;
    };
    if nodes.iter().any(|&n| dead[n]) {
        return false;
    }
    for &n in nodes {
        dead[n] = true;
    }
    dead[last] = false;
    g.nodes[last] = node;
    true
}

/// Remove the marked nodes and the values only they referred to.
fn drop_nodes(g: &mut Graph, dead: &[bool]) {
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !dead[i - 1]
    });
    compact(g);
}

/// `x·½·(1 + erf(x/√2))` → `Gelu(x)`.
pub fn fuse_gelu(g: &mut Graph) -> Result<Report> {
    let (erf, div, mul, add) = (op_id("Erf"), op_id("Div"), op_id("Mul"), op_id("Add"));
    let Some(gelu) = op_id("Gelu") else {
        return unchanged("fuse-gelu");
    };
    if !typed(g) {
        return unchanged("fuse-gelu");
    }
    let producers = g.producers();
    let cons = consumers(g);
    let mut dead = vec![false; g.nodes.len()];
    let mut changed = 0;
    for e in 0..g.nodes.len() {
        if !is(&g.nodes[e], erf) {
            continue;
        }
        let Some(found) = (|| {
            let e_in = g.nodes[e].inputs.first().copied()??;
            let s = producers[e_in]?;
            only_reader(g, &cons, e_in)?;
            let sn = &g.nodes[s];
            let x = if is(sn, div) {
                // x / √2: the divisor must be the second input.
                let d = sn.inputs.get(1).copied()??;
                near(scalar(g, d)?, std::f32::consts::SQRT_2).then_some(())?;
                sn.inputs.first().copied()??
            } else if is(sn, mul) {
                with_scalar(g, sn, std::f32::consts::FRAC_1_SQRT_2)?
            } else {
                return None;
            };
            let e_out = g.nodes[e].outputs[0];
            let a = only_reader(g, &cons, e_out)?;
            if !is(&g.nodes[a], add) || with_scalar(g, &g.nodes[a], 1.0)? != e_out {
                return None;
            }
            let a_out = g.nodes[a].outputs[0];
            let m1 = only_reader(g, &cons, a_out)?;
            if !is(&g.nodes[m1], mul) {
                return None;
            }
            let m1n = &g.nodes[m1];
            let m1_out = m1n.outputs[0];
            let ins = [m1n.inputs.first().copied()??, m1n.inputs.get(1).copied()??];
            let other = if ins[0] == a_out { ins[1] } else { ins[0] };
            // The ½ goes on x first, on (1+erf) first, or on the product.
            let mut nodes = vec![s, e, a, m1];
            let out = if other == x {
                // (x · (1+erf)) · ½
                let m2 = only_reader(g, &cons, m1_out)?;
                if !is(&g.nodes[m2], mul) || with_scalar(g, &g.nodes[m2], 0.5)? != m1_out {
                    return None;
                }
                nodes.push(m2);
                g.nodes[m2].outputs[0]
            } else if let Some(h) = producers[other]
                && is(&g.nodes[h], mul)
                && with_scalar(g, &g.nodes[h], 0.5) == Some(x)
                && only_reader(g, &cons, other).is_some()
            {
                // (x · ½) · (1+erf)
                nodes.push(h);
                m1_out
            } else if other == a_out {
                return None;
            } else {
                // ((1+erf) · ½) · x : then m1 is (1+erf)·½ and its reader multiplies by x.
                if with_scalar(g, m1n, 0.5)? != a_out {
                    return None;
                }
                let m2 = only_reader(g, &cons, m1_out)?;
                let m2n = &g.nodes[m2];
                let ins2 = [m2n.inputs.first().copied()??, m2n.inputs.get(1).copied()??];
                if !is(m2n, mul) || !ins2.contains(&x) || !ins2.contains(&m1_out) {
                    return None;
                }
                nodes.push(m2);
                m2n.outputs[0]
            };
            // The constants are one-element tensors of any rank: one of rank
            // above x's broadcasts the result up to it, which Gelu(x) would not.
            (g.values[out].shape.len() == g.values[x].shape.len()).then_some(())?;
            // x itself may have other readers; every other intermediate has one.
            Some((x, out, nodes))
        })() else {
            continue;
        };
        let (x, out, nodes) = found;
        let name = format!("{}_gelu", g.nodes[e].name);
        if collapse(g, &mut dead, &nodes, unary(name, gelu, x, out)) {
            changed += 1;
        }
    }
    drop_nodes(g, &dead);
    Ok(Report {
        pass: "fuse-gelu",
        changed,
    })
}

/// `MatMul(x, W) + b` → `MatMul(x, W, b)` for constant `W` [K, N], `b` [N].
pub fn fuse_bias(g: &mut Graph) -> Result<Report> {
    let (matmul, add) = (op_id("MatMul"), op_id("Add"));
    if !typed(g) {
        return unchanged("fuse-bias");
    }
    let producers = g.producers();
    let cons = consumers(g);
    let mut dead = vec![false; g.nodes.len()];
    let mut changed = 0;
    for ai in 0..g.nodes.len() {
        if !is(&g.nodes[ai], add) {
            continue;
        }
        let an = &g.nodes[ai];
        let (Some(Some(p)), Some(Some(q))) = (an.inputs.first(), an.inputs.get(1)) else {
            continue;
        };
        let (p, q) = (*p, *q);
        let pick = |mm: ValueId, b: ValueId| -> Option<(usize, Tensor)> {
            let mi = producers[mm]?;
            let mn = &g.nodes[mi];
            if !is(mn, matmul) || mn.inputs.len() > 2 || dead[mi] {
                return None;
            }
            only_reader(g, &cons, mm)?;
            if !mn.attrs.string("activation", "").ok()?.is_empty() {
                return None;
            }
            let w = g.values[mn.inputs.get(1).copied()??].konst.as_ref()?;
            let bt = g.values[b].konst.as_ref()?;
            if w.dtype != DType::F32 || w.dims.len() != 2 || bt.dtype != DType::F32 {
                return None;
            }
            let n = w.dims[1];
            let ok = bt.dims.last() == Some(&n) && bt.dims.iter().rev().skip(1).all(|&d| d == 1);
            // A [1, …, N] bias must not raise the output's rank (a 1-D bias
            // never does).
            let out_rank = g.values[mm].shape.len();
            (ok && (bt.dims.len() == 1 || bt.dims.len() <= out_rank)).then(|| (mi, bt.clone()))
        };
        let Some((mi, bias, mm)) = pick(p, q)
            .map(|(m, b)| (m, b, p))
            .or_else(|| pick(q, p).map(|(m, b)| (m, b, q)))
        else {
            continue;
        };
        let _ = mm;
        let n = bias.numel();
        let name = g.fresh_name(&format!("{}_bias", g.nodes[mi].name));
        let data = bias.to_f32_vec()?;
        let b = g.add_const(&name, Tensor::from_slice(&[n], &data)?);
        let out = g.nodes[ai].outputs[0];
        let mn = &mut g.nodes[mi];
        mn.inputs.push(Some(b));
        mn.outputs[0] = out;
        dead[ai] = true;
        changed += 1;
    }
    drop_nodes(g, &dead);
    Ok(Report {
        pass: "fuse-bias",
        changed,
    })
}

/// An activation node's fused form: (name, alpha, beta).
fn activation_of(g: &Graph, n: &Node) -> Option<(&'static str, Option<f32>, Option<f32>)> {
    let name = morsel_runtime::ops::op_name(n.op);
    let f = |k: &str, d: f32| n.attrs.float(k, d).ok();
    Some(match name {
        "Relu" => ("relu", None, None),
        "Sigmoid" => ("sigmoid", None, None),
        "Tanh" => ("tanh", None, None),
        "HardSwish" => ("hard_swish", None, None),
        "LeakyRelu" => ("leaky_relu", Some(f("alpha", 0.01)?), None),
        "HardSigmoid" => (
            "hard_sigmoid",
            Some(f("alpha", 0.2)?),
            Some(f("beta", 0.5)?),
        ),
        "Gelu" => match n.attrs.string("approximate", "none").ok()?.as_str() {
            "none" => ("gelu", None, None),
            _ => return None,
        },
        "Clip" => {
            let bound = |i: usize, d: f32| match n.inputs.get(i).copied().flatten() {
                None => Some(d),
                Some(v) => scalar(g, v),
            };
            (
                "clip",
                Some(bound(1, f32::NEG_INFINITY)?),
                Some(bound(2, f32::INFINITY)?),
            )
        }
        _ => return None,
    })
}

/// The ops that take a fused `activation` attribute.
fn activation_hosts() -> [Option<OpId>; 4] {
    [
        op_id("MatMul"),
        op_id("Gemm"),
        op_id("Conv"),
        op_id("ConvTranspose"),
    ]
}

/// An activation right after MatMul/Gemm/Conv/ConvTranspose → its attribute.
pub fn fuse_activation(g: &mut Graph) -> Result<Report> {
    let hosts = activation_hosts();
    if !typed(g) {
        return unchanged("fuse-activation");
    }
    let producers = g.producers();
    let cons = consumers(g);
    let mut dead = vec![false; g.nodes.len()];
    let mut changed = 0;
    for ai in 0..g.nodes.len() {
        let an = &g.nodes[ai];
        let Some((act, alpha, beta)) = activation_of(g, an) else {
            continue;
        };
        let Some(x) = an.inputs.first().copied().flatten() else {
            continue;
        };
        let Some(pi) = producers[x] else { continue };
        let pn = &g.nodes[pi];
        if dead[pi]
            || !hosts.iter().any(|h| is(pn, *h))
            || g.values[x].dtype != DType::F32
            || only_reader(g, &cons, x).is_none()
            || !pn
                .attrs
                .string("activation", "")
                .unwrap_or_default()
                .is_empty()
        {
            continue;
        }
        let out = an.outputs[0];
        let pn = &mut g.nodes[pi];
        pn.attrs.set("activation", Attr::Str(act.into()));
        if let Some(a) = alpha {
            pn.attrs.set("activation_alpha", Attr::Float(a));
        }
        if let Some(b) = beta {
            pn.attrs.set("activation_beta", Attr::Float(b));
        }
        pn.outputs[0] = out;
        dead[ai] = true;
        changed += 1;
    }
    drop_nodes(g, &dead);
    Ok(Report {
        pass: "fuse-activation",
        changed,
    })
}

/// The fused activations a scalar affine may follow, "" being none (see
/// the runtime's `Activation::from_attrs`).
const AFFINE_AFTER: [&str; 7] = [
    "",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "hard_sigmoid",
    "hard_swish",
];

/// `act(host(x))·s + t`, with the Mul and Add by constant scalars after a
/// fused unary activation or none → `activation_scale = s`,
/// `activation_shift = t` on the host. One Mul, one Add, or a Mul then an
/// Add: those keep the rounding of the nodes they replace (`u·s`, then
/// `+ t`); further ones are left as they are. A Div by a scalar `c` (as
/// attention divides its scores by √d) is a Mul by `1/c`, within an ulp of
/// the division.
pub fn fuse_post_affine(g: &mut Graph) -> Result<Report> {
    let (mul, add, div) = (op_id("Mul"), op_id("Add"), op_id("Div"));
    let hosts = activation_hosts();
    if !typed(g) {
        return unchanged("fuse-post-affine");
    }
    let mut changed = 0;
    loop {
        let producers = g.producers();
        let cons = consumers(g);
        let mut hit = None;
        for (ni, n) in g.nodes.iter().enumerate() {
            let is_div = is(n, div);
            let is_mul = is(n, mul) || is_div;
            if !(is_mul || is(n, add)) {
                continue;
            }
            let (Some(Some(p)), Some(Some(q))) = (n.inputs.first(), n.inputs.get(1)) else {
                continue;
            };
            // x / c only (c / x is no affine of x)
            let orders = if is_div { 1 } else { 2 };
            for (x, c) in [(*p, *q), (*q, *p)].into_iter().take(orders) {
                let Some(k) = scalar(g, c) else { continue };
                let k = if is_div { 1.0 / k } else { k };
                if !k.is_finite() {
                    continue;
                }
                let Some(hi) = producers[x] else { continue };
                let h = &g.nodes[hi];
                let act = h.attrs.string("activation", "").unwrap_or_default();
                let has = |key: &str| h.attrs.get(key).is_some();
                // Mul only onto a bare activation; Add onto one with at most a scale.
                let fits = if is_mul {
                    !has("activation_scale") && !has("activation_shift")
                } else {
                    !has("activation_shift")
                };
                if !hosts.iter().any(|o| is(h, *o))
                    || !AFFINE_AFTER.contains(&act.as_str())
                    || !fits
                    || g.values[x].dtype != DType::F32
                    || g.values[x].shape.len() < g.values[n.outputs[0]].shape.len()
                    || only_reader(g, &cons, x).is_none()
                {
                    continue;
                }
                hit = Some((ni, hi, k, is_mul));
                break;
            }
            if hit.is_some() {
                break;
            }
        }
        let Some((ni, hi, k, is_mul)) = hit else {
            break;
        };
        let out = g.nodes[ni].outputs[0];
        let h = &mut g.nodes[hi];
        h.attrs.set(
            if is_mul {
                "activation_scale"
            } else {
                "activation_shift"
            },
            Attr::Float(k),
        );
        h.outputs[0] = out;
        g.nodes.remove(ni);
        changed += 1;
    }
    compacted(g, "fuse-post-affine", changed)
}

/// `x·clip(x + 3, 0, 6) / 6` or `x·(clip(x + 3, 0, 6) / 6)` → `HardSwish(x)`.
pub fn fuse_hard_swish(g: &mut Graph) -> Result<Report> {
    let (clip, add, mul, div) = (op_id("Clip"), op_id("Add"), op_id("Mul"), op_id("Div"));
    let Some(hswish) = op_id("HardSwish") else {
        return unchanged("fuse-hard-swish");
    };
    if !typed(g) {
        return unchanged("fuse-hard-swish");
    }
    let producers = g.producers();
    let cons = consumers(g);
    let mut dead = vec![false; g.nodes.len()];
    let mut changed = 0;
    // `v / 6` or `v · (1/6)`: the other operand.
    let by_six = |g: &Graph, n: &Node| -> Option<ValueId> {
        if is(n, div) {
            let d = n.inputs.get(1).copied()??;
            near(scalar(g, d)?, 6.0).then_some(())?;
            n.inputs.first().copied()?
        } else if is(n, mul) {
            with_scalar(g, n, 1.0 / 6.0)
        } else {
            None
        }
    };
    for ci in 0..g.nodes.len() {
        if !is(&g.nodes[ci], clip) {
            continue;
        }
        let Some(found) = (|| {
            let cn = &g.nodes[ci];
            let lo = scalar(g, cn.inputs.get(1).copied()??)?;
            let hi = scalar(g, cn.inputs.get(2).copied()??)?;
            (lo == 0.0 && hi == 6.0).then_some(())?;
            let c_in = cn.inputs.first().copied()??;
            only_reader(g, &cons, c_in)?;
            let ai = producers[c_in]?;
            if !is(&g.nodes[ai], add) {
                return None;
            }
            let x = with_scalar(g, &g.nodes[ai], 3.0)?;
            let c_out = cn.outputs[0];
            let next = only_reader(g, &cons, c_out)?;
            let nn = &g.nodes[next];
            let operands = |n: &Node| -> Option<[ValueId; 2]> {
                Some([n.inputs.first().copied()??, n.inputs.get(1).copied()??])
            };
            if is(nn, mul) && operands(nn)?.contains(&x) && operands(nn)?.contains(&c_out) {
                // (x · clip) / 6
                let h = nn.outputs[0];
                let di = only_reader(g, &cons, h)?;
                (by_six(g, &g.nodes[di])? == h).then_some(())?;
                Some((x, g.nodes[di].outputs[0], vec![ai, ci, next, di]))
            } else if by_six(g, nn)? == c_out {
                // x · (clip / 6)
                let q = nn.outputs[0];
                let mi = only_reader(g, &cons, q)?;
                let mn = &g.nodes[mi];
                (is(mn, mul) && operands(mn)?.contains(&x) && operands(mn)?.contains(&q))
                    .then_some(())?;
                Some((x, mn.outputs[0], vec![ai, ci, next, mi]))
            } else {
                None
            }
            .filter(|(x, out, _)| {
                // The 3 and 6 are one-element tensors of any rank: one of rank
                // above x's broadcasts the result up to it.
                g.values[*out].shape.len() == g.values[*x].shape.len()
            })
        })() else {
            continue;
        };
        let (x, out, nodes) = found;
        let name = format!("{}_hard_swish", g.nodes[ci].name);
        if collapse(g, &mut dead, &nodes, unary(name, hswish, x, out)) {
            changed += 1;
        }
    }
    drop_nodes(g, &dead);
    Ok(Report {
        pass: "fuse-hard-swish",
        changed,
    })
}

/// A constant that broadcasts over Conv output `[N, M, spatial…]` as a
/// scalar or per output channel: its `m` values (1 for a scalar).
fn channel_const(g: &Graph, v: ValueId, m: usize, out_rank: usize) -> Option<Vec<f32>> {
    let t = g.values[v].konst.as_ref()?;
    if t.dtype != DType::F32 {
        return None;
    }
    let vals = t.to_f32_vec().ok()?;
    if vals.len() == 1 {
        // A one-element tensor of rank above the output's would raise it.
        return (t.dims.len() <= out_rank).then_some(vals);
    }
    // [.., M, 1, …, 1] right-aligned to [N, M, spatial…].
    let d = &t.dims;
    let spatial = out_rank.checked_sub(2)?;
    let ok = vals.len() == m
        && d.len() > spatial
        && d.len() <= out_rank
        && d[d.len() - spatial - 1] == m
        && d[d.len() - spatial..].iter().all(|&x| x == 1)
        && d[..d.len() - spatial - 1].iter().all(|&x| x == 1);
    ok.then_some(vals)
}

/// `Conv(x) · s + t` (either, both, any order of operands; Conv or
/// ConvTranspose) → the conv with `W·s` and `B·s + t`, for constant scalar
/// or per-channel `s`, `t`.
pub fn fold_conv_affine(g: &mut Graph) -> Result<Report> {
    let (conv, conv_t) = (op_id("Conv"), op_id("ConvTranspose"));
    let (mul, add) = (op_id("Mul"), op_id("Add"));
    let mut changed = 0;
    loop {
        let producers = g.producers();
        let cons = consumers(g);
        let mut hit = None;
        for (ni, n) in g.nodes.iter().enumerate() {
            if !is(n, mul) && !is(n, add) {
                continue;
            }
            let (Some(Some(p)), Some(Some(q))) = (n.inputs.first(), n.inputs.get(1)) else {
                continue;
            };
            for (x, c) in [(*p, *q), (*q, *p)] {
                let Some(ci) = producers[x] else { continue };
                let cn = &g.nodes[ci];
                if !(is(cn, conv) || is(cn, conv_t))
                    || only_reader(g, &cons, x).is_none()
                    || !cn
                        .attrs
                        .string("activation", "")
                        .unwrap_or_default()
                        .is_empty()
                {
                    continue;
                }
                let Some(w) = cn.inputs.get(1).copied().flatten() else {
                    continue;
                };
                let Some(wt) = g.values[w].konst.as_ref() else {
                    continue;
                };
                let bias_ok = match cn.inputs.get(2).copied().flatten() {
                    None => true,
                    Some(b) => g.values[b].konst.is_some(),
                };
                let Some(cw) = ConvWeight::of(cn, is(cn, conv_t), &wt.dims) else {
                    continue;
                };
                if wt.dtype != DType::F32 || !bias_ok {
                    continue;
                }
                if let Some(vals) = channel_const(g, c, cw.out_channels, wt.dims.len()) {
                    hit = Some((ni, ci, vals, is(n, mul), cw));
                    break;
                }
            }
            if hit.is_some() {
                break;
            }
        }
        let Some((ni, ci, vals, is_mul, cw)) = hit else {
            break;
        };
        let m = cw.out_channels;
        let cn = &g.nodes[ci];
        let w = cn.inputs[1].unwrap_or_default();
        let Some(wt) = g.values[w].konst.clone() else {
            break;
        };
        let per = |k: usize| if vals.len() == 1 { vals[0] } else { vals[k] };
        let mut b: Vec<f32> = match cn.inputs.get(2).copied().flatten() {
            Some(bv) => konst_f32(g, bv).unwrap_or_else(|| vec![0.0; m]),
            None => vec![0.0; m],
        };
        if b.len() != m {
            break;
        }
        let mut wv = wt.to_f32_vec()?;
        if is_mul {
            cw.scale(&mut wv, &wt.dims, per);
            b.iter_mut().enumerate().for_each(|(k, v)| *v *= per(k));
        } else {
            b.iter_mut().enumerate().for_each(|(k, v)| *v += per(k));
        }
        let base = g.nodes[ci].name.clone();
        let wn = g.fresh_name(&format!("{base}_w_affine"));
        let new_w = g.add_const(&wn, Tensor::from_slice(&wt.dims, &wv)?);
        let bn = g.fresh_name(&format!("{base}_b_affine"));
        let new_b = g.add_const(&bn, Tensor::from_slice(&[m], &b)?);
        let out = g.nodes[ni].outputs[0];
        let cn = &mut g.nodes[ci];
        cn.inputs.resize(3, None);
        cn.inputs[1] = Some(new_w);
        cn.inputs[2] = Some(new_b);
        cn.outputs[0] = out;
        g.nodes.remove(ni);
        changed += 1;
    }
    compacted(g, "fold-conv-affine", changed)
}

fn konst_f32(g: &Graph, v: ValueId) -> Option<Vec<f32>> {
    let t = g.values[v].konst.as_ref()?;
    (t.dtype == DType::F32).then(|| t.to_f32_vec().ok())?
}

/// The constant i64 axes input of a Reduce node, if it is exactly the last
/// axis of a rank-`rank` input and keepdims is on.
fn reduces_last_axis(g: &Graph, n: &Node, rank: usize) -> bool {
    let Some(Some(a)) = n.inputs.get(1) else {
        return false;
    };
    let Some(t) = g.values[*a].konst.as_ref() else {
        return false;
    };
    let Ok(axes) = t.to_i64_vec() else {
        return false;
    };
    n.attrs.int("keepdims", 1).unwrap_or(0) == 1
        && axes.len() == 1
        && (axes[0] == -1 || axes[0] == rank as i64 - 1)
}

/// A LayerNorm found: (position of its last node, x, output, γ, β, ε).
type LnFound = (
    usize,
    ValueId,
    ValueId,
    Option<Vec<f32>>,
    Option<Vec<f32>>,
    f32,
);

/// The spelled-out LayerNorm over the last axis → `LayerNormalization`.
pub fn fuse_layer_norm(g: &mut Graph) -> Result<Report> {
    let (rmean, sub, pow, mul, add, sqrt, div) = (
        op_id("ReduceMean"),
        op_id("Sub"),
        op_id("Pow"),
        op_id("Mul"),
        op_id("Add"),
        op_id("Sqrt"),
        op_id("Div"),
    );
    let Some(ln) = op_id("LayerNormalization") else {
        return unchanged("fuse-layer-norm");
    };
    if !typed(g) {
        return unchanged("fuse-layer-norm");
    }
    let producers = g.producers();
    let cons = consumers(g);
    let mut dead = vec![false; g.nodes.len()];
    let mut replace: Vec<LnFound> = Vec::new();
    for si in 0..g.nodes.len() {
        if !is(&g.nodes[si], sub) {
            continue;
        }
        let Some(found) = (|| {
            let sn = &g.nodes[si];
            let (x, m) = (sn.inputs.first().copied()??, sn.inputs.get(1).copied()??);
            let rank = g.values[x].shape.len();
            if g.values[x].dtype != DType::F32 || rank == 0 {
                return None;
            }
            let mi = producers[m]?;
            let mn = &g.nodes[mi];
            if !is(mn, rmean)
                || mn.inputs.first().copied()?? != x
                || !reduces_last_axis(g, mn, rank)
            {
                return None;
            }
            // d = x - mean is read by the square and by the division.
            let d = sn.outputs[0];
            if g.outputs.contains(&d) || cons[d].len() != 2 {
                return None;
            }
            let (mut sq, mut dv) = (None, None);
            for &c in &cons[d] {
                let cn = &g.nodes[c];
                let ins = [cn.inputs.first().copied()??, cn.inputs.get(1).copied()??];
                let squares = (is(cn, pow) && ins[0] == d && scalar(g, ins[1]) == Some(2.0))
                    || (is(cn, mul) && ins == [d, d]);
                if squares {
                    sq = Some(c);
                } else if is(cn, div) && ins[0] == d {
                    dv = Some(c);
                }
            }
            let (sq, dv) = (sq?, dv?);
            let v = only_reader(g, &cons, g.nodes[sq].outputs[0])?;
            let vn = &g.nodes[v];
            if !is(vn, rmean) || !reduces_last_axis(g, vn, rank) {
                return None;
            }
            let ai = only_reader(g, &cons, vn.outputs[0])?;
            let an = &g.nodes[ai];
            if !is(an, add) {
                return None;
            }
            let other = |n: &Node, v: ValueId| -> Option<ValueId> {
                let ins = [n.inputs.first().copied()??, n.inputs.get(1).copied()??];
                if ins[0] == v {
                    Some(ins[1])
                } else if ins[1] == v {
                    Some(ins[0])
                } else {
                    None
                }
            };
            let eps = scalar(g, other(an, vn.outputs[0])?)?;
            let qi = only_reader(g, &cons, an.outputs[0])?;
            let qn = &g.nodes[qi];
            if !is(qn, sqrt) || g.nodes[dv].inputs.get(1).copied()?? != qn.outputs[0] {
                return None;
            }
            only_reader(g, &cons, qn.outputs[0])?;
            let mut nodes = vec![mi, si, sq, v, ai, qi, dv];
            let mut out = g.nodes[dv].outputs[0];
            // Optional ·γ then +β, constants of the last dim's size.
            let per_channel = |c: ValueId| -> Option<Vec<f32>> {
                let t = g.values[c].konst.as_ref()?;
                (t.dtype == DType::F32 && t.dims.len() == 1).then(|| t.to_f32_vec().ok())?
            };
            let mut gamma = None;
            let mut beta = None;
            if let Some(r) = only_reader(g, &cons, out) {
                let rn = &g.nodes[r];
                if is(rn, mul)
                    && let Some(gv) = other(rn, out).and_then(per_channel)
                {
                    gamma = Some(gv);
                    nodes.push(r);
                    out = rn.outputs[0];
                }
            }
            if gamma.is_some()
                && let Some(r) = only_reader(g, &cons, out)
            {
                let rn = &g.nodes[r];
                if is(rn, add)
                    && let Some(bv) = other(rn, out).and_then(per_channel)
                {
                    beta = Some(bv);
                    nodes.push(r);
                    out = rn.outputs[0];
                }
            }
            // Without γ the size comes from the shape.
            if gamma.is_none()
                && !matches!(
                    g.values[x].shape.last(),
                    Some(morsel_runtime::tensor::Dim::Known(_))
                )
            {
                return None;
            }
            Some((nodes, x, out, gamma, beta, eps))
        })() else {
            continue;
        };
        let (nodes, x, out, gamma, beta, eps) = found;
        if nodes.iter().any(|&n| dead[n]) {
            continue;
        }
        let last = *nodes.iter().max().unwrap_or(&si);
        for &n in &nodes {
            dead[n] = true;
        }
        dead[last] = false;
        replace.push((last, x, out, gamma, beta, eps));
    }
    let changed = replace.len();
    for (last, x, out, gamma, beta, eps) in replace {
        let c = match (&gamma, g.values[x].shape.last()) {
            (Some(gv), _) => gv.len(),
            (None, Some(morsel_runtime::tensor::Dim::Known(c))) => *c,
            _ => continue,
        };
        let name = format!("{}_layer_norm", g.nodes[last].name);
        let gn = g.fresh_name(&format!("{name}_scale"));
        let gv = gamma.unwrap_or_else(|| vec![1.0; c]);
        let scale = g.add_const(&gn, Tensor::from_slice(&[c], &gv)?);
        let bias = match beta {
            Some(bv) => {
                let bn = g.fresh_name(&format!("{name}_bias"));
                Some(g.add_const(&bn, Tensor::from_slice(&[c], &bv)?))
            }
            None => None,
        };
        let mut attrs = morsel_runtime::graph::Attrs::default();
        attrs.set("axis", Attr::Int(-1));
        attrs.set("epsilon", Attr::Float(eps));
        g.nodes[last] = Node {
            name,
            op: ln,
            attrs,
            inputs: vec![Some(x), Some(scale), bias],
            outputs: vec![out],
        };
    }
    drop_nodes(g, &dead);
    Ok(Report {
        pass: "fuse-layer-norm",
        changed,
    })
}
