//! The sparse encodings of constant tensors (FORMAT.md, "Encodings", ids 32
//! `sparse-bitmask` and 33 `sparse-csr`), for any dtype: an element is zero
//! when all its bytes are zero, so values (including -0.0 and NaN payloads)
//! round-trip bit for bit.
//!
//! The reader decodes either into a dense owned buffer at load (the weight
//! is then private memory, not a view of the mapped file). Decoding checks
//! every count against the bytes present before allocating, and a sparse
//! tensor may not decode to more than [`MAX_ELEMS_PER_BYTE`] elements per
//! stored byte (a bitmask holds at most 8), so a file cannot make a reader
//! allocate more than 64 × dtype size × its own length.

use crate::tensor::AlignedBuf;

/// Elements a `sparse-csr` tensor may decode to per stored byte. A writer
/// stores a sparser tensor (say, all zeros) as a bitmask instead.
pub const MAX_ELEMS_PER_BYTE: usize = 64;

/// Bytes of one column index in `sparse-csr` for rows of `cols` elements.
pub fn index_width(cols: usize) -> usize {
    if cols <= 1 << 16 { 2 } else { 4 }
}

/// Rows and columns of `sparse-csr`: the last dim is the row; rank 0 is 1×1.
pub fn csr_shape(dims: &[usize]) -> Option<(usize, usize)> {
    match dims.split_last() {
        None => Some((1, 1)),
        Some((&cols, lead)) => {
            let rows = lead.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
            Some((rows, cols))
        }
    }
}

#[cfg(feature = "write")]
fn is_zero(e: &[u8]) -> bool {
    e.iter().all(|&b| b == 0)
}

/// Number of elements (of `size` bytes) that are not all-zero bytes.
#[cfg(feature = "write")]
pub fn count_nonzero(bytes: &[u8], size: usize) -> usize {
    bytes.chunks_exact(size).filter(|e| !is_zero(e)).count()
}

/// Stored length of `sparse-bitmask` for `n` elements with `nnz` nonzeros.
#[cfg(feature = "write")]
pub fn bitmask_len(n: usize, nnz: usize, size: usize) -> usize {
    n.div_ceil(8) + nnz * size
}

/// Stored length of `sparse-csr`, or `None` when the tensor cannot use it
/// (counts past u32, or more than [`MAX_ELEMS_PER_BYTE`] elements per byte).
#[cfg(feature = "write")]
pub fn csr_len(dims: &[usize], nnz: usize, size: usize) -> Option<usize> {
    let (rows, cols) = csr_shape(dims)?;
    if nnz > u32::MAX as usize || rows > u32::MAX as usize || cols as u64 > 1 << 32 {
        return None;
    }
    let len = 4 + rows * 4 + nnz * (index_width(cols) + size);
    (rows * cols <= len * MAX_ELEMS_PER_BYTE).then_some(len)
}

/// `sparse-bitmask`: ceil(n/8) mask bytes (element i is bit i%8 of byte i/8),
/// then the nonzero elements in order.
#[cfg(feature = "write")]
pub fn encode_bitmask(bytes: &[u8], size: usize, out: &mut Vec<u8>) {
    let n = bytes.len() / size;
    let mask_at = out.len();
    out.resize(mask_at + n.div_ceil(8), 0);
    for (i, e) in bytes.chunks_exact(size).enumerate() {
        if !is_zero(e) {
            out[mask_at + i / 8] |= 1 << (i % 8);
            out.extend_from_slice(e);
        }
    }
}

/// `sparse-csr`: u32 nnz, u32 count per row, the column indices (u16 or u32,
/// [`index_width`]) of all rows, then the nonzero elements in order.
/// The caller checked [`csr_len`].
#[cfg(feature = "write")]
pub fn encode_csr(bytes: &[u8], dims: &[usize], size: usize, out: &mut Vec<u8>) {
    let Some((rows, cols)) = csr_shape(dims) else {
        return;
    };
    let width = index_width(cols);
    let nnz = count_nonzero(bytes, size);
    out.extend_from_slice(&(nnz as u32).to_le_bytes());
    let row_bytes = cols * size;
    let row = |r: usize| &bytes[r * row_bytes..][..row_bytes];
    for r in 0..rows {
        let c = count_nonzero(row(r), size) as u32;
        out.extend_from_slice(&c.to_le_bytes());
    }
    for r in 0..rows {
        for (j, e) in row(r).chunks_exact(size).enumerate() {
            if !is_zero(e) {
                out.extend_from_slice(&(j as u32).to_le_bytes()[..width]);
            }
        }
    }
    for e in bytes.chunks_exact(size) {
        if !is_zero(e) {
            out.extend_from_slice(e);
        }
    }
}

/// Decode `sparse-bitmask` holding `n` elements of `size` bytes.
pub fn decode_bitmask(raw: &[u8], n: usize, size: usize) -> Result<AlignedBuf, String> {
    let mask_len = n.div_ceil(8);
    let Some(mask) = raw.get(..mask_len) else {
        return Err(format!(
            "bitmask of {n} elements needs {mask_len} bytes, has {}",
            raw.len()
        ));
    };
    if !n.is_multiple_of(8) && mask[mask_len - 1] >> (n % 8) != 0 {
        return Err("bitmask has bits set past the last element".into());
    }
    let pop: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
    let want = mask_len + pop * size;
    if raw.len() != want {
        return Err(format!(
            "bitmask marks {pop} nonzero elements, so {want} bytes are needed; has {}",
            raw.len()
        ));
    }
    let mut buf = AlignedBuf::zeroed(n * size);
    let dst = buf.as_bytes_mut();
    let mut vals = raw[mask_len..].chunks_exact(size);
    for (bi, &b) in mask.iter().enumerate() {
        let mut bits = b;
        while bits != 0 {
            let i = bi * 8 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let v = vals.next().ok_or("bitmask and values disagree")?;
            dst[i * size..][..size].copy_from_slice(v);
        }
    }
    Ok(buf)
}

/// Decode `sparse-csr` holding a tensor of `dims`, elements of `size` bytes.
pub fn decode_csr(raw: &[u8], dims: &[usize], size: usize) -> Result<AlignedBuf, String> {
    let (rows, cols) = csr_shape(dims).ok_or("dims overflow")?;
    let n = rows.checked_mul(cols).ok_or("dims overflow")?;
    if n > raw.len().saturating_mul(MAX_ELEMS_PER_BYTE) {
        return Err(format!(
            "{n} elements from {} stored bytes is more than {MAX_ELEMS_PER_BYTE} per byte",
            raw.len()
        ));
    }
    let width = index_width(cols);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if raw.len() < 4 {
        return Err(format!("{} bytes, too short for the count", raw.len()));
    }
    let nnz = u32_at(raw, 0) as usize;
    // rows ≤ n ≤ 8·len and nnz < 2^32: none of this overflows a u64, but
    // check anyway so 32-bit targets are safe too.
    let want = rows
        .checked_mul(4)
        .and_then(|r| nnz.checked_mul(width + size)?.checked_add(r))
        .and_then(|x| x.checked_add(4));
    if want != Some(raw.len()) {
        return Err(format!(
            "{nnz} nonzeros in {rows} rows need {} bytes, has {}",
            want.map_or("too many".to_string(), |w| w.to_string()),
            raw.len()
        ));
    }
    let counts = &raw[4..4 + rows * 4];
    let idx = &raw[4 + rows * 4..4 + rows * 4 + nnz * width];
    let vals = &raw[4 + rows * 4 + nnz * width..];
    let mut buf = AlignedBuf::zeroed(n * size);
    let dst = buf.as_bytes_mut();
    let mut at = 0usize;
    for r in 0..rows {
        let c = u32_at(counts, r * 4) as usize;
        if c > cols || c > nnz - at {
            return Err(format!(
                "row {r} claims {c} nonzeros (row has {cols}, {} left)",
                nnz - at
            ));
        }
        let mut prev: Option<usize> = None;
        for e in at..at + c {
            let j = if width == 2 {
                u16::from_le_bytes([idx[e * 2], idx[e * 2 + 1]]) as usize
            } else {
                u32_at(idx, e * 4) as usize
            };
            if j >= cols || prev.is_some_and(|p| j <= p) {
                return Err(format!(
                    "row {r}: column index {j} is out of range or not increasing"
                ));
            }
            prev = Some(j);
            dst[(r * cols + j) * size..][..size].copy_from_slice(&vals[e * size..][..size]);
        }
        at += c;
    }
    if at != nnz {
        return Err(format!("rows hold {at} nonzeros, the header says {nnz}"));
    }
    Ok(buf)
}

#[cfg(test)]
#[cfg(feature = "write")]
mod tests {
    use super::*;

    /// Deterministic f32 data with about `zeros` of it zero.
    fn data(n: usize, zeros: f64, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let u = (s >> 8) as f64 / (1u32 << 24) as f64;
                if u < zeros { 0.0 } else { (u - 0.5) as f32 }
            })
            .collect()
    }

    #[test]
    fn both_encodings_round_trip_bit_for_bit() {
        for &dims in &[&[7usize, 13][..], &[3, 2, 70000], &[], &[9], &[1, 1]] {
            let n: usize = dims.iter().product();
            for zeros in [0.0, 0.3, 0.9, 0.99, 1.0] {
                let mut f = data(n, zeros, 1 + n as u32);
                if n > 2 {
                    f[1] = -0.0; // not zero bytes: kept
                }
                let i8s: Vec<u8> = f.iter().map(|x| (x * 200.0) as i8 as u8).collect();
                for (bytes, size) in [(bytemuck::cast_slice::<f32, u8>(&f), 4), (&i8s[..], 1)] {
                    let nnz = count_nonzero(bytes, size);
                    let mut b = Vec::new();
                    encode_bitmask(bytes, size, &mut b);
                    assert_eq!(b.len(), bitmask_len(n, nnz, size));
                    assert_eq!(decode_bitmask(&b, n, size).unwrap().as_bytes(), bytes);
                    if let Some(len) = csr_len(dims, nnz, size) {
                        let mut c = Vec::new();
                        encode_csr(bytes, dims, size, &mut c);
                        assert_eq!(c.len(), len, "{dims:?} {zeros}");
                        assert_eq!(decode_csr(&c, dims, size).unwrap().as_bytes(), bytes);
                    } else {
                        // Only a (nearly) empty tensor is refused, for its size.
                        assert!(nnz * 64 < n, "{dims:?} {zeros}: csr refused");
                    }
                }
            }
        }
    }

    #[test]
    fn wide_rows_use_u32_indices() {
        assert_eq!(index_width(65536), 2);
        assert_eq!(index_width(65537), 4);
        let mut f: Vec<f32> = (0..2 * 70000).map(|i| (i % 7 == 0) as u8 as f32).collect();
        f[69999] = 1.0;
        f[70000 + 65536] = 2.0;
        let nnz = f.iter().filter(|&&x| x != 0.0).count();
        let bytes = bytemuck::cast_slice::<f32, u8>(&f);
        let mut c = Vec::new();
        encode_csr(bytes, &[2, 70000], 4, &mut c);
        assert_eq!(c.len(), 4 + 8 + nnz * (4 + 4));
        assert_eq!(decode_csr(&c, &[2, 70000], 4).unwrap().as_bytes(), bytes);
    }

    #[test]
    fn corrupt_bitmasks_are_errors() {
        let f = [0.0f32, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0];
        let bytes = bytemuck::cast_slice::<f32, u8>(&f);
        let mut b = Vec::new();
        encode_bitmask(bytes, 4, &mut b);
        assert_eq!(b.len(), 2 + 4 * 4);
        for cut in 0..b.len() {
            let e = decode_bitmask(&b[..cut], 9, 4).unwrap_err();
            assert!(e.contains("bytes"), "{e}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode_bitmask(&extra, 9, 4).is_err());
        // One more bit than values stored.
        let mut pop = b.clone();
        pop[0] |= 1;
        let e = decode_bitmask(&pop, 9, 4).unwrap_err();
        assert!(e.contains("5 nonzero"), "{e}");
        // A bit past the last element.
        let mut past = b.clone();
        past[1] |= 2;
        let e = decode_bitmask(&past, 9, 4).unwrap_err();
        assert!(e.contains("past the last"), "{e}");
    }

    #[test]
    fn corrupt_csr_is_an_error() {
        let f = [
            0.0f32, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0,
        ];
        let dims = [3, 4];
        let bytes = bytemuck::cast_slice::<f32, u8>(&f);
        let mut c = Vec::new();
        encode_csr(bytes, &dims, 4, &mut c);
        assert_eq!(decode_csr(&c, &dims, 4).unwrap().as_bytes(), bytes);
        for cut in 0..c.len() {
            assert!(decode_csr(&c[..cut], &dims, 4).is_err(), "cut at {cut}");
        }
        // Layout: nnz @0, counts @4 (2, 1, 1), u16 indices @16, values @24.
        assert_eq!(&c[4..16], &[2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        let idx = 16;
        let mut oob = c.clone();
        oob[idx + 4] = 4; // row 1's column 0 -> 4, past the 4 columns
        let e = decode_csr(&oob, &dims, 4).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let mut order = c.clone();
        order[idx] = 3; // row 0: columns 3, 3
        assert!(
            decode_csr(&order, &dims, 4)
                .unwrap_err()
                .contains("increasing")
        );
        let mut counts = c.clone();
        counts[4] = 3; // row 0 claims 3, total still 4: row 2 runs out
        assert!(decode_csr(&counts, &dims, 4).is_err());
        let mut counts = c.clone();
        counts[4] = 1; // rows sum to 3, header says 4
        let e = decode_csr(&counts, &dims, 4).unwrap_err();
        assert!(e.contains("header says 4"), "{e}");
        let mut nnz = c.clone();
        nnz[0] = 200;
        assert!(decode_csr(&nnz, &dims, 4).unwrap_err().contains("bytes"));
        // A huge claimed shape from a few bytes is refused before allocating.
        let e = decode_csr(&[0, 0, 0, 0, 0, 0, 0, 0], &[1, usize::MAX / 2], 4).unwrap_err();
        assert!(e.contains("per byte"), "{e}");
    }
}
