//! # morsel-runtime
//!
//! Runs `.morsel` models (written by `morsel-compress`) on x86-64 and ARM
//! CPUs, embedded Linux and wasm32. Small, no network, no ONNX.
//!
//! ```no_run
//! use morsel_runtime::{Model, Options, TensorRef, DType};
//! let model = Model::open("examples/digits/digits_cnn.morsel")?;
//! let mut session = model.session(Options::default());
//! let x = vec![0f32; 64];
//! let input = TensorRef { dtype: DType::F32, dims: &[1, 1, 8, 8], data: bytemuck::cast_slice(&x) };
//! let outputs = session.run(&[("x", input)])?;
//! println!("{:?}", outputs[0].as_slice::<f32>()?);
//! # Ok::<(), morsel_runtime::Error>(())
//! ```
//!
//! Layout: [`graph`] is the one IR; [`format`] reads (and with feature
//! `write`, writes) the file; [`ops`] holds one file per op family;
//! [`kernels`] the hot loops per architecture; [`session`] plans memory and
//! runs.

pub mod dtype;
pub mod error;
pub mod format;
pub mod graph;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod par;
pub mod session;
pub mod tensor;

pub use bytemuck;
pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub use graph::Graph;
pub use model::Model;
pub use session::{MemoryUse, NodeTime, Options, Plan, Session};
pub use tensor::{Dim, Tensor, TensorMut, TensorRef};
