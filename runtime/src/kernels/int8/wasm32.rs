//! wasm32 simd128 int8 code (compiled in when the build enables simd128).
//!
//! `tile_simd128_4x4`: panels of 4 columns, K in groups of 4, so one 16-byte
//! load is 4 columns × 4 k. Its low and high halves sign-extended to i16
//! (columns 0-1 and 2-3) meet the row's 4 activation bytes, extended and
//! repeated, in `i32x4.dot_i16x8_s`: each i32 lane gets two products, so an
//! accumulator holds two partial sums per column, added pairwise at the end.
//! Products are formed in i16×i16 → i32, so nothing can saturate.

use super::generic::{dequant1, quantize1};
use super::{DequantRow, Kernel, MAX_NR, MR, Quant, Tile};
use std::arch::wasm32::*;

pub(super) fn tile_simd128_4x4(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::Simd128.layout());
    match t.mr {
        4 => rows::<4>(t, out),
        3 => rows::<3>(t, out),
        2 => rows::<2>(t, out),
        _ => rows::<1>(t, out),
    }
}

/// Rows `0..R`; `t.check` passed. The whole chunks run with the A rows'
/// 4 bytes read as one i32 each (no per-chunk bounds checks or tail test:
/// V8 keeps them as scalar compares and branches), then the padded tail.
fn rows<const R: usize>(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    let mut acc = [[i32x4_splat(0); 2]; R];
    #[inline(always)]
    fn step<const R: usize>(acc: &mut [[v128; 2]; R], a: [i32; R], b: *const i8) {
        // SAFETY: the caller passes a pointer to 16 readable bytes;
        // `v128_load` allows any alignment.
        let b = unsafe { v128_load(b.cast()) };
        let (b01, b23) = (i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b));
        for (acc, &a) in acc.iter_mut().zip(&a) {
            let a = i16x8_extend_low_i8x16(i32x4_splat(a));
            acc[0] = i32x4_add(acc[0], i32x4_dot_i16x8(a, b01));
            acc[1] = i32x4_add(acc[1], i32x4_dot_i16x8(a, b23));
        }
    }
    let full = t.full;
    let rows: [*const i8; R] = std::array::from_fn(|r| t.a[r].as_ptr());
    let b = t.b.as_ptr();
    for q in 0..full {
        // SAFETY: `t.check` passed: every A row holds `full·4` bytes and
        // the panel `chunks()·16`, so chunk q < full is in bounds for both.
        let a =
            std::array::from_fn(|r| unsafe { rows[r].add(4 * q).cast::<i32>().read_unaligned() });
        // SAFETY: as above.
        step(&mut acc, a, unsafe { b.add(16 * q) });
    }
    if let Some(tail) = t.tail {
        let a = std::array::from_fn(|r| {
            let s = &tail[r];
            i32::from_le_bytes([s[0] as u8, s[1] as u8, s[2] as u8, s[3] as u8])
        });
        // the panel's last 16 bytes, which `t.check` guaranteed
        step(&mut acc, a, t.b[16 * full..16 * full + 16].as_ptr());
    }
    for (o, acc) in out.iter_mut().zip(&acc) {
        let even = i32x4_shuffle::<0, 2, 4, 6>(acc[0], acc[1]);
        let odd = i32x4_shuffle::<1, 3, 5, 7>(acc[0], acc[1]);
        let s = i32x4_add(even, odd);
        o[..4].copy_from_slice(&[
            i32x4_extract_lane::<0>(s),
            i32x4_extract_lane::<1>(s),
            i32x4_extract_lane::<2>(s),
            i32x4_extract_lane::<3>(s),
        ]);
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
