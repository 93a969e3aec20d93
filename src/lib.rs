//! # morsel
//!
//! Facade over [`morsel_runtime`] (load and run `.morsel` models) and, with
//! the default `compress` feature, [`morsel_compress`] (import ONNX,
//! compress, write `.morsel`). See the README for the CLI.

pub use morsel_runtime as runtime;
pub use morsel_runtime::{DType, Error, Model, Options, Session, Tensor, TensorRef};

#[cfg(feature = "compress")]
pub use morsel_compress as compress;
