//! ConvTranspose (1-D, 2-D, 3-D): per image and group one matmul
//! `col = Wᵀ · X` into the context's scratch, then a col2im scatter-add into
//! the output, then bias and the optional fused activation.

use super::conv::{
    Activation, AutoPad, Geo, Operands, Window, attr_usizes, check_bias, check_ranks, conv_output,
    finish_rows, group_attr, valid_range,
};
use super::{Ctx, Fact, Op, expect_dtype, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::{Mat, matmul};
use crate::tensor::{Dim, TensorMut, TensorRef, dims_str, shape_str};
use crate::{Error, Result, bail, ensure};

#[derive(Debug)]
struct ConvTranspose {
    win: Window,
    group: usize,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
    act: Activation,
}

pub fn build_conv_transpose(a: &Attrs) -> Result<Box<dyn Op>> {
    let win = Window::parse(a, false)?;
    let output_padding = attr_usizes(a, "output_padding", 0)?;
    let output_shape = attr_usizes(a, "output_shape", 0)?;
    if let (Some(r), Some(p)) = (win.rank(), &output_padding) {
        ensure!(
            p.len() == r,
            Graph,
            "attribute 'output_padding' has {} values, expected {r}",
            p.len()
        );
    }
    Ok(Box::new(ConvTranspose {
        win,
        group: group_attr(a)?,
        output_padding,
        output_shape,
        act: Activation::from_attrs(a)?,
    }))
}

impl ConvTranspose {
    fn check_rank(&self, r: usize) -> Result<()> {
        self.win.check_rank(r)?;
        if let Some(p) = &self.output_padding {
            ensure!(
                p.len() == r,
                Graph,
                "attribute 'output_padding' has {} values, expected {r}",
                p.len()
            );
        }
        if let Some(s) = &self.output_shape {
            // Some exporters give the full [N, C, spatial...] shape.
            ensure!(
                s.len() == r || s.len() == r + 2,
                Graph,
                "attribute 'output_shape' has {} values, expected {r}",
                s.len()
            );
        }
        Ok(())
    }

    /// Output length and (begin, end) pads of spatial axis `i` of `r`.
    fn axis(
        &self,
        i: usize,
        r: usize,
        input: usize,
        kernel: usize,
    ) -> Result<(usize, usize, usize)> {
        let (s, d) = (self.win.stride(i), self.win.dilation(i));
        ensure!(kernel >= 1, Graph, "kernel size is 0 on spatial axis {i}");
        ensure!(input >= 1, Graph, "input X is empty on spatial axis {i}");
        let op = self
            .output_padding
            .as_ref()
            .and_then(|p| p.get(i).copied())
            .unwrap_or(0);
        let big = || {
            Error::Graph(format!(
                "output of spatial axis {i} is too large (input {input}, kernel {kernel}, stride {s})"
            ))
        };
        let full = (input - 1)
            .checked_mul(s)
            .and_then(|x| x.checked_add(op))
            .and_then(|x| {
                (kernel - 1)
                    .checked_mul(d)
                    .and_then(|k| x.checked_add(k + 1))
            })
            .ok_or_else(big)?;
        let wanted = match (&self.output_shape, self.win.auto_pad) {
            (Some(os), _) => Some(os[os.len() - r + i]),
            (None, AutoPad::SameUpper | AutoPad::SameLower) => {
                Some(input.checked_mul(s).ok_or_else(big)?)
            }
            _ => None,
        };
        let (out, pb, pe) = match wanted {
            Some(out) => {
                let total = full.saturating_sub(out);
                let small = total / 2;
                if self.win.auto_pad == AutoPad::SameUpper {
                    (out, small, total - small)
                } else {
                    (out, total - small, small)
                }
            }
            None => {
                let (pb, pe) = if self.win.auto_pad == AutoPad::Valid {
                    (0, 0)
                } else {
                    self.win.pads_of(i, r)
                };
                let out = full.checked_sub(pb).and_then(|x| x.checked_sub(pe));
                let Some(out) = out else {
                    bail!(
                        Graph,
                        "spatial axis {i}: pads ({pb}, {pe}) exceed the full output {full}"
                    )
                };
                (out, pb, pe)
            }
        };
        let limit = full
            .checked_add(out)
            .and_then(|x| x.checked_add(pb))
            .and_then(|x| x.checked_add(s));
        ensure!(
            limit.is_some_and(|l| l <= isize::MAX as usize),
            Graph,
            "{}",
            big()
        );
        Ok((out, pb, pe))
    }

    fn geo(&self, input: &[usize], kernel: &[usize]) -> Result<Geo> {
        let r = input.len();
        self.check_rank(r)?;
        let mut g = Geo::unit();
        for i in 0..r {
            let k = self.win.kernel_dim(i, Some(kernel[i]))?.unwrap_or(1);
            let (o, pb, pe) = self.axis(i, r, input[i], k)?;
            let j = 3 - r + i;
            (g.input[j], g.output[j], g.kernel[j]) = (input[i], o, k);
            (g.stride[j], g.dilation[j]) = (self.win.stride(i), self.win.dilation(i));
            (g.pad_begin[j], g.pad_end[j]) = (pb, pe);
        }
        Ok(g)
    }
}

impl Op for ConvTranspose {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (req(inputs, 0)?, req(inputs, 1)?);
        expect_dtype(x, DType::F32, "input X")?;
        expect_dtype(w, DType::F32, "weight W")?;
        let r = check_ranks(x, w)?;
        self.check_rank(r)?;
        let g = self.group;
        if let (Some(c), Some(wc)) = (x.shape[1].known(), w.shape[0].known()) {
            ensure!(
                c == wc,
                Graph,
                "input X {} has {c} channels, weight W {} expects {wc}",
                shape_str(&x.shape),
                shape_str(&w.shape)
            );
        }
        if let Some(wc) = w.shape[0].known() {
            ensure!(
                wc % g == 0,
                Graph,
                "weight W has {wc} input channels, not divisible by group {g}"
            );
        }
        let overflow = || Error::Graph("output channel count overflows".into());
        let m = w.shape[1]
            .known()
            .map(|mg| mg.checked_mul(g).ok_or_else(overflow))
            .transpose()?;
        check_bias(opt(inputs, 2), m)?;
        let mut shape = vec![x.shape[0].clone(), m.map_or_else(Dim::unknown, Dim::Known)];
        for i in 0..r {
            let k = self.win.kernel_dim(i, w.shape[2 + i].known())?;
            shape.push(match (x.shape[2 + i].known(), k) {
                (Some(n), Some(k)) => Dim::Known(self.axis(i, r, n, k)?.0),
                // output_shape fixes the dim without knowing the input.
                _ => match &self.output_shape {
                    Some(os) => Dim::Known(os[os.len() - r + i]),
                    None => Dim::unknown(),
                },
            });
        }
        Ok(vec![Fact::new(DType::F32, shape)])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let Operands {
            x,
            w,
            xs,
            ws,
            bs,
            rank,
        } = Operands::of(inputs)?;
        let (n, c, mg, g) = (x.dims[0], x.dims[1], w.dims[1], self.group);
        ensure!(
            w.dims[0] == c && c % g == 0,
            Graph,
            "X {} does not fit W {} with group {g}",
            dims_str(x.dims),
            dims_str(w.dims)
        );
        let m = mg
            .checked_mul(g)
            .ok_or_else(|| Error::Graph("output channel count overflows".into()))?;
        let geo = self.geo(&x.dims[2..], &w.dims[2..])?;
        let y = conv_output(outputs, [n, m], rank, &geo, bs)?;
        if y.is_empty() {
            return Ok(());
        }
        let (in_sp, out_sp, ksp) = (geo.in_size(), geo.out_size(), geo.k_size());
        let (cg, rows) = (c / g, mg * ksp);
        let col_len = rows
            .checked_mul(in_sp)
            .ok_or_else(|| Error::Graph("col2im buffer overflows".into()))?;
        let threads = ctx.threads;
        let col = ctx.scratch(col_len);
        for ni in 0..n {
            for gi in 0..g {
                let xg = &xs[(ni * c + gi * cg) * in_sp..][..cg * in_sp];
                let wg = &ws[gi * cg * rows..][..cg * rows];
                let yg = &mut y[(ni * m + gi * mg) * out_sp..][..mg * out_sp];
                matmul(
                    Mat::rows(wg, cg, rows).t(),
                    Mat::rows(xg, cg, in_sp),
                    col,
                    0.0,
                    threads,
                );
                if tiles_output(&geo) {
                    col2im_tiles(col, mg, &geo, yg);
                } else {
                    yg.fill(0.0);
                    col2im(col, mg, &geo, yg);
                }
                finish_rows(yg, out_sp, bs.map(|b| &b[gi * mg..][..mg]), self.act);
            }
        }
        Ok(())
    }
}

/// Whether every output position gets exactly one (input, tap) pair:
/// kernel = stride, dilation 1, no padding, output = input · stride (the
/// 2× upsampling ConvTranspose of FPN/DB heads such as PP-OCR det's).
fn tiles_output(g: &Geo) -> bool {
    (0..3).all(|i| {
        g.kernel[i] == g.stride[i]
            && g.dilation[i] == 1
            && g.pad_begin[i] == 0
            && g.output[i] == g.input[i] * g.stride[i]
    })
}

/// [`col2im`] when the taps tile the output ([`tiles_output`]): each output
/// is written once (no zero fill, no read-modify-write), one output row
/// from the `kw` column rows that interleave into it.
fn col2im_tiles(col: &[f32], mg: usize, g: &Geo, y: &mut [f32]) {
    let [id, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let (in_sp, out_sp) = (g.in_size(), g.out_size());
    let taps = kd * kh * kw;
    if in_sp == 0 || out_sp == 0 || kw == 0 {
        return;
    }
    for (ym, mcol) in y
        .chunks_exact_mut(out_sp)
        .zip(col.chunks_exact(taps * in_sp))
        .take(mg)
    {
        for z in 0..id {
            for a in 0..kd {
                for yy in 0..ih {
                    for b in 0..kh {
                        let (oz, oy) = (z * kd + a, yy * kh + b);
                        let dst = &mut ym[(oz * oh + oy) * ow..][..ow];
                        let src = |e: usize| {
                            &mcol[((a * kh + b) * kw + e) * in_sp + (z * ih + yy) * iw..][..iw]
                        };
                        if kw == 2 {
                            let (s0, s1) = (src(0), src(1));
                            for ((d, &v0), &v1) in dst.chunks_exact_mut(2).zip(s0).zip(s1) {
                                d[0] = v0;
                                d[1] = v1;
                            }
                        } else {
                            for e in 0..kw {
                                for (d, &v) in dst[e..].iter_mut().step_by(kw).zip(src(e)) {
                                    *d = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Scatter-add `col` [mg·kD·kH·kW, iD·iH·iW] into `y` [mg, oD·oH·oW]: input
/// position `i` with kernel tap `k` lands on `i·s + k·d - pad_begin`.
fn col2im(col: &[f32], mg: usize, g: &Geo, y: &mut [f32]) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    let [dd, dh, dw] = g.dilation;
    let [pd, ph, pw] = g.pad_begin;
    let (in_sp, out_sp) = (g.in_size(), g.out_size());
    if in_sp == 0 || out_sp == 0 {
        return;
    }
    let mut rows = col.chunks_exact(in_sp);
    for ym in y.chunks_exact_mut(out_sp).take(mg) {
        for a in 0..kd {
            for b in 0..kh {
                for e in 0..kw {
                    let Some(row) = rows.next() else { return };
                    let (lo, hi) = valid_range(iw, ow, sw, e * dw, pw);
                    if lo >= hi {
                        continue;
                    }
                    let start = lo * sw + e * dw - pw;
                    for z in 0..id {
                        let Some(oz) = (z * sd + a * dd).checked_sub(pd).filter(|&v| v < od) else {
                            continue;
                        };
                        for yy in 0..ih {
                            let Some(oy) = (yy * sh + b * dh).checked_sub(ph).filter(|&v| v < oh)
                            else {
                                continue;
                            };
                            let src = &row[(z * ih + yy) * iw..][lo..hi];
                            let dst = &mut ym[(oz * oh + oy) * ow..][..ow];
                            if sw == 1 {
                                for (o, &v) in dst[start..start + (hi - lo)].iter_mut().zip(src) {
                                    *o += v;
                                }
                            } else {
                                for (j, &v) in src.iter().enumerate() {
                                    dst[start + j * sw] += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{Rng, check_close, pad3, run};
    use super::*;
    use crate::graph::Attr;
    use crate::tensor::Tensor;

    /// Transposed conv by direct scatter, 3-D with explicit pads.
    #[allow(clippy::type_complexity)]
    fn naive(
        x: &[f32],
        xd: [usize; 5],
        w: &[f32],
        wd: [usize; 5],
        b: Option<&[f32]>,
        group: usize,
        s: [usize; 3],
        d: [usize; 3],
        p: [usize; 3],
        od: [usize; 3],
    ) -> Vec<f32> {
        let [n, c, id, ih, iw] = xd;
        let [_, mg, kd, kh, kw] = wd;
        let (cg, m) = (c / group, mg * group);
        let mut y = vec![0f32; n * m * od[0] * od[1] * od[2]];
        for ni in 0..n {
            for ci in 0..c {
                let gi = ci / cg;
                for (z, yy, xx) in (0..id)
                    .flat_map(|z| (0..ih).flat_map(move |yy| (0..iw).map(move |xx| (z, yy, xx))))
                {
                    let xv = x[(((ni * c + ci) * id + z) * ih + yy) * iw + xx];
                    for mi in 0..mg {
                        for (a, bb, e) in (0..kd).flat_map(|a| {
                            (0..kh).flat_map(move |bb| (0..kw).map(move |e| (a, bb, e)))
                        }) {
                            let o = [
                                (z * s[0] + a * d[0]) as i64 - p[0] as i64,
                                (yy * s[1] + bb * d[1]) as i64 - p[1] as i64,
                                (xx * s[2] + e * d[2]) as i64 - p[2] as i64,
                            ];
                            if (0..3).any(|q| o[q] < 0 || o[q] >= od[q] as i64) {
                                continue;
                            }
                            let oc = gi * mg + mi;
                            let wv = w[(((ci * mg + mi) * kd + a) * kh + bb) * kw + e];
                            y[(((ni * m + oc) * od[0] + o[0] as usize) * od[1] + o[1] as usize)
                                * od[2]
                                + o[2] as usize] += xv * wv;
                        }
                    }
                }
            }
        }
        if let Some(b) = b {
            let sp = od[0] * od[1] * od[2];
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[(i / sp) % m];
            }
        }
        y
    }

    struct Case {
        x: Vec<usize>,
        w: Vec<usize>,
        group: i64,
        attrs: Vec<(&'static str, Attr)>,
        bias: bool,
        // expected pads (begin per axis) and output spatial dims, from the ONNX formulas
        pads: Vec<usize>,
        out: Vec<usize>,
    }

    #[test]
    fn conv_transpose_matches_naive_scatter() {
        let ints = |v: &[i64]| Attr::Ints(v.to_vec());
        let cases = [
            // 2-D, stride 2, pads, output_padding, groups, dilation
            Case {
                x: vec![2, 4, 3, 5],
                w: vec![4, 3, 3, 2],
                group: 2,
                attrs: vec![
                    ("strides", ints(&[2, 3])),
                    ("pads", ints(&[1, 0, 0, 1])),
                    ("output_padding", ints(&[1, 2])),
                    ("dilations", ints(&[1, 2])),
                ],
                bias: true,
                pads: vec![1, 0],
                out: vec![2 * 2 + 1 + 3 - 1, 4 * 3 + 2 + 3 - 1],
            },
            // Kernel = stride, no pads: the taps tile the output (2-D with
            // groups and a 2×2 kernel, 1-D with a 3-tap kernel, 3-D)
            Case {
                x: vec![2, 4, 3, 5],
                w: vec![4, 3, 2, 2],
                group: 2,
                attrs: vec![("strides", ints(&[2, 2]))],
                bias: true,
                pads: vec![0, 0],
                out: vec![6, 10],
            },
            Case {
                x: vec![1, 3, 7],
                w: vec![3, 2, 3],
                group: 1,
                attrs: vec![("strides", ints(&[3]))],
                bias: false,
                pads: vec![0],
                out: vec![21],
            },
            Case {
                x: vec![1, 2, 2, 3, 2],
                w: vec![2, 3, 2, 1, 2],
                group: 1,
                attrs: vec![("strides", ints(&[2, 1, 2]))],
                bias: true,
                pads: vec![0, 0, 0],
                out: vec![4, 3, 4],
            },
            // 2-D plain, stride 1
            Case {
                x: vec![1, 3, 4, 4],
                w: vec![3, 2, 3, 3],
                group: 1,
                attrs: vec![],
                bias: false,
                pads: vec![0, 0],
                out: vec![6, 6],
            },
            // output_shape given: total = 2*(5-1)+3-10 = 1 → begin gets the larger half
            Case {
                x: vec![1, 2, 5, 5],
                w: vec![2, 2, 3, 3],
                group: 1,
                attrs: vec![("strides", ints(&[2, 2])), ("output_shape", ints(&[10, 9]))],
                bias: true,
                pads: vec![1, 1],
                out: vec![10, 9],
            },
            // SAME_UPPER: out = in*s, total = 2*(3-1)+3-6 = 1 → end gets it
            Case {
                x: vec![1, 2, 3, 4],
                w: vec![2, 1, 3, 3],
                group: 1,
                attrs: vec![
                    ("strides", ints(&[2, 2])),
                    ("auto_pad", Attr::Str("SAME_UPPER".into())),
                ],
                bias: false,
                pads: vec![0, 0],
                out: vec![6, 8],
            },
            Case {
                x: vec![1, 2, 3, 4],
                w: vec![2, 1, 3, 3],
                group: 1,
                attrs: vec![
                    ("strides", ints(&[2, 2])),
                    ("auto_pad", Attr::Str("SAME_LOWER".into())),
                ],
                bias: false,
                pads: vec![1, 1],
                out: vec![6, 8],
            },
            // 1-D
            Case {
                x: vec![2, 3, 7],
                w: vec![3, 2, 4],
                group: 1,
                attrs: vec![("strides", ints(&[3])), ("pads", ints(&[2, 1]))],
                bias: true,
                pads: vec![2],
                out: vec![3 * 6 + 4 - 3],
            },
            // 3-D
            Case {
                x: vec![1, 2, 2, 3, 2],
                w: vec![2, 2, 2, 2, 3],
                group: 1,
                attrs: vec![("strides", ints(&[2, 1, 2]))],
                bias: true,
                pads: vec![0, 0, 0],
                out: vec![4, 4, 5],
            },
        ];
        let mut rng = Rng(7);
        for (ci, case) in cases.iter().enumerate() {
            let mut a = Attrs::new().with("group", Attr::Int(case.group));
            for (k, v) in &case.attrs {
                a.set(k, v.clone());
            }
            let op = build_conv_transpose(&a).unwrap();
            let x = rng.vec(case.x.iter().product());
            let w = rng.vec(case.w.iter().product());
            let mg = case.w[1] * case.group as usize;
            let b = rng.vec(mg);
            let mut ins = vec![
                Some(Tensor::from_slice(&case.x, &x).unwrap()),
                Some(Tensor::from_slice(&case.w, &w).unwrap()),
            ];
            if case.bias {
                ins.push(Some(Tensor::from_slice(&[mg], &b).unwrap()));
            }
            let mut want_dims = vec![case.x[0], mg];
            want_dims.extend(&case.out);
            let r = case.x.len() - 2;
            let xd = [
                case.x[0],
                case.x[1],
                pad3(&case.x[2..], 1)[0],
                pad3(&case.x[2..], 1)[1],
                pad3(&case.x[2..], 1)[2],
            ];
            let wk = pad3(&case.w[2..], 1);
            let wd = [case.w[0], case.w[1], wk[0], wk[1], wk[2]];
            let ints_of = |k: &str| {
                case.attrs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| match v {
                        Attr::Ints(v) => v.iter().map(|&x| x as usize).collect::<Vec<_>>(),
                        _ => vec![],
                    })
            };
            let s = pad3(&ints_of("strides").unwrap_or(vec![1; r]), 1);
            let d = pad3(&ints_of("dilations").unwrap_or(vec![1; r]), 1);
            let want = naive(
                &x,
                xd,
                &w,
                wd,
                case.bias.then_some(&b[..]),
                case.group as usize,
                s,
                d,
                pad3(&case.pads, 0),
                pad3(&case.out, 1),
            );
            for threads in [1, 2] {
                let (dims, got) = run(&*op, &ins, threads);
                assert_eq!(dims, want_dims, "case {ci}");
                check_close(&got, &want, &format!("case {ci}"));
            }
        }
    }

    #[test]
    fn conv_transpose_symbolic_and_errors() {
        let a = Attrs::new().with("strides", Attr::Ints(vec![2, 2]));
        let op = build_conv_transpose(&a).unwrap();
        let x = Fact::new(
            DType::F32,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(4),
                Dim::Known(5),
                Dim::Sym("W".into()),
            ],
        );
        let w = Fact::known(Tensor::from_slice(&[4, 3, 3, 3], &[0f32; 108]).unwrap());
        let out = op.infer(&[Some(x.clone()), Some(w.clone())]).unwrap();
        assert_eq!(
            out[0].shape,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(3),
                Dim::Known(11),
                Dim::unknown()
            ]
        );
        // channel mismatch
        let x5 = Fact::new(
            DType::F32,
            vec![Dim::Known(1), Dim::Known(5), Dim::Known(5), Dim::Known(5)],
        );
        assert!(op.infer(&[Some(x5), Some(w.clone())]).is_err());
        // pads larger than the full output
        let bad =
            build_conv_transpose(&Attrs::new().with("pads", Attr::Ints(vec![9, 9, 9, 9]))).unwrap();
        assert!(bad.infer(&[Some(x), Some(w)]).is_err());
        assert!(
            build_conv_transpose(
                &Attrs::new()
                    .with("strides", Attr::Ints(vec![2]))
                    .with("output_padding", Attr::Ints(vec![1, 1]))
            )
            .is_err()
        );
    }
}
