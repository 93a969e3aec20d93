//! Layout ops of the shape family: Transpose, Expand, Tile and Pad. Each
//! maps output elements to input elements (a strided view for the first
//! three, per-axis index maps for Pad) and copies contiguous runs with
//! memcpy. Builders are re-exported through `ops::shape`.

use smallvec::SmallVec;

use super::shape::{
    check_size, copy_bytes, copy_strided, eval_ints, int_list, list_len, norm_axes, out0,
    strides_of, to_dim, unknown_dims,
};
use super::shape_values::cast_bytes;
use super::{Ctx, Fact, Op, opt, req};
use crate::graph::Attrs;
use crate::tensor::{
    Dim, Shape, TensorMut, TensorRef, concrete, dims_str, known_shape, numel, shape_str,
};
use crate::{Error, Result, bail};

/// A fact whose dims, when all known, are checked for size.
fn checked_fact(dtype: crate::DType, shape: Shape) -> Result<Fact> {
    if let Some(d) = concrete(&shape) {
        check_size(&d, dtype)?;
    }
    Ok(Fact::new(dtype, shape))
}

// ---------------------------------------------------------------- Transpose

#[derive(Debug)]
struct Transpose {
    /// `None`: reverse the axes.
    perm: Option<Vec<usize>>,
}

impl Transpose {
    fn perm(&self, rank: usize) -> Result<SmallVec<[usize; 8]>> {
        match &self.perm {
            None => Ok((0..rank).rev().collect()),
            Some(p) if p.len() == rank => Ok(p.iter().copied().collect()),
            Some(p) => bail!(
                Graph,
                "attribute 'perm' {p:?} has {} entries for a rank-{rank} input",
                p.len()
            ),
        }
    }
}

impl Op for Transpose {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let perm = self.perm(x.rank())?;
        Ok(vec![Fact::new(
            x.dtype,
            perm.iter().map(|&p| x.shape[p].clone()).collect(),
        )])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let perm = self.perm(x.rank())?;
        let out = out0(outputs)?;
        let st = strides_of(x.dims);
        let dims: SmallVec<[usize; 8]> = perm.iter().map(|&p| x.dims[p]).collect();
        if dims.as_slice() != out.dims {
            bail!(
                Graph,
                "Transpose of {} gives {}, the output is {}",
                dims_str(x.dims),
                dims_str(&dims),
                dims_str(out.dims)
            );
        }
        let ost: SmallVec<[isize; 8]> = perm.iter().map(|&p| st[p] as isize).collect();
        copy_strided(x.data, out.data, x.dtype.size(), &dims, &ost, 0)
    }
}

pub fn build_transpose(a: &Attrs) -> Result<Box<dyn Op>> {
    let perm = match a.ints("perm")? {
        None => None,
        Some(p) => {
            let n = p.len();
            let mut seen = vec![false; n];
            let mut out = Vec::with_capacity(n);
            for &v in &p {
                match usize::try_from(v) {
                    Ok(i) if i < n && !seen[i] => {
                        seen[i] = true;
                        out.push(i);
                    }
                    _ => bail!(
                        Graph,
                        "attribute 'perm' {p:?} is not a permutation of 0..{n}"
                    ),
                }
            }
            Some(out)
        }
    };
    Ok(Box::new(Transpose { perm }))
}

// ---------------------------------------------------------------- Expand

/// Expand(data, shape): numpy broadcast of the data and the shape.
#[derive(Debug)]
struct Expand;

impl Op for Expand {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, s) = (req(inputs, 0)?, req(inputs, 1)?);
        let shape = match int_list(s, "Expand shape")? {
            Some(v) => {
                let target: Vec<usize> = v
                    .iter()
                    .map(|&d| to_dim(d, "Expand shape"))
                    .collect::<Result<_>>()?;
                super::broadcast::broadcast_shapes(&[&x.shape, &known_shape(&target)])?
            }
            None => {
                let r = x.rank().max(list_len(s, "Expand shape")?);
                let mut shape = unknown_dims(r);
                for (o, d) in shape[r - x.rank()..].iter_mut().zip(&x.shape) {
                    if matches!(d, Dim::Known(n) if *n != 1) {
                        *o = d.clone();
                    }
                }
                shape
            }
        };
        Ok(vec![checked_fact(x.dtype, shape)?])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let out = out0(outputs)?;
        let od = out.dims;
        let bad = || {
            Error::Graph(format!(
                "cannot expand {} to {}",
                dims_str(x.dims),
                dims_str(od)
            ))
        };
        let off = od.len().checked_sub(x.rank()).ok_or_else(bad)?;
        let st = strides_of(x.dims);
        let mut ost: SmallVec<[isize; 8]> = SmallVec::from_elem(0, od.len());
        for (k, (&d, &s)) in x.dims.iter().zip(&st).enumerate() {
            ost[off + k] = match d {
                _ if d == od[off + k] => s as isize,
                1 => 0,
                _ => return Err(bad()),
            };
        }
        copy_strided(x.data, out.data, x.dtype.size(), od, &ost, 0)
    }
}

pub fn build_expand(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Expand))
}

// ---------------------------------------------------------------- Tile

/// Tile(data, repeats): seen as a broadcast of a `[r0, d0, r1, d1, ...]`
/// view whose repeat axes have stride 0.
#[derive(Debug)]
struct Tile;

impl Op for Tile {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, r) = (req(inputs, 0)?, req(inputs, 1)?);
        let Some(reps) = int_list(r, "Tile repeats")? else {
            return Ok(vec![Fact::new(x.dtype, unknown_dims(x.rank()))]);
        };
        if reps.len() != x.rank() {
            bail!(
                Graph,
                "Tile repeats {reps:?} has {} values for a rank-{} input",
                reps.len(),
                x.rank()
            );
        }
        let mut shape = Vec::with_capacity(reps.len());
        for (d, &n) in x.shape.iter().zip(&reps) {
            let n = to_dim(n, "Tile repeats")?;
            shape.push(match d {
                Dim::Known(d) => Dim::Known(d.checked_mul(n).ok_or_else(|| {
                    Error::Graph(format!(
                        "Tile of {} by {reps:?} overflows",
                        shape_str(&x.shape)
                    ))
                })?),
                _ if n == 1 => d.clone(),
                _ if n == 0 => Dim::Known(0),
                _ => Dim::unknown(),
            });
        }
        Ok(vec![checked_fact(x.dtype, shape)?])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let out = out0(outputs)?;
        let bad = || {
            Error::Graph(format!(
                "Tile cannot turn {} into {}",
                dims_str(x.dims),
                dims_str(out.dims)
            ))
        };
        if out.dims.len() != x.rank() {
            return Err(bad());
        }
        if numel(out.dims)? == 0 {
            return if out.data.is_empty() {
                Ok(())
            } else {
                Err(bad())
            };
        }
        let st = strides_of(x.dims);
        let mut dims: SmallVec<[usize; 16]> = SmallVec::new();
        let mut ost: SmallVec<[isize; 16]> = SmallVec::new();
        for ((&d, &o), &s) in x.dims.iter().zip(out.dims).zip(&st) {
            if d == 0 || o % d != 0 {
                return Err(bad());
            }
            dims.extend([o / d, d]);
            ost.extend([0, s as isize]);
        }
        copy_strided(x.data, out.data, x.dtype.size(), &dims, &ost, 0)
    }
}

pub fn build_tile(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Tile))
}

// ---------------------------------------------------------------- Pad

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Pad(data, pads, constant_value?, axes?). Negative pads crop first (as
/// ONNX Runtime does); reflect, edge and wrap then pad the cropped axis.
#[derive(Debug)]
struct Pad {
    mode: PadMode,
}

/// (begin, end) pad per axis from `pads` = [b0, b1, ..., e0, e1, ...].
fn pad_amounts(rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
    let axes = match axes {
        Some(a) => norm_axes(a, rank, "Pad axes")?,
        None => (0..rank).collect(),
    };
    let k = axes.len();
    if pads.len() != 2 * k {
        bail!(
            Graph,
            "Pad pads {pads:?} must have {} values (2 per axis), has {}",
            2 * k,
            pads.len()
        );
    }
    let mut out = vec![(0, 0); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[i + k]);
    }
    Ok(out)
}

/// Check one axis's pads: the first input index kept and how many are kept.
fn axis_check(n: usize, m: usize, (b, e): (i64, i64)) -> Result<(i128, i128)> {
    let (n, b, e) = (n as i128, b as i128, e as i128);
    let lo = (-b).max(0);
    let kept = n - lo - (-e).max(0);
    if kept < 0 {
        bail!(
            Graph,
            "pads ({b}, {e}) crop more than the {n} elements of the axis"
        );
    }
    if n + b + e != m as i128 {
        bail!(
            Graph,
            "pads ({b}, {e}) on an axis of {n} do not give the output's {m}"
        );
    }
    Ok((lo, kept))
}

/// For each output index of one axis, the input index it reads (-1: the
/// constant). Only called once `m` is known to fit the output buffer.
fn axis_map(n: usize, m: usize, (b, e): (i64, i64), mode: PadMode) -> Result<Vec<isize>> {
    let (lo, kept) = axis_check(n, m, (b, e))?;
    let bp = (b as i128).max(0);
    let mut map = Vec::with_capacity(m);
    for o in 0..m as i128 {
        let i = o - bp;
        let j = if (0..kept).contains(&i) {
            i
        } else if mode == PadMode::Constant {
            map.push(-1);
            continue;
        } else if kept == 0 {
            bail!(Graph, "cannot pad an empty axis in {mode:?} mode");
        } else {
            match mode {
                PadMode::Edge => i.clamp(0, kept - 1),
                PadMode::Wrap => i.rem_euclid(kept),
                _ if kept == 1 => 0,
                _ => {
                    let p = 2 * (kept - 1);
                    let r = i.rem_euclid(p);
                    if r < kept { r } else { p - r }
                }
            }
        };
        map.push((lo + j) as isize);
    }
    Ok(map)
}

impl Op for Pad {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, p) = (req(inputs, 0)?, req(inputs, 1)?);
        if let Some(c) = opt(inputs, 2)
            && c.dims().is_some_and(|d| d.iter().product::<usize>() > 1)
        {
            bail!(
                Graph,
                "Pad constant_value must be a scalar, has shape {}",
                shape_str(&c.shape)
            );
        }
        let pads = int_list(p, "Pad pads")?;
        let axes = match opt(inputs, 3) {
            None => Some(None),
            Some(f) => int_list(f, "Pad axes")?.map(Some),
        };
        let mut shape = x.shape.clone();
        match (pads, axes) {
            (Some(pads), Some(axes)) => {
                for (d, (b, e)) in
                    shape
                        .iter_mut()
                        .zip(pad_amounts(x.rank(), &pads, axes.as_deref())?)
                {
                    *d = match d {
                        Dim::Known(n) => {
                            let m = *n as i128 + b as i128 + e as i128;
                            if m < 0 || m > usize::MAX as i128 {
                                bail!(Graph, "pads ({b}, {e}) on an axis of {n} give {m} elements");
                            }
                            Dim::Known(m as usize)
                        }
                        _ if b as i128 + e as i128 == 0 && b >= 0 => d.clone(),
                        _ => Dim::unknown(),
                    };
                }
            }
            (_, Some(Some(axes))) => {
                for a in norm_axes(&axes, x.rank(), "Pad axes")? {
                    shape[a] = Dim::unknown();
                }
            }
            _ => shape = unknown_dims(x.rank()),
        }
        Ok(vec![checked_fact(x.dtype, shape)?])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let pads = eval_ints(req(inputs, 1)?, "Pad pads")?;
        let axes = opt(inputs, 3)
            .map(|t| eval_ints(t, "Pad axes"))
            .transpose()?;
        let amounts = pad_amounts(x.rank(), &pads, axes.as_deref())?;
        let es = x.dtype.size();
        let mut cval = [0u8; 8];
        if let (Some(c), PadMode::Constant) = (opt(inputs, 2), self.mode) {
            match c.numel() {
                0 => {}
                1 => cast_bytes(c, x.dtype, &mut cval[..es])?,
                n => bail!(
                    Graph,
                    "Pad constant_value must be a scalar, has {n} elements"
                ),
            }
        }
        let cval = &cval[..es];
        let out = out0(outputs)?;
        let r = x.rank();
        if out.dims.len() != r || x.data.len() != numel(x.dims)?.saturating_mul(es) {
            bail!(
                Graph,
                "Pad of {} cannot give {}",
                dims_str(x.dims),
                dims_str(out.dims)
            );
        }
        if r == 0 {
            return copy_bytes(x.data, out.data);
        }
        for k in 0..r {
            axis_check(x.dims[k], out.dims[k], amounts[k])?;
        }
        if out.data.len() != numel(out.dims)?.saturating_mul(es) {
            bail!(
                Graph,
                "Pad output holds {} bytes for {}",
                out.data.len(),
                dims_str(out.dims)
            );
        }
        if out.data.is_empty() {
            return Ok(());
        }
        let maps: Vec<Vec<isize>> = (0..r)
            .map(|k| axis_map(x.dims[k], out.dims[k], amounts[k], self.mode))
            .collect::<Result<_>>()?;
        // Inner axis as runs: (output start, input start or -1, length).
        let mut runs: Vec<(usize, isize, usize)> = Vec::new();
        for (o, &i) in maps[r - 1].iter().enumerate() {
            match runs.last_mut() {
                Some((_, s, len)) if (*s < 0 && i < 0) || (*s >= 0 && i == *s + *len as isize) => {
                    *len += 1
                }
                _ => runs.push((o, i, 1)),
            }
        }
        let fill = |dst: &mut [u8]| {
            if cval.iter().all(|&b| b == 0) {
                dst.fill(0);
            } else {
                dst.chunks_exact_mut(es)
                    .for_each(|c| c.copy_from_slice(cval));
            }
        };
        let xs = strides_of(x.dims);
        let row = out.dims[r - 1] * es;
        let mut idx: SmallVec<[usize; 8]> = SmallVec::from_elem(0, r - 1);
        for dst in out.data.chunks_exact_mut(row) {
            let mut base = Some(0usize);
            for k in 0..r - 1 {
                let i = maps[k][idx[k]];
                base = base.filter(|_| i >= 0).map(|b| b + i as usize * xs[k]);
            }
            match base {
                None => fill(dst),
                Some(b) => {
                    for &(o, i, len) in &runs {
                        let d = &mut dst[o * es..(o + len) * es];
                        if i < 0 {
                            fill(d);
                        } else {
                            let s = (b + i as usize) * es;
                            d.copy_from_slice(&x.data[s..s + len * es]);
                        }
                    }
                }
            }
            for k in (0..r - 1).rev() {
                idx[k] += 1;
                if idx[k] < out.dims[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        Ok(())
    }
}

pub fn build_pad(a: &Attrs) -> Result<Box<dyn Op>> {
    let mode = match a.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => bail!(
            Unsupported,
            "Pad mode '{m}' (expected constant, reflect, edge or wrap)"
        ),
    };
    Ok(Box::new(Pad { mode }))
}

#[cfg(test)]
#[path = "tests/shape_layout.rs"]
mod tests;
