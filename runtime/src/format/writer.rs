//! Writing `.morsel` files (feature `write`; device builds leave it out).

use std::io::Write;
use std::path::Path;

use super::bytes::Out;
use super::*;
use crate::dtype::DType;
use crate::graph::{Attr, Graph, Storage};
use crate::tensor::Dim;
use crate::{Error, Result};

/// How constants are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FloatStorage {
    /// f32 weights as f32.
    #[default]
    F32,
    /// f32 weights stored as IEEE half, widened at load.
    F16,
    /// f32 weights stored as bfloat16, widened at load.
    BF16,
}

/// The smallest lossless encoding of `t`: raw, `f16` for an f32 tensor
/// whose every value is exactly an IEEE half (bit for bit, so `-0.0` and
/// NaN payloads survive; the compressor rounds int8 scales to such values),
/// or a sparse one (bitmask, CSR or Rice-coded gaps, whichever is
/// smallest) when enough elements are zero. A non-raw tensor is
/// decoded into private memory at load (a raw one is used in place, in the
/// mapped file), so sparse is chosen only when it saves at least a quarter
/// of the raw bytes: f32 at about 28% zeros or more. i8 constants are int8
/// weights, which QMatMul and QConv repack at load anyway (only QGather's
/// tables are read in place, and pruning leaves those dense), so for them
/// an eighth is enough: a bitmask at about 25% zeros (it costs 1/8 byte per
/// element).
fn smallest_exact(t: &crate::tensor::Tensor) -> Encoding {
    let (bytes, size) = (t.data.as_bytes(), t.dtype.size());
    let nnz = sparse::count_nonzero(bytes, size);
    let keep = if t.dtype == DType::I8 { 7 } else { 3 };
    let mut best = (bytes.len() / (keep + 1) * keep + 1, Encoding::Raw);
    if f16_exact(t) {
        best = (bytes.len() / 2, Encoding::F16);
    }
    let bitmask = sparse::bitmask_len(t.numel(), nnz, size);
    if bitmask < best.0 {
        best = (bitmask, Encoding::SparseBitmask);
    }
    if let Some(csr) = sparse::csr_len(&t.dims, nnz, size)
        && csr < best.0
    {
        best = (csr, Encoding::SparseCsr);
    }
    if let Some((rice, _)) = sparse::rice_len(bytes, size)
        && rice < best.0
    {
        best = (rice, Encoding::SparseRice);
    }
    best.1
}

/// Whether `t` is f32 and every value survives f32 → f16 → f32 bit for bit.
fn f16_exact(t: &crate::tensor::Tensor) -> bool {
    t.dtype == DType::F32
        && t.numel() > 0
        && t.as_slice::<f32>().is_ok_and(|x| {
            x.iter()
                .all(|v| half::f16::from_f32(*v).to_f32().to_bits() == v.to_bits())
        })
}

/// Serialise a graph to the bytes of a `.morsel` file. Constants are stored
/// raw, `f16` when every f32 value is exactly a half, or sparse when that is
/// at least a quarter smaller (`sparse-bitmask`, `sparse-csr`, `sparse-rice`; all exact for
/// every dtype; non-raw ones are decoded at load instead of used in place); with [`FloatStorage::F16`] / [`FloatStorage::BF16`]
/// f32 constants are stored dense in 16 bits (no sparse form of those), and
/// other dtypes still pick the smallest of raw and sparse.
pub fn to_bytes(g: &Graph, storage: FloatStorage) -> Result<Vec<u8>> {
    g.validate()?;
    // DATA and TENSORS
    let mut data = Out(Vec::new());
    let mut tensors = Out(Vec::new());
    let mut tensor_of = vec![NONE; g.values.len()];
    let mut n_tensors = 0u32;
    for (vi, v) in g.values.iter().enumerate() {
        let Some(t) = &v.konst else { continue };
        data.pad_to(ALIGN);
        let offset = data.0.len() as u64;
        let mut params = Vec::new();
        let mut enc = match (v.storage, storage, t.dtype) {
            (Storage::Int8PerChannel { axis }, _, DType::F32) => {
                if axis >= t.dims.len() {
                    return Err(Error::Graph(format!(
                        "constant '{}' {}: int8 storage along axis {axis}, past its rank",
                        v.name,
                        crate::tensor::dims_str(&t.dims)
                    )));
                }
                if let Some(x) = t.as_slice::<f32>()?.iter().find(|x| !x.is_finite()) {
                    return Err(Error::Graph(format!(
                        "constant '{}' holds {x}: int8 storage needs finite values",
                        v.name
                    )));
                }
                params.push(axis as u64);
                Encoding::Int8PerChannel
            }
            (_, FloatStorage::F16, DType::F32) => Encoding::F16,
            (_, FloatStorage::BF16, DType::F32) => Encoding::BF16,
            _ => smallest_exact(t),
        };
        match enc {
            Encoding::Raw => data.0.extend_from_slice(t.data.as_bytes()),
            Encoding::SparseBitmask => {
                sparse::encode_bitmask(t.data.as_bytes(), t.dtype.size(), &mut data.0)
            }
            Encoding::SparseCsr => {
                sparse::encode_csr(t.data.as_bytes(), &t.dims, t.dtype.size(), &mut data.0)
            }
            Encoding::SparseRice => {
                let (bytes, size) = (t.data.as_bytes(), t.dtype.size());
                // `smallest_exact` chose it, so `rice_len` is Some.
                let k = sparse::rice_len(bytes, size).map_or(0, |(_, k)| k);
                sparse::encode_rice(bytes, size, k, &mut data.0)
            }
            Encoding::F16 => {
                for x in t.as_slice::<f32>()? {
                    data.u16(half::f16::from_f32(*x).to_bits());
                }
            }
            Encoding::BF16 => {
                for x in t.as_slice::<f32>()? {
                    data.u16(half::bf16::from_f32(*x).to_bits());
                }
            }
            // half scales (id 18) where every scale is one, else f32 (16)
            Encoding::Int8PerChannel | Encoding::Int8PerChannelF16 => {
                enc = int8::encode(
                    t.as_slice::<f32>()?,
                    &t.dims,
                    params[0] as usize,
                    &mut data.0,
                )
            }
        }
        let len = data.0.len() as u64 - offset;
        tensors.u16(enc.id());
        tensors.u8(t.dtype.code());
        tensors.u8(0);
        tensors.u32(t.dims.len() as u32);
        for &d in &t.dims {
            tensors.u64(d as u64);
        }
        tensors.u64(offset);
        tensors.u64(len);
        tensors.u32(params.len() as u32);
        params.iter().for_each(|&p| tensors.u64(p));
        tensor_of[vi] = n_tensors;
        n_tensors += 1;
    }
    let mut tsec = Out(Vec::new());
    tsec.u32(n_tensors);
    tsec.0.extend_from_slice(&tensors.0);

    // GRAPH
    let mut gs = Out(Vec::new());
    gs.u32(g.values.len() as u32);
    for (vi, v) in g.values.iter().enumerate() {
        gs.str(&v.name);
        gs.u8(v.dtype.code());
        gs.u32(v.shape.len() as u32);
        for d in &v.shape {
            match d {
                Dim::Known(n) => {
                    gs.u8(0);
                    gs.u64(*n as u64);
                }
                Dim::Sym(s) => {
                    gs.u8(1);
                    gs.str(s);
                }
            }
        }
        gs.u32(tensor_of[vi]);
    }
    let id = |v: usize| v as u32;
    gs.u32(g.inputs.len() as u32);
    g.inputs.iter().for_each(|&v| gs.u32(id(v)));
    gs.u32(g.outputs.len() as u32);
    g.outputs.iter().for_each(|&v| gs.u32(id(v)));
    gs.u32(g.nodes.len() as u32);
    for n in &g.nodes {
        gs.str(&n.name);
        gs.u16(n.op.0);
        gs.u32(n.inputs.len() as u32);
        for i in &n.inputs {
            gs.u32(i.map(id).unwrap_or(NONE));
        }
        gs.u32(n.outputs.len() as u32);
        n.outputs.iter().for_each(|&v| gs.u32(id(v)));
        gs.u32(n.attrs.0.len() as u32);
        for (k, a) in &n.attrs.0 {
            gs.str(k);
            match a {
                Attr::Int(v) => {
                    gs.u8(ATTR_INT);
                    gs.i64(*v);
                }
                Attr::Float(v) => {
                    gs.u8(ATTR_FLOAT);
                    gs.f32(*v);
                }
                Attr::Ints(v) => {
                    gs.u8(ATTR_INTS);
                    gs.u32(v.len() as u32);
                    v.iter().for_each(|x| gs.i64(*x));
                }
                Attr::Floats(v) => {
                    gs.u8(ATTR_FLOATS);
                    gs.u32(v.len() as u32);
                    v.iter().for_each(|x| gs.f32(*x));
                }
                Attr::Str(s) => {
                    gs.u8(ATTR_STR);
                    gs.str(s);
                }
            }
        }
    }

    // META
    let mut meta = Out(Vec::new());
    meta.u32(g.metadata.len() as u32);
    for (k, v) in &g.metadata {
        meta.str(k);
        meta.str(v);
    }

    // Layout: header, sections (each 64-aligned), section table.
    let sections: [(u32, u32, &[u8]); 4] = [
        (SECTION_META, 0, &meta.0),
        (SECTION_GRAPH, 1, &gs.0),
        (SECTION_TENSORS, 1, &tsec.0),
        (SECTION_DATA, 1, &data.0),
    ];
    let mut file = Out(vec![0u8; HEADER_LEN]);
    let mut table = Out(Vec::new());
    for (kind, flags, bytes) in sections {
        file.pad_to(ALIGN);
        let off = file.0.len() as u64;
        file.0.extend_from_slice(bytes);
        table.u32(kind);
        table.u32(flags);
        table.u64(off);
        table.u64(bytes.len() as u64);
        table.u32(crc32fast::hash(bytes));
        table.u32(0);
    }
    file.pad_to(ALIGN);
    let table_off = file.0.len() as u64;
    file.0.extend_from_slice(&table.0);
    let total = file.0.len() as u64;

    let mut h = Out(Vec::with_capacity(HEADER_LEN));
    h.0.extend_from_slice(&MAGIC);
    h.u16(MAJOR);
    h.u16(MINOR);
    h.u32(BOM);
    h.u64(0); // required features
    h.u64(0); // optional features
    h.u64(total);
    h.u64(table_off);
    h.u32(sections.len() as u32);
    h.u32(0);
    let crc = crc32fast::hash(&h.0);
    h.u32(crc);
    h.u32(0);
    file.0[..HEADER_LEN].copy_from_slice(&h.0);
    Ok(file.0)
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. A crash leaves either the old
/// file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |context: String| move |source| Error::Io { context, source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Input(format!("'{}' is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f =
            std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .map_err(io(format!("writing {}", tmp.display())))?;
        f.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use std::sync::Arc;

    /// `count` values, every `every`-th nonzero (`every` = 0: all zero).
    /// Zeros but for element `at` (1.5).
    fn one_at(count: usize, at: usize) -> Vec<f32> {
        (0..count)
            .map(|i| if i == at { 1.5 } else { 0.0 })
            .collect()
    }

    fn spaced(count: usize, every: usize) -> Vec<f32> {
        (0..count)
            .map(|i| {
                if every > 0 && i % every == 0 {
                    // not f16-exact, so dense cases stay raw f32
                    (i as f32 * 0.5 - 3.0) * 1.0001
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn graph(tensors: Vec<(&str, Tensor)>) -> Graph {
        let mut g = Graph::default();
        for (name, t) in tensors {
            let v = g.add_const(name, t);
            g.outputs.push(v);
        }
        g
    }

    fn encodings(bytes: &[u8]) -> BTreeMap<String, usize> {
        super::super::reader::encoding_sizes(Arc::new(bytes.to_vec())).unwrap()
    }
    use std::collections::BTreeMap;

    #[test]
    fn writer_picks_the_smallest_exact_encoding_and_reader_restores_it() {
        let dims = [16usize, 192];
        let n = 16 * 192;
        let i8s = |v: &[f32]| -> Vec<i8> { v.iter().map(|x| (x * 4.0) as i8).collect() };
        let cases: Vec<(&str, Tensor, &str)> = vec![
            // dense: raw
            (
                "dense",
                Tensor::from_slice(&dims, &spaced(n, 1)).unwrap(),
                "raw f32",
            ),
            // a fifth zeros: the bitmask is 0.83 of raw, not worth a copy at load
            (
                "fifth",
                Tensor::from_slice(
                    &dims,
                    &spaced(n, 1)
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| if i % 5 == 0 { 0.0 } else { x })
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
                "raw f32",
            ),
            // half zeros: bitmask (n/8 + 4·n/2 < 4n; csr needs 6 per value)
            (
                "half",
                Tensor::from_slice(&dims, &spaced(n, 2)).unwrap(),
                "sparse-bitmask f32",
            ),
            // 1 in 40: Rice-coded gaps (77 gaps of 39 at k = 5: 7 bits
            // each, 5 + 68 + 4·77 bytes; csr needs 4 + 4·16 + 6·77)
            (
                "sparse",
                Tensor::from_slice(&dims, &spaced(n, 40)).unwrap(),
                "sparse-rice f32",
            ),
            // one nonzero: csr (4 + 4·16 + 6); Rice would be 11 bytes for
            // 3072 elements, over 64 elements per byte
            (
                "one",
                Tensor::from_slice(&dims, &one_at(n, 5)).unwrap(),
                "sparse-csr f32",
            ),
            // every value exactly an f16 (-0.0, a subnormal and NaN
            // included): f16, half the raw bytes
            (
                "f16-exact",
                Tensor::from_slice(
                    &dims,
                    &spaced(n, 1)
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| match i {
                            0 => -0.0,
                            1 => f32::NAN,
                            2 => half::f16::from_bits(3).to_f32(),
                            _ => half::f16::from_f32(x).to_f32(),
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
                "f16 f32",
            ),
            (
                "i8 dense",
                Tensor::from_slice(&dims, &i8s(&spaced(n, 1))[..]).unwrap(),
                "raw i8",
            ),
            (
                "i8 half",
                Tensor::from_slice(&dims, &i8s(&spaced(n, 2))[..]).unwrap(),
                "sparse-bitmask i8",
            ),
            (
                "i8 1/40",
                Tensor::from_slice(&dims, &i8s(&spaced(n, 40))[..]).unwrap(),
                "sparse-rice i8",
            ),
            (
                "zeros",
                Tensor::from_slice(&dims, &spaced(n, 0)).unwrap(),
                "sparse-csr f32",
            ),
            // all zero and large: csr would decode to more than 64
            // elements per byte, so a bitmask
            (
                "more zeros",
                Tensor::from_slice(&[16, 4096], &spaced(16 * 4096, 0)).unwrap(),
                "sparse-bitmask f32",
            ),
        ];
        for (name, t, want) in &cases {
            let g = graph(vec![(name, t.clone())]);
            let bytes = to_bytes(&g, FloatStorage::F32).unwrap();
            let enc = encodings(&bytes);
            assert_eq!(enc.keys().collect::<Vec<_>>(), [want], "{name}");
            let back = super::super::reader::read(Arc::new(bytes)).unwrap();
            let got = back.values[0].konst.as_ref().unwrap();
            assert_eq!(got.dims, t.dims, "{name}");
            assert_eq!(got.data.as_bytes(), t.data.as_bytes(), "{name}");
        }
        // f16 storage keeps f32 weights dense in 16 bits; i8 still goes sparse.
        let by_name = |want: &str| cases.iter().find(|c| c.0 == want).unwrap().1.clone();
        let g = graph(vec![("w", by_name("half")), ("q", by_name("i8 half"))]);
        let enc = encodings(&to_bytes(&g, FloatStorage::F16).unwrap());
        assert_eq!(enc.get("f16 f32"), Some(&(n * 2)));
        assert!(enc.contains_key("sparse-bitmask i8"), "{enc:?}");
    }

    /// Overwrite `at` bytes into the DATA section and fix its CRC, so the
    /// damage reaches the tensor decoder.
    fn patch_data(file: &mut [u8], at: usize, new: &[u8]) {
        let u64_at =
            |f: &[u8], i: usize| u64::from_le_bytes(f[i..i + 8].try_into().unwrap()) as usize;
        let table = u64_at(file, 40);
        let count = u32::from_le_bytes(file[48..52].try_into().unwrap()) as usize;
        for e in (0..count).map(|i| table + i * 32) {
            if u32::from_le_bytes(file[e..e + 4].try_into().unwrap()) == SECTION_DATA {
                let (off, len) = (u64_at(file, e + 8), u64_at(file, e + 16));
                file[off + at..off + at + new.len()].copy_from_slice(new);
                let crc = crc32fast::hash(&file[off..off + len]);
                file[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
                return;
            }
        }
        panic!("no DATA section");
    }

    #[test]
    fn corrupt_sparse_tensors_in_a_file_are_errors_naming_the_tensor() {
        let dims = [16usize, 192];
        let n = 16 * 192;
        let half = Tensor::from_slice(&dims, &spaced(n, 2)).unwrap();
        let g = graph(vec![("w", half)]);
        let good = to_bytes(&g, FloatStorage::F32).unwrap();
        // Popcount mismatch: one more bit set (element 1 is zero).
        let mut bad = good.clone();
        patch_data(&mut bad, 0, &[0b0101_0111]);
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor 0") && e.contains("sparse-bitmask"),
            "{e}"
        );
        assert!(e.contains("1537 nonzero"), "{e}");

        let one = Tensor::from_slice(&dims, &one_at(n, 5)).unwrap();
        let good = to_bytes(&graph(vec![("w", one)]), FloatStorage::F32).unwrap();
        // Column index out of range (first index, after nnz and 16 counts).
        let mut bad = good.clone();
        patch_data(&mut bad, 4 + 16 * 4, &192u16.to_le_bytes());
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor 0") && e.contains("sparse-csr"), "{e}");
        assert!(e.contains("column index 192 is out of range"), "{e}");
        // nnz larger than the stored bytes.
        let mut bad = good.clone();
        patch_data(&mut bad, 0, &u32::MAX.to_le_bytes());
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor 0") && e.contains("bytes"), "{e}");

        let sparse = Tensor::from_slice(&dims, &spaced(n, 40)).unwrap();
        let good = to_bytes(&graph(vec![("w", sparse)]), FloatStorage::F32).unwrap();
        // A Rice parameter past the limit.
        let mut bad = good.clone();
        patch_data(&mut bad, 0, &[30]);
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor 0") && e.contains("sparse-rice"), "{e}");
        assert!(e.contains("over 24"), "{e}");
        // One more nonzero claimed than stored: the values take 4 more
        // bytes from the end, and the gap codes no longer fit what is left.
        let mut bad = good.clone();
        patch_data(&mut bad, 1, &78u32.to_le_bytes());
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor 0") && e.contains("sparse-rice"), "{e}");
    }

    #[test]
    fn int8_storage_round_trips_within_half_a_step_and_corrupt_scales_are_errors() {
        // [4, 3, 3]: four output channels of very different ranges.
        let dims = [4usize, 3, 3];
        let x: Vec<f32> = (0..36)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * [0.01, 1.0, 30.0, 0.5][i / 9])
            .collect();
        let mut g = graph(vec![("w", Tensor::from_slice(&dims, &x).unwrap())]);
        g.values[0].storage = Storage::Int8PerChannel { axis: 0 };
        let bytes = to_bytes(&g, FloatStorage::F32).unwrap();
        // every scale is a normal half: 2 bytes each (id 18)
        assert_eq!(
            encodings(&bytes).into_iter().collect::<Vec<_>>(),
            [("int8-per-channel-f16 f32".to_string(), 4 * 2 + 36)]
        );
        let back = super::super::reader::read(Arc::new(bytes.clone())).unwrap();
        assert_eq!(back.values[0].storage, Storage::Int8PerChannel { axis: 0 });
        let y = back.values[0]
            .konst
            .as_ref()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            let c = i / 9;
            let step = x[9 * c..9 * c + 9].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            assert!(
                (a - b).abs() <= step * 0.5 * (1.0 + 1.0 / 1024.0),
                "element {i}: {a} -> {b}"
            );
        }
        // Written again from what was read: the same file.
        assert_eq!(to_bytes(&back, FloatStorage::F32).unwrap(), bytes);

        // A slice too large for half scales: f32 scales (id 16), same checks.
        let mut huge = x.clone();
        huge[..9].iter_mut().for_each(|v| *v *= 1e9);
        let mut g16 = graph(vec![("w", Tensor::from_slice(&dims, &huge).unwrap())]);
        g16.values[0].storage = Storage::Int8PerChannel { axis: 0 };
        let b16 = to_bytes(&g16, FloatStorage::F32).unwrap();
        assert_eq!(
            encodings(&b16).into_iter().collect::<Vec<_>>(),
            [("int8-per-channel f32".to_string(), 4 * 4 + 36)]
        );
        let back16 = super::super::reader::read(Arc::new(b16.clone())).unwrap();
        assert_eq!(to_bytes(&back16, FloatStorage::F32).unwrap(), b16);

        // A NaN scale (of either width), and a value that cannot be stored.
        let mut bad = b16.clone();
        patch_data(&mut bad, 4, &f32::NAN.to_le_bytes());
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor 0")
                && e.contains("int8-per-channel")
                && e.contains("scale 1 is NaN"),
            "{e}"
        );
        let mut bad = bytes.clone();
        patch_data(&mut bad, 2, &half::f16::NAN.to_bits().to_le_bytes());
        let e = super::super::reader::read(Arc::new(bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor 0")
                && e.contains("int8-per-channel")
                && e.contains("scale 1 is NaN"),
            "{e}"
        );
        let mut inf = x.clone();
        inf[5] = f32::INFINITY;
        let mut g = graph(vec![("w", Tensor::from_slice(&dims, &inf).unwrap())]);
        g.values[0].storage = Storage::Int8PerChannel { axis: 0 };
        let e = to_bytes(&g, FloatStorage::F32).unwrap_err().to_string();
        assert!(e.contains("'w' holds inf"), "{e}");
        g.values[0].storage = Storage::Int8PerChannel { axis: 3 };
        let e = to_bytes(&g, FloatStorage::F32).unwrap_err().to_string();
        assert!(e.contains("axis 3, past its rank"), "{e}");
    }
}
