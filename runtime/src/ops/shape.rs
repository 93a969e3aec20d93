//! shape ops (stub: being written).

use crate::graph::Attrs;
use crate::ops::Op;
use crate::{Error, Result};

pub fn build_reshape(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Reshape is not implemented yet".into()))
}

pub fn build_flatten(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Flatten is not implemented yet".into()))
}

pub fn build_transpose(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Transpose is not implemented yet".into()))
}

pub fn build_concat(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Concat is not implemented yet".into()))
}

pub fn build_split(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Split is not implemented yet".into()))
}

pub fn build_slice(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Slice is not implemented yet".into()))
}

pub fn build_squeeze(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Squeeze is not implemented yet".into()))
}

pub fn build_unsqueeze(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Unsqueeze is not implemented yet".into()))
}

pub fn build_gather(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Gather is not implemented yet".into()))
}

pub fn build_shape(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Shape is not implemented yet".into()))
}

pub fn build_constant_of_shape(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("ConstantOfShape is not implemented yet".into()))
}

pub fn build_cast(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Cast is not implemented yet".into()))
}

pub fn build_identity(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Identity is not implemented yet".into()))
}

pub fn build_pad(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Pad is not implemented yet".into()))
}

pub fn build_expand(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Expand is not implemented yet".into()))
}

pub fn build_range(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Range is not implemented yet".into()))
}

pub fn build_tile(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Tile is not implemented yet".into()))
}
