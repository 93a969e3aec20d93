//! A warmed-up run allocates nothing per op: only per-run bookkeeping and
//! the returned outputs. Counted with a global allocator, alone in its own
//! test binary.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use morsel::{Model, Options};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_runs_allocate_a_constant_not_per_op() {
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let nodes = model.graph().nodes.len();
    let x = npy(&digits_dir().join("sample_input.npy"));
    let mut s = model.session(Options::default());
    s.run(&[("x", x.view())]).unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    s.run(&[("x", x.view())]).unwrap();
    let per_run = ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!("{nodes} nodes, {per_run} allocations in a warm run");
    assert!(per_run < 10, "a warm run made {per_run} allocations for {nodes} nodes");
}
