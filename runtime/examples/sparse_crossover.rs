//! Where does the sparse kernel beat the dense one? Prints a markdown table
//! of latencies, one thread: `kernels::sparse` against what MatMul runs for
//! a dense constant weight (sgemm on the weight packed once for more than
//! 48 rows, read in place for fewer), on MiniLM-sized FFN weights.
//!
//! `cargo run --release -p morsel-runtime --example sparse_crossover`
//!
//! Each cell is the median of 15 rounds; a round times dense then sparse
//! (interleaved, so drift on a noisy machine hits both), each over enough
//! calls to take about 2 ms.

use morsel_runtime::kernels::sgemm::{self, Bias, Lhs, PackedB, Rhs};
use morsel_runtime::kernels::{Mat, sparse};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let shapes = [(384usize, 1536usize), (1536, 384)];
    let ms = [1usize, 8, 32, 128];
    let sparsities = [0.5, 0.7, 0.8, 0.9, 0.95];
    println!("| W (K×N) | M | sparsity | dense µs | sparse µs | sparse/dense |");
    println!("|---|---|---|---|---|---|");
    let mut seed = 1u32;
    let mut rnd = move || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    let mut scratch = Vec::new();
    for &(k, n) in &shapes {
        for &m in &ms {
            let a: Vec<f32> = (0..m * k).map(|_| rnd() - 0.5).collect();
            let mut c = vec![0f32; m * n];
            for &sp in &sparsities {
                let w: Vec<f32> = (0..k * n)
                    .map(|_| if rnd() < sp { 0.0 } else { rnd() - 0.5 })
                    .collect();
                let packed = PackedB::new(Mat::rows(&w, k, n)).unwrap();
                let pack = m > sgemm::MR * sgemm::IN_PLACE_MAX_PANELS;
                let sw = sparse::SparseB::new(Mat::rows(&w, k, n)).unwrap();
                let am = Mat::rows(&a, m, k);
                let mut dense = |c: &mut [f32]| {
                    let rhs = if pack {
                        Rhs::Packed(&packed)
                    } else {
                        Rhs::View(Mat::rows(&w, k, n))
                    };
                    sgemm::matmul(Lhs::View(am), rhs, c, n, Bias::None, None, 1, &mut scratch)
                        .unwrap();
                };
                let sparse_run = |c: &mut [f32]| {
                    sparse::matmul(am, &sw, c, n, None, None, 1).unwrap();
                };
                // Calls per sample: about 2 ms of dense.
                dense(&mut c);
                let t = Instant::now();
                dense(&mut c);
                let once = t.elapsed().as_secs_f64();
                let reps = ((2e-3 / once.max(1e-7)) as usize).clamp(1, 10_000);
                let (mut td, mut ts) = (Vec::new(), Vec::new());
                for _ in 0..15 {
                    let t = Instant::now();
                    for _ in 0..reps {
                        dense(black_box(&mut c));
                    }
                    td.push(t.elapsed().as_secs_f64() / reps as f64);
                    let t = Instant::now();
                    for _ in 0..reps {
                        sparse_run(black_box(&mut c));
                    }
                    ts.push(t.elapsed().as_secs_f64() / reps as f64);
                }
                let median = |v: &mut Vec<f64>| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2] * 1e6
                };
                let (d, s) = (median(&mut td), median(&mut ts));
                println!(
                    "| {k}×{n} | {m} | {:.0}% | {d:.1} | {s:.1} | {:.2} |",
                    sp * 100.0,
                    s / d
                );
            }
        }
    }
}
