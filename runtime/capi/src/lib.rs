//! # morsel-capi
//!
//! The C API of the Morsel runtime: `include/morsel.h` (generated from this
//! crate by cbindgen, committed, checked for drift by `make test-arm`), a
//! static library `libmorsel_capi.a` and a shared one `libmorsel_capi.so`.
//!
//! Conventions, for every function:
//! - it returns a [`MorselStatus`]; `MORSEL_STATUS_OK` (0) is success, and
//!   anything else leaves a one-line message for [`morsel_last_error`] on the
//!   calling thread (a call that succeeds clears it);
//! - results come back through out-pointers, written only on success unless
//!   the function says otherwise;
//! - a null pointer where one is required is `MORSEL_STATUS_NULL_ARGUMENT`,
//!   never a crash; a panic inside the runtime is caught and returned as
//!   `MORSEL_STATUS_PANIC` (with `panic = "abort"` builds, such as the
//!   `release-small` profile, a panic aborts the process instead: it still
//!   never unwinds into C);
//! - handles are opaque: a [`MorselModel`] may be shared between threads, a
//!   [`MorselSession`] is used by one thread at a time. A session keeps its
//!   model alive, so the model may be freed first.
//!
//! Memory planning is part of the API: [`morsel_session_planned_bytes`] says
//! how much activation memory a run with given input dims needs before
//! running, and a session made with a `memory_limit_bytes` refuses a run that
//! needs more with `MORSEL_STATUS_MEMORY` and a message giving both numbers.
#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use morsel_runtime::{DType, Error, ErrorKind};

mod model;
mod session;

pub use model::*;
pub use session::*;

/// What a call returned. The first codes mirror the runtime's error kinds;
/// the last ones are the C boundary's own.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MorselStatus {
    /// Success.
    Ok = 0,
    /// The bytes are not a valid `.morsel` file (truncated, corrupt, hostile).
    Format = 1,
    /// The model needs something this build does not have (a newer format
    /// version, an unknown op, encoding or dtype).
    Unsupported = 2,
    /// The inputs do not fit the model (name, dtype, shape, byte length).
    Input = 3,
    /// The graph is inconsistent (shapes that cannot match, bad attributes).
    Graph = 4,
    /// The run needs more activation memory than the session's budget.
    Memory = 5,
    /// Reading the model file failed.
    Io = 6,
    /// A required pointer argument was null.
    NullArgument = 7,
    /// A caller-owned buffer is too small; the sizes it needs were written.
    BufferTooSmall = 8,
    /// An argument is out of range (an index, a dtype code, a negative dim,
    /// a string that is not UTF-8, a wrong number of outputs).
    InvalidArgument = 9,
    /// The runtime panicked (a bug in Morsel); the session is unusable.
    Panic = 10,
}

/// Element types, with the same codes as the `.morsel` format. Struct fields
/// and out-parameters carry them as `int32_t`.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MorselDtype {
    F32 = 1,
    F16 = 2,
    Bf16 = 3,
    I8 = 4,
    U8 = 5,
    I32 = 6,
    I64 = 7,
    Bool = 8,
}

/// A failed call: the status to return and the message to keep.
#[derive(Debug)]
pub(crate) struct Fail {
    pub status: MorselStatus,
    pub message: String,
}

pub(crate) type CResult<T = ()> = Result<T, Fail>;

impl Fail {
    pub fn new(status: MorselStatus, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }
    pub fn null(what: &str) -> Fail {
        Fail::new(MorselStatus::NullArgument, format!("{what} is null"))
    }
    pub fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(MorselStatus::InvalidArgument, message)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let status = match e.kind() {
            ErrorKind::Format => MorselStatus::Format,
            ErrorKind::Unsupported => MorselStatus::Unsupported,
            ErrorKind::Input => MorselStatus::Input,
            ErrorKind::Graph => MorselStatus::Graph,
            ErrorKind::Memory => MorselStatus::Memory,
            ErrorKind::Io => MorselStatus::Io,
        };
        Fail::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with an interior NUL would be cut short in C: replace it.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // Fails only while the thread is being torn down; nothing to report to then.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        if !e.borrow().is_empty() {
            *e.borrow_mut() = CString::default();
        }
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Run an API call: catch panics, turn the result into a status and keep the
/// message. Every `extern "C"` function goes through here.
pub(crate) fn guard(f: impl FnOnce() -> CResult) -> MorselStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            clear_last_error();
            MorselStatus::Ok
        }
        Ok(Err(fail)) => {
            set_last_error(&fail.message);
            fail.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "internal error: the runtime panicked: {}",
                panic_message(&*payload)
            ));
            MorselStatus::Panic
        }
    }
}

/// Write `value` through an out-pointer the caller gave.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> CResult {
    if out.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-null, and valid for writes by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// A UTF-8 string from a C string.
///
/// # Safety
/// `s` is null or a NUL-terminated string valid for reads.
pub(crate) unsafe fn str_arg<'a>(s: *const c_char, what: &str) -> CResult<&'a str> {
    if s.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map_err(|_| Fail::invalid(format!("{what} is not valid UTF-8")))
}

/// The runtime dtype of a C dtype code.
pub(crate) fn dtype_arg(code: i32, what: &str) -> CResult<DType> {
    u8::try_from(code)
        .ok()
        .and_then(|c| DType::from_code(c).ok())
        .ok_or_else(|| Fail::invalid(format!("{what}: {code} is not a MorselDtype code")))
}

/// The message of the last call on this thread that failed, or `""` after a
/// call that succeeded (`morsel_model_free` and `morsel_session_free` leave
/// it unchanged). Never null. The pointer stays valid until the next
/// `morsel_*` call on the same thread.
#[unsafe(no_mangle)]
pub extern "C" fn morsel_last_error() -> *const c_char {
    static EMPTY: &CStr = c"";
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|e| e.borrow().as_ptr())
            .unwrap_or(EMPTY.as_ptr())
    })
    .unwrap_or(EMPTY.as_ptr())
}

/// The name of a status code, e.g. `"MORSEL_STATUS_MEMORY"`, or
/// `"MORSEL_STATUS_UNKNOWN"` (static, never null). Takes the code as an
/// `int32_t` so that any value a caller passes is safe.
#[unsafe(no_mangle)]
pub extern "C" fn morsel_status_name(status: i32) -> *const c_char {
    const NAMES: [&CStr; 11] = [
        c"MORSEL_STATUS_OK",
        c"MORSEL_STATUS_FORMAT",
        c"MORSEL_STATUS_UNSUPPORTED",
        c"MORSEL_STATUS_INPUT",
        c"MORSEL_STATUS_GRAPH",
        c"MORSEL_STATUS_MEMORY",
        c"MORSEL_STATUS_IO",
        c"MORSEL_STATUS_NULL_ARGUMENT",
        c"MORSEL_STATUS_BUFFER_TOO_SMALL",
        c"MORSEL_STATUS_INVALID_ARGUMENT",
        c"MORSEL_STATUS_PANIC",
    ];
    let unknown = c"MORSEL_STATUS_UNKNOWN".as_ptr();
    catch_unwind(|| {
        usize::try_from(status)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map_or(unknown, |n| n.as_ptr())
    })
    .unwrap_or(unknown)
}

/// The runtime's version, e.g. `"0.1.0"` (static, never null).
#[unsafe(no_mangle)]
pub extern "C" fn morsel_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    catch_unwind(|| VERSION.as_ptr()).unwrap_or(c"unknown".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: never null; copied before the next call.
        unsafe { CStr::from_ptr(morsel_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = guard(|| panic!("boom at {}", 42));
        assert_eq!(st, MorselStatus::Panic);
        assert_eq!(last(), "internal error: the runtime panicked: boom at 42");
        assert_eq!(guard(|| Ok(())), MorselStatus::Ok);
        assert_eq!(last(), "");
    }

    #[test]
    fn messages_with_nul_bytes_survive() {
        let st = guard(|| Err(Fail::invalid("a\0b")));
        assert_eq!(st, MorselStatus::InvalidArgument);
        assert_eq!(last(), "a\\0b");
    }
}
