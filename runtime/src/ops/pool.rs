//! Pooling: MaxPool and AveragePool over 1 to 3 spatial axes (kernel,
//! strides, pads, dilations, auto_pad, ceil_mode, count_include_pad), and
//! GlobalAveragePool / GlobalMaxPool. f32.
//!
//! MaxPool's optional second output (Indices) is not produced: a node that
//! asks for it fails at planning with "has 2 outputs, its op makes 1".

use super::conv::{Geo, Window, check_len, valid_range};
use super::{Ctx, Fact, Op, expect_dtype, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{Dim, TensorMut, TensorRef, dims_str, shape_str};
use crate::{Error, Result, bail, ensure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg { include_pad: bool },
}

#[derive(Debug)]
struct Pool {
    kind: Kind,
    win: Window,
    kernel: Vec<usize>,
}

fn flag(a: &Attrs, key: &str) -> Result<bool> {
    match a.int(key, 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => bail!(Graph, "attribute '{key}' must be 0 or 1, is {v}"),
    }
}

fn build_pool(a: &Attrs, kind: Kind) -> Result<Box<dyn Op>> {
    let win = Window::parse(a, true)?;
    let Some(kernel) = win.kernel.clone() else {
        bail!(Graph, "attribute 'kernel_shape' is required")
    };
    let r = kernel.len();
    ensure!(
        (1..=3).contains(&r),
        Unsupported,
        "kernel_shape {kernel:?}: 1 to 3 spatial axes supported"
    );
    if let Some(p) = &win.pads {
        for i in 0..r {
            ensure!(
                p[i] < kernel[i] && p[r + i] < kernel[i],
                Graph,
                "attribute 'pads' {p:?}: each pad must be smaller than the kernel {kernel:?}"
            );
        }
    }
    Ok(Box::new(Pool { kind, win, kernel }))
}

pub fn build_max_pool(a: &Attrs) -> Result<Box<dyn Op>> {
    // storage_order only affects the Indices output, which is not produced.
    flag(a, "storage_order")?;
    build_pool(a, Kind::Max)
}

pub fn build_average_pool(a: &Attrs) -> Result<Box<dyn Op>> {
    let include_pad = flag(a, "count_include_pad")?;
    build_pool(a, Kind::Avg { include_pad })
}

fn check_input(x: &Fact, r: Option<usize>) -> Result<()> {
    expect_dtype(x, DType::F32, "input X")?;
    ensure!(
        x.rank() >= 3,
        Graph,
        "input X has shape {}, expected [N, C, spatial...]",
        shape_str(&x.shape)
    );
    if let Some(r) = r {
        ensure!(
            x.rank() == r + 2,
            Graph,
            "input X has shape {}, kernel_shape has {r} spatial axes",
            shape_str(&x.shape)
        );
    }
    Ok(())
}

impl Op for Pool {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        let r = self.kernel.len();
        check_input(x, Some(r))?;
        let mut shape = x.shape[..2].to_vec();
        for i in 0..r {
            shape.push(
                self.win
                    .out_dim(i, r, &x.shape[2 + i], Some(self.kernel[i]))?,
            );
        }
        Ok(vec![Fact::new(DType::F32, shape)])
    }

    fn eval(
        &self,
        _: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let xs = x.f32()?;
        check_len(xs.len(), x.dims, "input X")?;
        let r = self.kernel.len();
        ensure!(
            x.rank() == r + 2,
            Graph,
            "input X is {}, kernel_shape has {r} spatial axes",
            dims_str(x.dims)
        );
        let g = self.win.geo(&x.dims[2..], &self.kernel)?;
        let out = outputs
            .get_mut(0)
            .ok_or_else(|| Error::Graph("missing output".into()))?;
        let od = out.dims;
        ensure!(
            od.len() == r + 2 && od[..2] == x.dims[..2] && od[2..] == *g.out_dims(r),
            Graph,
            "output buffer is {}, the pool makes {:?}",
            dims_str(od),
            g.out_dims(r)
        );
        let y = out.f32()?;
        check_len(y.len(), od, "output Y")?;
        let (in_sp, out_sp) = (g.in_size(), g.out_size());
        if y.is_empty() {
            return Ok(());
        }
        if in_sp == 0 {
            y.fill(if self.kind == Kind::Max {
                f32::NEG_INFINITY
            } else {
                0.0
            });
            return Ok(());
        }
        for (xp, yp) in xs.chunks_exact(in_sp).zip(y.chunks_exact_mut(out_sp)) {
            pool_plane(xp, yp, &g, self.kind);
        }
        Ok(())
    }
}

/// Kernel taps `k` of one axis whose input `o·s + k·d - pad` is inside the
/// input, and the count of taps inside the padded input (for
/// count_include_pad).
#[inline]
fn taps(g: &Geo, axis: usize, o: usize) -> (usize, usize, usize) {
    let (k, s, d, p) = (
        g.kernel[axis],
        g.stride[axis],
        g.dilation[axis],
        g.pad_begin[axis],
    );
    let (lo, hi) = valid_range(k, g.input[axis], d, o * s, p);
    let (plo, phi) = valid_range(k, g.input[axis] + p + g.pad_end[axis], d, o * s, 0);
    (lo, hi, phi - plo)
}

fn pool_plane(x: &[f32], y: &mut [f32], g: &Geo, kind: Kind) {
    if kind == Kind::Max && max_pool_unpadded(x, y, g) {
        return;
    }
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [sd, sh, sw] = g.stride;
    let [dd, dh, dw] = g.dilation;
    let [pd, ph, pw] = g.pad_begin;
    let mut out = y.iter_mut();
    for z in 0..od {
        let (zlo, zhi, zn) = taps(g, 0, z);
        for yy in 0..oh {
            let (ylo, yhi, yn) = taps(g, 1, yy);
            for xx in 0..ow {
                let (xlo, xhi, xn) = taps(g, 2, xx);
                let Some(o) = out.next() else { return };
                let xbase = xx * sw;
                match kind {
                    Kind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for a in zlo..zhi {
                            let iz = z * sd + a * dd - pd;
                            for b in ylo..yhi {
                                let row = &x[(iz * ih + yy * sh + b * dh - ph) * iw..][..iw];
                                for e in xlo..xhi {
                                    let v = row[xbase + e * dw - pw];
                                    if v > m || v.is_nan() {
                                        m = v;
                                    }
                                }
                            }
                        }
                        *o = m;
                    }
                    Kind::Avg { include_pad } => {
                        let mut s = 0f32;
                        for a in zlo..zhi {
                            let iz = z * sd + a * dd - pd;
                            for b in ylo..yhi {
                                let row = &x[(iz * ih + yy * sh + b * dh - ph) * iw..][..iw];
                                for e in xlo..xhi {
                                    s += row[xbase + e * dw - pw];
                                }
                            }
                        }
                        let n = if include_pad {
                            zn * yn * xn
                        } else {
                            (zhi - zlo) * (yhi - ylo) * (xhi - xlo)
                        };
                        *o = if n == 0 { 0.0 } else { s / n as f32 };
                    }
                }
            }
        }
    }
}

/// MaxPool of a 1-D/2-D plane whose windows all lie inside the input (no
/// padding, dilation 1): every output is the max of its `kh × kw` window,
/// with no per-output tap bounds to work out. False (nothing written)
/// for other geometries.
fn max_pool_unpadded(x: &[f32], y: &mut [f32], g: &Geo) -> bool {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [_, sh, sw] = g.stride;
    let fits = id == 1
        && od == 1
        && kd == 1
        && g.dilation == [1; 3]
        && g.pad_begin == [0; 3]
        && g.pad_end == [0; 3]
        && oh > 0
        && ow > 0
        && (oh - 1) * sh + kh <= ih
        && (ow - 1) * sw + kw <= iw
        && y.len() == oh * ow
        && x.len() == ih * iw;
    if !fits {
        return false;
    }
    // Branch-free (a data-dependent branch per element mispredicts half
    // the time): max, then NaN if either side is NaN, as the general loop.
    // (Compare and select, not `f32::max`: that is an `fmaxf` call per
    // element in wasm32.)
    let pick = |o: f32, v: f32| {
        let m = if v > o { v } else { o };
        if o.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            m
        }
    };
    for (yy, out) in y.chunks_exact_mut(ow).enumerate() {
        out.fill(f32::NEG_INFINITY);
        for row in x[yy * sh * iw..].chunks_exact(iw).take(kh) {
            for e in 0..kw {
                for (o, &v) in out.iter_mut().zip(row[e..].iter().step_by(sw)) {
                    *o = pick(*o, v);
                }
            }
        }
    }
    true
}

// ---------------------------------------------------------------- global pools

#[derive(Debug)]
struct GlobalPool {
    max: bool,
}

pub fn build_global_average_pool(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(GlobalPool { max: false }))
}

pub fn build_global_max_pool(_: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(GlobalPool { max: true }))
}

impl Op for GlobalPool {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        check_input(x, None)?;
        let mut shape = x.shape[..2].to_vec();
        shape.resize(x.rank(), Dim::Known(1));
        Ok(vec![Fact::new(DType::F32, shape)])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let xs = x.f32()?;
        check_len(xs.len(), x.dims, "input X")?;
        ensure!(
            x.rank() >= 3,
            Graph,
            "input X is {}, expected [N, C, spatial...]",
            dims_str(x.dims)
        );
        let out = outputs
            .get_mut(0)
            .ok_or_else(|| Error::Graph("missing output".into()))?;
        let (nc, plane) = (x.dims[0] * x.dims[1], x.dims[2..].iter().product::<usize>());
        let y = out.f32()?;
        ensure!(
            y.len() == nc,
            Graph,
            "output buffer has {} elements, expected {nc}",
            y.len()
        );
        if plane == 0 {
            y.fill(if self.max { f32::NEG_INFINITY } else { 0.0 });
            return Ok(());
        }
        let pool = |o: &mut f32, p: &[f32]| {
            *o = if self.max {
                max_of(p)
            } else {
                sum_of(p) / plane as f32
            };
        };
        if ctx.threads > 1 && xs.len() >= super::PAR_MIN_ELEMS && nc > 1 {
            let per = nc.div_ceil(ctx.threads);
            crate::par::chunks_mut(ctx.threads, y, per, |t, ys| {
                for (o, p) in ys.iter_mut().zip(xs[t * per * plane..].chunks_exact(plane)) {
                    pool(o, p);
                }
            });
            return Ok(());
        }
        for (o, p) in y.iter_mut().zip(xs.chunks_exact(plane)) {
            pool(o, p);
        }
        Ok(())
    }
}

/// Sum with eight independent accumulators (vectorises; also more accurate
/// than one running sum).
fn sum_of(p: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = p.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

fn max_of(p: &[f32]) -> f32 {
    p.iter().fold(
        f32::NEG_INFINITY,
        |m, &v| if v > m || v.is_nan() { v } else { m },
    )
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{Rng, check_close, pad3, run};
    use super::*;
    use crate::graph::Attr;
    use crate::tensor::Tensor;

    /// Pool by visiting every tap and testing its bounds; `pads` begin and end per axis.
    fn naive(
        x: &[f32],
        xd: [usize; 5],
        k: [usize; 3],
        s: [usize; 3],
        d: [usize; 3],
        pb: [usize; 3],
        pe: [usize; 3],
        od: [usize; 3],
        max: bool,
        include_pad: bool,
    ) -> Vec<f32> {
        let [n, c, id, ih, iw] = xd;
        let mut y = Vec::new();
        for p in 0..n * c {
            for o in (0..od[0])
                .flat_map(|a| (0..od[1]).flat_map(move |b| (0..od[2]).map(move |e| [a, b, e])))
            {
                let (mut m, mut sum, mut cnt, mut cnt_pad) =
                    (f32::NEG_INFINITY, 0f64, 0usize, 0usize);
                for t in (0..k[0])
                    .flat_map(|a| (0..k[1]).flat_map(move |b| (0..k[2]).map(move |e| [a, b, e])))
                {
                    let pos: Vec<i64> = (0..3)
                        .map(|q| (o[q] * s[q] + t[q] * d[q]) as i64 - pb[q] as i64)
                        .collect();
                    let dims = [id, ih, iw];
                    if (0..3)
                        .all(|q| pos[q] >= -(pb[q] as i64) && pos[q] < (dims[q] + pe[q]) as i64)
                    {
                        cnt_pad += 1;
                    }
                    if (0..3).any(|q| pos[q] < 0 || pos[q] >= dims[q] as i64) {
                        continue;
                    }
                    let v = x[((p * id + pos[0] as usize) * ih + pos[1] as usize) * iw
                        + pos[2] as usize];
                    m = m.max(v);
                    sum += v as f64;
                    cnt += 1;
                }
                y.push(if max {
                    m
                } else {
                    (sum / if include_pad { cnt_pad } else { cnt } as f64) as f32
                });
            }
        }
        y
    }

    /// Output length and pads by the ONNX pooling formulas.
    fn onnx_out(
        input: usize,
        k: usize,
        s: usize,
        d: usize,
        pb: usize,
        pe: usize,
        auto: &str,
        ceil: bool,
    ) -> (usize, usize, usize) {
        let dk = d * (k - 1) + 1;
        match auto {
            "SAME_UPPER" | "SAME_LOWER" => {
                let out = input.div_ceil(s);
                let total = ((out - 1) * s + dk).saturating_sub(input);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (out, small, total - small)
                } else {
                    (out, total - small, small)
                }
            }
            "VALID" => ((input - dk + 1).div_ceil(s), 0, 0),
            _ => {
                let f = (input + pb + pe - dk) as f64 / s as f64 + 1.0;
                let mut out = if ceil { f.ceil() } else { f.floor() } as usize;
                if ceil && (out - 1) * s >= input + pb {
                    out -= 1;
                }
                (out, pb, pe)
            }
        }
    }

    #[test]
    fn pools_match_naive() {
        // (x dims, kernel, strides, pads, dilations, auto_pad, ceil_mode)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            Vec<usize>,
            Vec<usize>,
            Vec<usize>,
            Vec<usize>,
            Vec<usize>,
            &str,
            bool,
        )> = vec![
            // Unpadded max windows (the direct path): 2x2/2 as PP-OCR cls,
            // overlapping 3x2/(1,2) with a remainder, 1-D.
            (
                vec![1, 3, 8, 10],
                vec![2, 2],
                vec![2, 2],
                vec![],
                vec![],
                "",
                false,
            ),
            (
                vec![2, 2, 7, 9],
                vec![3, 2],
                vec![1, 2],
                vec![],
                vec![],
                "",
                false,
            ),
            (vec![1, 2, 11], vec![3], vec![2], vec![], vec![], "", false),
            (
                vec![2, 3, 9, 8],
                vec![3, 3],
                vec![2, 2],
                vec![1, 1, 1, 1],
                vec![],
                "",
                false,
            ),
            (
                vec![1, 2, 7, 10],
                vec![2, 3],
                vec![2, 3],
                vec![0, 1, 1, 2],
                vec![],
                "",
                true,
            ),
            (
                vec![1, 2, 10, 9],
                vec![3, 2],
                vec![1, 2],
                vec![1, 0, 2, 1],
                vec![2, 3],
                "",
                false,
            ),
            (
                vec![1, 2, 11, 11],
                vec![3, 3],
                vec![2, 2],
                vec![1, 1, 1, 1],
                vec![2, 2],
                "",
                true,
            ),
            (
                vec![1, 3, 7, 8],
                vec![3, 3],
                vec![2, 2],
                vec![],
                vec![],
                "SAME_UPPER",
                false,
            ),
            (
                vec![1, 3, 7, 8],
                vec![2, 4],
                vec![3, 2],
                vec![],
                vec![],
                "SAME_LOWER",
                false,
            ),
            (
                vec![1, 3, 7, 8],
                vec![3, 2],
                vec![2, 2],
                vec![],
                vec![],
                "VALID",
                false,
            ),
            (
                vec![2, 3, 13],
                vec![4],
                vec![3],
                vec![2, 1],
                vec![],
                "",
                true,
            ),
            (
                vec![1, 2, 12],
                vec![3],
                vec![2],
                vec![1, 1],
                vec![2],
                "",
                false,
            ),
            (
                vec![1, 2, 5, 6, 4],
                vec![2, 3, 2],
                vec![2, 1, 2],
                vec![1, 1, 0, 0, 1, 1],
                vec![],
                "",
                true,
            ),
            (
                vec![1, 1, 4, 4],
                vec![4, 4],
                vec![1, 1],
                vec![],
                vec![],
                "",
                false,
            ),
        ];
        let mut rng = Rng(11);
        let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
        for (xd, k, s, p, d, auto, ceil) in &cases {
            let r = k.len();
            let x = rng.vec(xd.iter().product());
            let (sv, dv) = (
                if s.is_empty() { vec![1; r] } else { s.clone() },
                if d.is_empty() { vec![1; r] } else { d.clone() },
            );
            let (mut out, mut pb, mut pe) = (vec![], vec![], vec![]);
            for i in 0..r {
                let (p0, p1) = if p.is_empty() {
                    (0, 0)
                } else {
                    (p[i], p[r + i])
                };
                let (o, b, e) = onnx_out(xd[2 + i], k[i], sv[i], dv[i], p0, p1, auto, *ceil);
                out.push(o);
                pb.push(b);
                pe.push(e);
            }
            for (name, max, include) in [
                ("max", true, false),
                ("avg", false, false),
                ("avg_incl", false, true),
            ] {
                let mut a = Attrs::new()
                    .with("kernel_shape", ints(k))
                    .with("ceil_mode", Attr::Int(*ceil as i64));
                for (key, v) in [("strides", s), ("pads", p), ("dilations", d)] {
                    if !v.is_empty() {
                        a.set(key, ints(v));
                    }
                }
                if !auto.is_empty() {
                    a.set("auto_pad", Attr::Str(auto.to_string()));
                }
                let op = if max {
                    build_max_pool(&a)
                } else {
                    build_average_pool(&a.with("count_include_pad", Attr::Int(include as i64)))
                }
                .unwrap();
                let (dims, got) = run(&*op, &[Some(Tensor::from_slice(xd, &x).unwrap())], 1);
                let what =
                    format!("{name} x {xd:?} k {k:?} s {s:?} p {p:?} d {d:?} '{auto}' ceil {ceil}");
                let mut want_dims = xd[..2].to_vec();
                want_dims.extend(&out);
                assert_eq!(dims, want_dims, "{what}");
                let xp = pad3(&xd[2..], 1);
                let want = naive(
                    &x,
                    [xd[0], xd[1], xp[0], xp[1], xp[2]],
                    pad3(k, 1),
                    pad3(&sv, 1),
                    pad3(&dv, 1),
                    pad3(&pb, 0),
                    pad3(&pe, 0),
                    pad3(&out, 1),
                    max,
                    include,
                );
                check_close(&got, &want, &what);
            }
        }
    }

    #[test]
    fn global_pools_match_naive() {
        let mut rng = Rng(12);
        for xd in [
            vec![2usize, 3, 5, 7],
            vec![1, 4, 13],
            vec![1, 2, 3, 2, 5],
            vec![1, 3, 1, 1],
            // split across threads
            vec![1, 24, 40, 41],
        ] {
            let x = rng.vec(xd.iter().product());
            let plane: usize = xd[2..].iter().product();
            let t = Tensor::from_slice(&xd, &x).unwrap();
            let mut want_dims = xd[..2].to_vec();
            want_dims.resize(xd.len(), 1);
            for threads in [1, 2] {
                let (dims, got) = run(
                    &*build_global_average_pool(&Attrs::new()).unwrap(),
                    &[Some(t.clone())],
                    threads,
                );
                assert_eq!(dims, want_dims);
                let want: Vec<f32> = x
                    .chunks(plane)
                    .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
                    .collect();
                check_close(&got, &want, "global avg");
                let (_, got) = run(
                    &*build_global_max_pool(&Attrs::new()).unwrap(),
                    &[Some(t.clone())],
                    threads,
                );
                let want: Vec<f32> = x
                    .chunks(plane)
                    .map(|p| p.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)))
                    .collect();
                check_close(&got, &want, "global max");
            }
        }
    }

    #[test]
    fn pool_infer_symbolic_and_errors() {
        let a = Attrs::new()
            .with("kernel_shape", Attr::Ints(vec![3, 3]))
            .with("strides", Attr::Ints(vec![2, 2]));
        let op = build_max_pool(&a).unwrap();
        let x = Fact::new(
            DType::F32,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(8),
                Dim::Known(9),
                Dim::Sym("W".into()),
            ],
        );
        let out = op.infer(&[Some(x.clone())]).unwrap();
        assert_eq!(
            out[0].shape,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(8),
                Dim::Known(4),
                Dim::unknown()
            ]
        );
        let g = build_global_average_pool(&Attrs::new())
            .unwrap()
            .infer(&[Some(x)])
            .unwrap();
        assert_eq!(
            g[0].shape,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(8),
                Dim::Known(1),
                Dim::Known(1)
            ]
        );
        // kernel larger than the input, wrong rank, wrong dtype
        let small = Fact::new(
            DType::F32,
            vec![Dim::Known(1), Dim::Known(1), Dim::Known(2), Dim::Known(2)],
        );
        assert!(op.infer(&[Some(small)]).is_err());
        let r3 = Fact::new(
            DType::F32,
            vec![Dim::Known(1), Dim::Known(1), Dim::Known(9)],
        );
        assert!(op.infer(&[Some(r3)]).is_err());
        let i64x = Fact::new(
            DType::I64,
            vec![Dim::Known(1), Dim::Known(1), Dim::Known(9), Dim::Known(9)],
        );
        assert!(op.infer(&[Some(i64x)]).is_err());
        // attribute errors at build
        assert!(build_max_pool(&Attrs::new()).is_err());
        assert!(build_max_pool(&a.clone().with("pads", Attr::Ints(vec![3, 0, 0, 0]))).is_err());
        assert!(build_max_pool(&a.clone().with("ceil_mode", Attr::Int(2))).is_err());
        assert!(build_average_pool(&a.clone().with("count_include_pad", Attr::Int(-1))).is_err());
        assert!(build_max_pool(&a.clone().with("strides", Attr::Ints(vec![1, 1, 1]))).is_err());
    }
}
