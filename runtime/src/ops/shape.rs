//! Shape and data-movement ops. This file holds the family's shared machinery
//! (symbolic dim arithmetic, shape-like input reading, and a strided copy
//! engine that moves contiguous runs with memcpy) and the ops that only
//! relabel a shape: Reshape, Flatten, Squeeze, Unsqueeze, Identity and Shape.
//!
//! The rest of the family lives next door: `shape_index` (Slice, Gather,
//! Concat, Split), `shape_layout` (Transpose, Expand, Tile, Pad) and
//! `shape_values` (Cast, ConstantOfShape, Range). Their builders are
//! re-exported here so the registry names every one as `shape::build_*`.
//!
//! Data movement is dtype-agnostic: kernels move elements of `dtype.size()`
//! bytes. Inputs that decide an output shape (Reshape's `shape`, axes, ...)
//! are read from `Fact::value` in `infer`; when they are unknown (symbolic
//! import) the output keeps its rank with unknown dims.

use smallvec::SmallVec;

pub use super::shape_index::{build_concat, build_gather, build_slice, build_split};
pub use super::shape_layout::{build_expand, build_pad, build_tile, build_transpose};
pub use super::shape_values::{build_cast, build_constant_of_shape, build_range};

use super::{Ctx, Fact, Op, axis, known_ints, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{
    Dim, Shape, Tensor, TensorMut, TensorRef, concrete, dims_str, known_shape, numel, shape_str,
};
use crate::{Error, Result, bail};

// ---------------------------------------------------------------- helpers

/// The first output buffer.
pub(super) fn out0<'a, 'b>(outputs: &'a mut [TensorMut<'b>]) -> Result<&'a mut TensorMut<'b>> {
    outputs
        .first_mut()
        .ok_or_else(|| Error::Graph("no output buffer was given".into()))
}

/// Copy all bytes, refusing a size mismatch instead of panicking.
pub(super) fn copy_bytes(src: &[u8], dst: &mut [u8]) -> Result<()> {
    if src.len() != dst.len() {
        bail!(
            Graph,
            "output holds {} bytes but the input has {}",
            dst.len(),
            src.len()
        );
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Row-major element strides of `dims`.
pub(super) fn strides_of(dims: &[usize]) -> SmallVec<[usize; 8]> {
    let mut s: SmallVec<[usize; 8]> = SmallVec::from_elem(1, dims.len());
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(dims[i + 1]);
    }
    s
}

/// A model-controlled `i64` as a dim.
pub(super) fn to_dim(v: i64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Graph(format!("{what}: {v} is not a valid dim")))
}

/// Refuse outputs whose byte size cannot be addressed (a hostile shape input
/// can ask for `[i64::MAX]`).
pub(super) fn check_size(dims: &[usize], dtype: DType) -> Result<()> {
    let bytes = numel(dims)?.checked_mul(dtype.size());
    match bytes {
        Some(b) if b <= isize::MAX as usize => Ok(()),
        _ => bail!(
            Graph,
            "output shape {} of {dtype} is too large",
            dims_str(dims)
        ),
    }
}

/// A fact with concrete dims, size-checked.
pub(super) fn concrete_fact(dtype: DType, dims: &[usize]) -> Result<Fact> {
    check_size(dims, dtype)?;
    Ok(Fact::new(dtype, known_shape(dims)))
}

/// `n` unknown dims.
pub(super) fn unknown_dims(n: usize) -> Shape {
    vec![Dim::unknown(); n]
}

/// The contents of a 1-D integer input (shape, axes, pads, ...), if known.
pub(super) fn int_list(f: &Fact, what: &str) -> Result<Option<Vec<i64>>> {
    if !matches!(f.dtype, DType::I64 | DType::I32) {
        bail!(Graph, "{what} must be an i64 tensor, is {}", f.dtype);
    }
    if f.rank() != 1 {
        bail!(
            Graph,
            "{what} must be 1-D, has shape {}",
            shape_str(&f.shape)
        );
    }
    known_ints(f, what)
}

/// The most dims (or outputs) a shape-like input of unknown contents may
/// announce; a hostile fact must not make us allocate its claimed length.
const MAX_LIST: usize = 1 << 12;

/// The length of a 1-D integer input. An unknown length means the output
/// rank is unknowable, which the IR cannot express: that is an error.
pub(super) fn list_len(f: &Fact, what: &str) -> Result<usize> {
    match f.shape.as_slice() {
        [Dim::Known(n)] if *n > MAX_LIST => {
            bail!(Graph, "{what} claims {n} values, more than {MAX_LIST}")
        }
        [Dim::Known(n)] => Ok(*n),
        _ => bail!(
            Unsupported,
            "{what} has shape {}, so the output rank is not known",
            shape_str(&f.shape)
        ),
    }
}

/// The integer contents of a tensor at eval time (1-D or scalar).
pub(super) fn eval_ints(t: &TensorRef<'_>, what: &str) -> Result<Vec<i64>> {
    t.to_i64_vec()
        .map_err(|e| Error::Graph(format!("{what}: {e}")))
}

/// Distinct normalised axes.
pub(super) fn norm_axes(axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = axis(a, rank).map_err(|e| Error::Graph(format!("{what}: {e}")))?;
        if out.contains(&a) {
            bail!(Graph, "{what}: axis {a} appears twice in {axes:?}");
        }
        out.push(a);
    }
    Ok(out)
}

/// Named symbols (not `?`) of a shape, its known product, and whether it has
/// an unnamed unknown dim.
fn split_dims(dims: &[Dim]) -> Result<(usize, Vec<&str>, bool)> {
    let (mut p, mut syms, mut unk) = (1usize, Vec::new(), false);
    for d in dims {
        match d {
            Dim::Known(n) => {
                p = p
                    .checked_mul(*n)
                    .ok_or_else(|| Error::Graph(format!("shape {} overflows", shape_str(dims))))?;
            }
            Dim::Sym(s) if &**s == "?" => unk = true,
            Dim::Sym(s) => syms.push(&**s),
        }
    }
    Ok((p, syms, unk))
}

/// The product of dims: known when all are, a symbol times 1 stays the
/// symbol (`[N] ⋅ [1]` = `N`), zero wins, anything else is unknown.
pub(super) fn dim_product(dims: &[Dim]) -> Result<Dim> {
    let (p, syms, unk) = split_dims(dims)?;
    Ok(if p == 0 {
        Dim::Known(0)
    } else if !unk && syms.is_empty() {
        Dim::Known(p)
    } else if p == 1 && dims.iter().filter(|d| matches!(d, Dim::Sym(_))).count() == 1 {
        dims.iter()
            .find(|d| matches!(d, Dim::Sym(_)))
            .cloned()
            .unwrap_or_else(Dim::unknown)
    } else {
        Dim::unknown()
    })
}

/// Keep a known value through a pure relabelling of its shape.
fn relabel(x: &Fact, shape: Shape) -> Result<Fact> {
    let value = match (&x.value, concrete(&shape)) {
        (Some(t), Some(dims)) => Some(Tensor::new(t.dtype, dims, t.data.clone())?),
        _ => None,
    };
    Ok(Fact {
        dtype: x.dtype,
        shape,
        value,
    })
}

/// Copy into `dst` (row-major over `dims`) the elements of `src` found at
/// `offset + Σ idx[i]·strides[i]` (counted in elements of `es` bytes).
/// Strides may be negative (reversed slices) or zero (broadcast). The whole
/// read range is checked first, so a bad plan is an error, never a panic.
/// Axes of size 1 are dropped and mergeable axes fused, so the innermost
/// loop is as long as possible and contiguous runs are single memcpys.
pub(super) fn copy_strided(
    src: &[u8],
    dst: &mut [u8],
    es: usize,
    dims: &[usize],
    strides: &[isize],
    offset: usize,
) -> Result<()> {
    if dims.len() != strides.len() || !matches!(es, 1 | 2 | 4 | 8) {
        bail!(
            Graph,
            "strided copy of rank {} with {} strides, element size {es}",
            dims.len(),
            strides.len()
        );
    }
    let n = numel(dims)?;
    let bytes = n
        .checked_mul(es)
        .ok_or_else(|| Error::Graph(format!("shape {} overflows", dims_str(dims))))?;
    if dst.len() != bytes {
        bail!(
            Graph,
            "output holds {} bytes, shape {} needs {bytes}",
            dst.len(),
            dims_str(dims)
        );
    }
    if n == 0 {
        return Ok(());
    }
    if !src.len().is_multiple_of(es) {
        bail!(
            Graph,
            "input of {} bytes is not a whole number of {es}-byte elements",
            src.len()
        );
    }
    let len = (src.len() / es) as i128;
    let (mut lo, mut hi) = (offset as i128, offset as i128);
    for (&d, &s) in dims.iter().zip(strides) {
        let span = (d as i128 - 1) * s as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 || hi >= len {
        bail!(
            Graph,
            "read of elements {lo}..={hi} lies outside the {len}-element input"
        );
    }
    // Every index below lies in [lo, hi], so the arithmetic cannot overflow.
    let mut sd: SmallVec<[(usize, isize); 8]> = SmallVec::new();
    for (&d, &s) in dims.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        if let Some(last) = sd.last_mut()
            && last.1 == s.wrapping_mul(d as isize)
        {
            *last = (last.0 * d, s);
            continue;
        }
        sd.push((d, s));
    }
    // `[u8; N]` has alignment 1 and both lengths are multiples of `es`, so
    // these casts cannot fail.
    match es {
        1 => walk::<[u8; 1]>(
            bytemuck::cast_slice(src),
            bytemuck::cast_slice_mut(dst),
            &sd,
            offset,
        ),
        2 => walk::<[u8; 2]>(
            bytemuck::cast_slice(src),
            bytemuck::cast_slice_mut(dst),
            &sd,
            offset,
        ),
        4 => walk::<[u8; 4]>(
            bytemuck::cast_slice(src),
            bytemuck::cast_slice_mut(dst),
            &sd,
            offset,
        ),
        _ => walk::<[u8; 8]>(
            bytemuck::cast_slice(src),
            bytemuck::cast_slice_mut(dst),
            &sd,
            offset,
        ),
    }
    Ok(())
}

/// Tile edge for the cache-friendly 2-D transpose path.
const TILE: usize = 32;

fn walk<T: Copy>(src: &[T], dst: &mut [T], sd: &[(usize, isize)], offset: usize) {
    let Some(&(inner, is)) = sd.last() else {
        dst[0] = src[offset];
        return;
    };
    // A transpose whose input-contiguous axis is the second innermost output
    // axis: copy in square tiles so reads and writes both stay in cache.
    if let [outer @ .., (rows, 1), (cols, cs)] = sd
        && *rows >= TILE / 2
        && *cols >= TILE / 2
    {
        let (rows, cols, cs) = (*rows, *cols, *cs);
        let block = rows * cols;
        let mut idx: SmallVec<[usize; 8]> = SmallVec::from_elem(0, outer.len());
        let mut base = offset as isize;
        for out in dst.chunks_exact_mut(block) {
            for r0 in (0..rows).step_by(TILE) {
                for c0 in (0..cols).step_by(TILE) {
                    for r in r0..(r0 + TILE).min(rows) {
                        let row = &mut out[r * cols..(r + 1) * cols];
                        let rb = base + r as isize;
                        for c in c0..(c0 + TILE).min(cols) {
                            row[c] = src[(rb + c as isize * cs) as usize];
                        }
                    }
                }
            }
            advance(&mut idx, &mut base, outer);
        }
        return;
    }
    let outer = &sd[..sd.len() - 1];
    let mut idx: SmallVec<[usize; 8]> = SmallVec::from_elem(0, outer.len());
    let mut base = offset as isize;
    for row in dst.chunks_exact_mut(inner) {
        let b = base as usize;
        match is {
            1 => row.copy_from_slice(&src[b..b + inner]),
            0 => row.fill(src[b]),
            _ => {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = src[(base + j as isize * is) as usize];
                }
            }
        }
        advance(&mut idx, &mut base, outer);
    }
}

/// Step a row-major odometer over `axes` (dim, stride), tracking the offset.
fn advance(idx: &mut [usize], base: &mut isize, axes: &[(usize, isize)]) {
    for k in (0..axes.len()).rev() {
        idx[k] += 1;
        *base += axes[k].1;
        if idx[k] < axes[k].0 {
            return;
        }
        *base -= axes[k].1 * axes[k].0 as isize;
        idx[k] = 0;
    }
}

/// Eval for ops that only relabel the shape: the bytes are unchanged.
fn eval_copy(inputs: &[Option<TensorRef<'_>>], outputs: &mut [TensorMut<'_>]) -> Result<()> {
    let x = req(inputs, 0)?;
    copy_bytes(x.data, out0(outputs)?.data)
}

// ---------------------------------------------------------------- Reshape

/// Reshape(data, shape): `0` copies the input dim (unless `allowzero`), one
/// `-1` is inferred. Symbols cancel where they can: `[N,16,4,4]` to `[0,-1]`
/// is `[N,256]`, `[N,256]` to `[-1,16,4,4]` is `[N,16,4,4]`.
#[derive(Debug)]
struct Reshape {
    allowzero: bool,
}

fn infer_minus_one(input: &[Dim], others: &[Dim], spec: &[i64]) -> Result<Dim> {
    let (pi, mut si, iu) = split_dims(input)?;
    let (po, so, ou) = split_dims(others)?;
    let bad = || Error::Graph(format!("cannot reshape {} to {spec:?}", shape_str(input)));
    if iu || ou {
        return Ok(Dim::unknown());
    }
    for s in so {
        match si.iter().position(|t| *t == s) {
            Some(k) => {
                si.swap_remove(k);
            }
            None => return Ok(Dim::unknown()),
        }
    }
    if po == 0 {
        if si.is_empty() {
            bail!(
                Graph,
                "cannot infer the -1 in {spec:?}: the other dims have zero elements"
            );
        }
        return Ok(Dim::unknown());
    }
    match si.as_slice() {
        [] if pi % po == 0 => Ok(Dim::Known(pi / po)),
        [] => Err(bad()),
        [s] if pi == po => Ok(Dim::Sym((*s).into())),
        _ => Ok(Dim::unknown()),
    }
}

fn reshape_shape(input: &[Dim], spec: &[i64], allowzero: bool) -> Result<Shape> {
    let mut out = Vec::with_capacity(spec.len());
    let mut minus_one = None;
    for (i, &v) in spec.iter().enumerate() {
        out.push(match v {
            -1 if minus_one.is_some() => bail!(Graph, "shape {spec:?} has more than one -1"),
            -1 => {
                minus_one = Some(i);
                Dim::Known(1)
            }
            0 if !allowzero => input.get(i).cloned().ok_or_else(|| {
                Error::Graph(format!(
                    "shape {spec:?} copies dim {i} (a 0) but the input {} has rank {}",
                    shape_str(input),
                    input.len()
                ))
            })?,
            v => Dim::Known(to_dim(v, "Reshape shape")?),
        });
    }
    if allowzero && minus_one.is_some() && spec.contains(&0) {
        bail!(Graph, "shape {spec:?} has both 0 and -1 with allowzero=1");
    }
    if let Some(k) = minus_one {
        let others: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, d)| d.clone())
            .collect();
        out[k] = infer_minus_one(input, &others, spec)?;
    }
    if let (Some(a), Some(b)) = (concrete(input), concrete(&out))
        && numel(&a)? != numel(&b)?
    {
        bail!(
            Graph,
            "cannot reshape {} to {} (shape input {spec:?})",
            dims_str(&a),
            dims_str(&b)
        );
    }
    Ok(out)
}

impl Op for Reshape {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, s) = (req(inputs, 0)?, req(inputs, 1)?);
        let shape = match int_list(s, "Reshape shape")? {
            Some(spec) => reshape_shape(&x.shape, &spec, self.allowzero)?,
            None => unknown_dims(list_len(s, "Reshape shape")?),
        };
        Ok(vec![relabel(x, shape)?])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        eval_copy(inputs, outputs)
    }
}

pub fn build_reshape(a: &Attrs) -> Result<Box<dyn Op>> {
    let allowzero = match a.int("allowzero", 0)? {
        0 => false,
        1 => true,
        v => bail!(Graph, "attribute 'allowzero' must be 0 or 1, is {v}"),
    };
    Ok(Box::new(Reshape { allowzero }))
}

// ---------------------------------------------------------------- Flatten

#[derive(Debug)]
struct Flatten {
    axis: i64,
}

impl Op for Flatten {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let r = x.rank() as i64;
        if self.axis < -r || self.axis > r {
            bail!(
                Graph,
                "attribute 'axis' = {} is out of range for rank {r} (expected -{r}..={r})",
                self.axis
            );
        }
        let a = if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        } as usize;
        let shape = vec![dim_product(&x.shape[..a])?, dim_product(&x.shape[a..])?];
        Ok(vec![relabel(x, shape)?])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        eval_copy(inputs, outputs)
    }
}

pub fn build_flatten(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Flatten {
        axis: a.int("axis", 1)?,
    }))
}

// ---------------------------------------------------------------- Squeeze / Unsqueeze

/// Squeeze(data, axes?). Without axes (or with an empty list, as ONNX Runtime
/// does) every dim of size 1 goes; symbolic dims are assumed not to be 1.
#[derive(Debug)]
struct Squeeze;

impl Op for Squeeze {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let r = x.rank();
        let axes = match opt(inputs, 1) {
            None => None,
            Some(f) => match int_list(f, "Squeeze axes")? {
                Some(v) => Some(v),
                None => {
                    let k = list_len(f, "Squeeze axes")?;
                    if k > r {
                        bail!(Graph, "Squeeze removes {k} axes from a rank-{r} input");
                    }
                    return Ok(vec![Fact::new(x.dtype, unknown_dims(r - k))]);
                }
            },
        };
        let shape = match axes {
            Some(v) if !v.is_empty() => {
                let axes = norm_axes(&v, r, "Squeeze axes")?;
                for &a in &axes {
                    if let Dim::Known(d) = x.shape[a]
                        && d != 1
                    {
                        bail!(
                            Graph,
                            "cannot squeeze axis {a} of {}: its size is {d}, not 1",
                            shape_str(&x.shape)
                        );
                    }
                }
                (0..r)
                    .filter(|i| !axes.contains(i))
                    .map(|i| x.shape[i].clone())
                    .collect()
            }
            _ => x
                .shape
                .iter()
                .filter(|d| **d != Dim::Known(1))
                .cloned()
                .collect(),
        };
        Ok(vec![relabel(x, shape)?])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        eval_copy(inputs, outputs)
    }
}

pub fn build_squeeze(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Squeeze))
}

/// Unsqueeze(data, axes): axes index the output rank.
#[derive(Debug)]
struct Unsqueeze;

impl Op for Unsqueeze {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, a) = (req(inputs, 0)?, req(inputs, 1)?);
        let shape = match int_list(a, "Unsqueeze axes")? {
            None => unknown_dims(x.rank().saturating_add(list_len(a, "Unsqueeze axes")?)),
            Some(v) => {
                let r = x.rank().saturating_add(v.len());
                let axes = norm_axes(&v, r, "Unsqueeze axes")?;
                let mut rest = x.shape.iter();
                (0..r)
                    .map(|i| {
                        if axes.contains(&i) {
                            Dim::Known(1)
                        } else {
                            rest.next().cloned().unwrap_or_else(Dim::unknown)
                        }
                    })
                    .collect()
            }
        };
        Ok(vec![relabel(x, shape)?])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        eval_copy(inputs, outputs)
    }
}

pub fn build_unsqueeze(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Unsqueeze))
}

// ---------------------------------------------------------------- Identity

#[derive(Debug)]
struct Identity;

impl Op for Identity {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![req(inputs, 0)?.clone()])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        eval_copy(inputs, outputs)
    }
}

pub fn build_identity(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Identity))
}

// ---------------------------------------------------------------- Shape

/// Shape(data) with `start`/`end` (opset 15). Its value is known whenever the
/// selected dims are, which is how shape subgraphs fold before running.
#[derive(Debug)]
struct ShapeOp {
    start: i64,
    end: Option<i64>,
}

impl ShapeOp {
    fn range(&self, rank: usize) -> (usize, usize) {
        let r = rank as i64;
        let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
        let (s, e) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        (s, e.max(s))
    }
}

impl Op for ShapeOp {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let (s, e) = self.range(x.rank());
        let value = match concrete(&x.shape[s..e]) {
            Some(d) => {
                let v: Vec<i64> = d.iter().map(|&n| n as i64).collect();
                Some(Tensor::from_slice(&[v.len()], &v)?)
            }
            None => None,
        };
        Ok(vec![Fact {
            dtype: DType::I64,
            shape: vec![Dim::Known(e - s)],
            value,
        }])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let (s, e) = self.range(x.rank());
        let o = out0(outputs)?.as_slice_mut::<i64>()?;
        if o.len() != e - s {
            bail!(Graph, "output holds {} dims, expected {}", o.len(), e - s);
        }
        for (o, &d) in o.iter_mut().zip(&x.dims[s..e]) {
            *o = d as i64;
        }
        Ok(())
    }
}

pub fn build_shape(a: &Attrs) -> Result<Box<dyn Op>> {
    let end = match a.get("end") {
        None => None,
        Some(_) => Some(a.int("end", 0)?),
    };
    Ok(Box::new(ShapeOp {
        start: a.int("start", 0)?,
        end,
    }))
}

#[cfg(test)]
#[path = "tests/shape.rs"]
pub(super) mod tests;
