//! 2-D f32 transpose between strided matrices: `dst[j·ds + i] = src[i·ss +
//! j]`. The int8 convs turn an image channels-last and their `[positions,
//! M]` results back to `[M, positions]` with it. x86-64 with AVX moves 8×8
//! tiles in registers (eight loads, 24 shuffles, eight stores); the edges,
//! and other targets, run the portable loop in 16×16 tiles so both sides
//! stay in cache. Transposing moves values without arithmetic, so every
//! path gives the same bits.

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `i < rows`, `j <
/// cols`. Panics if a view does not fit its slice.
pub fn transpose_f32(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_stride >= cols
            && dst_stride >= rows
            && (rows - 1) * src_stride + cols <= src.len()
            && (cols - 1) * dst_stride + rows <= dst.len(),
        "transpose: {rows}×{cols} (strides {src_stride}, {dst_stride}) does not fit {} and {} values",
        src.len(),
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx2() {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: AVX is present (AVX2 implies it); every tile read or
        // written lies inside the views checked above.
        unsafe { tiles_avx(src, src_stride, r8, c8, dst, dst_stride) };
        portable(src, src_stride, 0..rows, c8..cols, dst, dst_stride);
        portable(src, src_stride, r8..rows, 0..c8, dst, dst_stride);
        return;
    }
    portable(src, src_stride, 0..rows, 0..cols, dst, dst_stride);
}

fn portable(
    src: &[f32],
    ss: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    dst: &mut [f32],
    ds: usize,
) {
    const T: usize = 16;
    for ib in rows.clone().step_by(T) {
        let ie = (ib + T).min(rows.end);
        for jb in cols.clone().step_by(T) {
            let je = (jb + T).min(cols.end);
            for j in jb..je {
                for i in ib..ie {
                    dst[j * ds + i] = src[i * ss + j];
                }
            }
        }
    }
}

/// The 8×8 tiles of the first `rows × cols` (both multiples of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tiles_avx(src: &[f32], ss: usize, rows: usize, cols: usize, dst: &mut [f32], ds: usize) {
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // 32×32 blocks of tiles: a block's destination lines are filled while
    // they are still in L1 (with tile-by-tile rows across the whole width,
    // each line was loaded once per tile that writes to it).
    const B: usize = 32;
    for ib in (0..rows).step_by(B) {
        for jb in (0..cols).step_by(B) {
            for i in (ib..rows.min(ib + B)).step_by(8) {
                for j in (jb..cols.min(jb + B)).step_by(8) {
                    // SAFETY: AVX is enabled here; the tile is inside the
                    // views (rows and cols are multiples of 8 within them).
                    unsafe { tile(s, ss, d, ds, i, j) };
                }
            }
        }
    }
}

/// One 8×8 tile at (i, j).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn tile(s: *const f32, ss: usize, d: *mut f32, ds: usize, i: usize, j: usize) {
    use std::arch::x86_64::*;
    {
        {
            // SAFETY: rows i..i+8 and columns j..j+8 are inside the
            // source view, and their transposes inside the destination one
            // (checked by transpose_f32).
            unsafe {
                let r: [__m256; 8] =
                    std::array::from_fn(|k| _mm256_loadu_ps(s.add((i + k) * ss + j)));
                // pairs, then quads, then halves
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let o = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (k, v) in o.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add((j + k) * ds + i), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_and_stride_matches_the_definition() {
        for (rows, cols) in [
            (1, 1),
            (8, 8),
            (16, 24),
            (7, 9),
            (19, 37),
            (64, 3),
            (3, 64),
            (33, 17),
        ] {
            for (pad_s, pad_d) in [(0, 0), (5, 3)] {
                let (ss, ds) = (cols + pad_s, rows + pad_d);
                let src: Vec<f32> = (0..rows * ss).map(|v| v as f32 * 0.5 - 7.0).collect();
                let mut dst = vec![f32::NAN; cols * ds];
                transpose_f32(&src, ss, rows, cols, &mut dst, ds);
                for i in 0..rows {
                    for j in 0..cols {
                        assert_eq!(dst[j * ds + i], src[i * ss + j], "{rows}×{cols} ({i}, {j})");
                    }
                }
                // the padding of each destination row is left alone
                for j in 0..cols {
                    assert!(
                        dst[j * ds + rows..][..pad_d.min(ds - rows)]
                            .iter()
                            .all(|v| v.is_nan())
                    );
                }
            }
        }
    }

    #[test]
    fn a_view_that_does_not_fit_panics() {
        let r = std::panic::catch_unwind(|| {
            let mut d = vec![0f32; 8];
            transpose_f32(&[0f32; 8], 4, 3, 4, &mut d, 3);
        });
        assert!(r.is_err());
    }
}
