//! ONNX `TensorProto` → runtime tensors, including external data files.

use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use morsel_runtime::DType;
use morsel_runtime::tensor::{AlignedBuf, Blob, Tensor, numel};

use super::proto::{TensorProto, data_type as dt};

/// ONNX element type code → morsel dtype.
pub fn dtype_from_onnx(code: i32) -> Result<DType> {
    Ok(match code {
        dt::FLOAT => DType::F32,
        dt::UINT8 => DType::U8,
        dt::INT8 => DType::I8,
        dt::INT32 => DType::I32,
        dt::INT64 => DType::I64,
        dt::BOOL => DType::Bool,
        dt::FLOAT16 => DType::F16,
        dt::BFLOAT16 => DType::BF16,
        other => bail!(
            "ONNX element type {} ({}) is not supported",
            other,
            onnx_type_name(other)
        ),
    })
}

pub fn onnx_type_name(code: i32) -> &'static str {
    match code {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17..=20 => "float8",
        21 | 22 | 25 | 26 => "int4/int2",
        _ => "unknown",
    }
}

/// Convert a tensor; `base_dir` is where external data files are looked up.
pub fn tensor_from_proto(tp: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let name = if tp.name.is_empty() {
        "<unnamed>"
    } else {
        tp.name.as_str()
    };
    let dtype = dtype_from_onnx(tp.data_type).with_context(|| format!("tensor '{name}'"))?;
    let mut dims = Vec::with_capacity(tp.dims.len());
    for &d in &tp.dims {
        if d < 0 {
            bail!("tensor '{name}' has negative dim {d}");
        }
        dims.push(d as usize);
    }
    let count = numel(&dims).with_context(|| format!("tensor '{name}'"))?;
    let nbytes = count
        .checked_mul(dtype.size())
        .with_context(|| format!("tensor '{name}' is too large"))?;

    let bytes: Vec<u8> = if tp.data_location == 1 {
        read_external(tp, name, base_dir, nbytes)?
    } else if !tp.raw_data.is_empty() || count == 0 {
        tp.raw_data.clone()
    } else {
        match dtype {
            DType::F32 => tp.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I64 => tp.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I32 => tp.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // int32_data carries the narrow types one element per entry
            DType::I8 | DType::U8 | DType::Bool => tp.int32_data.iter().map(|&v| v as u8).collect(),
            DType::F16 | DType::BF16 => tp
                .int32_data
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
        }
    };
    if bytes.len() != nbytes {
        bail!(
            "tensor '{name}' ({dtype} {:?}) should have {nbytes} bytes of data, has {}",
            dims,
            bytes.len()
        );
    }
    Ok(Tensor::new(
        dtype,
        dims,
        Blob::owned(AlignedBuf::from_bytes(&bytes)),
    )?)
}

fn read_external(
    tp: &TensorProto,
    name: &str,
    base_dir: Option<&Path>,
    nbytes: usize,
) -> Result<Vec<u8>> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &tp.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => {
                offset = kv
                    .value
                    .parse()
                    .with_context(|| format!("tensor '{name}': bad external offset"))?
            }
            "length" => {
                length = Some(
                    kv.value
                        .parse::<u64>()
                        .with_context(|| format!("tensor '{name}': bad external length"))?,
                )
            }
            _ => {}
        }
    }
    let location = location
        .with_context(|| format!("tensor '{name}' says its data is external but names no file"))?;
    let rel = Path::new(&location);
    // ONNX requires locations relative to the model's folder; refuse escapes.
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!(
            "tensor '{name}': external data location '{location}' must be a relative path inside the model's folder"
        );
    }
    let base = base_dir.with_context(|| {
        format!("tensor '{name}' has external data but the model was not loaded from a file")
    })?;
    let path = base.join(rel);
    let want = length.unwrap_or(nbytes as u64);
    if want != nbytes as u64 {
        bail!(
            "tensor '{name}': external data length {want} does not match its shape ({nbytes} bytes)"
        );
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&path)
        .with_context(|| format!("tensor '{name}': opening external data {}", path.display()))?;
    let file_len = f.metadata()?.len();
    if offset.checked_add(want).is_none_or(|e| e > file_len) {
        bail!(
            "tensor '{name}': external data {}+{want} lies past the end of {} ({file_len} bytes)",
            offset,
            path.display()
        );
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; nbytes];
    f.read_exact(&mut buf)
        .with_context(|| format!("tensor '{name}': reading external data {}", path.display()))?;
    Ok(buf)
}
