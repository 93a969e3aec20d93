//! Value-making ops of the shape family: Cast, ConstantOfShape and Range.
//! Builders are re-exported through `ops::shape`.
//!
//! Cast follows C casts where those are defined and is deterministic where
//! they are not: float to integer truncates toward zero and saturates at the
//! target's range (NaN gives 0), integer to narrower integer wraps, anything
//! to bool is "nonzero" (NaN is true), floats round to nearest even.

use half::{bf16, f16};

use super::shape::{concrete_fact, int_list, list_len, out0, to_dim, unknown_dims};
use super::{Ctx, Fact, Op, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{Dim, TensorMut, TensorRef, shape_str};
use crate::{Error, Result, bail};

// ---------------------------------------------------------------- Cast

fn read<T: bytemuck::Pod>(b: &[u8]) -> Result<&[T]> {
    bytemuck::try_cast_slice(b).map_err(|e| Error::Graph(format!("misaligned cast input: {e:?}")))
}

fn write<S: Copy, D: bytemuck::Pod>(src: &[S], dst: &mut [u8], f: impl Fn(S) -> D) -> Result<()> {
    let d: &mut [D] = bytemuck::try_cast_slice_mut(dst)
        .map_err(|e| Error::Graph(format!("misaligned cast output: {e:?}")))?;
    if d.len() != src.len() {
        bail!(
            Graph,
            "cast output holds {} elements, the input has {}",
            d.len(),
            src.len()
        );
    }
    for (o, &v) in d.iter_mut().zip(src) {
        *o = f(v);
    }
    Ok(())
}

/// From a float source, seen exactly as f32.
fn from_float<S: Copy>(
    src: &[S],
    get: impl Fn(S) -> f32 + Copy,
    to: DType,
    dst: &mut [u8],
) -> Result<()> {
    match to {
        DType::F32 => write(src, dst, get),
        DType::F16 => write(src, dst, |v| f16::from_f32(get(v))),
        DType::BF16 => write(src, dst, |v| bf16::from_f32(get(v))),
        DType::I8 => write(src, dst, |v| get(v) as i8),
        DType::U8 => write(src, dst, |v| get(v) as u8),
        DType::I32 => write(src, dst, |v| get(v) as i32),
        DType::I64 => write(src, dst, |v| get(v) as i64),
        DType::Bool => write(src, dst, |v| (get(v) != 0.0) as u8),
    }
}

/// From an integer (or bool) source, seen exactly as i64.
fn from_int<S: Copy>(
    src: &[S],
    get: impl Fn(S) -> i64 + Copy,
    to: DType,
    dst: &mut [u8],
) -> Result<()> {
    match to {
        DType::F32 => write(src, dst, |v| get(v) as f32),
        // Integers that fit f16 are exact in f32, so this rounds once.
        DType::F16 => write(src, dst, |v| f16::from_f32(get(v) as f32)),
        DType::BF16 => write(src, dst, |v| bf16::from_f64(get(v) as f64)),
        DType::I8 => write(src, dst, |v| get(v) as i8),
        DType::U8 => write(src, dst, |v| get(v) as u8),
        DType::I32 => write(src, dst, |v| get(v) as i32),
        DType::I64 => write(src, dst, get),
        DType::Bool => write(src, dst, |v| (get(v) != 0) as u8),
    }
}

/// Convert the elements of `src` to dtype `to`, written into `dst`.
pub(super) fn cast_bytes(src: &TensorRef<'_>, to: DType, dst: &mut [u8]) -> Result<()> {
    let b = src.data;
    match src.dtype {
        DType::F32 => from_float(read::<f32>(b)?, |v| v, to, dst),
        DType::F16 => from_float(read::<f16>(b)?, f16::to_f32, to, dst),
        DType::BF16 => from_float(read::<bf16>(b)?, bf16::to_f32, to, dst),
        DType::I8 => from_int(read::<i8>(b)?, i64::from, to, dst),
        DType::U8 => from_int(b, i64::from, to, dst),
        DType::Bool => from_int(b, |v| (v != 0) as i64, to, dst),
        DType::I32 => from_int(read::<i32>(b)?, i64::from, to, dst),
        DType::I64 => from_int(read::<i64>(b)?, |v| v, to, dst),
    }
}

/// Cast(x) to attribute `to`, a morsel dtype code.
#[derive(Debug)]
struct Cast {
    to: DType,
}

impl Op for Cast {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![Fact::new(self.to, req(inputs, 0)?.shape.clone())])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let out = out0(outputs)?;
        if out.dtype != self.to {
            bail!(Graph, "Cast output is {}, expected {}", out.dtype, self.to);
        }
        cast_bytes(x, self.to, out.data)
    }
}

pub fn build_cast(a: &Attrs) -> Result<Box<dyn Op>> {
    let code = a.int("to", -1)?;
    let to = u8::try_from(code)
        .map_err(|_| {
            Error::Graph(format!(
                "Cast needs the attribute 'to' (a dtype code), has {code}"
            ))
        })
        .and_then(DType::from_code)?;
    Ok(Box::new(Cast { to }))
}

// ---------------------------------------------------------------- ConstantOfShape

/// ConstantOfShape(shape) filled with the value of attributes `value_dtype`
/// (a dtype code) and `value_f` / `value_i`; f32 zero by default.
#[derive(Debug)]
struct ConstantOfShape {
    dtype: DType,
    value: [u8; 8],
}

impl Op for ConstantOfShape {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let s = req(inputs, 0)?;
        match int_list(s, "ConstantOfShape shape")? {
            Some(v) => {
                let dims: Vec<usize> = v
                    .iter()
                    .map(|&d| to_dim(d, "ConstantOfShape shape"))
                    .collect::<Result<_>>()?;
                Ok(vec![concrete_fact(self.dtype, &dims)?])
            }
            None => Ok(vec![Fact::new(
                self.dtype,
                unknown_dims(list_len(s, "ConstantOfShape shape")?),
            )]),
        }
    }

    fn eval(
        &self,
        _: &mut Ctx,
        _: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let out = out0(outputs)?;
        let es = self.dtype.size();
        if out.dtype != self.dtype || out.data.len() % es != 0 {
            bail!(
                Graph,
                "ConstantOfShape output is {}, expected {}",
                out.dtype,
                self.dtype
            );
        }
        let v = &self.value[..es];
        if v.iter().all(|&b| b == 0) {
            out.data.fill(0);
        } else {
            out.data
                .chunks_exact_mut(es)
                .for_each(|c| c.copy_from_slice(v));
        }
        Ok(())
    }
}

pub fn build_constant_of_shape(a: &Attrs) -> Result<Box<dyn Op>> {
    let code = a.int("value_dtype", DType::F32.code() as i64)?;
    let dtype = u8::try_from(code)
        .map_err(|_| {
            Error::Graph(format!(
                "attribute 'value_dtype' {code} is not a dtype code"
            ))
        })
        .and_then(DType::from_code)?;
    let (has_f, has_i) = (a.get("value_f").is_some(), a.get("value_i").is_some());
    let (f, i) = (a.float("value_f", 0.0)?, a.int("value_i", 0)?);
    let fv = if has_f || !has_i { f } else { i as f32 };
    let iv = if has_i || !has_f { i } else { f as i64 };
    let range =
        |what: &str| Error::Graph(format!("ConstantOfShape value {iv} does not fit {what}"));
    let mut value = [0u8; 8];
    let bytes: &[u8] = match dtype {
        DType::F32 => &fv.to_ne_bytes(),
        DType::F16 => &f16::from_f32(fv).to_ne_bytes(),
        DType::BF16 => &bf16::from_f32(fv).to_ne_bytes(),
        DType::I8 => &i8::try_from(iv).map_err(|_| range("i8"))?.to_ne_bytes(),
        DType::U8 => &u8::try_from(iv).map_err(|_| range("u8"))?.to_ne_bytes(),
        DType::I32 => &i32::try_from(iv).map_err(|_| range("i32"))?.to_ne_bytes(),
        DType::I64 => &iv.to_ne_bytes(),
        DType::Bool => &[(iv != 0 || (has_f && !has_i && f != 0.0)) as u8],
    };
    value[..bytes.len()].copy_from_slice(bytes);
    Ok(Box::new(ConstantOfShape { dtype, value }))
}

// ---------------------------------------------------------------- Range

/// Range(start, limit, delta): `max(ceil((limit - start) / delta), 0)`
/// elements `start + i·delta`, for f32, i64 and i32 scalars.
#[derive(Debug)]
struct Range;

/// Largest element count Range will produce (keeps the byte size addressable).
const MAX_RANGE: u64 = (isize::MAX as u64) / 8;

fn len_f32(start: f32, limit: f32, delta: f32) -> Result<usize> {
    // As ONNX Runtime: the difference in f32, the division in f64.
    let n = ((limit - start) as f64 / delta as f64).ceil();
    if delta == 0.0 || !n.is_finite() {
        bail!(
            Graph,
            "Range({start}, {limit}, {delta}) has no finite length"
        );
    }
    if n > MAX_RANGE as f64 {
        bail!(Graph, "Range({start}, {limit}, {delta}) is too long");
    }
    Ok(n.max(0.0) as usize)
}

fn len_int(start: i64, limit: i64, delta: i64) -> Result<usize> {
    if delta == 0 {
        bail!(Graph, "Range delta is 0");
    }
    let (diff, d) = (limit as i128 - start as i128, delta as i128);
    let n = if (diff > 0) == (d > 0) && diff != 0 {
        (diff.abs() + d.abs() - 1) / d.abs()
    } else {
        0
    };
    if n > MAX_RANGE as i128 {
        bail!(
            Graph,
            "Range({start}, {limit}, {delta}) has {n} elements, too many"
        );
    }
    Ok(n as usize)
}

/// The single element of a scalar input.
fn scalar<T: bytemuck::Pod>(t: &TensorRef<'_>, what: &str) -> Result<T> {
    match read::<T>(t.data)? {
        [v] => Ok(*v),
        v => bail!(
            Graph,
            "Range {what} must be a scalar, has {} elements",
            v.len()
        ),
    }
}

fn range_len(ts: [&TensorRef<'_>; 3]) -> Result<usize> {
    match ts[0].dtype {
        DType::F32 => len_f32(
            scalar(ts[0], "start")?,
            scalar(ts[1], "limit")?,
            scalar(ts[2], "delta")?,
        ),
        DType::I64 => len_int(
            scalar(ts[0], "start")?,
            scalar(ts[1], "limit")?,
            scalar(ts[2], "delta")?,
        ),
        DType::I32 => len_int(
            scalar::<i32>(ts[0], "start")?.into(),
            scalar::<i32>(ts[1], "limit")?.into(),
            scalar::<i32>(ts[2], "delta")?.into(),
        ),
        d => bail!(Unsupported, "Range on {d} (f32, i64 and i32 are supported)"),
    }
}

impl Op for Range {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let fs = [req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?];
        let dtype = fs[0].dtype;
        if !matches!(dtype, DType::F32 | DType::I64 | DType::I32) {
            bail!(
                Unsupported,
                "Range on {dtype} (f32, i64 and i32 are supported)"
            );
        }
        for (f, what) in fs.iter().zip(["start", "limit", "delta"]) {
            if f.dtype != dtype {
                bail!(Graph, "Range {what} is {}, start is {dtype}", f.dtype);
            }
            if f.dims().is_some_and(|d| d.iter().product::<usize>() != 1) {
                bail!(
                    Graph,
                    "Range {what} must be a scalar, has shape {}",
                    shape_str(&f.shape)
                );
            }
        }
        match (&fs[0].value, &fs[1].value, &fs[2].value) {
            (Some(s), Some(l), Some(d)) => {
                let n = range_len([&s.view(), &l.view(), &d.view()])?;
                Ok(vec![concrete_fact(dtype, &[n])?])
            }
            _ => Ok(vec![Fact::new(dtype, vec![Dim::unknown()])]),
        }
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let ts = [req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?];
        let n = range_len(ts)?;
        let out = out0(outputs)?;
        if out.dims != [n] || out.dtype != ts[0].dtype {
            bail!(
                Graph,
                "Range makes {} [{n}], the output is {} {:?}",
                ts[0].dtype,
                out.dtype,
                out.dims
            );
        }
        match out.dtype {
            DType::F32 => {
                let (s, d): (f32, f32) = (scalar(ts[0], "start")?, scalar(ts[2], "delta")?);
                for (i, o) in out.f32()?.iter_mut().enumerate() {
                    *o = s + i as f32 * d;
                }
            }
            DType::I64 => {
                let (s, d): (i64, i64) = (scalar(ts[0], "start")?, scalar(ts[2], "delta")?);
                for (i, o) in out.as_slice_mut::<i64>()?.iter_mut().enumerate() {
                    *o = s.wrapping_add((i as i64).wrapping_mul(d));
                }
            }
            _ => {
                let (s, d): (i32, i32) = (scalar(ts[0], "start")?, scalar(ts[2], "delta")?);
                for (i, o) in out.as_slice_mut::<i32>()?.iter_mut().enumerate() {
                    *o = s.wrapping_add((i as i32).wrapping_mul(d));
                }
            }
        }
        Ok(())
    }
}

pub fn build_range(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Range))
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::super::shape::tests::util::*;
    use super::*;
    use crate::graph::Attr;
    use crate::tensor::{AlignedBuf, Blob, Tensor};

    /// A value as the reference sees it: exact f64 for floats, i128 for ints.
    #[derive(Clone, Copy, Debug)]
    enum V {
        F(f64),
        I(i128),
    }

    fn values(t: &Tensor) -> Vec<V> {
        let b = t.data.as_bytes();
        match t.dtype {
            DType::F32 => t
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|&v| V::F(v as f64))
                .collect(),
            DType::F16 => t
                .as_slice::<f16>()
                .unwrap()
                .iter()
                .map(|&v| V::F(v.to_f64()))
                .collect(),
            DType::BF16 => t
                .as_slice::<bf16>()
                .unwrap()
                .iter()
                .map(|&v| V::F(v.to_f64()))
                .collect(),
            DType::I8 => t
                .as_slice::<i8>()
                .unwrap()
                .iter()
                .map(|&v| V::I(v as i128))
                .collect(),
            DType::U8 => b.iter().map(|&v| V::I(v as i128)).collect(),
            DType::Bool => b.iter().map(|&v| V::I((v != 0) as i128)).collect(),
            DType::I32 => t
                .as_slice::<i32>()
                .unwrap()
                .iter()
                .map(|&v| V::I(v as i128))
                .collect(),
            DType::I64 => t
                .as_slice::<i64>()
                .unwrap()
                .iter()
                .map(|&v| V::I(v as i128))
                .collect(),
        }
    }

    /// Reference conversion of one value to the bytes of `to`.
    fn convert(v: V, to: DType) -> Vec<u8> {
        let int = |lo: i128, hi: i128| -> i128 {
            match v {
                V::F(f) if f.is_nan() => 0,
                V::F(f) => (f.trunc() as i128).clamp(lo, hi),
                // two's complement wrap into [lo, hi]
                V::I(i) => (i - lo).rem_euclid(hi - lo + 1) + lo,
            }
        };
        let f = match v {
            V::F(f) => f,
            V::I(i) => i as f64,
        };
        match to {
            DType::F32 => match v {
                V::F(f) => f as f32,
                V::I(i) => i as f32,
            }
            .to_ne_bytes()
            .to_vec(),
            DType::F16 => f16::from_f64(f).to_ne_bytes().to_vec(),
            DType::BF16 => bf16::from_f64(f).to_ne_bytes().to_vec(),
            DType::I8 => (int(-128, 127) as i8).to_ne_bytes().to_vec(),
            DType::U8 => vec![int(0, 255) as u8],
            DType::I32 => (int(i32::MIN as i128, i32::MAX as i128) as i32)
                .to_ne_bytes()
                .to_vec(),
            DType::I64 => (int(i64::MIN as i128, i64::MAX as i128) as i64)
                .to_ne_bytes()
                .to_vec(),
            DType::Bool => vec![(f != 0.0) as u8],
        }
    }

    fn sample(rng: &mut Rng, dtype: DType, n: usize) -> Tensor {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            127.9,
            128.0,
            -129.0,
            255.5,
            256.0,
            1e10,
            -1e10,
            3e38,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            70000.0,
            1e-8,
        ];
        let fl: Vec<f32> = (0..n)
            .map(|_| {
                if rng.below(3) == 0 {
                    specials[rng.below(specials.len())]
                } else {
                    (rng.range(-40000, 40000) as f32) / (1 << rng.below(12)) as f32
                }
            })
            .collect();
        let iv: Vec<i64> = (0..n)
            .map(|_| match rng.below(4) {
                0 => rng.range(-300, 300),
                1 => rng.range(-(1 << 40), 1 << 40),
                2 => [i64::MIN, i64::MAX, 0, 1, -1, 1 << 24, (1 << 24) + 1][rng.below(7)],
                _ => rng.next() as i64,
            })
            .collect();
        let dims = [n];
        match dtype {
            DType::F32 => Tensor::from_slice(&dims, &fl).unwrap(),
            DType::F16 => Tensor::from_slice(
                &dims,
                &fl.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
            )
            .unwrap(),
            DType::BF16 => Tensor::from_slice(
                &dims,
                &fl.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
            )
            .unwrap(),
            DType::I8 => {
                Tensor::from_slice(&dims, &iv.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap()
            }
            DType::U8 => {
                Tensor::from_slice(&dims, &iv.iter().map(|&v| v as u8).collect::<Vec<_>>()).unwrap()
            }
            DType::I32 => {
                Tensor::from_slice(&dims, &iv.iter().map(|&v| v as i32).collect::<Vec<_>>())
                    .unwrap()
            }
            DType::I64 => Tensor::from_slice(&dims, &iv).unwrap(),
            DType::Bool => {
                let b: Vec<u8> = iv.iter().map(|&v| (v & 1) as u8).collect();
                Tensor::new(
                    DType::Bool,
                    dims.to_vec(),
                    Blob::owned(AlignedBuf::from_bytes(&b)),
                )
                .unwrap()
            }
        }
    }

    fn same(a: &[u8], b: &[u8], to: DType) -> bool {
        let nan = match to {
            DType::F32 => |x: &[u8]| f32::from_ne_bytes(x.try_into().unwrap()).is_nan(),
            DType::F16 => |x: &[u8]| f16::from_ne_bytes(x.try_into().unwrap()).is_nan(),
            DType::BF16 => |x: &[u8]| bf16::from_ne_bytes(x.try_into().unwrap()).is_nan(),
            _ => |_: &[u8]| false,
        };
        a == b || (nan(a) && nan(b))
    }

    #[test]
    fn cast_every_pair_matches_reference() {
        let mut rng = Rng(31);
        for from in DType::ALL {
            let x = sample(&mut rng, from, 300);
            let vals = values(&x);
            for to in DType::ALL {
                let y = run1(
                    build_cast,
                    &Attrs::new().with("to", Attr::Int(to.code() as i64)),
                    &[Some(x.clone())],
                );
                assert_eq!((y.dtype, y.dims.clone()), (to, x.dims.clone()));
                for (i, &v) in vals.iter().enumerate() {
                    let want = convert(v, to);
                    assert!(
                        same(elem(&y, i), &want, to),
                        "{from} -> {to}: {v:?} gave {:?}, want {want:?}",
                        elem(&y, i)
                    );
                }
            }
        }
        assert!(build_cast(&Attrs::new()).is_err());
        assert!(build_cast(&Attrs::new().with("to", Attr::Int(99))).is_err());
        assert!(build_cast(&Attrs::new().with("to", Attr::Int(1 << 40))).is_err());
    }

    #[test]
    fn constant_of_shape_fills() {
        let y = run1(
            build_constant_of_shape,
            &Attrs::new(),
            &[Some(ints(&[2, 3]))],
        );
        assert_eq!((y.dtype, y.dims.clone()), (DType::F32, vec![2, 3]));
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0; 6]);
        let cases: [(DType, f32, i64); 8] = [
            (DType::F32, 1.5, 1),
            (DType::F16, -2.0, -2),
            (DType::BF16, 3.0, 3),
            (DType::I8, -7.0, -7),
            (DType::U8, 200.0, 200),
            (DType::I32, -70000.0, -70000),
            (DType::I64, 0.0, 1 << 40),
            (DType::Bool, 1.0, 1),
        ];
        for (dt, f, i) in cases {
            let a = Attrs::new()
                .with("value_dtype", Attr::Int(dt.code() as i64))
                .with("value_f", Attr::Float(f))
                .with("value_i", Attr::Int(i));
            for dims in [vec![], vec![0], vec![3, 1, 2]] {
                let s: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
                let y = run1(build_constant_of_shape, &a, &[Some(ints(&s))]);
                assert_eq!((y.dtype, &y.dims), (dt, &dims));
                let src = if dt.is_float() {
                    V::F(f as f64)
                } else {
                    V::I(i as i128)
                };
                let want = convert(src, dt);
                for k in 0..y.numel() {
                    assert_eq!(elem(&y, k), want.as_slice(), "{dt}");
                }
            }
        }
        let a = Attrs::new()
            .with("value_dtype", Attr::Int(DType::I8.code() as i64))
            .with("value_i", Attr::Int(300));
        assert!(build_constant_of_shape(&a).is_err());
        assert!(build_constant_of_shape(&Attrs::new().with("value_dtype", Attr::Int(0))).is_err());
        for bad in [&[-1i64][..], &[i64::MAX], &[1 << 40, 1 << 40]] {
            assert!(run(build_constant_of_shape, &Attrs::new(), &[Some(ints(bad))]).is_err());
        }
        let s = infer(
            build_constant_of_shape,
            &Attrs::new(),
            &[fact(DType::I64, &["3"])],
        )
        .unwrap();
        assert_eq!(s[0].shape, shape(&["?", "?", "?"]));
    }

    #[test]
    fn range_matches_reference() {
        let mut rng = Rng(32);
        for _ in 0..300 {
            let (s, l, d) = (
                rng.range(-20, 20),
                rng.range(-20, 20),
                [-7, -3, -1, 1, 2, 5][rng.below(6)],
            );
            let mut want = vec![];
            let mut v = s;
            while (d > 0 && v < l) || (d < 0 && v > l) {
                want.push(v);
                v += d;
            }
            let y = run1(
                build_range,
                &Attrs::new(),
                &[
                    Some(Tensor::scalar(s)),
                    Some(Tensor::scalar(l)),
                    Some(Tensor::scalar(d)),
                ],
            );
            assert_eq!(y.as_slice::<i64>().unwrap(), want.as_slice());
            let y32 = run1(
                build_range,
                &Attrs::new(),
                &[
                    Some(Tensor::scalar(s as i32)),
                    Some(Tensor::scalar(l as i32)),
                    Some(Tensor::scalar(d as i32)),
                ],
            );
            assert_eq!(
                y32.as_slice::<i32>().unwrap(),
                want.iter()
                    .map(|&v| v as i32)
                    .collect::<Vec<_>>()
                    .as_slice()
            );
            // f32 on exact halves
            let (fs, fl, fd) = (s as f32 / 2.0, l as f32 / 2.0, d as f32 / 2.0);
            let yf = run1(
                build_range,
                &Attrs::new(),
                &[
                    Some(Tensor::scalar(fs)),
                    Some(Tensor::scalar(fl)),
                    Some(Tensor::scalar(fd)),
                ],
            );
            let wf: Vec<f32> = want.iter().map(|&v| v as f32 / 2.0).collect();
            assert_eq!(yf.as_slice::<f32>().unwrap(), wf.as_slice());
        }
        let r = |s: i64, l: i64, d: i64| {
            run(
                build_range,
                &Attrs::new(),
                &[
                    Some(Tensor::scalar(s)),
                    Some(Tensor::scalar(l)),
                    Some(Tensor::scalar(d)),
                ],
            )
        };
        assert!(r(0, 5, 0).is_err());
        assert!(r(0, i64::MAX, 1).is_err());
        assert!(r(i64::MIN, i64::MAX, i64::MAX).unwrap()[0].dims == vec![3]);
        assert_eq!(
            r(i64::MAX, i64::MIN, i64::MIN).unwrap()[0]
                .as_slice::<i64>()
                .unwrap(),
            &[i64::MAX, -1]
        );
        let f = |s: f32, l: f32, d: f32| {
            run(
                build_range,
                &Attrs::new(),
                &[
                    Some(Tensor::scalar(s)),
                    Some(Tensor::scalar(l)),
                    Some(Tensor::scalar(d)),
                ],
            )
        };
        assert!(f(0.0, 1.0, 0.0).is_err());
        assert!(f(0.0, f32::NAN, 1.0).is_err());
        assert!(f(0.0, 1e30, 1e-30).is_err());
        let mixed = run(
            build_range,
            &Attrs::new(),
            &[
                Some(Tensor::scalar(0i64)),
                Some(Tensor::scalar(3i32)),
                Some(Tensor::scalar(1i64)),
            ],
        );
        assert!(mixed.is_err());
        let s = infer(
            build_range,
            &Attrs::new(),
            &[
                fact(DType::I64, &[]),
                fact(DType::I64, &[]),
                fact(DType::I64, &[]),
            ],
        )
        .unwrap();
        assert_eq!(s[0].shape, shape(&["?"]));
    }
}
