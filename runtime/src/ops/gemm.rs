//! `Gemm`: `Y = alpha·A'·B' + beta·C` for 2-D `A`, `B` (`'` = optional
//! transpose through `transA`/`transB`, done by strides, never copied) and
//! an optional `C` broadcast one way to `[M, N]`; and the fused
//! [`Activation`] that `Gemm` and `MatMul` apply in place on their output
//! (attributes `activation`, `activation_alpha`, `activation_beta`).
//!
//! With `alpha == 1`, `beta·C` is written into the output first and the
//! matmul kernel accumulates onto it; otherwise the kernel writes `A'·B'`
//! and one pass computes `alpha·out + beta·C` row by row, applying the
//! activation while the row is in cache.

pub use super::elementwise::Activation;
use super::matmul::{check_len, first_out, inner_mismatch};
use super::{Ctx, Fact, Op, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::{self, Mat};
use crate::tensor::{Dim, TensorMut, TensorRef, dims_str, shape_str};
use crate::{Error, Result};

// ---------------------------------------------------------------- Gemm

#[derive(Debug)]
struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    act: Activation,
}

fn flag(a: &Attrs, key: &str) -> Result<bool> {
    match a.int(key, 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Error::Graph(format!(
            "attribute '{key}' must be 0 or 1, is {v}"
        ))),
    }
}

impl Gemm {
    /// (m, k) of A' and (k, n) of B' from the stored 2-D shapes.
    fn sides<D: Clone>(&self, a: &[D], b: &[D]) -> ((D, D), (D, D)) {
        let pick = |s: &[D], t: bool| {
            if t {
                (s[1].clone(), s[0].clone())
            } else {
                (s[0].clone(), s[1].clone())
            }
        };
        (pick(a, self.trans_a), pick(b, self.trans_b))
    }
}

/// Check that C `[..]` broadcasts one way to `[m, n]`; return C as (rows, cols).
fn gemm_c_shape(c: &[Dim], m: &Dim, n: &Dim) -> Result<(Dim, Dim)> {
    let (cm, cn) = match c {
        [] => (Dim::Known(1), Dim::Known(1)),
        [x] => (Dim::Known(1), x.clone()),
        [x, y] => (x.clone(), y.clone()),
        _ => {
            return Err(Error::Graph(format!(
                "Gemm: C must have rank <= 2, is {}",
                shape_str(c)
            )));
        }
    };
    for (have, want) in [(&cm, m), (&cn, n)] {
        if let (Dim::Known(h), Dim::Known(w)) = (have, want)
            && *h != 1
            && h != w
        {
            return Err(Error::Graph(format!(
                "Gemm: C is {}, which does not broadcast to the output [{m}, {n}]",
                shape_str(c)
            )));
        }
    }
    Ok((cm, cn))
}

/// Row `i` of a `[cm, cn]` C seen through the broadcast: n values, or one.
fn c_row(c: &[f32], cm: usize, cn: usize, i: usize) -> &[f32] {
    let off = if cm == 1 { 0 } else { i.saturating_mul(cn) };
    c.get(off..off.saturating_add(cn)).unwrap_or(&[])
}

impl Op for Gemm {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (req(inputs, 0)?, req(inputs, 1)?);
        super::expect_dtype(a, DType::F32, "Gemm A")?;
        super::expect_dtype(b, DType::F32, "Gemm B")?;
        for (f, name) in [(a, "A"), (b, "B")] {
            if f.rank() != 2 {
                return Err(Error::Graph(format!(
                    "Gemm: {name} must be 2-D, is {}",
                    shape_str(&f.shape)
                )));
            }
        }
        let ((m, ka), (kb, n)) = self.sides(&a.shape, &b.shape);
        if let (Dim::Known(x), Dim::Known(y)) = (&ka, &kb)
            && x != y
        {
            return Err(inner_mismatch(
                "Gemm",
                &format!(
                    "{}{}",
                    shape_str(&a.shape),
                    if self.trans_a { " transposed" } else { "" }
                ),
                &ka,
                &format!(
                    "{}{}",
                    shape_str(&b.shape),
                    if self.trans_b { " transposed" } else { "" }
                ),
                &kb,
            ));
        }
        if let Some(c) = opt(inputs, 2) {
            super::expect_dtype(c, DType::F32, "Gemm C")?;
            gemm_c_shape(&c.shape, &m, &n)?;
        }
        Ok(vec![Fact::new(DType::F32, vec![m, n])])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (a, b) = (*req(inputs, 0)?, *req(inputs, 1)?);
        let out = first_out(outputs, "Gemm")?;
        let (x, y) = (a.f32()?, b.f32()?);
        let (ad, bd) = match (a.dims, b.dims) {
            (&[a0, a1], &[b0, b1]) => ([a0, a1], [b0, b1]),
            _ => {
                return Err(Error::Graph(format!(
                    "Gemm: A and B must be 2-D, are {} and {}",
                    dims_str(a.dims),
                    dims_str(b.dims)
                )));
            }
        };
        check_len("Gemm A", a.dims, x.len())?;
        check_len("Gemm B", b.dims, y.len())?;
        let ((m, k), (kb, n)) = self.sides(&ad, &bd);
        if k != kb {
            return Err(inner_mismatch(
                "Gemm",
                &dims_str(a.dims),
                &Dim::Known(k),
                &dims_str(b.dims),
                &Dim::Known(kb),
            ));
        }
        if out.dims != [m, n] {
            return Err(Error::Graph(format!(
                "Gemm: output is {}, expected [{m}, {n}]",
                dims_str(out.dims)
            )));
        }
        let c = match opt(inputs, 2) {
            None => None,
            Some(c) => {
                let data = c.f32()?;
                check_len("Gemm C", c.dims, data.len())?;
                // concrete dims: no Shape allocation on the hot path
                let (cm, cn) = match *c.dims {
                    [] => (1, 1),
                    [cn] => (1, cn),
                    [cm, cn] => (cm, cn),
                    _ => (0, 0),
                };
                if !(cm == 1 || cm == m) || !(cn == 1 || cn == n) {
                    return Err(Error::Graph(format!(
                        "Gemm: C {} does not broadcast to [{m}, {n}]",
                        dims_str(c.dims)
                    )));
                }
                Some((data, cm, cn))
            }
        };
        let c = c.filter(|_| self.beta != 0.0);
        let o = out.f32()?;
        check_len("Gemm output", &[m, n], o.len())?;
        if o.is_empty() {
            return Ok(());
        }
        let mut am = Mat::rows(x, ad[0], ad[1]);
        if self.trans_a {
            am = am.t();
        }
        let mut bm = Mat::rows(y, bd[0], bd[1]);
        if self.trans_b {
            bm = bm.t();
        }
        let (alpha, beta) = (self.alpha, self.beta);
        match c {
            Some((cd, cm, cn)) if alpha == 1.0 => {
                for (i, row) in o.chunks_exact_mut(n).enumerate() {
                    match c_row(cd, cm, cn, i) {
                        &[v] => row.fill(beta * v),
                        cr => row.iter_mut().zip(cr).for_each(|(r, &v)| *r = beta * v),
                    }
                }
                kernels::matmul(am, bm, o, 1.0, ctx.threads);
                self.act.apply(o);
            }
            Some((cd, cm, cn)) => {
                kernels::matmul(am, bm, o, 0.0, ctx.threads);
                for (i, row) in o.chunks_exact_mut(n).enumerate() {
                    match c_row(cd, cm, cn, i) {
                        &[v] => row.iter_mut().for_each(|r| *r = alpha * *r + beta * v),
                        cr => row
                            .iter_mut()
                            .zip(cr)
                            .for_each(|(r, &v)| *r = alpha * *r + beta * v),
                    }
                    self.act.apply(row);
                }
            }
            None => {
                kernels::matmul(am, bm, o, 0.0, ctx.threads);
                if alpha != 1.0 {
                    o.iter_mut().for_each(|r| *r *= alpha);
                }
                self.act.apply(o);
            }
        }
        Ok(())
    }
}

pub fn build_gemm(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Gemm {
        alpha: a.float("alpha", 1.0)?,
        beta: a.float("beta", 1.0)?,
        trans_a: flag(a, "transA")?,
        trans_b: flag(a, "transB")?,
        act: Activation::from_attrs(a)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attr;
    use crate::ops::eval_owned;
    use crate::ops::matmul::tests::{ACTS, Rng, act_attrs, act_ref, assert_close, fact, sym, t};

    fn naive_gemm(
        a: &[f32],
        ad: [usize; 2],
        b: &[f32],
        bd: [usize; 2],
        c: Option<(&[f32], &[usize])>,
        (ta, tb, alpha, beta): (bool, bool, f64, f64),
    ) -> Vec<f64> {
        let at = |i: usize, p: usize| if ta { a[p * ad[1] + i] } else { a[i * ad[1] + p] } as f64;
        let bt = |p: usize, j: usize| if tb { b[j * bd[1] + p] } else { b[p * bd[1] + j] } as f64;
        let (m, k) = if ta { (ad[1], ad[0]) } else { (ad[0], ad[1]) };
        let n = if tb { bd[0] } else { bd[1] };
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += at(i, p) * bt(p, j);
                }
                let cv = match c {
                    None => 0.0,
                    Some((cv, cd)) => {
                        let full: Vec<usize> = [vec![1; 2 - cd.len()], cd.to_vec()].concat();
                        let ci = if full[0] == 1 { 0 } else { i };
                        let cj = if full[1] == 1 { 0 } else { j };
                        cv[ci * full[1] + cj] as f64
                    }
                };
                out[i * n + j] = alpha * s + beta * cv;
            }
        }
        out
    }

    #[test]
    fn gemm_matches_naive_for_all_flags_and_c_shapes() {
        let mut rng = Rng(9);
        let (m, k, n) = (5usize, 7usize, 3usize);
        let c_shapes: [Option<Vec<usize>>; 8] = [
            None,
            Some(vec![]),
            Some(vec![1]),
            Some(vec![n]),
            Some(vec![1, n]),
            Some(vec![m, 1]),
            Some(vec![m, n]),
            Some(vec![1, 1]),
        ];
        let mut checked = 0;
        for ta in [false, true] {
            for tb in [false, true] {
                let ad = if ta { [k, m] } else { [m, k] };
                let bd = if tb { [n, k] } else { [k, n] };
                let (av, bv) = (rng.vec(m * k), rng.vec(k * n));
                for (alpha, beta) in [
                    (1.0f32, 1.0f32),
                    (1.0, 2.5),
                    (0.5, 1.0),
                    (-1.5, 0.75),
                    (2.0, 0.0),
                    (0.0, 1.0),
                ] {
                    for cs in &c_shapes {
                        let cv = cs.as_ref().map(|d| rng.vec(d.iter().product()));
                        let attrs = Attrs::new()
                            .with("transA", Attr::Int(ta as i64))
                            .with("transB", Attr::Int(tb as i64))
                            .with("alpha", Attr::Float(alpha))
                            .with("beta", Attr::Float(beta));
                        let op = build_gemm(&attrs).unwrap();
                        let c_t = cs.as_ref().zip(cv.as_ref()).map(|(d, v)| t(d, v));
                        let out =
                            eval_owned(op.as_ref(), &[Some(t(&ad, &av)), Some(t(&bd, &bv)), c_t])
                                .unwrap();
                        assert_eq!(out[0].dims, vec![m, n]);
                        let c_ref = cs
                            .as_ref()
                            .zip(cv.as_ref())
                            .map(|(d, v)| (v.as_slice(), d.as_slice()));
                        let want = naive_gemm(
                            &av,
                            ad,
                            &bv,
                            bd,
                            c_ref,
                            (ta, tb, alpha as f64, beta as f64),
                        );
                        let what =
                            format!("transA={ta} transB={tb} alpha={alpha} beta={beta} C={cs:?}");
                        assert_close(out[0].as_slice::<f32>().unwrap(), &want, 1e-5, &what);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 6 * 8);
    }

    #[test]
    fn gemm_fused_activations_match_reference() {
        let mut rng = Rng(13);
        let (av, bv, cv) = (rng.vec(4 * 9), rng.vec(9 * 6), rng.vec(6));
        for alpha in [1.0f32, 0.7] {
            let plain = naive_gemm(
                &av,
                [4, 9],
                &bv,
                [6, 9],
                Some((&cv, &[6])),
                (false, true, alpha as f64, 0.5),
            );
            for &(name, aa, ab) in ACTS {
                let mut attrs = act_attrs(name, aa, ab);
                attrs.set("transB", Attr::Int(1));
                attrs.set("alpha", Attr::Float(alpha));
                attrs.set("beta", Attr::Float(0.5));
                let op = build_gemm(&attrs).unwrap();
                let out = eval_owned(
                    op.as_ref(),
                    &[
                        Some(t(&[4, 9], &av)),
                        Some(t(&[6, 9], &bv)),
                        Some(t(&[6], &cv)),
                    ],
                )
                .unwrap();
                let want: Vec<f64> = plain.iter().map(|&x| act_ref(name, aa, ab, x)).collect();
                assert_close(
                    out[0].as_slice::<f32>().unwrap(),
                    &want,
                    1e-5,
                    &format!("{name} alpha={alpha}"),
                );
            }
        }
    }

    #[test]
    fn gemm_shapes_and_errors() {
        let k = Dim::Known;
        let op = build_gemm(&Attrs::new()).unwrap();
        let out = op
            .infer(&[
                fact(vec![sym("N"), k(384)]),
                fact(vec![k(384), k(10)]),
                fact(vec![k(10)]),
            ])
            .unwrap();
        assert_eq!(out[0].shape, vec![sym("N"), k(10)]);
        let op_t = build_gemm(
            &Attrs::new()
                .with("transA", Attr::Int(1))
                .with("transB", Attr::Int(1)),
        )
        .unwrap();
        let out = op_t
            .infer(&[
                fact(vec![k(384), sym("N")]),
                fact(vec![k(10), k(384)]),
                None,
            ])
            .unwrap();
        assert_eq!(out[0].shape, vec![sym("N"), k(10)]);
        let e = op
            .infer(&[fact(vec![k(2), k(3)]), fact(vec![k(4), k(5)]), None])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("Gemm: inner dimensions differ: A is [2, 3] (k=3), B is [4, 5] (k=4)"),
            "{e}"
        );
        let e = op
            .infer(&[
                fact(vec![k(2), k(3)]),
                fact(vec![k(3), k(5)]),
                fact(vec![k(3), k(5)]),
            ])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("does not broadcast to the output [2, 5]"),
            "{e}"
        );
        assert!(
            op.infer(&[
                fact(vec![k(2), k(3)]),
                fact(vec![k(3), k(5)]),
                fact(vec![k(2)])
            ])
            .is_err()
        );
        assert!(
            op.infer(&[fact(vec![k(1), k(2), k(3)]), fact(vec![k(3), k(5)]), None])
                .is_err()
        );
        assert!(build_gemm(&Attrs::new().with("transA", Attr::Int(2))).is_err());
        let e = eval_owned(
            op.as_ref(),
            &[
                Some(t(&[2, 3], &[0.0; 6])),
                Some(t(&[3, 5], &[0.0; 15])),
                Some(t(&[5, 1], &[0.0; 5])),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not broadcast"), "{e}");
        // K = 0: the product is empty, the output is beta * C.
        let op = build_gemm(&Attrs::new().with("beta", Attr::Float(2.0))).unwrap();
        let out = eval_owned(
            op.as_ref(),
            &[
                Some(t(&[2, 0], &[])),
                Some(t(&[0, 3], &[])),
                Some(t(&[3], &[1.0, 2.0, 3.0])),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[2.0, 4.0, 6.0, 2.0, 4.0, 6.0]
        );
    }
}
