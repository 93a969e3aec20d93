//! Sessions: plan memory for given input dims, and run with caller-owned
//! input and output buffers.

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use morsel_runtime::{DType, Options, Session, TensorRef};

use crate::model::{MorselModel, model_ref};
use crate::{CResult, Fail, MorselStatus, dtype_arg, guard, str_arg, write_out};

/// A session (opaque): plans and buffers for running one model, used by one
/// thread at a time. Free it with `morsel_session_free`.
pub struct MorselSession {
    session: Session,
    /// Plans without the budget, so `morsel_session_planned_bytes` can say
    /// how much a run needs even when that is over the budget.
    planner: Option<Session>,
    limit: Option<usize>,
    /// Set while a run is in progress: still set afterwards only if the run
    /// panicked, and then the session refuses further runs.
    poisoned: bool,
}

/// One input tensor, given by the caller.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MorselInput {
    /// The input's name in the model (NUL-terminated UTF-8).
    pub name: *const c_char,
    /// A `MorselDtype` code; must match the model's input.
    pub dtype: i32,
    /// `rank` dims, each >= 0.
    pub dims: *const i64,
    pub rank: usize,
    /// The elements, densely packed in row-major order; any alignment.
    /// Ignored by `morsel_session_planned_bytes` (may be null there).
    pub data: *const c_void,
    /// Length of `data` in bytes: element count × dtype size.
    pub data_len: usize,
}

/// One output buffer, owned by the caller. The first four fields are set by
/// the caller, the last three are written by `morsel_session_run`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MorselOutput {
    /// Where the output's elements go (row-major), `capacity` bytes.
    pub data: *mut c_void,
    pub capacity: usize,
    /// Where its dims go, `dims_capacity` int64s.
    pub dims: *mut i64,
    pub dims_capacity: usize,
    /// Written: the output's rank.
    pub rank: usize,
    /// Written: the output's size in bytes (what `capacity` must be).
    pub data_len: usize,
    /// Written: its `MorselDtype` code.
    pub dtype: i32,
}

/// Make a session for `model`. `threads`: threads for the heavy kernels (0
/// means 1). `memory_limit_bytes`: refuse runs whose planned activation
/// memory exceeds it (0 means no limit). On success `*out` holds the session.
///
/// # Safety
/// `model` is null or a live model handle; `out` is null or valid for
/// writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_session_new(
    model: *const MorselModel,
    threads: usize,
    memory_limit_bytes: usize,
    out: *mut *mut MorselSession,
) -> MorselStatus {
    guard(|| {
        // SAFETY: the caller's contract on `model`.
        let m = unsafe { model_ref(model) }?;
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        let limit = (memory_limit_bytes > 0).then_some(memory_limit_bytes);
        let session = m.model.session(Options {
            threads: threads.max(1),
            memory_limit: limit,
            ..Options::default()
        });
        let s = Box::new(MorselSession {
            session,
            planner: None,
            limit,
            poisoned: false,
        });
        // SAFETY: `out` is non-null and valid for writes by the caller's contract.
        unsafe { write_out(out, Box::into_raw(s), "out") }
    })
}

/// Free a session. Null is allowed (nothing happens). Leaves
/// `morsel_last_error` unchanged.
///
/// # Safety
/// `session` is null or a pointer from `morsel_session_new` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_session_free(session: *mut MorselSession) {
    // Not through `guard`: freeing leaves `morsel_last_error` as it was, so
    // a caller may clean up before reading the message.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !session.is_null() {
            // SAFETY: made by Box::into_raw in this crate and not freed yet,
            // by the caller's contract.
            drop(unsafe { Box::from_raw(session) });
        }
    }));
}

/// # Safety
/// `session` is null or a live session handle, not used elsewhere during
/// the call.
unsafe fn session_mut<'a>(session: *mut MorselSession) -> CResult<&'a mut MorselSession> {
    if session.is_null() {
        return Err(Fail::null("session"));
    }
    // SAFETY: a live handle used by one thread at a time, by the caller's contract.
    Ok(unsafe { &mut *session })
}

/// An input as the runtime wants it, borrowed from the caller's memory.
struct Input<'a> {
    name: &'a str,
    dtype: DType,
    dims: Vec<usize>,
    data: &'a [u8],
}

/// Read and check the caller's input array.
///
/// # Safety
/// `inputs` is null or valid for reading `n` `MorselInput`s whose pointers
/// satisfy that struct's contract (`data` is not read unless `with_data`).
unsafe fn read_inputs<'a>(
    inputs: *const MorselInput,
    n: usize,
    with_data: bool,
) -> CResult<Vec<Input<'a>>> {
    if n > 0 && inputs.is_null() {
        return Err(Fail::null("inputs"));
    }
    let mut out: Vec<Input<'a>> = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: `inputs` is valid for `n` elements by the caller's contract;
        // aligned, as C arrays are. The struct is copied out.
        let inp = unsafe { inputs.add(i).read() };
        let what = |field: &str| format!("inputs[{i}].{field}");
        // SAFETY: the caller's contract on `name`.
        let name = unsafe { str_arg(inp.name, &what("name")) }?;
        let dtype = dtype_arg(inp.dtype, &what("dtype"))?;
        if inp.rank > 0 && inp.dims.is_null() {
            return Err(Fail::null(&what("dims")));
        }
        let raw_dims: &[i64] = if inp.rank == 0 {
            &[]
        } else {
            // SAFETY: non-null and valid for `rank` reads by the caller's contract.
            unsafe { std::slice::from_raw_parts(inp.dims, inp.rank) }
        };
        let mut dims = Vec::with_capacity(raw_dims.len());
        for (k, &d) in raw_dims.iter().enumerate() {
            dims.push(usize::try_from(d).map_err(|_| {
                Fail::invalid(format!("{}[{k}] is {d}: dims must be >= 0", what("dims")))
            })?);
        }
        let data: &[u8] = if !with_data || inp.data_len == 0 {
            &[]
        } else if inp.data.is_null() {
            return Err(Fail::null(&what("data")));
        } else {
            // SAFETY: non-null and valid for `data_len` reads by the caller's
            // contract; only read during this call.
            unsafe { std::slice::from_raw_parts(inp.data.cast::<u8>(), inp.data_len) }
        };
        if out.iter().any(|p| p.name == name) {
            return Err(Fail::new(
                MorselStatus::Input,
                format!("input '{name}' is given twice"),
            ));
        }
        out.push(Input {
            name,
            dtype,
            dims,
            data,
        });
    }
    Ok(out)
}

/// Activation bytes a run with these input dims needs, planned before
/// running (buffers shared between values whose lifetimes do not overlap).
/// Only each input's `name`, `dims` and `rank` are read. Written to
/// `*out_bytes` even when it is over the session's budget, which then
/// returns `MORSEL_STATUS_MEMORY`.
///
/// # Safety
/// `session` is null or a live session handle; `inputs` is null or valid
/// for `n_inputs` elements; `out_bytes` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_session_planned_bytes(
    session: *mut MorselSession,
    inputs: *const MorselInput,
    n_inputs: usize,
    out_bytes: *mut usize,
) -> MorselStatus {
    guard(|| {
        // SAFETY: the caller's contract on `session`.
        let s = unsafe { session_mut(session) }?;
        if out_bytes.is_null() {
            return Err(Fail::null("out_bytes"));
        }
        // SAFETY: the caller's contract on `inputs`.
        let given = unsafe { read_inputs(inputs, n_inputs, false) }?;
        let model = s.session.model().clone();
        let g = model.graph();
        for inp in &given {
            if !g.inputs.iter().any(|&v| g.values[v].name == inp.name) {
                return Err(Fail::new(
                    MorselStatus::Input,
                    format!("the model has no input '{}'", inp.name),
                ));
            }
        }
        let mut dims: Vec<&[usize]> = Vec::with_capacity(g.inputs.len());
        for &v in &g.inputs {
            let value = &g.values[v];
            let inp = given.iter().find(|i| i.name == value.name).ok_or_else(|| {
                Fail::new(
                    MorselStatus::Input,
                    format!("missing input: {}", g.describe_value(v)),
                )
            })?;
            dims.push(&inp.dims);
        }
        let planner = s
            .planner
            .get_or_insert_with(|| model.session(Options::default()));
        let need = planner.plan(&dims)?.activation_bytes();
        // SAFETY: non-null (checked) and valid for a write by the caller's contract.
        unsafe { write_out(out_bytes, need, "out_bytes") }?;
        match s.limit {
            Some(limit) if need > limit => Err(Fail::new(
                MorselStatus::Memory,
                format!(
                    "memory budget exceeded: this run needs {need} bytes of activation memory, \
                     the budget is {limit} bytes"
                ),
            )),
            _ => Ok(()),
        }
    })
}

/// Run the model. `inputs`: one entry per model input, in any order, by
/// name. `outputs`: exactly one caller-owned buffer per model output, in the
/// model's output order. For every output, `rank`, `data_len` and `dtype`
/// are written, then its dims if `dims_capacity` >= rank and its data if
/// `capacity` >= `data_len`; if some buffer was too small the call returns
/// `MORSEL_STATUS_BUFFER_TOO_SMALL` (the other outputs are filled): grow
/// the buffers to the sizes written and run again. Each output is copied
/// once, from the session's buffers straight into `data` (no intermediate
/// copy), unless an output buffer overlaps an input's memory. A session with a memory
/// budget refuses a run that needs more with `MORSEL_STATUS_MEMORY` before
/// allocating anything.
///
/// # Safety
/// `session` is null or a live session handle used by no other thread
/// during the call; `inputs` is null or valid for `n_inputs` elements, each
/// with pointers valid as its fields describe; `outputs` is null or valid
/// for reading and writing `n_outputs` elements whose `data` and `dims`
/// are valid for `capacity` bytes and `dims_capacity` int64s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_session_run(
    session: *mut MorselSession,
    inputs: *const MorselInput,
    n_inputs: usize,
    outputs: *mut MorselOutput,
    n_outputs: usize,
) -> MorselStatus {
    guard(|| {
        // SAFETY: the caller's contract on `session`.
        let s = unsafe { session_mut(session) }?;
        if s.poisoned {
            return Err(Fail::new(
                MorselStatus::Panic,
                "this session panicked in an earlier run: free it and make a new one",
            ));
        }
        let want = s.session.model().graph().outputs.len();
        if n_outputs != want {
            return Err(Fail::invalid(format!(
                "n_outputs is {n_outputs}, the model has {want} outputs"
            )));
        }
        if n_outputs > 0 && outputs.is_null() {
            return Err(Fail::null("outputs"));
        }
        // Check every output buffer before doing any work.
        let mut bufs: Vec<MorselOutput> = Vec::with_capacity(n_outputs);
        for k in 0..n_outputs {
            // SAFETY: `outputs` is valid for `n_outputs` elements by the
            // caller's contract; the struct is copied out.
            let o = unsafe { outputs.add(k).read() };
            if o.capacity > 0 && o.data.is_null() {
                return Err(Fail::null(&format!("outputs[{k}].data")));
            }
            if o.dims_capacity > 0 && o.dims.is_null() {
                return Err(Fail::null(&format!("outputs[{k}].dims")));
            }
            bufs.push(o);
        }
        // SAFETY: the caller's contract on `inputs`; the input memory is
        // only read during this call.
        let given = unsafe { read_inputs(inputs, n_inputs, true) }?;
        let refs: Vec<(&str, TensorRef<'_>)> = given
            .iter()
            .map(|i| {
                (
                    i.name,
                    TensorRef {
                        dtype: i.dtype,
                        dims: &i.dims,
                        data: i.data,
                    },
                )
            })
            .collect();
        // An output buffer may be an input buffer too (the caller reuses
        // memory): then the outputs are copied out only after the inputs
        // are released. Otherwise each output goes straight from the
        // session's buffers into the caller's (one copy).
        let overlaps = |o: &MorselOutput| {
            let (lo, hi) = (o.data as usize, o.data as usize + o.capacity);
            given.iter().any(|i| {
                let (a, b) = (
                    i.data.as_ptr() as usize,
                    i.data.as_ptr() as usize + i.data.len(),
                );
                a < hi && lo < b
            })
        };
        let model = s.session.model().clone();
        let too_small = if bufs.iter().any(overlaps) {
            s.poisoned = true;
            let r = s.session.run(&refs);
            s.poisoned = false;
            let results = r?;
            drop(refs);
            drop(given);
            let views: Vec<TensorRef<'_>> = results.iter().map(|t| t.view()).collect();
            // SAFETY: `outputs` is valid for `n_outputs` elements and each
            // buffer for its capacities (caller's contract); no input is
            // borrowed any more.
            unsafe { write_outputs(&model, &views, &bufs, outputs) }
        } else {
            s.poisoned = true;
            // SAFETY: as above; the output buffers do not overlap any input.
            let r = s.session.run_with(&refs, |views| unsafe {
                write_outputs(&model, views, &bufs, outputs)
            });
            s.poisoned = false;
            r?
        };
        match too_small {
            Some(m) => Err(Fail::new(MorselStatus::BufferTooSmall, m)),
            None => Ok(()),
        }
    })
}

/// Write each output's rank, size, dtype, dims and data into the caller's
/// `outputs` as far as its buffers allow; returns what was too small.
///
/// # Safety
/// `outputs` is valid for `bufs.len()` elements (read and write), and each
/// `bufs[k]` (a copy of `outputs[k]`) has `data`/`dims` valid for
/// `capacity` bytes / `dims_capacity` int64s (non-null when non-zero),
/// none overlapping the memory of `results`.
unsafe fn write_outputs(
    model: &morsel_runtime::Model,
    results: &[TensorRef<'_>],
    bufs: &[MorselOutput],
    outputs: *mut MorselOutput,
) -> Option<String> {
    let g = model.graph();
    let name = |k: usize| g.values[g.outputs[k]].name.as_str();
    let mut too_small: Option<String> = None;
    for (k, (t, o)) in results.iter().zip(bufs).enumerate() {
        let bytes = t.data;
        let rank = t.dims.len();
        // SAFETY: k < n_outputs, within the caller's array.
        let p = unsafe { outputs.add(k) };
        // SAFETY: `p` is element `k` of the caller's array, valid for
        // writes by the caller's contract; fields are written in place.
        unsafe {
            (*p).rank = rank;
            (*p).data_len = bytes.len();
            (*p).dtype = i32::from(t.dtype.code());
        }
        if o.dims_capacity >= rank {
            for (j, &d) in t.dims.iter().enumerate() {
                // SAFETY: `dims` is non-null (checked when rank > 0, as
                // dims_capacity >= rank > 0) and valid for
                // `dims_capacity` writes by the caller's contract.
                unsafe { o.dims.add(j).write(i64::try_from(d).unwrap_or(i64::MAX)) };
            }
        } else if too_small.is_none() {
            too_small = Some(format!(
                "output '{}' has rank {rank}, outputs[{k}].dims holds {}",
                name(k),
                o.dims_capacity
            ));
        }
        if o.capacity >= bytes.len() {
            if !bytes.is_empty() {
                // SAFETY: `data` is non-null (capacity > 0) and valid for
                // `capacity >= len` byte writes by the caller's contract;
                // the source is the session's memory (or its output
                // tensors), which does not overlap it.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), o.data.cast::<u8>(), bytes.len())
                };
            }
        } else if too_small.is_none() {
            too_small = Some(format!(
                "output '{}' ({} {:?}) needs {} bytes, outputs[{k}].capacity is {}",
                name(k),
                t.dtype,
                t.dims,
                bytes.len(),
                o.capacity
            ));
        }
    }
    too_small
}

/// Bytes this session currently holds for activations and its own scratch
/// (grows on the first run with new input dims, then stays). The kernels'
/// per-thread scratch and packed weights are not included: see
/// `morsel_session_memory`.
///
/// # Safety
/// `session` is null or a live session handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_session_held_bytes(
    session: *mut MorselSession,
    out: *mut usize,
) -> MorselStatus {
    guard(|| {
        // SAFETY: the caller's contract on `session`.
        let s = unsafe { session_mut(session) }?;
        // SAFETY: the caller's contract on `out`.
        unsafe { write_out(out, s.session.held_bytes(), "out") }
    })
}

/// Memory held for running, by owner (see `morsel_session_memory`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MorselMemory {
    /// The session's activation buffers (what `morsel_session_planned_bytes`
    /// plans and the budget covers), once a run has used them.
    pub activations: usize,
    /// The session's own scratch (per-row statistics, col2im buffers).
    pub session_scratch: usize,
    /// The kernels' per-thread scratch, summed over the process's threads:
    /// f32 matmul/conv packing (a 256 KiB block per thread that packs),
    /// depthwise-conv planes, int8 quantized rows. Shared by all sessions.
    pub kernel_scratch: usize,
    /// Constant weights packed for the kernels, shared by all sessions of
    /// the model.
    pub prepared_weights: usize,
}

/// Memory held for running, by owner, as now (after a run: what it
/// needed). Only `activations` is planned and covered by the budget; the
/// rest comes on top.
///
/// # Safety
/// `session` is null or a live session handle; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn morsel_session_memory(
    session: *mut MorselSession,
    out: *mut MorselMemory,
) -> MorselStatus {
    guard(|| {
        // SAFETY: the caller's contract on `session`.
        let s = unsafe { session_mut(session) }?;
        let m = s.session.memory();
        let mem = MorselMemory {
            activations: m.activations,
            session_scratch: m.session_scratch,
            kernel_scratch: m.kernel_scratch,
            prepared_weights: m.prepared_weights,
        };
        // SAFETY: the caller's contract on `out`.
        unsafe { write_out(out, mem, "out") }
    })
}
