//! ONNX's static-quantization ops, `QLinearConv` and `QLinearMatMul`:
//! int8 (or u8) in, int8 (or u8) out, with the scales and zero points as
//! inputs. They are what ONNX Runtime's `quantize_static` writes in its
//! QOperator format, and what `morsel compress --quantize int8-static`
//! writes for convs, so a chain Conv→Relu→Conv stays in int8 between the
//! layers (a fused Relu is the output's saturation at its zero point).
//!
//! Arithmetic, as ONNX's reference: `acc = Σ (x − x_zp)·(w − w_zp)` exactly
//! in i32, plus the i32 bias (scale `x_scale·w_scale`); then
//! `y = saturate(round_half_even(acc · x_scale·w_scale/y_scale) + y_zp)`
//! (the product in f32; see [`int8::requant_rows`]).
//!
//! Fast path (the int8 GEMM kernels, the same blocking as `QConv`): `group`
//! 1, per-tensor `x`/`y` parameters, and a weight whose `w − w_zp` fits
//! `[-127, 127]` (every symmetric int8 weight; u8 weights with zero point
//! 128 unless a value is 0). A constant weight is converted and packed once.
//! Anything else (grouped convs, per-row `a` parameters, weights that do not
//! fit) runs an exact scalar i32 loop with the same result, much slower;
//! `morsel inspect` shows these as `QLinearConv`/`QLinearMatMul` either way.

use super::conv::{Geo, Window, check_len, group_attr};
use super::matmul::{Geometry, first_out, matmul_shape};
use super::qconv::{conv_blocks, pack_weight, scatter_columns, transpose};
use super::quant_linear::{
    conv_integer, err, int_zero_point, integer_conv_shape, ints, matmul_integer, scales,
};
use super::{Ctx, Fact, Op, PackOnce, opt, req};
use crate::Result;
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::int8::{self, PackedB};
use crate::tensor::{TensorMut, TensorRef, dims_str};

/// Byte flip between u8 and i8 codes: `u8 − 128` as i8 is `u8 ^ 0x80`.
fn flip(dtype: DType) -> u8 {
    if dtype == DType::U8 { 0x80 } else { 0 }
}

/// A zero point of `dtype` codes as the kernels' i8 (u8 codes shift by
/// 128, as [`flip`] does to the values).
fn signed_zero_point(op: &str, what: &str, z: i32, dtype: DType) -> Result<i8> {
    let shift = if flip(dtype) != 0 { 128 } else { 0 };
    i8::try_from(z - shift)
        .map_err(|_| err(format!("{op}: {what} {z} is out of range for {dtype}")))
}

/// Bytes of a kept packed weight.
fn kept_bytes(p: &PackOnce<Option<PackedB>>) -> usize {
    p.kept().and_then(|p| p.as_ref()).map_or(0, |p| p.bytes())
}

/// The integer value of a u8 or i8 byte.
fn code(b: u8, dtype: DType) -> i32 {
    if dtype == DType::U8 {
        b as i32
    } else {
        b as i8 as i32
    }
}

fn int8_dtype(op: &str, what: &str, d: DType) -> Result<()> {
    if matches!(d, DType::U8 | DType::I8) {
        Ok(())
    } else {
        Err(err(format!("{op}: {what} is {d}, supported are u8 and i8")))
    }
}

/// A per-tensor scale (one finite, positive value).
fn scalar_scale(op: &str, what: &str, t: &TensorRef<'_>) -> Result<f32> {
    let s = scales(op, t)?;
    match s {
        [v] if v.is_finite() && *v > 0.0 => Ok(*v),
        [v] => Err(err(format!(
            "{op}: {what} is {v}; it must be finite and > 0"
        ))),
        _ => Err(err(format!(
            "{op}: {what} has {} values; only one (per tensor) is supported",
            s.len()
        ))),
    }
}

/// A per-tensor zero point of input `i` (absent: 0) and its dtype.
fn scalar_zero_point(
    op: &str,
    what: &str,
    inputs: &[Option<TensorRef<'_>>],
    i: usize,
) -> Result<(i32, Option<DType>)> {
    let Some(t) = opt(inputs, i) else {
        return Ok((0, None));
    };
    let v = ints(t, &format!("{op}: {what}"))?;
    match v[..] {
        [z] => Ok((z, Some(t.dtype))),
        _ => Err(err(format!(
            "{op}: {what} has {} values; only one (per tensor) is supported",
            v.len()
        ))),
    }
}

/// Weight scales: one, or one per output channel (`m`), finite and > 0.
fn weight_scales(op: &str, t: &TensorRef<'_>, m: usize) -> Result<Vec<f32>> {
    let s = scales(op, t)?;
    if s.len() != 1 && s.len() != m {
        return Err(err(format!(
            "{op}: the weight scale has {} values; it is one, or one per output channel ({m})",
            s.len()
        )));
    }
    if let Some(v) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(err(format!(
            "{op}: a weight scale is {v}; scales must be finite and > 0"
        )));
    }
    Ok((0..m)
        .map(|j| s[if s.len() == 1 { 0 } else { j }])
        .collect())
}

/// The output's dtype: `y_zero_point`'s, else the input's.
fn out_dtype(inputs: &[Option<Fact>], y_zp: usize) -> DType {
    opt(inputs, y_zp).map_or_else(
        || inputs[0].as_ref().map_or(DType::U8, |f| f.dtype),
        |f| f.dtype,
    )
}

/// `w − w_zp` as i8 in `[-127, 127]`, `w` `[M, per]` with `wz` one value or
/// one per row; `None` if a value does not fit.
fn centered_weight(w: &TensorRef<'_>, wz: &[i32], m: usize) -> Result<Option<Vec<i8>>> {
    let per = w.data.len() / m.max(1);
    let mut out = Vec::with_capacity(w.data.len());
    for (i, &b) in w.data.iter().enumerate() {
        let v = code(b, w.dtype);
        let z = wz[if wz.len() == 1 { 0 } else { i / per.max(1) }];
        let d = v - z;
        if !(-127..=127).contains(&d) {
            return Ok(None);
        }
        out.push(d as i8);
    }
    Ok(Some(out))
}

/// Requantization multipliers `x_scale·w_scale[j] / y_scale`.
fn multipliers(xs: f32, ws: &[f32], ys: f32) -> Result<Vec<f32>> {
    let m: Vec<f32> = ws.iter().map(|&w| xs * w / ys).collect();
    match m.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(err(format!(
            "the requantization multiplier x_scale·w_scale/y_scale is {v}"
        ))),
        None => Ok(m),
    }
}

/// The optional i32 bias, `m` values.
fn int_bias<'a>(
    op: &str,
    inputs: &[Option<TensorRef<'a>>],
    i: usize,
    m: usize,
) -> Result<Option<&'a [i32]>> {
    let Some(b) = opt(inputs, i) else {
        return Ok(None);
    };
    if b.dtype != DType::I32 {
        return Err(err(format!(
            "{op}: the bias B is {}, it must be i32",
            b.dtype
        )));
    }
    let v = b.as_slice::<i32>()?;
    if v.len() != m {
        return Err(err(format!(
            "{op}: the bias B has {} values, expected {m}",
            v.len()
        )));
    }
    Ok(Some(v))
}

/// Requantize i32 results `acc` (`+ bias[col]`, columns cycling every
/// `cols` values when `per_col`, else by `inner`-long runs of a channel) to
/// output bytes, as [`int8::requant_rows`] does value by value.
fn requant_scalar(
    acc: &[i32],
    channel: impl Fn(usize) -> usize,
    bias: Option<&[i32]>,
    mult: &[f32],
    yz: i32,
    dtype: DType,
    out: &mut [u8],
) {
    let f = flip(dtype);
    let yz8 = (yz - if f != 0 { 128 } else { 0 }) as i8;
    let mut one = [0i8; 1];
    for (i, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
        let j = channel(i);
        let b = bias.map_or(0, |b| b[j]);
        int8::requant_rows(
            1,
            1,
            &[a],
            1,
            0,
            &[],
            Some(&[b]),
            &mult[j..=j],
            yz8,
            &mut one,
            1,
        );
        *o = (one[0] as u8) ^ f;
    }
}

// ---------------------------------------------------------------- QLinearConv

#[derive(Debug)]
struct QLinearConv {
    win: Window,
    group: usize,
    /// The centered int8 weight, packed once when constant; `None` inside
    /// when it does not fit the kernels.
    packed: PackOnce<Option<PackedB>>,
    /// Always the scalar loop (tests compare the two paths).
    reference: bool,
}

pub fn build_qlinear_conv(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(QLinearConv {
        win: Window::parse(a, false)?,
        group: group_attr(a)?,
        packed: PackOnce::new(),
        reference: false,
    }))
}

const OP_C: &str = "QLinearConv";

impl Op for QLinearConv {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (req(inputs, 0)?, req(inputs, 3)?);
        let shape = integer_conv_shape(OP_C, (x, w), ["x", "w"], &self.win, self.group)?;
        Ok(vec![Fact::new(out_dtype(inputs, 7), shape)])
    }

    fn constant_inputs(&mut self, is_const: &[bool]) {
        self.packed.note_constant(is_const, 3);
    }

    fn prepared_bytes(&self) -> usize {
        kept_bytes(&self.packed)
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (x, w) = (*req(inputs, 0)?, *req(inputs, 3)?);
        int8_dtype(OP_C, "x", x.dtype)?;
        int8_dtype(OP_C, "w", w.dtype)?;
        let rank = x.rank();
        if !((3..=5).contains(&rank) && w.rank() == rank) {
            return Err(err(format!(
                "{OP_C}: x {} and w {} do not fit a conv",
                dims_str(x.dims),
                dims_str(w.dims)
            )));
        }
        check_len(x.data.len(), x.dims, "x")?;
        check_len(w.data.len(), w.dims, "w")?;
        let (n, c, m, g) = (x.dims[0], x.dims[1], w.dims[0], self.group);
        let cg = w.dims[1];
        if cg * g != c || m % g != 0 {
            return Err(err(format!(
                "{OP_C}: x {} does not fit w {} with group {g}",
                dims_str(x.dims),
                dims_str(w.dims)
            )));
        }
        let xs = scalar_scale(OP_C, "x_scale", req(inputs, 1)?)?;
        let (xz, _) = scalar_zero_point(OP_C, "x_zero_point", inputs, 2)?;
        let ws = weight_scales(OP_C, req(inputs, 4)?, m)?;
        let wz = int_zero_point(inputs, 5, "QLinearConv: w_zero_point", m, "output channel")?;
        let ys = scalar_scale(OP_C, "y_scale", req(inputs, 6)?)?;
        let (yz, _) = scalar_zero_point(OP_C, "y_zero_point", inputs, 7)?;
        let bias = int_bias(OP_C, inputs, 8, m)?;
        let mult = multipliers(xs, &ws, ys)?;
        let geo: Geo = self.win.geo(&x.dims[2..], &w.dims[2..])?;
        let out = first_out(outputs, OP_C)?;
        let ydt = out.dtype;
        int8_dtype(OP_C, "y", ydt)?;
        let (in_sp, out_sp, taps) = (geo.in_size(), geo.out_size(), geo.k_size());
        let y = &mut *out.data;
        if y.len() != n * m * out_sp {
            return Err(err(format!(
                "{OP_C}: the output buffer {} does not fit [{n}, {m}, {:?}]",
                dims_str(out.dims),
                geo.out_dims(rank - 2)
            )));
        }
        if y.is_empty() {
            return Ok(());
        }
        let mut fresh = None;
        let packed = if g == 1 && !self.reference {
            self.packed
                .get(ctx.pack_weights, &mut fresh, || {
                    match centered_weight(&w, &wz, m)? {
                        Some(wq) => pack_weight(&wq, m, c, taps).map(Some),
                        None => Ok(None),
                    }
                })?
                .as_ref()
        } else {
            None
        };
        let Some(packed) = packed else {
            // The exact scalar loop.
            let (xv, wv) = (ints(&x, "QLinearConv: x")?, ints(&w, "QLinearConv: w")?);
            let mut acc = vec![0i32; y.len()];
            conv_integer(&xv, &wv, xz, &wz, [n, c, m], g, &geo, &mut acc);
            requant_scalar(&acc, |i| i / out_sp % m, bias, &mult, yz, ydt, y);
            return Ok(());
        };
        let (fx, fy) = (flip(x.dtype), flip(ydt));
        let zx = signed_zero_point(OP_C, "x_zero_point", xz, x.dtype)?;
        let zy = signed_zero_point(OP_C, "y_zero_point", yz, ydt)?;
        let xb = x.data;
        conv_blocks(
            n,
            c,
            &geo,
            packed,
            |ni, _, qxt| {
                let img = &xb[ni * c * in_sp..][..c * in_sp];
                transpose(img, c, in_sp, qxt, |b| (b ^ fx) as i8);
                zx
            },
            |ni, j0, nc, acc, z, o| {
                int8::requant_rows(
                    nc,
                    m,
                    acc,
                    m,
                    z as i32,
                    packed.col_sums(),
                    bias,
                    &mult,
                    zy,
                    o,
                    m,
                );
                let yi = &mut y[ni * m * out_sp..][..m * out_sp];
                scatter_columns(o, nc, m, yi, out_sp, j0, |v| (v as u8) ^ fy);
            },
        );
        Ok(())
    }
}

// -------------------------------------------------------------- QLinearMatMul

#[derive(Debug)]
struct QLinearMatMul {
    packed: PackOnce<Option<PackedB>>,
    /// Always the scalar loop (tests compare the two paths).
    reference: bool,
}

pub fn build_qlinear_matmul(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(QLinearMatMul {
        packed: PackOnce::new(),
        reference: false,
    }))
}

const OP_M: &str = "QLinearMatMul";

impl Op for QLinearMatMul {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (req(inputs, 0)?, req(inputs, 3)?);
        int8_dtype(OP_M, "a", a.dtype)?;
        int8_dtype(OP_M, "b", b.dtype)?;
        Ok(vec![Fact::new(
            out_dtype(inputs, 7),
            matmul_shape(&a.shape, &b.shape)?,
        )])
    }

    fn constant_inputs(&mut self, is_const: &[bool]) {
        self.packed.note_constant(is_const, 3);
    }

    fn prepared_bytes(&self) -> usize {
        kept_bytes(&self.packed)
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (a, b) = (*req(inputs, 0)?, *req(inputs, 3)?);
        int8_dtype(OP_M, "a", a.dtype)?;
        int8_dtype(OP_M, "b", b.dtype)?;
        let out = first_out(outputs, OP_M)?;
        let ydt = out.dtype;
        int8_dtype(OP_M, "y", ydt)?;
        let g = Geometry::new(a.dims, b.dims, out.dims)?;
        let (m, k, n) = (g.m, g.k, g.n);
        let a_scales = scales(OP_M, req(inputs, 1)?)?;
        let za = int_zero_point(inputs, 2, "QLinearMatMul: a_zero_point", m, "row of a")?;
        let wsv = weight_scales(OP_M, req(inputs, 4)?, n)?;
        let zb = int_zero_point(inputs, 5, "QLinearMatMul: b_zero_point", n, "column of b")?;
        let ys = scalar_scale(OP_M, "y_scale", req(inputs, 6)?)?;
        let (yz, _) = scalar_zero_point(OP_M, "y_zero_point", inputs, 7)?;
        if a_scales.len() != 1 && a_scales.len() != m {
            return Err(err(format!(
                "{OP_M}: a_scale has {} values; it is one, or one per row of a ({m})",
                a_scales.len()
            )));
        }
        let y = &mut *out.data;
        if y.is_empty() {
            return Ok(());
        }
        let per_tensor = a_scales.len() == 1 && za.len() == 1;
        let mut fresh = None;
        let packed = if per_tensor && b.dims.len() == 2 && !self.reference {
            self.packed
                .get(ctx.pack_weights, &mut fresh, || {
                    // `b` is [K, N]; centre it column by column, as [N, K].
                    let bt = TransposedB { b: &b, k, n };
                    match bt.centered(&zb)? {
                        Some(wt) => int8::pack_b_transposed(&wt, n, k, k).map(Some),
                        None => Ok(None),
                    }
                })?
                .as_ref()
        } else {
            None
        };
        let Some(packed) = packed else {
            let (av, bv) = (ints(&a, "QLinearMatMul: a")?, ints(&b, "QLinearMatMul: b")?);
            let mut acc = vec![0i32; y.len()];
            matmul_integer(&av, &bv, &za, &zb, &g, &mut acc);
            let rows = acc.len() / n.max(1);
            for r in 0..rows {
                let xs = a_scales[if a_scales.len() == 1 { 0 } else { r % m }];
                if !(xs.is_finite() && xs > 0.0) {
                    return Err(err(format!(
                        "{OP_M}: an a_scale is {xs}; it must be finite and > 0"
                    )));
                }
                let mult = multipliers(xs, &wsv, ys)?;
                requant_scalar(
                    &acc[r * n..][..n],
                    |j| j,
                    None,
                    &mult,
                    yz,
                    ydt,
                    &mut y[r * n..][..n],
                );
            }
            return Ok(());
        };
        let xs = a_scales[0];
        if !(xs.is_finite() && xs > 0.0) {
            return Err(err(format!(
                "{OP_M}: a_scale is {xs}; it must be finite and > 0"
            )));
        }
        let mult = multipliers(xs, &wsv, ys)?;
        let (fa, fy) = (flip(a.dtype), flip(ydt));
        let zx = signed_zero_point(OP_M, "a_zero_point", za[0], a.dtype)? as i32;
        let zy = signed_zero_point(OP_M, "y_zero_point", yz, ydt)?;
        let rows = a.data.len() / k.max(1);
        let aq: Vec<i8> = a.data.iter().map(|&v| (v ^ fa) as i8).collect();
        let mut acc = vec![0i32; rows * n];
        int8::gemm_i8(rows, &aq, k, packed, &mut acc, n);
        let mut o = vec![0i8; rows * n];
        int8::requant_rows(
            rows,
            n,
            &acc,
            n,
            zx,
            packed.col_sums(),
            None,
            &mult,
            zy,
            &mut o,
            n,
        );
        for (d, v) in y.iter_mut().zip(o) {
            *d = (v as u8) ^ fy;
        }
        Ok(())
    }
}

/// A 2-D `b` `[K, N]` read column by column.
struct TransposedB<'a, 'b> {
    b: &'a TensorRef<'b>,
    k: usize,
    n: usize,
}

impl TransposedB<'_, '_> {
    /// `(b − zb)ᵀ` `[N, K]` as i8 in `[-127, 127]`, or `None` if a value
    /// does not fit.
    fn centered(&self, zb: &[i32]) -> Result<Option<Vec<i8>>> {
        let (k, n) = (self.k, self.n);
        let data = self.b.data;
        if data.len() != k * n {
            return Err(err(format!(
                "{OP_M}: b {} is not [{k}, {n}]",
                dims_str(self.b.dims)
            )));
        }
        let mut out = vec![0i8; k * n];
        for kk in 0..k {
            for j in 0..n {
                let v = code(data[kk * n + j], self.b.dtype);
                let d = v - zb[if zb.len() == 1 { 0 } else { j }];
                if !(-127..=127).contains(&d) {
                    return Ok(None);
                }
                out[j * k + kk] = d as i8;
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attr;
    use crate::ops::eval_owned;
    use crate::ops::matmul::tests::Rng;
    use crate::tensor::Tensor;

    fn bytes(rng: &mut Rng, n: usize, lo: i32, hi: i32) -> Vec<i32> {
        (0..n)
            .map(|_| lo + ((rng.f() * 0.5 + 0.5) * (hi - lo + 1) as f32) as i32)
            .map(|v: i32| v.min(hi))
            .collect()
    }

    fn int_tensor(dims: &[usize], v: &[i32], dtype: DType) -> Tensor {
        if dtype == DType::U8 {
            let b: Vec<u8> = v.iter().map(|&x| x as u8).collect();
            Tensor::from_slice(dims, &b).unwrap()
        } else {
            let b: Vec<i8> = v.iter().map(|&x| x as i8).collect();
            Tensor::from_slice(dims, &b).unwrap()
        }
    }

    fn range(dtype: DType) -> (i32, i32) {
        if dtype == DType::U8 {
            (0, 255)
        } else {
            (-128, 127)
        }
    }

    /// The kernel path and the scalar loop give the same bytes on odd
    /// shapes, both dtypes, pads, strides, dilations, zero points and bias.
    #[test]
    fn qlinear_conv_kernel_path_matches_the_scalar_loop() {
        let mut rng = Rng(3);
        type Case<'a> = (&'a [usize], &'a [usize], [i64; 4], [i64; 2], [i64; 2]);
        let cases: &[Case] = &[
            (&[2, 3, 9, 11], &[8, 3, 3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            (&[1, 5, 17, 8], &[20, 5, 3, 3], [0, 1, 2, 0], [2, 1], [1, 2]),
            (&[1, 16, 7, 7], &[5, 16, 1, 1], [0, 0, 0, 0], [1, 1], [1, 1]),
            (&[1, 2, 30, 30], &[3, 2, 5, 5], [2, 2, 2, 2], [2, 2], [1, 1]),
        ];
        for (ci, &(xd, wd, pads, strides, dil)) in cases.iter().enumerate() {
            for (xdt, ydt) in [
                (DType::U8, DType::U8),
                (DType::I8, DType::I8),
                (DType::U8, DType::I8),
            ] {
                let (xl, xh) = range(xdt);
                let (yl, yh) = range(ydt);
                let m = wd[0];
                let x = int_tensor(xd, &bytes(&mut rng, xd.iter().product(), xl, xh), xdt);
                let w = int_tensor(
                    wd,
                    &bytes(&mut rng, wd.iter().product(), -127, 127),
                    DType::I8,
                );
                let xz = int_tensor(&[], &bytes(&mut rng, 1, xl, xh), xdt);
                let yz = int_tensor(&[], &bytes(&mut rng, 1, yl + 64, yh - 64), ydt);
                let ws: Vec<f32> = (0..m).map(|_| 0.002 + 0.01 * (rng.f() + 1.0)).collect();
                let b: Vec<i32> = bytes(&mut rng, m, -3000, 3000);
                let inputs = vec![
                    Some(x),
                    Some(Tensor::scalar(0.05f32)),
                    Some(xz),
                    Some(w),
                    Some(Tensor::from_slice(&[m], &ws).unwrap()),
                    Some(Tensor::from_slice(&[m], &vec![0i8; m]).unwrap()),
                    Some(Tensor::scalar(1.5f32 + ci as f32 * 0.1)),
                    Some(yz),
                    Some(Tensor::from_slice(&[m], &b).unwrap()),
                ];
                let attrs = Attrs::new()
                    .with("pads", Attr::Ints(pads.to_vec()))
                    .with("strides", Attr::Ints(strides.to_vec()))
                    .with("dilations", Attr::Ints(dil.to_vec()));
                let fast = eval_owned(&*build_qlinear_conv(&attrs).unwrap(), &inputs).unwrap();
                let slow = QLinearConv {
                    win: Window::parse(&attrs, false).unwrap(),
                    group: 1,
                    packed: PackOnce::new(),
                    reference: true,
                };
                let slow = eval_owned(&slow, &inputs).unwrap();
                assert_eq!(fast[0].dtype, ydt);
                assert_eq!(fast[0].dims, slow[0].dims);
                let (f, s) = (fast[0].data.as_bytes(), slow[0].data.as_bytes());
                assert_eq!(f, s, "case {ci} {xdt}->{ydt}");
                // Not all saturated: the test would prove little.
                let lo = if ydt == DType::U8 { 0u8 } else { 0x80 };
                assert!(
                    f.iter()
                        .filter(|&&v| v != lo && v != lo.wrapping_sub(1))
                        .count()
                        > f.len() / 2
                );
            }
        }
    }

    #[test]
    fn qlinear_matmul_kernel_path_matches_the_scalar_loop() {
        let mut rng = Rng(5);
        for &(ad, bd) in &[
            (&[3usize, 37][..], &[37usize, 19][..]),
            (&[2, 5, 64], &[64, 33]),
        ] {
            for dt in [DType::U8, DType::I8] {
                let (l, h) = range(dt);
                let n = bd[1];
                let a = int_tensor(ad, &bytes(&mut rng, ad.iter().product(), l, h), dt);
                // u8 weights with zero point 128, away from 0 so they fit.
                let bv = if dt == DType::U8 {
                    bytes(&mut rng, bd.iter().product(), 1, 255)
                } else {
                    bytes(&mut rng, bd.iter().product(), -127, 127)
                };
                let b = int_tensor(bd, &bv, dt);
                let bz = int_tensor(&[], &[if dt == DType::U8 { 128 } else { 0 }], dt);
                let inputs = vec![
                    Some(a),
                    Some(Tensor::scalar(0.03f32)),
                    Some(int_tensor(&[], &bytes(&mut rng, 1, l, h), dt)),
                    Some(b),
                    Some(
                        Tensor::from_slice(
                            &[n],
                            &rng.vec(n)
                                .iter()
                                .map(|v| 0.01 + v.abs() * 0.01)
                                .collect::<Vec<_>>(),
                        )
                        .unwrap(),
                    ),
                    Some(bz),
                    Some(Tensor::scalar(0.5f32)),
                    Some(int_tensor(&[], &bytes(&mut rng, 1, l, h), dt)),
                ];
                let fast =
                    eval_owned(&*build_qlinear_matmul(&Attrs::new()).unwrap(), &inputs).unwrap();
                let slow = QLinearMatMul {
                    packed: PackOnce::new(),
                    reference: true,
                };
                let slow = eval_owned(&slow, &inputs).unwrap();
                assert_eq!(fast[0].dims, slow[0].dims);
                assert_eq!(
                    fast[0].data.as_bytes(),
                    slow[0].data.as_bytes(),
                    "{ad:?} {dt}"
                );
            }
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let op = build_qlinear_conv(&Attrs::new()).unwrap();
        let x = Tensor::from_slice(&[1, 2, 3, 3], &[0u8; 18]).unwrap();
        let w = Tensor::from_slice(&[1, 2, 1, 1], &[1i8; 2]).unwrap();
        let mk = |xs: f32, ys: f32| {
            vec![
                Some(x.clone()),
                Some(Tensor::scalar(xs)),
                Some(Tensor::scalar(0u8)),
                Some(w.clone()),
                Some(Tensor::scalar(1f32)),
                Some(Tensor::scalar(0i8)),
                Some(Tensor::scalar(ys)),
                Some(Tensor::scalar(0u8)),
            ]
        };
        let e = eval_owned(&*op, &mk(0.0, 1.0)).unwrap_err().to_string();
        assert!(e.contains("x_scale is 0"), "{e}");
        let e = eval_owned(&*op, &mk(1.0, f32::NAN))
            .unwrap_err()
            .to_string();
        assert!(e.contains("y_scale is NaN"), "{e}");
        let mut bad = mk(1.0, 1.0);
        bad[0] = Some(Tensor::from_slice(&[1, 3, 3, 3], &[0u8; 27]).unwrap());
        let e = eval_owned(&*op, &bad).unwrap_err().to_string();
        assert!(e.contains("channels"), "{e}");
        assert!(eval_owned(&*op, &mk(1.0, 1.0)).is_ok());
    }
}
