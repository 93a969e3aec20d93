//! Every kernel this CPU runs against the reference, bit for bit; the f32
//! helpers' vector paths against their scalar definitions.

use super::*;

/// xorshift32: reproducible, no dependency.
struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    /// Activations: any i8, -128 included.
    fn act(&mut self) -> i8 {
        self.next() as i8
    }
    /// Weights: `[-127, 127]`.
    fn weight(&mut self) -> i8 {
        ((self.next() % 255) as i32 - 127) as i8
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
    }
}

/// Runs `kernel` on a random `m×k · k×n` with padded strides, checks C
/// against the reference and that the padding was not written.
fn check(kernel: Kernel, rng: &mut Rng, m: usize, k: usize, n: usize) {
    let (lda, ldb, ldc) = (k + 3, n + 1, n + 5);
    let a: Vec<i8> = (0..m * lda).map(|_| rng.act()).collect();
    let b: Vec<i8> = (0..k * ldb).map(|_| rng.weight()).collect();
    let a_dense: Vec<i8> = (0..m * k).map(|i| a[i / k * lda + i % k]).collect();
    let b_dense: Vec<i8> = (0..k * n).map(|i| b[i / n * ldb + i % n]).collect();
    let want = reference_gemm(m, k, n, &a_dense, &b_dense);
    let packed = pack_b_for(kernel, &b, k, n, ldb).unwrap();
    let mut c = vec![i32::MIN; m * ldc];
    gemm_i8(m, &a, lda, &packed, &mut c, ldc);
    for i in 0..m {
        assert_eq!(
            &c[i * ldc..][..n],
            &want[i * n..][..n],
            "{kernel:?} {m}×{k}×{n} row {i}"
        );
        assert!(
            c[i * ldc + n..][..5].iter().all(|&v| v == i32::MIN),
            "{kernel:?} wrote padding"
        );
    }
    let want_sums: Vec<i32> = (0..n)
        .map(|j| (0..k).map(|kk| b_dense[kk * n + j] as i32).sum())
        .collect();
    assert_eq!(packed.col_sums(), &want_sums[..]);
}

const DIMS: [usize; 10] = [1, 2, 3, 5, 7, 13, 31, 64, 65, 127];

#[test]
fn every_kernel_matches_the_reference_on_odd_shapes() {
    println!("kernels on this CPU: {:?}", Kernel::available());
    let mut rng = Rng(0x1234_5678);
    for &kernel in Kernel::available() {
        for &m in &DIMS {
            for &k in &DIMS {
                for &n in &DIMS {
                    check(kernel, &mut rng, m, k, n);
                }
            }
        }
        for (m, k, n) in [
            (1, 384, 1536),
            (5, 1536, 384),
            (31, 1536, 65),
            (127, 384, 127),
            (64, 127, 1536),
            (13, 1535, 17),
            (3, 4099, 33),
            // PP-OCR det's 3x3 96->24 convs: the second panel is half used
            (37, 864, 24),
        ] {
            check(kernel, &mut rng, m, k, n);
        }
    }
}

#[test]
fn transposed_packing_gives_the_same_product() {
    let mut rng = Rng(99);
    for &kernel in Kernel::available() {
        for (m, k, n) in [(7, 13, 31), (4, 64, 16), (65, 5, 3), (2, 127, 65)] {
            let ldbt = k + 2;
            let bt: Vec<i8> = (0..n * ldbt).map(|_| rng.weight()).collect();
            let b: Vec<i8> = (0..k * n).map(|i| bt[(i % n) * ldbt + i / n]).collect();
            let a: Vec<i8> = (0..m * k).map(|_| rng.act()).collect();
            let want = reference_gemm(m, k, n, &a, &b);
            let p = pack_b_transposed_for(kernel, &bt, n, k, ldbt).unwrap();
            let mut c = vec![0; m * n];
            gemm_i8(m, &a, k, &p, &mut c, n);
            assert_eq!(c, want, "{kernel:?} {m}×{k}×{n}");
        }
    }
}

/// All-extreme values: -128 activations against ±127 weights over long K,
/// where any i16 saturation or i32 overflow would show.
#[test]
fn extreme_values_do_not_saturate_or_overflow() {
    for &kernel in Kernel::available() {
        for (m, k, n) in [(5, 4096, 33), (2, MAX_K, 17)] {
            for (av, bv) in [(-128i8, 127i8), (-128, -127), (127, 127), (127, -127)] {
                let a = vec![av; m * k];
                let b = vec![bv; k * n];
                let p = pack_b_for(kernel, &b, k, n, n).unwrap();
                let mut c = vec![0; m * n];
                gemm_i8(m, &a, k, &p, &mut c, n);
                let want = av as i32 * bv as i32 * k as i32;
                assert!(
                    c.iter().all(|&v| v == want),
                    "{kernel:?} k={k} {av}·{bv}: {:?}",
                    &c[..3]
                );
            }
            // Alternating signs in one row: pair sums at ±2·128·127.
            let a: Vec<i8> = (0..m * k)
                .map(|i| if i % 2 == 0 { -128 } else { 127 })
                .collect();
            let b: Vec<i8> = (0..k * n)
                .map(|i| if (i / n) % 2 == 0 { -127 } else { 127 })
                .collect();
            let want = reference_gemm(m, k, n, &a, &b);
            let p = pack_b_for(kernel, &b, k, n, n).unwrap();
            let mut c = vec![0; m * n];
            gemm_i8(m, &a, k, &p, &mut c, n);
            assert_eq!(c, want, "{kernel:?} alternating k={k}");
        }
    }
}

#[test]
fn packing_refuses_minus_128_and_huge_k() {
    let mut b = vec![1i8; 12];
    b[7] = -128;
    let e = pack_b(&b, 3, 4, 4).unwrap_err();
    assert!(e.to_string().contains("(1, 3) is -128"), "{e}");
    let e = pack_b_transposed(&b, 3, 4, 4).unwrap_err();
    assert!(e.to_string().contains("(3, 1) is -128"), "{e}");
    let e = pack_b(&[], MAX_K + 1, 0, 0).unwrap_err();
    assert!(e.to_string().contains("over"), "{e}");
}

/// Packing for a kernel is refused unless this CPU runs it (gemm_i8 would
/// execute its instructions); every kernel it does run packs.
#[test]
fn packing_is_refused_for_a_kernel_this_cpu_lacks() {
    let all: &[Kernel] = &[
        Kernel::Generic,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni,
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon,
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonDot,
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Kernel::Simd128,
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        Kernel::RelaxedDot,
    ];
    let b = [1i8; 12];
    for &kernel in all {
        let packed = pack_b_for(kernel, &b, 3, 4, 4);
        let transposed = pack_b_transposed_for(kernel, &b, 4, 3, 3);
        if Kernel::available().contains(&kernel) {
            assert!(packed.is_ok() && transposed.is_ok(), "{kernel:?}");
        } else {
            let e = packed.unwrap_err().to_string();
            assert!(e.contains("does not have its instructions"), "{e}");
            assert!(transposed.is_err(), "{kernel:?}");
        }
    }
}

#[test]
fn empty_shapes() {
    for &kernel in Kernel::available() {
        let p = pack_b_for(kernel, &[], 0, 5, 5).unwrap();
        let mut c = vec![7; 15];
        gemm_i8(3, &[], 0, &p, &mut c, 5);
        assert_eq!(c, vec![0; 15]);
        let p = pack_b_for(kernel, &[], 4, 0, 0).unwrap();
        gemm_i8(3, &[0; 12], 4, &p, &mut [], 0);
        let p = pack_b_for(kernel, &[1; 20], 4, 5, 5).unwrap();
        gemm_i8(0, &[], 4, &p, &mut [], 5);
    }
}

#[test]
#[should_panic(expected = "does not fit")]
fn short_a_panics() {
    let p = pack_b(&[1; 20], 4, 5, 5).unwrap();
    let mut c = vec![0; 10];
    gemm_i8(2, &[0; 7], 4, &p, &mut c, 5);
}

/// Values that probe every corner of the quantizer.
fn awkward_f32s(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    let special = [
        0.0,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
    ];
    (0..n)
        .map(|i| match i % 7 {
            0 => special[(i / 7) % special.len()],
            // exact halves: ties
            1 => ((rng.next() % 300) as f32 - 150.0 + 0.5) * scale,
            2 => rng.f32() * 1e6,
            _ => rng.f32() * 130.0 * scale,
        })
        .collect()
}

#[test]
fn quantize_paths_agree_bit_for_bit() {
    let mut rng = Rng(7);
    for len in (0..70).chain([127, 1000, 4099]) {
        let x = awkward_f32s(&mut rng, len, 0.03);
        for (scale, zp, lo, hi) in [
            (0.03f32, 0i8, -127i8, 127i8),
            (0.03, 5, -128, 127),
            (1e-3, -128, -128, 127),
            (7.0, 127, -128, 127),
        ] {
            let q = Quant::new(scale, zp, lo, hi);
            let mut want = vec![0i8; len];
            generic::quantize(&x, &q, &mut want);
            for v in Vector::available() {
                let mut got = vec![0i8; len];
                v.quantize(&x, &q, &mut got);
                assert_eq!(got, want, "{v:?} len {len} scale {scale} zp {zp}");
            }
        }
        for v in Vector::available() {
            let g = generic::max_abs(&x);
            assert_eq!(
                v.max_abs(&x).to_bits(),
                g.to_bits(),
                "{v:?} max_abs len {len}"
            );
            let (lo, hi, nan) = generic::range(&x);
            let (vl, vh, vn) = v.range(&x);
            assert_eq!(
                (vl.to_bits(), vh.to_bits(), vn),
                (lo.to_bits(), hi.to_bits(), nan),
                "{v:?} range len {len}"
            );
            // without the NaNs and infinities too
            let finite: Vec<f32> = x
                .iter()
                .map(|v| if v.is_finite() { *v } else { -0.0 })
                .collect();
            let (lo, hi, nan) = generic::range(&finite);
            assert!(!nan);
            assert_eq!(
                v.range(&finite),
                (lo, hi, false),
                "{v:?} finite range len {len}"
            );
            let finite: Vec<f32> = x
                .iter()
                .map(|v| if v.is_finite() { *v } else { 0.5 })
                .collect();
            let (mut a, mut b) = (vec![0; len], vec![0; len]);
            let sa = quantize_row_with(v, &finite, &mut a);
            let sb = quantize_row_with(Vector::Generic, &finite, &mut b);
            assert_eq!(
                (sa.to_bits(), &a),
                (sb.to_bits(), &b),
                "{v:?} row len {len}"
            );
        }
    }
}

#[test]
fn quantize_matches_its_definition() {
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..1000)
        .map(|_| rng.f32() * 5.0)
        .chain([2.5, -2.5, 0.0])
        .collect();
    let mut q = vec![0i8; x.len()];
    let scale = quantize_row_f32_to_i8(&x, &mut q);
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_eq!(scale, max / 127.0);
    for (&v, &got) in x.iter().zip(&q) {
        let want = (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        assert_eq!(got, want, "{v}");
        assert!((got as f32 * scale - v).abs() <= scale * 0.5 * (1.0 + 1e-6));
    }
    assert!(q.contains(&127) || q.contains(&-127));
    // ties go to even; saturation; NaN to the bottom
    let mut s = [0i8; 6];
    quantize_f32_to_i8(&[2.5, 3.5, -2.5, 1e9, -1e9, f32::NAN], 1.0, 0, &mut s);
    assert_eq!(s, [2, 4, -2, 127, -128, -128]);
    quantize_f32_to_i8(&[2.5, 0.0, -300.0, 300.0, 1.0, -1.0], 1.0, 10, &mut s);
    assert_eq!(s, [12, 10, -128, 127, 11, 9]);
    // an all-zero row
    let mut z = [5i8; 3];
    assert_eq!(quantize_tensor_f32_to_i8(&[0.0, -0.0, 0.0], &mut z), 0.0);
    assert_eq!(z, [0; 3]);
    assert_eq!(max_abs(&[]), 0.0);
    assert_eq!(max_abs(&[f32::NAN, -3.0, 2.0]), 3.0);
}

#[test]
fn quantize_rows_is_per_row() {
    let mut rng = Rng(11);
    let (m, k, lx, lo) = (5, 37, 40, 39);
    let x: Vec<f32> = (0..m * lx)
        .map(|i| rng.f32() * (1 + i / lx) as f32)
        .collect();
    let mut out = vec![0i8; m * lo];
    let mut scales = vec![0f32; m];
    quantize_rows(m, k, &x, lx, &mut out, lo, &mut scales);
    for i in 0..m {
        let mut row = vec![0i8; k];
        let s = quantize_row_f32_to_i8(&x[i * lx..][..k], &mut row);
        assert_eq!((s, &row[..]), (scales[i], &out[i * lo..][..k]));
    }
}

#[test]
fn dequant_paths_agree_and_match_the_formula() {
    let mut rng = Rng(5);
    for n in (0..40).chain([127, 1000]) {
        let m = 3;
        let ldc = n + 2;
        let c: Vec<i32> = (0..m * ldc)
            .map(|_| rng.next() as i32 >> (rng.next() % 31))
            .collect();
        let rs: Vec<f32> = (0..m).map(|_| rng.f32()).collect();
        let cs: Vec<f32> = (0..n).map(|_| rng.f32() * 0.01).collect();
        let sums: Vec<i32> = (0..n).map(|_| (rng.next() as i32) >> 12).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        let zps = [3, -128, 0];
        for zero in [
            ZeroPoints::None,
            ZeroPoints::Tensor(-7),
            ZeroPoints::Rows(&zps),
        ] {
            for bias in [None, Some(&bias[..])] {
                for rs in [&rs[..], &rs[..1]] {
                    let run = |v: Vector| {
                        let mut out = vec![f32::NAN; m * n];
                        dequant_rows_with(
                            v, m, n, &c, ldc, rs, &cs, zero, &sums, bias, &mut out, n,
                        );
                        out
                    };
                    let want: Vec<f32> = (0..m * n)
                        .map(|x| {
                            let (i, j) = (x / n, x % n);
                            let z = match zero {
                                ZeroPoints::None => 0,
                                ZeroPoints::Tensor(z) => z,
                                ZeroPoints::Rows(z) => z[i],
                            };
                            let acc = c[i * ldc + j].wrapping_sub(z.wrapping_mul(sums[j]));
                            let r = if rs.len() == 1 { rs[0] } else { rs[i] };
                            let v = acc as f32 * (r * cs[j]);
                            // `+ 0.0` would turn -0.0 into 0.0
                            bias.map_or(v, |b| v + b[j])
                        })
                        .collect();
                    for v in Vector::available() {
                        let got = run(v);
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{v:?} n={n} {zero:?} bias {}", bias.is_some());
                    }
                }
            }
        }
    }
}

/// The whole path on f32 data: quantize rows, GEMM, dequant, against an
/// f32 product; symmetric and asymmetric (zero point) activations.
#[test]
fn quantized_matmul_approximates_f32() {
    let mut rng = Rng(21);
    let (m, k, n) = (9, 300, 70);
    let a: Vec<f32> = (0..m * k).map(|_| rng.f32() + 0.3).collect();
    let w: Vec<f32> = (0..k * n).map(|_| rng.f32()).collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
    let exact: Vec<f64> = (0..m * n)
        .map(|x| {
            let (i, j) = (x / n, x % n);
            bias[j] as f64
                + (0..k)
                    .map(|kk| a[i * k + kk] as f64 * w[kk * n + j] as f64)
                    .sum::<f64>()
        })
        .collect();
    // per output channel weight scales
    let mut wq = vec![0i8; k * n];
    let mut col_scales = vec![0f32; n];
    for j in 0..n {
        let col: Vec<f32> = (0..k).map(|kk| w[kk * n + j]).collect();
        let mut q = vec![0i8; k];
        col_scales[j] = quantize_row_f32_to_i8(&col, &mut q);
        for kk in 0..k {
            wq[kk * n + j] = q[kk];
        }
    }
    let packed = pack_b(&wq, k, n, n).unwrap();
    let norm = exact.iter().map(|v| v * v).sum::<f64>().sqrt();
    let err = |got: &[f32]| {
        got.iter()
            .zip(&exact)
            .map(|(&g, &e)| (g as f64 - e).powi(2))
            .sum::<f64>()
            .sqrt()
            / norm
    };
    let mut c = vec![0i32; m * n];
    let mut out = vec![0f32; m * n];

    let mut aq = vec![0i8; m * k];
    let mut rs = vec![0f32; m];
    quantize_rows(m, k, &a, k, &mut aq, k, &mut rs);
    gemm_i8(m, &aq, k, &packed, &mut c, n);
    dequant_rows(
        m,
        n,
        &c,
        n,
        &rs,
        &col_scales,
        ZeroPoints::None,
        &[],
        Some(&bias),
        &mut out,
        n,
    );
    let sym = err(&out);

    // asymmetric: a ∈ [-0.7, 1.3] onto [-128, 127]
    let scale = 2.0 / 255.0;
    let zp = (-128.0 - (-0.7f32 / scale)).round() as i8;
    quantize_f32_to_i8(&a, scale, zp, &mut aq);
    gemm_i8(m, &aq, k, &packed, &mut c, n);
    let zero = ZeroPoints::Tensor(zp as i32);
    dequant_rows(
        m,
        n,
        &c,
        n,
        &[scale],
        &col_scales,
        zero,
        packed.col_sums(),
        Some(&bias),
        &mut out,
        n,
    );
    let asym = err(&out);
    println!("relative error: symmetric {sym:.2e}, asymmetric {asym:.2e}");
    assert!(sym < 0.01 && asym < 0.01, "{sym} {asym}");
}

/// The requant epilogue against its definition computed in f64 from the
/// f32 product: round half to even (ties included), saturation on both
/// sides, zero point and bias.
#[test]
fn requant_matches_its_definition() {
    let mut rng = Rng(77);
    let (m, n) = (7, 70);
    let c: Vec<i32> = (0..m * n)
        .map(|_| (rng.next() % 200_001) as i32 - 100_000)
        .collect();
    let col_sums: Vec<i32> = (0..n).map(|_| (rng.next() % 4001) as i32 - 2000).collect();
    let bias: Vec<i32> = (0..n)
        .map(|_| (rng.next() % 20_001) as i32 - 10_000)
        .collect();
    let mut mult: Vec<f32> = (0..n)
        .map(|_| 1e-4 + (rng.next() % 1000) as f32 * 2e-6)
        .collect();
    mult[0] = 0.5; // exact ties: odd accumulators times 0.5
    for (zp, out_zp) in [(0, 0i8), (-37, -128), (12, 5)] {
        let mut out = vec![0i8; m * n];
        requant_rows(
            m,
            n,
            &c,
            n,
            zp,
            &col_sums,
            Some(&bias),
            &mult,
            out_zp,
            &mut out,
            n,
        );
        for v in Vector::available().into_iter().chain([Vector::Generic]) {
            let mut o = vec![0i8; m * n];
            requant_rows_with(
                v,
                m,
                n,
                &c,
                n,
                zp,
                &col_sums,
                Some(&bias),
                &mult,
                out_zp,
                &mut o,
                n,
            );
            assert_eq!(o, out, "{v:?}");
        }
        let mut ties = 0;
        for i in 0..m {
            for j in 0..n {
                let acc = c[i * n + j] - zp * col_sums[j] + bias[j];
                let v = (acc as f32 * mult[j]) as f64;
                if v.fract().abs() == 0.5 {
                    ties += 1;
                }
                let want = (v.round_ties_even() + out_zp as f64).clamp(-128.0, 127.0) as i8;
                assert_eq!(
                    out[i * n + j],
                    want,
                    "row {i} col {j}: acc {acc} · {}",
                    mult[j]
                );
            }
        }
        assert!(ties > 0, "no ties exercised");
        assert!(
            out.contains(&-128) && out.contains(&127),
            "no saturation exercised"
        );
    }
}
