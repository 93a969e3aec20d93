//! Elementwise ops: unary activations and math, broadcasting binary
//! arithmetic and comparisons, variadic Max/Min, and Where.
//!
//! Hot loops never `match` per element: each op picks its closure once and
//! hands it to a generic loop (`map`, `zip_broadcast`), so every op gets its
//! own loop that LLVM can vectorise. Transcendentals come from
//! [`kernels::math`](crate::kernels::math); `Unary::f32` keeps the scalar
//! definitions the tests check them against.

use super::broadcast::{broadcast_dims, broadcast_shapes, broadcast_strides, for_each_run};
use super::{Ctx, Fact, Op, opt, par_pieces, req};
use crate::dtype::{DType, Element};
use crate::graph::Attrs;
use crate::kernels::{generic, math};
use crate::tensor::{TensorMut, TensorRef, dims_str, numel};
use crate::{Error, Result};

// ---------------------------------------------------------------- unary

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    HardSigmoid(f32, f32),
    HardSwish,
    Neg,
    Exp,
    Log,
    Sqrt,
    Erf,
    Abs,
    Reciprocal,
    /// Exact GELU: `x·½·(1 + erf(x/√2))`.
    Gelu,
    /// GELU's tanh approximation: `x·½·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
}

/// `max(x, lo)` and `min(x, hi)` as compare-and-select: NaN passes through
/// (as ONNX's reference, numpy, has it), and they vectorise everywhere,
/// where `f32::max`/`min` (NaN-ignoring) are a call to `fmaxf`/`fminf` per
/// element in wasm32.
#[inline(always)]
fn at_least(x: f32, lo: f32) -> f32 {
    if x < lo { lo } else { x }
}
#[inline(always)]
fn at_most(x: f32, hi: f32) -> f32 {
    if x > hi { hi } else { x }
}
/// `x` clamped to `[lo, hi]`, NaN passing through (like `f32::clamp`).
#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    at_most(at_least(x, lo), hi)
}

/// `f` over a slice in place: one loop per closure, vectorised where `f` is
/// simple enough.
#[inline(always)]
fn map(xs: &mut [f32], f: impl Fn(f32) -> f32) {
    xs.iter_mut().for_each(|x| *x = f(*x));
}

impl Unary {
    /// The scalar definition (the reference for [`Unary::apply_f32`]).
    pub fn f32(self, x: f32) -> f32 {
        match self {
            Unary::Relu => at_least(x, 0.0),
            Unary::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::HardSigmoid(a, b) => clamp(a * x + b, 0.0, 1.0),
            // ONNX: x·max(0, min(1, αx + β)), α = 1/6, β = ½.
            Unary::HardSwish => x * clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0),
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Erf => generic::erf(x),
            Unary::Abs => x.abs(),
            Unary::Reciprocal => 1.0 / x,
            Unary::Gelu => x * 0.5 * (1.0 + generic::erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Unary::GeluTanh => {
                let u = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                x * 0.5 * (1.0 + u.tanh())
            }
        }
    }

    /// Integer version where the op is defined on integers.
    fn int(self, x: i64) -> Option<i64> {
        match self {
            Unary::Relu => Some(x.max(0)),
            Unary::Neg => Some(x.wrapping_neg()),
            Unary::Abs => Some(x.wrapping_abs()),
            _ => None,
        }
    }

    /// Apply to a whole f32 slice (the fused-activation entry point too).
    pub fn apply_f32(self, xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            unsafe { self.apply_f32_avx2(xs) };
            return;
        }
        self.apply_f32_impl(xs)
    }

    /// The same loops compiled for AVX2 (8 lanes instead of SSE's 4; no
    /// contraction into FMA, so results are the same bits).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn apply_f32_avx2(self, xs: &mut [f32]) {
        self.apply_f32_impl(xs)
    }

    #[inline(always)]
    fn apply_f32_impl(self, xs: &mut [f32]) {
        match self {
            Unary::Relu => map(xs, |x| at_least(x, 0.0)),
            Unary::LeakyRelu(a) => map(xs, |x| if x < 0.0 { a * x } else { x }),
            Unary::Sigmoid => math::sigmoid(xs),
            Unary::Tanh => math::tanh(xs),
            Unary::HardSigmoid(a, b) => map(xs, |x| clamp(a * x + b, 0.0, 1.0)),
            Unary::HardSwish => map(xs, |x| x * clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)),
            Unary::Neg => map(xs, |x| -x),
            Unary::Exp => math::exp(xs),
            Unary::Log => map(xs, f32::ln),
            Unary::Sqrt => map(xs, f32::sqrt),
            Unary::Erf => math::erf(xs),
            Unary::Abs => map(xs, f32::abs),
            Unary::Reciprocal => map(xs, |x| 1.0 / x),
            Unary::Gelu => math::gelu(xs),
            Unary::GeluTanh => math::gelu_tanh(xs),
        }
    }
}

fn ints_map<T: Element + TryFrom<i64> + Into<i64>>(u: Unary, x: &[T], y: &mut [T]) -> Result<()> {
    for (o, &i) in y.iter_mut().zip(x) {
        let v = u
            .int(i.into())
            .ok_or_else(|| Error::Unsupported(format!("{u:?} on integers")))?;
        *o = T::try_from(v).unwrap_or_default();
    }
    Ok(())
}

impl Op for Unary {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let int_ok = self.int(0).is_some() && matches!(x.dtype, DType::I32 | DType::I64);
        if x.dtype != DType::F32 && !int_ok {
            return Err(Error::Unsupported(format!(
                "{:?} on {} tensors",
                self, x.dtype
            )));
        }
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        match x.dtype {
            DType::F32 => {
                let (xs, y) = (x.f32()?, outputs[0].f32()?);
                if xs.len() != y.len() || xs.len() != numel(x.dims)? {
                    return Err(Error::Graph(format!(
                        "{self:?}: {} input values for shape {}, {} outputs",
                        xs.len(),
                        dims_str(x.dims),
                        y.len()
                    )));
                }
                // Pieces of whole 16-float chunks: the same bits as one pass.
                par_pieces(ctx.threads, y, 16, |start, piece| {
                    piece.copy_from_slice(&xs[start..start + piece.len()]);
                    self.apply_f32(piece);
                    Ok(())
                })
            }
            DType::I64 => ints_map(
                *self,
                x.as_slice::<i64>()?,
                outputs[0].as_slice_mut::<i64>()?,
            ),
            DType::I32 => ints_map(
                *self,
                x.as_slice::<i32>()?,
                outputs[0].as_slice_mut::<i32>()?,
            ),
            d => Err(Error::Unsupported(format!("{self:?} on {d}"))),
        }
    }
}

fn unary(u: Unary) -> Result<Box<dyn Op>> {
    Ok(Box::new(u))
}

pub fn build_relu(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Relu)
}
pub fn build_leaky_relu(a: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::LeakyRelu(a.float("alpha", 0.01)?))
}
pub fn build_sigmoid(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Sigmoid)
}
pub fn build_tanh(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Tanh)
}
pub fn build_hard_sigmoid(a: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::HardSigmoid(
        a.float("alpha", 0.2)?,
        a.float("beta", 0.5)?,
    ))
}
pub fn build_hard_swish(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::HardSwish)
}
pub fn build_neg(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Neg)
}
pub fn build_exp(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Exp)
}
pub fn build_log(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Log)
}
pub fn build_sqrt(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Sqrt)
}
pub fn build_erf(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Erf)
}
pub fn build_abs(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Abs)
}
pub fn build_reciprocal(_: &Attrs) -> Result<Box<dyn Op>> {
    unary(Unary::Reciprocal)
}
/// Gelu (opset 20): attribute `approximate` is "none" (erf) or "tanh".
pub fn build_gelu(a: &Attrs) -> Result<Box<dyn Op>> {
    match a.string("approximate", "none")?.as_str() {
        "none" => unary(Unary::Gelu),
        "tanh" => unary(Unary::GeluTanh),
        other => Err(Error::Graph(format!(
            "Gelu: attribute 'approximate' must be \"none\" or \"tanh\", is \"{other}\""
        ))),
    }
}

// ---------------------------------------------------------------- fused activation
//
// Conv, ConvTranspose, MatMul and Gemm take an `activation` attribute
// (set by fusion passes) and apply it in place on their output.

/// An activation fused into the op that produces its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    None,
    Unary(Unary),
    /// Exact GELU: `x·½·(1 + erf(x/√2))`.
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `u(x)·scale + shift`: a unary activation followed by a scalar affine
    /// (PP-LCNet's learnable affine block after each HardSwish). The
    /// product and the sum are rounded separately, as the Mul and Add nodes
    /// they replace are.
    UnaryAffine(Unary, f32, f32),
    /// `x·scale + shift` with no activation before it (attention's scores
    /// divided by √d), rounded in two steps like the nodes it replaces.
    Affine(f32, f32),
}

const ACTIVATIONS: &str =
    "relu, leaky_relu, sigmoid, tanh, hard_sigmoid, hard_swish, gelu, gelu_tanh, clip";

impl Activation {
    /// From `activation` / `activation_alpha` / `activation_beta`.
    /// Parameters: leaky_relu alpha (default 0.01); hard_sigmoid alpha, beta
    /// (0.2, 0.5); clip alpha = min, beta = max (default -inf, +inf).
    /// `activation_scale` / `activation_shift` (default 1, 0) add a scalar
    /// affine after the activation; only after the unary ones or none (not
    /// gelu, gelu_tanh, clip).
    pub fn from_attrs(a: &Attrs) -> Result<Activation> {
        let base = Activation::base_from_attrs(a)?;
        let (scale, shift) = (
            a.float("activation_scale", 1.0)?,
            a.float("activation_shift", 0.0)?,
        );
        if scale == 1.0 && shift == 0.0 {
            return Ok(base);
        }
        match base {
            Activation::Unary(u) => Ok(Activation::UnaryAffine(u, scale, shift)),
            Activation::None => Ok(Activation::Affine(scale, shift)),
            other => Err(Error::Unsupported(format!(
                "attributes 'activation_scale'/'activation_shift' need no 'activation' or one of relu, leaky_relu, sigmoid, tanh, hard_sigmoid, hard_swish, not {other:?}"
            ))),
        }
    }

    fn base_from_attrs(a: &Attrs) -> Result<Activation> {
        let name = a.string("activation", "")?;
        let alpha = |d: f32| a.float("activation_alpha", d);
        let beta = |d: f32| a.float("activation_beta", d);
        Ok(match name.as_str() {
            "" => Activation::None,
            "relu" => Activation::Unary(Unary::Relu),
            "leaky_relu" => Activation::Unary(Unary::LeakyRelu(alpha(0.01)?)),
            "sigmoid" => Activation::Unary(Unary::Sigmoid),
            "tanh" => Activation::Unary(Unary::Tanh),
            "hard_sigmoid" => Activation::Unary(Unary::HardSigmoid(alpha(0.2)?, beta(0.5)?)),
            "hard_swish" => Activation::Unary(Unary::HardSwish),
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "clip" => Activation::Clip(alpha(f32::NEG_INFINITY)?, beta(f32::INFINITY)?),
            other => {
                return Err(Error::Unsupported(format!(
                    "attribute 'activation': fused activation '{other}' is not supported (expected one of: {ACTIVATIONS})"
                )));
            }
        })
    }

    /// Apply in place.
    #[inline]
    pub fn apply(self, xs: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Unary(u) => u.apply_f32(xs),
            Activation::Gelu => math::gelu(xs),
            Activation::GeluTanh => math::gelu_tanh(xs),
            Activation::Clip(lo, hi) => map(xs, |x| clamp(x, lo, hi)),
            Activation::UnaryAffine(u, scale, shift) => {
                u.apply_f32(xs);
                map(xs, |x| x * scale + shift);
            }
            Activation::Affine(scale, shift) => map(xs, |x| x * scale + shift),
        }
    }
}

// ---------------------------------------------------------------- Clip

/// Clip(x, min?, max?): bounds are optional scalar inputs (opset ≥ 11; the
/// importer turns older attribute bounds into constant inputs).
#[derive(Debug)]
struct Clip;

fn scalar_f32(t: Option<&TensorRef<'_>>, what: &str) -> Result<Option<f32>> {
    match t {
        None => Ok(None),
        Some(t) if t.numel() == 1 => Ok(Some(t.to_f32_vec()?[0])),
        Some(t) => Err(Error::Graph(format!(
            "{what} must be a scalar, has {} elements",
            t.numel()
        ))),
    }
}

impl Op for Clip {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        super::expect_dtype(x, DType::F32, "Clip input")?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?.f32()?;
        let lo = scalar_f32(opt(inputs, 1), "Clip min")?.unwrap_or(f32::NEG_INFINITY);
        let hi = scalar_f32(opt(inputs, 2), "Clip max")?.unwrap_or(f32::INFINITY);
        for (y, &v) in outputs[0].f32()?.iter_mut().zip(x) {
            *y = clamp(v, lo, hi);
        }
        Ok(())
    }
}

pub fn build_clip(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Clip))
}

// ---------------------------------------------------------------- binary

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    Greater,
}

impl BinOp {
    fn is_compare(self) -> bool {
        matches!(self, BinOp::Equal | BinOp::Less | BinOp::Greater)
    }
}

/// Arithmetic that never panics: integer division by zero gives 0, integer
/// overflow wraps. One function per op, so each op gets its own loop.
trait Arith: Element {
    const TWO: Self;
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn div(a: Self, b: Self) -> Self;
    fn pow(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
}

/// `impl Arith` from one expression per op over operands `a` and `b`.
#[rustfmt::skip]
macro_rules! arith {
    ($t:ty, two: $two:expr, |$a:ident, $b:ident| {
        add: $add:expr, sub: $sub:expr, mul: $mul:expr, div: $div:expr,
        pow: $pow:expr, max: $max:expr, min: $min:expr $(,)?
    }) => {
        #[allow(unused_comparisons)]
        impl Arith for $t {
            const TWO: $t = $two;
            #[inline(always)] fn add($a: $t, $b: $t) -> $t { $add }
            #[inline(always)] fn sub($a: $t, $b: $t) -> $t { $sub }
            #[inline(always)] fn mul($a: $t, $b: $t) -> $t { $mul }
            #[inline(always)] fn div($a: $t, $b: $t) -> $t { $div }
            #[inline(always)] fn pow($a: $t, $b: $t) -> $t { $pow }
            #[inline(always)] fn max($a: $t, $b: $t) -> $t { $max }
            #[inline(always)] fn min($a: $t, $b: $t) -> $t { $min }
        }
    };
}

// Max/Min give NaN if either operand is NaN (numpy's maximum, as ONNX's reference).
arith!(f32, two: 2.0, |a, b| {
    add: a + b,
    sub: a - b,
    mul: a * b,
    div: a / b,
    pow: a.powf(b),
    max: if a > b || a.is_nan() { a } else { b },
    min: if a < b || a.is_nan() { a } else { b },
});

macro_rules! int_arith {
    ($t:ty) => {
        arith!($t, two: 2, |a, b| {
            add: a.wrapping_add(b),
            sub: a.wrapping_sub(b),
            mul: a.wrapping_mul(b),
            div: a.checked_div(b).unwrap_or(0),
            pow: if b < 0 { 0 } else { a.wrapping_pow(u32::try_from(b).unwrap_or(u32::MAX)) },
            max: Ord::max(a, b),
            min: Ord::min(a, b),
        });
    };
}
int_arith!(i64);
int_arith!(i32);
int_arith!(u8);
int_arith!(i8);

#[derive(Debug)]
struct Binary {
    op: BinOp,
}

/// `o = f(x, y)` with `x` (dims `xd`) and `y` (dims `yd`) broadcast to the
/// output. Whole-tensor and scalar cases get plain loops; the rest goes run
/// by run along the innermost dim.
#[inline(always)]
fn zip_broadcast<T: Copy, U: Copy>(
    (x, xd): (&[T], &[usize]),
    (y, yd): (&[T], &[usize]),
    o: &mut [U],
    f: impl Fn(T, T) -> U + Copy,
) -> Result<()> {
    let od = broadcast_dims(&[xd, yd])?;
    let n = numel(&od)?;
    if x.len() != numel(xd)? || y.len() != numel(yd)? || o.len() != n {
        return Err(Error::Graph(format!(
            "elementwise: {} and {} values for shapes {} and {}, {} outputs for {}",
            x.len(),
            y.len(),
            dims_str(xd),
            dims_str(yd),
            o.len(),
            dims_str(&od)
        )));
    }
    // An input with as many values as the output is laid out like it.
    match (x.len() == n, y.len() == n) {
        (true, true) => {
            for ((o, &a), &b) in o.iter_mut().zip(x).zip(y) {
                *o = f(a, b);
            }
            return Ok(());
        }
        (true, false) if y.len() == 1 => {
            let b = y[0];
            for (o, &a) in o.iter_mut().zip(x) {
                *o = f(a, b);
            }
            return Ok(());
        }
        (false, true) if x.len() == 1 => {
            let a = x[0];
            for (o, &b) in o.iter_mut().zip(y) {
                *o = f(a, b);
            }
            return Ok(());
        }
        _ => {}
    }
    let (sx, sy) = (broadcast_strides(xd, &od), broadcast_strides(yd, &od));
    for_each_run(&od, [&sx, &sy], |start, [ox, oy], [ix, iy], len| {
        let o = &mut o[start..start + len];
        match (ix, iy) {
            (1, 1) => {
                for ((o, &a), &b) in o.iter_mut().zip(&x[ox..ox + len]).zip(&y[oy..oy + len]) {
                    *o = f(a, b);
                }
            }
            (1, 0) => {
                let b = y[oy];
                for (o, &a) in o.iter_mut().zip(&x[ox..ox + len]) {
                    *o = f(a, b);
                }
            }
            (0, 1) => {
                let a = x[ox];
                for (o, &b) in o.iter_mut().zip(&y[oy..oy + len]) {
                    *o = f(a, b);
                }
            }
            _ => {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = f(x[ox + j * ix], y[oy + j * iy]);
                }
            }
        }
    });
    Ok(())
}

/// [`zip_broadcast`] over pieces of the output split along its first dim
/// longer than 1 (the dims before it are 1 in every operand), on up to
/// `threads` threads (see [`par_pieces`]). Without the `threads` feature
/// (wasm) just `zip_broadcast`: no second inlined copy of every loop.
fn zip_broadcast_par<T: Copy + Send + Sync, U: Copy + Send>(
    threads: usize,
    (x, xd): (&[T], &[usize]),
    (y, yd): (&[T], &[usize]),
    o: &mut [U],
    f: impl Fn(T, T) -> U + Copy + Send + Sync,
) -> Result<()> {
    #[cfg(feature = "threads")]
    if threads > 1 && o.len() >= super::PAR_MIN_ELEMS {
        let od = broadcast_dims(&[xd, yd])?;
        let axis = od.iter().position(|&d| d > 1);
        let sizes_ok = x.len() == numel(xd)? && y.len() == numel(yd)? && o.len() == numel(&od)?;
        if let (Some(a), true) = (axis, sizes_ok) {
            let r = od.len();
            let pad = |d: &[usize]| -> Vec<usize> {
                let mut p = vec![1; r - d.len()];
                p.extend_from_slice(d);
                p
            };
            let (px, py) = (pad(xd), pad(yd));
            let inner = numel(&od[a + 1..])?;
            let (ix, iy) = (numel(&px[a + 1..])?, numel(&py[a + 1..])?);
            return par_pieces(threads, o, inner, |start, piece| {
                let (r0, rows) = (start / inner, piece.len() / inner);
                // an operand's rows r0..r0+rows along axis a, or all of it
                // where it is broadcast along a
                let sub = |len: usize, p: &[usize], inn: usize| {
                    if p[a] == 1 {
                        (p.to_vec(), 0..len)
                    } else {
                        let mut d = p.to_vec();
                        d[a] = rows;
                        (d, r0 * inn..(r0 + rows) * inn)
                    }
                };
                let (xdd, xr) = sub(x.len(), &px, ix);
                let (ydd, yr) = sub(y.len(), &py, iy);
                zip_broadcast((&x[xr], &xdd), (&y[yr], &ydd), piece, f)
            });
        }
    }
    let _ = threads;
    zip_broadcast((x, xd), (y, yd), o, f)
}

fn binary_kernel<T: Arith + Send + Sync>(
    op: BinOp,
    a: TensorRef<'_>,
    b: TensorRef<'_>,
    out: &mut TensorMut<'_>,
    threads: usize,
) -> Result<()> {
    let (x, y) = ((a.as_slice::<T>()?, a.dims), (b.as_slice::<T>()?, b.dims));
    let o = out.as_slice_mut::<T>()?;
    let t = threads;
    match op {
        BinOp::Add => zip_broadcast_par(t, x, y, o, T::add),
        BinOp::Sub => zip_broadcast_par(t, x, y, o, T::sub),
        BinOp::Mul => zip_broadcast_par(t, x, y, o, T::mul),
        BinOp::Div => zip_broadcast_par(t, x, y, o, T::div),
        // x² is common (variance) and exact as a product
        BinOp::Pow if y.0 == [T::TWO] => zip_broadcast_par(t, x, y, o, |p, _| T::mul(p, p)),
        BinOp::Pow => zip_broadcast_par(t, x, y, o, T::pow),
        BinOp::Max => zip_broadcast_par(t, x, y, o, T::max),
        BinOp::Min => zip_broadcast_par(t, x, y, o, T::min),
        BinOp::Equal | BinOp::Less | BinOp::Greater => Err(Error::Graph(format!(
            "{op:?} is a comparison, not arithmetic"
        ))),
    }
}

fn compare_kernel<T: Element>(
    op: BinOp,
    a: TensorRef<'_>,
    b: TensorRef<'_>,
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let (x, y) = ((a.as_slice::<T>()?, a.dims), (b.as_slice::<T>()?, b.dims));
    let o: &mut [u8] = out.data;
    match op {
        BinOp::Equal => zip_broadcast(x, y, o, |p, q| (p == q) as u8),
        BinOp::Less => zip_broadcast(x, y, o, |p, q| (p < q) as u8),
        BinOp::Greater => zip_broadcast(x, y, o, |p, q| (p > q) as u8),
        _ => Err(Error::Graph(format!("{op:?} is not a comparison"))),
    }
}

impl Op for Binary {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (req(inputs, 0)?, req(inputs, 1)?);
        let pow_mixed = self.op == BinOp::Pow && a.dtype == DType::F32;
        if a.dtype != b.dtype && !pow_mixed {
            return Err(Error::Graph(format!(
                "{:?} operands have different dtypes: {} and {}",
                self.op, a.dtype, b.dtype
            )));
        }
        let shape = broadcast_shapes(&[&a.shape, &b.shape])?;
        let dtype = if self.op.is_compare() {
            DType::Bool
        } else {
            a.dtype
        };
        if !self.op.is_compare() && matches!(a.dtype, DType::Bool | DType::F16 | DType::BF16) {
            return Err(Error::Unsupported(format!(
                "{:?} on {} tensors",
                self.op, a.dtype
            )));
        }
        Ok(vec![Fact::new(dtype, shape)])
    }
    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let threads = ctx.threads;
        let (a, b) = (*req(inputs, 0)?, *req(inputs, 1)?);
        let out = &mut outputs[0];
        if self.op.is_compare() {
            return match a.dtype {
                DType::F32 => compare_kernel::<f32>(self.op, a, b, out),
                DType::I64 => compare_kernel::<i64>(self.op, a, b, out),
                DType::I32 => compare_kernel::<i32>(self.op, a, b, out),
                DType::I8 => compare_kernel::<i8>(self.op, a, b, out),
                DType::U8 | DType::Bool => compare_kernel::<u8>(self.op, a, b, out),
                d => Err(Error::Unsupported(format!("{:?} on {d}", self.op))),
            };
        }
        if self.op == BinOp::Pow && a.dtype == DType::F32 && b.dtype != DType::F32 {
            let exp = b.to_f32_vec()?;
            let bt = TensorRef {
                dtype: DType::F32,
                dims: b.dims,
                data: bytemuck::cast_slice(&exp),
            };
            return binary_kernel::<f32>(self.op, a, bt, out, threads);
        }
        match a.dtype {
            DType::F32 => binary_kernel::<f32>(self.op, a, b, out, threads),
            DType::I64 => binary_kernel::<i64>(self.op, a, b, out, threads),
            DType::I32 => binary_kernel::<i32>(self.op, a, b, out, threads),
            DType::U8 => binary_kernel::<u8>(self.op, a, b, out, threads),
            DType::I8 => binary_kernel::<i8>(self.op, a, b, out, threads),
            d => Err(Error::Unsupported(format!("{:?} on {d}", self.op))),
        }
    }
}

fn binary(op: BinOp) -> Result<Box<dyn Op>> {
    Ok(Box::new(Binary { op }))
}

pub fn build_add(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Add)
}
pub fn build_sub(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Sub)
}
pub fn build_mul(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Mul)
}
pub fn build_div(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Div)
}
pub fn build_pow(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Pow)
}
pub fn build_equal(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Equal)
}
pub fn build_less(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Less)
}
pub fn build_greater(_: &Attrs) -> Result<Box<dyn Op>> {
    binary(BinOp::Greater)
}

// ---------------------------------------------------------------- Max / Min (variadic)

#[derive(Debug)]
struct Variadic {
    op: BinOp,
}

impl Op for Variadic {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let first = req(inputs, 0)?;
        let mut shapes = Vec::new();
        for f in inputs.iter().flatten() {
            if f.dtype != first.dtype {
                return Err(Error::Graph(format!(
                    "{:?} inputs differ in dtype",
                    self.op
                )));
            }
            shapes.push(&f.shape);
        }
        Ok(vec![Fact::new(first.dtype, broadcast_shapes(&shapes)?)])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let ins: Vec<TensorRef<'_>> = inputs.iter().flatten().copied().collect();
        let out = &mut outputs[0];
        match out.dtype {
            DType::F32 => variadic_kernel::<f32>(self.op, &ins, out),
            DType::I64 => variadic_kernel::<i64>(self.op, &ins, out),
            DType::I32 => variadic_kernel::<i32>(self.op, &ins, out),
            DType::U8 => variadic_kernel::<u8>(self.op, &ins, out),
            DType::I8 => variadic_kernel::<i8>(self.op, &ins, out),
            d => Err(Error::Unsupported(format!("{:?} on {d}", self.op))),
        }
    }
}

fn variadic_kernel<T: Arith>(
    op: BinOp,
    ins: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
) -> Result<()> {
    match op {
        BinOp::Max => fold_inputs(ins, out, T::max),
        BinOp::Min => fold_inputs(ins, out, T::min),
        _ => Err(Error::Graph(format!("{op:?} is not variadic"))),
    }
}

/// `f` folded over the inputs, broadcasting as it goes.
fn fold_inputs<T: Element>(
    ins: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
    f: impl Fn(T, T) -> T + Copy,
) -> Result<()> {
    let Some((first, rest)) = ins.split_first() else {
        return Err(Error::Graph("Max/Min needs an input".into()));
    };
    let mut acc: Vec<T> = first.as_slice::<T>()?.to_vec();
    let mut dims: Vec<usize> = first.dims.to_vec();
    for t in rest {
        let nd = broadcast_dims(&[&dims, t.dims])?;
        let mut next = vec![T::default(); numel(&nd)?];
        zip_broadcast((&acc, &dims), (t.as_slice::<T>()?, t.dims), &mut next, f)?;
        (acc, dims) = (next, nd.to_vec());
    }
    let out_dims = out.dims;
    let o = out.as_slice_mut::<T>()?;
    if dims != out_dims || o.len() != acc.len() {
        return Err(Error::Graph(format!(
            "Max/Min: inputs broadcast to {}, output is {}",
            dims_str(&dims),
            dims_str(out_dims)
        )));
    }
    o.copy_from_slice(&acc);
    Ok(())
}

pub fn build_max(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Variadic { op: BinOp::Max }))
}
pub fn build_min(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Variadic { op: BinOp::Min }))
}

// ---------------------------------------------------------------- Where

#[derive(Debug)]
struct Where;

impl Op for Where {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (c, x, y) = (req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?);
        super::expect_dtype(c, DType::Bool, "Where condition")?;
        if x.dtype != y.dtype {
            return Err(Error::Graph(format!(
                "Where branches differ: {} vs {}",
                x.dtype, y.dtype
            )));
        }
        Ok(vec![Fact::new(
            x.dtype,
            broadcast_shapes(&[&c.shape, &x.shape, &y.shape])?,
        )])
    }
    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (c, x, y) = (*req(inputs, 0)?, *req(inputs, 1)?, *req(inputs, 2)?);
        let out = &mut outputs[0];
        match x.dtype.size() {
            1 => where_kernel::<u8>(c, x, y, out),
            2 => where_kernel::<u16>(c, x, y, out),
            4 => where_kernel::<u32>(c, x, y, out),
            8 => where_kernel::<u64>(c, x, y, out),
            _ => Err(Error::Unsupported(format!("Where on {}", x.dtype))),
        }
    }
}

/// Where over elements of one size: `T` is the plain integer of that size,
/// so one loop serves every dtype.
fn where_kernel<T: bytemuck::Pod>(
    c: TensorRef<'_>,
    x: TensorRef<'_>,
    y: TensorRef<'_>,
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let cast_err = |e| Error::Graph(format!("Where: misaligned data: {e:?}"));
    let xs: &[T] = bytemuck::try_cast_slice(x.data).map_err(cast_err)?;
    let ys: &[T] = bytemuck::try_cast_slice(y.data).map_err(cast_err)?;
    let o: &mut [T] = bytemuck::try_cast_slice_mut(out.data).map_err(cast_err)?;
    let cs: &[u8] = c.data;
    let od = broadcast_dims(&[c.dims, x.dims, y.dims])?;
    if od.as_slice() != out.dims
        || o.len() != numel(&od)?
        || cs.len() != numel(c.dims)?
        || xs.len() != numel(x.dims)?
        || ys.len() != numel(y.dims)?
    {
        return Err(Error::Graph(format!(
            "Where: data does not match shapes {}, {} and {} (output {})",
            dims_str(c.dims),
            dims_str(x.dims),
            dims_str(y.dims),
            dims_str(out.dims)
        )));
    }
    let (sc, sx, sy) = (
        broadcast_strides(c.dims, &od),
        broadcast_strides(x.dims, &od),
        broadcast_strides(y.dims, &od),
    );
    for_each_run(&od, [&sc, &sx, &sy], |start, [oc, ox, oy], steps, len| {
        let o = &mut o[start..start + len];
        if steps == [1, 1, 1] {
            let (cr, xr, yr) = (&cs[oc..oc + len], &xs[ox..ox + len], &ys[oy..oy + len]);
            for (((o, &k), &a), &b) in o.iter_mut().zip(cr).zip(xr).zip(yr) {
                *o = if k != 0 { a } else { b };
            }
        } else {
            let [ic, ix, iy] = steps;
            for (j, o) in o.iter_mut().enumerate() {
                *o = if cs[oc + j * ic] != 0 {
                    xs[ox + j * ix]
                } else {
                    ys[oy + j * iy]
                };
            }
        }
    });
    Ok(())
}

pub fn build_where(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Where))
}

#[cfg(test)]
#[path = "tests/elementwise.rs"]
mod tests;
