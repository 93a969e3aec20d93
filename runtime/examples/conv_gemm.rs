//! The f32 matmul kernel on the shapes PP-OCR's convs and MiniLM's linears
//! give it, one thread: GFLOP/s with the right operand read as MatMul and
//! pointwise Conv pass it (a row-major view: read in place or packed per
//! block, as `sgemm::matmul` decides) and forced through the per-block
//! packer. Used to pick `sgemm::IN_PLACE_MAX_ROW` and the loop order.
//!
//! `cargo run --release -p morsel-runtime --example conv_gemm`
//!
//! Each cell is the best of 15 rounds of 3 calls; the two variants take
//! turns within a round.

use morsel_runtime::kernels::Mat;
use morsel_runtime::kernels::sgemm::{self, Bias, Lhs, Rhs};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    // (m, k, n): a pointwise conv is (out channels, in channels, H·W).
    let shapes = [
        (32usize, 16usize, 320 * 320),
        (48, 32, 160 * 160),
        (48, 48, 160 * 160),
        (24, 96, 160 * 160),
        (96, 24, 160 * 160),
        (64, 64, 80 * 80),
        (24, 864, 160 * 160), // a 3x3 conv, 96 -> 24 channels, as im2col
        (128, 384, 1536),
        (128, 1536, 384),
        (128, 384, 384),
        (8, 384, 1536),
    ];
    let mut seed = 1u32;
    let mut rnd = move || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let mut scratch = Vec::new();
    println!("| m×k×n | as given ms | GFLOP/s | packed per block ms | GFLOP/s |");
    println!("|---|---:|---:|---:|---:|");
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
        let mut c = vec![0f32; m * n];
        let bm = Mat::rows(&b, k, n);
        let mut best = [f64::MAX; 2];
        for _ in 0..15 {
            for (v, best) in best.iter_mut().enumerate() {
                let t = Instant::now();
                for _ in 0..3 {
                    let rhs = if v == 0 {
                        Rhs::View(bm)
                    } else {
                        Rhs::Packer { k, n, pack: &bm }
                    };
                    let a = Lhs::View(Mat::rows(&a, m, k));
                    if let Err(e) =
                        sgemm::matmul(a, rhs, &mut c, n, Bias::None, None, 1, &mut scratch)
                    {
                        eprintln!("{m}x{k}x{n}: {e}");
                        return;
                    }
                    black_box(&c);
                }
                *best = best.min(t.elapsed().as_secs_f64() / 3.0);
            }
        }
        let gf = |s: f64| 2.0 * (m * k * n) as f64 / s / 1e9;
        println!(
            "| {m}×{k}×{n} | {:.3} | {:.1} | {:.3} | {:.1} |",
            best[0] * 1e3,
            gf(best[0]),
            best[1] * 1e3,
            gf(best[1])
        );
    }
}
