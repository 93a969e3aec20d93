//! Elementwise ops: unary activations and math, broadcasting binary
//! arithmetic and comparisons, variadic Max/Min, and Where.

use super::broadcast::{broadcast_dims, broadcast_shapes, broadcast_strides, for_each_run};
use super::{Ctx, Fact, Op, opt, req};
use crate::dtype::{DType, Element};
use crate::graph::Attrs;
use crate::kernels::generic;
use crate::tensor::{TensorMut, TensorRef};
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
}

impl Unary {
    #[inline]
    pub fn f32(self, x: f32) -> f32 {
        match self {
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Erf => generic::erf(x),
            Unary::Abs => x.abs(),
            Unary::Reciprocal => 1.0 / x,
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
        match self {
            Unary::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
            _ => xs.iter_mut().for_each(|x| *x = self.f32(*x)),
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
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        match x.dtype {
            DType::F32 => {
                let y = outputs[0].f32()?;
                y.copy_from_slice(x.f32()?);
                self.apply_f32(y);
                Ok(())
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
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
}

const ACTIVATIONS: &str = "relu, leaky_relu, sigmoid, tanh, hard_sigmoid, hard_swish, gelu, clip";

impl Activation {
    /// From `activation` / `activation_alpha` / `activation_beta`.
    /// Parameters: leaky_relu alpha (default 0.01); hard_sigmoid alpha, beta
    /// (0.2, 0.5); clip alpha = min, beta = max (default -inf, +inf).
    pub fn from_attrs(a: &Attrs) -> Result<Activation> {
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
            Activation::Gelu => xs.iter_mut().for_each(|x| {
                *x = *x * 0.5 * (1.0 + generic::erf(*x * std::f32::consts::FRAC_1_SQRT_2))
            }),
            Activation::Clip(lo, hi) => xs.iter_mut().for_each(|x| *x = x.max(lo).min(hi)),
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
            *y = v.max(lo).min(hi);
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
/// overflow wraps.
trait Arith: Element {
    fn apply(op: BinOp, a: Self, b: Self) -> Self;
}

impl Arith for f32 {
    #[inline]
    fn apply(op: BinOp, a: f32, b: f32) -> f32 {
        match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Pow => a.powf(b),
            BinOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            BinOp::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            BinOp::Equal | BinOp::Less | BinOp::Greater => 0.0,
        }
    }
}

macro_rules! int_arith {
    ($t:ty) => {
        impl Arith for $t {
            #[inline]
            #[allow(unused_comparisons)]
            fn apply(op: BinOp, a: $t, b: $t) -> $t {
                match op {
                    BinOp::Add => a.wrapping_add(b),
                    BinOp::Sub => a.wrapping_sub(b),
                    BinOp::Mul => a.wrapping_mul(b),
                    BinOp::Div => a.checked_div(b).unwrap_or(0),
                    BinOp::Pow => {
                        if b < 0 {
                            0
                        } else {
                            a.wrapping_pow(b.min(u32::MAX as $t) as u32)
                        }
                    }
                    BinOp::Max => a.max(b),
                    BinOp::Min => a.min(b),
                    BinOp::Equal | BinOp::Less | BinOp::Greater => 0,
                }
            }
        }
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

fn binary_kernel<T: Arith>(
    op: BinOp,
    a: TensorRef<'_>,
    b: TensorRef<'_>,
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let (x, y) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
    let o = out.as_slice_mut::<T>()?;
    if a.dims == b.dims {
        for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
            *o = T::apply(op, x, y);
        }
        return Ok(());
    }
    if y.len() == 1 && x.len() == o.len() {
        let y = y[0];
        for (o, &x) in o.iter_mut().zip(x) {
            *o = T::apply(op, x, y);
        }
        return Ok(());
    }
    let od = broadcast_dims(&[a.dims, b.dims])?;
    let (sa, sb) = (
        broadcast_strides(a.dims, &od),
        broadcast_strides(b.dims, &od),
    );
    for_each_run(&od, [&sa, &sb], |start, [oa, ob], [ia, ib], len| {
        let o = &mut o[start..start + len];
        match (ia, ib) {
            (1, 1) => {
                for ((o, &x), &y) in o.iter_mut().zip(&x[oa..oa + len]).zip(&y[ob..ob + len]) {
                    *o = T::apply(op, x, y);
                }
            }
            (1, 0) => {
                let y = y[ob];
                for (o, &x) in o.iter_mut().zip(&x[oa..oa + len]) {
                    *o = T::apply(op, x, y);
                }
            }
            (0, 1) => {
                let x = x[oa];
                for (o, &y) in o.iter_mut().zip(&y[ob..ob + len]) {
                    *o = T::apply(op, x, y);
                }
            }
            _ => {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = T::apply(op, x[oa + j * ia], y[ob + j * ib]);
                }
            }
        }
    });
    Ok(())
}

fn compare_kernel<T: Element>(
    op: BinOp,
    a: TensorRef<'_>,
    b: TensorRef<'_>,
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let (x, y) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
    let od = broadcast_dims(&[a.dims, b.dims])?;
    let (sa, sb) = (
        broadcast_strides(a.dims, &od),
        broadcast_strides(b.dims, &od),
    );
    let o: &mut [u8] = out.data;
    for_each_run(&od, [&sa, &sb], |start, [oa, ob], [ia, ib], len| {
        for j in 0..len {
            let (p, q) = (x[oa + j * ia], y[ob + j * ib]);
            o[start + j] = match op {
                BinOp::Equal => p == q,
                BinOp::Less => p < q,
                _ => p > q,
            } as u8;
        }
    });
    Ok(())
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
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
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
        if self.op == BinOp::Pow && b.dtype != DType::F32 {
            let exp = b.to_f32_vec()?;
            let bt = TensorRef {
                dtype: DType::F32,
                dims: b.dims,
                data: bytemuck::cast_slice(&exp),
            };
            return binary_kernel::<f32>(self.op, a, bt, out);
        }
        match a.dtype {
            DType::F32 => binary_kernel::<f32>(self.op, a, b, out),
            DType::I64 => binary_kernel::<i64>(self.op, a, b, out),
            DType::I32 => binary_kernel::<i32>(self.op, a, b, out),
            DType::U8 => binary_kernel::<u8>(self.op, a, b, out),
            DType::I8 => binary_kernel::<i8>(self.op, a, b, out),
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
        let dims = out.dims.to_vec();
        // Fold pairwise into the output: out = in0 (broadcast), then out = op(out, in_i).
        let dtype = out.dtype;
        let mut acc = crate::tensor::AlignedBuf::zeroed(out.data.len());
        {
            let mut first = TensorMut {
                dtype,
                dims: &dims,
                data: acc.as_bytes_mut(),
            };
            let zero_like = vec![0u8; ins[0].data.len()];
            let zero = TensorRef {
                dtype,
                dims: ins[0].dims,
                data: &zero_like,
            };
            // in0 + 0 broadcast to the output shape
            Binary { op: BinOp::Add }.eval(
                &mut Ctx::new(1),
                &[Some(ins[0]), Some(zero)],
                std::slice::from_mut(&mut first),
            )?;
        }
        if ins.len() == 1 {
            out.data.copy_from_slice(acc.as_bytes());
            return Ok(());
        }
        for (k, t) in ins.iter().enumerate().skip(1) {
            let prev = TensorRef {
                dtype,
                dims: &dims,
                data: acc.as_bytes(),
            };
            let mut next = crate::tensor::AlignedBuf::zeroed(out.data.len());
            {
                let mut o = TensorMut {
                    dtype,
                    dims: &dims,
                    data: next.as_bytes_mut(),
                };
                Binary { op: self.op }.eval(
                    &mut Ctx::new(1),
                    &[Some(prev), Some(*t)],
                    std::slice::from_mut(&mut o),
                )?;
            }
            acc = next;
            let _ = k;
        }
        out.data.copy_from_slice(acc.as_bytes());
        Ok(())
    }
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
        let od: super::broadcast::Dims = out.dims.iter().copied().collect();
        let es = x.dtype.size();
        let (sc, sx, sy) = (
            broadcast_strides(c.dims, &od),
            broadcast_strides(x.dims, &od),
            broadcast_strides(y.dims, &od),
        );
        let o: &mut [u8] = out.data;
        for_each_run(
            &od,
            [&sc, &sx, &sy],
            |start, [oc, ox, oy], [ic, ix, iy], len| {
                for j in 0..len {
                    let src = if c.data[oc + j * ic] != 0 {
                        &x.data[(ox + j * ix) * es..][..es]
                    } else {
                        &y.data[(oy + j * iy) * es..][..es]
                    };
                    o[(start + j) * es..][..es].copy_from_slice(src);
                }
            },
        );
        Ok(())
    }
}

pub fn build_where(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Where))
}
