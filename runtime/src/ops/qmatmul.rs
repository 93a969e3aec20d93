//! `QMatMul`: a MatMul with an int8 weight, for dynamic quantization.
//!
//! Inputs: `A` f32 `[..., K]` (any leading dims; rows = their product), `W`
//! i8 `[K, N]` (symmetric per output channel, values in `[-127, 127]`; a
//! graph constant in practice), `W_scale` f32 `[N]`, optional `bias` f32
//! `[N]`. Output: f32 `[..., N]`. Attributes `activation`,
//! `activation_alpha`, `activation_beta` as for `MatMul` ([`Activation`]).
//!
//! Per run, each row of `A` is quantized to int8 over its own range
//! `[min(A_i, 0), max(A_i, 0)]` (asymmetric: `scale_i = range/255`, a zero
//! point `z_i`, round half to even) into a reusable per-thread buffer;
//! [`int8::gemm_i8`] computes `C = Aq·W` exactly in i32 (written straight
//! into the output buffer, which has the same size); then each row is
//! rescaled, `out = (C − z_i·Σ_k W[k][j])·(scale_i·W_scale_j) + bias_j`,
//! and the activation runs on it while it is in cache. A constant `W` is
//! packed for the kernel once, on first use, and kept by the op
//! ([`Op::prepared_bytes`]: about the weight's own size, private memory
//! next to a mapped file). With `Options::pack_weights` off, nothing is
//! kept and each run packs a temporary copy (the int8 kernel has no
//! in-place path).
//!
//! Why asymmetric rows: on MiniLM, symmetric rows (`max|A_i|/127`) gave
//! sentence-embedding cosines vs f32 of min 0.9916 / mean 0.9971 over 32
//! sentences, asymmetric rows 0.9974 / 0.9988, at the same speed: many
//! rows are lopsided (GELU outputs are ≥ −0.17), and symmetric wastes half
//! the codes on them. The kernel is the same; the zero point costs one
//! multiply-subtract per output in the rescale.
//!
//! The integer part gives the same bits on every CPU; so do the quantize
//! and rescale helpers (see [`crate::kernels::int8`]). With the `threads`
//! feature and `ctx.threads > 1`, blocks of rows run on the helper team
//! ([`crate::par`]), each thread with its own scratch; the result does not depend on the split.
//!
//! The compressor's `quantize_dynamic` pass (compress/src/quantize.rs)
//! makes these nodes from MatMul/Gemm with a constant f32 weight.

use std::cell::RefCell;

use super::gemm::Activation;
use super::matmul::{check_len, first_out};
use super::{Ctx, Fact, Op, PackOnce, expect_dtype, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels;
use crate::kernels::int8::{self, MR, PackedB, ZeroPoints};
use crate::tensor::{Dim, Shape, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result};

#[derive(Debug)]
struct QMatMul {
    act: Activation,
    /// `W` packed once when it is a graph constant.
    packed: PackOnce<PackedB>,
}

/// Bytes of quantized `A` per block of rows: the block stays in L2 while
/// the kernel sweeps the weight's panels over it (as `gemm_i8` blocks).
const BLOCK_BYTES: usize = 256 * 1024;

/// Work (`rows·K·N`) below which one thread does it all.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Per-thread buffers reused across runs (warm runs do not allocate).
struct Scratch {
    a: Vec<i8>,
    row_scales: Vec<f32>,
    zero_points: Vec<i32>,
    acc: Vec<i32>,
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch {
            a: Vec::new(),
            row_scales: Vec::new(),
            zero_points: Vec::new(),
            acc: Vec::new(),
        }
    }
    fn bytes(&self) -> usize {
        self.a.capacity()
            + 4 * (self.row_scales.capacity() + self.zero_points.capacity() + self.acc.capacity())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        kernels::note_scratch(self.bytes(), 0);
    }
}

/// Run `f` with this thread's scratch; its size is counted in
/// [`kernels::scratch_held_bytes`].
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
    }
    let counted = |s: &mut Scratch| {
        let before = s.bytes();
        let r = f(s);
        kernels::note_scratch(before, s.bytes());
        r
    };
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => counted(&mut s),
        // Re-entered (cannot happen today): use fresh buffers.
        Err(_) => counted(&mut Scratch::new()),
    })
}

/// Asymmetric int8 of one row: `q = clamp(round(x/scale) + z, -128, 127)`
/// with `scale = (hi − lo)/255` and `z = round(−128 − lo/scale)`, so that
/// `lo` maps to -128, `hi` to 127 and 0 exactly to `z`. Returns `(scale, z)`;
/// an all-zero row gives `(0, 0)` and zeros; a row with NaN or infinity
/// (or a range beyond f32) gives a NaN scale, so its outputs are NaN, as
/// they would be in f32.
pub fn quantize_row(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let (lo, hi, nan) = int8::range(x);
    let scale = (hi - lo) / 255.0;
    if scale == 0.0 || !scale.is_finite() || nan {
        out.fill(0);
        return (if scale == 0.0 && !nan { 0.0 } else { f32::NAN }, 0);
    }
    let z = (-128.0 - lo / scale).round_ties_even().clamp(-128.0, 127.0) as i8;
    int8::quantize_f32_to_i8(x, scale, z, out);
    (scale, z as i32)
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Everything a block of rows needs besides its rows; sizes already checked.
pub(crate) struct Job<'a> {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) w: &'a PackedB,
    pub(crate) w_scale: &'a [f32],
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) act: Activation,
}

impl Job<'_> {
    /// `out = act(quant(a)·W rescaled + bias)` for `a` of `rows×k`, `out`
    /// of `rows×n` (both exactly that long).
    pub(crate) fn run(&self, a: &[f32], out: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        if n == 0 {
            return;
        }
        let rows = out.len() / n;
        let block = (BLOCK_BYTES / k.max(1)).max(MR) / MR * MR;
        with_scratch(|s| {
            let Scratch {
                a: qa,
                row_scales,
                zero_points,
                acc,
            } = s;
            let rows_here = rows.min(block);
            let qa = grow(qa, rows_here * k);
            let scales = grow(row_scales, rows_here);
            let zps = grow(zero_points, rows_here);
            // The block's i32 products, rescaled from there into the
            // output (writing them into the output and rescaling each row
            // through a copy cost a memmove per row).
            let acc = grow(acc, rows_here * n);
            for r0 in (0..rows).step_by(block) {
                let m = block.min(rows - r0);
                let (a_blk, o_blk) = (&a[r0 * k..][..m * k], &mut out[r0 * n..][..m * n]);
                let bufs = (&mut qa[..], &mut scales[..], &mut zps[..], &mut acc[..]);
                product_rows(a_blk.chunks_exact(k.max(1)), m, self, bufs, o_blk);
            }
        })
    }
}

/// `out = act(quant(row)·W rescaled + bias)` for `m` rows of `K = w.k()`
/// values: each row quantized on its own ([`quantize_row`]), the product
/// exact in i32 into `acc`, rescaled into `out` (`m × N`) in one call. The
/// buffers `(qa, scales, zps, acc)` hold at least `m·K`, `m`, `m`, `m·N`.
/// `QMatMul`'s blocks of rows and the pointwise `QConv`'s blocks of
/// positions both run this.
pub(super) fn product_rows<'r>(
    rows: impl Iterator<Item = &'r [f32]>,
    m: usize,
    job: &Job<'_>,
    (qa, scales, zps, acc): (&mut [i8], &mut [f32], &mut [i32], &mut [i32]),
    out: &mut [f32],
) {
    let (k, n) = (job.k, job.n);
    for (i, row) in rows.take(m).enumerate() {
        (scales[i], zps[i]) = quantize_row(row, &mut qa[i * k..][..k]);
    }
    int8::gemm_i8(m, &qa[..m * k], k, job.w, &mut acc[..m * n], n);
    int8::dequant_rows(
        m,
        n,
        &acc[..m * n],
        n,
        &scales[..m],
        job.w_scale,
        ZeroPoints::Rows(&zps[..m]),
        job.w.col_sums(),
        job.bias,
        out,
        n,
    );
    job.act.apply(out);
}

/// The pieces of an input shape: (leading dims, K).
fn split_k<'s>(a: &'s [Dim], what: &str) -> Result<(&'s [Dim], &'s Dim)> {
    match a.split_last() {
        Some((k, lead)) => Ok((lead, k)),
        None => Err(Error::Graph(format!(
            "QMatMul: {what} must have rank >= 1, is a scalar"
        ))),
    }
}

fn dims_differ(x: &Dim, y: &Dim) -> bool {
    matches!((x, y), (Dim::Known(a), Dim::Known(b)) if a != b)
}

impl Op for QMatMul {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (a, w, s) = (req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?);
        expect_dtype(a, DType::F32, "QMatMul A")?;
        expect_dtype(w, DType::I8, "QMatMul W")?;
        expect_dtype(s, DType::F32, "QMatMul W_scale")?;
        let (lead, ka) = split_k(&a.shape, "A")?;
        let (kw, nw) = match w.shape.as_slice() {
            [kw, nw] => (kw, nw),
            _ => {
                return Err(Error::Graph(format!(
                    "QMatMul: W must be 2-D [K, N], is {}",
                    shape_str(&w.shape)
                )));
            }
        };
        if dims_differ(ka, kw) {
            return Err(Error::Graph(format!(
                "QMatMul: inner dimensions differ: A is {} (k={ka}), W is {} (k={kw})",
                shape_str(&a.shape),
                shape_str(&w.shape)
            )));
        }
        let per_channel = |f: &Fact, what: &str| -> Result<()> {
            if f.rank() != 1 || dims_differ(&f.shape[0], nw) {
                return Err(Error::Graph(format!(
                    "QMatMul: {what} must be [N] with N = {nw} (W is {}), is {}",
                    shape_str(&w.shape),
                    shape_str(&f.shape)
                )));
            }
            Ok(())
        };
        per_channel(s, "W_scale")?;
        if let Some(b) = opt(inputs, 3) {
            expect_dtype(b, DType::F32, "QMatMul bias")?;
            per_channel(b, "bias")?;
        }
        let mut out: Shape = lead.to_vec();
        out.push(nw.clone());
        Ok(vec![Fact::new(DType::F32, out)])
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
        let (a, w, s) = (*req(inputs, 0)?, *req(inputs, 1)?, *req(inputs, 2)?);
        let (x, wq, ws) = (a.f32()?, w.as_slice::<i8>()?, s.f32()?);
        let (k, n) = match *w.dims {
            [k, n] => (k, n),
            _ => {
                return Err(Error::Graph(format!(
                    "QMatMul: W must be 2-D [K, N], is {}",
                    dims_str(w.dims)
                )));
            }
        };
        let Some((&ka, lead)) = a.dims.split_last() else {
            return Err(Error::Graph(
                "QMatMul: A must have rank >= 1, is a scalar".into(),
            ));
        };
        if ka != k {
            return Err(Error::Graph(format!(
                "QMatMul: inner dimensions differ: A is {} (k={ka}), W is {} (k={k})",
                dims_str(a.dims),
                dims_str(w.dims)
            )));
        }
        check_len("QMatMul A", a.dims, x.len())?;
        check_len("QMatMul W", w.dims, wq.len())?;
        if ws.len() != n {
            return Err(Error::Graph(format!(
                "QMatMul: W_scale has {} values, N is {n}",
                ws.len()
            )));
        }
        let bias = match opt(inputs, 3) {
            Some(t) => {
                let v = t.f32()?;
                if v.len() != n {
                    return Err(Error::Graph(format!(
                        "QMatMul: bias has {} values, N is {n}",
                        v.len()
                    )));
                }
                Some(v)
            }
            None => None,
        };
        let rows = numel(lead)?;
        let out = first_out(outputs, "QMatMul")?;
        let od = out.dims;
        if od.len() != a.dims.len() || od[..lead.len()] != *lead || od.last() != Some(&n) {
            return Err(Error::Graph(format!(
                "QMatMul: output is {}, which does not fit A {} and W {}",
                dims_str(od),
                dims_str(a.dims),
                dims_str(w.dims)
            )));
        }
        let o = out.f32()?;
        check_len("QMatMul output", od, o.len())?;
        if o.is_empty() {
            return Ok(());
        }
        let mut fresh = None;
        let packed = self
            .packed
            .get(ctx.pack_weights, &mut fresh, || int8::pack_b(wq, k, n, n))?;
        let job = Job {
            k,
            n,
            w: packed,
            w_scale: ws,
            bias,
            act: self.act,
        };
        if ctx.threads > 1
            && rows >= 2 * MR
            && rows.saturating_mul(k).saturating_mul(n) >= PARALLEL_MIN_WORK
        {
            let per = rows.div_ceil(ctx.threads).div_ceil(MR) * MR;
            crate::par::chunks_mut(ctx.threads, o, per * n, |t, o| {
                job.run(&x[t * per * k..][..(o.len() / n.max(1)) * k], o)
            });
            return Ok(());
        }
        job.run(x, o);
        Ok(())
    }
}

pub fn build_qmatmul(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(QMatMul {
        act: Activation::from_attrs(a)?,
        packed: PackOnce::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_owned;
    use crate::ops::matmul::tests::{ACTS, Rng, act_attrs, act_ref};
    use crate::tensor::{AlignedBuf, Tensor, known_shape};

    /// Quantize `w` [k, n] per column as the compressor does.
    fn quantize_cols(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
        let mut q = vec![0i8; k * n];
        let mut s = vec![0f32; n];
        for j in 0..n {
            let m = (0..k).map(|p| w[p * n + j].abs()).fold(0f32, f32::max);
            s[j] = m / 127.0;
            for p in 0..k {
                q[p * n + j] = if m == 0.0 {
                    0
                } else {
                    (w[p * n + j] / s[j]).round_ties_even().clamp(-127.0, 127.0) as i8
                };
            }
        }
        (q, s)
    }

    fn run(
        op: &dyn Op,
        a: &Tensor,
        q: &[i8],
        s: &[f32],
        bias: Option<&[f32]>,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let mut ins = vec![
            Some(a.clone()),
            Some(Tensor::from_slice(&[k, n], q).unwrap()),
            Some(Tensor::from_slice(&[n], s).unwrap()),
        ];
        if let Some(b) = bias {
            ins.push(Some(Tensor::from_slice(&[n], b).unwrap()));
        }
        eval_owned(op, &ins).unwrap()[0].to_f32_vec().unwrap()
    }

    /// The exact dequantized product: what int8 should compute, bit for
    /// bit up to f32 rounding of the rescale.
    fn exact_int8(a: &[f32], q: &[i8], s: &[f32], rows: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; rows * n];
        for i in 0..rows {
            let row = &a[i * k..][..k];
            let lo = row.iter().fold(0f32, |m, &v| m.min(v));
            let hi = row.iter().fold(0f32, |m, &v| m.max(v));
            let rs = (hi - lo) / 255.0;
            let z = if rs == 0.0 {
                0.0
            } else {
                (-128.0 - lo / rs).round_ties_even().clamp(-128.0, 127.0)
            };
            for j in 0..n {
                let mut acc = 0i64;
                for p in 0..k {
                    let qa = if rs == 0.0 {
                        0
                    } else {
                        ((row[p] / rs).round_ties_even() + z).clamp(-128.0, 127.0) as i64
                    };
                    acc += (qa - z as i64) * q[p * n + j] as i64;
                }
                out[i * n + j] = acc as f64 * rs as f64 * s[j] as f64;
            }
        }
        out
    }

    #[test]
    fn matches_exact_integer_product_on_odd_shapes() {
        let mut rng = Rng(17);
        for &(lead, k, n) in &[
            (&[1usize][..], 1usize, 1usize),
            (&[3], 5, 7),
            (&[2, 9], 33, 17),
            (&[70], 384, 65),
            (&[5], 3, 40),
            (&[], 8, 9),
        ] {
            let rows: usize = lead.iter().product();
            let mut ad = lead.to_vec();
            ad.push(k);
            let av = rng.vec(rows * k);
            let (q, s) = quantize_cols(&rng.vec(k * n), k, n);
            let op = build_qmatmul(&Attrs::new()).unwrap();
            let got = run(
                op.as_ref(),
                &Tensor::from_slice(&ad, &av).unwrap(),
                &q,
                &s,
                None,
                k,
                n,
            );
            let want = exact_int8(&av, &q, &s, rows, k, n);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn bias_and_activations_are_applied() {
        let mut rng = Rng(5);
        let (k, n) = (24, 13);
        let a = Tensor::from_slice(&[2, 3, k], &rng.vec(6 * k)).unwrap();
        let (q, s) = quantize_cols(&rng.vec(k * n), k, n);
        let bias = rng.vec(n);
        let plain = run(
            build_qmatmul(&Attrs::new()).unwrap().as_ref(),
            &a,
            &q,
            &s,
            Some(&bias),
            k,
            n,
        );
        let nobias = run(
            build_qmatmul(&Attrs::new()).unwrap().as_ref(),
            &a,
            &q,
            &s,
            None,
            k,
            n,
        );
        for (i, (p, nb)) in plain.iter().zip(&nobias).enumerate() {
            assert!((p - nb - bias[i % n]).abs() < 1e-5);
        }
        for &(name, alpha, beta) in ACTS {
            let op = build_qmatmul(&act_attrs(name, alpha, beta)).unwrap();
            let got = run(op.as_ref(), &a, &q, &s, Some(&bias), k, n);
            for (g, &p) in got.iter().zip(&plain) {
                let w = act_ref(name, alpha, beta, p as f64);
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{name}: {g} vs {w}"
                );
            }
        }
    }

    /// Quantizing rows, the integer product and the rescale give the same
    /// bits on every CPU (x86-64 AVX2, aarch64 NEON/sdot, armv7, portable):
    /// the checksum of the output bits was computed on x86-64, and `make
    /// test-arm` runs this test under qemu-aarch64 and qemu-arm. Inputs come
    /// from integer arithmetic only, so they are the same bits everywhere.
    #[test]
    fn the_same_bits_on_every_cpu() {
        let mut seed = 23u32;
        let mut vals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    ((seed >> 9) as i32 - (1 << 22)) as f32 / (1 << 20) as f32
                })
                .collect()
        };
        // Rows of several kernel tiles and a remainder; k not a multiple of 4.
        let (rows, k, n) = (19, 203, 45);
        let (av, wv, bias) = (vals(rows * k), vals(k * n), vals(n));
        let (q, s) = quantize_cols(&wv, k, n);
        let a = Tensor::from_slice(&[rows, k], &av).unwrap();
        let op = build_qmatmul(&Attrs::new()).unwrap();
        let got = run(op.as_ref(), &a, &q, &s, Some(&bias), k, n);
        let fnv = got.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
            (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3)
        });
        assert_eq!(
            fnv,
            0x232078eaa2d96c41,
            "checksum of {} outputs, first {:?}",
            got.len(),
            &got[..3]
        );
    }

    #[test]
    fn threads_give_the_same_bits() {
        let mut rng = Rng(9);
        let (rows, k, n) = (77, 96, 130);
        let av = rng.vec(rows * k);
        let (q, s) = quantize_cols(&rng.vec(k * n), k, n);
        let a = Tensor::from_slice(&[rows, k], &av).unwrap();
        let op = build_qmatmul(&act_attrs("gelu", None, None)).unwrap();
        let one = run(op.as_ref(), &a, &q, &s, None, k, n);
        let (wt, st) = (
            Tensor::from_slice(&[k, n], &q).unwrap(),
            Tensor::from_slice(&[n], &s).unwrap(),
        );
        let mut buf = AlignedBuf::zeroed(rows * n * 4);
        let mut outs = [TensorMut {
            dtype: DType::F32,
            dims: &[rows, n],
            data: buf.as_bytes_mut(),
        }];
        op.eval(
            &mut Ctx::new(2),
            &[Some(a.view()), Some(wt.view()), Some(st.view())],
            &mut outs,
        )
        .unwrap();
        assert_eq!(outs[0].f32().unwrap(), &one[..]);
    }

    #[test]
    fn constant_weight_is_packed_once() {
        let mut rng = Rng(2);
        let (k, n) = (16, 20);
        let (q, s) = quantize_cols(&rng.vec(k * n), k, n);
        let mut op = build_qmatmul(&Attrs::new()).unwrap();
        op.constant_inputs(&[false, true, true]);
        assert_eq!(op.prepared_bytes(), 0);
        let a = Tensor::from_slice(&[3, k], &rng.vec(3 * k)).unwrap();
        let first = run(op.as_ref(), &a, &q, &s, None, k, n);
        let held = op.prepared_bytes();
        assert!(held >= k * n, "{held}");
        assert_eq!(run(op.as_ref(), &a, &q, &s, None, k, n), first);
        assert_eq!(op.prepared_bytes(), held);
    }

    #[test]
    fn pack_weights_off_keeps_nothing() {
        let mut rng = Rng(4);
        let (k, n) = (16, 20);
        let (q, s) = quantize_cols(&rng.vec(k * n), k, n);
        let mut op = build_qmatmul(&Attrs::new()).unwrap();
        op.constant_inputs(&[false, true, true]);
        let a = Tensor::from_slice(&[3, k], &rng.vec(3 * k)).unwrap();
        let want = run(op.as_ref(), &a, &q, &s, None, k, n);
        let mut op = build_qmatmul(&Attrs::new()).unwrap();
        op.constant_inputs(&[false, true, true]);
        let (wt, st) = (
            Tensor::from_slice(&[k, n], &q).unwrap(),
            Tensor::from_slice(&[n], &s).unwrap(),
        );
        let mut buf = AlignedBuf::zeroed(3 * n * 4);
        let mut outs = [TensorMut {
            dtype: DType::F32,
            dims: &[3, n],
            data: buf.as_bytes_mut(),
        }];
        let mut ctx = Ctx::new(1);
        ctx.pack_weights = false;
        op.eval(
            &mut ctx,
            &[Some(a.view()), Some(wt.view()), Some(st.view())],
            &mut outs,
        )
        .unwrap();
        assert_eq!(outs[0].f32().unwrap(), &want[..]);
        assert_eq!(op.prepared_bytes(), 0);
    }

    #[test]
    fn zero_and_non_finite_rows_do_not_panic() {
        let (k, n) = (8, 4);
        let (q, s) = quantize_cols(&Rng(6).vec(k * n), k, n);
        let mut rows = vec![0f32; k]; // all zero: output = bias
        rows.extend([1.0, f32::NAN, -2.0, 0.5, 0.0, 0.0, 3.0, 1.0]);
        rows.extend([1.0, f32::INFINITY, -2.0, 0.5, 0.0, 0.0, 3.0, 1.0]);
        rows.extend([f32::MAX, f32::MIN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let a = Tensor::from_slice(&[4, k], &rows).unwrap();
        let bias = [1.0f32, 2.0, 3.0, 4.0];
        let op = build_qmatmul(&Attrs::new()).unwrap();
        let out = run(op.as_ref(), &a, &q, &s, Some(&bias), k, n);
        assert_eq!(&out[..n], &bias);
        // NaN and infinity propagate, as in f32; so does a range past f32.
        assert!(out[n..].iter().all(|v| v.is_nan()), "{out:?}");
    }

    fn f(dtype: DType, dims: &[usize]) -> Option<Fact> {
        Some(Fact::new(dtype, known_shape(dims)))
    }

    #[test]
    fn bad_inputs_are_errors() {
        let op = build_qmatmul(&Attrs::new()).unwrap();
        let cases: Vec<(Vec<Option<Fact>>, &str)> = vec![
            (
                vec![
                    f(DType::F32, &[2, 4]),
                    f(DType::F32, &[4, 3]),
                    f(DType::F32, &[3]),
                ],
                "QMatMul W must be i8, is f32",
            ),
            (
                vec![
                    f(DType::I8, &[2, 4]),
                    f(DType::I8, &[4, 3]),
                    f(DType::F32, &[3]),
                ],
                "QMatMul A must be f32",
            ),
            (
                vec![
                    f(DType::F32, &[2, 5]),
                    f(DType::I8, &[4, 3]),
                    f(DType::F32, &[3]),
                ],
                "inner dimensions differ: A is [2, 5] (k=5), W is [4, 3] (k=4)",
            ),
            (
                vec![
                    f(DType::F32, &[2, 4]),
                    f(DType::I8, &[4, 3]),
                    f(DType::F32, &[4]),
                ],
                "W_scale must be [N] with N = 3",
            ),
            (
                vec![
                    f(DType::F32, &[2, 4]),
                    f(DType::I8, &[4, 3]),
                    f(DType::F32, &[3]),
                    f(DType::F32, &[2]),
                ],
                "bias must be [N] with N = 3",
            ),
            (
                vec![
                    f(DType::F32, &[2, 4]),
                    f(DType::I8, &[4, 3, 1]),
                    f(DType::F32, &[3]),
                ],
                "W must be 2-D",
            ),
            (
                vec![
                    f(DType::F32, &[]),
                    f(DType::I8, &[4, 3]),
                    f(DType::F32, &[3]),
                ],
                "rank >= 1",
            ),
            (
                vec![f(DType::F32, &[2, 4]), f(DType::I8, &[4, 3])],
                "missing",
            ),
        ];
        for (ins, want) in cases {
            let e = op.infer(&ins).unwrap_err().to_string();
            assert!(e.contains(want), "{e} does not contain {want}");
        }
        // The same through eval (no inference first): errors, no panics.
        let t = |d: &[usize]| Tensor::from_slice(d, &vec![0.5f32; d.iter().product()]).unwrap();
        let q = |d: &[usize]| Tensor::from_slice(d, &vec![1i8; d.iter().product()]).unwrap();
        let bad: Vec<Vec<Option<Tensor>>> = vec![
            vec![Some(t(&[2, 4])), Some(t(&[4, 3])), Some(t(&[3]))],
            vec![Some(t(&[2, 5])), Some(q(&[4, 3])), Some(t(&[3]))],
            vec![Some(t(&[2, 4])), Some(q(&[4, 3])), Some(t(&[2]))],
            vec![
                Some(t(&[2, 4])),
                Some(q(&[4, 3])),
                Some(t(&[3])),
                Some(t(&[5])),
            ],
            vec![Some(t(&[2, 4])), Some(q(&[12])), Some(t(&[3]))],
        ];
        for ins in bad {
            let views: Vec<Option<TensorRef<'_>>> =
                ins.iter().map(|t| t.as_ref().map(|t| t.view())).collect();
            let mut buf = AlignedBuf::zeroed(2 * 3 * 4);
            let mut outs = [TensorMut {
                dtype: DType::F32,
                dims: &[2, 3],
                data: buf.as_bytes_mut(),
            }];
            assert!(op.eval(&mut Ctx::new(1), &views, &mut outs).is_err());
        }
        // An output buffer that does not fit: refused.
        let ins = [Some(t(&[2, 4])), Some(q(&[4, 3])), Some(t(&[3]))];
        let views: Vec<Option<TensorRef<'_>>> =
            ins.iter().map(|t| t.as_ref().map(|t| t.view())).collect();
        let mut buf = AlignedBuf::zeroed(4 * 4);
        let mut outs = [TensorMut {
            dtype: DType::F32,
            dims: &[1, 4],
            data: buf.as_bytes_mut(),
        }];
        assert!(op.eval(&mut Ctx::new(1), &views, &mut outs).is_err());
        // -128 is not a symmetric weight.
        let w = Tensor::from_slice(&[4, 3], &[-128i8; 12]).unwrap();
        let e = eval_owned(op.as_ref(), &[Some(t(&[2, 4])), Some(w), Some(t(&[3]))]).unwrap_err();
        assert!(e.to_string().contains("-128"), "{e}");
        // Symbolic dims infer.
        let out = op
            .infer(&[
                Some(Fact::new(
                    DType::F32,
                    vec![Dim::Sym("N".into()), Dim::Sym("S".into()), Dim::Known(4)],
                )),
                f(DType::I8, &[4, 3]),
                f(DType::F32, &[3]),
            ])
            .unwrap();
        assert_eq!(shape_str(&out[0].shape), "[N, S, 3]");
    }
}
