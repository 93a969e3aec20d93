//! Models: open one from a path or a buffer, describe its inputs and outputs.

use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use morsel_runtime::{DType, Dim, Model};

use crate::{CResult, Fail, MorselStatus, guard, write_out};

/// A loaded model (opaque). Free it with `morsel_model_free`. Read-only
/// after loading: one model may be used from several threads at once.
pub struct MorselModel {
    pub(crate) model: Model,
    pub(crate) inputs: Vec<IoInfo>,
    pub(crate) outputs: Vec<IoInfo>,
}

/// An input or output as C sees it: a NUL-terminated name, a dtype code,
/// and dims with -1 for symbolic ones (such as a batch dim `N`).
pub(crate) struct IoInfo {
    pub name: String,
    pub c_name: CString,
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl MorselModel {
    pub(crate) fn new(model: Model) -> MorselModel {
        let g = model.graph();
        let info = |ids: &[usize]| -> Vec<IoInfo> {
            ids.iter()
                .map(|&id| {
                    let v = &g.values[id];
                    IoInfo {
                        name: v.name.clone(),
                        // A name with an interior NUL cannot be a C string as is.
                        c_name: CString::new(v.name.replace('\0', "\\0")).unwrap_or_default(),
                        dtype: v.dtype,
                        dims: v
                            .shape
                            .iter()
                            .map(|d| match d {
                                Dim::Known(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                                Dim::Sym(_) => -1,
                            })
                            .collect(),
                    }
                })
                .collect()
        };
        MorselModel {
            inputs: info(&g.inputs),
            outputs: info(&g.outputs),
            model,
        }
    }
}

fn boxed(model: Model) -> *mut MorselModel {
    Box::into_raw(Box::new(MorselModel::new(model)))
}

/// A path from a C string: any bytes on Unix, UTF-8 elsewhere.
///
/// # Safety
/// `path` is null or a NUL-terminated string valid for reads.
unsafe fn path_arg<'a>(path: *const c_char) -> CResult<&'a Path> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if path.is_null() {
            return Err(Fail::null("path"));
        }
        // SAFETY: non-null and NUL-terminated by the caller's contract.
        let c = unsafe { std::ffi::CStr::from_ptr(path) };
        Ok(Path::new(std::ffi::OsStr::from_bytes(c.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        // SAFETY: forwarded contract.
        unsafe { crate::str_arg(path, "path") }.map(Path::new)
    }
}

#[cfg(feature = "mmap")]
fn open_path(path: &Path) -> morsel_runtime::Result<Model> {
    Model::open(path)
}

#[cfg(not(feature = "mmap"))]
fn open_path(path: &Path) -> morsel_runtime::Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| morsel_runtime::Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    Model::from_bytes(&bytes)
}

/// Open a `.morsel` file. With the default `mmap` feature the file is mapped
/// and its weights are used in place (it must not be modified while open).
/// On success `*out` holds a new model.
///
/// # Safety
/// `path` is null or a NUL-terminated string; `out` is null or valid for
/// writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_open(
    path: *const c_char,
    out: *mut *mut MorselModel,
) -> MorselStatus {
    guard(|| {
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        // SAFETY: the caller's contract on `path`.
        let path = unsafe { path_arg(path) }?;
        let model = open_path(path)?;
        // SAFETY: `out` is non-null and valid for writes by the caller's contract.
        unsafe { write_out(out, boxed(model), "out") }
    })
}

/// Read a model from `len` bytes at `data`. The bytes are copied: the
/// caller may free them as soon as this returns. Any bytes are safe to pass:
/// a truncated or corrupt buffer gives `MORSEL_STATUS_FORMAT`.
///
/// # Safety
/// `data` is null or valid for reading `len` bytes; `out` is null or valid
/// for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_from_buffer(
    data: *const u8,
    len: usize,
    out: *mut *mut MorselModel,
) -> MorselStatus {
    guard(|| {
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        if data.is_null() {
            return Err(Fail::null("data"));
        }
        // SAFETY: non-null and valid for `len` bytes by the caller's contract;
        // the slice is only read, and only during this call.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        let model = Model::from_bytes(bytes)?;
        // SAFETY: `out` is non-null and valid for writes by the caller's contract.
        unsafe { write_out(out, boxed(model), "out") }
    })
}

/// Free a model. Null is allowed (nothing happens). Sessions made from it
/// keep working: they hold their own reference. Leaves `morsel_last_error`
/// unchanged.
///
/// # Safety
/// `model` is null or a pointer from `morsel_model_open` /
/// `morsel_model_from_buffer` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_free(model: *mut MorselModel) {
    // Not through `guard`: freeing leaves `morsel_last_error` as it was, so
    // a caller may clean up before reading the message.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !model.is_null() {
            // SAFETY: made by Box::into_raw in this crate and not freed yet,
            // by the caller's contract.
            drop(unsafe { Box::from_raw(model) });
        }
    }));
}

#[derive(Clone, Copy)]
enum Side {
    Input,
    Output,
}

/// The model behind a handle.
///
/// # Safety
/// `model` is null or a live model handle.
pub(crate) unsafe fn model_ref<'a>(model: *const MorselModel) -> CResult<&'a MorselModel> {
    if model.is_null() {
        return Err(Fail::null("model"));
    }
    // SAFETY: a live handle by the caller's contract; only read.
    Ok(unsafe { &*model })
}

/// # Safety
/// `model` is null or a live model handle.
unsafe fn io_info<'a>(model: *const MorselModel, side: Side, index: usize) -> CResult<&'a IoInfo> {
    // SAFETY: forwarded contract.
    let m = unsafe { model_ref(model) }?;
    let (list, what) = match side {
        Side::Input => (&m.inputs, "input"),
        Side::Output => (&m.outputs, "output"),
    };
    list.get(index).ok_or_else(|| {
        Fail::invalid(format!(
            "{what} index {index} is out of range: the model has {} {what}s",
            list.len()
        ))
    })
}

/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
unsafe fn count(model: *const MorselModel, side: Side, out: *mut usize) -> MorselStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_ref(model) }?;
        let n = match side {
            Side::Input => m.inputs.len(),
            Side::Output => m.outputs.len(),
        };
        // SAFETY: forwarded contract.
        unsafe { write_out(out, n, "out") }
    })
}

/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
unsafe fn name(
    model: *const MorselModel,
    side: Side,
    index: usize,
    out: *mut *const c_char,
) -> MorselStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let info = unsafe { io_info(model, side, index) }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, info.c_name.as_ptr(), "out") }
    })
}

/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
unsafe fn dtype(
    model: *const MorselModel,
    side: Side,
    index: usize,
    out: *mut i32,
) -> MorselStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let info = unsafe { io_info(model, side, index) }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, i32::from(info.dtype.code()), "out") }
    })
}

/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
unsafe fn rank(
    model: *const MorselModel,
    side: Side,
    index: usize,
    out: *mut usize,
) -> MorselStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let info = unsafe { io_info(model, side, index) }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, info.dims.len(), "out") }
    })
}

/// # Safety
/// `model` is null or a live handle; `dims` is null or valid for writing
/// `capacity` int64s.
unsafe fn dims(
    model: *const MorselModel,
    side: Side,
    index: usize,
    dims: *mut i64,
    capacity: usize,
) -> MorselStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let info = unsafe { io_info(model, side, index) }?;
        let rank = info.dims.len();
        if capacity < rank {
            return Err(Fail::new(
                MorselStatus::BufferTooSmall,
                format!(
                    "'{}' has rank {rank}, the dims buffer holds {capacity}",
                    info.name
                ),
            ));
        }
        if rank > 0 {
            if dims.is_null() {
                return Err(Fail::null("dims"));
            }
            // SAFETY: `dims` is valid for `capacity >= rank` writes by the
            // caller's contract and cannot overlap the model's own vector.
            unsafe { std::ptr::copy_nonoverlapping(info.dims.as_ptr(), dims, rank) };
        }
        Ok(())
    })
}

// cbindgen does not expand macros, so the accessors are written out.

/// Number of inputs of the model.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_input_count(
    model: *const MorselModel,
    out: *mut usize,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { count(model, Side::Input, out) }
}

/// Name of input `index`: NUL-terminated, owned by the model (valid until
/// `morsel_model_free`).
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_input_name(
    model: *const MorselModel,
    index: usize,
    out: *mut *const c_char,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { name(model, Side::Input, index, out) }
}

/// Element type of input `index`, a `MorselDtype` code.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_input_dtype(
    model: *const MorselModel,
    index: usize,
    out: *mut i32,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { dtype(model, Side::Input, index, out) }
}

/// Rank (number of dims) of input `index`.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_input_rank(
    model: *const MorselModel,
    index: usize,
    out: *mut usize,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { rank(model, Side::Input, index, out) }
}

/// Dims of input `index`, written to `dims_out[0..rank]`; a symbolic dim
/// (such as a batch `N`) is -1. `MORSEL_STATUS_BUFFER_TOO_SMALL` when
/// `capacity` is less than the rank.
///
/// # Safety
/// `model` is null or a live handle; `dims_out` is null or valid for writing
/// `capacity` int64s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_input_dims(
    model: *const MorselModel,
    index: usize,
    dims_out: *mut i64,
    capacity: usize,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { dims(model, Side::Input, index, dims_out, capacity) }
}

/// Number of outputs of the model.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_output_count(
    model: *const MorselModel,
    out: *mut usize,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { count(model, Side::Output, out) }
}

/// Name of output `index`: NUL-terminated, owned by the model (valid until
/// `morsel_model_free`).
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_output_name(
    model: *const MorselModel,
    index: usize,
    out: *mut *const c_char,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { name(model, Side::Output, index, out) }
}

/// Element type of output `index`, a `MorselDtype` code.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_output_dtype(
    model: *const MorselModel,
    index: usize,
    out: *mut i32,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { dtype(model, Side::Output, index, out) }
}

/// Rank (number of dims) of output `index`.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_output_rank(
    model: *const MorselModel,
    index: usize,
    out: *mut usize,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { rank(model, Side::Output, index, out) }
}

/// Dims of output `index`, written to `dims_out[0..rank]`; a symbolic dim
/// (such as a batch `N`) is -1. `MORSEL_STATUS_BUFFER_TOO_SMALL` when
/// `capacity` is less than the rank.
///
/// # Safety
/// `model` is null or a live handle; `dims_out` is null or valid for writing
/// `capacity` int64s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_model_output_dims(
    model: *const MorselModel,
    index: usize,
    dims_out: *mut i64,
    capacity: usize,
) -> MorselStatus {
    // SAFETY: forwarded contract.
    unsafe { dims(model, Side::Output, index, dims_out, capacity) }
}
