//! resize ops (stub: being written).

use crate::graph::Attrs;
use crate::ops::Op;
use crate::{Error, Result};

pub fn build_resize(_a: &Attrs) -> Result<Box<dyn Op>> {
    Err(Error::Unsupported("Resize is not implemented yet".into()))
}
