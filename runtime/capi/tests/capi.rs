//! The C API from the caller's side: every way a C program can get it wrong
//! (null pointers, wrong sizes and dtypes, corrupt model bytes, a budget
//! too small) returns a status and a message, never a crash; and a correct
//! run gives the same numbers as the Rust API.

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::{null, null_mut};

use morsel_capi::*;
use morsel_runtime::format::writer::{FloatStorage, to_bytes};
use morsel_runtime::graph::{Attrs, Graph, Node};
use morsel_runtime::{DType, Dim, Model, Tensor, TensorRef, ops};

/// x: f32 [N, 4] → y = Relu(x·W + b) [N, 3] and z = Sigmoid(y) [N, 3].
fn model_bytes() -> Vec<u8> {
    let mut g = Graph::default();
    let n = Dim::Sym("N".into());
    let x = g.add_value("x", DType::F32, vec![n.clone(), Dim::Known(4)]);
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 7.0).collect();
    let w = g.add_const("w", Tensor::from_slice(&[4, 3], &w).unwrap());
    let b = g.add_const(
        "b",
        Tensor::from_slice(&[3], &[0.25f32, -0.5, 0.125]).unwrap(),
    );
    let node = |g: &mut Graph, op: &str, inputs: &[usize], out: &str| {
        let o = g.add_value(out, DType::F32, vec![]);
        g.nodes.push(Node {
            name: format!("{op}_{out}"),
            op: ops::op_id(op).unwrap(),
            attrs: Attrs::new(),
            inputs: inputs.iter().map(|&i| Some(i)).collect(),
            outputs: vec![o],
        });
        o
    };
    let xw = node(&mut g, "MatMul", &[x, w], "xw");
    let pre = node(&mut g, "Add", &[xw, b], "pre");
    let y = node(&mut g, "Relu", &[pre], "y");
    let z = node(&mut g, "Sigmoid", &[y], "z");
    g.inputs = vec![x];
    g.outputs = vec![y, z];
    g.infer_shapes().unwrap();
    to_bytes(&g, FloatStorage::F32).unwrap()
}

fn last_error() -> String {
    // SAFETY: morsel_last_error never returns null and the string stays
    // valid until the next morsel call on this thread; it is copied now.
    unsafe { CStr::from_ptr(morsel_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

/// Assert a status and that the message mentions `needle`.
#[track_caller]
fn expect(status: MorselStatus, want: MorselStatus, needle: &str) {
    let msg = last_error();
    assert_eq!(status, want, "message: {msg}");
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
}

fn open(bytes: &[u8]) -> *mut MorselModel {
    let mut m = null_mut();
    // SAFETY: a valid slice and out-pointer.
    let st = unsafe { morsel_model_from_buffer(bytes.as_ptr(), bytes.len(), &mut m) };
    assert_eq!(st, MorselStatus::Ok, "{}", last_error());
    m
}

fn session(m: *const MorselModel, limit: usize) -> *mut MorselSession {
    let mut s = null_mut();
    // SAFETY: a live model and a valid out-pointer.
    let st = unsafe { morsel_session_new(m, 1, limit, &mut s) };
    assert_eq!(st, MorselStatus::Ok, "{}", last_error());
    s
}

/// The caller's side of one run: owned input and output buffers.
struct Call {
    name: CString,
    dims: Vec<i64>,
    x: Vec<f32>,
    outs: Vec<Vec<f32>>,
    out_dims: Vec<[i64; 4]>,
}

impl Call {
    fn new(batch: usize) -> Call {
        Call {
            name: CString::new("x").unwrap(),
            dims: vec![batch as i64, 4],
            x: (0..batch * 4).map(|i| (i as f32 * 0.37).sin()).collect(),
            outs: vec![vec![0.0; batch * 3]; 2],
            out_dims: vec![[0; 4]; 2],
        }
    }
    fn input(&self) -> MorselInput {
        MorselInput {
            name: self.name.as_ptr(),
            dtype: MorselDtype::F32 as i32,
            dims: self.dims.as_ptr(),
            rank: self.dims.len(),
            data: self.x.as_ptr().cast(),
            data_len: self.x.len() * 4,
        }
    }
    fn outputs(&mut self) -> Vec<MorselOutput> {
        self.outs
            .iter_mut()
            .zip(&mut self.out_dims)
            .map(|(o, d)| MorselOutput {
                data: o.as_mut_ptr().cast(),
                capacity: o.len() * 4,
                dims: d.as_mut_ptr(),
                dims_capacity: d.len(),
                rank: 0,
                data_len: 0,
                dtype: 0,
            })
            .collect()
    }
}

fn run(
    s: *mut MorselSession,
    inputs: &[MorselInput],
    outputs: &mut [MorselOutput],
) -> MorselStatus {
    // SAFETY: the arrays and every pointer in them are live for the call.
    unsafe {
        morsel_session_run(
            s,
            inputs.as_ptr(),
            inputs.len(),
            outputs.as_mut_ptr(),
            outputs.len(),
        )
    }
}

#[test]
fn run_matches_the_rust_api() {
    let bytes = model_bytes();
    let m = open(&bytes);
    let s = session(m, 0);
    let mut call = Call::new(5);
    let input = call.input();
    let mut outs = call.outputs();
    assert_eq!(
        run(s, &[input], &mut outs),
        MorselStatus::Ok,
        "{}",
        last_error()
    );
    assert_eq!(last_error(), "");
    for o in &outs {
        assert_eq!(
            (o.rank, o.data_len, o.dtype),
            (2, 5 * 3 * 4, MorselDtype::F32 as i32)
        );
    }
    assert_eq!(call.out_dims[0][..2], [5, 3]);

    let model = Model::from_bytes(&bytes).unwrap();
    let want = model
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::F32,
                dims: &[5, 4],
                data: bytemuck(&call.x),
            },
        )])
        .unwrap();
    assert_eq!(call.outs[0], want[0].as_slice::<f32>().unwrap());
    assert_eq!(call.outs[1], want[1].as_slice::<f32>().unwrap());
    assert!(
        call.outs[0].iter().any(|&v| v > 0.0),
        "a trivial model output"
    );

    // SAFETY: live handles, each freed once.
    unsafe {
        morsel_session_free(s);
        morsel_model_free(m);
    }
}

fn bytemuck(x: &[f32]) -> &[u8] {
    morsel_runtime::bytemuck::cast_slice(x)
}

#[test]
fn model_description_reports_symbolic_dims_as_minus_one() {
    let m = open(&model_bytes());
    let (mut n_in, mut n_out, mut rank, mut dtype) = (0usize, 0usize, 0usize, 0i32);
    let mut name: *const c_char = null();
    let mut dims = [0i64; 4];
    // SAFETY: a live model and valid out-pointers throughout.
    unsafe {
        assert_eq!(morsel_model_input_count(m, &mut n_in), MorselStatus::Ok);
        assert_eq!(morsel_model_output_count(m, &mut n_out), MorselStatus::Ok);
        assert_eq!((n_in, n_out), (1, 2));
        assert_eq!(morsel_model_input_name(m, 0, &mut name), MorselStatus::Ok);
        assert_eq!(CStr::from_ptr(name).to_str().unwrap(), "x");
        assert_eq!(morsel_model_input_dtype(m, 0, &mut dtype), MorselStatus::Ok);
        assert_eq!(dtype, MorselDtype::F32 as i32);
        assert_eq!(morsel_model_input_rank(m, 0, &mut rank), MorselStatus::Ok);
        assert_eq!(rank, 2);
        assert_eq!(
            morsel_model_input_dims(m, 0, dims.as_mut_ptr(), 4),
            MorselStatus::Ok
        );
        assert_eq!(dims[..2], [-1, 4]);
        assert_eq!(morsel_model_output_name(m, 1, &mut name), MorselStatus::Ok);
        assert_eq!(CStr::from_ptr(name).to_str().unwrap(), "z");
        assert_eq!(
            morsel_model_output_dims(m, 1, dims.as_mut_ptr(), 4),
            MorselStatus::Ok
        );
        assert_eq!(dims[..2], [-1, 3]);

        expect(
            morsel_model_input_name(m, 1, &mut name),
            MorselStatus::InvalidArgument,
            "input index 1 is out of range",
        );
        expect(
            morsel_model_output_rank(m, 7, &mut rank),
            MorselStatus::InvalidArgument,
            "has 2 outputs",
        );
        expect(
            morsel_model_input_dims(m, 0, dims.as_mut_ptr(), 1),
            MorselStatus::BufferTooSmall,
            "rank 2",
        );
        morsel_model_free(m);
    }
}

#[test]
fn null_pointers_are_refused() {
    let bytes = model_bytes();
    let m = open(&bytes);
    let s = session(m, 0);
    let mut mm = null_mut();
    let mut ss = null_mut();
    let mut n = 0usize;
    let mut call = Call::new(1);
    // SAFETY: every pointer passed is null or valid; testing that nulls are caught.
    unsafe {
        let path = CString::new("x.morsel").unwrap();
        expect(
            morsel_model_open(null(), &mut mm),
            MorselStatus::NullArgument,
            "path",
        );
        expect(
            morsel_model_open(path.as_ptr(), null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        expect(
            morsel_model_from_buffer(null(), 10, &mut mm),
            MorselStatus::NullArgument,
            "data",
        );
        expect(
            morsel_model_from_buffer(bytes.as_ptr(), bytes.len(), null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        assert!(mm.is_null());
        expect(
            morsel_model_input_count(null(), &mut n),
            MorselStatus::NullArgument,
            "model",
        );
        expect(
            morsel_model_input_count(m, null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        expect(
            morsel_model_output_name(m, 0, null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        expect(
            morsel_model_output_dtype(null(), 0, null_mut()),
            MorselStatus::NullArgument,
            "model",
        );
        expect(
            morsel_model_input_rank(m, 0, null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        expect(
            morsel_model_input_dims(m, 0, null_mut(), 4),
            MorselStatus::NullArgument,
            "dims",
        );
        expect(
            morsel_session_new(null(), 1, 0, &mut ss),
            MorselStatus::NullArgument,
            "model",
        );
        expect(
            morsel_session_new(m, 1, 0, null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        assert!(ss.is_null());
        expect(
            morsel_session_held_bytes(null_mut(), &mut n),
            MorselStatus::NullArgument,
            "session",
        );
        expect(
            morsel_session_held_bytes(s, null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
        expect(
            morsel_session_planned_bytes(s, null(), 1, &mut n),
            MorselStatus::NullArgument,
            "inputs",
        );
        let input = call.input();
        expect(
            morsel_session_planned_bytes(s, &input, 1, null_mut()),
            MorselStatus::NullArgument,
            "out_bytes",
        );
        expect(
            morsel_session_planned_bytes(null_mut(), &input, 1, &mut n),
            MorselStatus::NullArgument,
            "session",
        );

        let mut outs = call.outputs();
        expect(
            run(null_mut(), &[input], &mut outs),
            MorselStatus::NullArgument,
            "session",
        );
        expect(
            morsel_session_run(s, null(), 1, outs.as_mut_ptr(), 2),
            MorselStatus::NullArgument,
            "inputs",
        );
        expect(
            morsel_session_run(s, &input, 1, null_mut(), 2),
            MorselStatus::NullArgument,
            "outputs",
        );
        type Spoil = fn(&mut MorselInput);
        let cases: [(Spoil, &str); 3] = [
            (|i| i.name = null(), "inputs[0].name"),
            (|i| i.dims = null(), "inputs[0].dims"),
            (|i| i.data = null(), "inputs[0].data"),
        ];
        for (spoil, what) in cases {
            let mut bad = input;
            spoil(&mut bad);
            expect(run(s, &[bad], &mut outs), MorselStatus::NullArgument, what);
        }
        let mut bad = outs.clone();
        bad[1].data = null_mut();
        expect(
            run(s, &[input], &mut bad),
            MorselStatus::NullArgument,
            "outputs[1].data",
        );
        let mut bad = outs.clone();
        bad[0].dims = null_mut();
        expect(
            run(s, &[input], &mut bad),
            MorselStatus::NullArgument,
            "outputs[0].dims",
        );

        // Freeing null is allowed and keeps the last message; the session
        // still works afterwards.
        morsel_model_free(null_mut());
        morsel_session_free(null_mut());
        assert_eq!(last_error(), "outputs[0].dims is null");
        assert_eq!(
            run(s, &[input], &mut outs),
            MorselStatus::Ok,
            "{}",
            last_error()
        );
        morsel_session_free(s);
        morsel_model_free(m);
    }
}

#[test]
fn wrong_sizes_dtypes_and_names_are_refused() {
    let m = open(&model_bytes());
    let s = session(m, 0);
    let mut call = Call::new(2);
    let input = call.input();
    let mut outs = call.outputs();
    let wrong_dims = [2i64, 5];
    let negative = [-2i64, 4];
    let other = CString::new("y").unwrap();
    let cases: Vec<(MorselInput, MorselStatus, &str)> = vec![
        (
            MorselInput {
                data_len: input.data_len - 4,
                ..input
            },
            MorselStatus::Input,
            "28 bytes of data",
        ),
        (
            MorselInput {
                data_len: input.data_len + 4,
                ..input
            },
            MorselStatus::Input,
            "36 bytes of data",
        ),
        (
            MorselInput {
                dims: wrong_dims.as_ptr(),
                ..input
            },
            MorselStatus::Input,
            "must have shape [N, 4], got [2, 5]",
        ),
        (
            MorselInput { rank: 1, ..input },
            MorselStatus::Input,
            "got [2]",
        ),
        (
            MorselInput {
                dims: negative.as_ptr(),
                ..input
            },
            MorselStatus::InvalidArgument,
            "inputs[0].dims[0] is -2",
        ),
        (
            MorselInput {
                dtype: MorselDtype::I64 as i32,
                ..input
            },
            MorselStatus::Input,
            "must be f32, got i64",
        ),
        (
            MorselInput { dtype: 99, ..input },
            MorselStatus::InvalidArgument,
            "99 is not a MorselDtype",
        ),
        (
            MorselInput { dtype: -1, ..input },
            MorselStatus::InvalidArgument,
            "-1 is not a MorselDtype",
        ),
        (
            MorselInput {
                name: other.as_ptr(),
                ..input
            },
            MorselStatus::Input,
            "no input 'y'",
        ),
    ];
    for (bad, status, needle) in cases {
        expect(run(s, &[bad], &mut outs), status, needle);
    }
    expect(
        run(s, &[], &mut outs),
        MorselStatus::Input,
        "missing input 'x'",
    );
    expect(
        run(s, &[input, input], &mut outs),
        MorselStatus::Input,
        "given twice",
    );
    expect(
        run(s, &[input], &mut outs[..1]),
        MorselStatus::InvalidArgument,
        "n_outputs is 1, the model has 2",
    );
    let bad_utf8 = [0xffu8, 0xfe, 0];
    let bad = MorselInput {
        name: bad_utf8.as_ptr().cast(),
        ..input
    };
    expect(
        run(s, &[bad], &mut outs),
        MorselStatus::InvalidArgument,
        "not valid UTF-8",
    );

    // Input data at an odd address: copied to aligned memory, same result.
    let mut shifted = vec![0u8; input.data_len + 1];
    shifted[1..].copy_from_slice(bytemuck(&call.x));
    let odd = MorselInput {
        data: shifted[1..].as_ptr().cast::<c_void>(),
        ..input
    };
    assert_eq!(
        run(s, &[odd], &mut outs),
        MorselStatus::Ok,
        "{}",
        last_error()
    );
    // SAFETY: live handles, freed once.
    unsafe {
        morsel_session_free(s);
        morsel_model_free(m);
    }
}

#[test]
fn small_output_buffers_report_the_size_needed() {
    let m = open(&model_bytes());
    let s = session(m, 0);
    let mut call = Call::new(3);
    let input = call.input();
    let mut outs = call.outputs();
    outs[1].capacity = 8;
    expect(
        run(s, &[input], &mut outs),
        MorselStatus::BufferTooSmall,
        "output 'z' (f32 [3, 3]) needs 36 bytes, outputs[1].capacity is 8",
    );
    assert_eq!((outs[1].data_len, outs[1].rank), (36, 2));
    // The output that fitted was filled.
    assert!(call.outs[0].iter().any(|&v| v != 0.0));

    let mut outs = call.outputs();
    outs[0].dims_capacity = 1;
    expect(
        run(s, &[input], &mut outs),
        MorselStatus::BufferTooSmall,
        "output 'y' has rank 2, outputs[0].dims holds 1",
    );
    // No buffers at all: every size is reported.
    let mut empty = [MorselOutput {
        data: null_mut(),
        capacity: 0,
        dims: null_mut(),
        dims_capacity: 0,
        rank: 0,
        data_len: 0,
        dtype: 0,
    }; 2];
    expect(
        run(s, &[input], &mut empty),
        MorselStatus::BufferTooSmall,
        "outputs[0].dims holds 0",
    );
    assert!(
        empty
            .iter()
            .all(|o| o.data_len == 36 && o.rank == 2 && o.dtype == MorselDtype::F32 as i32)
    );
    // SAFETY: live handles, freed once.
    unsafe {
        morsel_session_free(s);
        morsel_model_free(m);
    }
}

#[test]
fn corrupt_and_truncated_buffers_are_errors() {
    let bytes = model_bytes();
    let mut statuses = std::collections::BTreeMap::new();
    let mut try_open = |b: &[u8]| {
        let mut m = null_mut();
        // SAFETY: a valid slice and out-pointer; any bytes are allowed.
        let st = unsafe { morsel_model_from_buffer(b.as_ptr(), b.len(), &mut m) };
        assert_ne!(st, MorselStatus::Panic, "{}", last_error());
        if st == MorselStatus::Ok {
            // SAFETY: a model just made, freed once.
            unsafe { morsel_model_free(m) };
        } else {
            assert!(m.is_null());
            assert!(!last_error().is_empty());
        }
        *statuses.entry(format!("{st:?}")).or_insert(0usize) += 1;
        st
    };
    // Every truncation is refused.
    for len in 0..bytes.len() {
        assert_ne!(
            try_open(&bytes[..len]),
            MorselStatus::Ok,
            "truncated to {len} bytes"
        );
    }
    // Bit flips everywhere (checksummed: all refused but none may crash).
    let step = (bytes.len() / 509).max(1);
    for pos in (0..bytes.len()).step_by(step) {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[pos] ^= 1 << bit;
            try_open(&b);
        }
    }
    // Noise, and a valid header followed by noise.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in [1usize, 63, 64, 65, 200, 4096] {
        let mut b: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        assert_ne!(try_open(&b), MorselStatus::Ok);
        let k = b.len().min(64);
        b[..k].copy_from_slice(&bytes[..k]);
        assert_ne!(try_open(&b), MorselStatus::Ok);
    }
    assert!(statuses.contains_key("Format"), "{statuses:?}");

    // A path that does not exist, and one that is not a .morsel file.
    let mut m = null_mut();
    let missing = CString::new("/nonexistent/model.morsel").unwrap();
    // SAFETY: valid strings and out-pointer.
    unsafe {
        expect(
            morsel_model_open(missing.as_ptr(), &mut m),
            MorselStatus::Io,
            "/nonexistent/model.morsel",
        );
        let dir = CString::new(std::env::temp_dir().to_str().unwrap()).unwrap();
        let st = morsel_model_open(dir.as_ptr(), &mut m);
        assert!(
            matches!(st, MorselStatus::Io | MorselStatus::Format),
            "{st:?}: {}",
            last_error()
        );
    }
    assert!(m.is_null());
}

#[test]
fn open_from_a_path_and_free_the_model_before_the_session() {
    let path = std::env::temp_dir().join(format!("morsel-capi-{}.morsel", std::process::id()));
    std::fs::write(&path, model_bytes()).unwrap();
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = null_mut();
    // SAFETY: valid string and out-pointer.
    let st = unsafe { morsel_model_open(c.as_ptr(), &mut m) };
    assert_eq!(st, MorselStatus::Ok, "{}", last_error());
    let s = session(m, 0);
    // SAFETY: a live model, freed once; the session holds its own reference.
    unsafe { morsel_model_free(m) };
    let mut call = Call::new(1);
    let input = call.input();
    let mut outs = call.outputs();
    assert_eq!(
        run(s, &[input], &mut outs),
        MorselStatus::Ok,
        "{}",
        last_error()
    );
    // SAFETY: a live session, freed once.
    unsafe { morsel_session_free(s) };
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_budget_below_the_plan_is_refused_with_the_amount_needed() {
    let m = open(&model_bytes());
    let mut call = Call::new(64);
    let input = call.input();
    let mut outs = call.outputs();

    let unlimited = session(m, 0);
    let mut need = 0usize;
    // SAFETY: live session, input array of one, valid out-pointer.
    let st = unsafe { morsel_session_planned_bytes(unlimited, &input, 1, &mut need) };
    assert_eq!(st, MorselStatus::Ok, "{}", last_error());
    assert!(need >= 64 * 3 * 4, "planned {need} bytes");

    let tight = session(m, need - 1);
    let mut seen = 0usize;
    // SAFETY: as above.
    let st = unsafe { morsel_session_planned_bytes(tight, &input, 1, &mut seen) };
    let message = format!(
        "needs {need} bytes of activation memory, the budget is {} bytes",
        need - 1
    );
    expect(st, MorselStatus::Memory, &message);
    assert_eq!(seen, need, "the need is reported even over budget");
    expect(
        run(tight, &[input], &mut outs),
        MorselStatus::Memory,
        &message,
    );
    assert!(
        call.outs.iter().flatten().all(|&v| v == 0.0),
        "nothing was written"
    );

    let enough = session(m, need);
    let mut outs = call.outputs();
    assert_eq!(
        run(enough, &[input], &mut outs),
        MorselStatus::Ok,
        "{}",
        last_error()
    );
    let mut held = 0usize;
    // SAFETY: live session, valid out-pointer.
    unsafe {
        assert_eq!(
            morsel_session_held_bytes(enough, &mut held),
            MorselStatus::Ok
        );
        morsel_session_free(unlimited);
        morsel_session_free(tight);
        morsel_session_free(enough);
        morsel_model_free(m);
    }
    assert!(held >= need, "held {held}, planned {need}");
}

#[test]
fn planned_bytes_checks_names_and_dims() {
    let m = open(&model_bytes());
    let s = session(m, 0);
    let call = Call::new(2);
    let other = CString::new("q").unwrap();
    let mut n = 0usize;
    let no_data = MorselInput {
        data: null(),
        data_len: 0,
        ..call.input()
    };
    // SAFETY: live handles, valid arrays and out-pointers.
    unsafe {
        assert_eq!(
            morsel_session_planned_bytes(s, &no_data, 1, &mut n),
            MorselStatus::Ok,
            "{}",
            last_error()
        );
        expect(
            morsel_session_planned_bytes(s, null(), 0, &mut n),
            MorselStatus::Input,
            "missing input: x: f32 [N, 4]",
        );
        let bad = MorselInput {
            name: other.as_ptr(),
            ..no_data
        };
        expect(
            morsel_session_planned_bytes(s, &bad, 1, &mut n),
            MorselStatus::Input,
            "no input 'q'",
        );
        let bad = MorselInput { rank: 1, ..no_data };
        assert_ne!(
            morsel_session_planned_bytes(s, &bad, 1, &mut n),
            MorselStatus::Ok
        );
        morsel_session_free(s);
        morsel_model_free(m);
    }
}

#[test]
fn status_names_and_version() {
    let name = |code: i32| {
        // SAFETY: static strings, never null.
        unsafe { CStr::from_ptr(morsel_status_name(code)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(MorselStatus::Ok as i32), "MORSEL_STATUS_OK");
    assert_eq!(name(MorselStatus::Memory as i32), "MORSEL_STATUS_MEMORY");
    assert_eq!(name(MorselStatus::Panic as i32), "MORSEL_STATUS_PANIC");
    assert_eq!(name(-3), "MORSEL_STATUS_UNKNOWN");
    assert_eq!(name(1000), "MORSEL_STATUS_UNKNOWN");
    // SAFETY: a static string, never null.
    let v = unsafe { CStr::from_ptr(morsel_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn memory_is_reported_by_owner_and_outputs_may_reuse_input_memory() {
    let bytes = model_bytes();
    let m = open(&bytes);
    let s = session(m, 0);
    let mut call = Call::new(4);
    let input = call.input();
    let mut outs = call.outputs();
    assert_eq!(
        run(s, &[input], &mut outs),
        MorselStatus::Ok,
        "{}",
        last_error()
    );
    let mut mem = MorselMemory::default();
    let mut planned = 0usize;
    // SAFETY: live session, valid arrays and out-pointers.
    unsafe {
        assert_eq!(morsel_session_memory(s, &mut mem), MorselStatus::Ok);
        assert_eq!(
            morsel_session_planned_bytes(s, &input, 1, &mut planned),
            MorselStatus::Ok
        );
        expect(
            morsel_session_memory(null_mut(), &mut mem),
            MorselStatus::NullArgument,
            "session",
        );
        expect(
            morsel_session_memory(s, null_mut()),
            MorselStatus::NullArgument,
            "out",
        );
    }
    assert_eq!(mem.activations, planned);

    // The first output written over the input's own memory (4×4 floats
    // hold the 4×3 output): the run still reads the whole input first.
    let want = call.outs.clone();
    let mut x = call.x.clone();
    let shared = MorselInput {
        data: x.as_ptr().cast(),
        ..input
    };
    outs[0].data = x.as_mut_ptr().cast();
    outs[0].capacity = x.len() * 4;
    assert_eq!(
        run(s, &[shared], &mut outs),
        MorselStatus::Ok,
        "{}",
        last_error()
    );
    assert_eq!(x[..12], want[0][..]);
    // SAFETY: live handles, freed once.
    unsafe {
        morsel_session_free(s);
        morsel_model_free(m);
    }
}
