//! f32 matrix multiply on packed panels, with bias and a fused epilogue.
//!
//! Layout (the Goto/BLIS scheme): the left operand is packed in panels of
//! [`MR`] rows, k-major (for each k, `MR` consecutive values; rows past the
//! end are zeros); the right operand in panels of [`NR`] columns (for each k,
//! `NR` consecutive values). The micro-kernel keeps an `MR×NR` tile of C in
//! registers over a [`KC`]-long slice of one panel of each. Constant weights
//! are packed once per model ([`PackedB`], [`PackedA`]); operands known only
//! at run time are packed per call into scratch: O(MK + KN) copying against
//! O(MNK) arithmetic.
//!
//! The bias is loaded into the accumulators before the first k-slice, so it
//! costs nothing; the epilogue (an activation) runs on each finished tile
//! while it is still in L1.
//!
//! Kernels: on x86-64 (picked at run time) AVX-512, which takes two
//! neighbouring column panels at once (an `MR×2·NR` tile: twelve zmm
//! accumulators, where one panel's six left the FMA units half idle), or
//! AVX2+FMA; a simd128 tile for wasm (with relaxed multiply-adds where the
//! engine fuses them); and a portable one that LLVM vectorises for NEON.
//! Every x86 and wasm tile runs each element's multiply-adds in the same k
//! order, so those that fuse give the same bits, and so do those that
//! do not. Tests compare them with a
//! plain triple loop, and the two-panel tile with two one-panel tiles.

use super::Mat;
use crate::tensor::AlignedBuf;
use crate::{Error, Result};

/// Rows of a micro-tile.
pub const MR: usize = 6;
/// Columns of a micro-tile.
pub const NR: usize = 16;
/// k-slice: one B micro-panel (KC×NR×4 = 16 KiB) stays in L1.
const KC: usize = 256;
/// Rows of A per block: MC×KC×4 = 144 KiB of A stays in L2 (and a
/// 128-token transformer layer is one block, so B streams once).
const MC: usize = 144;

/// Whether this CPU's tile fuses its multiply-adds (AVX2+FMA, AVX-512, the
/// wasm relaxed-SIMD tile where the engine fuses): one rounding per k step.
/// Fused or not, each element of C is its bias (or zero, or C) plus the
/// products added one at a time in k order.
pub fn fused() -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512f() || super::cpu::avx2_fma() {
        return true;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    if super::cpu::relaxed_madd_fused() {
        return true;
    }
    false
}

/// Floats needed to pack a `rows × k` left operand.
pub fn packed_a_len(rows: usize, k: usize) -> usize {
    rows.div_ceil(MR) * MR * k
}

/// Floats needed to pack a `k × cols` right operand.
pub fn packed_b_len(k: usize, cols: usize) -> usize {
    cols.div_ceil(NR) * NR * k
}

/// A right operand (`k × n`) packed once, e.g. a MatMul weight.
#[derive(Debug, Clone)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    data: AlignedBuf,
}

impl PackedB {
    pub fn new(b: Mat<'_>) -> Result<PackedB> {
        let mut data = AlignedBuf::zeroed(packed_b_len(b.rows, b.cols) * 4);
        pack_b(b, data.as_f32_mut())?;
        Ok(PackedB {
            k: b.rows,
            n: b.cols,
            data,
        })
    }
    pub fn bytes(&self) -> usize {
        self.data.capacity_bytes()
    }
}

/// A left operand (`m × k`) packed once, e.g. a Conv weight.
#[derive(Debug, Clone)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    data: AlignedBuf,
}

impl PackedA {
    pub fn new(a: Mat<'_>) -> Result<PackedA> {
        let mut data = AlignedBuf::zeroed(packed_a_len(a.rows, a.cols) * 4);
        pack_a(a, data.as_f32_mut())?;
        Ok(PackedA {
            m: a.rows,
            k: a.cols,
            data,
        })
    }
    pub fn bytes(&self) -> usize {
        self.data.capacity_bytes()
    }
}

fn check_view(m: &Mat<'_>, what: &str) -> Result<()> {
    if m.fits() {
        Ok(())
    } else {
        Err(Error::Graph(format!(
            "matmul: {what} view {}×{} (strides {}, {}) is out of bounds of its {} values",
            m.rows,
            m.cols,
            m.rs,
            m.cs,
            m.data.len()
        )))
    }
}

/// Pack a `rows × k` matrix into `MR`-row panels.
pub fn pack_a(a: Mat<'_>, dst: &mut [f32]) -> Result<()> {
    check_view(&a, "A")?;
    let (m, k) = (a.rows, a.cols);
    let dst = dst
        .get_mut(..packed_a_len(m, k))
        .ok_or_else(|| Error::Graph("matmul: scratch for packed A is too small".into()))?;
    for (p, panel) in dst.chunks_exact_mut(MR * k.max(1)).enumerate() {
        let i0 = p * MR;
        let rows = MR.min(m - i0);
        if k == 0 {
            break;
        }
        if a.cs == 1 {
            for r in 0..rows {
                let src = &a.data[(i0 + r) * a.rs..][..k];
                for (kk, &v) in src.iter().enumerate() {
                    panel[kk * MR + r] = v;
                }
            }
            if rows < MR {
                for kk in 0..k {
                    panel[kk * MR + rows..(kk + 1) * MR].fill(0.0);
                }
            }
        } else {
            for kk in 0..k {
                let d = &mut panel[kk * MR..(kk + 1) * MR];
                for (r, v) in d.iter_mut().enumerate() {
                    *v = if r < rows {
                        a.data[(i0 + r) * a.rs + kk * a.cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
    Ok(())
}

/// Pack a `k × cols` matrix into `NR`-column panels.
pub fn pack_b(b: Mat<'_>, dst: &mut [f32]) -> Result<()> {
    check_view(&b, "B")?;
    let (k, n) = (b.rows, b.cols);
    let dst = dst
        .get_mut(..packed_b_len(k, n))
        .ok_or_else(|| Error::Graph("matmul: scratch for packed B is too small".into()))?;
    if k == 0 {
        return Ok(());
    }
    let panels = n.div_ceil(NR);
    if b.cs == 1 {
        // Row-major source: read each row once, in order, scattering its
        // NR-wide pieces to their panels.
        for kk in 0..k {
            let src = &b.data[kk * b.rs..][..n];
            for p in 0..panels {
                let (j0, cols) = (p * NR, NR.min(n - p * NR));
                let d = &mut dst[(p * k + kk) * NR..][..NR];
                d[..cols].copy_from_slice(&src[j0..j0 + cols]);
                d[cols..].fill(0.0);
            }
        }
        return Ok(());
    }
    // Column-contiguous (transposed) source: read each column in order.
    for (p, panel) in dst.chunks_exact_mut(NR * k).enumerate() {
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        for j in 0..NR {
            if j < cols {
                let base = (j0 + j) * b.cs;
                for kk in 0..k {
                    panel[kk * NR + j] = b.data[base + kk * b.rs];
                }
            } else {
                for kk in 0..k {
                    panel[kk * NR + j] = 0.0;
                }
            }
        }
    }
    Ok(())
}

/// A bias added to every product: per output column (MatMul, Gemm) or per
/// output row (Conv's per-channel bias, with the weight on the left).
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    None,
    /// C already holds the values to add to (accumulate onto it).
    Acc,
    Col(&'a [f32]),
    Row(&'a [f32]),
}

/// Runs on each finished piece of an output row (in place, in L1).
pub type Epilogue<'e> = &'e (dyn Fn(&mut [f32]) + Sync);

/// What the micro-kernel starts its accumulators from.
#[derive(Clone, Copy)]
// The portable kernel reads biases from the caller's arrays, not the pointers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Init {
    Zero,
    /// The current contents of C (a later k-slice).
    Load,
    /// `NR` column biases.
    Col(*const f32),
    /// `MR` row biases.
    Row(*const f32),
}

/// One `R×NR` tile (`R ≤ MR`; a short last row panel does only its own
/// rows): `C = init + Σ_k A[r, k]·B[k]`, `C` at `c` with row stride `ldc`;
/// `A[r, k]` is at `a + aoff[r] + k·astep`, row `k` of the B panel (`NR`
/// floats) at `b + k·bstep`.
///
/// # Safety
/// Those A and B addresses for `r < R`, `k < kc` are readable;
/// `c` has `R` rows of `NR` writable floats at stride `ldc`; `Init`
/// pointers have `NR` / `R` floats; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const R: usize>(
    kc: usize,
    a: *const f32,
    aoff: &[usize; MR],
    astep: usize,
    b: *const f32,
    bstep: usize,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    use std::arch::x86_64::*;
    // SAFETY: (whole body) every pointer offset stays inside the ranges the
    // caller guarantees above.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        match init {
            Init::Zero => {}
            Init::Load => {
                for (r, row) in acc.iter_mut().enumerate() {
                    row[0] = _mm256_loadu_ps(c.add(r * ldc));
                    row[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
                }
            }
            Init::Col(bias) => {
                let (b0, b1) = (_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8)));
                for row in acc.iter_mut() {
                    *row = [b0, b1];
                }
            }
            Init::Row(bias) => {
                for (r, row) in acc.iter_mut().enumerate() {
                    let v = _mm256_set1_ps(*bias.add(r));
                    *row = [v, v];
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (row, &off) in acc.iter_mut().zip(aoff) {
                let av = _mm256_broadcast_ss(&*a.add(off));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
            a = a.add(astep);
            b = b.add(bstep);
        }
        for (r, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(r * ldc), row[0]);
            _mm256_storeu_ps(c.add(r * ldc + 8), row[1]);
        }
    }
}

/// [`tile_avx2`] on AVX-512: one zmm accumulator per row (the 16 columns),
/// so the per-element sequence of fused multiply-adds is the same and the
/// results are the same bits; half the instructions, and on CPUs with two
/// 512-bit FMA units twice the width per cycle.
///
/// # Safety
/// As [`tile_avx2`], with AVX-512 F instead of AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<const R: usize>(
    kc: usize,
    a: *const f32,
    aoff: &[usize; MR],
    astep: usize,
    b: *const f32,
    bstep: usize,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    use std::arch::x86_64::*;
    // SAFETY: (whole body) every pointer offset stays inside the ranges the
    // caller guarantees above.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); R];
        match init {
            Init::Zero => {}
            Init::Load => {
                for (r, row) in acc.iter_mut().enumerate() {
                    *row = _mm512_loadu_ps(c.add(r * ldc));
                }
            }
            Init::Col(bias) => acc = [_mm512_loadu_ps(bias); R],
            Init::Row(bias) => {
                for (r, row) in acc.iter_mut().enumerate() {
                    *row = _mm512_set1_ps(*bias.add(r));
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let bv = _mm512_loadu_ps(b);
            for (row, &off) in acc.iter_mut().zip(aoff) {
                *row = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(off)), bv, *row);
            }
            a = a.add(astep);
            b = b.add(bstep);
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc), *row);
        }
    }
}

/// Two adjacent column panels at once on AVX-512: an `R × 2·NR` tile, two
/// zmm accumulators per row (twelve for six rows, enough to cover the FMA
/// latency, where six left the units half idle). Each element's fused
/// multiply-adds run in the same k order as in [`tile_avx512`] and
/// [`tile_avx2`], so the bits are the same. Panel 1's row `k` is at `b1 +
/// k·bstep`; `init1` is its init (its biases, or C from column `NR`).
///
/// # Safety
/// As [`tile_avx512`] for each panel; `c` has `R` rows of `2·NR` writable
/// floats at stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512_x2<const R: usize>(
    kc: usize,
    a: *const f32,
    aoff: &[usize; MR],
    astep: usize,
    (b0, b1): (*const f32, *const f32),
    bstep: usize,
    c: *mut f32,
    ldc: usize,
    (init0, init1): (Init, Init),
) {
    use std::arch::x86_64::*;
    // SAFETY: (whole body) every pointer offset stays inside the ranges the
    // caller guarantees above.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for (h, init) in [init0, init1].into_iter().enumerate() {
            match init {
                Init::Zero => {}
                Init::Load => {
                    for (r, row) in acc.iter_mut().enumerate() {
                        row[h] = _mm512_loadu_ps(c.add(r * ldc + h * NR));
                    }
                }
                Init::Col(bias) => {
                    let v = _mm512_loadu_ps(bias);
                    for row in acc.iter_mut() {
                        row[h] = v;
                    }
                }
                Init::Row(bias) => {
                    for (r, row) in acc.iter_mut().enumerate() {
                        row[h] = _mm512_set1_ps(*bias.add(r));
                    }
                }
            }
        }
        let (mut a, mut b0, mut b1) = (a, b0, b1);
        for _ in 0..kc {
            let (v0, v1) = (_mm512_loadu_ps(b0), _mm512_loadu_ps(b1));
            for (row, &off) in acc.iter_mut().zip(aoff) {
                let av = _mm512_set1_ps(*a.add(off));
                row[0] = _mm512_fmadd_ps(av, v0, row[0]);
                row[1] = _mm512_fmadd_ps(av, v1, row[1]);
            }
            a = a.add(astep);
            b0 = b0.add(bstep);
            b1 = b1.add(bstep);
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc), row[0]);
            _mm512_storeu_ps(c.add(r * ldc + NR), row[1]);
        }
    }
}

/// `acc + a·b` on four lanes: one relaxed multiply-add if `FUSED`, else a
/// multiply and an add.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn madd_wasm<const FUSED: bool>(
    a: core::arch::wasm32::v128,
    b: core::arch::wasm32::v128,
    acc: core::arch::wasm32::v128,
) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    #[cfg(target_feature = "relaxed-simd")]
    if FUSED {
        return f32x4_relaxed_madd(a, b, acc);
    }
    f32x4_add(acc, f32x4_mul(a, b))
}

/// The `R × NR` tile for wasm simd128, as `G × 8` blocks of at most 4 rows
/// (two halves of 8 columns, rows 0-3 then 4-5). V8 keeps 15 vector
/// registers for wasm on x64, and LLVM hoists a block's row broadcasts ahead
/// of its multiplies, so a block holds 2G accumulators, 2 B vectors and G
/// broadcasts: 14 for G = 4, where 6 rows at once (19) spilled in the k loop.
/// Multiply then add, each rounded, unless `FUSED`: then one
/// `f32x4.relaxed_madd` per step, which is used only where the engine fuses
/// it ([`super::cpu::relaxed_madd_fused`]): one rounding per step in the
/// same k order, so the bits of `tile_avx2`/`tile_avx512`. Unfused, the bits
/// of the portable tile.
///
/// # Safety
/// As for `tile_avx2`, with simd128 in place of AVX2 and FMA; with `FUSED`,
/// the build has relaxed SIMD.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_simd128<const R: usize, const FUSED: bool>(
    kc: usize,
    a: *const f32,
    aoff: &[usize; MR],
    astep: usize,
    b: *const f32,
    bstep: usize,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    // SAFETY: (whole body) each block is a part of the caller's tile.
    unsafe {
        for h in [0usize, 8] {
            let mut r0 = 0;
            while r0 < R {
                let g = (R - r0).min(4);
                let off = &aoff[r0..r0 + g];
                let init = match init {
                    Init::Col(bias) => Init::Col(bias.add(h)),
                    Init::Row(bias) => Init::Row(bias.add(r0)),
                    other => other,
                };
                let (b, c) = (b.add(h), c.add(r0 * ldc + h));
                match g {
                    4 => block_simd128::<4, FUSED>(kc, a, off, astep, b, bstep, c, ldc, init),
                    3 => block_simd128::<3, FUSED>(kc, a, off, astep, b, bstep, c, ldc, init),
                    2 => block_simd128::<2, FUSED>(kc, a, off, astep, b, bstep, c, ldc, init),
                    _ => block_simd128::<1, FUSED>(kc, a, off, astep, b, bstep, c, ldc, init),
                }
                r0 += g;
            }
        }
    }
}

/// `G` rows × 8 columns of [`tile_simd128`]; `aoff` has `G` row offsets, `b`
/// and `c` point at the block's first column (and `c` at its first row).
///
/// # Safety
/// As for [`tile_simd128`].
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block_simd128<const G: usize, const FUSED: bool>(
    kc: usize,
    a: *const f32,
    aoff: &[usize],
    astep: usize,
    b: *const f32,
    bstep: usize,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    use core::arch::wasm32::*;
    // SAFETY: (whole body) every pointer offset stays inside the ranges the
    // caller guarantees; loads and stores are unaligned.
    unsafe {
        let ld = |p: *const f32| (p as *const v128).read_unaligned();
        let aoff: [usize; G] = std::array::from_fn(|r| aoff[r]);
        let mut acc = [[f32x4_splat(0.0); 2]; G];
        match init {
            Init::Zero => {}
            Init::Load => {
                for (r, row) in acc.iter_mut().enumerate() {
                    *row = [ld(c.add(r * ldc)), ld(c.add(r * ldc + 4))];
                }
            }
            Init::Col(bias) => {
                let v = [ld(bias), ld(bias.add(4))];
                acc.iter_mut().for_each(|row| *row = v);
            }
            Init::Row(bias) => {
                for (r, row) in acc.iter_mut().enumerate() {
                    let v = f32x4_splat(*bias.add(r));
                    *row = [v, v];
                }
            }
        }
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let (b0, b1) = (ld(bp), ld(bp.add(4)));
            for (row, &off) in acc.iter_mut().zip(&aoff) {
                let av = f32x4_splat(*ap.add(off));
                row[0] = madd_wasm::<FUSED>(av, b0, row[0]);
                row[1] = madd_wasm::<FUSED>(av, b1, row[1]);
            }
            ap = ap.add(astep);
            bp = bp.add(bstep);
        }
        for (r, row) in acc.iter().enumerate() {
            (c.add(r * ldc) as *mut v128).write_unaligned(row[0]);
            (c.add(r * ldc + 4) as *mut v128).write_unaligned(row[1]);
        }
    }
}

/// Portable tile: `acc += Σ_k A[r, k]·B[k]` for `kc` steps, `A[r, k]` at
/// `a[aoff[r] + k·astep]`, B's row `k` at `b[k·bstep..]` (vectorised by LLVM).
#[inline]
fn tile_generic(
    kc: usize,
    a: &[f32],
    aoff: &[usize; MR],
    astep: usize,
    (b, bstep): (&[f32], usize),
    acc: &mut [[f32; NR]; MR],
) {
    for kk in 0..kc {
        let bv: &[f32; NR] = b[kk * bstep..][..NR].try_into().unwrap_or(&[0.0; NR]);
        for (row, &off) in acc.iter_mut().zip(aoff) {
            let x = a[off + kk * astep];
            for (o, &y) in row.iter_mut().zip(bv) {
                *o += x * y;
            }
        }
    }
}

/// Where the left operand's rows come from.
#[derive(Clone, Copy)]
enum ASrc<'a> {
    /// Packed `MR`-row panels over the whole k.
    Packed(&'a [f32]),
    /// A strided view, read in place (no packing).
    View(Mat<'a>),
}

/// `C[rows, cols] (row stride ldc)` as a raw pointer shared by threads that
/// write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: threads given an `OutPtr` write disjoint rectangles of C (see
// `matmul`), and C outlives them (`par::run` returns when all are done).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Packs the block `rows k0..k0+kc × columns j0..j0+nc` of a right operand
/// into `dst` as `nc.div_ceil(NR)` panels of `kc×NR` (zero-padded columns).
/// Lets a caller pack straight from its own layout (Conv packs from the
/// image, with no im2col buffer).
pub trait PackRhs: Sync {
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]);
}

impl PackRhs for Mat<'_> {
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let panels = nc.div_ceil(NR);
        if self.cs == 1 {
            let full = nc / NR;
            for kk in 0..kc {
                let src = &self.data[(k0 + kk) * self.rs + j0..][..nc];
                // Whole panels as fixed-size copies (two vector moves, not a
                // memcpy call each).
                for (p, piece) in src.chunks_exact(NR).enumerate() {
                    let d: &mut [f32; NR] = (&mut dst[(p * kc + kk) * NR..][..NR])
                        .try_into()
                        .unwrap_or_else(|_| unreachable!());
                    *d = piece.try_into().unwrap_or_else(|_| unreachable!());
                }
                if full < panels {
                    let cols = nc - full * NR;
                    let d = &mut dst[(full * kc + kk) * NR..][..NR];
                    for (j, v) in d.iter_mut().enumerate() {
                        *v = if j < cols { src[full * NR + j] } else { 0.0 };
                    }
                }
            }
        } else {
            for p in 0..panels {
                let cols = NR.min(nc - p * NR);
                let panel = &mut dst[p * kc * NR..][..kc * NR];
                for j in 0..NR {
                    if j < cols {
                        let base = (j0 + p * NR + j) * self.cs + k0 * self.rs;
                        for kk in 0..kc {
                            panel[kk * NR + j] = self.data[base + kk * self.rs];
                        }
                    } else {
                        for kk in 0..kc {
                            panel[kk * NR + j] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// Columns of B packed per block: KC×NC×4 = 256 KiB stays in L2.
pub const NC: usize = 256;

/// Up to this many row panels, a row-major B is read in place.
pub const IN_PLACE_MAX_PANELS: usize = 8;

/// ... and its row stride is at most this many floats (32 KiB). C rows at
/// least this long are also walked row panel by row panel (see `Job::run`).
pub const IN_PLACE_MAX_ROW: usize = 8192;

/// Floats of scratch one thread needs at most to pack B blocks (a product
/// with fewer than KC rows or NC columns of B needs less).
pub fn rhs_block_len() -> usize {
    KC * NC
}

/// Where the right operand's panels come from.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    /// Whole-k panels: block (k0, panel p) at `(p·k + k0)·NR`.
    Packed(&'a [f32]),
    /// Packed block by block into per-thread scratch.
    Pack(&'a dyn PackRhs),
    /// Row-major, read in place (a partial last panel is packed): for
    /// products with few row panels, where packing costs as much as the
    /// arithmetic it saves.
    InPlace(Mat<'a>),
}

struct Job<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: ASrc<'a>,
    b: BSrc<'a>,
    ldc: usize,
    bias: Bias<'a>,
    epi: Option<Epilogue<'a>>,
}

impl Job<'_> {
    /// Compute row panels `q0..q1` × column panels `p0..p1`, packing B
    /// blocks (if needed) into `scratch` (`min(k, KC)` × the columns of
    /// one block, rounded up to whole panels; `min(k, KC) × NR` for the
    /// partial last panel of an in-place B).
    ///
    /// # Safety
    /// `c` points at C with at least `(m-1)·ldc + n` floats, and no other
    /// thread touches this rectangle.
    unsafe fn run(
        &self,
        c: OutPtr,
        (q0, q1): (usize, usize),
        (p0, p1): (usize, usize),
        scratch: &mut [f32],
    ) {
        let Job { m, n, k, .. } = *self;
        #[cfg(target_arch = "x86_64")]
        let pair = super::cpu::avx512f();
        #[cfg(not(target_arch = "x86_64"))]
        let pair = false;
        let mut pb = p0;
        while pb < p1 {
            let pe = (pb + NC / NR).min(p1);
            let (jb, nc) = (pb * NR, (pe * NR).min(n) - pb * NR);
            let mut k0 = 0;
            while k0 < k {
                let kc = KC.min(k - k0);
                let (first, last) = (k0 == 0, k0 + kc == k);
                if let BSrc::Pack(src) = self.b {
                    src.pack(k0, kc, jb, nc, &mut scratch[..(pe - pb) * kc * NR]);
                }
                // A partial last panel of an in-place B is packed (into the
                // scratch, unused otherwise by in-place jobs).
                let tail_cols = n.saturating_sub((pe - 1) * NR);
                if let BSrc::InPlace(v) = self.b
                    && tail_cols < NR
                {
                    for kk in 0..kc {
                        let src = &v.data[(k0 + kk) * v.rs + (pe - 1) * NR..][..tail_cols];
                        let d = &mut scratch[kk * NR..(kk + 1) * NR];
                        d[..tail_cols].copy_from_slice(src);
                        d[tail_cols..].fill(0.0);
                    }
                }
                let scratch: &[f32] = scratch;
                // Panel p's kc×NR slice for this k block, and its row step.
                let panel = |p: usize| -> (&[f32], usize) {
                    match self.b {
                        BSrc::Packed(b) => (&b[(p * k + k0) * NR..][..kc * NR], NR),
                        BSrc::Pack(_) => (&scratch[(p - pb) * kc * NR..][..kc * NR], NR),
                        BSrc::InPlace(_) if (p + 1) * NR > n => (&scratch[..kc * NR], NR),
                        BSrc::InPlace(v) => {
                            (&v.data[k0 * v.rs + p * NR..][..(kc - 1) * v.rs + NR], v.rs)
                        }
                    }
                };
                let mut qb = q0;
                while qb < q1 {
                    let qe = (qb + MC / MR).min(q1);
                    // Column panel outer, row panel inner (each B panel
                    // read once, from L1 for every row panel), except for
                    // long C rows (a conv's output planes, often a multiple
                    // of 4 KiB apart): there row panel outer, so each
                    // tile's stores run along one C row instead of touching
                    // every row per panel and fighting over cache sets.
                    let b_outer = self.ldc < IN_PLACE_MAX_ROW || matches!(self.b, BSrc::InPlace(_));
                    // Column panels in groups: two full neighbours at once
                    // where the two-panel tile runs (AVX-512), else one.
                    let groups = || {
                        let mut p = pb;
                        std::iter::from_fn(move || {
                            if p >= pe {
                                return None;
                            }
                            let w = if pair && p + 1 < pe && (p + 2) * NR <= n {
                                2
                            } else {
                                1
                            };
                            p += w;
                            Some((p - w, w))
                        })
                    };
                    let one = |q: usize, (p, w): (usize, usize)| {
                        {
                            let (i0, rows) = (q * MR, MR.min(m - q * MR));
                            let (j0, cols) = (p * NR, NR.min(n - p * NR));
                            let bp = panel(p);
                            let (ap, aoff, astep) = match self.a {
                                ASrc::Packed(a) => (
                                    &a[(q * k + k0) * MR..][..kc * MR],
                                    std::array::from_fn(|r| r),
                                    MR,
                                ),
                                ASrc::View(v) => (
                                    &v.data[i0 * v.rs + k0 * v.cs..],
                                    // Rows past the end repeat the last one;
                                    // their results are dropped.
                                    std::array::from_fn(|r| r.min(rows - 1) * v.rs),
                                    v.cs,
                                ),
                            };
                            #[cfg(target_arch = "x86_64")]
                            if w == 2 {
                                let (b0, b1) = (bp, panel(p + 1));
                                // SAFETY: the tile (i0.., j0..) of `rows ×
                                // 2·NR` lies inside C and this job's
                                // rectangle (both panels are full and ours);
                                // the CPU has AVX-512 F (`pair`).
                                unsafe {
                                    self.tile_x2(
                                        c,
                                        kc,
                                        (ap, &aoff, astep),
                                        (b0.0, b1.0, b0.1),
                                        (i0, rows),
                                        j0,
                                        first,
                                    )
                                };
                                return;
                            }
                            let _ = w;
                            // SAFETY: the tile (i0.., j0..) of `rows × cols`
                            // lies inside C and inside this job's rectangle.
                            unsafe {
                                self.tile(
                                    c,
                                    kc,
                                    (ap, &aoff, astep),
                                    bp,
                                    (i0, rows),
                                    (j0, cols),
                                    first,
                                )
                            };
                        }
                    };
                    if b_outer {
                        for g in groups() {
                            for q in qb..qe {
                                one(q, g);
                            }
                        }
                    } else {
                        for q in qb..qe {
                            for g in groups() {
                                one(q, g);
                            }
                        }
                    }
                    qb = qe;
                }
                // The epilogue once per row of the finished block (up to
                // NC columns, still in L2): one call per 16 floats cost
                // more than a cheap activation itself.
                if last && let Some(epi) = self.epi {
                    for i in q0 * MR..(q1 * MR).min(m) {
                        // SAFETY: row i, columns jb..jb+nc are in C and
                        // owned by this job.
                        let s = unsafe {
                            std::slice::from_raw_parts_mut(c.0.add(i * self.ldc + jb), nc)
                        };
                        epi(s);
                    }
                }
                k0 += kc;
            }
            pb = pe;
        }
    }

    /// What the tile at (i0, j0) of `rows × cols` starts its sums from: C
    /// itself after the first k block, else the bias (copied into
    /// `col_bias` / `row_bias`, zero past the tile, which `Init` points at).
    fn init(
        &self,
        first: bool,
        (i0, rows): (usize, usize),
        (j0, cols): (usize, usize),
        col_bias: &mut [f32; NR],
        row_bias: &mut [f32; MR],
    ) -> Init {
        if !first {
            return Init::Load;
        }
        match self.bias {
            Bias::None => Init::Zero,
            Bias::Acc => Init::Load,
            Bias::Col(b) => {
                col_bias[..cols].copy_from_slice(&b[j0..j0 + cols]);
                Init::Col(col_bias.as_ptr())
            }
            Bias::Row(b) => {
                row_bias[..rows].copy_from_slice(&b[i0..i0 + rows]);
                Init::Row(row_bias.as_ptr())
            }
        }
    }

    /// Two full column panels at (i0, j0) with [`tile_avx512_x2`]: B rows
    /// at `b0 + k·bstep` and `b1 + k·bstep`.
    ///
    /// # Safety
    /// As for `run`: the `rows × 2·NR` tile at (i0, j0) is inside C and
    /// ours; the panels hold `kc` rows; the CPU has AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_x2(
        &self,
        c: OutPtr,
        kc: usize,
        (ap, aoff, astep): (&[f32], &[usize; MR], usize),
        (b0, b1, bstep): (&[f32], &[f32], usize),
        (i0, rows): (usize, usize),
        j0: usize,
        first: bool,
    ) {
        let ldc = self.ldc;
        let (mut col_bias, mut row_bias) = ([[0f32; NR]; 2], [0f32; MR]);
        let [c0, c1] = &mut col_bias;
        let init = (
            self.init(first, (i0, rows), (j0, NR), c0, &mut row_bias),
            self.init(first, (i0, rows), (j0 + NR, NR), c1, &mut row_bias),
        );
        let (a, b0, b1) = (ap.as_ptr(), b0.as_ptr(), b1.as_ptr());
        // SAFETY: the caller guarantees the tile is inside C, the panels'
        // rows and AVX-512 F; rows past `rows` are never read.
        unsafe {
            let cp = c.0.add(i0 * ldc + j0);
            let b = (b0, b1);
            match rows {
                1 => tile_avx512_x2::<1>(kc, a, aoff, astep, b, bstep, cp, ldc, init),
                2 => tile_avx512_x2::<2>(kc, a, aoff, astep, b, bstep, cp, ldc, init),
                3 => tile_avx512_x2::<3>(kc, a, aoff, astep, b, bstep, cp, ldc, init),
                4 => tile_avx512_x2::<4>(kc, a, aoff, astep, b, bstep, cp, ldc, init),
                5 => tile_avx512_x2::<5>(kc, a, aoff, astep, b, bstep, cp, ldc, init),
                _ => tile_avx512_x2::<MR>(kc, a, aoff, astep, b, bstep, cp, ldc, init),
            }
        }
    }

    /// # Safety
    /// As for `run`: the `rows × cols` tile at (i0, j0) is inside C and ours.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        c: OutPtr,
        kc: usize,
        (ap, aoff, astep): (&[f32], &[usize; MR], usize),
        (bp, bstep): (&[f32], usize),
        (i0, rows): (usize, usize),
        (j0, cols): (usize, usize),
        first: bool,
    ) {
        let ldc = self.ldc;
        let (mut col_bias, mut row_bias) = ([0f32; NR], [0f32; MR]);
        let init = self.init(first, (i0, rows), (j0, cols), &mut col_bias, &mut row_bias);
        // SAFETY: the caller guarantees the tile is inside C.
        let cp = unsafe { c.0.add(i0 * ldc + j0) };
        // Only the tile's own rows: a short last row panel (m = 128 is 21
        // panels and 2 rows; a conv with 16 or 32 output channels ends on 4
        // or 2) skips the rows it would drop. `$kernel::<R>` is an
        // `R × NR` tile kernel with `tile_avx2`'s arguments.
        #[allow(unused_macros)]
        macro_rules! fast_tile {
            ($kernel:ident $(, $fused:literal)?) => {{
                let call = |c: *mut f32, ldc: usize| {
                    let (a, b) = (ap.as_ptr(), bp.as_ptr());
                    // SAFETY: the kernel's CPU features are present; ap/bp
                    // hold kc·MR / kc·NR floats (sliced by the caller; rows
                    // past `rows` are never read); `c` has `rows` rows of
                    // NR floats at stride ldc.
                    unsafe {
                        match rows {
                            1 => $kernel::<1 $(, $fused)?>(kc, a, aoff, astep, b, bstep, c, ldc, init),
                            2 => $kernel::<2 $(, $fused)?>(kc, a, aoff, astep, b, bstep, c, ldc, init),
                            3 => $kernel::<3 $(, $fused)?>(kc, a, aoff, astep, b, bstep, c, ldc, init),
                            4 => $kernel::<4 $(, $fused)?>(kc, a, aoff, astep, b, bstep, c, ldc, init),
                            5 => $kernel::<5 $(, $fused)?>(kc, a, aoff, astep, b, bstep, c, ldc, init),
                            _ => $kernel::<MR $(, $fused)?>(kc, a, aoff, astep, b, bstep, c, ldc, init),
                        }
                    }
                };
                if cols == NR {
                    call(cp, ldc);
                } else {
                    let mut buf = [0f32; MR * NR];
                    if let Init::Load = init {
                        for r in 0..rows {
                            // SAFETY: row r of the tile has `cols` floats in C.
                            let src = unsafe { std::slice::from_raw_parts(cp.add(r * ldc), cols) };
                            buf[r * NR..r * NR + cols].copy_from_slice(src);
                        }
                    }
                    call(buf.as_mut_ptr(), NR);
                    for r in 0..rows {
                        // SAFETY: as above.
                        let dst = unsafe { std::slice::from_raw_parts_mut(cp.add(r * ldc), cols) };
                        dst.copy_from_slice(&buf[r * NR..r * NR + cols]);
                    }
                }
                return;
            }};
        }
        #[cfg(target_arch = "x86_64")]
        if super::cpu::avx512f() {
            fast_tile!(tile_avx512);
        }
        #[cfg(target_arch = "x86_64")]
        if super::cpu::avx2_fma() {
            fast_tile!(tile_avx2);
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        if super::cpu::relaxed_madd_fused() {
            fast_tile!(tile_simd128, true);
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        fast_tile!(tile_simd128, false);
        #[allow(unreachable_code)]
        let mut acc = [[0f32; NR]; MR];
        match init {
            Init::Zero => {}
            Init::Load => {
                for (r, row) in acc.iter_mut().enumerate().take(rows) {
                    // SAFETY: row r of the tile has `cols` floats in C.
                    let src = unsafe { std::slice::from_raw_parts(cp.add(r * ldc), cols) };
                    row[..cols].copy_from_slice(src);
                }
            }
            Init::Col(_) => acc.iter_mut().for_each(|row| *row = col_bias),
            Init::Row(_) => {
                for (row, &v) in acc.iter_mut().zip(&row_bias) {
                    *row = [v; NR];
                }
            }
        }
        tile_generic(kc, ap, aoff, astep, (bp, bstep), &mut acc);
        for (r, row) in acc.iter().enumerate().take(rows) {
            // SAFETY: as above.
            let dst = unsafe { std::slice::from_raw_parts_mut(cp.add(r * ldc), cols) };
            dst.copy_from_slice(&row[..cols]);
        }
    }
}

/// A left operand: packed once, or a view packed per call.
#[derive(Clone, Copy)]
pub enum Lhs<'a> {
    View(Mat<'a>),
    Packed(&'a PackedA),
}

/// A right operand: packed once, a view, or a custom packer (all `k × n`).
#[derive(Clone, Copy)]
pub enum Rhs<'a> {
    View(Mat<'a>),
    Packed(&'a PackedB),
    Packer {
        k: usize,
        n: usize,
        pack: &'a dyn PackRhs,
    },
}

/// `C = A·B + bias`, then `epi` on every finished piece of an output row
/// (up to `NC` columns at a time).
/// C is row-major with row stride `ldc`. Operands given as views are packed
/// into `scratch` (grown as needed, reused across calls).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    ldc: usize,
    bias: Bias<'_>,
    epi: Option<Epilogue<'_>>,
    threads: usize,
    scratch: &mut Vec<f32>,
) -> Result<()> {
    let (m, k) = match a {
        Lhs::View(v) => (v.rows, v.cols),
        Lhs::Packed(p) => (p.m, p.k),
    };
    let (kb, n) = match b {
        Rhs::View(v) => (v.rows, v.cols),
        Rhs::Packed(p) => (p.k, p.n),
        Rhs::Packer { k, n, .. } => (k, n),
    };
    if k != kb {
        return Err(Error::Graph(format!(
            "matmul: inner dimensions differ: A is {m}×{k}, B is {kb}×{n}"
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bad = |what: &str| Err(Error::Graph(format!("matmul {m}×{k}×{n}: {what}")));
    if ldc < n || c.len() < (m - 1) * ldc + n {
        return bad("output buffer too small");
    }
    match bias {
        Bias::Col(v) if v.len() < n => return bad("column bias too short"),
        Bias::Row(v) if v.len() < m => return bad("row bias too short"),
        _ => {}
    }
    if let Rhs::View(v) = b {
        check_view(&v, "B")?;
    }
    if k == 0 {
        for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
            let row = &mut row[..n];
            match bias {
                Bias::None => row.fill(0.0),
                Bias::Acc => {}
                Bias::Col(v) => row.copy_from_slice(&v[..n]),
                Bias::Row(v) => row.fill(v[i]),
            }
            if let Some(e) = epi {
                e(row);
            }
        }
        return Ok(());
    }
    let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
    let threads = if m * n * k < 1 << 17 {
        1
    } else {
        threads.max(1)
    };
    // Split columns when there are enough panels, else rows.
    let split_cols = np >= 2 * threads || np >= mp;
    let parts = if split_cols { np } else { mp }.min(threads).max(1);
    let asrc = match a {
        Lhs::View(v) => {
            check_view(&v, "A")?;
            ASrc::View(v)
        }
        Lhs::Packed(p) => {
            if p.data.as_f32().len() < packed_a_len(m, k) {
                return bad("packed A too small");
            }
            ASrc::Packed(p.data.as_f32())
        }
    };
    let bsrc = match &b {
        // Few row panels: each B element is used by few tiles, so reading
        // it in place beats copying it first.
        // Not for long rows (a pointwise conv's image planes): their rows
        // are far apart, often a multiple of 4 KiB, and the k rows one
        // panel reads collide in the cache; packed is 1.3-2.2x faster there
        // (`cargo run --release -p morsel-runtime --example conv_gemm`).
        Rhs::View(v) if v.cs == 1 && mp <= IN_PLACE_MAX_PANELS && v.rs <= IN_PLACE_MAX_ROW => {
            BSrc::InPlace(*v)
        }
        Rhs::View(v) => BSrc::Pack(v),
        Rhs::Packed(p) => {
            if p.data.as_f32().len() < packed_b_len(k, n) {
                return bad("packed B too small");
            }
            BSrc::Packed(p.data.as_f32())
        }
        Rhs::Packer { pack, .. } => BSrc::Pack(*pack),
    };
    // Scratch per thread: the B blocks it packs (at most KC × NC, less for
    // a small product), or a partial last panel of an in-place B.
    let panels = if split_cols { np.div_ceil(parts) } else { np };
    let per_thread = match bsrc {
        BSrc::Packed(_) => 0,
        BSrc::InPlace(_) if n % NR == 0 => 0,
        BSrc::InPlace(_) => k.min(KC) * NR,
        BSrc::Pack(_) => k.min(KC) * panels.min(NC / NR) * NR,
    };
    // Panels start on a cache line, so the kernel's 32-byte loads of a
    // 64-byte panel row never split across two lines.
    let need = parts * per_thread + 16;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let off = scratch.as_ptr().align_offset(64).min(16);
    let sb = &mut scratch[off..off + parts * per_thread];
    let job = Job {
        m,
        n,
        k,
        a: asrc,
        b: bsrc,
        ldc,
        bias,
        epi,
    };
    let out = OutPtr(c.as_mut_ptr());
    if parts > 1 {
        let total = if split_cols { np } else { mp };
        // Each part's scratch (empty when B needs no packing).
        let mut scratches: Vec<&mut [f32]> = Vec::with_capacity(parts);
        let mut rest = sb;
        for _ in 0..parts {
            let (sc, r) = std::mem::take(&mut rest).split_at_mut(per_thread);
            scratches.push(sc);
            rest = r;
        }
        crate::par::chunks_mut(threads, &mut scratches, 1, |t, sc| {
            let sc = &mut *sc[0];
            let (lo, hi) = (total * t / parts, total * (t + 1) / parts);
            let (rows, cols) = if split_cols {
                ((0, mp), (lo, hi))
            } else {
                ((lo, hi), (0, np))
            };
            // SAFETY: `c` was checked to hold m×n at stride ldc; the
            // ranges of different parts do not overlap.
            unsafe { job.run(out, rows, cols, sc) }
        });
        return Ok(());
    }
    // SAFETY: `c` was checked to hold m×n at stride ldc; one thread.
    unsafe { job.run(out, (0, mp), (0, np), sb) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(seed: &mut u32) -> f32 {
        *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }

    fn naive(a: Mat<'_>, b: Mat<'_>, bias: Bias<'_>) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = match bias {
                    Bias::None | Bias::Acc => 0f64,
                    Bias::Col(v) => v[j] as f64,
                    Bias::Row(v) => v[i] as f64,
                };
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_on_odd_shapes_strides_biases_and_threads() {
        let mut seed = 7u32;
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (6, 16, 16),
            (7, 300, 17),
            (17, 33, 9),
            (64, 31, 65),
            (1, 384, 1536),
            (97, 513, 40),
            (130, 20, 3),
        ] {
            let av: Vec<f32> = (0..m * k).map(|_| rnd(&mut seed)).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| rnd(&mut seed)).collect();
            let cb: Vec<f32> = (0..n).map(|_| rnd(&mut seed)).collect();
            let rb: Vec<f32> = (0..m).map(|_| rnd(&mut seed)).collect();
            for (ai, a) in [Mat::rows(&av, m, k), Mat::rows(&av, k, m).t()]
                .into_iter()
                .enumerate()
            {
                for (bi, b) in [Mat::rows(&bv, k, n), Mat::rows(&bv, n, k).t()]
                    .into_iter()
                    .enumerate()
                {
                    for bias in [Bias::None, Bias::Col(&cb), Bias::Row(&rb)] {
                        for threads in [1, 2] {
                            let want = naive(a, b, bias);
                            let ldc = n + 3;
                            let mut c = vec![f32::NAN; (m - 1) * ldc + n];
                            let mut scratch = Vec::new();
                            matmul(
                                Lhs::View(a),
                                Rhs::View(b),
                                &mut c,
                                ldc,
                                bias,
                                None,
                                threads,
                                &mut scratch,
                            )
                            .unwrap();
                            for i in 0..m {
                                for j in 0..n {
                                    let (x, y) = (c[i * ldc + j], want[i * n + j]);
                                    assert!(
                                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()) * (k as f32).sqrt(),
                                        "{m}x{k}x{n} a{ai} b{bi} {bias:?} t{threads} at ({i},{j}): {x} vs {y}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prepacked_operands_and_epilogue() {
        let mut seed = 3u32;
        let (m, k, n) = (37, 290, 50);
        let av: Vec<f32> = (0..m * k).map(|_| rnd(&mut seed)).collect();
        let bv: Vec<f32> = (0..k * n).map(|_| rnd(&mut seed)).collect();
        let (a, b) = (Mat::rows(&av, m, k), Mat::rows(&bv, k, n));
        let want: Vec<f32> = naive(a, b, Bias::None).iter().map(|v| v.max(0.0)).collect();
        let (pa, pb) = (PackedA::new(a).unwrap(), PackedB::new(b).unwrap());
        let relu = |s: &mut [f32]| s.iter_mut().for_each(|v| *v = v.max(0.0));
        for (lhs, rhs) in [
            (Lhs::Packed(&pa), Rhs::View(b)),
            (Lhs::View(a), Rhs::Packed(&pb)),
            (Lhs::Packed(&pa), Rhs::Packed(&pb)),
        ] {
            let mut c = vec![f32::NAN; m * n];
            matmul(
                lhs,
                rhs,
                &mut c,
                n,
                Bias::None,
                Some(&relu),
                1,
                &mut Vec::new(),
            )
            .unwrap();
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-4, "{x} vs {y}");
            }
        }
    }

    /// The two-panel AVX-512 tile gives the bits of two one-panel tiles
    /// (each element's multiply-adds in the same order), from every init.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn two_panel_tile_equals_two_tiles() {
        if !crate::kernels::cpu::avx512f() {
            return;
        }
        let mut seed = 3u32;
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|_| rnd(&mut seed)).collect();
        let b: Vec<Vec<f32>> = (0..2)
            .map(|_| (0..kc * NR).map(|_| rnd(&mut seed)).collect())
            .collect();
        let bias: Vec<f32> = (0..2 * NR).map(|_| rnd(&mut seed)).collect();
        let c0: Vec<f32> = (0..MR * 2 * NR).map(|_| rnd(&mut seed)).collect();
        let aoff: [usize; MR] = std::array::from_fn(|r| r);
        let inits = |h: usize| {
            [
                Init::Zero,
                Init::Load,
                Init::Col(bias[h * NR..].as_ptr()),
                Init::Row(bias.as_ptr()),
            ]
        };
        for (i0, i1) in inits(0).into_iter().zip(inits(1)) {
            let (mut two, mut ones) = (c0.clone(), c0.clone());
            // SAFETY: AVX-512 F is present; a holds kc·MR floats, each
            // panel kc·NR, C MR rows of 2·NR (stride 2·NR), biases 2·NR.
            unsafe {
                tile_avx512_x2::<MR>(
                    kc,
                    a.as_ptr(),
                    &aoff,
                    MR,
                    (b[0].as_ptr(), b[1].as_ptr()),
                    NR,
                    two.as_mut_ptr(),
                    2 * NR,
                    (i0, i1),
                );
                for (h, init) in [i0, i1].into_iter().enumerate() {
                    let c = ones.as_mut_ptr().add(h * NR);
                    tile_avx512::<MR>(
                        kc,
                        a.as_ptr(),
                        &aoff,
                        MR,
                        b[h].as_ptr(),
                        NR,
                        c,
                        2 * NR,
                        init,
                    );
                }
            }
            assert!(
                two.iter()
                    .zip(&ones)
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
        }
    }

    #[test]
    fn k_zero_gives_bias_and_mismatches_are_errors() {
        let empty: [f32; 0] = [];
        let bias = [1.0f32, 2.0];
        let mut c = [f32::NAN; 6];
        matmul(
            Lhs::View(Mat::rows(&empty, 3, 0)),
            Rhs::View(Mat::rows(&empty, 0, 2)),
            &mut c,
            2,
            Bias::Col(&bias),
            None,
            1,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(c, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        let x = [0f32; 6];
        let e = matmul(
            Lhs::View(Mat::rows(&x, 2, 3)),
            Rhs::View(Mat::rows(&x, 2, 3)),
            &mut c,
            3,
            Bias::None,
            None,
            1,
            &mut Vec::new(),
        );
        assert!(e.unwrap_err().to_string().contains("inner dimensions"));
        let e = matmul(
            Lhs::View(Mat::rows(&x, 2, 3)),
            Rhs::View(Mat::rows(&x, 3, 2)),
            &mut c[..2],
            2,
            Bias::None,
            None,
            1,
            &mut Vec::new(),
        );
        assert!(e.unwrap_err().to_string().contains("too small"));
    }
}
