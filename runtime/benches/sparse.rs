//! Sparse × dense against dense sgemm, one thread: MiniLM FFN weights
//! (384×1536 and 1536×384) at 50–95% zeros, for 1 and 128 rows of A. Dense
//! is what MatMul runs for a constant weight: read in place for one row,
//! packed once for 128.
//!
//! `cargo bench -p morsel-runtime --bench sparse -- --warm-up-time 1 --measurement-time 2`
//!
//! The cheaper table that chose the thresholds in `kernels::sparse` is
//! `cargo run --release -p morsel-runtime --example sparse_crossover`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use morsel_runtime::kernels::sgemm::{self, Bias, Lhs, PackedB, Rhs};
use morsel_runtime::kernels::{Mat, sparse};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut seed = 1u32;
    let mut rnd = move || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    let mut scratch = Vec::new();
    for (k, n) in [(384usize, 1536usize), (1536, 384)] {
        for m in [1usize, 128] {
            let mut g = c.benchmark_group(format!("sparse {k}x{n} m{m}"));
            let a: Vec<f32> = (0..m * k).map(|_| rnd() - 0.5).collect();
            let am = Mat::rows(&a, m, k);
            let mut out = vec![0f32; m * n];
            for sp in [50u32, 70, 80, 90, 95] {
                let w: Vec<f32> = (0..k * n)
                    .map(|_| {
                        if rnd() * 100.0 < sp as f32 {
                            0.0
                        } else {
                            rnd() - 0.5
                        }
                    })
                    .collect();
                let packed = PackedB::new(Mat::rows(&w, k, n)).unwrap();
                let sw = sparse::SparseB::new(Mat::rows(&w, k, n)).unwrap();
                g.bench_function(BenchmarkId::new("dense", sp), |bch| {
                    bch.iter(|| {
                        let rhs = if m > sgemm::MR * sgemm::IN_PLACE_MAX_PANELS {
                            Rhs::Packed(&packed)
                        } else {
                            Rhs::View(Mat::rows(&w, k, n))
                        };
                        sgemm::matmul(
                            Lhs::View(am),
                            rhs,
                            black_box(&mut out),
                            n,
                            Bias::None,
                            None,
                            1,
                            &mut scratch,
                        )
                        .unwrap()
                    })
                });
                g.bench_function(BenchmarkId::new("sparse", sp), |bch| {
                    bch.iter(|| {
                        sparse::matmul(am, &sw, black_box(&mut out), n, None, None, 1).unwrap()
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
