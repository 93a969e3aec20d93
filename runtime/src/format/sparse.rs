//! The sparse encodings of constant tensors (FORMAT.md, "Encodings", ids 32
//! `sparse-bitmask`, 33 `sparse-csr` and 34 `sparse-rice`), for any dtype:
//! an element is zero when all its bytes are zero, so values (including
//! -0.0 and NaN payloads) round-trip bit for bit.
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

/// Largest Rice parameter `sparse-rice` allows (gaps up to 2²⁴ in binary).
pub const MAX_RICE_K: u32 = 24;

/// The gaps between nonzero elements: for each, how many zero elements
/// precede it since the previous nonzero (or the start).
#[cfg(feature = "write")]
fn gaps(bytes: &[u8], size: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut run = 0u64;
    for e in bytes.chunks_exact(size) {
        if is_zero(e) {
            run += 1;
        } else {
            out.push(run);
            run = 0;
        }
    }
    out
}

/// Bits of the Rice code of `gaps` with parameter `k`.
#[cfg(feature = "write")]
fn rice_bits(gaps: &[u64], k: u32) -> u64 {
    gaps.iter().map(|&g| (g >> k) + 1 + k as u64).sum()
}

/// Stored length and parameter of `sparse-rice` for `n` elements of `size`
/// bytes: the `k` whose code is shortest. `None` when the tensor cannot use
/// it (more than 2³² − 1 nonzeros, or more than [`MAX_ELEMS_PER_BYTE`]
/// elements per stored byte).
#[cfg(feature = "write")]
pub fn rice_len(bytes: &[u8], size: usize) -> Option<(usize, u32)> {
    let n = bytes.len() / size;
    let gaps = gaps(bytes, size);
    if gaps.len() > u32::MAX as usize {
        return None;
    }
    let (bits, k) = (0..=MAX_RICE_K).map(|k| (rice_bits(&gaps, k), k)).min()?;
    let len = 5 + bits.div_ceil(8) as usize + gaps.len() * size;
    (n <= len.saturating_mul(MAX_ELEMS_PER_BYTE)).then_some((len, k))
}

/// `sparse-rice`: u8 `k`, u32 nnz, the Rice-coded gaps before each nonzero
/// (`gap >> k` one-bits, a zero bit, then the low `k` bits of the gap, least
/// significant first; bits fill each byte from its lowest; the last byte
/// padded with zeros), then the nonzero elements in order. The caller
/// checked [`rice_len`] and passes its `k`.
#[cfg(feature = "write")]
pub fn encode_rice(bytes: &[u8], size: usize, k: u32, out: &mut Vec<u8>) {
    let gaps = gaps(bytes, size);
    out.push(k as u8);
    out.extend_from_slice(&(gaps.len() as u32).to_le_bytes());
    let (mut acc, mut nbits) = (0u64, 0u32);
    let mut put = |out: &mut Vec<u8>, bit: u64| {
        acc |= bit << nbits;
        nbits += 1;
        if nbits == 8 {
            out.push(acc as u8);
            (acc, nbits) = (0, 0);
        }
    };
    for g in gaps {
        for _ in 0..g >> k {
            put(out, 1);
        }
        put(out, 0);
        for b in 0..k {
            put(out, (g >> b) & 1);
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
    for e in bytes.chunks_exact(size) {
        if !is_zero(e) {
            out.extend_from_slice(e);
        }
    }
}

/// Decode `sparse-rice` holding `n` elements of `size` bytes.
pub fn decode_rice(raw: &[u8], n: usize, size: usize) -> Result<AlignedBuf, String> {
    if n > raw.len().saturating_mul(MAX_ELEMS_PER_BYTE) {
        return Err(format!(
            "{n} elements from {} stored bytes is more than {MAX_ELEMS_PER_BYTE} per byte",
            raw.len()
        ));
    }
    let (Some(&k), Some(count)) = (raw.first(), raw.get(1..5)) else {
        return Err(format!(
            "{} bytes, too short for k and the count",
            raw.len()
        ));
    };
    let k = k as u32;
    if k > MAX_RICE_K {
        return Err(format!("Rice parameter {k} is over {MAX_RICE_K}"));
    }
    let nnz = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if nnz > n {
        return Err(format!("{nnz} nonzeros claimed in {n} elements"));
    }
    let vals_len = nnz * size;
    let Some(stream_len) = raw.len().checked_sub(5 + vals_len) else {
        return Err(format!(
            "{nnz} nonzeros need {} bytes of values, has {}",
            vals_len,
            raw.len().saturating_sub(5)
        ));
    };
    let stream = &raw[5..5 + stream_len];
    let vals = &raw[5 + stream_len..];
    let total_bits = stream_len as u64 * 8;
    let mut pos = 0u64;
    let bit = |pos: &mut u64| -> Result<u64, String> {
        if *pos >= total_bits {
            return Err("the gap codes run past their bytes".to_string());
        }
        let b = (stream[(*pos / 8) as usize] >> (*pos % 8)) & 1;
        *pos += 1;
        Ok(b as u64)
    };
    let mut buf = AlignedBuf::zeroed(n * size);
    let dst = buf.as_bytes_mut();
    let mut next = 0u64; // the first index the next nonzero may take
    for (e, v) in vals.chunks_exact(size).enumerate() {
        // Each one-bit is a stored bit, so this loop is bounded by the bytes.
        let mut q = 0u64;
        while bit(&mut pos)? == 1 {
            q += 1;
        }
        let mut g = q << k;
        for b in 0..k {
            g |= bit(&mut pos)? << b;
        }
        let i = next.saturating_add(g);
        if i >= n as u64 {
            return Err(format!("nonzero {e} falls at element {i}, past the {n}"));
        }
        dst[i as usize * size..][..size].copy_from_slice(v);
        next = i + 1;
    }
    if pos.div_ceil(8) != stream_len as u64 {
        return Err(format!(
            "the gap codes take {} bytes, {stream_len} are stored",
            pos.div_ceil(8)
        ));
    }
    if !pos.is_multiple_of(8) && stream[stream_len - 1] >> (pos % 8) != 0 {
        return Err("padding bits after the gap codes are not zero".into());
    }
    Ok(buf)
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
                    if let Some((len, k)) = rice_len(bytes, size) {
                        let mut r = Vec::new();
                        encode_rice(bytes, size, k, &mut r);
                        assert_eq!(r.len(), len, "{dims:?} {zeros}");
                        assert_eq!(decode_rice(&r, n, size).unwrap().as_bytes(), bytes);
                    } else {
                        assert!(n > 64, "{dims:?} {zeros}: rice refused");
                    }
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

    /// At 80-90% zeros the Rice-coded positions take well under a bitmask's
    /// bytes, and a long run after dense ones still round-trips.
    #[test]
    fn rice_beats_the_bitmask_when_sparse() {
        for (zeros, most) in [(0.8, 0.80), (0.9, 0.60)] {
            let f = data(32768, zeros, 7);
            let bytes: Vec<u8> = f.iter().map(|x| (x * 200.0) as i8 as u8).collect();
            let nnz = count_nonzero(&bytes, 1);
            let (len, _) = rice_len(&bytes, 1).unwrap();
            let (mask, rice) = (bitmask_len(32768, nnz, 1) - nnz, len - 5 - nnz);
            assert!(
                (rice as f64) < most * mask as f64,
                "{zeros}: rice {rice} B, bitmask {mask} B"
            );
        }
        // A long run after dense ones: small k, so the run is a long unary
        // prefix.
        let mut v = vec![0u8; 4096];
        v[..300].fill(1);
        v[4095] = 9;
        let (len, k) = rice_len(&v, 1).unwrap();
        assert!(k < 8, "k {k}");
        let mut r = Vec::new();
        encode_rice(&v, 1, k, &mut r);
        assert_eq!(r.len(), len);
        assert_eq!(decode_rice(&r, v.len(), 1).unwrap().as_bytes(), &v[..]);
        // Very sparse and large: refused (more than 64 elements per byte;
        // the writer stores those as a bitmask).
        let mut v = vec![0u8; 1 << 20];
        v[12345] = 1;
        assert!(rice_len(&v, 1).is_none());
    }

    #[test]
    fn corrupt_rice_is_an_error() {
        let f = [
            0.0f32, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0,
        ];
        let bytes = bytemuck::cast_slice::<f32, u8>(&f);
        let (len, k) = rice_len(bytes, 4).unwrap();
        let mut r = Vec::new();
        encode_rice(bytes, 4, k, &mut r);
        assert_eq!(r.len(), len);
        assert_eq!(decode_rice(&r, 12, 4).unwrap().as_bytes(), bytes);
        for cut in 0..r.len() {
            assert!(decode_rice(&r[..cut], 12, 4).is_err(), "cut at {cut}");
        }
        let mut extra = r.clone();
        extra.insert(5, 0);
        assert!(decode_rice(&extra, 12, 4).is_err());
        let mut big_k = r.clone();
        big_k[0] = 25;
        assert!(decode_rice(&big_k, 12, 4).unwrap_err().contains("over 24"));
        let mut nnz = r.clone();
        nnz[1] = 13;
        assert!(decode_rice(&nnz, 12, 4).unwrap_err().contains("claimed"));
        // Every flip of a code bit is an error or another valid tensor.
        for b in 0..(len - 5 - 16) * 8 {
            let mut x = r.clone();
            x[5 + b / 8] ^= 1 << (b % 8);
            let _ = decode_rice(&x, 12, 4);
        }
        // Fewer elements than the codes reach.
        assert!(decode_rice(&r, 11, 4).unwrap_err().contains("past the"));
        // A huge claimed shape from a few bytes is refused before allocating.
        let e = decode_rice(&[0, 0, 0, 0, 0], usize::MAX / 8, 4).unwrap_err();
        assert!(e.contains("per byte"), "{e}");
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
