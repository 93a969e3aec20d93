//! aarch64 int8 code: NEON (baseline) and `sdot` (FEAT_DotProd).
//!
//! `tile_neon_4x4`: panels of 4 columns, K in groups of 16 (each column's 16
//! bytes contiguous). Per group, one row's 16 bytes against one column's 16:
//! `smull` (low 8) and `smlal2` (high 8) leave, in each i16 lane, a sum of
//! two products, at most `2·128·127 = 32512` (weights are never -128), and
//! `sadalp` adds adjacent lanes into the i32 accumulator. Sixteen
//! accumulators (4 rows × 4 columns, 4 partial sums each), reduced with
//! `addp` at the end.
//!
//! `tile_sdot_4x16`: panels of 16 columns, K in groups of 4 (each 16-byte
//! vector holds 4 columns × 4 k), read 16 k per step: per row one 16-byte
//! load of A, then `sdot` by lane (lane `q` = k values `4q..4q+4`) into
//! 4 rows × 4 vectors of i32. The dotprod intrinsics are unstable in Rust,
//! so `sdot` is one instruction of inline assembly.

use super::generic::{dequant1, quantize1};
use super::{DequantRow, Kernel, MAX_NR, MR, Quant, Tile};
use std::arch::aarch64::*;
use std::arch::asm;

/// # Safety
/// The CPU has NEON (every aarch64 target Rust builds for does).
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_neon_4x4(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::Neon.layout());
    // SAFETY: `check` passed, which is what `neon_rows` relies on.
    unsafe {
        match t.mr {
            4 => neon_rows::<4>(t, out),
            3 => neon_rows::<3>(t, out),
            2 => neon_rows::<2>(t, out),
            _ => neon_rows::<1>(t, out),
        }
    }
}

/// # Safety
/// NEON; `t.check` passed for the Neon layout; `R ≤ MR`.
#[target_feature(enable = "neon")]
unsafe fn neon_rows<const R: usize>(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let mut b = t.b.as_ptr();
    for g in 0..t.full {
        // SAFETY: `check`: each A row has `full·16` bytes and the panel 64
        // bytes per group.
        unsafe {
            let a: [int8x16_t; R] = std::array::from_fn(|r| vld1q_s8(t.a[r].as_ptr().add(16 * g)));
            neon_step(&mut acc, &a, b);
            b = b.add(64);
        }
    }
    if let Some(tail) = t.tail {
        // SAFETY: the tail rows have 16 bytes; the panel has one more group.
        unsafe {
            let a: [int8x16_t; R] = std::array::from_fn(|r| vld1q_s8(tail[r].as_ptr()));
            neon_step(&mut acc, &a, b);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        let lo = vpaddq_s32(acc[0], acc[1]);
        let hi = vpaddq_s32(acc[2], acc[3]);
        // SAFETY: `o` has 16 i32s; this writes the first 4.
        unsafe { vst1q_s32(o.as_mut_ptr(), vpaddq_s32(lo, hi)) };
    }
}

/// # Safety
/// NEON; 64 bytes readable at `b`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn neon_step<const R: usize>(
    acc: &mut [[int32x4_t; 4]; R],
    a: &[int8x16_t; R],
    b: *const i8,
) {
    // SAFETY: the caller guarantees 64 bytes at `b`.
    let b: [int8x16_t; 4] = unsafe {
        [
            vld1q_s8(b),
            vld1q_s8(b.add(16)),
            vld1q_s8(b.add(32)),
            vld1q_s8(b.add(48)),
        ]
    };
    for (acc, &a) in acc.iter_mut().zip(a) {
        for (acc, &b) in acc.iter_mut().zip(&b) {
            let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let p = vmlal_high_s8(p, a, b);
            *acc = vpadalq_s16(*acc, p);
        }
    }
}

/// # Safety
/// The CPU has NEON and FEAT_DotProd.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn tile_sdot_4x16(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::NeonDot.layout());
    // SAFETY: `check` passed, which is what `sdot_rows` relies on.
    unsafe {
        match t.mr {
            4 => sdot_rows::<4>(t, out),
            3 => sdot_rows::<3>(t, out),
            2 => sdot_rows::<2>(t, out),
            _ => sdot_rows::<1>(t, out),
        }
    }
}

/// # Safety
/// NEON and dotprod; `t.check` passed for the NeonDot layout; `R ≤ MR`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot_rows<const R: usize>(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let mut b = t.b.as_ptr();
    for g in 0..t.full {
        // SAFETY: `check`: each A row has `full·16` bytes and the panel
        // 4·64 bytes per 16 k.
        unsafe {
            let a: [int8x16_t; R] = std::array::from_fn(|r| vld1q_s8(t.a[r].as_ptr().add(16 * g)));
            sdot_step(&mut acc, &a, b);
            b = b.add(256);
        }
    }
    if let Some(tail) = t.tail {
        // SAFETY: the tail rows have 16 bytes; the panel has 256 more.
        unsafe {
            let a: [int8x16_t; R] = std::array::from_fn(|r| vld1q_s8(tail[r].as_ptr()));
            sdot_step(&mut acc, &a, b);
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (v, &acc) in acc.iter().enumerate() {
            // SAFETY: `o` has 16 i32s; this writes 4 at `4v`.
            unsafe { vst1q_s32(o.as_mut_ptr().add(4 * v), acc) };
        }
    }
}

/// 16 k values of `R` rows against 16 k × 16 columns at `b`.
///
/// # Safety
/// NEON and dotprod; 256 bytes readable at `b`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_step<const R: usize>(
    acc: &mut [[int32x4_t; 4]; R],
    a: &[int8x16_t; R],
    b: *const i8,
) {
    // SAFETY: each call gets one 64-byte quad of the 256 the caller guarantees.
    unsafe {
        sdot_quad::<0, R>(acc, a, b);
        sdot_quad::<1, R>(acc, a, b.add(64));
        sdot_quad::<2, R>(acc, a, b.add(128));
        sdot_quad::<3, R>(acc, a, b.add(192));
    }
}

/// k values `4Q..4Q+4` (lane `Q` of each A vector) against 4 k × 16
/// columns at `b`.
///
/// # Safety
/// NEON and dotprod; 64 bytes readable at `b`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_quad<const Q: i32, const R: usize>(
    acc: &mut [[int32x4_t; 4]; R],
    a: &[int8x16_t; R],
    b: *const i8,
) {
    // SAFETY: the caller guarantees 64 bytes at `b`.
    let b: [int8x16_t; 4] = unsafe {
        [
            vld1q_s8(b),
            vld1q_s8(b.add(16)),
            vld1q_s8(b.add(32)),
            vld1q_s8(b.add(48)),
        ]
    };
    for (acc, &a) in acc.iter_mut().zip(a) {
        for (acc, &b) in acc.iter_mut().zip(&b) {
            // SAFETY: registers only; the CPU has dotprod (caller).
            unsafe {
                asm!(
                    "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{q}]",
                    acc = inout(vreg) *acc,
                    b = in(vreg) b,
                    a = in(vreg) a,
                    q = const Q,
                    options(pure, nomem, nostack, preserves_flags),
                )
            };
        }
    }
}

/// # Safety
/// NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn max_abs(x: &[f32]) -> f32 {
    let (mut m0, mut m1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: `c` has 8 floats.
        let (v0, v1) = unsafe { (vld1q_f32(c.as_ptr()), vld1q_f32(c.as_ptr().add(4))) };
        // `fmaxnm` ignores a NaN operand.
        m0 = vmaxnmq_f32(m0, vabsq_f32(v0));
        m1 = vmaxnmq_f32(m1, vabsq_f32(v1));
    }
    let tail = super::generic::max_abs(chunks.remainder());
    tail.max(vmaxnmvq_f32(vmaxnmq_f32(m0, m1)))
}

/// Four values at `x` as `quantize1` computes them: divide, clamp (NaN →
/// lo: `fmaxnm` returns the number), round half to even (`fcvtns`), add the
/// zero point.
///
/// # Safety
/// NEON; 4 floats readable at `x`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn quantize4(x: *const f32, q: &Quant) -> int32x4_t {
    // SAFETY: the caller guarantees 4 floats at `x`.
    let f = unsafe { vld1q_f32(x) };
    let f = vdivq_f32(f, vdupq_n_f32(q.scale));
    let f = vminq_f32(vmaxnmq_f32(f, vdupq_n_f32(q.lo)), vdupq_n_f32(q.hi));
    vaddq_s32(vcvtnq_s32_f32(f), vdupq_n_s32(q.zero_point))
}

/// # Safety
/// NEON; `out.len() == x.len()`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize(x: &[f32], q: &Quant, out: &mut [i8]) {
    let mut xs = x.chunks_exact(16);
    let mut os = out.chunks_exact_mut(16);
    for (x, o) in (&mut xs).zip(&mut os) {
        // SAFETY: `x` has 16 floats, `o` 16 bytes. Values are in range, so
        // the saturating narrows are exact.
        unsafe {
            let p = x.as_ptr();
            let w0 = vcombine_s16(
                vqmovn_s32(quantize4(p, q)),
                vqmovn_s32(quantize4(p.add(4), q)),
            );
            let w1 = vcombine_s16(
                vqmovn_s32(quantize4(p.add(8), q)),
                vqmovn_s32(quantize4(p.add(12), q)),
            );
            vst1q_s8(o.as_mut_ptr(), vcombine_s8(vqmovn_s16(w0), vqmovn_s16(w1)));
        }
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = quantize1(v, q);
    }
}

/// # Safety
/// NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dequant(c: &[i32], d: &DequantRow<'_>, out: &mut [f32]) {
    let n = out.len();
    assert!(c.len() == n && d.col_scales.len() == n && d.bias.is_none_or(|b| b.len() == n));
    assert!(d.zero_point == 0 || d.col_sums.len() == n);
    let rs = vdupq_n_f32(d.row_scale);
    let zp = vdupq_n_s32(d.zero_point);
    let mut j = 0;
    while j + 4 <= n {
        // SAFETY: `j + 4 ≤ n`, and every slice read has length `n` (asserted).
        unsafe {
            let mut v = vld1q_s32(c.as_ptr().add(j));
            if d.zero_point != 0 {
                v = vsubq_s32(v, vmulq_s32(zp, vld1q_s32(d.col_sums.as_ptr().add(j))));
            }
            let s = vmulq_f32(rs, vld1q_f32(d.col_scales.as_ptr().add(j)));
            let mut f = vmulq_f32(vcvtq_f32_s32(v), s);
            if let Some(b) = d.bias {
                f = vaddq_f32(f, vld1q_f32(b.as_ptr().add(j)));
            }
            vst1q_f32(out.as_mut_ptr().add(j), f);
        }
        j += 4;
    }
    for jj in j..n {
        out[jj] = dequant1(c[jj], jj, d);
    }
}
