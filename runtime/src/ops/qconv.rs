//! `QConv`: a Conv with an int8 weight, for dynamic quantization.
//!
//! Inputs: `X` f32 `[N, C, spatial…]` (1 to 3 spatial axes), `W` i8
//! `[M, C, k…]` (symmetric per output channel, `[-127, 127]`; a graph
//! constant in practice), `W_scale` f32 `[M]`, optional `bias` f32 `[M]`.
//! Attributes: Conv's (`kernel_shape`, `strides`, `pads`, `dilations`,
//! `auto_pad`; `group` must be 1) and the fused `activation`.
//!
//! A pointwise conv (1×1, unit strides, no padding) quantizes each output
//! position's `C` inputs on its own, as `QMatMul` does a row (asymmetric,
//! a scale and zero point per position): it is a matrix product whose rows
//! are the positions. Any other conv quantizes the input once per image
//! over its whole range (asymmetric, so 0, which padding reads, is exact);
//! blocks of up to 256 output positions are unfolded (im2col) from the int8
//! image into rows of patches, `[positions, C·k…]`. Per-patch ranges there
//! would mean unfolding in f32 and `C·k…` compares per row: on PP-OCR det's
//! 3×3 96→24 convs (24 products per unfolded value) that made the model
//! 1.4× slower. Either way the rows are multiplied by the packed int8 weight
//! exactly in i32, rescaled (`+ bias`, activation) and written to their
//! columns of the `[M, positions]` output. Grouped and depthwise convs stay
//! f32 (the compressor leaves them; they are memory-bound and small).

use std::cell::RefCell;

use super::conv::{Activation, Geo, Window, check_len, check_ranks, conv_output};
use super::qmatmul::{Job, product_rows, quantize_row};
use super::{Ctx, Fact, Op, PackOnce, expect_dtype, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::int8::{self, PackedB, ZeroPoints};
use crate::kernels::transpose::transpose_f32;
use crate::kernels::{self, sgemm};
use crate::tensor::{TensorMut, TensorRef, dims_str, shape_str};
use crate::{Result, ensure};

#[derive(Debug)]
struct QConv {
    win: Window,
    act: Activation,
    packed: PackOnce<PackedB>,
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
        packed: PackOnce::new(),
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
        self.packed.note_constant(is_const, 1);
    }

    fn prepared_bytes(&self) -> usize {
        self.packed.kept().map_or(0, |p| p.bytes())
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
        let geo: Geo = self.win.geo(&x.dims[2..], &w.dims[2..])?;
        let y = conv_output(outputs, [n, m], rank, &geo, bias)?;
        if y.is_empty() {
            return Ok(());
        }
        let (in_sp, out_sp) = (geo.in_size(), geo.out_size());
        let mut fresh = None;
        let packed = self.packed.get(ctx.pack_weights, &mut fresh, || {
            pack_weight(wq, m, c, geo.k_size())
        })?;
        if is_pointwise(&geo) {
            let job = Job {
                k: c,
                n: m,
                w: packed,
                w_scale: ws,
                bias,
                act: self.act,
            };
            per_position(ctx.threads, n, in_sp, job, xs, y);
            return Ok(());
        }
        let scale = std::cell::Cell::new(0f32);
        kernels::with_scratch(|f| {
            if f.len() < BLOCK * m {
                f.resize(BLOCK * m, 0.0);
            }
            let block_out = &mut f[..BLOCK * m];
            conv_blocks(
                n,
                c,
                &geo,
                packed,
                |ni, qx, qxt| {
                    // Asymmetric over [min(x, 0), max(x, 0)], as QMatMul
                    // quantizes a row, so 0 (what padding reads) is exact.
                    let (s, z) = quantize_row(&xs[ni * c * in_sp..][..c * in_sp], qx);
                    scale.set(s);
                    // Channels last: a position's C values are contiguous.
                    transpose(qx, c, in_sp, qxt, |v| v);
                    z as i8
                },
                |ni, j0, nc, acc, z, _| {
                    let o = &mut block_out[..nc * m];
                    int8::dequant_rows(
                        nc,
                        m,
                        acc,
                        m,
                        &[scale.get()],
                        ws,
                        ZeroPoints::Tensor(z as i32),
                        packed.col_sums(),
                        bias,
                        o,
                        m,
                    );
                    self.act.apply(o);
                    let yi = &mut y[ni * m * out_sp..][..m * out_sp];
                    transpose_f32(o, m, nc, m, &mut yi[j0..], out_sp);
                },
            )
        });
        Ok(())
    }
}

/// A pointwise `QConv`, each output position's input quantized on its own.
/// Blocks of up to [`BLOCK`] positions of the input `[C, positions]` are
/// turned channels-last in f32; each position's `C` values get their own
/// scale and zero point ([`quantize_row`], as `QMatMul` does a row); the
/// block is multiplied by `packed` exactly in i32, rescaled (`+ bias`,
/// activation) and written to its columns of `y` `[N, M, positions]`.
///
/// On PP-OCR rec's pointwise convs, a position's own range quantizes their
/// inputs with 1.5–4× less error than the image's (mean frame cosine of the
/// output vs f32 0.967 → 0.983), for `C` compares per `C·M` products and a
/// transpose in f32 instead of bytes.
///
/// With threads, the positions are split into one contiguous range per
/// thread; each writes its columns of every output row through its own
/// slices of `y` (the same blocks, so the same bits).
fn per_position(threads: usize, n: usize, sp: usize, job: Job<'_>, xs: &[f32], y: &mut [f32]) {
    let (work, m) = (sp * job.k * job.n, job.n);
    let job = Positions { job, sp, xs };
    #[cfg(feature = "threads")]
    if threads > 1 && sp >= 2 * MIN_POSITIONS && work >= PARALLEL_MIN_WORK {
        let parts = threads.min(sp / MIN_POSITIONS);
        let per = sp.div_ceil(parts);
        // Part t's slices: positions t·per.. of each (image, channel) row.
        let mut outs: Vec<Vec<&mut [f32]>> =
            (0..parts).map(|_| Vec::with_capacity(n * m)).collect();
        for row in y.chunks_exact_mut(sp) {
            let mut rest = row;
            for out in &mut outs {
                let (mine, after) = rest.split_at_mut(per.min(rest.len()));
                out.push(mine);
                rest = after;
            }
        }
        crate::par::chunks_mut(threads, &mut outs, 1, |t, out| {
            let out = &mut out[0];
            let (p0, p1) = (t * per, ((t + 1) * per).min(sp));
            job.run(n, p0, p1, |ni, j0, o, tmp| {
                // [nc, M] to [M, nc], then each channel's run of positions
                let nc = o.len() / m;
                transpose_f32(o, m, nc, m, tmp, nc);
                for (oc, r) in tmp[..m * nc].chunks_exact(nc).enumerate() {
                    out[ni * m + oc][j0 - p0..][..nc].copy_from_slice(r);
                }
            });
        });
        return;
    }
    let _ = (threads, work);
    job.run(n, 0, sp, |ni, j0, o, _| {
        // to columns j0.. of this image's [M, positions]
        let nc = o.len() / m;
        transpose_f32(o, m, nc, m, &mut y[ni * m * sp + j0..], sp);
    });
}

/// Fewest positions a thread takes in [`per_position`].
#[cfg(feature = "threads")]
const MIN_POSITIONS: usize = 16;

/// `positions × C × M` under which [`per_position`] runs on one thread.
#[cfg(feature = "threads")]
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// What every block of [`per_position`] reads.
struct Positions<'a> {
    /// The product of a position's `C` values (`K = C`, `N = M`).
    job: Job<'a>,
    sp: usize,
    xs: &'a [f32],
}

impl Positions<'_> {
    /// Positions `p0..p1` of every image, in blocks: `write(ni, j0, o,
    /// tmp)` gets the block from `j0`'s results `o` `[rows, M]` and a spare
    /// buffer of at least that size.
    fn run(
        &self,
        n: usize,
        p0: usize,
        p1: usize,
        mut write: impl FnMut(usize, usize, &[f32], &mut [f32]),
    ) {
        let (c, sp, m, job) = (self.job.k, self.sp, self.job.n, &self.job);
        kernels::with_scratch(|f| {
            let (block_out, rest) = grow(f, BLOCK * (2 * m + c)).split_at_mut(BLOCK * m);
            let (xt, tmp) = rest.split_at_mut(BLOCK * c);
            with_scratch(|sc| {
                let qa = grow(&mut sc.patches, BLOCK * c);
                let acc = grow(&mut sc.acc, BLOCK * m);
                let scales = grow(&mut sc.row_scales, BLOCK);
                let zps = grow(&mut sc.zero_points, BLOCK);
                for ni in 0..n {
                    let x = &self.xs[ni * c * sp..][..c * sp];
                    for j0 in (p0..p1).step_by(BLOCK) {
                        let nc = BLOCK.min(p1 - j0);
                        // the block's positions, channels last (a block at
                        // a time, so they are still in cache when quantized)
                        transpose_f32(&x[j0..], sp, c, nc, xt, c);
                        let o = &mut block_out[..nc * m];
                        let bufs = (&mut qa[..], &mut scales[..], &mut zps[..], &mut acc[..]);
                        product_rows(xt[..nc * c].chunks_exact(c), nc, job, bufs, o);
                        write(ni, j0, o, tmp);
                    }
                }
            })
        })
    }
}

/// A 1×1 conv with unit strides and no padding: its patch rows are the
/// channels-last image's rows.
fn is_pointwise(geo: &Geo) -> bool {
    geo.kernel == [1; 3] && geo.stride == [1; 3] && geo.pad_begin == [0; 3] && geo.pad_end == [0; 3]
}

/// The int8 conv loop of `QConv` and `QLinearConv`. Per image `ni`,
/// `image(ni, tmp, qxt)` writes the int8 image channels-last into `qxt`
/// (`[spatial…, C]`; `tmp` is a spare `[C, spatial…]` buffer) and returns
/// its zero point. Blocks of up to [`BLOCK`] output positions are unfolded
/// (im2col; padding reads the zero point) and multiplied by `packed` (`K =
/// C·taps` in (tap, channel) order, `M` columns) exactly in i32, and
/// `emit(ni, j0, rows, acc, z, spare)` gets each block's `[rows, M]`
/// products and a spare `[rows, M]` byte buffer (for int8 results).
pub(super) fn conv_blocks(
    n: usize,
    c: usize,
    geo: &Geo,
    packed: &PackedB,
    mut image: impl FnMut(usize, &mut [i8], &mut [i8]) -> i8,
    mut emit: impl FnMut(usize, usize, usize, &[i32], i8, &mut [i8]),
) {
    let (in_sp, out_sp) = (geo.in_size(), geo.out_size());
    let (k, m) = (packed.k(), packed.n());
    let pointwise = is_pointwise(geo);
    with_scratch(|sc| {
        let QScratch {
            qx,
            patches,
            acc,
            spare,
            ..
        } = sc;
        let (qx, qxt) = grow(qx, 2 * c * in_sp).split_at_mut(c * in_sp);
        let patches = grow(patches, if pointwise { 0 } else { BLOCK * k });
        let acc = grow(acc, BLOCK * m);
        let spare = grow(spare, BLOCK * m);
        for ni in 0..n {
            let z = image(ni, qx, qxt);
            for j0 in (0..out_sp).step_by(BLOCK) {
                let nc = BLOCK.min(out_sp - j0);
                let a: &[i8] = if pointwise {
                    &qxt[j0 * c..][..nc * c]
                } else {
                    unfold_i8(qxt, geo, c, z, j0, &mut patches[..nc * k]);
                    &patches[..nc * k]
                };
                int8::gemm_i8(nc, a, k, packed, &mut acc[..nc * m], m);
                emit(ni, j0, nc, &acc[..nc * m], z, &mut spare[..nc * m]);
            }
        }
    })
}

/// Pack `W` `[M, C, taps]` for the kernel with the reduction in (tap,
/// channel) order, the order [`unfold_i8`] writes patches in.
pub(super) fn pack_weight(wq: &[i8], m: usize, c: usize, taps: usize) -> Result<PackedB> {
    let k = c * taps;
    if taps == 1 {
        return int8::pack_b_transposed(wq, m, k, k);
    }
    let mut r = vec![0i8; m * k];
    for o in 0..m {
        for ch in 0..c {
            for t in 0..taps {
                r[o * k + t * c + ch] = wq[o * k + ch * taps + t];
            }
        }
    }
    int8::pack_b_transposed(&r, m, k, k)
}

/// `dst[p·c + ch] = f(src[ch·n + p])`: `[c, n]` to `[n, c]`, in tiles.
pub(super) fn transpose<S: Copy, T>(
    src: &[S],
    c: usize,
    n: usize,
    dst: &mut [T],
    f: impl Fn(S) -> T,
) {
    const T: usize = 32;
    for cb in (0..c).step_by(T) {
        let ce = (cb + T).min(c);
        for pb in (0..n).step_by(T) {
            let pe = (pb + T).min(n);
            for ch in cb..ce {
                let row = &src[ch * n..][pb..pe];
                for (i, &v) in row.iter().enumerate() {
                    dst[(pb + i) * c + ch] = f(v);
                }
            }
        }
    }
}

/// Per-thread int8 buffers, reused across runs; counted in
/// [`kernels::scratch_held_bytes`].
struct QScratch {
    qx: Vec<i8>,
    patches: Vec<i8>,
    acc: Vec<i32>,
    /// Requantized int8 results of a block (`QLinearConv`).
    spare: Vec<i8>,
    /// Per position scales and zero points (pointwise `QConv`).
    row_scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl QScratch {
    fn bytes(&self) -> usize {
        self.qx.capacity()
            + self.patches.capacity()
            + 4 * self.acc.capacity()
            + self.spare.capacity()
            + 4 * (self.row_scales.capacity() + self.zero_points.capacity())
    }
}

impl Drop for QScratch {
    fn drop(&mut self) {
        kernels::note_scratch(self.bytes(), 0);
    }
}

fn with_scratch<R>(f: impl FnOnce(&mut QScratch) -> R) -> R {
    thread_local! {
        static SCRATCH: RefCell<QScratch> = const {
            RefCell::new(QScratch {
                qx: Vec::new(),
                patches: Vec::new(),
                acc: Vec::new(),
                spare: Vec::new(),
                row_scales: Vec::new(),
                zero_points: Vec::new(),
            })
        };
    }
    let counted = |s: &mut QScratch| {
        let before = s.bytes();
        let r = f(s);
        kernels::note_scratch(before, s.bytes());
        r
    };
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => counted(&mut s),
        Err(_) => counted(&mut QScratch {
            qx: Vec::new(),
            patches: Vec::new(),
            acc: Vec::new(),
            spare: Vec::new(),
            row_scales: Vec::new(),
            zero_points: Vec::new(),
        }),
    })
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Patch rows of output positions `j0..j0 + rows` (rows = `out.len() / K`)
/// from the quantized image in channels-last order, `qxt` `[D, H, W, C]`:
/// row `j` is (kernel tap, channel), each tap's `C` bytes one copy; the zero
/// point `z` where the window reads padding.
fn unfold_i8(qxt: &[i8], g: &Geo, c: usize, z: i8, j0: usize, out: &mut [i8]) {
    let [id, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    let [dd, dh, dw] = g.dilation;
    let [pd, ph, pw] = g.pad_begin;
    let k = c * kd * kh * kw;
    for (jj, row) in out.chunks_exact_mut(k).enumerate() {
        let j = j0 + jj;
        let (ox, r) = (j % ow, j / ow);
        let (oy, oz) = (r % oh, r / oh);
        let mut t = 0;
        for a in 0..kd {
            let iz = (oz * sd + a * dd).checked_sub(pd).filter(|&v| v < id);
            for b in 0..kh {
                let iy = (oy * sh + b * dh).checked_sub(ph).filter(|&v| v < ih);
                for e in 0..kw {
                    let ix = (ox * sw + e * dw).checked_sub(pw).filter(|&v| v < iw);
                    let dst = &mut row[t..t + c];
                    t += c;
                    match (iz, iy, ix) {
                        (Some(iz), Some(iy), Some(ix)) => {
                            dst.copy_from_slice(&qxt[((iz * ih + iy) * iw + ix) * c..][..c])
                        }
                        _ => dst.fill(z),
                    }
                }
            }
        }
    }
}

/// Write a block's `[rows, m]` results, through `f`, to columns `j0..` of
/// `[m, out_sp]`, 16×16 at a time so both sides stay in cache.
pub(super) fn scatter_columns<S: Copy, T>(
    o: &[S],
    rows: usize,
    m: usize,
    y: &mut [T],
    out_sp: usize,
    j0: usize,
    f: impl Fn(S) -> T,
) {
    const T: usize = 16;
    for jb in (0..rows).step_by(T) {
        let je = (jb + T).min(rows);
        for cb in (0..m).step_by(T) {
            let ce = (cb + T).min(m);
            for oc in cb..ce {
                let dst = &mut y[oc * out_sp + j0 + jb..][..je - jb];
                for (d, j) in dst.iter_mut().zip(jb..je) {
                    *d = f(o[j * m + oc]);
                }
            }
        }
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

    /// A pointwise QConv quantizes each position as QMatMul quantizes a
    /// row: on the channels-last input, with the same weight, the two give
    /// the same bits.
    #[test]
    fn pointwise_equals_qmatmul_on_the_positions() {
        let mut rng = Rng(5);
        // 300 positions: one full block of 256 and a partial one
        let (c, m, h, w) = (19, 37, 12, 25);
        let sp = h * w;
        let mut xv = rng.vec(c * sp);
        // one position with a far larger range than the rest
        for ch in 0..c {
            xv[ch * sp + 7] *= 40.0;
        }
        let wv = rng.vec(m * c);
        let (q, sc) = quantize_rows(&wv, m, c);
        let bv = rng.vec(m);
        let x = Tensor::from_slice(&[1, c, h, w], &xv).unwrap();
        let got = eval_owned(
            &*build_qconv(&Attrs::new()).unwrap(),
            &[
                Some(x),
                Some(Tensor::from_slice(&[m, c, 1, 1], &q).unwrap()),
                Some(Tensor::from_slice(&[m], &sc).unwrap()),
                Some(Tensor::from_slice(&[m], &bv).unwrap()),
            ],
        )
        .unwrap()[0]
            .to_f32_vec()
            .unwrap();
        let mut xt = vec![0f32; sp * c];
        let mut qt = vec![0i8; c * m];
        for p in 0..sp {
            for ch in 0..c {
                xt[p * c + ch] = xv[ch * sp + p];
            }
        }
        for o in 0..m {
            for ch in 0..c {
                qt[ch * m + o] = q[o * c + ch];
            }
        }
        let want = eval_owned(
            &*super::super::qmatmul::build_qmatmul(&Attrs::new()).unwrap(),
            &[
                Some(Tensor::from_slice(&[sp, c], &xt).unwrap()),
                Some(Tensor::from_slice(&[c, m], &qt).unwrap()),
                Some(Tensor::from_slice(&[m], &sc).unwrap()),
                Some(Tensor::from_slice(&[m], &bv).unwrap()),
            ],
        )
        .unwrap()[0]
            .to_f32_vec()
            .unwrap();
        for o in 0..m {
            for p in 0..sp {
                assert_eq!(
                    got[o * sp + p].to_bits(),
                    want[p * m + o].to_bits(),
                    "output {o}, position {p}"
                );
            }
        }
    }

    /// Split over two threads, a pointwise QConv gives the bits of one.
    #[test]
    fn threads_give_the_same_bits() {
        let mut rng = Rng(6);
        // 2 images, 130 positions, 40 -> 70 channels: over the threshold
        let (n, c, m, h, w) = (2, 40, 70, 10, 13);
        let x = Tensor::from_slice(&[n, c, h, w], &rng.vec(n * c * h * w)).unwrap();
        let (q, sc) = quantize_rows(&rng.vec(m * c), m, c);
        let ins = [
            Some(x),
            Some(Tensor::from_slice(&[m, c, 1, 1], &q).unwrap()),
            Some(Tensor::from_slice(&[m], &sc).unwrap()),
            Some(Tensor::from_slice(&[m], &rng.vec(m)).unwrap()),
        ];
        let op = build_qconv(&Attrs::new().with("activation", Attr::Str("relu".into()))).unwrap();
        let (d1, one) = crate::ops::conv::tests::run(&*op, &ins, 1);
        let (d2, two) = crate::ops::conv::tests::run(&*op, &ins, 2);
        assert_eq!(d1, d2);
        assert!(
            one.iter()
                .zip(&two)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
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
