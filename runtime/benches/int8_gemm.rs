//! int8 GEMM throughput, one thread: `kernels::int8::gemm_i8` against the
//! f32 `kernels::matmul` on the same shapes (m×k×n: 128×384×1536, a MiniLM
//! FFN up-projection over 128 tokens, and 1024³).
//!
//! `cargo bench -p morsel-runtime --bench int8_gemm -- --warm-up-time 1 --measurement-time 3`
//!
//! Before criterion runs, it prints GOPS (2·m·n·k / time, best of several
//! runs) for every int8 kernel and for f32, and on x86-64 the peak they are
//! measured against: the clock from a chain of dependent `vpaddd` (one per
//! cycle), and register-only loops of the kernel's instructions (see
//! `peak`). Criterion's own "thrpt" in Gelem/s is GOPS too.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use morsel_runtime::kernels::{Mat, int8, matmul};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SHAPES: [(usize, usize, usize); 2] = [(128, 384, 1536), (1024, 1024, 1024)];

struct Operands {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<i8>,
    b: Vec<i8>,
    af: Vec<f32>,
    bf: Vec<f32>,
}

fn operands(m: usize, k: usize, n: usize) -> Operands {
    let mut s = 1u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 24) as u8
    };
    let a: Vec<i8> = (0..m * k).map(|_| rnd() as i8).collect();
    let b: Vec<i8> = (0..k * n)
        .map(|_| ((rnd() % 255) as i32 - 127) as i8)
        .collect();
    let af = a.iter().map(|&v| v as f32 / 128.0).collect();
    let bf = b.iter().map(|&v| v as f32 / 128.0).collect();
    Operands {
        m,
        k,
        n,
        a,
        b,
        af,
        bf,
    }
}

/// Best time of `f` over at least `min` and 5 runs.
fn best_of(min: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let (start, mut best, mut runs) = (Instant::now(), Duration::MAX, 0);
    while runs < 5 || start.elapsed() < min {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn gops(o: &Operands, t: Duration) -> f64 {
    2.0 * (o.m * o.n * o.k) as f64 / t.as_secs_f64() / 1e9
}

fn report() {
    let peak = peak::measure();
    if let Some(p) = &peak {
        println!(
            "x86-64 clock ≈ {:.2} GHz (dependent vpaddd chain); int8 peak, two multiply \
             pipes (vpmaddubsw + vpmaddwd per 32 MACs): 64 ops/cycle = {:.0} GOPS; \
             register-only loops: multiplies alone {:.0} GOPS, kernel mix \
             (vpsignb + vpmaddubsw + vpmaddwd + vpaddd, vpabsb per 2) {:.0} GOPS",
            p.ghz,
            64.0 * p.ghz,
            p.mul_only_gops,
            p.kernel_mix_gops
        );
        if let Some(v) = p.vnni_gops {
            println!(
                "AVX-512 VNNI: two vpdpbusd zmm per cycle (64 MACs each) = 256 ops/cycle = {:.0} GOPS; \
                 register-only loop of 10 chains: {v:.0} GOPS (the VNNI kernel's % below is of this)",
                256.0 * p.ghz
            );
        }
    }
    for (m, k, n) in SHAPES {
        let o = operands(m, k, n);
        let mut c = vec![0i32; m * n];
        let mut line = format!("{m}×{k}×{n}:");
        let mut best_i8 = 0f64;
        for &kernel in int8::Kernel::available() {
            if kernel == int8::Kernel::Generic && m * n * k > 1 << 28 {
                continue;
            }
            let p = int8::pack_b_for(kernel, &o.b, k, n, n).unwrap();
            let t = best_of(Duration::from_millis(500), || {
                int8::gemm_i8(m, black_box(&o.a), k, &p, &mut c, n)
            });
            let g = gops(&o, t);
            best_i8 = best_i8.max(g);
            line += &format!(
                " int8 {kernel:?} {g:.1} GOPS ({:.2} ms)",
                t.as_secs_f64() * 1e3
            );
            if let Some(p) = &peak {
                let of = match (format!("{kernel:?}").as_str(), p.vnni_gops) {
                    ("Avx512Vnni", Some(v)) => v,
                    _ => 64.0 * p.ghz,
                };
                line += &format!(" = {:.0}% of peak,", 100.0 * g / of);
            }
        }
        let mut cf = vec![0f32; m * n];
        let t = best_of(Duration::from_millis(500), || {
            matmul(
                Mat::rows(&o.af, m, k),
                Mat::rows(&o.bf, k, n),
                &mut cf,
                0.0,
                1,
            )
        });
        let g = gops(&o, t);
        line += &format!(
            " f32 matmul {g:.1} GFLOPS ({:.2} ms); int8/f32 {:.2}×",
            t.as_secs_f64() * 1e3,
            best_i8 / g
        );
        println!("{line}");
    }
}

fn bench(c: &mut Criterion) {
    report();
    for (m, k, n) in SHAPES {
        let o = operands(m, k, n);
        let mut g = c.benchmark_group(format!("gemm_{m}x{k}x{n}"));
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let p = int8::pack_b(&o.b, k, n, n).unwrap();
        let mut ci = vec![0i32; m * n];
        g.bench_function(format!("int8_{:?}", p.kernel()), |bch| {
            bch.iter(|| int8::gemm_i8(m, black_box(&o.a), k, &p, &mut ci, n))
        });
        let mut cf = vec![0f32; m * n];
        g.bench_function("f32_matmul", |bch| {
            bch.iter(|| {
                matmul(
                    Mat::rows(black_box(&o.af), m, k),
                    Mat::rows(&o.bf, k, n),
                    &mut cf,
                    0.0,
                    1,
                )
            })
        });
        g.finish();
    }
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::asm;
    use std::time::Instant;

    pub struct Peak {
        pub ghz: f64,
        pub mul_only_gops: f64,
        pub kernel_mix_gops: f64,
        /// Ten independent `vpdpbusd zmm` chains, registers only (with
        /// AVX-512 VNNI).
        pub vnni_gops: Option<f64>,
    }

    pub fn measure() -> Option<Peak> {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return None;
        }
        // Short runs, best of many: on a shared machine a long loop gets
        // time-sliced with other processes and reads as a slower clock.
        let iters = 200_000u64;
        // SAFETY: AVX2 was detected.
        let seconds = best(|| unsafe { add_chain(iters) });
        let ghz = (iters * 16) as f64 / seconds / 1e9;
        let loops = 100_000u64;
        // 6 chains of 32 MACs per iteration.
        let ops = (loops * 6 * 32 * 2) as f64;
        // SAFETY: AVX2 was detected.
        let mul_only = ops / best(|| unsafe { mul_loop(loops) }) / 1e9;
        // SAFETY: AVX2 was detected.
        let mix = ops / best(|| unsafe { kernel_mix_loop(loops) }) / 1e9;
        let vnni = (std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni"))
        .then(|| {
            // 10 × 64 MACs per iteration.
            let ops = (loops * 10 * 64 * 2) as f64;
            // SAFETY: AVX-512 F and VNNI were detected.
            ops / best(|| unsafe { vnni_loop(loops) }) / 1e9
        });
        Some(Peak {
            ghz,
            mul_only_gops: mul_only,
            kernel_mix_gops: mix,
            vnni_gops: vnni,
        })
    }

    /// Ten independent `vpdpbusd zmm` chains: what the VNNI kernel's
    /// multiply-adds can issue with nothing else in the way.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vnni_loop(iters: u64) {
        // SAFETY: registers only.
        unsafe {
            asm!(
                "vpxord {a}, {a}, {a}", "vpxord {b}, {b}, {b}",
                "2:",
                "vpdpbusd {c0}, {a}, {b}", "vpdpbusd {c1}, {a}, {b}", "vpdpbusd {c2}, {a}, {b}",
                "vpdpbusd {c3}, {a}, {b}", "vpdpbusd {c4}, {a}, {b}", "vpdpbusd {c5}, {a}, {b}",
                "vpdpbusd {c6}, {a}, {b}", "vpdpbusd {c7}, {a}, {b}", "vpdpbusd {c8}, {a}, {b}",
                "vpdpbusd {c9}, {a}, {b}",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                a = out(zmm_reg) _, b = out(zmm_reg) _,
                c0 = out(zmm_reg) _, c1 = out(zmm_reg) _, c2 = out(zmm_reg) _, c3 = out(zmm_reg) _,
                c4 = out(zmm_reg) _, c5 = out(zmm_reg) _, c6 = out(zmm_reg) _, c7 = out(zmm_reg) _,
                c8 = out(zmm_reg) _, c9 = out(zmm_reg) _,
                options(nomem, nostack),
            )
        }
    }

    /// Best wall time in seconds of 300 runs.
    fn best(f: impl Fn()) -> f64 {
        (0..300)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    }

    /// 16 dependent `vpaddd` per iteration: one cycle each on Zen 3.
    #[target_feature(enable = "avx2")]
    unsafe fn add_chain(iters: u64) {
        // SAFETY: registers only; the loop counter is the only state.
        unsafe {
            asm!(
                "vpxor {x}, {x}, {x}",
                "2:",
                "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}",
                "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}",
                "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}",
                "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}", "vpaddd {x}, {x}, {x}",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                x = out(ymm_reg) _,
                options(nomem, nostack),
            )
        }
    }

    /// Six independent `vpmaddubsw → vpmaddwd → vpaddd` chains: the
    /// multiply pipes alone (2 per 32 MACs).
    #[target_feature(enable = "avx2")]
    unsafe fn mul_loop(iters: u64) {
        // SAFETY: registers only.
        unsafe {
            asm!(
                "vpxor {ua}, {ua}, {ua}", "vpxor {s}, {s}, {s}", "vpxor {o}, {o}, {o}",
                "2:",
                "vpmaddubsw {t0}, {ua}, {s}", "vpmaddubsw {t1}, {ua}, {s}", "vpmaddubsw {t2}, {ua}, {s}",
                "vpmaddubsw {t3}, {ua}, {s}", "vpmaddubsw {t4}, {ua}, {s}", "vpmaddubsw {t5}, {ua}, {s}",
                "vpmaddwd {t0}, {t0}, {o}", "vpmaddwd {t1}, {t1}, {o}", "vpmaddwd {t2}, {t2}, {o}",
                "vpmaddwd {t3}, {t3}, {o}", "vpmaddwd {t4}, {t4}, {o}", "vpmaddwd {t5}, {t5}, {o}",
                "vpaddd {c0}, {c0}, {t0}", "vpaddd {c1}, {c1}, {t1}", "vpaddd {c2}, {c2}, {t2}",
                "vpaddd {c3}, {c3}, {t3}", "vpaddd {c4}, {c4}, {t4}", "vpaddd {c5}, {c5}, {t5}",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                ua = out(ymm_reg) _, s = out(ymm_reg) _, o = out(ymm_reg) _,
                t0 = out(ymm_reg) _, t1 = out(ymm_reg) _, t2 = out(ymm_reg) _,
                t3 = out(ymm_reg) _, t4 = out(ymm_reg) _, t5 = out(ymm_reg) _,
                c0 = out(ymm_reg) _, c1 = out(ymm_reg) _, c2 = out(ymm_reg) _,
                c3 = out(ymm_reg) _, c4 = out(ymm_reg) _, c5 = out(ymm_reg) _,
                options(nomem, nostack),
            )
        }
    }

    /// The micro-kernel's mix on registers: per row, `vpabsb` once and per
    /// column vector `vpsignb`, `vpmaddubsw`, `vpmaddwd`, `vpaddd` (3 rows
    /// × 2 vectors here).
    #[target_feature(enable = "avx2")]
    unsafe fn kernel_mix_loop(iters: u64) {
        // SAFETY: registers only.
        unsafe {
            asm!(
                "vpxor {a}, {a}, {a}", "vpxor {b0}, {b0}, {b0}", "vpxor {b1}, {b1}, {b1}", "vpxor {o}, {o}, {o}",
                "2:",
                "vpabsb {ua}, {a}",
                "vpsignb {t0}, {b0}, {a}", "vpsignb {t1}, {b1}, {a}",
                "vpmaddubsw {t0}, {ua}, {t0}", "vpmaddubsw {t1}, {ua}, {t1}",
                "vpmaddwd {t0}, {t0}, {o}", "vpmaddwd {t1}, {t1}, {o}",
                "vpaddd {c0}, {c0}, {t0}", "vpaddd {c1}, {c1}, {t1}",
                "vpabsb {ua}, {a}",
                "vpsignb {t0}, {b0}, {a}", "vpsignb {t1}, {b1}, {a}",
                "vpmaddubsw {t0}, {ua}, {t0}", "vpmaddubsw {t1}, {ua}, {t1}",
                "vpmaddwd {t0}, {t0}, {o}", "vpmaddwd {t1}, {t1}, {o}",
                "vpaddd {c2}, {c2}, {t0}", "vpaddd {c3}, {c3}, {t1}",
                "vpabsb {ua}, {a}",
                "vpsignb {t0}, {b0}, {a}", "vpsignb {t1}, {b1}, {a}",
                "vpmaddubsw {t0}, {ua}, {t0}", "vpmaddubsw {t1}, {ua}, {t1}",
                "vpmaddwd {t0}, {t0}, {o}", "vpmaddwd {t1}, {t1}, {o}",
                "vpaddd {c4}, {c4}, {t0}", "vpaddd {c5}, {c5}, {t1}",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                a = out(ymm_reg) _, ua = out(ymm_reg) _, b0 = out(ymm_reg) _, b1 = out(ymm_reg) _,
                o = out(ymm_reg) _, t0 = out(ymm_reg) _, t1 = out(ymm_reg) _,
                c0 = out(ymm_reg) _, c1 = out(ymm_reg) _, c2 = out(ymm_reg) _,
                c3 = out(ymm_reg) _, c4 = out(ymm_reg) _, c5 = out(ymm_reg) _,
                options(nomem, nostack),
            )
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod peak {
    pub struct Peak {
        pub ghz: f64,
        pub mul_only_gops: f64,
        pub kernel_mix_gops: f64,
        pub vnni_gops: Option<f64>,
    }
    pub fn measure() -> Option<Peak> {
        None
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
