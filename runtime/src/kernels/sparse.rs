//! Sparse × dense f32 product for pruned weights: `C[M, N] = A[M, K] · W[K, N]
//! (+ bias per column)`, with `W` a constant whose zeros are skipped.
//!
//! `W` is converted once ([`SparseB::new`]) to compressed columns: for each
//! output column `n`, the `(k, value)` pairs of its nonzeros. Two loops:
//!
//! - one row (`M = 1`, a decoder step): a gather per column,
//!   `c[n] = Σ v · a[k]`, with four independent sums;
//! - more rows: `MB` rows of `A` are transposed into scratch so that
//!   `Aᵀ[k, m0..m0+MB]` is contiguous, and each column keeps `MB` sums in
//!   registers, `acc += v · Aᵀ[k, ·]`, one vector FMA per 8 rows per nonzero
//!   (two interleaved sets of sums hide the FMA latency). Blocks of 32 rows,
//!   then 8 (padded) for the rest; sums go through a 16-column tile so C is
//!   written a row piece at a time.
//!
//! The loops are written once and compiled twice on x86-64: portable, and
//! with AVX2+FMA (picked at run time); LLVM vectorises the portable copy for
//! NEON and wasm simd128. Threads split the columns.
//!
//! Whether this beats the dense [`super::sgemm`] depends on the density
//! and on `M`: see [`sparse_pays`] and the measurement behind it.

use super::Mat;
use super::sgemm::Epilogue;
use crate::{Error, Result};

/// A constant `k × n` weight as compressed columns.
#[derive(Debug, Clone)]
pub struct SparseB {
    pub k: usize,
    pub n: usize,
    /// Nonzeros of column `j` are `start[j]..start[j + 1]` of `rows`/`vals`.
    start: Vec<u32>,
    rows: Vec<u32>,
    vals: Vec<f32>,
}

impl SparseB {
    /// From a dense `k × n` view; zeros (either sign) are dropped.
    pub fn new(b: Mat<'_>) -> Result<SparseB> {
        if !b.fits() {
            return Err(Error::Graph(format!(
                "sparse matmul: B view {}×{} is out of bounds",
                b.rows, b.cols
            )));
        }
        let (k, n) = (b.rows, b.cols);
        if k > u32::MAX as usize {
            return Err(Error::Unsupported(format!("sparse matmul: k = {k}")));
        }
        let mut start = Vec::with_capacity(n + 1);
        let (mut rows, mut vals) = (Vec::new(), Vec::new());
        start.push(0);
        for j in 0..n {
            for r in 0..k {
                let v = b.data[r * b.rs + j * b.cs];
                if v != 0.0 {
                    rows.push(r as u32);
                    vals.push(v);
                }
            }
            let end = u32::try_from(rows.len())
                .map_err(|_| Error::Unsupported("sparse matmul: more than 2^32 nonzeros".into()))?;
            start.push(end);
        }
        Ok(SparseB {
            k,
            n,
            start,
            rows,
            vals,
        })
    }
    pub fn nnz(&self) -> usize {
        self.vals.len()
    }
    /// Fraction of nonzero weights.
    pub fn density(&self) -> f64 {
        density_of(self.nnz(), self.k * self.n)
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.start.capacity() + self.rows.capacity() + self.vals.capacity())
    }
    fn col(&self, j: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.start[j] as usize, self.start[j + 1] as usize);
        (&self.rows[s..e], &self.vals[s..e])
    }
}

fn density_of(nnz: usize, total: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        nnz as f64 / total as f64
    }
}

/// Fraction of nonzeros in `w`.
pub fn density(w: &[f32]) -> f64 {
    density_of(w.iter().filter(|&&v| v != 0.0).count(), w.len())
}

/// Densities (fraction of nonzero weights) at or below which the sparse
/// kernel beats the dense path MatMul takes, in three regimes of `M` (rows
/// of A) that follow the dense path's own: one row; up to 48 rows
/// (sgemm reads the weight in place); more (sgemm on the weight packed
/// once, its fastest case). Chosen a little below the measured crossover,
/// on the side of the dense kernel when a shape disagrees.
///
/// Measured with `cargo run --release -p morsel-runtime --example
/// sparse_crossover` (one thread; each cell the median of 15 interleaved
/// rounds; AMD EPYC Zen 3, AVX2+FMA, 2 shared and noisy cores, so the dense
/// column varies by up to 2× between rows that should agree):
///
/// ```text
/// | W (K×N) | M | sparsity | dense µs | sparse µs | sparse/dense |
/// |---|---|---|---|---|---|
/// | 384×1536 | 1 | 50% | 213.7 | 188.3 | 0.88 |
/// | 384×1536 | 1 | 70% | 133.6 | 123.1 | 0.92 |
/// | 384×1536 | 1 | 80% | 130.0 | 83.9 | 0.64 |
/// | 384×1536 | 1 | 90% | 132.1 | 43.4 | 0.33 |
/// | 384×1536 | 1 | 95% | 122.5 | 23.3 | 0.19 |
/// | 384×1536 | 8 | 50% | 310.3 | 280.1 | 0.90 |
/// | 384×1536 | 8 | 70% | 268.7 | 170.1 | 0.63 |
/// | 384×1536 | 8 | 80% | 262.1 | 127.1 | 0.48 |
/// | 384×1536 | 8 | 90% | 259.3 | 74.2 | 0.29 |
/// | 384×1536 | 8 | 95% | 261.1 | 44.9 | 0.17 |
/// | 384×1536 | 32 | 50% | 1180.0 | 866.2 | 0.73 |
/// | 384×1536 | 32 | 70% | 951.1 | 472.6 | 0.50 |
/// | 384×1536 | 32 | 80% | 840.2 | 298.4 | 0.36 |
/// | 384×1536 | 32 | 90% | 772.6 | 170.5 | 0.22 |
/// | 384×1536 | 32 | 95% | 702.3 | 116.1 | 0.17 |
/// | 384×1536 | 128 | 50% | 2860.5 | 3581.6 | 1.25 |
/// | 384×1536 | 128 | 70% | 2600.3 | 1881.2 | 0.72 |
/// | 384×1536 | 128 | 80% | 2478.3 | 1243.4 | 0.50 |
/// | 384×1536 | 128 | 90% | 2498.3 | 693.9 | 0.28 |
/// | 384×1536 | 128 | 95% | 2485.6 | 543.0 | 0.22 |
/// | 1536×384 | 1 | 50% | 186.5 | 181.2 | 0.97 |
/// | 1536×384 | 1 | 70% | 126.0 | 115.1 | 0.91 |
/// | 1536×384 | 1 | 80% | 120.7 | 80.2 | 0.66 |
/// | 1536×384 | 1 | 90% | 122.2 | 38.2 | 0.31 |
/// | 1536×384 | 1 | 95% | 122.2 | 21.2 | 0.17 |
/// | 1536×384 | 8 | 50% | 332.4 | 308.0 | 0.93 |
/// | 1536×384 | 8 | 70% | 266.1 | 218.4 | 0.82 |
/// | 1536×384 | 8 | 80% | 242.9 | 118.7 | 0.49 |
/// | 1536×384 | 8 | 90% | 240.3 | 65.0 | 0.27 |
/// | 1536×384 | 8 | 95% | 236.6 | 41.6 | 0.18 |
/// | 1536×384 | 32 | 50% | 1167.0 | 1454.8 | 1.25 |
/// | 1536×384 | 32 | 70% | 1135.9 | 854.9 | 0.75 |
/// | 1536×384 | 32 | 80% | 1018.1 | 498.3 | 0.49 |
/// | 1536×384 | 32 | 90% | 695.0 | 267.3 | 0.38 |
/// | 1536×384 | 32 | 95% | 658.3 | 203.7 | 0.31 |
/// | 1536×384 | 128 | 50% | 2420.6 | 5762.0 | 2.38 |
/// | 1536×384 | 128 | 70% | 2488.4 | 3523.7 | 1.42 |
/// | 1536×384 | 128 | 80% | 2394.7 | 2138.9 | 0.89 |
/// | 1536×384 | 128 | 90% | 2383.6 | 1097.0 | 0.46 |
/// | 1536×384 | 128 | 95% | 2632.3 | 888.1 | 0.34 |
/// ```
///
/// Sparse wins from 80% sparsity everywhere, from 70% for 8 and 32 rows;
/// at 70% with one row it is a 0.9 ratio (marginal), and at 128 rows it
/// loses on 1536×384 (the transposed 32-row block of A, K×32 floats, no
/// longer fits L1).
pub const DENSITY_MAX_ONE_ROW: f64 = 0.25;
/// See [`DENSITY_MAX_ONE_ROW`]: 2 to 48 rows.
pub const DENSITY_MAX_FEW_ROWS: f64 = 0.30;
/// See [`DENSITY_MAX_ONE_ROW`]: more than 48 rows.
pub const DENSITY_MAX_MANY_ROWS: f64 = 0.20;
/// Rows up to which the dense path reads a constant weight in place
/// (`sgemm::MR × sgemm::IN_PLACE_MAX_PANELS`, as MatMul decides).
const FEW_ROWS: usize = super::sgemm::MR * super::sgemm::IN_PLACE_MAX_PANELS;

/// Is the sparse kernel expected to be faster than the dense one for
/// `rows` rows of A at this weight density?
pub fn sparse_pays(rows: usize, density: f64) -> bool {
    let max = if rows <= 1 {
        DENSITY_MAX_ONE_ROW
    } else if rows <= FEW_ROWS {
        DENSITY_MAX_FEW_ROWS
    } else {
        DENSITY_MAX_MANY_ROWS
    };
    density <= max
}

/// The highest density any `M` takes the sparse kernel at (whether a
/// [`SparseB`] is worth building at all).
pub fn density_max() -> f64 {
    DENSITY_MAX_ONE_ROW
        .max(DENSITY_MAX_FEW_ROWS)
        .max(DENSITY_MAX_MANY_ROWS)
}

// ---------------------------------------------------------------- loops

/// `x·y + acc`, fused or not (a fused multiply-add without FMA hardware
/// would be a slow library call).
trait Madd {
    fn madd(x: f32, y: f32, acc: f32) -> f32;
}
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
struct Fused;
impl Madd for Fused {
    #[inline(always)]
    fn madd(x: f32, y: f32, acc: f32) -> f32 {
        x.mul_add(y, acc)
    }
}
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
struct Split;
impl Madd for Split {
    #[inline(always)]
    fn madd(x: f32, y: f32, acc: f32) -> f32 {
        x * y + acc
    }
}
/// What the portable copy uses: NEON always has FMA.
#[cfg(target_arch = "aarch64")]
type Portable = Fused;
#[cfg(not(target_arch = "aarch64"))]
type Portable = Split;

/// `C` shared by threads that write disjoint column ranges.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each thread writes only its own columns of C (see `matmul`), and
// C outlives the parts (`par::run` returns when all are done).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// One call's operands (checked by [`matmul`]).
struct Job<'a> {
    a: Mat<'a>,
    b: &'a SparseB,
    ldc: usize,
    bias: Option<&'a [f32]>,
    epi: Option<Epilogue<'a>>,
}

/// One row: `c[j] = bias[j] + Σ v·a[k]` for columns `j0..j1`.
#[inline(always)]
fn one_row<F: Madd>(job: &Job<'_>, a: &[f32], c: &mut [f32], j0: usize, j1: usize) {
    for (j, out) in (j0..j1).zip(c.iter_mut()) {
        let (rows, vals) = job.b.col(j);
        if a.len() < job.b.k {
            return; // cannot happen: `run_cols` passes k values
        }
        // SAFETY: row indices are below k (by construction of SparseB) and
        // `a` has at least k values (just checked).
        let at = |r: u32| unsafe { *a.get_unchecked(r as usize) };
        let mut s = [0f32; 4];
        let (rq, vq) = (rows.chunks_exact(4), vals.chunks_exact(4));
        let (rr, vr) = (rq.remainder(), vq.remainder());
        for (r4, v4) in rq.zip(vq) {
            for t in 0..4 {
                s[t] = F::madd(v4[t], at(r4[t]), s[t]);
            }
        }
        for (&r, &v) in rr.iter().zip(vr) {
            s[0] = F::madd(v, at(r), s[0]);
        }
        let b = job.bias.map_or(0.0, |b| b[j]);
        *out = b + ((s[0] + s[1]) + (s[2] + s[3]));
    }
}

/// Columns per output tile of the blocked loop: each column's `MB` sums go
/// to a small tile first, then whole tile rows to C (stores straight to C
/// would hit `MB` rows at a large stride per column, which thrash L1 sets
/// when the row stride is a multiple of 2 KiB).
const CG: usize = 16;

/// `MB` rows (`at` = their transpose, `k × MB`, zero-padded) times columns
/// `j0..j1`; `U` interleaved sets of sums. Row `i` of the result goes to
/// `c + i·ldc + j`, for `i < mb`.
///
/// # Safety
/// `c` has `mb` rows of `j1` writable floats at stride `ldc`, written by no
/// one else during the call; `at` has `k·MB` floats, and every row index of
/// `job.b` is below `k` (true by construction of [`SparseB`]).
#[inline(always)]
unsafe fn block<F: Madd, const MB: usize, const U: usize>(
    job: &Job<'_>,
    at: &[f32],
    mb: usize,
    c: *mut f32,
    j0: usize,
    j1: usize,
) {
    debug_assert!(at.len() >= job.b.k * MB);
    // SAFETY: r < k, so r·MB + MB ≤ at.len() (the caller's guarantee).
    let row = |r: u32| unsafe { &*(at.as_ptr().add(r as usize * MB) as *const [f32; MB]) };
    let mut tile = [[0f32; CG]; MB];
    let mut g0 = j0;
    while g0 < j1 {
        let g1 = j1.min(g0 + CG);
        for j in g0..g1 {
            let (rows, vals) = job.b.col(j);
            let mut acc = [[0f32; MB]; U];
            let (rq, vq) = (rows.chunks_exact(U), vals.chunks_exact(U));
            let (rr, vr) = (rq.remainder(), vq.remainder());
            for (ru, vu) in rq.zip(vq) {
                for u in 0..U {
                    let src = row(ru[u]);
                    for (o, &x) in acc[u].iter_mut().zip(src) {
                        *o = F::madd(vu[u], x, *o);
                    }
                }
            }
            for (&r, &v) in rr.iter().zip(vr) {
                for (o, &x) in acc[0].iter_mut().zip(row(r)) {
                    *o = F::madd(v, x, *o);
                }
            }
            let b = job.bias.map_or(0.0, |b| b[j]);
            for (i, t) in tile.iter_mut().enumerate() {
                let mut s = acc[0][i];
                for set in &acc[1..] {
                    s += set[i];
                }
                t[j - g0] = b + s;
            }
        }
        for (i, t) in tile.iter().enumerate().take(mb) {
            // SAFETY: row i < mb, columns g0..g1 ≤ j1: the caller's range.
            let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * job.ldc + g0), g1 - g0) };
            dst.copy_from_slice(&t[..g1 - g0]);
        }
        g0 = g1;
    }
}

/// Copy rows `m0..m0+mb` of A transposed into `at` (`k × MB`, padded).
fn transpose<const MB: usize>(a: &Mat<'_>, m0: usize, mb: usize, at: &mut [f32]) {
    for (kk, dst) in at.chunks_exact_mut(MB).take(a.cols).enumerate() {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i < mb {
                a.data[(m0 + i) * a.rs + kk * a.cs]
            } else {
                0.0
            };
        }
    }
}

/// Columns `j0..j1` of the whole product, then the epilogue on them.
///
/// # Safety
/// `out` holds `m` rows of `n` floats at stride `ldc`; columns `j0..j1`
/// are written by this call only.
#[inline(always)]
unsafe fn run_cols<F: Madd>(
    job: &Job<'_>,
    out: OutPtr,
    j0: usize,
    j1: usize,
    scratch: &mut Vec<f32>,
) {
    let (m, k) = (job.a.rows, job.a.cols);
    let rows_of = |r: usize| {
        // SAFETY: row r < m, columns j0..j1 < n ≤ ldc: inside C.
        unsafe { std::slice::from_raw_parts_mut(out.0.add(r * job.ldc + j0), j1 - j0) }
    };
    if m == 1 {
        let a: &[f32] = if job.a.cs == 1 {
            &job.a.data[..k] // k values: `one_row` relies on it
        } else {
            scratch.clear();
            scratch.extend((0..k).map(|kk| job.a.data[kk * job.a.cs]));
            scratch
        };
        let c = rows_of(0);
        one_row::<F>(job, a, c, j0, j1);
        if let Some(e) = job.epi {
            e(c);
        }
        return;
    }
    const BIG: usize = 32;
    const SMALL: usize = 8;
    if scratch.len() < k * BIG {
        scratch.resize(k * BIG, 0.0);
    }
    let mut m0 = 0;
    while m0 < m {
        let mb;
        let c = out.0.wrapping_add(m0 * job.ldc);
        if m - m0 >= BIG {
            mb = BIG;
            transpose::<BIG>(&job.a, m0, mb, scratch);
            // SAFETY: rows m0..m0+32 of C, columns j0..j1 (ours).
            unsafe { block::<F, BIG, 2>(job, scratch, mb, c, j0, j1) };
        } else {
            mb = SMALL.min(m - m0);
            transpose::<SMALL>(&job.a, m0, mb, scratch);
            // SAFETY: rows m0..m0+mb of C, columns j0..j1 (ours).
            unsafe { block::<F, SMALL, 2>(job, scratch, mb, c, j0, j1) };
        }
        if let Some(e) = job.epi {
            for r in m0..m0 + mb {
                e(rows_of(r));
            }
        }
        m0 += mb;
    }
}

/// # Safety
/// As [`run_cols`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_cols_avx2(job: &Job<'_>, out: OutPtr, j0: usize, j1: usize, scratch: &mut Vec<f32>) {
    // SAFETY: forwarded from the caller.
    unsafe { run_cols::<Fused>(job, out, j0, j1, scratch) }
}

/// # Safety
/// As [`run_cols`].
unsafe fn run_best(job: &Job<'_>, out: OutPtr, j0: usize, j1: usize, portable: bool) {
    super::with_scratch(|scratch| {
        #[cfg(target_arch = "x86_64")]
        if !portable && super::cpu::avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA; the rest is the caller's.
            return unsafe { run_cols_avx2(job, out, j0, j1, scratch) };
        }
        let _ = portable;
        // SAFETY: the caller's guarantee.
        unsafe { run_cols::<Portable>(job, out, j0, j1, scratch) }
    })
}

/// `C = A·B (+ bias per column)`, then `epi` on every finished piece of an
/// output row. C is row-major with row stride `ldc`.
pub fn matmul(
    a: Mat<'_>,
    b: &SparseB,
    c: &mut [f32],
    ldc: usize,
    bias: Option<&[f32]>,
    epi: Option<Epilogue<'_>>,
    threads: usize,
) -> Result<()> {
    matmul_with(a, b, c, ldc, bias, epi, threads, false)
}

#[allow(clippy::too_many_arguments)]
fn matmul_with(
    a: Mat<'_>,
    b: &SparseB,
    c: &mut [f32],
    ldc: usize,
    bias: Option<&[f32]>,
    epi: Option<Epilogue<'_>>,
    threads: usize,
    portable: bool,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.n);
    let bad = |what: &str| Err(Error::Graph(format!("sparse matmul {m}×{k}×{n}: {what}")));
    if k != b.k {
        return bad(&format!("B has {} rows", b.k));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if !a.fits() {
        return bad("A view out of bounds");
    }
    if ldc < n || c.len() < (m - 1) * ldc + n {
        return bad("output buffer too small");
    }
    if bias.is_some_and(|v| v.len() < n) {
        return bad("bias too short");
    }
    let job = Job {
        a,
        b,
        ldc,
        bias,
        epi,
    };
    let out = OutPtr(c.as_mut_ptr());
    // Threads take column ranges; each needs enough work to pay for itself.
    let work = m.saturating_mul(b.nnz().max(n));
    let parts = if work < 1 << 16 {
        1
    } else {
        threads.clamp(1, n.div_ceil(16))
    };
    if parts > 1 {
        crate::par::run(threads, parts, |t| {
            let (j0, j1) = (n * t / parts, n * (t + 1) / parts);
            // SAFETY: C holds m×n at stride ldc (checked above); the
            // column ranges of different parts do not overlap.
            unsafe { run_best(&job, out, j0, j1, portable) }
        });
        return Ok(());
    }
    // SAFETY: C holds m×n at stride ldc (checked above); one thread.
    unsafe { run_best(&job, out, 0, n, portable) };
    Ok(())
}

// ---------------------------------------------------------------- conv

/// Positions per block of [`conv_rows`].
const PB: usize = 32;

/// What [`conv_rows`] reads: `W` as a [`SparseB`] of `Wᵀ` (column `j` =
/// output channel `j`'s nonzeros), `X` `k` rows of `np` positions.
struct ConvJob<'a> {
    w: &'a SparseB,
    x: &'a [f32],
    np: usize,
    bias: Option<&'a [f32]>,
}

/// `Y[j, p] = bias[j] + Σ_k W[j, k]·X[k, p]` for output channels `j0..j1`
/// (`Y` holds their rows of `np` positions). The positions of a channel sit
/// together in NCHW (or in im2col rows), so no transpose is needed (unlike
/// [`matmul`]'s A): blocks of 32 positions, each output channel's 32 sums
/// in registers (two interleaved sets), one vector multiply-add per 8
/// positions per nonzero.
#[inline(always)]
fn conv_rows<F: Madd>(job: &ConvJob<'_>, y: &mut [f32], j0: usize, j1: usize) {
    let ConvJob { w, x, np, bias } = *job;
    // Callers pass k rows of np values; p0 + PB ≤ np.
    let row = |r: u32, p0: usize| &x[r as usize * np + p0..][..PB];
    let mut p0 = 0;
    while p0 + PB <= np {
        for j in j0..j1 {
            let (rows, vals) = w.col(j);
            let mut acc = [[0f32; PB]; 2];
            let (rq, vq) = (rows.chunks_exact(2), vals.chunks_exact(2));
            let (rr, vr) = (rq.remainder(), vq.remainder());
            for (r2, v2) in rq.zip(vq) {
                for u in 0..2 {
                    for (o, &xv) in acc[u].iter_mut().zip(row(r2[u], p0)) {
                        *o = F::madd(v2[u], xv, *o);
                    }
                }
            }
            for (&r, &v) in rr.iter().zip(vr) {
                for (o, &xv) in acc[0].iter_mut().zip(row(r, p0)) {
                    *o = F::madd(v, xv, *o);
                }
            }
            let b = bias.map_or(0.0, |b| b[j]);
            let out = &mut y[(j - j0) * np + p0..][..PB];
            for ((o, &a0), &a1) in out.iter_mut().zip(&acc[0]).zip(&acc[1]) {
                *o = b + (a0 + a1);
            }
        }
        p0 += PB;
    }
    // The last positions one at a time.
    for p in p0..np {
        for j in j0..j1 {
            let (rows, vals) = w.col(j);
            let mut s = 0f32;
            for (&r, &v) in rows.iter().zip(vals) {
                s = F::madd(v, x[r as usize * np + p], s);
            }
            y[(j - j0) * np + p] = bias.map_or(0.0, |b| b[j]) + s;
        }
    }
}

/// [`conv_rows`] with AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_rows_avx2(job: &ConvJob<'_>, y: &mut [f32], j0: usize, j1: usize) {
    conv_rows::<Fused>(job, y, j0, j1)
}

/// A pruned convolution's product for one image (and group): `Y[m, np] =
/// W·X (+ bias per output channel)`, `W` the `m × k` weight as a
/// [`SparseB`] of `Wᵀ` (`k × m`), `X` `k × np` row-major (the input
/// channels of a 1×1 conv, or im2col rows), `Y` `m × np` row-major, then
/// `epi` on every output channel's row. Threads split the output channels.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    w: &SparseB,
    x: &[f32],
    np: usize,
    y: &mut [f32],
    bias: Option<&[f32]>,
    epi: Option<Epilogue<'_>>,
    threads: usize,
) -> Result<()> {
    let (k, m) = (w.k, w.n);
    if x.len() < k * np || y.len() < m * np || bias.is_some_and(|b| b.len() < m) {
        return Err(Error::Graph(format!(
            "sparse conv {m}×{k}×{np}: X has {}, Y {} values",
            x.len(),
            y.len()
        )));
    }
    if m == 0 || np == 0 {
        return Ok(());
    }
    let y = &mut y[..m * np];
    let job = ConvJob { w, x, np, bias };
    let run = |j0: usize, ys: &mut [f32]| {
        let j1 = j0 + ys.len() / np;
        #[cfg(target_arch = "x86_64")]
        if super::cpu::avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { conv_rows_avx2(&job, ys, j0, j1) };
        } else {
            conv_rows::<Portable>(&job, ys, j0, j1);
        }
        #[cfg(not(target_arch = "x86_64"))]
        conv_rows::<Portable>(&job, ys, j0, j1);
        if let Some(e) = epi {
            ys.chunks_exact_mut(np).for_each(e);
        }
    };
    let work = np.saturating_mul(w.nnz().max(m));
    let parts = if work < 1 << 16 {
        1
    } else {
        threads.clamp(1, m)
    };
    let per = m.div_ceil(parts);
    crate::par::chunks_mut(parts, y, per * np, |t, ys| run(t * per, ys));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(seed: &mut u32) -> f32 {
        *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }

    #[test]
    fn conv_matches_the_dense_product() {
        let mut seed = 11u32;
        for &(m, k, np) in &[
            (1, 1, 1),
            (3, 5, 31),
            (8, 9, 32),
            (24, 96, 100),
            (5, 144, 64),
            (7, 3, 97),
        ] {
            for density in [0.05, 0.3, 1.0] {
                let w: Vec<f32> = (0..m * k)
                    .map(|_| {
                        let v = rnd(&mut seed);
                        if (v + 0.5) < density as f32 { v } else { 0.0 }
                    })
                    .collect();
                let x: Vec<f32> = (0..k * np).map(|_| rnd(&mut seed)).collect();
                let bias: Vec<f32> = (0..m).map(|_| rnd(&mut seed)).collect();
                // Wᵀ as k × m
                let sb = SparseB::new(Mat::rows(&w, m, k).t()).unwrap();
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; m * np];
                    conv(&sb, &x, np, &mut y, Some(&bias), None, threads).unwrap();
                    for j in 0..m {
                        for p in 0..np {
                            let want: f64 = bias[j] as f64
                                + (0..k)
                                    .map(|kk| w[j * k + kk] as f64 * x[kk * np + p] as f64)
                                    .sum::<f64>();
                            let got = y[j * np + p] as f64;
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{m}x{k}x{np} d{density} ({j},{p}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        let sb = SparseB::new(Mat::rows(&[1.0; 6], 2, 3).t()).unwrap();
        assert!(conv(&sb, &[0.0; 5], 2, &mut [0.0; 4], None, None, 1).is_err());
    }

    #[test]
    fn matches_naive_on_odd_shapes_densities_biases_and_threads() {
        let mut seed = 3u32;
        let shapes = [
            (1, 1, 1),
            (1, 37, 19),
            (2, 5, 3),
            (7, 64, 33),
            (8, 17, 40),
            (9, 100, 7),
            (31, 13, 5),
            (32, 50, 17),
            (33, 9, 70),
            (64, 31, 65),
            (130, 97, 41),
        ];
        for &(m, k, n) in &shapes {
            for density in [0.0, 0.05, 0.3, 0.7, 1.0] {
                let av: Vec<f32> = (0..m * k).map(|_| rnd(&mut seed)).collect();
                let mut wv: Vec<f32> = (0..k * n)
                    .map(|_| {
                        let keep = rnd(&mut seed) + 0.5 < density;
                        if keep { rnd(&mut seed) } else { 0.0 }
                    })
                    .collect();
                // An empty column and a full one.
                if n > 2 {
                    (0..k).for_each(|r| wv[r * n + 1] = 0.0);
                    (0..k).for_each(|r| wv[r * n + 2] = 0.25 + r as f32 * 1e-3);
                }
                let bias: Vec<f32> = (0..n).map(|_| rnd(&mut seed)).collect();
                let w = SparseB::new(Mat::rows(&wv, k, n)).unwrap();
                let want_nnz = wv.iter().filter(|&&v| v != 0.0).count();
                assert_eq!(w.nnz(), want_nnz);
                for with_bias in [false, true] {
                    let mut want = vec![0f64; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            let mut s = if with_bias { bias[j] as f64 } else { 0.0 };
                            for p in 0..k {
                                s += av[i * k + p] as f64 * wv[p * n + j] as f64;
                            }
                            want[i * n + j] = s.max(0.0);
                        }
                    }
                    let relu = |s: &mut [f32]| s.iter_mut().for_each(|x| *x = x.max(0.0));
                    for (portable, threads) in [(true, 1), (false, 1), (false, 2), (true, 3)] {
                        let ldc = n + 2;
                        let mut c = vec![f32::NAN; (m - 1) * ldc + n];
                        matmul_with(
                            Mat::rows(&av, m, k),
                            &w,
                            &mut c,
                            ldc,
                            with_bias.then_some(&bias[..]),
                            Some(&relu),
                            threads,
                            portable,
                        )
                        .unwrap();
                        for i in 0..m {
                            for j in 0..n {
                                let (g, e) = (c[i * ldc + j] as f64, want[i * n + j]);
                                assert!(
                                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                                    "{m}x{k}x{n} density {density} bias {with_bias} \
                                     portable {portable} threads {threads} [{i},{j}]: {g} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn transposed_a_and_bad_operands() {
        let (m, k, n) = (3, 4, 2);
        let at: Vec<f32> = (0..k * m).map(|i| i as f32).collect(); // k × m
        let wv = [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, -1.0, 0.0];
        let w = SparseB::new(Mat::rows(&wv, k, n)).unwrap();
        assert_eq!((w.nnz(), w.density()), (3, 3.0 / 8.0));
        let a = Mat::rows(&at, k, m).t();
        let mut c = vec![0f32; m * n];
        matmul(a, &w, &mut c, n, None, None, 1).unwrap();
        for i in 0..m {
            // A[i, kk] = at[kk·m + i]
            let ai = |kk: usize| at[kk * m + i];
            assert_eq!(c[i * n], ai(0) - ai(3));
            assert_eq!(c[i * n + 1], 2.0 * ai(1));
        }
        let one = Mat { rows: 1, ..a };
        matmul(one, &w, &mut c, n, None, None, 1).unwrap();
        assert_eq!(c[..2], [at[0] - at[9], 2.0 * at[3]]);
        assert!(matmul(a, &w, &mut c[..5], n, None, None, 1).is_err());
        assert!(matmul(a, &w, &mut c, n, Some(&[1.0]), None, 1).is_err());
        let short = Mat::rows(&at[..4], 1, 4);
        let w3 = SparseB::new(Mat::rows(&wv[..6], 3, 2)).unwrap();
        assert!(matmul(short, &w3, &mut c, n, None, None, 1).is_err());
        assert!(sparse_pays(1, 0.0) && !sparse_pays(1000, 1.0));
        assert!(sparse_pays(8, 0.3) && !sparse_pays(49, 0.3) && sparse_pays(49, 0.2));
        assert_eq!(density_max(), 0.3);
    }
}
