//! norm ops (stub: being written).

use crate::graph::Attrs;
use crate::ops::Op;
use crate::{Error, Result};

pub fn build_softmax(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Softmax is not implemented yet".into()))
}

pub fn build_batch_norm(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("BatchNormalization is not implemented yet".into()))
}
