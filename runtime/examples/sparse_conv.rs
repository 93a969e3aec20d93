//! Where does the sparse conv kernel beat the dense one? Prints a markdown
//! table, one thread: the Conv op on a pruned constant weight through
//! `kernels::sparse::conv` (what it runs when told W is a constant) against
//! the same op on the dense path (im2col panels into sgemm, or sgemm
//! straight on the input for 1×1), on conv shapes from the digits CNN and
//! PP-OCR-sized layers.
//!
//! `cargo run --release -p morsel-runtime --example sparse_conv`
//!
//! Each cell is the median of 11 rounds; a round times dense then sparse,
//! each over enough calls to take about 2 ms.

use morsel_runtime::graph::{Attr, Attrs, Node};
use morsel_runtime::ops::{self, op_id};
use morsel_runtime::tensor::Tensor;
use std::time::Instant;

fn main() {
    // (label, x dims, w dims, pad)
    let shapes: [(&str, [usize; 4], [usize; 4], i64); 5] = [
        ("digits 3×3 16→32 @8×8", [1, 16, 8, 8], [32, 16, 3, 3], 1),
        ("3×3 16→32 @40×40", [1, 16, 40, 40], [32, 16, 3, 3], 1),
        ("3×3 24→24 @80×80", [1, 24, 80, 80], [24, 24, 3, 3], 1),
        ("1×1 96→24 @80×80", [1, 96, 80, 80], [24, 96, 1, 1], 0),
        ("1×1 24→96 @80×80", [1, 24, 80, 80], [96, 24, 1, 1], 0),
    ];
    let densities = [0.5, 0.3, 0.2, 0.1, 0.05];
    println!("| conv | weight density | dense µs | sparse µs | sparse/dense |");
    println!("|---|---|---|---|---|");
    let mut seed = 1u32;
    let mut rnd = move || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    for (label, xd, wd, pad) in shapes {
        let x: Vec<f32> = (0..xd.iter().product()).map(|_| rnd() - 0.5).collect();
        let x = Tensor::from_slice(&xd, &x).unwrap();
        for d in densities {
            let w: Vec<f32> = (0..wd.iter().product())
                .map(|_| if rnd() < d { rnd() - 0.5 } else { 0.0 })
                .collect();
            let w = Tensor::from_slice(&wd, &w).unwrap();
            let b = Tensor::from_slice(&[wd[0]], &vec![0.1f32; wd[0]]).unwrap();
            let node = Node {
                name: "conv".into(),
                op: op_id("Conv").unwrap(),
                attrs: Attrs::new().with("pads", Attr::Ints(vec![pad; 4])),
                inputs: vec![],
                outputs: vec![],
            };
            let dense = ops::build(&node).unwrap();
            let mut sparse = ops::build(&node).unwrap();
            sparse.constant_inputs(&[false, true, true]);
            let ins = [Some(x.clone()), Some(w.clone()), Some(b.clone())];
            let time = |op: &dyn ops::Op| -> f64 {
                let t = Instant::now();
                let mut calls = 0;
                while t.elapsed().as_secs_f64() < 2e-3 {
                    std::hint::black_box(ops::eval_owned(op, &ins).unwrap());
                    calls += 1;
                }
                t.elapsed().as_secs_f64() / calls as f64 * 1e6
            };
            // Same outputs (first call builds the sparse weight).
            let (a, s) = (
                ops::eval_owned(&*dense, &ins).unwrap(),
                ops::eval_owned(&*sparse, &ins).unwrap(),
            );
            let diff = a[0]
                .to_f32_vec()
                .unwrap()
                .iter()
                .zip(s[0].to_f32_vec().unwrap())
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-3, "{label} d{d}: {diff}");
            let (mut td, mut ts) = (Vec::new(), Vec::new());
            for _ in 0..11 {
                td.push(time(&*dense));
                ts.push(time(&*sparse));
            }
            td.sort_by(f64::total_cmp);
            ts.sort_by(f64::total_cmp);
            let (md, ms) = (td[5], ts[5]);
            println!("| {label} | {d} | {md:.1} | {ms:.1} | {:.2} |", ms / md);
        }
    }
}
