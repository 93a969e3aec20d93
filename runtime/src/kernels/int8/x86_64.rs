//! x86-64 AVX2 int8 code.
//!
//! The GEMM micro-kernel computes a 4×16 tile of C in eight ymm
//! accumulators (two per row, eight columns of i32 each). Per 4 values of K
//! it loads one 64-byte group of the panel (16 columns × 4 k) as `b0`, `b1`
//! and, per row, broadcasts the row's 4 activation bytes `a` to every lane:
//!
//! - `vpabsb a` is the unsigned operand (`|a| ≤ 128`, so -128 is 0x80 = 128);
//! - `vpsignb b, a` is the signed one: `b·sign(a)`, which stays in
//!   `[-127, 127]` because weights are never -128;
//! - `vpmaddubsw` sums adjacent pairs into i16: `|a0·b0 + a1·b1| ≤ 2·128·127
//!   = 32512 < 32767`, so it never saturates;
//! - `vpmaddwd` by ones sums pairs again into i32, then `vpaddd`.
//!
//! On Zen 3 the two multiplies go to FP0/FP3, `vpsignb`/`vpabsb` to FP0/FP1
//! and `vpaddd` to any of the four pipes: 32 multiply-adds take one cycle on
//! two multiply pipes, the bound quoted in the bench.
//!
//! With AVX-512 VNNI (`tile_vnni_4x16`), over the same packed layout, one
//! zmm holds a whole 64-byte group, and one `vpdpbusd` per row and 4 k does
//! the multiply-adds straight into i32 (u8 × s8, no i16 step to saturate).
//! A is made unsigned by flipping its sign bits (`a ^ 0x80 = a + 128`:
//! `gemm_i8` flips each block of rows once; the tile's A rows hold the
//! flipped bytes), so the tile holds `Σ (a + 128)·b`; subtracting
//! `128·Σ_k b` per column (the panel's column sums) gives `Σ a·b` exactly.
//! Each row keeps four accumulators (groups of K in turn), so sixteen
//! `vpdpbusd` chains are in flight. Near `MAX_K` the sum of `(a + 128)·b`
//! can pass i32: `vpdpbusd` (not the saturating `vpdpbusds`) and the
//! adds wrap, and the final `Σ a·b` fits, so the result is still exact.
//! AVX-VNNI (`{vex} vpdpbusd ymm`, on CPUs without AVX-512 such as Alder
//! Lake and Sierra Forest) is not used yet.

use super::generic::{dequant1, quantize1, requant1};
use super::{DequantRow, Kernel, MAX_NR, MR, Quant, Requant, Tile};
use std::arch::x86_64::*;

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_avx2_4x16(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::Avx2.layout());
    // SAFETY: `check` passed (every read below stays inside `t.a` and
    // `t.b`); the caller guarantees AVX2.
    unsafe {
        match (t.mr, t.cols > 8) {
            (4, true) => tile::<4, 2>(t, out),
            (3, true) => tile::<3, 2>(t, out),
            (2, true) => tile::<2, 2>(t, out),
            (_, true) => tile::<1, 2>(t, out),
            // A panel with at most 8 columns in use (N = 24: the second
            // of two) needs only its first half: 8 columns of the 16.
            (4, false) => tile::<4, 1>(t, out),
            (3, false) => tile::<3, 1>(t, out),
            (2, false) => tile::<2, 1>(t, out),
            (_, false) => tile::<1, 1>(t, out),
        }
    }
}

/// # Safety
/// The CPU has AVX2 and AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_vnni_4x16(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::Avx512Vnni.layout());
    // SAFETY: `check` passed; the caller guarantees the features.
    unsafe {
        match t.mr {
            4 => tile_vnni::<4>(t, out),
            3 => tile_vnni::<3>(t, out),
            2 => tile_vnni::<2>(t, out),
            _ => tile_vnni::<1>(t, out),
        }
    }
}

/// Two neighbouring full panels at once (`t0.b`, `t1.b`; the same A rows):
/// each A broadcast feeds two `vpdpbusd`, so a chunk of K costs 2 B loads
/// and `R` broadcasts for `2R` products (one panel: 1 + `R` for `R`, which
/// left the kernel waiting on loads). Integer sums: the same results as
/// two [`tile_vnni_4x16`] calls.
///
/// # Safety
/// The CPU has AVX2 and AVX-512 F, BW and VNNI; `t0` and `t1` have the same
/// rows, `full` and `tail`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_vnni_4x32(
    t0: &Tile<'_>,
    t1: &Tile<'_>,
    out0: &mut [[i32; MAX_NR]; MR],
    out1: &mut [[i32; MAX_NR]; MR],
) {
    t0.check(Kernel::Avx512Vnni.layout());
    t1.check(Kernel::Avx512Vnni.layout());
    assert!(t0.mr == t1.mr && t0.full == t1.full && t0.tail.is_some() == t1.tail.is_some());
    // SAFETY: both `check`s passed; the caller guarantees the features.
    unsafe {
        match t0.mr {
            4 => tile_vnni_x2::<4>(t0, t1, out0, out1),
            3 => tile_vnni_x2::<3>(t0, t1, out0, out1),
            2 => tile_vnni_x2::<2>(t0, t1, out0, out1),
            _ => tile_vnni_x2::<1>(t0, t1, out0, out1),
        }
    }
}

/// Rows `0..R` of [`tile_vnni_4x32`].
///
/// # Safety
/// As [`tile_vnni_4x32`], `R ≤ MR`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni_x2<const R: usize>(
    t0: &Tile<'_>,
    t1: &Tile<'_>,
    out0: &mut [[i32; MAX_NR]; MR],
    out1: &mut [[i32; MAX_NR]; MR],
) {
    // U accumulators per row and panel: 2·U·R chains (16 for four rows),
    // enough for two `vpdpbusd` a cycle at a latency of 5.
    const U: usize = 2;
    let mut acc = [[[_mm512_setzero_si512(); U]; 2]; R];
    let (mut b0, mut b1) = (t0.b.as_ptr(), t1.b.as_ptr());
    let a4 = |r: usize, q: usize| {
        // SAFETY: `check`: each A row has `full·4` bytes; callers pass
        // `q < full`.
        unsafe { t0.a[r].as_ptr().add(4 * q).cast::<i32>().read_unaligned() }
    };
    let mut q = 0;
    while q + U <= t0.full {
        // SAFETY: chunks q..q + U of both panels are whole (64 bytes each).
        unsafe {
            let v0: [__m512i; U] =
                std::array::from_fn(|u| _mm512_loadu_si512(b0.add(64 * u).cast()));
            let v1: [__m512i; U] =
                std::array::from_fn(|u| _mm512_loadu_si512(b1.add(64 * u).cast()));
            for r in 0..R {
                for u in 0..U {
                    let a = _mm512_set1_epi32(a4(r, q + u));
                    acc[r][0][u] = _mm512_dpbusd_epi32(acc[r][0][u], a, v0[u]);
                    acc[r][1][u] = _mm512_dpbusd_epi32(acc[r][1][u], a, v1[u]);
                }
            }
            b0 = b0.add(64 * U);
            b1 = b1.add(64 * U);
        }
        q += U;
    }
    let tail = t0.tail.map(|tail| -> [i32; R] {
        std::array::from_fn(|r| {
            let t = &tail[r];
            i32::from_le_bytes([t[0] as u8, t[1] as u8, t[2] as u8, t[3] as u8])
        })
    });
    // The chunks left (fewer than U), then the padded tail.
    let left = (q..t0.full).map(|q| std::array::from_fn::<i32, R, _>(|r| a4(r, q)));
    for a in left.chain(tail) {
        // SAFETY: one more whole chunk of each panel (the last may be the
        // zero-padded tail: its padded A bytes are zeros in `tail`).
        unsafe {
            let (v0, v1) = (_mm512_loadu_si512(b0.cast()), _mm512_loadu_si512(b1.cast()));
            for r in 0..R {
                let a = _mm512_set1_epi32(a[r]);
                acc[r][0][0] = _mm512_dpbusd_epi32(acc[r][0][0], a, v0);
                acc[r][1][0] = _mm512_dpbusd_epi32(acc[r][1][0], a, v1);
            }
            b0 = b0.add(64);
            b1 = b1.add(64);
        }
    }
    // SAFETY: `sums` hold MAX_NR = 16 i32s; `out` rows too.
    unsafe {
        for (p, (t, out)) in [(t0, &mut *out0), (t1, &mut *out1)].into_iter().enumerate() {
            let fix = _mm512_slli_epi32::<7>(_mm512_loadu_si512(t.sums.as_ptr().cast()));
            for r in 0..R {
                let s = _mm512_add_epi32(acc[r][p][0], acc[r][p][1]);
                _mm512_storeu_si512(out[r].as_mut_ptr().cast(), _mm512_sub_epi32(s, fix));
            }
        }
    }
}

/// Rows `0..R` of the VNNI tile.
///
/// # Safety
/// AVX-512 F/BW/VNNI; `t.check` passed for the Avx512Vnni layout, `R ≤ MR`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const R: usize>(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    // U accumulators per row (groups of K taken in turn): 4·R chains of
    // `vpdpbusd` in flight, enough for two issued a cycle at a latency of 5.
    const U: usize = 4;
    let mut acc = [[_mm512_setzero_si512(); U]; R];
    let mut b = t.b.as_ptr();
    // Callers pass `q < full`.
    let a4 = |r: usize, q: usize| {
        // SAFETY: `check`: each A row has `full·4` bytes, so bytes
        // `4q..4q + 4` are in it.
        unsafe { t.a[r].as_ptr().add(4 * q).cast::<i32>().read_unaligned() }
    };
    let mut q = 0;
    while q + U <= t.full {
        // SAFETY: chunks q..q + U are whole: the panel has 64 bytes for
        // each of `chunks()` chunks.
        unsafe {
            let bs: [__m512i; U] =
                std::array::from_fn(|u| _mm512_loadu_si512(b.add(64 * u).cast()));
            for r in 0..R {
                for u in 0..U {
                    acc[r][u] =
                        _mm512_dpbusd_epi32(acc[r][u], _mm512_set1_epi32(a4(r, q + u)), bs[u]);
                }
            }
            b = b.add(64 * U);
        }
        q += U;
    }
    while q < t.full {
        // SAFETY: chunk q is whole.
        unsafe {
            let b0 = _mm512_loadu_si512(b.cast());
            for r in 0..R {
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], _mm512_set1_epi32(a4(r, q)), b0);
            }
            b = b.add(64);
        }
        q += 1;
    }
    if let Some(tail) = t.tail {
        // SAFETY: the panel has `chunks()` chunks of 64 bytes; this is the
        // last. Its padding is zero in the panel, so the padded A bytes
        // (zeros in `tail`) add nothing.
        unsafe {
            let b0 = _mm512_loadu_si512(b.cast());
            for r in 0..R {
                let t = &tail[r];
                let a = i32::from_le_bytes([t[0] as u8, t[1] as u8, t[2] as u8, t[3] as u8]);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], _mm512_set1_epi32(a), b0);
            }
        }
    }
    // SAFETY: `t.sums` holds MAX_NR = 16 i32s; `out` rows too.
    unsafe {
        let fix = _mm512_slli_epi32::<7>(_mm512_loadu_si512(t.sums.as_ptr().cast()));
        for r in 0..R {
            let s = _mm512_add_epi32(
                _mm512_add_epi32(acc[r][0], acc[r][1]),
                _mm512_add_epi32(acc[r][2], acc[r][3]),
            );
            _mm512_storeu_si512(out[r].as_mut_ptr().cast(), _mm512_sub_epi32(s, fix));
        }
    }
}

/// Rows `0..R` of the tile, columns `0..8·H` (H = 1 or 2 halves).
///
/// # Safety
/// AVX2; `t.check` passed for the Avx2 layout and `R ≤ MR`.
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize, const H: usize>(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let mut b = t.b.as_ptr();
    for q in 0..t.full {
        // SAFETY: `check`: each A row has `full·4` bytes, so bytes
        // `4q..4q+4` are in it; the panel has 64 bytes per chunk.
        unsafe {
            let a: [i32; R] =
                std::array::from_fn(|r| t.a[r].as_ptr().add(4 * q).cast::<i32>().read_unaligned());
            step::<R, H>(&mut acc, a, b);
            b = b.add(64);
        }
    }
    if let Some(tail) = t.tail {
        let a: [i32; R] = std::array::from_fn(|r| {
            i32::from_le_bytes([
                tail[r][0] as u8,
                tail[r][1] as u8,
                tail[r][2] as u8,
                tail[r][3] as u8,
            ])
        });
        // SAFETY: the panel has `chunks()` chunks of 64 bytes; this is the last.
        unsafe { step::<R, H>(&mut acc, a, b) };
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        // SAFETY: `o` has MAX_NR = 16 i32s: two unaligned 8-lane stores.
        unsafe {
            _mm256_storeu_si256(o.as_mut_ptr().cast(), acc[0]);
            _mm256_storeu_si256(o.as_mut_ptr().add(8).cast(), acc[1]);
        }
    }
}

/// `acc[r] += a[r] (4 bytes, broadcast) · b (8·H columns × 4 k)`.
///
/// # Safety
/// AVX2; `b` has 64 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn step<const R: usize, const H: usize>(
    acc: &mut [[__m256i; 2]; R],
    a: [i32; R],
    b: *const i8,
) {
    // SAFETY: the caller guarantees 64 bytes at `b`.
    let (b0, b1) = unsafe {
        (
            _mm256_loadu_si256(b.cast()),
            _mm256_loadu_si256(b.add(32).cast()),
        )
    };
    let ones = _mm256_set1_epi16(1);
    for (acc, &a) in acc.iter_mut().zip(&a) {
        let a = _mm256_set1_epi32(a);
        let ua = _mm256_abs_epi8(a);
        let p0 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(b0, a));
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(p0, ones));
        if H == 2 {
            let p1 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(b1, a));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(p1, ones));
        }
    }
}

/// `(min(0, x), max(0, x), any NaN)`: the generic `range`, 16 floats a step.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn range(x: &[f32]) -> (f32, f32, bool) {
    let z = _mm256_setzero_ps();
    let (mut lo0, mut lo1, mut hi0, mut hi1, mut nan) = (z, z, z, z, z);
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` has 16 floats.
        let (v0, v1) = unsafe {
            (
                _mm256_loadu_ps(c.as_ptr()),
                _mm256_loadu_ps(c.as_ptr().add(8)),
            )
        };
        // `minps`/`maxps` return the second operand (the running value)
        // when the first is NaN or both are zeros, as `c < lo` does.
        lo0 = _mm256_min_ps(v0, lo0);
        lo1 = _mm256_min_ps(v1, lo1);
        hi0 = _mm256_max_ps(v0, hi0);
        hi1 = _mm256_max_ps(v1, hi1);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v0, v1));
    }
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    // SAFETY: both arrays have 8 floats.
    unsafe {
        _mm256_storeu_ps(lo.as_mut_ptr(), _mm256_min_ps(lo0, lo1));
        _mm256_storeu_ps(hi.as_mut_ptr(), _mm256_max_ps(hi0, hi1));
    }
    let (tlo, thi, tnan) = super::generic::range(chunks.remainder());
    (
        lo.iter().fold(tlo, |m, &v| m.min(v)),
        hi.iter().fold(thi, |m, &v| m.max(v)),
        tnan || _mm256_movemask_ps(nan) != 0,
    )
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn max_abs(x: &[f32]) -> f32 {
    let mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let (mut m0, mut m1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` has 16 floats.
        let (v0, v1) = unsafe {
            (
                _mm256_loadu_ps(c.as_ptr()),
                _mm256_loadu_ps(c.as_ptr().add(8)),
            )
        };
        // `maxps` returns its second operand when the first is NaN.
        m0 = _mm256_max_ps(_mm256_and_ps(v0, mask), m0);
        m1 = _mm256_max_ps(_mm256_and_ps(v1, mask), m1);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` has 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_max_ps(m0, m1)) };
    let tail = super::generic::max_abs(chunks.remainder());
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// # Safety
/// The CPU has AVX2; `out.len() == x.len()`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize(x: &[f32], q: &Quant, out: &mut [i8]) {
    let scale = _mm256_set1_ps(q.scale);
    let (lo, hi) = (_mm256_set1_ps(q.lo), _mm256_set1_ps(q.hi));
    let zp = _mm256_set1_epi32(q.zero_point);
    // packs interleave 128-bit lanes; this puts the four 8-byte pieces back.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut xs = x.chunks_exact(32);
    let mut os = out.chunks_exact_mut(32);
    for (x, o) in (&mut xs).zip(&mut os) {
        // SAFETY: `x` has 32 floats: four pieces of 8.
        let v = unsafe {
            let p = x.as_ptr();
            [
                quantize8(p, scale, lo, hi, zp),
                quantize8(p.add(8), scale, lo, hi, zp),
                quantize8(p.add(16), scale, lo, hi, zp),
                quantize8(p.add(24), scale, lo, hi, zp),
            ]
        };
        // In range already, so the saturating packs are exact.
        let w01 = _mm256_packs_epi32(v[0], v[1]);
        let w23 = _mm256_packs_epi32(v[2], v[3]);
        let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
        // SAFETY: `o` has 32 bytes.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), b) };
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = quantize1(v, q);
    }
}

/// Eight values at `x`, as `quantize1` computes them: divide, clamp (NaN →
/// lo: `maxps` returns its second operand for NaN), round half to even (the
/// default MXCSR mode), add the zero point.
///
/// # Safety
/// AVX2; 8 floats readable at `x`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quantize8(x: *const f32, scale: __m256, lo: __m256, hi: __m256, zp: __m256i) -> __m256i {
    // SAFETY: the caller guarantees 8 floats at `x`.
    let f = unsafe { _mm256_loadu_ps(x) };
    let f = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(f, scale), lo), hi);
    _mm256_add_epi32(_mm256_cvtps_epi32(f), zp)
}

/// # Safety
/// The CPU has AVX2; `c`, `out`, `d.col_scales` (and `d.bias`, and with a
/// zero point `d.col_sums`) have the same length.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant(c: &[i32], d: &DequantRow<'_>, out: &mut [f32]) {
    let n = out.len();
    assert!(c.len() == n && d.col_scales.len() == n && d.bias.is_none_or(|b| b.len() == n));
    assert!(d.zero_point == 0 || d.col_sums.len() == n);
    let rs = _mm256_set1_ps(d.row_scale);
    let zp = _mm256_set1_epi32(d.zero_point);
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY: `j + 8 ≤ n`, and every slice read has length `n` (asserted).
        unsafe {
            let mut v = _mm256_loadu_si256(c.as_ptr().add(j).cast());
            if d.zero_point != 0 {
                let s = _mm256_loadu_si256(d.col_sums.as_ptr().add(j).cast());
                v = _mm256_sub_epi32(v, _mm256_mullo_epi32(zp, s));
            }
            let s = _mm256_mul_ps(rs, _mm256_loadu_ps(d.col_scales.as_ptr().add(j)));
            let mut f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
            if let Some(b) = d.bias {
                f = _mm256_add_ps(f, _mm256_loadu_ps(b.as_ptr().add(j)));
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(j), f);
        }
        j += 8;
    }
    for jj in j..n {
        out[jj] = dequant1(c[jj], jj, d);
    }
}

/// [`dequant`] 16 lanes at a time: per value the same operations in the
/// same order (`c − zp·sum` wrapping, to f32, times `row·col` scale, plus
/// bias), so the same bits.
///
/// # Safety
/// The CPU has AVX-512 F and AVX2.
#[target_feature(enable = "avx2,avx512f")]
pub(super) unsafe fn dequant512(c: &[i32], d: &DequantRow<'_>, out: &mut [f32]) {
    let n = out.len();
    assert!(c.len() == n && d.col_scales.len() == n && d.bias.is_none_or(|b| b.len() == n));
    assert!(d.zero_point == 0 || d.col_sums.len() == n);
    let rs = _mm512_set1_ps(d.row_scale);
    let zp = _mm512_set1_epi32(d.zero_point);
    let mut j = 0;
    while j + 16 <= n {
        // SAFETY: `j + 16 ≤ n`, and every slice read has length `n` (asserted).
        unsafe {
            let mut v = _mm512_loadu_si512(c.as_ptr().add(j).cast());
            if d.zero_point != 0 {
                let s = _mm512_loadu_si512(d.col_sums.as_ptr().add(j).cast());
                v = _mm512_sub_epi32(v, _mm512_mullo_epi32(zp, s));
            }
            let s = _mm512_mul_ps(rs, _mm512_loadu_ps(d.col_scales.as_ptr().add(j)));
            let mut f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
            if let Some(b) = d.bias {
                f = _mm512_add_ps(f, _mm512_loadu_ps(b.as_ptr().add(j)));
            }
            _mm512_storeu_ps(out.as_mut_ptr().add(j), f);
        }
        j += 16;
    }
    // SAFETY: AVX2 is present; the rest is the same per value.
    unsafe { dequant(&c[j..], &d.tail(j), &mut out[j..]) }
}

/// The requant epilogue (`generic::requant1` per value), 32 at a time:
/// add the offset, to f32, multiply, clamp, `cvtps2dq` (round half to even
/// in the default MXCSR mode, as `requant1`'s trick), add the zero point,
/// pack to bytes (in range already, so the saturating packs are exact).
///
/// # Safety
/// The CPU has AVX2; the four slices have the same length.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requant(c: &[i32], offset: &[i32], mult: &[f32], r: &Requant, out: &mut [i8]) {
    let n = out.len();
    assert!(c.len() == n && offset.len() == n && mult.len() == n);
    let (lo, hi) = (_mm256_set1_ps(r.lo), _mm256_set1_ps(r.hi));
    let zp = _mm256_set1_epi32(r.zero_point as i32);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut j = 0;
    while j + 32 <= n {
        // SAFETY: `j + 32 ≤ n` and every slice has length `n` (asserted).
        unsafe {
            let p = (
                c.as_ptr().add(j),
                offset.as_ptr().add(j),
                mult.as_ptr().add(j),
            );
            let v = [
                requant8(p, 0, lo, hi, zp),
                requant8(p, 8, lo, hi, zp),
                requant8(p, 16, lo, hi, zp),
                requant8(p, 24, lo, hi, zp),
            ];
            let w01 = _mm256_packs_epi32(v[0], v[1]);
            let w23 = _mm256_packs_epi32(v[2], v[3]);
            let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(j).cast(), b);
        }
        j += 32;
    }
    for k in j..n {
        out[k] = requant1(c[k].wrapping_add(offset[k]), mult[k], r);
    }
}

/// Eight values at `at` of the three arrays `p`, before packing.
///
/// # Safety
/// AVX2; 8 values readable at `at` in each array.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn requant8(
    (c, offset, mult): (*const i32, *const i32, *const f32),
    at: usize,
    lo: __m256,
    hi: __m256,
    zp: __m256i,
) -> __m256i {
    // SAFETY: the caller guarantees 8 values at `at`.
    unsafe {
        let a = _mm256_add_epi32(
            _mm256_loadu_si256(c.add(at).cast()),
            _mm256_loadu_si256(offset.add(at).cast()),
        );
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_loadu_ps(mult.add(at)));
        let f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
        _mm256_add_epi32(_mm256_cvtps_epi32(f), zp)
    }
}
