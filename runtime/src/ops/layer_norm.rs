//! `LayerNormalization` (opset 17): normalise over the dims from `axis` on,
//! `Y = (X - mean) / sqrt(var + epsilon) * Scale + B`, with the optional
//! `Mean` and `InvStdDev` outputs (shape `X.shape[..axis]` followed by ones).
//! Statistics are computed in f32 (stash_type 1), two passes per row (mean,
//! then the mean of squared deviations), eight-lane sums.

use super::broadcast::{broadcast_dims, broadcast_strides, for_each_run};
use super::reduce::sum_map;
use super::{Ctx, Fact, Op, axis, expect_dtype, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{Dim, Shape, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result, bail};

#[derive(Debug)]
struct LayerNorm {
    axis: i64,
    eps: f32,
}

/// Whether a parameter of shape `p` broadcasts to the normalised shape
/// `norm` without growing it (unknown dims are given the benefit of doubt).
fn fits(p: &[Dim], norm: &[Dim]) -> bool {
    p.len() <= norm.len()
        && p.iter()
            .rev()
            .zip(norm.iter().rev())
            .all(|(a, b)| match (a, b) {
                (Dim::Known(1), _) => true,
                (Dim::Known(x), Dim::Known(y)) => x == y,
                _ => true,
            })
}

/// The parameter as `n` contiguous values: itself when it already has the
/// normalised shape's size, else broadcast into `buf`.
fn expand<'a>(
    p: &'a TensorRef<'_>,
    norm: &[usize],
    buf: &'a mut [f32],
    what: &str,
) -> Result<&'a [f32]> {
    let v = p.f32()?;
    let ok = p.rank() <= norm.len()
        && broadcast_dims(&[norm, p.dims]).is_ok_and(|d| d.as_slice() == norm);
    if !ok || v.len() != numel(p.dims)? {
        bail!(
            Graph,
            "LayerNormalization: {what} {} does not broadcast to the normalised shape {}",
            dims_str(p.dims),
            dims_str(norm)
        );
    }
    if v.len() == buf.len() {
        return Ok(v);
    }
    let strides = broadcast_strides(p.dims, norm);
    for_each_run(norm, [&strides], |start, [off], [step], len| {
        for j in 0..len {
            buf[start + j] = v[off + j * step];
        }
    });
    Ok(buf)
}

/// One row: writes `y`, returns (mean, 1/std).
#[inline]
fn normalize_row(
    x: &[f32],
    y: &mut [f32],
    scale: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum_map(x, |v| v) / n;
    let var = sum_map(x, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    match bias {
        Some(b) => {
            for (((o, &v), &s), &b) in y.iter_mut().zip(x).zip(scale).zip(b) {
                *o = (v - mean) * inv * s + b;
            }
        }
        None => {
            for ((o, &v), &s) in y.iter_mut().zip(x).zip(scale) {
                *o = (v - mean) * inv * s;
            }
        }
    }
    (mean, inv)
}

impl Op for LayerNorm {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        expect_dtype(x, DType::F32, "LayerNormalization X")?;
        let a = axis(self.axis, x.rank()).map_err(|e| {
            Error::Graph(format!(
                "LayerNormalization: attribute 'axis' on X {}: {e}",
                shape_str(&x.shape)
            ))
        })?;
        let norm = &x.shape[a..];
        for (i, what) in [(1, "Scale"), (2, "B")] {
            let p = if i == 1 {
                Some(req(inputs, i)?)
            } else {
                opt(inputs, i)
            };
            let Some(p) = p else { continue };
            expect_dtype(p, DType::F32, &format!("LayerNormalization {what}"))?;
            if !fits(&p.shape, norm) {
                bail!(
                    Graph,
                    "LayerNormalization: {what} {} does not broadcast to {} (X {} from axis {a})",
                    shape_str(&p.shape),
                    shape_str(norm),
                    shape_str(&x.shape)
                );
            }
        }
        let stats: Shape = x.shape[..a]
            .iter()
            .cloned()
            .chain(std::iter::repeat_n(Dim::Known(1), x.rank() - a))
            .collect();
        Ok(vec![
            Fact::new(DType::F32, x.shape.clone()),
            Fact::new(DType::F32, stats.clone()),
            Fact::new(DType::F32, stats),
        ])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let xs = x.f32()?;
        let a = axis(self.axis, x.rank())?;
        let (rows, n) = (numel(&x.dims[..a])?, numel(&x.dims[a..])?);
        if xs.len() != rows.saturating_mul(n) {
            bail!(
                Graph,
                "LayerNormalization: X data does not match {}",
                dims_str(x.dims)
            );
        }
        let [y, stats @ ..] = outputs else {
            bail!(Graph, "LayerNormalization: no output buffer");
        };
        if y.dims != x.dims {
            bail!(
                Graph,
                "LayerNormalization: Y is {}, X is {}",
                dims_str(y.dims),
                dims_str(x.dims)
            );
        }
        let mut stat_bufs: [Option<&mut [f32]>; 2] = [None, None];
        for (k, t) in stats.iter_mut().take(2).enumerate() {
            if t.numel() != rows {
                bail!(
                    Graph,
                    "LayerNormalization: statistics output {} does not have {rows} rows",
                    dims_str(t.dims)
                );
            }
            let s = t.f32()?;
            if s.len() != rows {
                bail!(
                    Graph,
                    "LayerNormalization: statistics output holds {} values for {rows} rows",
                    s.len()
                );
            }
            stat_bufs[k] = Some(s);
        }
        let ys = y.f32()?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let norm = &x.dims[a..];
        let (sbuf, bbuf) = ctx.scratch(n.saturating_mul(2)).split_at_mut(n);
        let scale = expand(req(inputs, 1)?, norm, sbuf, "Scale")?;
        let bias = match opt(inputs, 2) {
            Some(b) => Some(expand(b, norm, bbuf, "B")?),
            None => None,
        };
        let [mean, inv] = &mut stat_bufs;
        for (r, (xr, yr)) in xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)).enumerate() {
            let (m, i) = normalize_row(xr, yr, scale, bias, self.eps);
            if let Some(s) = mean {
                s[r] = m;
            }
            if let Some(s) = inv {
                s[r] = i;
            }
        }
        Ok(())
    }
}

pub fn build_layer_norm(a: &Attrs) -> Result<Box<dyn Op>> {
    let eps = a.float("epsilon", 1e-5)?;
    if !eps.is_finite() || eps < 0.0 {
        bail!(
            Graph,
            "LayerNormalization: attribute 'epsilon' must be finite and ≥ 0, is {eps}"
        );
    }
    // stash_type names the precision of the statistics; f32 is what we
    // compute in, at least as precise as every stash type of an f32 input.
    a.int("stash_type", 1)?;
    Ok(Box::new(LayerNorm {
        axis: a.int("axis", -1)?,
        eps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attr;
    use crate::ops::eval_owned;
    use crate::tensor::Tensor;

    fn rand_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn ln(axis: Option<i64>, eps: Option<f32>) -> Box<dyn Op> {
        let mut a = Attrs::new();
        if let Some(ax) = axis {
            a.set("axis", Attr::Int(ax));
        }
        if let Some(e) = eps {
            a.set("epsilon", Attr::Float(e));
        }
        build_layer_norm(&a).unwrap()
    }

    /// From the definition in f64: (y, mean, inv_std) with scale and bias
    /// given per normalised element.
    fn naive(
        x: &[f32],
        n: usize,
        s: &[f32],
        b: Option<&[f32]>,
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut y, mut means, mut invs) = (vec![], vec![], vec![]);
        for row in x.chunks(n) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for (j, &v) in row.iter().enumerate() {
                let bias = b.map_or(0.0, |b| b[j] as f64);
                y.push((v as f64 - mean) * inv * s[j] as f64 + bias);
            }
            means.push(mean);
            invs.push(inv);
        }
        (y, means, invs)
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

    #[test]
    fn matches_naive_on_every_axis_with_and_without_bias() {
        let mut seed = 0x1234_5678_9abc_def1;
        for dims in [&[7usize][..], &[3, 5], &[2, 3, 5], &[2, 3, 4, 5], &[3, 384]] {
            let r = dims.len() as i64;
            let x: Vec<f32> = rand_vec(&mut seed, dims.iter().product(), 3.0)
                .iter()
                .map(|v| v + 1.5)
                .collect();
            for ax in -r..r {
                let a = ((ax + r) % r) as usize;
                let n: usize = dims[a..].iter().product();
                let s = rand_vec(&mut seed, n, 2.0);
                let b = rand_vec(&mut seed, n, 1.0);
                for (bias, eps) in [(true, None), (false, Some(0.1f32))] {
                    let mut ins = vec![
                        Some(Tensor::from_slice(dims, &x).unwrap()),
                        Some(Tensor::from_slice(&dims[a..], &s).unwrap()),
                    ];
                    if bias {
                        ins.push(Some(Tensor::from_slice(&dims[a..], &b).unwrap()));
                    }
                    let out = eval_owned(ln(Some(ax), eps).as_ref(), &ins).unwrap();
                    let e = eps.unwrap_or(1e-5) as f64;
                    let (y, m, i) = naive(&x, n, &s, bias.then_some(&b[..]), e);
                    let what = format!("{dims:?} axis {ax} bias {bias}");
                    assert_eq!(out[0].dims, dims);
                    let stat_dims: Vec<usize> = (0..dims.len())
                        .map(|k| if k < a { dims[k] } else { 1 })
                        .collect();
                    assert_eq!(out[1].dims, stat_dims);
                    assert_eq!(out[2].dims, stat_dims);
                    assert_close(out[0].as_slice::<f32>().unwrap(), &y, 1e-5, &what);
                    assert_close(out[1].as_slice::<f32>().unwrap(), &m, 1e-5, &what);
                    assert_close(out[2].as_slice::<f32>().unwrap(), &i, 1e-5, &what);
                }
            }
        }
    }

    #[test]
    fn scale_and_bias_broadcast_to_the_normalised_shape() {
        let mut seed = 99;
        let dims = [2usize, 3, 4];
        let x = rand_vec(&mut seed, 24, 2.0);
        // axis 1: normalised shape [3, 4]; scale [4] and bias [1] broadcast
        let s = rand_vec(&mut seed, 4, 1.0);
        let out = eval_owned(
            ln(Some(1), None).as_ref(),
            &[
                Some(Tensor::from_slice(&dims, &x).unwrap()),
                Some(Tensor::from_slice(&[4], &s).unwrap()),
                Some(Tensor::from_slice(&[1], &[0.5f32]).unwrap()),
            ],
        )
        .unwrap();
        let full_s: Vec<f32> = (0..12).map(|j| s[j % 4]).collect();
        let (y, _, _) = naive(&x, 12, &full_s, Some(&[0.5; 12]), 1e-5);
        assert_close(out[0].as_slice::<f32>().unwrap(), &y, 1e-5, "broadcast");
    }

    #[test]
    fn infer_keeps_symbols_and_checks_inputs() {
        let n = Dim::Sym("N".into());
        let s = Dim::Sym("S".into());
        let x = Fact::new(DType::F32, vec![n.clone(), s.clone(), Dim::Known(384)]);
        let p = |d: &[usize]| {
            Some(Fact::new(
                DType::F32,
                d.iter().map(|&k| Dim::Known(k)).collect(),
            ))
        };
        let out = ln(None, None)
            .infer(&[Some(x.clone()), p(&[384]), p(&[384])])
            .unwrap();
        assert_eq!(out[0].shape, x.shape);
        assert_eq!(out[1].shape, vec![n.clone(), s.clone(), Dim::Known(1)]);
        let out = ln(Some(1), None)
            .infer(&[Some(x.clone()), p(&[384]), None])
            .unwrap();
        assert_eq!(out[2].shape, vec![n, Dim::Known(1), Dim::Known(1)]);
        let e = ln(None, None)
            .infer(&[Some(x.clone()), p(&[383]), None])
            .unwrap_err();
        assert!(e.to_string().contains("Scale"), "{e}");
        assert!(
            ln(None, None)
                .infer(&[Some(x.clone()), p(&[384]), p(&[2, 384])])
                .is_err()
        );
        assert!(ln(None, None).infer(&[Some(x.clone()), None]).is_err());
        assert!(
            ln(Some(3), None)
                .infer(&[Some(x.clone()), p(&[384])])
                .is_err()
        );
        let xi = Fact::new(DType::I64, vec![Dim::Known(2)]);
        assert!(ln(None, None).infer(&[Some(xi), p(&[2])]).is_err());
        assert!(build_layer_norm(&Attrs::new().with("epsilon", Attr::Float(f32::NAN))).is_err());
        // a scale whose size does not match fails at run time too
        let r = eval_owned(
            ln(None, None).as_ref(),
            &[
                Some(Tensor::from_slice(&[2, 3], &[0.0f32; 6]).unwrap()),
                Some(Tensor::from_slice(&[2], &[1.0f32; 2]).unwrap()),
            ],
        );
        assert!(r.is_err());
    }
}
