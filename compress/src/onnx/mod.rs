//! ONNX import: protobuf → the runtime's graph IR, with older-opset forms
//! normalised to the latest one, constants folded and BatchNorm folded into
//! the preceding Conv/Gemm (see `crate::passes`).

mod import;
pub mod proto;
pub mod tensor;

use std::path::Path;

use anyhow::{Context, Result};
use morsel_runtime::Graph;
use morsel_runtime::tensor::Tensor;
use prost::Message;

pub use import::{MAX_OPSET, MIN_OPSET};

/// Import an ONNX file (external data is read relative to its folder).
pub fn load(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    load_bytes(&bytes, base).with_context(|| format!("importing {}", path.display()))
}

/// Import ONNX bytes; `base_dir` resolves external data.
pub fn load_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph> {
    let model = proto::ModelProto::decode(bytes).context("not a valid ONNX protobuf")?;
    import::import(&model, base_dir)
}

/// Read a serialized `TensorProto` (the `.pb` files of ONNX test data).
pub fn read_tensor_pb(path: &Path) -> Result<(String, Tensor)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let tp = proto::TensorProto::decode(&bytes[..])
        .with_context(|| format!("{} is not a TensorProto", path.display()))?;
    let t = tensor::tensor_from_proto(&tp, path.parent())?;
    Ok((tp.name, t))
}
