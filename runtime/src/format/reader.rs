//! Reading `.morsel` files. [`read`] never panics on any input: every
//! offset, count and length is checked before use, and every section's
//! CRC must match.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::bytes::Cursor;
use super::*;
use crate::dtype::DType;
use crate::graph::{Attr, Attrs, Graph, Node, Storage, Value};
use crate::ops::OpId;
use crate::tensor::{AlignedBuf, Blob, Dim, Tensor, dims_str, numel};
use crate::{Error, Result};

/// The shared bytes of a model file: a memory map or an owned buffer.
pub type Store = Arc<dyn AsRef<[u8]> + Send + Sync>;

struct Section {
    kind: u32,
    offset: usize,
    len: usize,
}

fn fmt_err(msg: impl Into<String>) -> Error {
    Error::Format(msg.into())
}

/// Parse and validate a whole file held in `store`. Constant tensors with
/// the raw encoding point into `store`; other encodings (f16, bf16, sparse)
/// are decoded into owned memory.
pub fn read(store: Store) -> Result<Graph> {
    let bytes: &[u8] = (*store).as_ref();
    let sections = locate(bytes)?;
    let find = |kind: u32, name: &str| -> Result<&Section> {
        sections
            .iter()
            .find(|s| s.kind == kind)
            .ok_or_else(|| fmt_err(format!("the {name} section is missing")))
    };
    let sec_bytes = |s: &Section| &bytes[s.offset..s.offset + s.len];

    let metadata = match sections.iter().find(|s| s.kind == SECTION_META) {
        Some(s) => read_meta(sec_bytes(s))?,
        None => BTreeMap::new(),
    };
    let data = find(SECTION_DATA, "DATA")?;
    let tensors = read_tensors(
        sec_bytes(find(SECTION_TENSORS, "TENSORS")?),
        &store,
        data.offset,
        data.len,
        &mut Vec::new(),
    )?;
    let mut graph = read_graph(sec_bytes(find(SECTION_GRAPH, "GRAPH")?), tensors)?;
    graph.metadata = metadata;
    graph.validate()?;
    Ok(graph)
}

/// Bytes of tensor data per encoding name (for `morsel inspect`).
pub fn encoding_sizes(store: Store) -> Result<BTreeMap<String, usize>> {
    let bytes: &[u8] = (*store).as_ref();
    let sections = locate(bytes)?;
    let get = |kind| {
        sections
            .iter()
            .find(|s: &&Section| s.kind == kind)
            .ok_or_else(|| fmt_err("missing section"))
    };
    let (t, d) = (get(SECTION_TENSORS)?, get(SECTION_DATA)?);
    let mut list = Vec::new();
    read_tensors(
        &bytes[t.offset..t.offset + t.len],
        &store,
        d.offset,
        d.len,
        &mut list,
    )?;
    let mut out = BTreeMap::new();
    for (enc, dtype, len) in list {
        *out.entry(format!("{} {dtype}", enc.name())).or_insert(0) += len;
    }
    Ok(out)
}

/// Check the header and section table; return the known sections.
fn locate(bytes: &[u8]) -> Result<Vec<Section>> {
    if bytes.len() < HEADER_LEN {
        return Err(fmt_err(format!(
            "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let mut h = Cursor::new(&bytes[..HEADER_LEN], "header");
    if h.take(8)? != MAGIC {
        return Err(fmt_err("not a .morsel file (bad magic bytes)"));
    }
    let major = h.u16()?;
    let minor = h.u16()?;
    let bom = h.take(4)?;
    if bom != BOM.to_le_bytes() {
        return Err(if bom == BOM.to_be_bytes() {
            Error::Unsupported("big-endian .morsel files are not supported".into())
        } else {
            fmt_err("bad byte-order mark")
        });
    }
    if major != MAJOR {
        return Err(Error::Unsupported(format!(
            "file format version {major}.{minor}; this reader reads {MAJOR}.x"
        )));
    }
    let required = h.u64()?;
    let _optional = h.u64()?;
    let file_len = h.u64()?;
    let table_off = h.usize64()?;
    let n_sections = h.u32()? as usize;
    let _reserved = h.u32()?;
    let header_crc = h.u32()?;
    if crc32fast::hash(&bytes[..56]) != header_crc {
        return Err(fmt_err("header checksum mismatch (corrupt file)"));
    }
    if required & !KNOWN_REQUIRED != 0 {
        return Err(Error::Unsupported(format!(
            "file needs features {:#x} this reader does not know (made by a newer morsel?)",
            required & !KNOWN_REQUIRED
        )));
    }
    if file_len != bytes.len() as u64 {
        return Err(fmt_err(format!(
            "file is {} bytes but its header says {file_len} (truncated or padded)",
            bytes.len()
        )));
    }
    if n_sections > MAX_SECTIONS {
        return Err(fmt_err(format!(
            "{n_sections} sections is more than the limit {MAX_SECTIONS}"
        )));
    }
    let table_end = table_off
        .checked_add(n_sections * 32)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| fmt_err("section table lies outside the file"))?;
    let mut t = Cursor::new(&bytes[table_off..table_end], "section table");
    let mut sections: Vec<Section> = Vec::with_capacity(n_sections);
    for _ in 0..n_sections {
        let kind = t.u32()?;
        let flags = t.u32()?;
        let offset = t.usize64()?;
        let len = t.usize64()?;
        let crc = t.u32()?;
        let _ = t.u32()?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| fmt_err(format!("section {kind} lies outside the file")))?;
        if offset % ALIGN != 0 {
            return Err(fmt_err(format!(
                "section {kind} is not {ALIGN}-byte aligned"
            )));
        }
        if offset < HEADER_LEN {
            return Err(fmt_err(format!("section {kind} overlaps the header")));
        }
        if crc32fast::hash(&bytes[offset..end]) != crc {
            return Err(fmt_err(format!(
                "section {kind} checksum mismatch (corrupt file)"
            )));
        }
        let known = matches!(
            kind,
            SECTION_META | SECTION_GRAPH | SECTION_TENSORS | SECTION_DATA
        );
        if !known && flags & 1 != 0 {
            return Err(Error::Unsupported(format!(
                "file needs section kind {kind}, unknown to this reader"
            )));
        }
        if sections.iter().any(|s| s.kind == kind) {
            return Err(fmt_err(format!("section {kind} appears twice")));
        }
        if sections
            .iter()
            .any(|s| offset < s.offset + s.len && s.offset < end)
        {
            return Err(fmt_err(format!("section {kind} overlaps another section")));
        }
        if known {
            sections.push(Section { kind, offset, len });
        }
    }
    Ok(sections)
}

fn read_meta(b: &[u8]) -> Result<BTreeMap<String, String>> {
    let mut c = Cursor::new(b, "META");
    let n = c.count(8)?;
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let k = c.str()?;
        let v = c.str()?;
        m.insert(k, v);
    }
    Ok(m)
}

fn read_tensors(
    b: &[u8],
    store: &Store,
    data_off: usize,
    data_len: usize,
    encodings: &mut Vec<(Encoding, DType, usize)>,
) -> Result<Vec<(Tensor, Storage)>> {
    let mut c = Cursor::new(b, "TENSORS");
    let n = c.count(28)?;
    let mut out = Vec::with_capacity(n);
    for ti in 0..n {
        let enc_id = c.u16()?;
        let dtype = DType::from_code(c.u8()?).map_err(|e| fmt_err(format!("tensor {ti}: {e}")))?;
        let _ = c.u8()?;
        let rank = c.u32()? as usize;
        if rank > MAX_RANK {
            return Err(fmt_err(format!(
                "tensor {ti} has rank {rank} (limit {MAX_RANK})"
            )));
        }
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(c.usize64()?);
        }
        let offset = c.usize64()?;
        let len = c.usize64()?;
        let n_params = c.count(8)?;
        let mut params = Vec::with_capacity(n_params);
        for _ in 0..n_params {
            params.push(c.u64()?);
        }
        let enc = Encoding::from_id(enc_id).ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor {ti} uses encoding {enc_id}, unknown to this reader (made by a newer morsel?)"
            ))
        })?;
        if offset % ALIGN != 0 {
            return Err(fmt_err(format!(
                "tensor {ti} data is not {ALIGN}-byte aligned"
            )));
        }
        if offset.checked_add(len).is_none_or(|e| e > data_len) {
            return Err(fmt_err(format!(
                "tensor {ti} data lies outside the DATA section"
            )));
        }
        let count = numel(&dims)
            .map_err(|_| fmt_err(format!("tensor {ti} dims {} overflow", dims_str(&dims))))?;
        // int8-per-channel: one param, the axis, inside the rank.
        let int8 = matches!(enc, Encoding::Int8PerChannel | Encoding::Int8PerChannelF16);
        let axis = match (int8, &params[..]) {
            (true, &[a]) if (a as usize) < rank && dtype == DType::F32 => a as usize,
            (true, _) => {
                return Err(fmt_err(format!(
                    "tensor {ti} ({dtype} {}, {}) needs f32 and one axis param below its rank, has params {params:?}",
                    dims_str(&dims),
                    enc.name()
                )));
            }
            _ => 0,
        };
        let stored_size = match enc {
            Encoding::Raw => Some(dtype.size()),
            Encoding::F16 | Encoding::BF16 => Some(2),
            // Checked exactly while decoding.
            Encoding::SparseBitmask
            | Encoding::SparseCsr
            | Encoding::SparseRice
            | Encoding::Int8PerChannel
            | Encoding::Int8PerChannelF16 => None,
        };
        if int8 && int8::encoded_len(&dims, axis, enc) != Some(len) {
            return Err(fmt_err(format!(
                "tensor {ti} (f32 {}, {} along axis {axis}) should have {} bytes, has {len}",
                dims_str(&dims),
                enc.name(),
                int8::encoded_len(&dims, axis, enc).map_or("too many".into(), |n| n.to_string())
            )));
        }
        if let Some(size) = stored_size
            && count.checked_mul(size) != Some(len)
        {
            return Err(fmt_err(format!(
                "tensor {ti} ({dtype} {}) should have {} bytes, has {len}",
                dims_str(&dims),
                count.saturating_mul(size)
            )));
        }
        encodings.push((enc, dtype, len));
        let start = data_off + offset;
        let raw = &(**store).as_ref()[start..start + len];
        let tensor = match enc {
            Encoding::Raw => {
                // In place when aligned for the dtype (always, for a mapped or
                // owned file: both start 8-aligned); otherwise a copy.
                let blob = if (raw.as_ptr() as usize).is_multiple_of(dtype.size()) {
                    Blob::slice_of(store.clone(), start, len)?
                } else {
                    Blob::owned(AlignedBuf::from_bytes(raw))
                };
                Tensor::new(dtype, dims, blob)?
            }
            Encoding::F16 | Encoding::BF16 => {
                if dtype != DType::F32 {
                    return Err(fmt_err(format!(
                        "tensor {ti}: {enc:?} encoding must hold f32, says {dtype}"
                    )));
                }
                let vals: Vec<f32> = raw
                    .chunks_exact(2)
                    .map(|p| {
                        let bits = u16::from_le_bytes([p[0], p[1]]);
                        if enc == Encoding::F16 {
                            half::f16::from_bits(bits).to_f32()
                        } else {
                            half::bf16::from_bits(bits).to_f32()
                        }
                    })
                    .collect();
                Tensor::from_slice(&dims, &vals)?
            }
            Encoding::SparseBitmask | Encoding::SparseCsr | Encoding::SparseRice => {
                let decoded = match enc {
                    Encoding::SparseBitmask => sparse::decode_bitmask(raw, count, dtype.size()),
                    Encoding::SparseRice => sparse::decode_rice(raw, count, dtype.size()),
                    _ => sparse::decode_csr(raw, &dims, dtype.size()),
                };
                let buf = decoded.map_err(|e| {
                    fmt_err(format!(
                        "tensor {ti} ({dtype} {}, {}): {e}",
                        dims_str(&dims),
                        enc.name()
                    ))
                })?;
                Tensor::new(dtype, dims, Blob::owned(buf))?
            }
            Encoding::Int8PerChannel | Encoding::Int8PerChannelF16 => {
                let vals = int8::decode(raw, &dims, axis, enc).map_err(|e| {
                    fmt_err(format!(
                        "tensor {ti} (f32 {}, {} along axis {axis}): {e}",
                        dims_str(&dims),
                        enc.name()
                    ))
                })?;
                Tensor::from_slice(&dims, &vals)?
            }
        };
        let storage = match int8 {
            true => Storage::Int8PerChannel { axis },
            false => Storage::Exact,
        };
        out.push((tensor, storage));
    }
    Ok(out)
}

fn read_graph(b: &[u8], tensors: Vec<(Tensor, Storage)>) -> Result<Graph> {
    let mut c = Cursor::new(b, "GRAPH");
    let mut g = Graph::default();
    let mut used = vec![false; tensors.len()];
    let n_values = c.count(13)?;
    for vi in 0..n_values {
        let name = c.str()?;
        let dtype =
            DType::from_code(c.u8()?).map_err(|e| fmt_err(format!("value '{name}': {e}")))?;
        let rank = c.u32()? as usize;
        if rank > MAX_RANK {
            return Err(fmt_err(format!(
                "value '{name}' has rank {rank} (limit {MAX_RANK})"
            )));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(match c.u8()? {
                0 => Dim::Known(c.usize64()?),
                1 => Dim::Sym(Arc::from(c.str()?.as_str())),
                t => return Err(fmt_err(format!("value '{name}': bad dim tag {t}"))),
            });
        }
        let ti = c.u32()?;
        let mut storage = Storage::Exact;
        let konst = if ti == NONE {
            None
        } else {
            let ti = ti as usize;
            let (t, kept) = tensors.get(ti).ok_or_else(|| {
                fmt_err(format!(
                    "value '{name}' names tensor {ti}, which does not exist"
                ))
            })?;
            if used[ti] {
                return Err(fmt_err(format!("tensor {ti} is used by two values")));
            }
            used[ti] = true;
            if t.dtype != dtype || crate::tensor::concrete(&shape).as_deref() != Some(&t.dims[..]) {
                return Err(fmt_err(format!(
                    "value '{name}' ({dtype} {}) does not match its tensor ({} {})",
                    crate::tensor::shape_str(&shape),
                    t.dtype,
                    dims_str(&t.dims)
                )));
            }
            storage = *kept;
            Some(t.clone())
        };
        let _ = vi;
        g.values.push(Value {
            name,
            dtype,
            shape,
            konst,
            storage,
        });
    }
    let ids = |c: &mut Cursor<'_>, allow_none: bool| -> Result<Vec<Option<usize>>> {
        let n = c.count(4)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let id = c.u32()?;
            if id == NONE && allow_none {
                v.push(None);
            } else if (id as usize) < n_values {
                v.push(Some(id as usize));
            } else {
                return Err(fmt_err(format!(
                    "value id {id} out of range ({n_values} values)"
                )));
            }
        }
        Ok(v)
    };
    g.inputs = ids(&mut c, false)?.into_iter().flatten().collect();
    g.outputs = ids(&mut c, false)?.into_iter().flatten().collect();
    let n_nodes = c.count(18)?;
    for _ in 0..n_nodes {
        let name = c.str()?;
        let op = OpId(c.u16()?);
        let inputs = ids(&mut c, true)?;
        let outputs: Vec<usize> = ids(&mut c, false)?.into_iter().flatten().collect();
        let n_attrs = c.count(6)?;
        let mut attrs = Attrs::new();
        for _ in 0..n_attrs {
            let key = c.str()?;
            let value = match c.u8()? {
                ATTR_INT => Attr::Int(c.i64()?),
                ATTR_FLOAT => Attr::Float(c.f32()?),
                ATTR_INTS => {
                    let n = c.count(8)?;
                    Attr::Ints((0..n).map(|_| c.i64()).collect::<Result<_>>()?)
                }
                ATTR_FLOATS => {
                    let n = c.count(4)?;
                    Attr::Floats((0..n).map(|_| c.f32()).collect::<Result<_>>()?)
                }
                ATTR_STR => Attr::Str(c.str()?),
                t => {
                    return Err(fmt_err(format!(
                        "node '{name}': attribute '{key}' has bad tag {t}"
                    )));
                }
            };
            attrs.set(&key, value);
        }
        g.nodes.push(Node {
            name,
            op,
            attrs,
            inputs,
            outputs,
        });
    }
    if c.remaining() != 0 {
        return Err(fmt_err(format!(
            "GRAPH section has {} trailing bytes",
            c.remaining()
        )));
    }
    Ok(g)
}
