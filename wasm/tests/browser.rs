//! The JS API in headless Chromium (wasm-bindgen-test): load, describe, run
//! the bundled digits CNN against ONNX Runtime's logits, and every error
//! path throwing a `MorselError` without breaking the instance. Also the
//! kernels only this build has (simd128 / relaxed-SIMD f32 and int8
//! matmul, the vector math) against their definitions, bit for bit where
//! native code has the same arithmetic.
//!
//! Run by `make test-wasm` (needs `target/digits_cnn.morsel`, which it
//! converts first). Compiled only for wasm32.
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Float32Array, Int32Array, Object, Reflect};
use morsel_wasm::Model;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const DIGITS: &[u8] = include_bytes!("../../target/digits_cnn.morsel");
const SAMPLE: &[u8] = include_bytes!("../../examples/digits/sample_input.npy");
const SAMPLE_REF: &[u8] = include_bytes!("../../examples/digits/sample_ref_logits.npy");

/// The f32 payload of a little-endian `.npy` file (format 1.0 or 2.0).
fn npy_f32(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let start = match bytes[6] {
        1 => 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize,
        _ => 12 + u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
    };
    let header = std::str::from_utf8(&bytes[10..start]).unwrap_or("");
    assert!(header.contains("'<f4'"), "not an f32 npy: {header}");
    bytes[start..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).expect("property")
}

fn feeds(name: &str, data: JsValue, shape: &[f64]) -> JsValue {
    let t = Object::new();
    let shape: Array = shape.iter().map(|&d| JsValue::from(d)).collect();
    Reflect::set(&t, &"data".into(), &data).unwrap();
    Reflect::set(&t, &"shape".into(), &shape).unwrap();
    let f = Object::new();
    Reflect::set(&f, &name.into(), &t).unwrap();
    f.into()
}

fn digits() -> Model {
    Model::load(DIGITS).expect("the digits model loads")
}

/// The error's `kind` and `message`, checking it is a JS Error named MorselError.
fn error_parts(err: JsValue) -> (String, String) {
    let e: js_sys::Error = err.dyn_into().expect("thrown value is an Error");
    assert_eq!(String::from(e.name()), "MorselError");
    let kind = get(&e, "kind").as_string().expect("kind is a string");
    (kind, String::from(e.message()))
}

#[wasm_bindgen_test]
fn describes_inputs_outputs_and_metadata() {
    let m = digits();
    let inputs = m.inputs();
    assert_eq!(inputs.length(), 1);
    let x = inputs.get(0);
    assert_eq!(get(&x, "name").as_string().as_deref(), Some("x"));
    assert_eq!(get(&x, "dtype").as_string().as_deref(), Some("f32"));
    let shape = Array::from(&get(&x, "shape"));
    assert_eq!(shape.get(0).as_string().as_deref(), Some("N"));
    let rest: Vec<f64> = (1..4).map(|i| shape.get(i).as_f64().unwrap()).collect();
    assert_eq!(rest, [1.0, 8.0, 8.0]);
    let out = m.outputs().get(0);
    assert_eq!(get(&out, "name").as_string().as_deref(), Some("logits"));
    assert_eq!(Array::from(&get(&out, "shape")).get(1).as_f64(), Some(10.0));
    let producer = get(&m.metadata(), "producer").as_string().unwrap();
    assert!(producer.starts_with("morsel-compress"), "{producer}");
}

#[wasm_bindgen_test]
fn runs_digits_like_onnx_runtime() {
    let mut m = digits();
    let x = npy_f32(SAMPLE);
    let want = npy_f32(SAMPLE_REF);
    let out = m
        .run(feeds(
            "x",
            Float32Array::from(&x[..]).into(),
            &[1.0, 1.0, 8.0, 8.0],
        ))
        .expect("run");
    let logits = get(&out, "logits");
    assert_eq!(get(&logits, "dtype").as_string().as_deref(), Some("f32"));
    let shape: Vec<f64> = Array::from(&get(&logits, "shape"))
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    assert_eq!(shape, [1.0, 10.0]);
    let got = get(&logits, "data")
        .dyn_into::<Float32Array>()
        .unwrap()
        .to_vec();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-5, "max |diff| vs ONNX Runtime {diff}");
    let argmax = (0..10).max_by(|&a, &b| got[a].total_cmp(&got[b])).unwrap();
    assert_eq!(argmax, 2, "the sample is a 2");
}

#[wasm_bindgen_test]
fn batches_with_a_symbolic_dim_and_reuses_plans() {
    let mut m = digits();
    let x = npy_f32(SAMPLE);
    let one = get(
        &m.run(feeds(
            "x",
            Float32Array::from(&x[..]).into(),
            &[1.0, 1.0, 8.0, 8.0],
        ))
        .unwrap(),
        "logits",
    );
    let one = get(&one, "data")
        .dyn_into::<Float32Array>()
        .unwrap()
        .to_vec();
    let batch: Vec<f32> = x.iter().cycle().take(64 * 3).copied().collect();
    for _ in 0..3 {
        let out = m
            .run(feeds(
                "x",
                Float32Array::from(&batch[..]).into(),
                &[3.0, 1.0, 8.0, 8.0],
            ))
            .unwrap();
        let got = get(&get(&out, "logits"), "data")
            .dyn_into::<Float32Array>()
            .unwrap()
            .to_vec();
        assert_eq!(got.len(), 30);
        // Not bit-exact: gemm blocks a batch of 3 differently from 1.
        for row in got.chunks(10) {
            let diff = row
                .iter()
                .zip(&one)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-5, "batch row vs single run: {diff}");
        }
    }
    assert!(m.session_bytes() > 0);
}

#[wasm_bindgen_test]
fn bad_files_throw_format_errors() {
    let (kind, msg) = error_parts(Model::load(b"not a model at all").unwrap_err());
    assert_eq!(kind, "format");
    assert!(msg.starts_with("invalid .morsel file"), "{msg}");
    assert!(Model::load(&[]).is_err());
    // Every truncation and a spread of bit flips: errors, never a trap.
    for len in (0..DIGITS.len()).step_by(509) {
        assert!(Model::load(&DIGITS[..len]).is_err(), "truncated to {len}");
    }
    let mut bytes = DIGITS.to_vec();
    for i in (0..bytes.len()).step_by(1021) {
        bytes[i] ^= 0x10;
        let _ = Model::load(&bytes);
        bytes[i] ^= 0x10;
    }
    // The instance is still fine afterwards.
    assert_eq!(digits().inputs().length(), 1);
}

#[wasm_bindgen_test]
fn bad_inputs_throw_input_errors_naming_the_problem() {
    let mut m = digits();
    let x = Float32Array::new_with_length(64);
    let cases: Vec<(JsValue, &str)> = vec![
        (
            feeds("y", x.clone().into(), &[1.0, 1.0, 8.0, 8.0]),
            "no input 'y'",
        ),
        (
            feeds("x", x.clone().into(), &[1.0, 8.0, 8.0]),
            "input 'x' must have shape [N, 1, 8, 8], got [1, 8, 8]",
        ),
        (
            feeds("x", x.clone().into(), &[2.0, 1.0, 8.0, 8.0]),
            "data has 64 elements but shape [2, 1, 8, 8] needs 128",
        ),
        (
            feeds(
                "x",
                Int32Array::new_with_length(64).into(),
                &[1.0, 1.0, 8.0, 8.0],
            ),
            "input 'x' must be f32, got i32",
        ),
        (
            feeds("x", Array::new().into(), &[1.0, 1.0, 8.0, 8.0]),
            "data must be a Float32Array",
        ),
        (
            feeds("x", x.clone().into(), &[-1.0, 1.0, 8.0, 8.0]),
            "shape must be an array of non-negative integers",
        ),
        (
            feeds("x", x.clone().into(), &[0.5, 1.0, 8.0, 8.0]),
            "non-negative integers",
        ),
        (Object::new().into(), "missing input 'x'"),
        (JsValue::NULL, "run() takes an object"),
        (Array::new().into(), "run() takes an object"),
    ];
    for (f, want) in cases {
        let (kind, msg) = error_parts(m.run(f).unwrap_err());
        assert_eq!(kind, "input", "{msg}");
        assert!(msg.starts_with("bad input: "), "{msg}");
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
    // Still runs after all those errors.
    assert!(m.run(feeds("x", x.into(), &[1.0, 1.0, 8.0, 8.0])).is_ok());
}

// ---------------------------------------------------------------- kernels
//
// The simd128 kernels exist only in this build, so their checks against the
// definitions run here, in the browser that runs them.

/// A small LCG: the same numbers on every run.
struct Lcg(u32);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
        self.0 >> 8
    }
    fn f32(&mut self) -> f32 {
        self.next() as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
    fn i8(&mut self) -> i8 {
        (self.next() % 256) as u8 as i8
    }
}

/// The f32 matmul (simd128 or relaxed-FMA tile, short row panels, partial
/// column panels, k past one block, in-place and packed B, column bias):
/// the exact bits of the k-ordered sum (what native tiles compute, fused or
/// not), and within rounding of f64 sums.
#[wasm_bindgen_test]
fn f32_matmul_matches_the_definition() {
    use morsel_runtime::kernels::Mat;
    use morsel_runtime::kernels::sgemm::{self, Bias, Lhs, PackedB, Rhs};
    let mut rng = Lcg(5);
    let mut scratch = Vec::new();
    let fused = sgemm::fused();
    assert_eq!(fused, morsel_wasm::fused_multiply_add());
    for &m in &[1usize, 2, 5, 6, 7, 13, 60] {
        for &k in &[1usize, 7, 300] {
            for &n in &[1usize, 15, 16, 17, 40] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.f32()).collect();
                let bias: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
                let packed = PackedB::new(Mat::rows(&b, k, n)).unwrap();
                for (how, rhs) in [
                    ("view", Rhs::View(Mat::rows(&b, k, n))),
                    ("packed", Rhs::Packed(&packed)),
                ] {
                    let mut c = vec![f32::NAN; m * n];
                    let lhs = Lhs::View(Mat::rows(&a, m, k));
                    sgemm::matmul(lhs, rhs, &mut c, n, Bias::Col(&bias), None, 1, &mut scratch)
                        .unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            // the exact bits: the bias, then each product
                            // added in k order, fused (libm's correctly
                            // rounded fmaf) or not, as the tile does
                            let mut chain = bias[j];
                            for p in 0..k {
                                let (x, y) = (a[i * k + p], b[p * n + j]);
                                chain = if fused {
                                    x.mul_add(y, chain)
                                } else {
                                    chain + x * y
                                };
                            }
                            assert_eq!(
                                c[i * n + j].to_bits(),
                                chain.to_bits(),
                                "{m}x{k}x{n} {how} [{i},{j}] (fused: {fused}): {} vs {chain}",
                                c[i * n + j]
                            );
                            let mut want = bias[j] as f64;
                            let mut mag = want.abs();
                            for p in 0..k {
                                let t = a[i * k + p] as f64 * b[p * n + j] as f64;
                                want += t;
                                mag += t.abs();
                            }
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * mag + 1e-7,
                                "{m}x{k}x{n} {how} [{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Every int8 kernel this build has (the portable one and simd128's) gives
/// exactly the integer products, on odd shapes and the extreme values.
#[wasm_bindgen_test]
fn int8_kernels_are_exact() {
    use morsel_runtime::kernels::int8::{Kernel, gemm_i8, pack_b_for};
    let kernels = Kernel::available();
    assert!(
        kernels.len() >= 2,
        "simd128 int8 kernel missing: {kernels:?}"
    );
    let mut rng = Lcg(9);
    for &m in &[1usize, 3, 4, 5, 9] {
        for &k in &[1usize, 3, 4, 17, 64] {
            for &n in &[1usize, 4, 5, 13, 32] {
                let mut a: Vec<i8> = (0..m * k).map(|_| rng.i8()).collect();
                // weights are symmetric: [-127, 127]
                let mut b: Vec<i8> = (0..k * n).map(|_| rng.i8().max(-127)).collect();
                a[0] = -128;
                b[0] = -127;
                let want: Vec<i32> = (0..m * n)
                    .map(|ij| {
                        let (i, j) = (ij / n, ij % n);
                        (0..k)
                            .map(|p| a[i * k + p] as i32 * b[p * n + j] as i32)
                            .sum()
                    })
                    .collect();
                for &kernel in kernels {
                    let packed = pack_b_for(kernel, &b, k, n, n).unwrap();
                    let mut c = vec![i32::MIN; m * n];
                    gemm_i8(m, &a, k, &packed, &mut c, n);
                    assert_eq!(c, want, "{kernel:?} {m}x{k}x{n}");
                }
            }
        }
    }
}

/// exp and softmax's exp-and-sum on this build's vector code: exact
/// subnormal results from `exp`, zero below ~2^-125.5 from the softmax step.
#[wasm_bindgen_test]
fn exp_subnormals_and_softmax_flush() {
    use morsel_runtime::kernels::math;
    let mut x = [-80.0f32, -95.0, -103.0, -1e30, 1.0];
    math::exp(&mut x);
    for (&got, v) in x.iter().zip([-80.0f64, -95.0, -103.0]) {
        let want = v.exp();
        // within one subnormal ulp (2^-149) or 1.5e-7 relative
        let tol = (1.5e-7 * want).max(1.4013e-45);
        assert!(
            (got as f64 - want).abs() <= tol,
            "exp({v}) = {got}, want {want}"
        );
    }
    assert_eq!(x[3], 0.0);
    let x = [0.0f32, -86.0, -88.0, -3.4e38];
    let mut y = [1f32; 4];
    let s = math::exp_shift_sum(&x, 0.0, &mut y);
    assert!(y[1].is_normal() && y[2] == 0.0 && y[3] == 0.0, "{y:?}");
    assert!((s - 1.0).abs() < 1e-6, "{s}");
}

/// The vector math this build runs (simd128 loops, or the relaxed-SIMD
/// `v128` copy with fused multiply-adds) gives the bits of the scalar
/// formula with the same rounding, which native x86-64 copies are held to
/// as well: one value at a time (where exp's subnormal path is decided)
/// and whole slices, over the ranges where each formula changes branch.
#[wasm_bindgen_test]
fn vector_math_gives_the_scalar_formulas_bits() {
    use morsel_runtime::kernels::math::{self, Function, scalar_twin, scalar_twin_exp_shift};
    let fused = math::fused();
    assert_eq!(fused, morsel_wasm::fused_multiply_add());
    let mut xs: Vec<f32> = (0..8_001)
        .map(|i| -20.0 + 40.0 * i as f32 / 8_000.0)
        .collect();
    xs.extend((0..2_001).map(|i| -104.0 + 193.0 * i as f32 / 2_000.0));
    xs.extend([
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        0.0,
        -0.0,
        1e-40,
        -1e-40,
        0.875,
        -0.625,
    ]);
    for f in Function::ALL {
        for &x in &xs {
            let mut y = [0f32];
            f.apply(&[x], &mut y);
            let want = scalar_twin(f, fused, x);
            assert_eq!(
                y[0].to_bits(),
                want.to_bits(),
                "{f:?}({x}) fused {fused}: {} vs {want}",
                y[0]
            );
        }
        // whole slices (16-lane chunks and a tail) on [-10, 10], where no
        // lane needs exp below the normals
        let xs: Vec<f32> = (0..1_003)
            .map(|i| -10.0 + 20.0 * i as f32 / 1_002.0)
            .collect();
        let mut y = vec![0f32; xs.len()];
        f.apply(&xs, &mut y);
        for (&x, &y) in xs.iter().zip(&y) {
            assert_eq!(
                y.to_bits(),
                scalar_twin(f, fused, x).to_bits(),
                "{f:?}({x}) in a slice"
            );
        }
    }
    let mut y = vec![0f32; xs.len()];
    math::exp_shift_sum(&xs, 20.0, &mut y);
    for (&x, &y) in xs.iter().zip(&y) {
        let want = scalar_twin_exp_shift(fused, x, 20.0);
        assert_eq!(y.to_bits(), want.to_bits(), "e^({x} - 20) fused {fused}");
    }
}
