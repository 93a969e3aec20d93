//! The JS API in headless Chromium (wasm-bindgen-test): load, describe, run
//! the bundled digits CNN against ONNX Runtime's logits, and every error
//! path throwing a `MorselError` without breaking the instance.
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
