//! A warmed-up run allocates nothing per op: only per-run bookkeeping and
//! the returned outputs. Counted with a global allocator, alone in its own
//! test binary, per thread: the runs here are single-threaded, and the
//! test harness allocates on its own threads whenever a test starts or
//! ends (a process-wide count once saw 9 allocations instead of 4 in CI).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use morsel::{Model, Options};

struct Counting;

thread_local! {
    // `const` and no destructor: using it allocates nothing.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations made so far on this thread.
fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations in the second of two identical runs.
fn warm_run_allocations(model: &Model, feeds: &[(&str, morsel::TensorRef<'_>)]) -> usize {
    let mut s = model.session(Options::default());
    s.run(feeds).unwrap();
    let before = allocs();
    s.run(feeds).unwrap();
    allocs() - before
}

/// The counter is global and tests run on parallel threads: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn warm_runs_allocate_only_their_outputs() {
    let _one = serial();
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let g = model.graph();
    let x = npy(&digits_dir().join("sample_input.npy"));
    let per_run = warm_run_allocations(&model, &[("x", x.view())]);
    // The returned outputs: the Vec, and per tensor its dims, buffer and Arc.
    // The gemm crate also allocates one small flag vector per packed-matmul
    // call (gemm-common's `did_pack_lhs`); Conv via im2col is such a call.
    let matmul_nodes = g
        .nodes
        .iter()
        .filter(|n| morsel::runtime::ops::op_name(n.op) == "Conv")
        .count();
    let budget = 1 + 3 * g.outputs.len() + matmul_nodes;
    eprintln!(
        "{} nodes, {per_run} allocations in a warm run (budget {budget})",
        g.nodes.len()
    );
    assert!(
        per_run <= budget,
        "a warm run made {per_run} allocations (budget {budget})"
    );
}

#[test]
fn a_long_chain_of_ops_allocates_nothing_per_op() {
    let _one = serial();
    use morsel::DType;
    use morsel::runtime::graph::{Graph, Node};
    use morsel::runtime::ops::op_id;
    use morsel::runtime::tensor::{Dim, Tensor};
    let mut g = Graph::default();
    let mut cur = g.add_value("x", DType::F32, vec![Dim::Known(4), Dim::Known(6)]);
    g.inputs.push(cur);
    let bias = g.add_const("b", Tensor::from_slice(&[6], &[0.5f32; 6]).unwrap());
    let perm = |g: &mut Graph| -> usize {
        g.add_value(&format!("v{}", g.values.len()), DType::F32, vec![])
    };
    for i in 0..60 {
        let (op, attrs, inputs) = match i % 4 {
            0 => ("Relu", Default::default(), vec![Some(cur)]),
            1 => ("Add", Default::default(), vec![Some(cur), Some(bias)]),
            2 => ("Sigmoid", Default::default(), vec![Some(cur)]),
            _ => ("Mul", Default::default(), vec![Some(cur), Some(cur)]),
        };
        let out = perm(&mut g);
        g.nodes.push(Node {
            name: format!("n{i}"),
            op: op_id(op).unwrap(),
            attrs,
            inputs,
            outputs: vec![out],
        });
        cur = out;
    }
    g.outputs.push(cur);
    g.infer_shapes().unwrap();
    let model = Model::from_graph(g).unwrap();
    let x = vec![0.25f32; 24];
    let feed = morsel::TensorRef {
        dtype: DType::F32,
        dims: &[4, 6],
        data: morsel::runtime::bytemuck::cast_slice(&x),
    };
    let per_run = warm_run_allocations(&model, &[("x", feed)]);
    eprintln!("60 nodes, {per_run} allocations in a warm run");
    assert!(per_run <= 4, "60 nodes made {per_run} allocations");
}

#[test]
fn int8_warm_runs_allocate_only_their_outputs() {
    let _one = serial();
    use morsel::compress::quantize::{QuantOptions, quantize_dynamic};
    use morsel::runtime::format::writer::{FloatStorage, to_bytes};
    // The digits CNN with both Convs as QConv and both Gemms as QMatMul:
    // patches, quantized activations and i32 results live in per-thread
    // scratch that the first run grows.
    let mut g = morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap();
    let opts = QuantOptions {
        min_size: 0,
        min_reduction: 0,
        ..QuantOptions::default()
    };
    assert_eq!(quantize_dynamic(&mut g, &opts).unwrap().converted.len(), 4);
    let model = Model::from_bytes(&to_bytes(&g, FloatStorage::F32).unwrap()).unwrap();
    let x = npy(&digits_dir().join("sample_input.npy"));
    let per_run = warm_run_allocations(&model, &[("x", x.view())]);
    let budget = 1 + 3 * model.graph().outputs.len();
    eprintln!("int8 digits: {per_run} allocations in a warm run (budget {budget})");
    assert!(
        per_run <= budget,
        "a warm int8 run made {per_run} allocations (budget {budget})"
    );
}

#[test]
fn a_warm_run_into_caller_buffers_allocates_nothing() {
    let _one = serial();
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let x = npy(&digits_dir().join("sample_input.npy"));
    let mut s = model.session(Options::default());
    let dims = s.output_dims(std::slice::from_ref(&x.dims)).unwrap();
    let mut logits = vec![0u8; dims[0].iter().product::<usize>() * 4];
    s.run_into(&[("x", x.view())], &mut [&mut logits]).unwrap();
    let before = allocs();
    s.run_into(&[("x", x.view())], &mut [&mut logits]).unwrap();
    let per_run = allocs() - before;
    assert_eq!(per_run, 0, "a warm run_into made {per_run} allocations");
    let want = s.run(&[("x", x.view())]).unwrap();
    assert_eq!(logits, want[0].data.as_bytes());
}
