//! The `int8-per-channel` encodings of f32 constants (FORMAT.md,
//! "Encodings", ids 16 and 18): weight-only int8 storage for layers that
//! compute in f32.
//!
//! A tensor with dims `d` and `axis` is `ch = d[axis]` slices; element `i`
//! belongs to slice `(i / inner) % ch`, where `inner` is the product of the
//! dims after `axis`. Stored: `ch` little-endian scales (f32 for id 16, IEEE
//! half for id 18), then one i8 per element; the value is
//! `q · scale[slice]`. The writer picks per slice the smallest half at or
//! above `max |x| / 127` ([`f16_grid_up`]) and `q = round(x / scale)`, and
//! writes id 18 when every scale is such a half; otherwise (a slice with
//! |x| over 8·10⁶) id 16 with `scale = max |x| / 127`. Each value moves by
//! at most half a step (of the rounded scale; below 2·10⁻³ the largest may
//! also clip by up to 7.6·10⁻⁶); a slice of zeros has scale 0.

use super::Encoding;

/// Slices along `axis` and the elements per slice run, for `dims`.
fn geometry(dims: &[usize], axis: usize) -> (usize, usize) {
    (dims[axis], dims[axis + 1..].iter().product())
}

/// Bytes per scale of an int8 encoding (4 for id 16, 2 for id 18).
pub fn scale_bytes(enc: Encoding) -> usize {
    if enc == Encoding::Int8PerChannelF16 {
        2
    } else {
        4
    }
}

/// Bytes of the encoding `enc` of a tensor with `dims`, quantized along `axis`.
pub fn encoded_len(dims: &[usize], axis: usize, enc: Encoding) -> Option<usize> {
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    dims.get(axis)?
        .checked_mul(scale_bytes(enc))?
        .checked_add(count)
}

/// The scale `s` (≥ 0) moved onto the IEEE halves, as f32: the smallest
/// half at or above it (a half within 2⁻¹⁶ below counts), so `|x| / scale`
/// rounds to at most 127 and the step grows by at most 2⁻¹⁰ of itself (less
/// than 1/256 among the subnormal halves down to 2⁻¹⁶). Below 2⁻¹⁶ (|x|
/// under 2·10⁻³, nearly dead channels) the subnormal steps are too coarse
/// for that: the largest half at or below `s` instead, where the largest
/// values clip at ±127 by at most 127·2⁻²⁴ ≈ 7.6·10⁻⁶ (0 below the smallest
/// subnormal). Either way the largest value maps to ±127, so encoding the
/// decoded values again finds the same scale. `s` itself above 65504.
pub fn f16_grid_up(s: f32) -> f32 {
    if s.is_nan() || s <= 0.0 || s > 65504.0 {
        return s;
    }
    if s < 1.0 / 65536.0 {
        let h = half::f16::from_f32(s);
        let h = if h.to_f32() > s {
            half::f16::from_bits(h.to_bits() - 1)
        } else {
            h
        };
        return h.to_f32();
    }
    let h = half::f16::from_f32(s);
    let h = if h.to_f32() < s * (1.0 - 1.0 / 65536.0) {
        half::f16::from_bits(h.to_bits() + 1)
    } else {
        h
    };
    if h.is_finite() { h.to_f32() } else { s }
}

/// Largest `|x|` of each slice along `axis` (`dims[axis]` of them) of `x`
/// (row-major `dims`): what each slice's scale comes from.
pub fn slice_max(x: &[f32], dims: &[usize], axis: usize) -> Vec<f32> {
    let (ch, inner) = geometry(dims, axis);
    let mut max = vec![0f32; ch];
    for (i, &v) in x.iter().enumerate() {
        let c = (i / inner.max(1)) % ch;
        max[c] = max[c].max(v.abs());
    }
    max
}

/// Append the encoding of `x` (f32, row-major `dims`) to `out` and return
/// which (id 18 when every scale is a half, else 16). Every value must be
/// finite (the caller checks: an inf or NaN has no int8 scale).
pub fn encode(x: &[f32], dims: &[usize], axis: usize, out: &mut Vec<u8>) -> Encoding {
    let (ch, inner) = geometry(dims, axis);
    let max = slice_max(x, dims, axis);
    let halves: Vec<f32> = max.iter().map(|&m| f16_grid_up(m / 127.0)).collect();
    let is_half = |s: &f32| half::f16::from_f32(*s).to_f32() == *s;
    let (enc, scales) = if halves.iter().all(is_half) {
        for s in &halves {
            out.extend_from_slice(&half::f16::from_f32(*s).to_bits().to_le_bytes());
        }
        (Encoding::Int8PerChannelF16, halves)
    } else {
        let scales: Vec<f32> = max.iter().map(|&m| m / 127.0).collect();
        for s in &scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        (Encoding::Int8PerChannel, scales)
    };
    for (i, &v) in x.iter().enumerate() {
        let s = scales[(i / inner.max(1)) % ch];
        let q = if s > 0.0 {
            (v / s).round().clamp(-127.0, 127.0)
        } else {
            0.0
        };
        out.push(q as i8 as u8);
    }
    enc
}

/// Decode `raw` (exactly [`encoded_len`] bytes of encoding `enc`) into f32 values.
pub fn decode(raw: &[u8], dims: &[usize], axis: usize, enc: Encoding) -> Result<Vec<f32>, String> {
    let (ch, inner) = geometry(dims, axis);
    let width = scale_bytes(enc);
    let (head, q) = raw.split_at(width * ch);
    let scales: Vec<f32> = head
        .chunks_exact(width)
        .map(|b| match *b {
            [a, b] => half::f16::from_bits(u16::from_le_bytes([a, b])).to_f32(),
            [a, b, c, d] => f32::from_le_bytes([a, b, c, d]),
            _ => unreachable!("scales are 2 or 4 bytes"),
        })
        .collect();
    if let Some((c, s)) = scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s >= 0.0))
    {
        return Err(format!("scale {c} is {s}; scales are finite and ≥ 0"));
    }
    Ok(q.iter()
        .enumerate()
        .map(|(i, &b)| b as i8 as f32 * scales[(i / inner.max(1)) % ch])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_moves_each_value_by_at_most_half_a_step() {
        // [3, 2, 4] along each axis, slices of very different ranges; with
        // `huge` one slice's scale is above the largest half (f32 scales)
        let dims = [3usize, 2, 4];
        for huge in [false, true] {
            let x: Vec<f32> = (0..24i32)
                .map(|i| {
                    let range = if huge && i < 8 {
                        1e7
                    } else {
                        10f32.powi(i % 3 - 1)
                    };
                    ((i * 7919 % 23) as f32 - 11.0) * range
                })
                .collect();
            for axis in 0..3 {
                let mut out = Vec::new();
                let enc = encode(&x, &dims, axis, &mut out);
                let want = if huge {
                    Encoding::Int8PerChannel
                } else {
                    Encoding::Int8PerChannelF16
                };
                assert_eq!(enc, want, "huge {huge} axis {axis}");
                assert_eq!(out.len(), encoded_len(&dims, axis, enc).unwrap());
                let y = decode(&out, &dims, axis, enc).unwrap();
                let (ch, inner) = geometry(&dims, axis);
                for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
                    let c = (i / inner) % ch;
                    let max = x
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| (j / inner) % ch == c)
                        .map(|(_, v)| v.abs())
                        .fold(0.0, f32::max);
                    assert!(
                        (a - b).abs() <= max / 127.0 * 0.5 * (1.0 + 1.0 / 1024.0) + 1e-7,
                        "axis {axis} element {i}: {a} -> {b}"
                    );
                }
                // Storing the decoded values again gives the same bytes.
                let mut again = Vec::new();
                assert_eq!(encode(&y, &dims, axis, &mut again), enc);
                assert_eq!(again, out, "huge {huge} axis {axis}");
            }
        }
    }

    #[test]
    fn scales_round_up_to_halves() {
        for s in [
            1.0f32 / 127.0,
            0.3,
            1e-3,
            7.0e-5,
            100.0,
            65504.0,
            5e-5,
            2e-5,
        ] {
            let u = f16_grid_up(s);
            assert!(
                u >= s * (1.0 - 1.0 / 65536.0) && u - s <= (s / 1024.0).max(1.0 / 16777216.0),
                "{s} -> {u}"
            );
            assert_eq!(half::f16::from_f32(u).to_f32(), u, "{s} -> {u} is a half");
            assert_eq!(f16_grid_up(u), u, "{s} -> {u} is a fixed point");
        }
        // below 2^-16: the half at or below, at most 2^-24 under
        for s in [1e-5f32, 1e-6, 1e-9] {
            let u = f16_grid_up(s);
            assert!(u <= s && s - u <= 1.0 / 16777216.0, "{s} -> {u}");
            assert_eq!(half::f16::from_f32(u).to_f32(), u, "{s} -> {u} is a half");
            assert_eq!(f16_grid_up(u), u, "{s} -> {u} is a fixed point");
        }
        // above the largest half, zero: unchanged
        for s in [70000.0f32, 0.0] {
            assert_eq!(f16_grid_up(s), s);
        }
    }

    #[test]
    fn encoding_decoded_values_again_gives_the_same_bytes_at_every_scale() {
        // One slice [m, -m/3, m/7, 0.3m] for m over 2e-9..2e7, dense in the
        // subnormal-half range where a rounded-up scale could lose steps.
        let mut m = 2e-9f32;
        while m < 2e7 {
            let x = [m, -m / 3.0, m / 7.0, 0.3 * m];
            let mut out = Vec::new();
            let enc = encode(&x, &[4], 0, &mut out);
            let y = decode(&out, &[4], 0, enc).unwrap();
            let mut again = Vec::new();
            assert_eq!(encode(&y, &[4], 0, &mut again), enc, "m = {m:e}");
            assert_eq!(again, out, "m = {m:e}");
            // the largest value keeps all 127 steps (below the smallest
            // subnormal scale, 127·2^-24, the slice is stored as zeros)
            let want = if m >= 127.0 / 16777216.0 { 127 } else { 0 };
            assert_eq!(out[out.len() - 4] as i8, want, "m = {m:e}");
            m *= 1.013;
        }
    }

    #[test]
    fn zero_slices_and_bad_scales() {
        let mut out = Vec::new();
        let enc = encode(&[0.0, 0.0, 1.0, -2.0], &[2, 2], 0, &mut out);
        assert_eq!(enc, Encoding::Int8PerChannelF16);
        let s = f16_grid_up(2.0 / 127.0);
        assert_eq!(
            decode(&out, &[2, 2], 0, enc).unwrap(),
            vec![0.0, 0.0, (1.0 / s).round() * s, -127.0 * s]
        );
        for bad in [
            half::f16::NAN,
            half::f16::INFINITY,
            half::f16::from_f32(-1.0),
        ] {
            let mut b = out.clone();
            b[..2].copy_from_slice(&bad.to_bits().to_le_bytes());
            let e = decode(&b, &[2, 2], 0, enc).unwrap_err();
            assert!(e.contains("scale 0 is"), "{e}");
        }
        // f32 scales (id 16)
        let mut f = 0f32.to_le_bytes().to_vec();
        f.extend_from_slice(&1f32.to_le_bytes());
        f.extend_from_slice(&[0, 0, 3, 0xFD]);
        let e = Encoding::Int8PerChannel;
        assert_eq!(
            decode(&f, &[2, 2], 0, e).unwrap(),
            vec![0.0, 0.0, 3.0, -3.0]
        );
        for bad in [f32::NAN, f32::INFINITY, -1.0] {
            let mut b = f.clone();
            b[..4].copy_from_slice(&bad.to_le_bytes());
            let err = decode(&b, &[2, 2], 0, e).unwrap_err();
            assert!(err.contains("scale 0 is"), "{err}");
        }
    }
}
