//! Portable int8 code: the reference GEMM (the spec every kernel is tested
//! against), the 4×4 portable micro-kernel, and the scalar f32 helpers that
//! define the bits the vector ones must give.

use super::{DequantRow, Kernel, MAX_NR, MR, Quant, Requant, Tile};

/// The spec: `C[i][j] = Σ_k A[i][k]·B[k][j]` in i32, by the plain triple
/// loop. `A` is `m×k` row-major, `B` is `k×n` row-major, `C` is `m×n`.
pub fn reference_gemm(m: usize, k: usize, n: usize, a: &[i8], b: &[i8]) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for kk in 0..k {
            let x = a[i * k + kk] as i32;
            for j in 0..n {
                c[i * n + j] += x * b[kk * n + j] as i32;
            }
        }
    }
    c
}

/// The portable micro-kernel: a 4×4 tile, K in groups of 4 (the layout of
/// `Kernel::Generic`).
pub(super) fn tile_4x4(t: &Tile<'_>, out: &mut [[i32; MAX_NR]; MR]) {
    t.check(Kernel::Generic.layout());
    let mut acc = [[0i32; 4]; MR];
    let tail = t
        .tail
        .map(|tail| std::array::from_fn::<&[i8], MR, _>(|r| &tail[r][..4]));
    let chunks = (0..t.full)
        .map(|q| {
            (
                q,
                std::array::from_fn::<&[i8], MR, _>(|r| &t.a[r][q * 4..q * 4 + 4]),
            )
        })
        .chain(tail.map(|a| (t.full, a)));
    for (q, a) in chunks {
        let b = &t.b[q * 16..q * 16 + 16];
        for (row, a) in acc.iter_mut().zip(a).take(t.mr) {
            for (o, b) in row.iter_mut().zip(b.chunks_exact(4)) {
                *o += a[0] as i32 * b[0] as i32
                    + a[1] as i32 * b[1] as i32
                    + a[2] as i32 * b[2] as i32
                    + a[3] as i32 * b[3] as i32;
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        o[..4].copy_from_slice(a);
    }
}

/// `max |x|`, NaN ignored.
pub(super) fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// `(min(0, x), max(0, x), any NaN)`, NaN left out of the min and max.
pub(super) fn range(x: &[f32]) -> (f32, f32, bool) {
    let (mut lo, mut hi, mut nan) = ([0f32; 8], [0f32; 8], [false; 8]);
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
            nan[j] |= c[j].is_nan();
        }
    }
    let tail = chunks.remainder();
    let lo = lo.iter().chain(tail).fold(0f32, |m, &v| m.min(v));
    let hi = hi.iter().chain(tail).fold(0f32, |m, &v| m.max(v));
    (
        lo,
        hi,
        nan.contains(&true) || tail.iter().any(|v| v.is_nan()),
    )
}

/// One value, as every path must compute it.
#[inline]
pub(super) fn quantize1(x: f32, q: &Quant) -> i8 {
    // `f32::max` returns the other operand for NaN, so NaN becomes `lo`.
    let v = (x / q.scale).max(q.lo).min(q.hi);
    (v.round_ties_even() as i32 + q.zero_point) as i8
}

pub(super) fn quantize(x: &[f32], q: &Quant, out: &mut [i8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize1(v, q);
    }
}

/// One value, as every path must compute it.
#[inline]
pub(super) fn dequant1(c: i32, j: usize, d: &DequantRow<'_>) -> f32 {
    let c = if d.zero_point != 0 {
        c.wrapping_sub(d.zero_point.wrapping_mul(d.col_sums[j]))
    } else {
        c
    };
    let v = c as f32 * (d.row_scale * d.col_scales[j]);
    match d.bias {
        Some(b) => v + b[j],
        None => v,
    }
}

pub(super) fn dequant(c: &[i32], d: &DequantRow<'_>, out: &mut [f32]) {
    for (j, (o, &v)) in out.iter_mut().zip(c).enumerate() {
        *o = dequant1(v, j, d);
    }
}

/// One value of the requant epilogue, as every path must compute it:
/// clamped first (so the rounding never sees a large value), then rounded
/// half to even by adding and subtracting 1.5·2²³ (exact for `|v| < 2²²`,
/// with no rounding-mode instruction, so SSE2, NEON and wasm agree; AVX2's
/// `cvtps2dq` in the default mode rounds the same).
#[inline]
pub(super) fn requant1(acc: i32, mult: f32, r: &Requant) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = acc as f32 * mult;
    let v = if v < r.lo {
        r.lo
    } else if v > r.hi {
        r.hi
    } else {
        v
    };
    let q = (v + MAGIC) - MAGIC;
    (q as i32 + r.zero_point as i32) as i8
}

pub(super) fn requant(c: &[i32], offset: &[i32], mult: &[f32], r: &Requant, out: &mut [i8]) {
    for (((o, &v), &d), &s) in out.iter_mut().zip(c).zip(offset).zip(mult) {
        *o = requant1(v.wrapping_add(d), s, r);
    }
}
