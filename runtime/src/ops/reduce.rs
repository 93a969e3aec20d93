//! Reductions: `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`,
//! `ReduceProd`, `ReduceL1`, `ReduceL2`, `ReduceSumSquare`, `ReduceLogSum`,
//! `ReduceLogSumExp` in their opset-18 form (axes as an optional second i64
//! input; the importer turns the older `axes` attribute into that input), and
//! `ArgMax` / `ArgMin`.
//!
//! One walker serves every reduction: the input's dims are merged into
//! alternating runs of kept and reduced dims (size-1 dims dropped), and the
//! input is walked contiguously, each innermost run folded either into one
//! output element (innermost dim reduced: eight independent lanes, so the
//! loop vectorises and sums round like a pairwise sum) or elementwise into a
//! run of outputs (innermost dim kept). Reducing the last axis — the
//! LayerNorm-style pattern — is one pass of long contiguous rows.

use smallvec::SmallVec;

use super::broadcast::for_each_run;
use super::shape::{int_list, list_len, out0, unknown_dims};
use super::{Ctx, Fact, Op, axis, opt, req};
use crate::dtype::{DType, Element};
use crate::graph::Attrs;
use crate::tensor::{Dim, Shape, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result, bail};

/// Which reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSum,
    LogSumExp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sum => "ReduceSum",
            Kind::Mean => "ReduceMean",
            Kind::Max => "ReduceMax",
            Kind::Min => "ReduceMin",
            Kind::Prod => "ReduceProd",
            Kind::L1 => "ReduceL1",
            Kind::L2 => "ReduceL2",
            Kind::SumSquare => "ReduceSumSquare",
            Kind::LogSum => "ReduceLogSum",
            Kind::LogSumExp => "ReduceLogSumExp",
        }
    }

    fn supports(self, d: DType) -> bool {
        match d {
            DType::F32 => true,
            DType::I64 | DType::I32 => {
                matches!(self, Kind::Sum | Kind::Max | Kind::Min | Kind::Prod)
            }
            DType::U8 | DType::Bool => matches!(self, Kind::Max | Kind::Min),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------- the walker

/// Merged dims: (size, reduced) with size-1 dims dropped and neighbours of
/// the same kind joined.
type Merged = SmallVec<[(usize, bool); 8]>;

fn merge_dims(dims: &[usize], reduced: &[bool]) -> Merged {
    let mut m = Merged::new();
    for (&d, &r) in dims.iter().zip(reduced) {
        if d == 1 {
            continue;
        }
        match m.last_mut() {
            Some((n, lr)) if *lr == r => *n *= d,
            _ => m.push((d, r)),
        }
    }
    m
}

/// Call `f(x_run, out_offset, reduced)` for every innermost run of `x`:
/// a reduced run folds all of `x_run` into `out[out_offset]`, a kept run
/// folds `x_run[j]` into `out[out_offset + j]`.
fn walk<T: Copy>(x: &[T], dims: &[usize], reduced: &[bool], mut f: impl FnMut(&[T], usize, bool)) {
    let m = merge_dims(dims, reduced);
    let sizes: SmallVec<[usize; 8]> = m.iter().map(|p| p.0).collect();
    let mut in_strides: SmallVec<[usize; 8]> = SmallVec::from_elem(0, m.len());
    let mut out_strides: SmallVec<[usize; 8]> = SmallVec::from_elem(0, m.len());
    let (mut si, mut so) = (1usize, 1usize);
    for i in (0..m.len()).rev() {
        in_strides[i] = si;
        si *= m[i].0;
        if !m[i].1 {
            out_strides[i] = so;
            so *= m[i].0;
        }
    }
    let inner_reduced = m.last().is_some_and(|p| p.1);
    for_each_run(
        &sizes,
        [&in_strides, &out_strides],
        |_, [xo, oo], _, len| {
            f(&x[xo..xo + len], oo, inner_reduced);
        },
    );
}

/// Fold one contiguous run with eight independent accumulators.
#[inline]
fn fold_lanes<T: Copy>(
    xs: &[T],
    init: T,
    step: impl Fn(T, T) -> T,
    merge: impl Fn(T, T) -> T,
) -> T {
    let mut lanes = [init; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = step(lanes[k], c[k]);
        }
    }
    let mut acc = init;
    for &v in chunks.remainder() {
        acc = step(acc, v);
    }
    let l = lanes;
    let a = merge(merge(l[0], l[4]), merge(l[1], l[5]));
    let b = merge(merge(l[2], l[6]), merge(l[3], l[7]));
    merge(merge(a, b), acc)
}

/// Fold `x` into `out`: fill `out` with `init`, then `step(acc, x)` adds
/// one input and `merge(acc, acc)` joins two partial results. Callers pass
/// closures (not fn pointers) so each reduction gets its own inlined loop.
fn fold_into<T: Copy>(
    x: &[T],
    dims: &[usize],
    reduced: &[bool],
    out: &mut [T],
    init: T,
    step: impl Fn(T, T) -> T + Copy,
    merge: impl Fn(T, T) -> T + Copy,
) {
    out.fill(init);
    walk(x, dims, reduced, |run, o, red| {
        if red {
            out[o] = merge(out[o], fold_lanes(run, init, step, merge));
        } else {
            for (a, &v) in out[o..o + run.len()].iter_mut().zip(run) {
                *a = step(*a, v);
            }
        }
    });
}

/// Sum of `f(x)` over a contiguous slice, eight lanes (shared with LayerNorm).
#[inline]
pub(super) fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    fold_lanes(xs, 0.0, |a, v| a + f(v), |a, b| a + b)
}

/// Max that propagates NaN (as numpy and ONNX's reference do).
#[inline]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

#[inline]
fn min_nan(a: f32, b: f32) -> f32 {
    if b < a || b.is_nan() { b } else { a }
}

/// Integer element types: wrapping arithmetic, never a panic.
trait IntElem: Element + Ord {
    const MIN: Self;
    const MAX: Self;
    fn zero() -> Self;
    fn one() -> Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

macro_rules! int_elem {
    ($t:ty) => {
        impl IntElem for $t {
            const MIN: $t = <$t>::MIN;
            const MAX: $t = <$t>::MAX;
            fn zero() -> $t {
                0
            }
            fn one() -> $t {
                1
            }
            fn add(self, o: $t) -> $t {
                self.wrapping_add(o)
            }
            fn mul(self, o: $t) -> $t {
                self.wrapping_mul(o)
            }
        }
    };
}
int_elem!(i64);
int_elem!(i32);
int_elem!(u8);

fn reduce_int<T: IntElem>(
    kind: Kind,
    x: &[T],
    dims: &[usize],
    reduced: &[bool],
    out: &mut [T],
    bool_min_init: bool,
) -> Result<()> {
    let (add, mul) = (|a: T, b: T| a.add(b), |a: T, b: T| a.mul(b));
    let (max, min) = (|a: T, b: T| a.max(b), |a: T, b: T| a.min(b));
    match kind {
        Kind::Sum => fold_into(x, dims, reduced, out, T::zero(), add, add),
        Kind::Prod => fold_into(x, dims, reduced, out, T::one(), mul, mul),
        Kind::Max => fold_into(x, dims, reduced, out, T::MIN, max, max),
        // bool: min over nothing is true
        Kind::Min if bool_min_init => fold_into(x, dims, reduced, out, T::one(), min, min),
        Kind::Min => fold_into(x, dims, reduced, out, T::MAX, min, min),
        k => bail!(Unsupported, "{} on integers", k.name()),
    }
    Ok(())
}

fn reduce_f32(
    kind: Kind,
    ctx: &mut Ctx,
    x: &[f32],
    dims: &[usize],
    reduced: &[bool],
    out: &mut [f32],
) -> Result<()> {
    let add = |a: f32, b: f32| a + b;
    let mul = |a: f32, b: f32| a * b;
    let (d, r) = (dims, reduced);
    match kind {
        Kind::Sum | Kind::Mean | Kind::LogSum => fold_into(x, d, r, out, 0.0, add, add),
        Kind::Prod => fold_into(x, d, r, out, 1.0, mul, mul),
        Kind::Max | Kind::LogSumExp => fold_into(x, d, r, out, f32::NEG_INFINITY, max_nan, max_nan),
        Kind::Min => fold_into(x, d, r, out, f32::INFINITY, min_nan, min_nan),
        Kind::L1 => fold_into(x, d, r, out, 0.0, |a, b| a + b.abs(), add),
        Kind::L2 | Kind::SumSquare => fold_into(x, d, r, out, 0.0, |a, b| a + b * b, add),
    }
    match kind {
        Kind::Mean => {
            let count = dims
                .iter()
                .zip(reduced)
                .filter(|p| *p.1)
                .map(|p| *p.0)
                .product::<usize>() as f32;
            out.iter_mut().for_each(|v| *v /= count);
        }
        Kind::L2 => out.iter_mut().for_each(|v| *v = v.sqrt()),
        Kind::LogSum => out.iter_mut().for_each(|v| *v = v.ln()),
        Kind::LogSumExp => {
            // out holds the max; sum exp(x - max) into scratch, then combine.
            let sum = ctx.scratch(out.len());
            sum.fill(0.0);
            let max: &[f32] = out;
            walk(x, dims, reduced, |run, o, red| {
                if red {
                    let m = max[o];
                    sum[o] += sum_map(run, |v| (v - m).exp());
                } else {
                    for ((s, &m), &v) in sum[o..o + run.len()]
                        .iter_mut()
                        .zip(&max[o..o + run.len()])
                        .zip(run)
                    {
                        *s += (v - m).exp();
                    }
                }
            });
            for (v, &s) in out.iter_mut().zip(sum.iter()) {
                if v.is_finite() {
                    *v += s.ln();
                }
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------- the op

#[derive(Debug)]
struct Reduce {
    kind: Kind,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

impl Reduce {
    /// Which axes to reduce; `None` when the op is the identity (empty axes
    /// with `noop_with_empty_axes`). Allocation-free up to rank 8: it runs
    /// on every eval.
    fn mask(&self, rank: usize, axes: Option<&[i64]>) -> Result<Option<SmallVec<[bool; 8]>>> {
        let mut m: SmallVec<[bool; 8]> = SmallVec::from_elem(false, rank);
        match axes {
            Some(a) if !a.is_empty() => {
                for &ax in a {
                    let i = axis(ax, rank)
                        .map_err(|e| Error::Graph(format!("{} axes: {e}", self.kind.name())))?;
                    if m[i] {
                        bail!(
                            Graph,
                            "{} axes: axis {i} appears twice in {a:?}",
                            self.kind.name()
                        );
                    }
                    m[i] = true;
                }
            }
            _ if self.noop_with_empty_axes => return Ok(None),
            _ => m.fill(true),
        }
        Ok(Some(m))
    }

    fn out_shape<D: Clone>(&self, shape: &[D], mask: &[bool], one: D) -> SmallVec<[D; 8]> {
        shape
            .iter()
            .zip(mask)
            .filter_map(|(d, &r)| match (r, self.keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(one.clone()),
                (true, false) => None,
            })
            .collect()
    }
}

impl Op for Reduce {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let name = self.kind.name();
        let x = req(inputs, 0)?;
        if !self.kind.supports(x.dtype) {
            bail!(Unsupported, "{name} on {} tensors", x.dtype);
        }
        let r = x.rank();
        let axes = match opt(inputs, 1) {
            None => None,
            Some(f) => match int_list(f, &format!("{name} axes"))? {
                Some(v) => Some(v),
                None => {
                    // axes computed at run time: the rank is all we know
                    let k = list_len(f, &format!("{name} axes"))?;
                    if k > r {
                        bail!(Graph, "{name} reduces {k} axes of a rank-{r} input");
                    }
                    let rank = match (self.keepdims, k) {
                        (true, _) => r,
                        (false, 0) if self.noop_with_empty_axes => r,
                        (false, 0) => 0,
                        (false, k) => r - k,
                    };
                    return Ok(vec![Fact::new(x.dtype, unknown_dims(rank))]);
                }
            },
        };
        let shape: Shape = match self.mask(r, axes.as_deref())? {
            None => x.shape.clone(),
            Some(m) => {
                // an empty reduced dim is fine (the identity), except where
                // no identity exists
                if matches!(self.kind, Kind::Max | Kind::Min)
                    && matches!(x.dtype, DType::I64 | DType::I32)
                    && x.shape
                        .iter()
                        .zip(&m)
                        .any(|(d, &r)| r && *d == Dim::Known(0))
                {
                    bail!(
                        Graph,
                        "{name} over an empty axis of {} integers",
                        shape_str(&x.shape)
                    );
                }
                self.out_shape(&x.shape, &m, Dim::Known(1)).into_vec()
            }
        };
        Ok(vec![Fact::new(x.dtype, shape)])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let name = self.kind.name();
        let x = req(inputs, 0)?;
        let mut axes: SmallVec<[i64; 8]> = SmallVec::new();
        match opt(inputs, 1) {
            Some(t) if t.dtype == DType::I64 => axes.extend_from_slice(t.as_slice::<i64>()?),
            Some(t) if t.dtype == DType::I32 => {
                axes.extend(t.as_slice::<i32>()?.iter().map(|&v| v as i64))
            }
            Some(t) => bail!(Graph, "{name} axes must be an i64 tensor, is {}", t.dtype),
            None => {}
        }
        let out = out0(outputs)?;
        let mask = self.mask(x.rank(), Some(&axes))?;
        let want: SmallVec<[usize; 8]> = match &mask {
            None => x.dims.iter().copied().collect(),
            Some(m) => self.out_shape(x.dims, m, 1),
        };
        if out.dims != want.as_slice() || out.dtype != x.dtype {
            bail!(
                Graph,
                "{name}: output is {} {}, expected {} {}",
                out.dtype,
                dims_str(out.dims),
                x.dtype,
                dims_str(&want)
            );
        }
        let Some(mask) = mask else {
            return super::shape::copy_bytes(x.data, out.data);
        };
        let es = x.dtype.size();
        if x.data.len() != numel(x.dims)?.saturating_mul(es)
            || out.data.len() != numel(&want)?.saturating_mul(es)
        {
            bail!(
                Graph,
                "{name}: data sizes do not match input {} and output {}",
                dims_str(x.dims),
                dims_str(&want)
            );
        }
        match x.dtype {
            DType::F32 => reduce_f32(self.kind, ctx, x.f32()?, x.dims, &mask, out.f32()?),
            DType::I64 => reduce_int(
                self.kind,
                x.as_slice::<i64>()?,
                x.dims,
                &mask,
                out.as_slice_mut::<i64>()?,
                false,
            ),
            DType::I32 => reduce_int(
                self.kind,
                x.as_slice::<i32>()?,
                x.dims,
                &mask,
                out.as_slice_mut::<i32>()?,
                false,
            ),
            DType::U8 | DType::Bool => {
                let is_bool = x.dtype == DType::Bool;
                reduce_int::<u8>(self.kind, x.data, x.dims, &mask, out.data, is_bool)
            }
            d => bail!(Unsupported, "{name} on {d} tensors"),
        }
    }
}

fn build(kind: Kind, a: &Attrs) -> Result<Box<dyn Op>> {
    let flag = |key: &str, default: i64| -> Result<bool> {
        match a.int(key, default)? {
            0 => Ok(false),
            1 => Ok(true),
            v => bail!(Graph, "attribute '{key}' must be 0 or 1, is {v}"),
        }
    };
    if a.get("axes").is_some() {
        bail!(
            Graph,
            "{}: attribute 'axes' must be given as the second input (the importer converts it)",
            kind.name()
        );
    }
    Ok(Box::new(Reduce {
        kind,
        keepdims: flag("keepdims", 1)?,
        noop_with_empty_axes: flag("noop_with_empty_axes", 0)?,
    }))
}

pub fn build_reduce_sum(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::Sum, a)
}
pub fn build_reduce_mean(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::Mean, a)
}
pub fn build_reduce_max(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::Max, a)
}
pub fn build_reduce_min(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::Min, a)
}
pub fn build_reduce_prod(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::Prod, a)
}
pub fn build_reduce_l1(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::L1, a)
}
pub fn build_reduce_l2(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::L2, a)
}
pub fn build_reduce_sum_square(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::SumSquare, a)
}
pub fn build_reduce_log_sum(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::LogSum, a)
}
pub fn build_reduce_log_sum_exp(a: &Attrs) -> Result<Box<dyn Op>> {
    build(Kind::LogSumExp, a)
}

// ---------------------------------------------------------------- ArgMax / ArgMin

/// Index of the max (min) along `axis`, as i64; ties go to the first index,
/// or the last with `select_last_index`; NaN counts as the extreme.
#[derive(Debug)]
struct ArgReduce {
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
}

impl ArgReduce {
    fn op(&self) -> &'static str {
        if self.max { "ArgMax" } else { "ArgMin" }
    }
}

/// Values ArgMax/ArgMin compare.
trait Ordered: Element {
    fn nan(self) -> bool {
        false
    }
}
impl Ordered for f32 {
    fn nan(self) -> bool {
        self.is_nan()
    }
}
impl Ordered for i64 {}
impl Ordered for i32 {}
impl Ordered for u8 {}

fn arg_kernel<T: Ordered>(
    x: &[T],
    out: &mut [i64],
    (outer, n, inner): (usize, usize, usize),
    max: bool,
    last: bool,
) {
    for o in 0..outer {
        let base = o * n * inner;
        for i in 0..inner {
            let (mut best, mut at) = (x[base + i], 0usize);
            for j in 1..n {
                let v = x[base + j * inner + i];
                let better = if best.nan() {
                    last && v.nan()
                } else if v.nan() {
                    true
                } else if max {
                    v > best || (last && v == best)
                } else {
                    v < best || (last && v == best)
                };
                if better {
                    best = v;
                    at = j;
                }
            }
            out[o * inner + i] = at as i64;
        }
    }
}

impl Op for ArgReduce {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        if !matches!(x.dtype, DType::F32 | DType::I64 | DType::I32 | DType::U8) {
            bail!(Unsupported, "{} on {} tensors", self.op(), x.dtype);
        }
        let a = axis(self.axis, x.rank())
            .map_err(|e| Error::Graph(format!("{}: attribute 'axis': {e}", self.op())))?;
        if x.shape[a] == Dim::Known(0) {
            bail!(
                Graph,
                "{} along axis {a} of {}: the axis is empty",
                self.op(),
                shape_str(&x.shape)
            );
        }
        let mut shape = x.shape.clone();
        if self.keepdims {
            shape[a] = Dim::Known(1);
        } else {
            shape.remove(a);
        }
        Ok(vec![Fact::new(DType::I64, shape)])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let a = axis(self.axis, x.rank())?;
        let split = (numel(&x.dims[..a])?, x.dims[a], numel(&x.dims[a + 1..])?);
        let out = out0(outputs)?;
        let want = split.0.saturating_mul(split.2);
        if split.1 == 0 && want > 0 {
            bail!(
                Graph,
                "{}: axis {a} of {} is empty",
                self.op(),
                dims_str(x.dims)
            );
        }
        if out.numel() != want {
            bail!(
                Graph,
                "{}: output {} does not fit input {}",
                self.op(),
                dims_str(out.dims),
                dims_str(x.dims)
            );
        }
        if x.data.len() != numel(x.dims)?.saturating_mul(x.dtype.size()) {
            bail!(
                Graph,
                "{}: input data does not match {}",
                self.op(),
                dims_str(x.dims)
            );
        }
        let o = out.as_slice_mut::<i64>()?;
        if want == 0 {
            return Ok(());
        }
        let (m, l) = (self.max, self.last);
        match x.dtype {
            DType::F32 => arg_kernel(x.f32()?, o, split, m, l),
            DType::I64 => arg_kernel(x.as_slice::<i64>()?, o, split, m, l),
            DType::I32 => arg_kernel(x.as_slice::<i32>()?, o, split, m, l),
            DType::U8 => arg_kernel(x.data, o, split, m, l),
            d => bail!(Unsupported, "{} on {d} tensors", self.op()),
        }
        Ok(())
    }
}

fn build_arg(max: bool, a: &Attrs) -> Result<Box<dyn Op>> {
    let flag = |key: &str, default: i64| -> Result<bool> {
        match a.int(key, default)? {
            0 => Ok(false),
            1 => Ok(true),
            v => bail!(Graph, "attribute '{key}' must be 0 or 1, is {v}"),
        }
    };
    Ok(Box::new(ArgReduce {
        max,
        axis: a.int("axis", 0)?,
        keepdims: flag("keepdims", 1)?,
        last: flag("select_last_index", 0)?,
    }))
}

pub fn build_arg_max(a: &Attrs) -> Result<Box<dyn Op>> {
    build_arg(true, a)
}
pub fn build_arg_min(a: &Attrs) -> Result<Box<dyn Op>> {
    build_arg(false, a)
}

#[cfg(test)]
#[path = "tests/reduce.rs"]
mod tests;
