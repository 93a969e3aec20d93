//! Indexing ops of the shape family: Slice, Gather, Concat and Split. All
//! move whole elements of `dtype.size()` bytes and copy contiguous runs with
//! memcpy. Builders are re-exported through `ops::shape`.

use super::shape::{
    copy_strided, eval_ints, int_list, list_len, norm_axes, out0, strides_of, to_dim, unknown_dims,
};
use super::{Ctx, Fact, Op, PAR_MIN_ELEMS, axis, opt, par_pieces, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{Dim, Shape, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result, bail};

// ---------------------------------------------------------------- Slice

/// One sliced axis: normalised axis, raw start, end and step.
#[derive(Debug, Clone, Copy)]
struct SliceAxis {
    axis: usize,
    start: i64,
    end: i64,
    step: i64,
}

/// Validate the Slice parameter lists against the data rank.
fn slice_axes(
    rank: usize,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<SliceAxis>> {
    let k = starts.len();
    if ends.len() != k {
        bail!(
            Graph,
            "Slice starts has {k} values but ends has {}",
            ends.len()
        );
    }
    let axes = match axes {
        Some(a) if a.len() != k => bail!(
            Graph,
            "Slice starts has {k} values but axes has {}",
            a.len()
        ),
        Some(a) => norm_axes(a, rank, "Slice axes")?,
        None if k > rank => bail!(Graph, "Slice has {k} starts for a rank-{rank} input"),
        None => (0..k).collect(),
    };
    if let Some(s) = steps {
        if s.len() != k {
            bail!(
                Graph,
                "Slice starts has {k} values but steps has {}",
                s.len()
            );
        }
        if s.contains(&0) {
            bail!(Graph, "Slice steps {s:?} contain 0");
        }
    }
    Ok((0..k)
        .map(|i| SliceAxis {
            axis: axes[i],
            start: starts[i],
            end: ends[i],
            step: steps.map_or(1, |s| s[i]),
        })
        .collect())
}

/// ONNX clamping of one axis of size `dim`: the first index read and the
/// number of elements.
fn resolve(dim: usize, a: SliceAxis) -> (usize, usize) {
    if dim == 0 {
        return (0, 0);
    }
    let (d, step) = (dim as i128, a.step as i128);
    let (mut s, mut e) = (a.start as i128, a.end as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let len = if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        if e > s { (e - s + step - 1) / step } else { 0 }
    } else {
        s = s.clamp(0, d - 1);
        e = e.clamp(-1, d - 1);
        if s > e { (s - e - step - 1) / -step } else { 0 }
    };
    (s as usize, len as usize)
}

/// The four optional parameter inputs, as known values (`Err` inside `None`
/// means "not known yet").
fn slice_params(inputs: &[Option<Fact>]) -> Result<Option<[Option<Vec<i64>>; 4]>> {
    let starts = int_list(req(inputs, 1)?, "Slice starts")?;
    let ends = int_list(req(inputs, 2)?, "Slice ends")?;
    let opt_list = |i: usize, what: &str| -> Result<Option<Option<Vec<i64>>>> {
        match opt(inputs, i) {
            None => Ok(Some(None)),
            Some(f) => Ok(int_list(f, what)?.map(Some)),
        }
    };
    let (axes, steps) = (opt_list(3, "Slice axes")?, opt_list(4, "Slice steps")?);
    Ok(match (starts, ends, axes, steps) {
        (Some(s), Some(e), Some(a), Some(st)) => Some([Some(s), Some(e), a, st]),
        _ => None,
    })
}

#[derive(Debug)]
struct Slice;

impl Op for Slice {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let mut shape = x.shape.clone();
        let Some([Some(starts), Some(ends), axes, steps]) = slice_params(inputs)? else {
            // Which axes change is known only if the axes are.
            let known_axes = match opt(inputs, 3) {
                Some(f) => int_list(f, "Slice axes")?
                    .map(|a| norm_axes(&a, x.rank(), "Slice axes"))
                    .transpose()?,
                None => list_len(req(inputs, 1)?, "Slice starts")
                    .ok()
                    .map(|k| (0..k.min(x.rank())).collect()),
            };
            match known_axes {
                Some(axes) => axes.into_iter().for_each(|a| shape[a] = Dim::unknown()),
                None => shape = unknown_dims(x.rank()),
            }
            return Ok(vec![Fact::new(x.dtype, shape)]);
        };
        for a in slice_axes(x.rank(), &starts, &ends, axes.as_deref(), steps.as_deref())? {
            shape[a.axis] = match &x.shape[a.axis] {
                Dim::Known(d) => Dim::Known(resolve(*d, a).1),
                // `x[0:]` with a huge end (the usual "to the end") keeps the symbol.
                s @ Dim::Sym(_) if a.start == 0 && a.step == 1 && a.end >= i32::MAX as i64 => {
                    s.clone()
                }
                Dim::Sym(_) => Dim::unknown(),
            };
        }
        Ok(vec![Fact::new(x.dtype, shape)])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let list = |i: usize, what: &str| opt(inputs, i).map(|t| eval_ints(t, what)).transpose();
        let starts = eval_ints(req(inputs, 1)?, "Slice starts")?;
        let ends = eval_ints(req(inputs, 2)?, "Slice ends")?;
        let (axes, steps) = (list(3, "Slice axes")?, list(4, "Slice steps")?);
        let plan = slice_axes(x.rank(), &starts, &ends, axes.as_deref(), steps.as_deref())?;
        let strides = strides_of(x.dims);
        let out = out0(outputs)?;
        if out.dims.len() != x.rank() {
            bail!(
                Graph,
                "output rank {} differs from input rank {}",
                out.dims.len(),
                x.rank()
            );
        }
        let mut ostrides: Vec<isize> = strides.iter().map(|&s| s as isize).collect();
        let mut lens = x.dims.to_vec();
        let mut offset = 0usize;
        for a in plan {
            let (s, n) = resolve(x.dims[a.axis], a);
            lens[a.axis] = n;
            offset = offset.saturating_add(s.saturating_mul(strides[a.axis]));
            // A step only matters for a run longer than one element; beyond
            // that it is bounded by the dim, so the product fits.
            ostrides[a.axis] = if n > 1 {
                isize::try_from(a.step as i128 * strides[a.axis] as i128)
                    .map_err(|_| Error::Graph(format!("Slice step {} overflows", a.step)))?
            } else {
                0
            };
        }
        if lens != out.dims {
            bail!(
                Graph,
                "Slice gives {} but the output is {}",
                dims_str(&lens),
                dims_str(out.dims)
            );
        }
        if numel(&lens)? == 0 {
            return Ok(());
        }
        copy_strided(x.data, out.data, x.dtype.size(), &lens, &ostrides, offset)
    }
}

pub fn build_slice(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Slice))
}

// ---------------------------------------------------------------- Gather

/// Gather(data, indices) along `axis`; negative indices count from the end,
/// out-of-range ones are an error at eval.
#[derive(Debug)]
struct Gather {
    axis: i64,
}

/// Check every index against the axis size before touching any data.
fn check_indices<I: Copy + Into<i64>>(idx: &[I], dim: usize) -> Result<()> {
    let d = dim as i64;
    for (k, &i) in idx.iter().enumerate() {
        let i: i64 = i.into();
        if i < -d || i >= d {
            bail!(
                Graph,
                "Gather index {i} (at position {k}) is out of range for a dim of size {dim}"
            );
        }
    }
    Ok(())
}

/// Copy rows of `row` elements of type `T` (one element when gathering along
/// the last axis: a plain store instead of a tiny memcpy).
fn gather_rows<I: Copy + Into<i64>, T: Copy>(
    idx: &[I],
    data: &[T],
    out: &mut [T],
    dim: usize,
    row: usize,
) {
    let d = dim as i64;
    let pos = |i: I| -> usize {
        let i: i64 = i.into();
        (if i < 0 { i + d } else { i }) as usize
    };
    if row == 1 {
        for (src, dst) in data.chunks_exact(dim).zip(out.chunks_exact_mut(idx.len())) {
            for (o, &i) in dst.iter_mut().zip(idx) {
                *o = src[pos(i)];
            }
        }
        return;
    }
    let mut chunks = out.chunks_exact_mut(row);
    for src in data.chunks_exact(dim * row) {
        for (&i, dst) in idx.iter().zip(&mut chunks) {
            let at = pos(i) * row;
            dst.copy_from_slice(&src[at..at + row]);
        }
    }
}

/// Gather with a known element size: view the bytes as `[u8; N]` elements.
fn gather_typed<I: Copy + Into<i64>>(
    idx: &[I],
    x: &TensorRef<'_>,
    out: &mut [u8],
    a: usize,
) -> Result<()> {
    let dim = x.dims[a];
    check_indices(idx, dim)?;
    let outer = numel(&x.dims[..a])?;
    let row = numel(&x.dims[a + 1..])?;
    let es = x.dtype.size();
    let want = |n: usize| {
        outer
            .saturating_mul(n)
            .saturating_mul(row)
            .saturating_mul(es)
    };
    if out.len() != want(idx.len()) || x.data.len() != want(dim) {
        bail!(
            Graph,
            "Gather buffers do not match the shapes {} and {}",
            dims_str(x.dims),
            idx.len()
        );
    }
    if out.is_empty() {
        return Ok(());
    }
    // `[u8; N]` has alignment 1 and both lengths are multiples of N.
    match es {
        1 => gather_rows::<I, [u8; 1]>(
            idx,
            bytemuck::cast_slice(x.data),
            bytemuck::cast_slice_mut(out),
            dim,
            row,
        ),
        2 => gather_rows::<I, [u8; 2]>(
            idx,
            bytemuck::cast_slice(x.data),
            bytemuck::cast_slice_mut(out),
            dim,
            row,
        ),
        4 => gather_rows::<I, [u8; 4]>(
            idx,
            bytemuck::cast_slice(x.data),
            bytemuck::cast_slice_mut(out),
            dim,
            row,
        ),
        _ => gather_rows::<I, [u8; 8]>(
            idx,
            bytemuck::cast_slice(x.data),
            bytemuck::cast_slice_mut(out),
            dim,
            row,
        ),
    }
    Ok(())
}

impl Op for Gather {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, i) = (req(inputs, 0)?, req(inputs, 1)?);
        if !matches!(i.dtype, DType::I64 | DType::I32) {
            bail!(Graph, "Gather indices must be i64 or i32, are {}", i.dtype);
        }
        let a = axis(self.axis, x.rank())?;
        let mut shape: Shape = x.shape[..a].to_vec();
        shape.extend(i.shape.iter().cloned());
        shape.extend(x.shape[a + 1..].iter().cloned());
        Ok(vec![Fact::new(x.dtype, shape)])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (x, i) = (req(inputs, 0)?, req(inputs, 1)?);
        let a = axis(self.axis, x.rank())?;
        let out = out0(outputs)?;
        match i.dtype {
            DType::I64 => gather_typed(i.as_slice::<i64>()?, x, out.data, a),
            DType::I32 => gather_typed(i.as_slice::<i32>()?, x, out.data, a),
            d => bail!(Graph, "Gather indices must be i64 or i32, are {d}"),
        }
    }
}

pub fn build_gather(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Gather {
        axis: a.int("axis", 0)?,
    }))
}

// ---------------------------------------------------------------- Concat

#[derive(Debug)]
struct Concat {
    axis: i64,
}

/// Two facts of one dim that must agree: a known size wins over a symbol.
fn merge_dim(a: &Dim, b: &Dim, what: &dyn Fn() -> String) -> Result<Dim> {
    Ok(match (a, b) {
        (Dim::Known(x), Dim::Known(y)) if x != y => bail!(Graph, "{}", what()),
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Sym(s), _) if &**s != "?" => a.clone(),
        _ => b.clone(),
    })
}

impl Op for Concat {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let ins: Vec<&Fact> = inputs.iter().flatten().collect();
        let first = *ins
            .first()
            .ok_or_else(|| Error::Graph("Concat has no inputs".into()))?;
        let r = first.rank();
        let a = axis(self.axis, r)?;
        let mut shape = first.shape.clone();
        let mut total = Some(0usize);
        for (k, f) in ins.iter().enumerate() {
            if f.dtype != first.dtype {
                bail!(
                    Graph,
                    "Concat input {k} is {}, input 0 is {}",
                    f.dtype,
                    first.dtype
                );
            }
            if f.rank() != r {
                bail!(
                    Graph,
                    "Concat input {k} has shape {}, input 0 has {}",
                    shape_str(&f.shape),
                    shape_str(&first.shape)
                );
            }
            for d in 0..r {
                if d == a {
                    total = match (&f.shape[d], total) {
                        (Dim::Known(n), Some(t)) => t.checked_add(*n),
                        _ => None,
                    };
                } else {
                    let what = || {
                        format!(
                            "Concat input {k} has shape {}, input 0 has {} (they may differ only on axis {a})",
                            shape_str(&f.shape),
                            shape_str(&first.shape)
                        )
                    };
                    shape[d] = merge_dim(&shape[d], &f.shape[d], &what)?;
                }
            }
        }
        shape[a] = match total {
            Some(t) => Dim::Known(t),
            None if ins.len() == 1 => first.shape[a].clone(),
            None => Dim::unknown(),
        };
        Ok(vec![Fact::new(first.dtype, shape)])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let out = out0(outputs)?;
        let r = out.dims.len();
        let a = axis(self.axis, r)?;
        let es = out.dtype.size();
        let inner = numel(&out.dims[a + 1..])?.saturating_mul(es);
        let outer = numel(&out.dims[..a])?;
        let mut total = 0usize;
        for x in inputs.iter().flatten() {
            let same = x.rank() == r && (0..r).all(|d| d == a || x.dims[d] == out.dims[d]);
            if !same || x.dtype != out.dtype || x.data.len() != numel(x.dims)?.saturating_mul(es) {
                bail!(
                    Graph,
                    "Concat input {} does not fit the output {}",
                    dims_str(x.dims),
                    dims_str(out.dims)
                );
            }
            total = total.saturating_add(x.dims[a]);
        }
        if total != out.dims[a]
            || out.data.len() != outer.saturating_mul(total).saturating_mul(inner)
        {
            bail!(
                Graph,
                "Concat inputs sum to {total} on axis {a}, the output {} disagrees",
                dims_str(out.dims)
            );
        }
        let out_row = total * inner;
        if out_row == 0 {
            return Ok(());
        }
        // (input bytes, offset in an output row, bytes per row) per input
        let parts = || {
            inputs.iter().flatten().scan(0, |off, x| {
                let chunk = x.dims[a] * inner;
                let at = *off;
                *off += chunk;
                Some((x.data, at, chunk))
            })
        };
        // Any byte range of the output is a run of pieces of input rows, so
        // threads take ranges of whole cache lines (for as many bytes as
        // other ops split floats).
        let threads = if out.data.len() >= 4 * PAR_MIN_ELEMS {
            ctx.threads
        } else {
            1
        };
        par_pieces(threads, out.data, 64, |start, dst| {
            let end = start + dst.len();
            for row in start / out_row..end.div_ceil(out_row) {
                let base = row * out_row;
                for (src, at, chunk) in parts() {
                    let (lo, hi) = ((base + at).max(start), (base + at + chunk).min(end));
                    if lo < hi {
                        let from = row * chunk + (lo - base - at);
                        dst[lo - start..hi - start].copy_from_slice(&src[from..from + (hi - lo)]);
                    }
                }
            }
            Ok(())
        })
    }
}

pub fn build_concat(a: &Attrs) -> Result<Box<dyn Op>> {
    if a.get("axis").is_none() {
        bail!(Graph, "Concat needs the attribute 'axis'");
    }
    Ok(Box::new(Concat {
        axis: a.int("axis", 0)?,
    }))
}

// ---------------------------------------------------------------- Split

/// Split(data, split?) along `axis` into `num_outputs` pieces (the importer
/// always sets `num_outputs`). Without sizes, pieces are `ceil(dim / n)`
/// long and the last is shorter (opset 18).
#[derive(Debug)]
struct Split {
    axis: i64,
    num_outputs: Option<usize>,
}

impl Split {
    /// Equal pieces of a known dim.
    fn even(&self, n: usize, dim: usize) -> Result<Vec<usize>> {
        let chunk = dim.div_ceil(n);
        let last = dim as i128 - (chunk as i128) * (n as i128 - 1);
        if last < 0 {
            bail!(
                Graph,
                "cannot split a dim of {dim} into {n} pieces of {chunk}"
            );
        }
        let mut v = vec![chunk; n];
        v[n - 1] = last as usize;
        Ok(v)
    }
}

impl Op for Split {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let a = axis(self.axis, x.rank())?;
        let dims: Vec<Dim> = match opt(inputs, 1) {
            Some(f) => match int_list(f, "Split split")? {
                Some(sizes) => {
                    if let Some(n) = self.num_outputs
                        && n != sizes.len()
                    {
                        bail!(
                            Graph,
                            "Split sizes {sizes:?} do not match num_outputs = {n}"
                        );
                    }
                    let mut sum = 0i128;
                    for &s in &sizes {
                        if s < 0 {
                            bail!(Graph, "Split sizes {sizes:?} contain a negative size");
                        }
                        sum += s as i128;
                    }
                    if let Dim::Known(d) = x.shape[a]
                        && sum != d as i128
                    {
                        bail!(
                            Graph,
                            "Split sizes {sizes:?} sum to {sum}, the dim on axis {a} is {d}"
                        );
                    }
                    sizes
                        .iter()
                        .map(|&s| to_dim(s, "Split split").map(Dim::Known))
                        .collect::<Result<_>>()?
                }
                None => unknown_dims(
                    self.num_outputs
                        .map_or_else(|| list_len(f, "Split split"), Ok)?,
                ),
            },
            None => {
                let n = self.num_outputs.ok_or_else(|| {
                    Error::Graph(
                        "Split needs the attribute 'num_outputs' or a 'split' input".into(),
                    )
                })?;
                match &x.shape[a] {
                    Dim::Known(d) => self.even(n, *d)?.into_iter().map(Dim::Known).collect(),
                    s if n == 1 => vec![s.clone()],
                    _ => unknown_dims(n),
                }
            }
        };
        if dims.is_empty() {
            bail!(Graph, "Split makes no outputs");
        }
        Ok(dims
            .into_iter()
            .map(|d| {
                let mut s = x.shape.clone();
                s[a] = d;
                Fact::new(x.dtype, s)
            })
            .collect())
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let a = axis(self.axis, x.rank())?;
        let inner = numel(&x.dims[a + 1..])?.saturating_mul(x.dtype.size());
        let outer = numel(&x.dims[..a])?;
        let dim = x.dims[a];
        let row = dim.saturating_mul(inner);
        if x.data.len() != outer.saturating_mul(row) {
            bail!(
                Graph,
                "Split input holds {} bytes, shape {} disagrees",
                x.data.len(),
                dims_str(x.dims)
            );
        }
        let mut off = 0usize;
        for out in outputs.iter_mut() {
            let same = out.dims.len() == x.rank()
                && (0..x.rank()).all(|d| d == a || x.dims[d] == out.dims[d]);
            let n = out.dims.get(a).copied().unwrap_or(0);
            if !same
                || out.dtype != x.dtype
                || off.saturating_add(n) > dim
                || out.data.len() != outer * n * inner
            {
                bail!(
                    Graph,
                    "Split output {} does not fit the input {}",
                    dims_str(out.dims),
                    dims_str(x.dims)
                );
            }
            let chunk = n * inner;
            if chunk > 0 {
                for (src, dst) in x
                    .data
                    .chunks_exact(row)
                    .zip(out.data.chunks_exact_mut(chunk))
                {
                    dst.copy_from_slice(&src[off * inner..off * inner + chunk]);
                }
            }
            off += n;
        }
        Ok(())
    }
}

pub fn build_split(a: &Attrs) -> Result<Box<dyn Op>> {
    let num_outputs = match a.get("num_outputs") {
        None => None,
        Some(_) => match a.int("num_outputs", 0)? {
            n @ 1..=65536 => Some(n as usize),
            n => bail!(
                Graph,
                "attribute 'num_outputs' must be in 1..=65536, is {n}"
            ),
        },
    };
    Ok(Box::new(Split {
        axis: a.int("axis", 0)?,
        num_outputs,
    }))
}

#[cfg(test)]
#[path = "tests/shape_index.rs"]
mod tests;
