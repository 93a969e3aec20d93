//! `QGather`: `Gather` along axis 0 from an int8 table, dequantized on the
//! way out — embedding tables under dynamic quantization.
//!
//! Inputs: `data` i8 `[V, ...]` (symmetric per row: one scale per index
//! along axis 0), `scale` f32 `[V]`, `indices` i64 or i32 of any shape
//! (negative counts from the end, as in ONNX Gather). Output: f32
//! `indices.shape + data.shape[1..]`, each gathered row `data[i]·scale[i]`.
//! Only the rows asked for are read and widened, so the table stays int8
//! in memory (a 30522×384 vocabulary is 11 MiB instead of 45 MiB).

use super::{Fact, Op, expect_dtype, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{Shape, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result};

#[derive(Debug)]
struct QGather;

/// Row `i` of a table of `v` rows (negative counts from the end).
fn row_index(i: i64, v: usize, at: usize) -> Result<usize> {
    let d = v as i64;
    if i < -d || i >= d {
        return Err(Error::Graph(format!(
            "QGather index {i} (at position {at}) is out of range for a table of {v} rows"
        )));
    }
    Ok(if i < 0 { (i + d) as usize } else { i as usize })
}

fn gather<I: Copy + Into<i64>>(
    idx: &[I],
    data: &[i8],
    scale: &[f32],
    row: usize,
    out: &mut [f32],
) -> Result<()> {
    let v = scale.len();
    // Check every index before writing anything.
    for (at, &i) in idx.iter().enumerate() {
        row_index(i.into(), v, at)?;
    }
    if row == 0 {
        return Ok(());
    }
    for (&i, o) in idx.iter().zip(out.chunks_exact_mut(row)) {
        let r = row_index(i.into(), v, 0)?;
        let s = scale[r];
        for (o, &q) in o.iter_mut().zip(&data[r * row..][..row]) {
            *o = q as f32 * s;
        }
    }
    Ok(())
}

impl Op for QGather {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (d, s, i) = (req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?);
        expect_dtype(d, DType::I8, "QGather data")?;
        expect_dtype(s, DType::F32, "QGather scale")?;
        if !matches!(i.dtype, DType::I64 | DType::I32) {
            return Err(Error::Graph(format!(
                "QGather indices must be i64 or i32, are {}",
                i.dtype
            )));
        }
        if d.rank() == 0 {
            return Err(Error::Graph(
                "QGather data must have rank >= 1, is a scalar".into(),
            ));
        }
        let rows_differ = matches!(
            (s.shape.first(), &d.shape[0]),
            (Some(crate::tensor::Dim::Known(a)), crate::tensor::Dim::Known(b)) if a != b
        );
        if s.rank() != 1 || rows_differ {
            return Err(Error::Graph(format!(
                "QGather: scale must be [V] with V = {} (data is {}), is {}",
                d.shape[0],
                shape_str(&d.shape),
                shape_str(&s.shape)
            )));
        }
        let mut out: Shape = i.shape.clone();
        out.extend_from_slice(&d.shape[1..]);
        Ok(vec![Fact::new(DType::F32, out)])
    }

    fn eval(
        &self,
        _ctx: &mut super::Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (d, s, i) = (*req(inputs, 0)?, *req(inputs, 1)?, *req(inputs, 2)?);
        let (data, scale) = (d.as_slice::<i8>()?, s.f32()?);
        let Some((&v, rest)) = d.dims.split_first() else {
            return Err(Error::Graph(
                "QGather data must have rank >= 1, is a scalar".into(),
            ));
        };
        let row = numel(rest)?;
        if data.len() != v.saturating_mul(row) || scale.len() != v {
            return Err(Error::Graph(format!(
                "QGather: data {} has {} values and scale has {}",
                dims_str(d.dims),
                data.len(),
                scale.len()
            )));
        }
        let out = super::matmul::first_out(outputs, "QGather")?;
        let od = out.dims;
        if od.len() != i.dims.len() + rest.len()
            || od[..i.dims.len()] != *i.dims
            || od[i.dims.len()..] != *rest
        {
            return Err(Error::Graph(format!(
                "QGather: output is {}, expected indices {} followed by {}",
                dims_str(od),
                dims_str(i.dims),
                dims_str(rest)
            )));
        }
        let o = out.f32()?;
        let n = numel(i.dims)?;
        if o.len() != n.saturating_mul(row) {
            return Err(Error::Graph(
                "QGather: output buffer does not match its shape".into(),
            ));
        }
        let check = |len: usize| super::matmul::check_len("QGather indices", i.dims, len);
        match i.dtype {
            DType::I64 => {
                let idx = i.as_slice::<i64>()?;
                check(idx.len())?;
                gather(idx, data, scale, row, o)
            }
            DType::I32 => {
                let idx = i.as_slice::<i32>()?;
                check(idx.len())?;
                gather(idx, data, scale, row, o)
            }
            t => Err(Error::Graph(format!(
                "QGather indices must be i64 or i32, are {t}"
            ))),
        }
    }
}

pub fn build_qgather(a: &Attrs) -> Result<Box<dyn Op>> {
    match a.int("axis", 0)? {
        0 => Ok(Box::new(QGather)),
        x => Err(Error::Unsupported(format!(
            "QGather: axis {x}; only axis 0 (rows of an embedding table) is supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_owned;
    use crate::tensor::Tensor;

    #[test]
    fn gathers_and_dequantizes_rows() {
        let data: Vec<i8> = (0..12).map(|x| x as i8 - 6).collect(); // [4, 3]
        let scale = [0.5f32, 1.0, 2.0, -1.0];
        let op = build_qgather(&Attrs::new()).unwrap();
        let out = eval_owned(
            op.as_ref(),
            &[
                Some(Tensor::from_slice(&[4, 3], &data).unwrap()),
                Some(Tensor::from_slice(&[4], &scale).unwrap()),
                Some(Tensor::from_slice(&[2, 2], &[2i64, 0, -1, 2]).unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(out[0].dims, [2, 2, 3]);
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[
                0.0, 2.0, 4.0, -3.0, -2.5, -2.0, -3.0, -4.0, -5.0, 0.0, 2.0, 4.0
            ]
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let op = build_qgather(&Attrs::new()).unwrap();
        let d = Tensor::from_slice(&[4, 3], &[1i8; 12]).unwrap();
        let s = Tensor::from_slice(&[4], &[1f32; 4]).unwrap();
        let i = |v: &[i64]| Tensor::from_slice(&[v.len()], v).unwrap();
        let e = eval_owned(
            op.as_ref(),
            &[Some(d.clone()), Some(s.clone()), Some(i(&[4]))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("index 4"), "{e}");
        let e = eval_owned(
            op.as_ref(),
            &[Some(d.clone()), Some(s.clone()), Some(i(&[-5]))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let s3 = Tensor::from_slice(&[3], &[1f32; 3]).unwrap();
        let e = eval_owned(op.as_ref(), &[Some(d.clone()), Some(s3), Some(i(&[0]))]).unwrap_err();
        assert!(
            e.to_string().contains("scale must be [V] with V = 4"),
            "{e}"
        );
        let f = Tensor::from_slice(&[4, 3], &[1f32; 12]).unwrap();
        let e = eval_owned(op.as_ref(), &[Some(f), Some(s.clone()), Some(i(&[0]))]).unwrap_err();
        assert!(e.to_string().contains("data must be i8"), "{e}");
        let fi = Tensor::from_slice(&[1], &[0f32]).unwrap();
        let e = eval_owned(op.as_ref(), &[Some(d), Some(s), Some(fi)]).unwrap_err();
        assert!(e.to_string().contains("indices must be i64 or i32"), "{e}");
        assert!(build_qgather(&Attrs::new().with("axis", crate::graph::Attr::Int(1))).is_err());
    }
}
