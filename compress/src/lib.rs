//! # morsel-compress
//!
//! Imports ONNX models into Morsel's graph IR, runs graph passes
//! (cleanup, pruning, low-rank, quantization, distillation),
//! evaluates the result against the original, and writes `.morsel` files.
//! The `morsel` binary is the command-line face of this crate.

#![forbid(unsafe_code)]

pub mod calibrate;
pub mod distill;
pub mod fuse;
pub mod heads;
pub mod layers;
pub mod lowrank;
pub mod measure;
pub mod npy;
pub mod onnx;
pub mod passes;
pub mod prune;
pub mod quantize;
pub mod search;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use morsel_runtime::{Graph, Model};

/// Load a model for running or converting: `.onnx` is imported, anything
/// else is read as `.morsel`.
pub fn load_any(path: &Path) -> Result<Model> {
    if is_onnx(path) {
        let g = onnx::load(path)?;
        Model::from_graph(g).map_err(|e| anyhow!("{}: {e}", path.display()))
    } else {
        Model::open(path).with_context(|| format!("opening {}", path.display()))
    }
}

pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Import an ONNX file and stamp the metadata a `.morsel` carries.
pub fn convert(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let mut g =
        onnx::load_bytes(&bytes, base).with_context(|| format!("importing {}", path.display()))?;
    use sha2::Digest;
    let hash = sha2::Sha256::digest(&bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    g.metadata.insert(
        "producer".into(),
        format!("morsel-compress {}", env!("CARGO_PKG_VERSION")),
    );
    g.metadata.insert("source_sha256".into(), hex);
    g.metadata.insert(
        "source_name".into(),
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    g.metadata.insert(
        "recipe".into(),
        r#"{"steps":["import","fuse-qdq-weights","fold-constants","fold-batchnorm","fuse-layer-norm","fuse-gelu","fuse-hard-swish","fold-conv-affine","fold-batchnorm","fuse-bias","fuse-activation","fuse-post-affine","fold-shape-copies","eliminate-dead","flush-subnormal-constants"]}"#.into(),
    );
    Ok(g)
}
