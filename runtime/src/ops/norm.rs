//! Normalisations: `Softmax` (opset 13 semantics, plus the legacy opset < 13
//! "coerce to 2-D" form the importer marks with `legacy = 1`) and
//! inference-mode `BatchNormalization` (the importer folds most of these
//! into a preceding Conv/Gemm; this op covers the rest).

use super::{Ctx, Fact, Op, axis, expect_dtype, par_pieces, req};
use crate::dtype::DType;
use crate::graph::{Attr, Attrs};
use crate::kernels::math;
use crate::tensor::{Dim, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result};

fn first_out<'o, 'a>(outputs: &'o mut [TensorMut<'a>], op: &str) -> Result<&'o mut TensorMut<'a>> {
    outputs
        .first_mut()
        .ok_or_else(|| Error::Graph(format!("{op}: no output buffer")))
}

fn same_len(op: &str, dims: &[usize], x: usize, y: usize) -> Result<()> {
    let want = numel(dims)?;
    if x != want || y != want {
        return Err(Error::Graph(format!(
            "{op}: shape {} needs {want} elements, input has {x}, output has {y}",
            dims_str(dims)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- Softmax

/// Softmax over `axis` (opset ≥ 13), or, when `legacy`, over everything from
/// `axis` on with the input seen as `[prod(dims[..axis]), prod(dims[axis..])]`.
#[derive(Debug)]
struct Softmax {
    axis: i64,
    legacy: bool,
}

impl Softmax {
    /// (outer, n, inner): softmax runs over `n` values `inner` apart.
    fn split(&self, dims: &[usize]) -> Result<(usize, usize, usize)> {
        let ax = axis(self.axis, dims.len())
            .map_err(|e| Error::Graph(format!("Softmax: attribute 'axis': {e}")))?;
        let outer = numel(&dims[..ax])?;
        if self.legacy {
            Ok((outer, numel(&dims[ax..])?, 1))
        } else {
            Ok((outer, dims[ax], numel(&dims[ax + 1..])?))
        }
    }
}

/// Numerically stable softmax of one contiguous row: subtract the max,
/// exponentiate and sum in one vectorised pass, scale by the reciprocal.
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = fold_max(x);
    let sum = math::exp_shift_sum(x, max, y);
    let inv = 1.0 / sum;
    y.iter_mut().for_each(|o| *o *= inv);
}

/// Max of a row, eight lanes, ignoring NaN like `f32::max` (a NaN input
/// still makes its whole row NaN through the exponentials). Written as a
/// compare and select (`maxps`, wasm `f32x4.pmax`): `f32::max` is a call
/// to `fmaxf` per element in wasm32. Which zero wins a tie of ±0 may differ
/// from `f32::max`; the shift `x - max` does not see it.
fn fold_max(x: &[f32]) -> f32 {
    #[inline(always)]
    fn max(m: f32, v: f32) -> f32 {
        if v > m { v } else { m }
    }
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = max(lanes[k], c[k]);
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| max(m, v));
    lanes.iter().fold(m, |m, &v| max(m, v))
}

/// Softmax over the rows of an `[n, inner]` block, per column, walking rows
/// contiguously; `max` and `sum` are scratch of `inner` values each.
fn softmax_columns(x: &[f32], y: &mut [f32], inner: usize, max: &mut [f32], sum: &mut [f32]) {
    max.fill(f32::NEG_INFINITY);
    sum.fill(0.0);
    for row in x.chunks_exact(inner) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    for (orow, row) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
        for ((o, &v), &m) in orow.iter_mut().zip(row).zip(max.iter()) {
            *o = v - m;
        }
        math::exp(orow);
        for (s, &o) in sum.iter_mut().zip(orow.iter()) {
            *s += o;
        }
    }
    sum.iter_mut().for_each(|s| *s = 1.0 / *s);
    for orow in y.chunks_exact_mut(inner) {
        for (o, &s) in orow.iter_mut().zip(sum.iter()) {
            *o *= s;
        }
    }
}

impl Op for Softmax {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        expect_dtype(x, DType::F32, "Softmax input")?;
        axis(self.axis, x.rank()).map_err(|e| {
            Error::Graph(format!(
                "Softmax: attribute 'axis' on input {}: {e}",
                shape_str(&x.shape)
            ))
        })?;
        Ok(vec![Fact::new(x.dtype, x.shape.clone())])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let xs = x.f32()?;
        let out = first_out(outputs, "Softmax")?;
        if out.dims != x.dims {
            return Err(Error::Graph(format!(
                "Softmax: output is {}, input is {}",
                dims_str(out.dims),
                dims_str(x.dims)
            )));
        }
        let (_, n, inner) = self.split(x.dims)?;
        let y = out.f32()?;
        same_len("Softmax", x.dims, xs.len(), y.len())?;
        let block = n.saturating_mul(inner);
        if block == 0 || xs.is_empty() {
            return Ok(());
        }
        if inner == 1 {
            // whole rows per thread
            return par_pieces(ctx.threads, y, n, |start, piece| {
                let xs = &xs[start..start + piece.len()];
                for (xr, yr) in xs.chunks_exact(n).zip(piece.chunks_exact_mut(n)) {
                    softmax_row(xr, yr);
                }
                Ok(())
            });
        }
        let (max, sum) = ctx.scratch(inner.saturating_mul(2)).split_at_mut(inner);
        for (xb, yb) in xs.chunks_exact(block).zip(y.chunks_exact_mut(block)) {
            softmax_columns(xb, yb, inner, max, sum);
        }
        Ok(())
    }
}

pub fn build_softmax(a: &Attrs) -> Result<Box<dyn Op>> {
    let legacy = match a.int("legacy", 0)? {
        0 => false,
        1 => true,
        v => {
            return Err(Error::Graph(format!(
                "attribute 'legacy' must be 0 or 1, is {v}"
            )));
        }
    };
    Ok(Box::new(Softmax {
        axis: a.int("axis", if legacy { 1 } else { -1 })?,
        legacy,
    }))
}

// ---------------------------------------------------------------- BatchNormalization

/// Inference-mode batch norm: `y = (x - mean) / sqrt(var + eps) * scale + b`
/// per channel (dim 1).
#[derive(Debug)]
struct BatchNorm {
    eps: f32,
}

const BN_PARAMS: [&str; 4] = ["scale", "B", "input_mean", "input_var"];

impl Op for BatchNorm {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        expect_dtype(x, DType::F32, "BatchNormalization X")?;
        if x.rank() < 2 {
            return Err(Error::Graph(format!(
                "BatchNormalization: X must be [N, C, ...], is {}",
                shape_str(&x.shape)
            )));
        }
        let c = &x.shape[1];
        for (i, name) in BN_PARAMS.iter().enumerate() {
            let p = req(inputs, i + 1)?;
            expect_dtype(p, DType::F32, &format!("BatchNormalization {name}"))?;
            let ok = match p.shape.as_slice() {
                [d] => !matches!((d, c), (Dim::Known(a), Dim::Known(b)) if a != b),
                _ => false,
            };
            if !ok {
                return Err(Error::Graph(format!(
                    "BatchNormalization: {name} must be [{c}] for X {}, is {}",
                    shape_str(&x.shape),
                    shape_str(&p.shape)
                )));
            }
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
        let xs = x.f32()?;
        let c = match x.dims {
            [_, c, ..] => *c,
            _ => {
                return Err(Error::Graph(format!(
                    "BatchNormalization: X must be [N, C, ...], is {}",
                    dims_str(x.dims)
                )));
            }
        };
        let mut params: [&[f32]; 4] = [&[]; 4];
        for (i, name) in BN_PARAMS.iter().enumerate() {
            let p = req(inputs, i + 1)?;
            let v = p.f32()?;
            if p.dims != [c] || v.len() != c {
                return Err(Error::Graph(format!(
                    "BatchNormalization: {name} must be [{c}] for X {}, is {}",
                    dims_str(x.dims),
                    dims_str(p.dims)
                )));
            }
            params[i] = v;
        }
        let out = first_out(outputs, "BatchNormalization")?;
        if out.dims != x.dims {
            return Err(Error::Graph(format!(
                "BatchNormalization: output is {}, X is {}",
                dims_str(out.dims),
                dims_str(x.dims)
            )));
        }
        let y = out.f32()?;
        same_len("BatchNormalization", x.dims, xs.len(), y.len())?;
        let spatial = numel(&x.dims[2..])?;
        if xs.is_empty() || spatial == 0 {
            return Ok(());
        }
        let [scale, bias, mean, var] = params;
        // Per channel: y = x * mul + add.
        let (mul, add) = ctx.scratch(c.saturating_mul(2)).split_at_mut(c);
        for ch in 0..c {
            mul[ch] = scale[ch] / (var[ch] + self.eps).sqrt();
            add[ch] = bias[ch] - mean[ch] * mul[ch];
        }
        for (i, (xp, yp)) in xs
            .chunks_exact(spatial)
            .zip(y.chunks_exact_mut(spatial))
            .enumerate()
        {
            let (m, a) = (mul[i % c], add[i % c]);
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * m + a;
            }
        }
        Ok(())
    }
}

pub fn build_batch_norm(a: &Attrs) -> Result<Box<dyn Op>> {
    if a.int("training_mode", 0)? != 0 {
        return Err(Error::Unsupported(
            "BatchNormalization: attribute 'training_mode' = 1 is not supported (inference only)"
                .into(),
        ));
    }
    if let Some(Attr::Int(s)) = a.get("spatial")
        && *s != 1
    {
        return Err(Error::Unsupported(format!(
            "BatchNormalization: attribute 'spatial' = {s} is not supported (only 1)"
        )));
    }
    let eps = a.float("epsilon", 1e-5)?;
    if !eps.is_finite() {
        return Err(Error::Graph(format!(
            "BatchNormalization: attribute 'epsilon' must be finite, is {eps}"
        )));
    }
    Ok(Box::new(BatchNorm { eps }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_owned;
    use crate::tensor::{Shape, Tensor};

    fn rand_vec(seed: &mut u32, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                ((*seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn t(dims: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_slice(dims, v).unwrap()
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Softmax from the definition: for every output position, sum exp over
    /// the positions that differ from it only in the reduced dims `from..to`.
    fn naive_softmax(x: &[f32], dims: &[usize], from: usize, to: usize) -> Vec<f64> {
        let unravel = |mut i: usize| -> Vec<usize> {
            let mut idx = vec![0; dims.len()];
            for d in (0..dims.len()).rev() {
                idx[d] = i % dims[d];
                i /= dims[d];
            }
            idx
        };
        let same_group = |p: &[usize], q: &[usize]| {
            (0..dims.len()).all(|d| (from..to).contains(&d) || p[d] == q[d])
        };
        (0..x.len())
            .map(|i| {
                let pi = unravel(i);
                let group: Vec<f64> = (0..x.len())
                    .filter(|&j| same_group(&pi, &unravel(j)))
                    .map(|j| x[j] as f64)
                    .collect();
                let max = group.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = group.iter().map(|v| (v - max).exp()).sum();
                (x[i] as f64 - max).exp() / sum
            })
            .collect()
    }

    fn softmax(axis: Option<i64>, legacy: bool) -> Box<dyn Op> {
        let mut a = Attrs::new();
        if let Some(ax) = axis {
            a.set("axis", Attr::Int(ax));
        }
        if legacy {
            a.set("legacy", Attr::Int(1));
        }
        build_softmax(&a).unwrap()
    }

    #[test]
    fn softmax_matches_naive_on_every_axis() {
        let mut seed = 3;
        for dims in [&[7usize][..], &[3, 5], &[2, 3, 5], &[3, 1, 4, 5]] {
            let r = dims.len() as i64;
            let x = rand_vec(&mut seed, dims.iter().product(), 4.0);
            for ax in -r..r {
                let a = if ax < 0 {
                    (ax + r) as usize
                } else {
                    ax as usize
                };
                let out =
                    eval_owned(softmax(Some(ax), false).as_ref(), &[Some(t(dims, &x))]).unwrap();
                assert_eq!(out[0].dims, dims);
                let want = naive_softmax(&x, dims, a, a + 1);
                assert_close(
                    out[0].as_slice::<f32>().unwrap(),
                    &want,
                    1e-5,
                    &format!("{dims:?} axis {ax}"),
                );
            }
            // default axis is the last
            let out = eval_owned(softmax(None, false).as_ref(), &[Some(t(dims, &x))]).unwrap();
            let want = naive_softmax(&x, dims, dims.len() - 1, dims.len());
            assert_close(
                out[0].as_slice::<f32>().unwrap(),
                &want,
                1e-5,
                &format!("{dims:?} default axis"),
            );
        }
    }

    #[test]
    fn softmax_rows_split_across_threads_give_the_same_bits() {
        let mut seed = 9;
        // attention-like: 4 heads x 96 rows x 128, some rows masked out
        let dims = [4usize, 96, 128];
        let mut x = rand_vec(&mut seed, dims.iter().product(), 6.0);
        for row in x.chunks_mut(128).step_by(3) {
            row[100..].fill(f32::MIN);
        }
        let op = softmax(Some(-1), false);
        let run = |threads: usize| {
            let ins = [Some(t(&dims, &x))];
            super::super::conv::tests::run(op.as_ref(), &ins, threads).1
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one, two);
        // per row in f64 (naive_softmax is quadratic in the whole size)
        let want: Vec<f64> = x
            .chunks(128)
            .flat_map(|row| {
                let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                row.iter().map(move |&v| (v as f64 - max).exp() / sum)
            })
            .collect();
        assert_close(&two, &want, 1e-6, "threaded softmax");
    }

    #[test]
    fn legacy_softmax_flattens_from_axis() {
        let mut seed = 5;
        let dims = [2usize, 3, 4, 5];
        let x = rand_vec(&mut seed, 120, 3.0);
        for (ax, from) in [
            (None, 1usize),
            (Some(0), 0),
            (Some(1), 1),
            (Some(2), 2),
            (Some(-1), 3),
            (Some(-3), 1),
        ] {
            let out = eval_owned(softmax(ax, true).as_ref(), &[Some(t(&dims, &x))]).unwrap();
            let want = naive_softmax(&x, &dims, from, dims.len());
            assert_close(
                out[0].as_slice::<f32>().unwrap(),
                &want,
                1e-5,
                &format!("legacy axis {ax:?}"),
            );
        }
    }

    #[test]
    fn softmax_is_stable_for_large_inputs() {
        let x = [1000.0f32, 1001.0, 999.0, -1000.0, 88.0, 89.0];
        for (dims, ax) in [([2usize, 3], 1i64), ([3, 2], 0)] {
            let out = eval_owned(softmax(Some(ax), false).as_ref(), &[Some(t(&dims, &x))]).unwrap();
            let got = out[0].as_slice::<f32>().unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
            let a = ax as usize;
            assert_close(got, &naive_softmax(&x, &dims, a, a + 1), 1e-6, "large");
        }
    }

    #[test]
    fn softmax_infer_keeps_symbols_and_checks_axis() {
        let shape: Shape = vec![
            Dim::Sym("N".into()),
            Dim::Known(12),
            Dim::Sym("S".into()),
            Dim::Sym("S".into()),
        ];
        let out = softmax(None, false)
            .infer(&[Some(Fact::new(DType::F32, shape.clone()))])
            .unwrap();
        assert_eq!(out[0].shape, shape);
        let e = softmax(Some(4), false)
            .infer(&[Some(Fact::new(DType::F32, shape.clone()))])
            .unwrap_err();
        assert!(e.to_string().contains("axis"), "{e}");
        assert!(
            softmax(None, false)
                .infer(&[Some(Fact::new(DType::F32, vec![]))])
                .is_err()
        );
        assert!(
            softmax(None, false)
                .infer(&[Some(Fact::new(DType::I64, shape))])
                .is_err()
        );
        assert!(build_softmax(&Attrs::new().with("legacy", Attr::Int(2))).is_err());
        // empty tensors are fine
        let out = eval_owned(softmax(Some(0), false).as_ref(), &[Some(t(&[0, 3], &[]))]).unwrap();
        assert_eq!(out[0].dims, vec![0, 3]);
    }

    fn bn(eps: Option<f32>) -> Box<dyn Op> {
        let mut a = Attrs::new();
        if let Some(e) = eps {
            a.set("epsilon", Attr::Float(e));
        }
        build_batch_norm(&a).unwrap()
    }

    #[test]
    fn batch_norm_matches_naive() {
        let mut seed = 9;
        for (dims, eps) in [
            (&[2usize, 3, 4, 5][..], None),
            (&[4, 3][..], Some(1e-3)),
            (&[1, 5, 7][..], Some(0.5)),
        ] {
            let c = dims[1];
            let spatial: usize = dims[2..].iter().product();
            let x = rand_vec(&mut seed, dims.iter().product(), 3.0);
            let scale = rand_vec(&mut seed, c, 2.0);
            let bias = rand_vec(&mut seed, c, 1.0);
            let mean = rand_vec(&mut seed, c, 1.0);
            let var: Vec<f32> = rand_vec(&mut seed, c, 1.0)
                .iter()
                .map(|v| v.abs() + 0.01)
                .collect();
            let e = eps.unwrap_or(1e-5) as f64;
            let want: Vec<f64> = (0..x.len())
                .map(|i| {
                    let ch = (i / spatial) % c;
                    (x[i] as f64 - mean[ch] as f64) / (var[ch] as f64 + e).sqrt() * scale[ch] as f64
                        + bias[ch] as f64
                })
                .collect();
            let ins = [x.as_slice(), &scale, &bias, &mean, &var];
            let ins: Vec<Option<Tensor>> = ins
                .iter()
                .enumerate()
                .map(|(i, v)| Some(if i == 0 { t(dims, v) } else { t(&[c], v) }))
                .collect();
            let out = eval_owned(bn(eps).as_ref(), &ins).unwrap();
            assert_eq!(out[0].dims, dims);
            assert_close(
                out[0].as_slice::<f32>().unwrap(),
                &want,
                1e-5,
                &format!("{dims:?}"),
            );
        }
    }

    #[test]
    fn batch_norm_checks_shapes_and_attributes() {
        let n = Dim::Sym("N".into());
        let x = Some(Fact::new(
            DType::F32,
            vec![
                n.clone(),
                Dim::Known(3),
                Dim::Sym("H".into()),
                Dim::Known(4),
            ],
        ));
        let p = |c: usize| Some(Fact::new(DType::F32, vec![Dim::Known(c)]));
        let out = bn(None)
            .infer(&[x.clone(), p(3), p(3), p(3), p(3)])
            .unwrap();
        assert_eq!(out[0].shape, x.as_ref().unwrap().shape);
        let e = bn(None)
            .infer(&[x.clone(), p(3), p(4), p(3), p(3)])
            .unwrap_err();
        assert!(e.to_string().contains("B must be [3]"), "{e}");
        assert!(bn(None).infer(&[x.clone(), p(3), p(3), p(3)]).is_err());
        assert!(
            bn(None)
                .infer(&[Some(Fact::new(DType::F32, vec![n])), p(3), p(3), p(3), p(3)])
                .is_err()
        );
        let e = build_batch_norm(&Attrs::new().with("training_mode", Attr::Int(1))).unwrap_err();
        assert!(e.to_string().contains("training_mode"), "{e}");
        assert!(build_batch_norm(&Attrs::new().with("spatial", Attr::Int(0))).is_err());
        let ones = t(&[2], &[1.0, 1.0]);
        let r = eval_owned(
            bn(None).as_ref(),
            &[
                Some(t(&[1, 3], &[0.0; 3])),
                Some(ones.clone()),
                Some(ones.clone()),
                Some(ones.clone()),
                Some(ones),
            ],
        );
        assert!(r.is_err());
    }
}
