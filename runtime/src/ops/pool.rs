//! pool ops (stub: being written).

use crate::graph::Attrs;
use crate::ops::Op;
use crate::{Error, Result};

pub fn build_max_pool(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("MaxPool is not implemented yet".into()))
}

pub fn build_average_pool(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("AveragePool is not implemented yet".into()))
}

pub fn build_global_average_pool(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("GlobalAveragePool is not implemented yet".into()))
}

pub fn build_global_max_pool(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("GlobalMaxPool is not implemented yet".into()))
}
