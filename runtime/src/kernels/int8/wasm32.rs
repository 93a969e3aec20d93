//! wasm32 simd128 int8 code (compiled in when the build enables simd128).
//!
//! `tile_simd128_4x4`: panels of 4 columns, K in groups of 8, so one
//! 32-byte group is 8 k of each column in turn. Each step sign-extends 8
//! bytes of an A row and of every column to i16 as it loads them
//! (`i16x8.load8x8_s`) and meets them in `i32x4.dot_i16x8_s`: an
//! accumulator per row and column holds four partial sums, added at the
//! end. Rows go two at a time (8 accumulators, 4 B vectors and 2 A vectors
//! fit V8's 15 vector registers): 8 dots in 22 instructions per step, where
//! the 4×4 form with broadcast A rows and K in groups of 4 needed 27.
//! Products are formed in i16×i16 → i32, so nothing can saturate.

use super::generic::{dequant1, quantize1};
use super::{DequantRow, Kernel, MAX_NR, MR, Quant, Tile};
use std::arch::wasm32::*;

pub(super) fn tile_simd128_4x4(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::Simd128.layout());
    match t.mr {
        4 => {
            rows::<2>(t, 0, out);
            rows::<2>(t, 2, out);
        }
        3 => {
            rows::<2>(t, 0, out);
            rows::<1>(t, 2, out);
        }
        2 => rows::<2>(t, 0, out),
        _ => rows::<1>(t, 0, out),
    }
}

/// Rows `r0..r0 + R`; `t.check` passed. The whole chunks read A and B by
/// pointer (no per-chunk bounds checks: V8 keeps them as scalar compares
/// and branches), then the padded tail.
fn rows<const R: usize>(t: &Tile<'_>, r0: usize, out: &mut [[i32; MAX_NR]; MR]) {
    let mut acc = [[i32x4_splat(0); 4]; R];
    /// # Safety
    /// Each `a[r]` has 8 readable bytes, `b` 32.
    #[inline(always)]
    unsafe fn step<const R: usize>(acc: &mut [[v128; 4]; R], a: [*const i8; R], b: *const i8) {
        // SAFETY: the caller's guarantee; the loads allow any alignment.
        unsafe {
            let b: [v128; 4] = std::array::from_fn(|j| i16x8_load_extend_i8x8(b.add(8 * j)));
            for (acc, &a) in acc.iter_mut().zip(&a) {
                let a = i16x8_load_extend_i8x8(a);
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = i32x4_add(*acc, i32x4_dot_i16x8(a, b));
                }
            }
        }
    }
    let rows: [*const i8; R] = std::array::from_fn(|r| t.a[r0 + r].as_ptr());
    let b = t.b.as_ptr();
    for q in 0..t.full {
        // SAFETY: `t.check` passed: every A row holds `full·8` bytes and
        // the panel `chunks()·32`, so chunk q < full is in bounds for both.
        unsafe { step(&mut acc, rows.map(|p| p.add(8 * q)), b.add(32 * q)) };
    }
    if let Some(tail) = t.tail {
        let last = &t.b[32 * t.full..32 * t.full + 32];
        // SAFETY: each tail row has MAX_CH ≥ 8 bytes; `last` has 32.
        unsafe {
            step(
                &mut acc,
                std::array::from_fn(|r| tail[r0 + r].as_ptr()),
                last.as_ptr(),
            )
        };
    }
    for (o, [c0, c1, c2, c3]) in out[r0..].iter_mut().zip(acc) {
        // Pairwise: [c0₀+c0₂, c1₀+c1₂, c0₁+c0₃, c1₁+c1₃] and the same for
        // c2, c3; then their halves added give the four column totals.
        let s01 = i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(c0, c1),
            i32x4_shuffle::<2, 6, 3, 7>(c0, c1),
        );
        let s23 = i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(c2, c3),
            i32x4_shuffle::<2, 6, 3, 7>(c2, c3),
        );
        let s = i32x4_add(
            i32x4_shuffle::<0, 1, 4, 5>(s01, s23),
            i32x4_shuffle::<2, 3, 6, 7>(s01, s23),
        );
        let o = &mut o[..4];
        // SAFETY: `o` has 4 i32s; `v128_store` allows any alignment.
        unsafe { v128_store(o.as_mut_ptr().cast(), s) };
    }
}

/// Whether `i32x4.relaxed_dot_i8x16_i7x16_add_s` computes exact unsigned ×
/// signed byte dot products here, as x86's `vpdpbusd` does (Chromium on a
/// CPU with AVX-VNNI): its first operand read as signed, its second as
/// unsigned, no saturation. The relaxed-SIMD spec leaves the result open
/// when the second operand has its top bit set (ARM's `sdot` reads it as
/// signed; a `pmaddubsw` lowering saturates), so this is probed once on
/// values that tell them apart, and [`tile_relaxed_4x16`] is only used
/// where it agrees with exact arithmetic.
#[cfg(target_feature = "relaxed-simd")]
pub(super) fn relaxed_dot_is_exact() -> bool {
    let b: [i8; 16] = [
        -127, 127, 127, 127, 127, -127, 1, -1, 5, -7, 100, -100, 0, 127, -127, 3,
    ];
    let a: [u8; 16] = [
        255, 255, 255, 255, 255, 255, 128, 128, 1, 200, 0, 255, 77, 128, 1, 129,
    ];
    let c: [i32; 4] = [7, -7, 1 << 20, -(1 << 20)];
    let load = |p: *const u8| {
        // SAFETY: every array above is 16 bytes; loads allow any alignment.
        unsafe { v128_load(std::hint::black_box(p).cast()) }
    };
    let r = i32x4_relaxed_dot_i8x16_i7x16_add(
        load(b.as_ptr().cast()),
        load(a.as_ptr()),
        load(c.as_ptr().cast()),
    );
    let got: [i32; 4] = [
        i32x4_extract_lane::<0>(r),
        i32x4_extract_lane::<1>(r),
        i32x4_extract_lane::<2>(r),
        i32x4_extract_lane::<3>(r),
    ];
    let want: [i32; 4] = std::array::from_fn(|l| {
        c[l] + (0..4)
            .map(|j| b[4 * l + j] as i32 * a[4 * l + j] as i32)
            .sum::<i32>()
    });
    got == want
}

/// The VNNI kernel's scheme in wasm relaxed SIMD: the Avx2 layout (panels
/// of 16 columns, K in groups of 4; one 16-byte vector is 4 columns × 4 k),
/// A read flipped (`a ^ 0x80`, unsigned; `gemm_i8` flips each block of
/// rows) and broadcast 4 bytes at a time, one relaxed dot per row, 4
/// columns and 4 k (16 multiply-adds, `vpdpbusd` under Chromium on x86),
/// `128·Σ b` taken off at the end. Rows go two at a time: 8 accumulators,
/// 4 B vectors and one A broadcast fit V8's 16 vector registers. Exact, so
/// the same integers as every other kernel; only made after
/// [`relaxed_dot_is_exact`].
#[cfg(target_feature = "relaxed-simd")]
pub(super) fn tile_relaxed_4x16(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::RelaxedDot.layout());
    match t.mr {
        4 => {
            relaxed_rows::<2>(t, 0, out);
            relaxed_rows::<2>(t, 2, out);
        }
        3 => {
            relaxed_rows::<2>(t, 0, out);
            relaxed_rows::<1>(t, 2, out);
        }
        2 => relaxed_rows::<2>(t, 0, out),
        _ => relaxed_rows::<1>(t, 0, out),
    }
}

/// Rows `r0..r0 + R` of [`tile_relaxed_4x16`]; `t.check` passed.
#[cfg(target_feature = "relaxed-simd")]
fn relaxed_rows<const R: usize>(t: &Tile<'_>, r0: usize, out: &mut [[i32; MAX_NR]; MR]) {
    let mut acc = [[i32x4_splat(0); 4]; R];
    /// # Safety
    /// Each `a[r]` has 4 readable bytes, `b` 64.
    #[inline(always)]
    unsafe fn step<const R: usize>(acc: &mut [[v128; 4]; R], a: [*const u8; R], b: *const i8) {
        // SAFETY: the caller's guarantee; the loads allow any alignment.
        unsafe {
            let b: [v128; 4] = std::array::from_fn(|j| v128_load(b.add(16 * j).cast()));
            for (acc, &a) in acc.iter_mut().zip(&a) {
                let a = v128_load32_splat(a.cast());
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = i32x4_relaxed_dot_i8x16_i7x16_add(b, a, *acc);
                }
            }
        }
    }
    let rows: [*const u8; R] = std::array::from_fn(|r| t.a[r0 + r].as_ptr().cast());
    let b = t.b.as_ptr();
    for q in 0..t.full {
        // SAFETY: `t.check` passed: every A row holds `full·4` bytes and
        // the panel `chunks()·64`, so chunk q < full is in bounds for both.
        unsafe { step(&mut acc, rows.map(|p| p.add(4 * q)), b.add(64 * q)) };
    }
    if let Some(tail) = t.tail {
        let last = &t.b[64 * t.full..64 * t.full + 64];
        // SAFETY: each tail row has MAX_CH ≥ 4 bytes; `last` has 64. The
        // padding is zero in the panel, so padded A bytes add nothing.
        unsafe {
            step(
                &mut acc,
                std::array::from_fn(|r| tail[r0 + r].as_ptr().cast()),
                last.as_ptr(),
            )
        };
    }
    for (r, acc) in acc.iter().enumerate() {
        let o = &mut out[r0 + r];
        for (j, &a) in acc.iter().enumerate() {
            let fix = i32x4_shl(load_i32x4(&t.sums[4 * j..]), 7);
            let o = &mut o[4 * j..4 * j + 4];
            // SAFETY: `o` has 4 i32s; `v128_store` allows any alignment.
            unsafe { v128_store(o.as_mut_ptr().cast(), i32x4_sub(a, fix)) };
        }
    }
}

fn load_f32x4(x: &[f32]) -> v128 {
    let x = &x[..4];
    // SAFETY: `x` has 4 floats; `v128_load` allows any alignment.
    unsafe { v128_load(x.as_ptr().cast()) }
}

fn load_i32x4(x: &[i32]) -> v128 {
    let x = &x[..4];
    // SAFETY: `x` has 4 i32s; `v128_load` allows any alignment.
    unsafe { v128_load(x.as_ptr().cast()) }
}

pub(super) fn max_abs(x: &[f32]) -> f32 {
    let mut m = f32x4_splat(0.0);
    let mut chunks = x.chunks_exact(4);
    for c in &mut chunks {
        // `pmax(m, v)` is `m < v ? v : m`: a NaN `v` leaves `m`.
        m = f32x4_pmax(m, f32x4_abs(load_f32x4(c)));
    }
    let lanes = [
        f32x4_extract_lane::<0>(m),
        f32x4_extract_lane::<1>(m),
        f32x4_extract_lane::<2>(m),
        f32x4_extract_lane::<3>(m),
    ];
    lanes
        .iter()
        .fold(super::generic::max_abs(chunks.remainder()), |a, &b| {
            a.max(b)
        })
}

/// Four values as `quantize1` computes them: divide, clamp (NaN → lo:
/// `pmax(lo, v)` is `lo < v ? v : lo`), round half to even, add the zero point.
fn quantize4(x: &[f32], q: &Quant) -> v128 {
    let f = f32x4_div(load_f32x4(x), f32x4_splat(q.scale));
    let f = f32x4_pmin(f32x4_splat(q.hi), f32x4_pmax(f32x4_splat(q.lo), f));
    i32x4_add(
        i32x4_trunc_sat_f32x4(f32x4_nearest(f)),
        i32x4_splat(q.zero_point),
    )
}

pub(super) fn quantize(x: &[f32], q: &Quant, out: &mut [i8]) {
    let mut xs = x.chunks_exact(16);
    let mut os = out.chunks_exact_mut(16);
    for (x, o) in (&mut xs).zip(&mut os) {
        // In range already, so the saturating narrows are exact.
        let w0 = i16x8_narrow_i32x4(quantize4(&x[..4], q), quantize4(&x[4..8], q));
        let w1 = i16x8_narrow_i32x4(quantize4(&x[8..12], q), quantize4(&x[12..], q));
        let o = &mut o[..16];
        // SAFETY: `o` has 16 bytes; `v128_store` allows any alignment.
        unsafe { v128_store(o.as_mut_ptr().cast(), i8x16_narrow_i16x8(w0, w1)) };
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = quantize1(v, q);
    }
}

pub(super) fn dequant(c: &[i32], d: &DequantRow<'_>, out: &mut [f32]) {
    let n = out.len();
    assert!(c.len() == n && d.col_scales.len() == n && d.bias.is_none_or(|b| b.len() == n));
    assert!(d.zero_point == 0 || d.col_sums.len() == n);
    let rs = f32x4_splat(d.row_scale);
    let zp = i32x4_splat(d.zero_point);
    let mut j = 0;
    while j + 4 <= n {
        let mut v = load_i32x4(&c[j..]);
        if d.zero_point != 0 {
            v = i32x4_sub(v, i32x4_mul(zp, load_i32x4(&d.col_sums[j..])));
        }
        let s = f32x4_mul(rs, load_f32x4(&d.col_scales[j..]));
        let mut f = f32x4_mul(f32x4_convert_i32x4(v), s);
        if let Some(b) = d.bias {
            f = f32x4_add(f, load_f32x4(&b[j..]));
        }
        let o = &mut out[j..j + 4];
        // SAFETY: `o` has 4 floats; `v128_store` allows any alignment.
        unsafe { v128_store(o.as_mut_ptr().cast(), f) };
        j += 4;
    }
    for jj in j..n {
        out[jj] = dequant1(c[jj], jj, d);
    }
}
