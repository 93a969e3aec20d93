//! matmul ops (stub: being written).

use crate::graph::Attrs;
use crate::ops::Op;
use crate::{Error, Result};

pub fn build_matmul(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("MatMul is not implemented yet".into()))
}

pub fn build_gemm(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Gemm is not implemented yet".into()))
}
