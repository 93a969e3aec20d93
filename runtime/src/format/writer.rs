//! Writing `.morsel` files (feature `write`; device builds leave it out).

use std::io::Write;
use std::path::Path;

use super::bytes::Out;
use super::*;
use crate::dtype::DType;
use crate::graph::{Attr, Graph};
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

/// Serialise a graph to the bytes of a `.morsel` file.
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
        let enc = match (storage, t.dtype) {
            (FloatStorage::F16, DType::F32) => Encoding::F16,
            (FloatStorage::BF16, DType::F32) => Encoding::BF16,
            _ => Encoding::Raw,
        };
        match enc {
            Encoding::Raw => data.0.extend_from_slice(t.data.as_bytes()),
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
        tensors.u32(0);
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
