//! conv ops (stub: being written).

use crate::graph::Attrs;
use crate::ops::Op;
use crate::{Error, Result};

pub fn build_conv(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Conv is not implemented yet".into()))
}

pub fn build_conv_transpose(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("ConvTranspose is not implemented yet".into()))
}
