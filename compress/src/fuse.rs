//! Fusion passes: rewrite the primitive-op spellings that exporters emit
//! into the fused forms the runtime's kernels run in one pass.
//!
//! - [`fuse_gelu`]: `x·½·(1 + erf(x/√2))` in its usual orders (Div by √2 or
//!   Mul by 1/√2; the ½ on either side) becomes one `Gelu`.
//! - [`fuse_bias`]: `MatMul(x, W) + b` with constant `W` [K, N] and `b` [N]
//!   (or [1, …, N]) becomes `MatMul(x, W, b)`: the kernel starts its
//!   accumulators from the bias.
//! - [`fuse_activation`]: an activation (Relu, LeakyRelu, Sigmoid, Tanh,
//!   HardSigmoid, HardSwish, Clip with constant bounds, Gelu) right after a
//!   MatMul, Gemm, Conv or ConvTranspose becomes that node's `activation`
//!   attribute, applied to each output tile while it is in cache.
//!
//! Every pass only fires when the intermediate values have no other reader
//! and are not graph outputs, so results are unchanged up to float rounding
//! (the fused GELU uses the runtime's erf; tested end to end against ONNX
//! Runtime on MiniLM).

use anyhow::Result;
use morsel_runtime::DType;
use morsel_runtime::graph::{Attr, Graph, Node, ValueId};
use morsel_runtime::ops::{OpId, op_id};
use morsel_runtime::tensor::Tensor;

use crate::passes::{Report, compact};

/// All fusions, in the order they compose (bias before activation).
pub fn fuse_all(g: &mut Graph) -> Result<Vec<Report>> {
    Ok(vec![fuse_gelu(g)?, fuse_bias(g)?, fuse_activation(g)?])
}

/// Who reads each value: node indices.
fn consumers(g: &Graph) -> Vec<Vec<usize>> {
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
        return Ok(Report {
            pass: "fuse-gelu",
            changed: 0,
        });
    };
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
            // x itself may have other readers; every other intermediate has one.
            Some((x, out, nodes))
        })() else {
            continue;
        };
        let (x, out, nodes) = found;
        if nodes.iter().any(|&n| dead[n]) {
            continue;
        }
        // The fused node sits where the last node of the pattern was.
        let last = *nodes.iter().max().unwrap_or(&e);
        for &n in &nodes {
            dead[n] = true;
        }
        dead[last] = false;
        let name = format!("{}_gelu", g.nodes[e].name);
        g.nodes[last] = Node {
            name,
            op: gelu,
            attrs: Default::default(),
            inputs: vec![Some(x)],
            outputs: vec![out],
        };
        changed += 1;
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
            // A [1, …, N] bias must not raise the output's rank: needs the
            // output's rank to be known (a 1-D bias never does).
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

/// An activation right after MatMul/Gemm/Conv/ConvTranspose → its attribute.
pub fn fuse_activation(g: &mut Graph) -> Result<Report> {
    let hosts = [
        op_id("MatMul"),
        op_id("Gemm"),
        op_id("Conv"),
        op_id("ConvTranspose"),
    ];
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
