//! The `int8-per-channel` encoding of f32 constants (FORMAT.md, "Encodings",
//! id 16): weight-only int8 storage for layers that compute in f32.
//!
//! A tensor with dims `d` and `axis` is `ch = d[axis]` slices; element `i`
//! belongs to slice `(i / inner) % ch`, where `inner` is the product of the
//! dims after `axis`. Stored: `ch` little-endian f32 scales, then one i8 per
//! element; the value is `q · scale[slice]`. The writer picks
//! `scale = max |x| / 127` per slice and `q = round(x / scale)`, so each
//! value moves by at most half a step; a slice of zeros has scale 0.

/// Slices along `axis` and the elements per slice run, for `dims`.
fn geometry(dims: &[usize], axis: usize) -> (usize, usize) {
    (dims[axis], dims[axis + 1..].iter().product())
}

/// Bytes of the encoding of a tensor with `dims`, quantized along `axis`.
pub fn encoded_len(dims: &[usize], axis: usize) -> Option<usize> {
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    dims.get(axis)?.checked_mul(4)?.checked_add(count)
}

/// Append the encoding of `x` (f32, row-major `dims`) to `out`. Every value
/// must be finite (the caller checks: an inf or NaN has no int8 scale).
pub fn encode(x: &[f32], dims: &[usize], axis: usize, out: &mut Vec<u8>) {
    let (ch, inner) = geometry(dims, axis);
    let mut max = vec![0f32; ch];
    for (i, &v) in x.iter().enumerate() {
        let c = (i / inner.max(1)) % ch;
        max[c] = max[c].max(v.abs());
    }
    let scales: Vec<f32> = max.iter().map(|&m| m / 127.0).collect();
    for s in &scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for (i, &v) in x.iter().enumerate() {
        let s = scales[(i / inner.max(1)) % ch];
        let q = if s > 0.0 {
            (v / s).round().clamp(-127.0, 127.0)
        } else {
            0.0
        };
        out.push(q as i8 as u8);
    }
}

/// Decode `raw` (exactly [`encoded_len`] bytes) into f32 values.
pub fn decode(raw: &[u8], dims: &[usize], axis: usize) -> Result<Vec<f32>, String> {
    let (ch, inner) = geometry(dims, axis);
    let (head, q) = raw.split_at(4 * ch);
    let scales: Vec<f32> = head
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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
        // [3, 2, 4] along each axis, slices of very different ranges
        let dims = [3usize, 2, 4];
        let x: Vec<f32> = (0..24i32)
            .map(|i| ((i * 7919 % 23) as f32 - 11.0) * 10f32.powi(i % 3 - 1))
            .collect();
        for axis in 0..3 {
            let mut out = Vec::new();
            encode(&x, &dims, axis, &mut out);
            assert_eq!(out.len(), encoded_len(&dims, axis).unwrap());
            let y = decode(&out, &dims, axis).unwrap();
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
                    (a - b).abs() <= max / 127.0 * 0.5 * (1.0 + 1e-6),
                    "axis {axis} element {i}: {a} -> {b}"
                );
            }
            // Storing the decoded values again gives the same bytes.
            let mut again = Vec::new();
            encode(&y, &dims, axis, &mut again);
            assert_eq!(again, out, "axis {axis}");
        }
    }

    #[test]
    fn zero_slices_and_bad_scales() {
        let mut out = Vec::new();
        encode(&[0.0, 0.0, 1.0, -2.0], &[2, 2], 0, &mut out);
        assert_eq!(
            decode(&out, &[2, 2], 0).unwrap(),
            vec![0.0, 0.0, 2.0 / 127.0 * 64.0, -2.0]
        );
        for bad in [f32::NAN, f32::INFINITY, -1.0] {
            let mut b = out.clone();
            b[..4].copy_from_slice(&bad.to_le_bytes());
            let e = decode(&b, &[2, 2], 0).unwrap_err();
            assert!(e.contains("scale 0 is"), "{e}");
        }
    }
}
