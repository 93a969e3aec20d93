//! `QConv`: a Conv with an int8 weight, for dynamic quantization.
//!
//! Inputs: `X` f32 `[N, C, spatial…]` (1 to 3 spatial axes), `W` i8
//! `[M, C, k…]` (symmetric per output channel, `[-127, 127]`; a graph
//! constant in practice), `W_scale` f32 `[M]`, optional `bias` f32 `[M]`.
//! Attributes: Conv's (`kernel_shape`, `strides`, `pads`, `dilations`,
//! `auto_pad`; `group` must be 1) and the fused `activation`.
//!
//! Per image, blocks of up to 256 output positions are unfolded (im2col)
//! into rows of patches, `[positions, C·k…]`; each patch row is quantized
//! to int8 over its own range (asymmetric, as `QMatMul` does with its rows),
//! multiplied by the packed int8 weight exactly in i32, rescaled (`+ bias`,
//! activation) and written to its column of the `[M, positions]` output.
//! It is `QMatMul` on the patch matrix: the same row quantization, kernel
//! and rescale ([`super::qmatmul::Job`]). Grouped and depthwise convs stay
//! f32 (the compressor leaves them; they are memory-bound and small).

use std::sync::OnceLock;

use super::conv::{Activation, Geo, Im2col, Window, check_len, check_ranks};
use super::qmatmul::Job;
use super::{Ctx, Fact, Op, expect_dtype, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::int8::{self, PackedB};
use crate::kernels::{self, sgemm};
use crate::tensor::{TensorMut, TensorRef, dims_str, shape_str};
use crate::{Error, Result, ensure};

#[derive(Debug)]
struct QConv {
    win: Window,
    act: Activation,
    const_w: bool,
    packed: OnceLock<PackedB>,
}

pub fn build_qconv(a: &Attrs) -> Result<Box<dyn Op>> {
    let group = super::conv::group_attr(a)?;
    ensure!(
        group == 1,
        Unsupported,
        "QConv with group {group}: only group 1 is quantized"
    );
    Ok(Box::new(QConv {
        win: Window::parse(a, false)?,
        act: Activation::from_attrs(a)?,
        const_w: false,
        packed: OnceLock::new(),
    }))
}

/// Output positions unfolded per block.
const BLOCK: usize = sgemm::NC;

impl Op for QConv {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, w, s) = (req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?);
        expect_dtype(x, DType::F32, "input X")?;
        expect_dtype(w, DType::I8, "weight W")?;
        expect_dtype(s, DType::F32, "W_scale")?;
        let r = check_ranks(x, w)?;
        self.win.check_rank(r)?;
        if let (Some(c), Some(cw)) = (x.shape[1].known(), w.shape[1].known()) {
            ensure!(
                c == cw,
                Graph,
                "input X {} has {c} channels, weight W {} expects {cw}",
                shape_str(&x.shape),
                shape_str(&w.shape)
            );
        }
        let m = w.shape[0].known();
        super::conv::check_bias(opt(inputs, 3), m)?;
        let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
        for i in 0..r {
            let k = self.win.kernel_dim(i, w.shape[2 + i].known())?;
            shape.push(self.win.out_dim(i, r, &x.shape[2 + i], k)?);
        }
        Ok(vec![Fact::new(DType::F32, shape)])
    }

    fn constant_inputs(&mut self, is_const: &[bool]) {
        self.const_w = is_const.get(1).copied().unwrap_or(false);
    }

    fn prepared_bytes(&self) -> usize {
        self.packed.get().map_or(0, |p| p.bytes())
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (x, w, s) = (*req(inputs, 0)?, *req(inputs, 1)?, *req(inputs, 2)?);
        let (xs, wq, ws) = (x.f32()?, w.as_slice::<i8>()?, s.f32()?);
        let rank = x.rank();
        ensure!(
            (3..=5).contains(&rank) && w.rank() == rank,
            Graph,
            "X {} and W {} do not fit a conv",
            dims_str(x.dims),
            dims_str(w.dims)
        );
        check_len(xs.len(), x.dims, "input X")?;
        check_len(wq.len(), w.dims, "weight W")?;
        let (n, c, m) = (x.dims[0], x.dims[1], w.dims[0]);
        ensure!(
            w.dims[1] == c,
            Graph,
            "X {} does not fit W {}",
            dims_str(x.dims),
            dims_str(w.dims)
        );
        ensure!(
            ws.len() == m,
            Graph,
            "W_scale has {} values, expected {m}",
            ws.len()
        );
        let bias = opt(inputs, 3).map(|b| b.f32()).transpose()?;
        if let Some(b) = bias {
            ensure!(
                b.len() == m,
                Graph,
                "bias B has {} values, expected {m}",
                b.len()
            );
        }
        let geo: Geo = self.win.geo(&x.dims[2..], &w.dims[2..])?;
        let out = outputs
            .get_mut(0)
            .ok_or_else(|| Error::Graph("missing output".into()))?;
        let r = rank - 2;
        ensure!(
            out.dims.len() == rank && out.dims[..2] == [n, m] && out.dims[2..] == *geo.out_dims(r),
            Graph,
            "output buffer is {}, the conv makes [{n}, {m}, {:?}]",
            dims_str(out.dims),
            geo.out_dims(r)
        );
        let od = out.dims;
        let y = out.f32()?;
        check_len(y.len(), od, "output Y")?;
        if y.is_empty() {
            return Ok(());
        }
        let (in_sp, out_sp) = (geo.in_size(), geo.out_size());
        let k = c * geo.k_size();
        let fresh;
        let packed = if self.const_w && ctx.pack_weights {
            match self.packed.get() {
                Some(p) => p,
                None => {
                    let _ = self.packed.set(int8::pack_b_transposed(wq, m, k, k)?);
                    self.packed
                        .get()
                        .ok_or_else(|| Error::Graph("QConv: packed weight vanished".into()))?
                }
            }
        } else {
            fresh = int8::pack_b_transposed(wq, m, k, k)?;
            &fresh
        };
        let job = Job {
            k,
            n: m,
            w: packed,
            w_scale: ws,
            bias,
            act: self.act,
        };
        const NR: usize = sgemm::NR;
        kernels::with_scratch(|scratch| {
            // Panels from the unfolder, patch rows, and the block's output.
            let panel_len = k * BLOCK.div_ceil(NR) * NR;
            let need = panel_len + BLOCK * k + BLOCK * m;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (panels, rest) = scratch.split_at_mut(panel_len);
            let (patches, rest) = rest.split_at_mut(BLOCK * k);
            let block_out = &mut rest[..BLOCK * m];
            for ni in 0..n {
                let unfold = Im2col {
                    x: &xs[ni * c * in_sp..][..c * in_sp],
                    geo: &geo,
                };
                let yi = &mut y[ni * m * out_sp..][..m * out_sp];
                for j0 in (0..out_sp).step_by(BLOCK) {
                    let nc = BLOCK.min(out_sp - j0);
                    use sgemm::PackRhs;
                    unfold.pack(0, k, j0, nc, &mut panels[..k * nc.div_ceil(NR) * NR]);
                    // Panel p holds columns p·NR.. as k rows of NR.
                    for j in 0..nc {
                        let (p, jj) = (j / NR, j % NR);
                        let src = &panels[p * k * NR..];
                        for (kk, d) in patches[j * k..][..k].iter_mut().enumerate() {
                            *d = src[kk * NR + jj];
                        }
                    }
                    let o = &mut block_out[..nc * m];
                    job.run(&patches[..nc * k], o);
                    for (j, row) in o.chunks_exact(m).enumerate() {
                        for (oc, &v) in row.iter().enumerate() {
                            yi[oc * out_sp + j0 + j] = v;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Attr;
    use crate::ops::eval_owned;
    use crate::ops::matmul::tests::Rng;
    use crate::tensor::Tensor;

    /// Per-output-channel symmetric int8 of `w` [m, k].
    fn quantize_rows(w: &[f32], m: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
        let mut q = vec![0i8; m * k];
        let mut s = vec![0f32; m];
        for o in 0..m {
            let mx = w[o * k..][..k].iter().fold(0f32, |a, v| a.max(v.abs()));
            s[o] = mx / 127.0;
            for i in 0..k {
                q[o * k + i] = if mx == 0.0 {
                    0
                } else {
                    (w[o * k + i] / s[o]).round_ties_even().clamp(-127.0, 127.0) as i8
                };
            }
        }
        (q, s)
    }

    fn conv_f32(x: &Tensor, w: &Tensor, b: &Tensor, attrs: &Attrs) -> Vec<f32> {
        let op = super::super::conv::build_conv(attrs).unwrap();
        let out = eval_owned(&*op, &[Some(x.clone()), Some(w.clone()), Some(b.clone())]).unwrap();
        out[0].to_f32_vec().unwrap()
    }

    #[test]
    fn matches_f32_conv_within_int8_error() {
        let mut rng = Rng(9);
        // (x dims, w dims, pads, strides, dilations)
        type Case<'a> = (&'a [usize], &'a [usize], [i64; 4], [i64; 2], [i64; 2]);
        let cases: &[Case] = &[
            (&[2, 3, 9, 11], &[8, 3, 3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            (&[1, 5, 17, 8], &[20, 5, 3, 3], [0, 1, 2, 0], [2, 1], [1, 2]),
            (
                &[1, 16, 20, 20],
                &[4, 16, 1, 1],
                [0, 0, 0, 0],
                [1, 1],
                [1, 1],
            ),
            (&[1, 2, 30, 30], &[3, 2, 5, 5], [2, 2, 2, 2], [2, 2], [1, 1]),
        ];
        for &(xd, wd, pads, strides, dil) in cases {
            let x = Tensor::from_slice(xd, &rng.vec(xd.iter().product())).unwrap();
            let wv = rng.vec(wd.iter().product());
            let w = Tensor::from_slice(wd, &wv).unwrap();
            let b = Tensor::from_slice(&[wd[0]], &rng.vec(wd[0])).unwrap();
            for act in ["", "relu"] {
                let mut attrs = Attrs::new()
                    .with("pads", Attr::Ints(pads.to_vec()))
                    .with("strides", Attr::Ints(strides.to_vec()))
                    .with("dilations", Attr::Ints(dil.to_vec()));
                if !act.is_empty() {
                    attrs.set("activation", Attr::Str(act.into()));
                }
                let want = conv_f32(&x, &w, &b, &attrs);
                let k: usize = wd[1..].iter().product();
                let (q, s) = quantize_rows(&wv, wd[0], k);
                let qw = Tensor::from_slice(wd, &q).unwrap();
                let qs = Tensor::from_slice(&[wd[0]], &s).unwrap();
                let op = build_qconv(&attrs).unwrap();
                let got = eval_owned(
                    &*op,
                    &[Some(x.clone()), Some(qw), Some(qs), Some(b.clone())],
                )
                .unwrap()[0]
                    .to_f32_vec()
                    .unwrap();
                assert_eq!(got.len(), want.len());
                let (e, nrm) = got.iter().zip(&want).fold((0f64, 0f64), |(e, n), (g, w)| {
                    (e + ((g - w) as f64).powi(2), n + (*w as f64).powi(2))
                });
                let rel = (e / nrm).sqrt();
                assert!(rel < 0.02, "{xd:?} {wd:?} {act}: relative error {rel}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let a = Attrs::new().with("group", Attr::Int(2));
        assert!(build_qconv(&a).is_err());
        let op = build_qconv(&Attrs::new()).unwrap();
        let x = Tensor::from_slice(&[1, 3, 4, 4], &[0f32; 48]).unwrap();
        let w = Tensor::from_slice(&[2, 4, 1, 1], &[0i8; 8]).unwrap();
        let s = Tensor::from_slice(&[2], &[1f32; 2]).unwrap();
        let e = eval_owned(&*op, &[Some(x), Some(w), Some(s)]).unwrap_err();
        assert!(e.to_string().contains("3 channels"), "{e}");
    }
}
