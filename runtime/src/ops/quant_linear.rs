//! ONNX's quantization ops, so that models quantized by other tools (ONNX
//! Runtime's `quantize_dynamic` / `quantize_static`, QDQ and QOperator
//! formats) import: `QuantizeLinear`, `DequantizeLinear`,
//! `DynamicQuantizeLinear`, `MatMulInteger` and `ConvInteger`. Integer in,
//! integer out: the two products sum exact i32 products, nothing goes
//! through f32.
//!
//! Quantized values are u8 or i8 (the zero point's dtype; u8 without one,
//! or `output_dtype`). Scales and zero points are scalars (per tensor) or
//! 1-D along `axis` (per axis); blocked quantization (`block_size`) is not
//! supported and says so.

use super::conv::{Geo, Window, check_ranks, group_attr};
use super::matmul::{Geometry, first_out, matmul_shape};
use super::{Ctx, Fact, Op, axis as norm_axis, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::int8;
use crate::tensor::{TensorMut, TensorRef, dims_str, shape_str};
use crate::{Error, Result};

pub(super) fn err(msg: String) -> Error {
    Error::Graph(msg)
}

/// The per-axis layout of a scale or zero point against `x`'s dims: `None`
/// for one value (per tensor), else `(axis, inner)` with `len` values along
/// `axis` and `inner` elements per value run.
fn per_axis(
    op: &str,
    what: &str,
    len: usize,
    dims: &[usize],
    axis: i64,
) -> Result<Option<(usize, usize)>> {
    if len == 1 {
        return Ok(None); // per tensor, whatever `axis` says
    }
    let a = norm_axis(axis, dims.len()).map_err(|e| err(format!("{op}: {e}")))?;
    if len != dims[a] {
        return Err(err(format!(
            "{op}: {what} has {len} values; per axis it needs {} (axis {a} of {})",
            dims[a],
            dims_str(dims)
        )));
    }
    Ok(Some((a, dims[a + 1..].iter().product())))
}

/// Index into a scale/zero point for element `i` of `x`.
#[inline]
fn slot(layout: Option<(usize, usize)>, len: usize, i: usize) -> usize {
    match layout {
        None => 0,
        Some((_, inner)) => (i / inner.max(1)) % len,
    }
}

/// Scale values (f32), checked finite.
pub(super) fn scales<'a>(op: &str, t: &TensorRef<'a>) -> Result<&'a [f32]> {
    if t.dtype != DType::F32 {
        return Err(err(format!(
            "{op}: the scale is {}, only f32 is supported",
            t.dtype
        )));
    }
    if t.dims.len() > 1 {
        return Err(err(format!(
            "{op}: the scale is {}: only per-tensor and per-axis (1-D) scales are supported (blocked quantization is not)",
            dims_str(t.dims)
        )));
    }
    t.as_slice::<f32>()
}

/// Zero points as i32, and their dtype (u8 or i8).
fn zero_points(op: &str, t: Option<&TensorRef<'_>>) -> Result<(Vec<i32>, Option<DType>)> {
    let Some(t) = t else {
        return Ok((vec![0], None));
    };
    if t.dims.len() > 1 {
        return Err(err(format!(
            "{op}: the zero point is {}: only per-tensor and per-axis (1-D) are supported",
            dims_str(t.dims)
        )));
    }
    let v = match t.dtype {
        DType::U8 => t.as_slice::<u8>()?.iter().map(|&z| z as i32).collect(),
        DType::I8 => t.as_slice::<i8>()?.iter().map(|&z| z as i32).collect(),
        DType::I32 => t.as_slice::<i32>()?.to_vec(),
        other => {
            return Err(err(format!(
                "{op}: zero points of {other} are not supported (u8, i8)"
            )));
        }
    };
    Ok((v, Some(t.dtype)))
}

/// The scale and zero point inputs (1 and 2) of Quantize/DequantizeLinear,
/// checked against each other and against x's dims along `axis`; `at(i)`
/// gives element `i`'s pair.
struct Params<'a> {
    scales: &'a [f32],
    zero_points: Vec<i32>,
    zero_point_dtype: Option<DType>,
    layout: Option<(usize, usize)>,
}

impl<'a> Params<'a> {
    fn of(
        op: &str,
        inputs: &[Option<TensorRef<'a>>],
        dims: &[usize],
        axis: i64,
    ) -> Result<Params<'a>> {
        let scales = scales(op, req(inputs, 1)?)?;
        let (zero_points, zero_point_dtype) = zero_points(op, opt(inputs, 2))?;
        let layout = per_axis(op, "the scale", scales.len(), dims, axis)?;
        if zero_points.len() != 1 && zero_points.len() != scales.len() {
            return Err(err(format!(
                "{op}: {} scales but {} zero points",
                scales.len(),
                zero_points.len()
            )));
        }
        Ok(Params {
            scales,
            zero_points,
            zero_point_dtype,
            layout,
        })
    }

    /// (scale, zero point) of element `i`.
    #[inline]
    fn at(&self, i: usize) -> (f32, i32) {
        let k = slot(self.layout, self.scales.len(), i);
        let z = self.zero_points[if self.zero_points.len() == 1 { 0 } else { k }];
        (self.scales[k], z)
    }
}

fn range_of(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::I8 => (-128.0, 127.0),
        _ => (0.0, 255.0),
    }
}

fn check_block_size(op: &str, a: &Attrs) -> Result<()> {
    match a.int("block_size", 0)? {
        0 => Ok(()),
        b => Err(Error::Unsupported(format!(
            "{op}: blocked quantization (block_size {b}) is not supported"
        ))),
    }
}

// ---------------------------------------------------------------- QuantizeLinear

/// `y = saturate(round_half_even(x / scale) + zero_point)`.
#[derive(Debug)]
struct QuantizeLinear {
    axis: i64,
    /// Output dtype when there is no zero point (`output_dtype`, else u8).
    default_out: DType,
}

impl Op for QuantizeLinear {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        if x.dtype != DType::F32 {
            return Err(err(format!(
                "QuantizeLinear: x is {}, only f32 is supported",
                x.dtype
            )));
        }
        let out = match opt(inputs, 2) {
            Some(z) if matches!(z.dtype, DType::U8 | DType::I8) => z.dtype,
            Some(z) => {
                return Err(err(format!(
                    "QuantizeLinear: zero points of {} are not supported (u8, i8)",
                    z.dtype
                )));
            }
            None => self.default_out,
        };
        Ok(vec![Fact::new(out, x.shape.clone())])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let op = "QuantizeLinear";
        let x = req(inputs, 0)?;
        let p = Params::of(op, inputs, x.dims, self.axis)?;
        let out = first_out(outputs, op)?;
        let (lo, hi) = range_of(out.dtype);
        let xs = x.as_slice::<f32>()?;
        if p.layout.is_none() && matches!(out.dtype, DType::U8 | DType::I8) {
            // One scale: the vectorized int8 quantizer (the same values;
            // NaN gives the lowest code). u8 is i8 shifted by 128.
            let (s, z) = p.at(0);
            let shift = if out.dtype == DType::U8 { 128 } else { 0 };
            let z8 = i8::try_from(z - shift).map_err(|_| {
                err(format!(
                    "{op}: zero point {z} is out of range for {}",
                    out.dtype
                ))
            })?;
            let flip = shift as u8;
            let mut buf = [0i8; 4096];
            for (xc, oc) in xs.chunks(buf.len()).zip(out.data.chunks_mut(buf.len())) {
                let b = &mut buf[..xc.len()];
                int8::quantize_f32_to_i8(xc, s, z8, b);
                for (o, &v) in oc.iter_mut().zip(b.iter()) {
                    *o = (v as u8) ^ flip;
                }
            }
            return Ok(());
        }
        let q = |i: usize, v: f32| -> f32 {
            let (s, z) = p.at(i);
            // (NaN stays NaN here and becomes 0 in the cast: ONNX leaves
            // it undefined.)
            ((v / s).round_ties_even() + z as f32).clamp(lo, hi)
        };
        match out.dtype {
            DType::U8 => {
                for (i, (o, &v)) in out.as_slice_mut::<u8>()?.iter_mut().zip(xs).enumerate() {
                    *o = q(i, v) as u8;
                }
            }
            DType::I8 => {
                for (i, (o, &v)) in out.as_slice_mut::<i8>()?.iter_mut().zip(xs).enumerate() {
                    *o = q(i, v) as i8;
                }
            }
            other => return Err(err(format!("{op}: output {other} is not supported"))),
        }
        Ok(())
    }
}

pub fn build_quantize_linear(a: &Attrs) -> Result<Box<dyn Op>> {
    check_block_size("QuantizeLinear", a)?;
    let default_out = match a.int("output_dtype", DType::U8.code() as i64)? {
        c if c == DType::U8.code() as i64 => DType::U8,
        c if c == DType::I8.code() as i64 => DType::I8,
        c => {
            return Err(Error::Unsupported(format!(
                "QuantizeLinear: output_dtype code {c} is not supported (u8, i8)"
            )));
        }
    };
    Ok(Box::new(QuantizeLinear {
        axis: a.int("axis", 1)?,
        default_out,
    }))
}

// ---------------------------------------------------------------- DequantizeLinear

/// `y = (x - zero_point) · scale`, in f32.
#[derive(Debug)]
struct DequantizeLinear {
    axis: i64,
}

impl Op for DequantizeLinear {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        if !matches!(x.dtype, DType::U8 | DType::I8 | DType::I32) {
            return Err(err(format!(
                "DequantizeLinear: x is {}, supported are u8, i8 and i32",
                x.dtype
            )));
        }
        Ok(vec![Fact::new(DType::F32, x.shape.clone())])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let op = "DequantizeLinear";
        let x = req(inputs, 0)?;
        let p = Params::of(op, inputs, x.dims, self.axis)?;
        if let Some(z) = p.zero_point_dtype.filter(|&z| z != x.dtype) {
            return Err(err(format!(
                "{op}: x is {} but the zero point is {z}",
                x.dtype
            )));
        }
        let out = first_out(outputs, op)?.as_slice_mut::<f32>()?;
        if p.layout.is_none() && matches!(x.dtype, DType::U8 | DType::I8) {
            // One scale: a plain loop that vectorizes.
            let (s, z) = p.at(0);
            let (f, shift) = if x.dtype == DType::U8 {
                (0x80u8, 128)
            } else {
                (0, 0)
            };
            let z = z - shift;
            for (o, &b) in out.iter_mut().zip(x.data) {
                *o = (((b ^ f) as i8) as i32 - z) as f32 * s;
            }
            return Ok(());
        }
        let y = |i: usize, v: i32| -> f32 {
            let (s, z) = p.at(i);
            (v - z) as f32 * s
        };
        match x.dtype {
            DType::U8 => x
                .as_slice::<u8>()?
                .iter()
                .enumerate()
                .zip(out.iter_mut())
                .for_each(|((i, &v), o)| *o = y(i, v as i32)),
            DType::I8 => x
                .as_slice::<i8>()?
                .iter()
                .enumerate()
                .zip(out.iter_mut())
                .for_each(|((i, &v), o)| *o = y(i, v as i32)),
            _ => x
                .as_slice::<i32>()?
                .iter()
                .enumerate()
                .zip(out.iter_mut())
                .for_each(|((i, &v), o)| *o = y(i, v)),
        }
        Ok(())
    }
}

pub fn build_dequantize_linear(a: &Attrs) -> Result<Box<dyn Op>> {
    check_block_size("DequantizeLinear", a)?;
    Ok(Box::new(DequantizeLinear {
        axis: a.int("axis", 1)?,
    }))
}

// ---------------------------------------------------------------- DynamicQuantizeLinear

/// x (f32) → (y u8, scale f32 scalar, zero point u8 scalar), the range
/// taken from x and widened to include 0 (ONNX's definition).
#[derive(Debug)]
struct DynamicQuantizeLinear;

impl Op for DynamicQuantizeLinear {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        if x.dtype != DType::F32 {
            return Err(err(format!(
                "DynamicQuantizeLinear: x is {}, only f32 is supported",
                x.dtype
            )));
        }
        Ok(vec![
            Fact::new(DType::U8, x.shape.clone()),
            Fact::new(DType::F32, vec![]),
            Fact::new(DType::U8, vec![]),
        ])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let xs = req(inputs, 0)?.as_slice::<f32>()?;
        if outputs.len() != 3 {
            return Err(err(format!(
                "DynamicQuantizeLinear: 3 outputs, got {}",
                outputs.len()
            )));
        }
        let (lo, hi) = xs
            .iter()
            .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(Error::Input(format!(
                "DynamicQuantizeLinear: the input's range [{lo}, {hi}] is not finite"
            )));
        }
        let scale = (hi - lo) / 255.0;
        let zp = if scale > 0.0 {
            (0.0 - lo / scale).round_ties_even().clamp(0.0, 255.0)
        } else {
            0.0
        };
        let (y, rest) = outputs.split_at_mut(1);
        for (o, &v) in y[0].as_slice_mut::<u8>()?.iter_mut().zip(xs) {
            *o = if scale > 0.0 {
                ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8
            } else {
                0
            };
        }
        rest[0].as_slice_mut::<f32>()?[0] = scale;
        rest[1].as_slice_mut::<u8>()?[0] = zp as u8;
        Ok(())
    }
}

pub fn build_dynamic_quantize_linear(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(DynamicQuantizeLinear))
}

// ---------------------------------------------------------------- MatMulInteger

/// `Σ_k (A[m,k] − a_zp) · (B[k,n] − b_zp)` in i32 (wrapping past 2³¹, as
/// i32 hardware does; each product fits), numpy-matmul shapes;
/// A and B u8 or i8; `a_zero_point` per tensor or per row of A (M values),
/// `b_zero_point` per tensor or per column of B (N values).
#[derive(Debug)]
struct MatMulInteger;

pub(super) fn ints<'a>(t: &TensorRef<'a>, what: &str) -> Result<Vec<i32>> {
    Ok(match t.dtype {
        DType::U8 => t.as_slice::<u8>()?.iter().map(|&v| v as i32).collect(),
        DType::I8 => t.as_slice::<i8>()?.iter().map(|&v| v as i32).collect(),
        other => {
            return Err(err(format!("{what} is {other}, supported are u8 and i8")));
        }
    })
}

/// Optional integer zero point input `i`: one value, or `len` (one per
/// `per`); absent means 0.
pub(super) fn int_zero_point(
    inputs: &[Option<TensorRef<'_>>],
    i: usize,
    what: &str,
    len: usize,
    per: &str,
) -> Result<Vec<i32>> {
    let Some(t) = opt(inputs, i) else {
        return Ok(vec![0]);
    };
    let v = ints(t, what)?;
    if v.len() == 1 || v.len() == len {
        Ok(v)
    } else {
        Err(err(format!(
            "{what} has {} values; it is one, or one per {per} ({len})",
            v.len()
        )))
    }
}

impl Op for MatMulInteger {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (req(inputs, 0)?, req(inputs, 1)?);
        for (f, what) in [(a, "A"), (b, "B")] {
            if !matches!(f.dtype, DType::U8 | DType::I8) {
                return Err(err(format!(
                    "MatMulInteger: {what} is {}, supported are u8 and i8",
                    f.dtype
                )));
            }
        }
        Ok(vec![Fact::new(
            DType::I32,
            matmul_shape(&a.shape, &b.shape)?,
        )])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (a, b) = (req(inputs, 0)?, req(inputs, 1)?);
        let out = first_out(outputs, "MatMulInteger")?;
        let g = Geometry::new(a.dims, b.dims, out.dims)?;
        let (m, n) = (g.m, g.n);
        let (za, zb) = (
            int_zero_point(inputs, 2, "MatMulInteger: a_zero_point", m, "row of A")?,
            int_zero_point(inputs, 3, "MatMulInteger: b_zero_point", n, "column of B")?,
        );
        let (av, bv) = (ints(a, "MatMulInteger: A")?, ints(b, "MatMulInteger: B")?);
        matmul_integer(&av, &bv, &za, &zb, &g, out.as_slice_mut::<i32>()?);
        Ok(())
    }
}

/// `C = (A − za)·(B − zb)` in wrapping i32 for every batch of `g`; `za` is
/// one value or one per row of A, `zb` one or one per column of B.
pub(super) fn matmul_integer(
    av: &[i32],
    bv: &[i32],
    za: &[i32],
    zb: &[i32],
    g: &Geometry,
    c: &mut [i32],
) {
    let (m, k, n) = (g.m, g.k, g.n);
    let batches: usize = g.out_batch.iter().product();
    let mut row = vec![0i32; n];
    for bi in 0..batches {
        let (ia, ib) = g.operands(bi);
        let (am, bm) = (&av[ia * m * k..][..m * k], &bv[ib * k * n..][..k * n]);
        for r in 0..m {
            let zr = za[if za.len() == 1 { 0 } else { r }];
            row.fill(0);
            for kk in 0..k {
                let x = am[r * k + kk] - zr;
                if x == 0 {
                    continue;
                }
                let brow = &bm[kk * n..][..n];
                if zb.len() == 1 {
                    let z = zb[0];
                    row.iter_mut()
                        .zip(brow)
                        .for_each(|(o, &w)| *o = o.wrapping_add(x * (w - z)));
                } else {
                    row.iter_mut()
                        .zip(brow)
                        .zip(zb)
                        .for_each(|((o, &w), &z)| *o = o.wrapping_add(x * (w - z)));
                }
            }
            c[(bi * m + r) * n..][..n].copy_from_slice(&row);
        }
    }
}

pub fn build_matmul_integer(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(MatMulInteger))
}

// ---------------------------------------------------------------- ConvInteger

/// Conv of u8/i8 X and W in exact i32: `Σ (x − x_zp) · (w − w_zp)`, with
/// Conv's attributes (pads, strides, dilations, group, auto_pad). Padding
/// reads as `x_zp`, so it adds nothing. `x_zero_point` is per tensor,
/// `w_zero_point` per tensor or per output channel.
#[derive(Debug)]
struct ConvInteger {
    win: Window,
    group: usize,
}

/// The output shape of an integer conv (`ConvInteger`, `QLinearConv`) of
/// `x` by `w`, both u8 or i8 (`xw` names them in errors).
pub(super) fn integer_conv_shape(
    op: &str,
    (x, w): (&Fact, &Fact),
    xw: [&str; 2],
    win: &Window,
    g: usize,
) -> Result<Vec<crate::tensor::Dim>> {
    for (f, what) in [(x, xw[0]), (w, xw[1])] {
        if !matches!(f.dtype, DType::U8 | DType::I8) {
            return Err(err(format!(
                "{op}: {what} is {}, supported are u8 and i8",
                f.dtype
            )));
        }
    }
    let r = check_ranks(x, w)?;
    win.check_rank(r)?;
    if let (Some(c), Some(cg)) = (x.shape[1].known(), w.shape[1].known())
        && cg.checked_mul(g) != Some(c)
    {
        return Err(err(format!(
            "{op}: {} has {c} channels, {} {} with group {g} expects {}",
            xw[0],
            xw[1],
            shape_str(&w.shape),
            cg.saturating_mul(g)
        )));
    }
    let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
    for i in 0..r {
        let k = win.kernel_dim(i, w.shape[2 + i].known())?;
        shape.push(win.out_dim(i, r, &x.shape[2 + i], k)?);
    }
    Ok(shape)
}

impl Op for ConvInteger {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (req(inputs, 0)?, req(inputs, 1)?);
        let shape = integer_conv_shape("ConvInteger", (x, w), ["X", "W"], &self.win, self.group)?;
        Ok(vec![Fact::new(DType::I32, shape)])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (x, w) = (req(inputs, 0)?, req(inputs, 1)?);
        let (xv, wv) = (ints(x, "ConvInteger: X")?, ints(w, "ConvInteger: W")?);
        let (n, c, m) = (x.dims[0], x.dims[1], w.dims[0]);
        let g = self.group;
        let cg = w.dims[1];
        if cg * g != c || m % g != 0 {
            return Err(err(format!(
                "ConvInteger: X {} does not fit W {} with group {g}",
                dims_str(x.dims),
                dims_str(w.dims)
            )));
        }
        let (xz, wz) = (
            int_zero_point(inputs, 2, "ConvInteger: x_zero_point", 1, "tensor")?[0],
            int_zero_point(inputs, 3, "ConvInteger: w_zero_point", m, "output channel")?,
        );
        let geo: Geo = self.win.geo(&x.dims[2..], &w.dims[2..])?;
        let out = first_out(outputs, "ConvInteger")?;
        let y = out.as_slice_mut::<i32>()?;
        let (in_sp, out_sp, ks) = (geo.in_size(), geo.out_size(), geo.k_size());
        if y.len() != n * m * out_sp || xv.len() != n * c * in_sp || wv.len() != m * cg * ks {
            return Err(err(format!(
                "ConvInteger: buffers do not fit X {}, W {}",
                dims_str(x.dims),
                dims_str(w.dims)
            )));
        }
        conv_integer(&xv, &wv, xz, &wz, [n, c, m], g, &geo, y);
        Ok(())
    }
}

/// Grouped conv of `xv` `[N, C, …]` by `wv` `[M, C/g, taps]` in wrapping
/// i32: `Σ (x − xz)·(w − wz)`, padding adding nothing; `wz` one value or
/// one per output channel. The slices' lengths are checked by the caller.
pub(super) fn conv_integer(
    xv: &[i32],
    wv: &[i32],
    xz: i32,
    wz: &[i32],
    [n, c, m]: [usize; 3],
    g: usize,
    geo: &Geo,
    y: &mut [i32],
) {
    let (in_sp, out_sp, ks) = (geo.in_size(), geo.out_size(), geo.k_size());
    let cg = c / g;
    let [_, i1, i2] = geo.input;
    let [_, o1, o2] = geo.output;
    let [k0, k1, k2] = geo.kernel;
    let src = |o: usize, k: usize, a: usize| -> Option<usize> {
        let p = o * geo.stride[a] + k * geo.dilation[a];
        p.checked_sub(geo.pad_begin[a])
            .filter(|&p| p < geo.input[a])
    };
    for b in 0..n {
        for oc in 0..m {
            let grp = oc / (m / g);
            let z = wz[if wz.len() == 1 { 0 } else { oc }];
            let wk = &wv[oc * cg * ks..][..cg * ks];
            for (oi, yv) in y[(b * m + oc) * out_sp..][..out_sp].iter_mut().enumerate() {
                let (d, h, ww) = (oi / (o1 * o2), oi / o2 % o1, oi % o2);
                let mut acc = 0i32;
                for ic in 0..cg {
                    let xc = &xv[(b * c + grp * cg + ic) * in_sp..][..in_sp];
                    for kd in 0..k0 {
                        let Some(sd) = src(d, kd, 0) else { continue };
                        for kh in 0..k1 {
                            let Some(sh) = src(h, kh, 1) else { continue };
                            for kw in 0..k2 {
                                let Some(sw) = src(ww, kw, 2) else { continue };
                                let xq = xc[(sd * i1 + sh) * i2 + sw] - xz;
                                let wq = wk[((ic * k0 + kd) * k1 + kh) * k2 + kw] - z;
                                acc = acc.wrapping_add(xq * wq);
                            }
                        }
                    }
                }
                *yv = acc;
            }
        }
    }
}

pub fn build_conv_integer(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(ConvInteger {
        win: Window::parse(a, false)?,
        group: group_attr(a)?,
    }))
}
