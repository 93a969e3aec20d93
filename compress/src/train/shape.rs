//! Shape and index ops for training: the integer side (shape subgraphs,
//! indices) computed on concrete values, and the float side by candle views.

use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor as CTensor};
use morsel_runtime::graph::Attrs;

use super::{Ints, Val, iin, input, norm_axis};

pub(super) fn dims_of(v: &Val) -> Vec<usize> {
    match v {
        Val::F(t) => t.dims().to_vec(),
        Val::I(i) => i.dims.clone(),
    }
}

/// numpy broadcasting of two shapes.
pub(super) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                _ if x == y => Ok(x),
                (1, _) => Ok(y),
                (_, 1) => Ok(x),
                _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
            }
        })
        .collect()
}

/// Elementwise integer arithmetic with broadcasting.
pub(super) fn ints_binary(a: &Ints, b: &Ints, f: impl Fn(i64, i64) -> Result<i64>) -> Result<Ints> {
    let dims = broadcast(&a.dims, &b.dims)?;
    let n: usize = dims.iter().product();
    let index = |src: &Ints, flat: usize| -> usize {
        let mut rem = flat;
        let mut idx = 0;
        let mut stride = 1;
        let off = dims.len() - src.dims.len();
        for ax in (0..dims.len()).rev() {
            let coord = rem % dims[ax];
            rem /= dims[ax];
            if ax >= off {
                let d = src.dims[ax - off];
                if d != 1 {
                    idx += coord * stride;
                }
                stride *= d;
            }
        }
        idx
    };
    let v = (0..n)
        .map(|k| f(a.v[index(a, k)], b.v[index(b, k)]))
        .collect::<Result<Vec<_>>>()?;
    Ok(Ints { dims, v })
}

/// Row-major strides.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

pub(super) fn relabel(v: &Val, dims: Vec<usize>) -> Result<Vec<Val>> {
    Ok(vec![match v {
        Val::F(t) => Val::F(t.reshape(dims)?),
        Val::I(i) => {
            ensure!(
                dims.iter().product::<usize>() == i.v.len(),
                "cannot reshape {:?} to {dims:?}",
                i.dims
            );
            Val::I(Ints {
                dims,
                v: i.v.clone(),
            })
        }
    }])
}

pub(super) fn reshape(a: &Attrs, ins: &[Option<Val>]) -> Result<Vec<Val>> {
    let v = input(ins, 0)?;
    let shape = iin(ins, 1, "the shape")?;
    let dims = dims_of(v);
    let allowzero = a.int("allowzero", 0)? != 0;
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(shape.v.len());
    let mut hole = None;
    for (i, &s) in shape.v.iter().enumerate() {
        match s {
            0 if !allowzero => out.push(
                *dims
                    .get(i)
                    .with_context(|| format!("shape {:?}: no dim {i} to copy", shape.v))?,
            ),
            -1 => {
                ensure!(hole.is_none(), "shape {:?} has two -1", shape.v);
                hole = Some(i);
                out.push(1);
            }
            s if s >= 0 => out.push(s as usize),
            s => bail!("shape {:?}: dim {s}", shape.v),
        }
    }
    if let Some(h) = hole {
        let known: usize = out.iter().product();
        ensure!(
            known > 0 && total.is_multiple_of(known),
            "cannot reshape {dims:?} to {:?}",
            shape.v
        );
        out[h] = total / known;
    }
    relabel(v, out)
}

pub(super) fn squeeze(op: &str, ins: &[Option<Val>]) -> Result<Vec<Val>> {
    let v = input(ins, 0)?;
    let dims = dims_of(v);
    let axes = match ins.get(1).and_then(|x| x.as_ref()) {
        Some(_) => Some(iin(ins, 1, "axes")?.v),
        None => None,
    };
    let out = if op == "Squeeze" {
        match axes {
            Some(ax) if !ax.is_empty() => {
                let ax = ax
                    .iter()
                    .map(|&x| norm_axis(x, dims.len()))
                    .collect::<Result<Vec<_>>>()?;
                for &x in &ax {
                    ensure!(dims[x] == 1, "cannot squeeze axis {x} of {dims:?}");
                }
                dims.iter()
                    .enumerate()
                    .filter(|(i, _)| !ax.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            }
            _ => dims.iter().copied().filter(|&d| d != 1).collect(),
        }
    } else {
        let ax = axes.context("Unsqueeze needs axes")?;
        let r = dims.len() + ax.len();
        let ax = ax
            .iter()
            .map(|&x| norm_axis(x, r))
            .collect::<Result<Vec<_>>>()?;
        let mut src = dims.iter();
        (0..r)
            .map(|i| {
                if ax.contains(&i) {
                    1
                } else {
                    src.next().copied().unwrap_or(1)
                }
            })
            .collect()
    };
    relabel(v, out)
}

pub(super) fn transpose_ints(i: &Ints, perm: &[usize]) -> Result<Ints> {
    ensure!(perm.len() == i.dims.len(), "perm {perm:?} for {:?}", i.dims);
    let dims: Vec<usize> = perm.iter().map(|&p| i.dims[p]).collect();
    let src = strides(&i.dims);
    let n = i.v.len();
    let mut v = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rem = flat;
        let mut off = 0;
        for ax in (0..dims.len()).rev() {
            off += (rem % dims[ax]) * src[perm[ax]];
            rem /= dims[ax];
        }
        v.push(i.v[off]);
    }
    Ok(Ints { dims, v })
}

pub(super) fn concat_ints(parts: &[Ints], axis: usize) -> Result<Ints> {
    let mut dims = parts[0].dims.clone();
    ensure!(axis < dims.len(), "axis {axis} for {:?}", dims);
    dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
    let outer: usize = dims[..axis].iter().product();
    let mut v = Vec::with_capacity(dims.iter().product());
    for o in 0..outer {
        for p in parts {
            let chunk: usize = p.dims[axis..].iter().product();
            v.extend_from_slice(&p.v[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(Ints { dims, v })
}

pub(super) fn gather(a: &Attrs, ins: &[Option<Val>]) -> Result<Vec<Val>> {
    let data = input(ins, 0)?;
    let idx = iin(ins, 1, "the indices")?;
    let dims = dims_of(data);
    let axis = norm_axis(a.int("axis", 0)?, dims.len())?;
    let n = dims[axis] as i64;
    let idx_u: Vec<usize> = idx
        .v
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            ensure!((0..n).contains(&j), "index {i} out of range for {n}");
            Ok(j as usize)
        })
        .collect::<Result<_>>()?;
    let mut out_dims = dims[..axis].to_vec();
    out_dims.extend(&idx.dims);
    out_dims.extend(&dims[axis + 1..]);
    match data {
        Val::I(d) => {
            let outer: usize = dims[..axis].iter().product();
            let inner: usize = dims[axis + 1..].iter().product();
            let mut v = Vec::with_capacity(outer * idx_u.len() * inner);
            for o in 0..outer {
                for &j in &idx_u {
                    let s = (o * dims[axis] + j) * inner;
                    v.extend_from_slice(&d.v[s..s + inner]);
                }
            }
            Ok(vec![Val::I(Ints { dims: out_dims, v })])
        }
        Val::F(t) => {
            let ids: Vec<u32> = idx_u.iter().map(|&i| i as u32).collect();
            let ids = CTensor::from_vec(ids, idx_u.len(), &Device::Cpu)?;
            Ok(vec![Val::F(
                t.contiguous()?
                    .index_select(&ids, axis)?
                    .reshape(out_dims)?,
            )])
        }
    }
}

pub(super) fn slice(ins: &[Option<Val>]) -> Result<Vec<Val>> {
    let v = input(ins, 0)?;
    let dims = dims_of(v);
    let starts = iin(ins, 1, "starts")?.v;
    let ends = iin(ins, 2, "ends")?.v;
    let axes: Vec<usize> = match ins.get(3).and_then(|x| x.as_ref()) {
        Some(_) => iin(ins, 3, "axes")?
            .v
            .iter()
            .map(|&x| norm_axis(x, dims.len()))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = match ins.get(4).and_then(|x| x.as_ref()) {
        Some(_) => iin(ins, 4, "steps")?.v,
        None => vec![1; starts.len()],
    };
    ensure!(
        ends.len() == starts.len() && axes.len() == starts.len() && steps.len() == starts.len(),
        "starts, ends, axes and steps differ in length"
    );
    // Per axis: the kept indices.
    let mut keep: Vec<Vec<usize>> = dims.iter().map(|&d| (0..d).collect()).collect();
    for k in 0..starts.len() {
        let d = dims[axes[k]] as i64;
        let step = steps[k];
        ensure!(step != 0, "step 0");
        let clampi = |x: i64, lo: i64, hi: i64| (if x < 0 { x + d } else { x }).clamp(lo, hi);
        let list: Vec<usize> = if step > 0 {
            let (s, e) = (clampi(starts[k], 0, d), clampi(ends[k], 0, d));
            (s..e).step_by(step as usize).map(|i| i as usize).collect()
        } else {
            let (s, e) = (clampi(starts[k], -1, d - 1), clampi(ends[k], -1, d - 1));
            let mut out = Vec::new();
            let mut i = s;
            while i > e {
                out.push(i as usize);
                i += step;
            }
            out
        };
        keep[axes[k]] = list;
    }
    match v {
        Val::F(t) => {
            let mut y = t.clone();
            for (ax, list) in keep.iter().enumerate() {
                if list.len() == dims[ax] {
                    continue;
                }
                let contiguous = list.windows(2).all(|w| w[1] == w[0] + 1);
                y = if contiguous && !list.is_empty() {
                    y.narrow(ax, list[0], list.len())?
                } else {
                    let ids: Vec<u32> = list.iter().map(|&i| i as u32).collect();
                    let ids = CTensor::from_vec(ids, list.len(), &Device::Cpu)?;
                    y.contiguous()?.index_select(&ids, ax)?
                };
            }
            Ok(vec![Val::F(y)])
        }
        Val::I(i) => {
            let out_dims: Vec<usize> = keep.iter().map(|l| l.len()).collect();
            let st = strides(&i.dims);
            let n: usize = out_dims.iter().product();
            let mut v = Vec::with_capacity(n);
            for flat in 0..n {
                let mut rem = flat;
                let mut off = 0;
                for ax in (0..out_dims.len()).rev() {
                    off += keep[ax][rem % out_dims[ax]] * st[ax];
                    rem /= out_dims[ax];
                }
                v.push(i.v[off]);
            }
            Ok(vec![Val::I(Ints { dims: out_dims, v })])
        }
    }
}
