//! Static int8 (`--quantize int8-static`): calibration, the rewrite into
//! `QLinearConv` chains (compress/src/calibrate.rs), the runtime's
//! `QLinearConv` (runtime/src/ops/qlinear.rs), and the calibration data
//! checks.
//!
//! `cargo test --release --test static_int8 -- --nocapture`

mod common;

use common::*;
use morsel::compress::calibrate::{self, Method};
use morsel::compress::quantize::{QuantOptions, quantize_dynamic};
use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::runtime::graph::Graph;
use morsel::runtime::ops::op_name;
use morsel::{Model, Tensor};

fn digits_graph() -> Graph {
    morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap()
}

fn x_of(feed: &[(String, Tensor)]) -> Tensor {
    feed.iter().find(|(k, _)| k == "x").unwrap().1.clone()
}

/// The digits CNN made static with `method`, calibrated on the training
/// split, read back from its bytes.
fn static_digits(method: Method) -> (Model, calibrate::StaticReport) {
    let f32_graph = digits_graph();
    let mut g = f32_graph.clone();
    let opts = QuantOptions {
        min_size: 0,
        min_reduction: 0,
        ..QuantOptions::default()
    };
    quantize_dynamic(&mut g, &opts).unwrap();
    let calib: Vec<(String, Tensor)> = vec![(
        "x".into(),
        x_of(&npz(&digits_dir().join("digits_train.npz"))),
    )];
    let names = calibrate::wanted(&g);
    let ranges = calibrate::calibrate(&f32_graph, &names, &calib, 256, 1, method).unwrap();
    let n = calibrate::check_feed(&calib).unwrap();
    let r = calibrate::quantize_static(&mut g, &ranges, method, n).unwrap();
    let bytes = to_bytes(&g, FloatStorage::F32).unwrap();
    (Model::from_bytes(&bytes).unwrap(), r)
}

fn digits_accuracy(m: &Model) -> f64 {
    let data = npz(&digits_dir().join("digits_test.npz"));
    let x = x_of(&data);
    let y = data
        .iter()
        .find(|(k, _)| k == "y")
        .unwrap()
        .1
        .to_i64_vec()
        .unwrap();
    let out = m.run(&[("x", x.view())]).unwrap().remove(0);
    accuracy(&out.to_f32_vec().unwrap(), &y, 10)
}

/// Both convs (Conv→Relu→Conv→Relu) become QLinearConv, the second reads
/// the first's int8 output directly (no DequantizeLinear/QuantizeLinear
/// between them), and every calibration method keeps the accuracy within
/// the 0.5 points.
#[test]
fn digits_static_chain_stays_int8_and_keeps_its_accuracy() {
    let f32_model = Model::from_graph(digits_graph()).unwrap();
    let a0 = digits_accuracy(&f32_model);
    for method in [Method::MinMax, Method::Percentile(99.99), Method::Entropy] {
        let (m, r) = static_digits(method);
        let g = m.graph();
        let qlinear: Vec<_> = g
            .nodes
            .iter()
            .filter(|n| op_name(n.op) == "QLinearConv")
            .collect();
        assert_eq!(qlinear.len(), 2, "{:?}", r.dynamic);
        assert_eq!(r.converted.len(), 2);
        // The second conv's input is the first conv's output.
        assert_eq!(qlinear[1].inputs[0], Some(qlinear[0].outputs[0]));
        assert_eq!((r.quantize_nodes, r.dequantize_nodes), (1, 1));
        // Relu outputs: ranges start at 0.
        assert!(r.converted.iter().all(|c| c.output_range.0 == 0.0));
        let a1 = digits_accuracy(&m);
        println!(
            "digits static int8 ({}): accuracy {:.2}% -> {:.2}%, ranges {:?}",
            method.name(),
            a0 * 100.0,
            a1 * 100.0,
            r.converted
                .iter()
                .map(|c| c.output_range)
                .collect::<Vec<_>>()
        );
        assert!(
            a0 - a1 <= 0.005,
            "{}: lost {:.2} points",
            method.name(),
            (a0 - a1) * 100.0
        );
    }
}

/// `params` covers the range with its 256 codes to within a step (0 is
/// the zero point's code, exact by construction), and a range starting at
/// 0 (a Relu's) puts 0 on the lowest code, so saturation is the Relu.
#[test]
fn range_params_cover_the_range() {
    for (lo, hi) in [(0.0f32, 4.5f32), (-1.0, 3.0), (-2.5, 0.0), (-0.3, 0.7)] {
        let (s, z) = calibrate::params(lo, hi);
        let (qlo, qhi) = ((-128.0 - z as f32) * s, (127.0 - z as f32) * s);
        assert!(qlo <= lo + s && qlo >= lo - s, "{lo} {hi}: {qlo}");
        assert!(qhi >= hi - s && qhi <= hi + s, "{lo} {hi}: {qhi}");
    }
    assert_eq!(calibrate::params(0.0, 4.0).1, -128);
    // An all-zero tensor still gets a usable scale.
    let (s, _) = calibrate::params(0.0, 0.0);
    assert!(s > 0.0 && s.is_finite());
}

/// Bad calibration data: an empty set, NaN or infinity, a wrong shape and
/// a wrong dtype are errors that name the problem.
#[test]
fn bad_calibration_data_is_a_clear_error() {
    let g = digits_graph();
    let names = vec!["x".to_string()];
    let err = |feed: Vec<(String, Tensor)>| {
        calibrate::calibrate(&g, &names, &feed, 32, 1, Method::MinMax)
            .unwrap_err()
            .to_string()
    };
    let empty = Tensor::from_slice(&[0, 1, 8, 8], &[0f32; 0]).unwrap();
    let e = err(vec![("x".into(), empty)]);
    assert!(e.contains("calibration set is empty"), "{e}");
    let e = calibrate::check_feed(&vec![]).unwrap_err().to_string();
    assert!(e.contains("no inputs"), "{e}");
    for bad in [f32::NAN, f32::INFINITY] {
        let mut v = vec![0.5f32; 3 * 64];
        v[64 + 5] = bad;
        let e = err(vec![(
            "x".into(),
            Tensor::from_slice(&[3, 1, 8, 8], &v).unwrap(),
        )]);
        assert!(
            e.contains(&format!("holds {bad}")) && e.contains("sample 1, element 5"),
            "{e}"
        );
    }
    let e = err(vec![(
        "x".into(),
        Tensor::from_slice(&[2, 1, 7, 8], &[0.5f32; 112]).unwrap(),
    )]);
    assert!(e.contains("'x'") && e.contains("[2, 1, 7, 8]"), "{e}");
    let e = err(vec![(
        "x".into(),
        Tensor::from_slice(&[2, 1, 8, 8], &[1i64; 128]).unwrap(),
    )]);
    assert!(e.contains("'x'") && e.contains("i64"), "{e}");
    let mut p = Method::Percentile(20.0);
    let e = calibrate::calibrate(&g, &names, &vec![], 32, 1, p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--percentile 20"), "{e}");
    p = Method::Percentile(99.9);
    assert!(calibrate::calibrate(&g, &names, &vec![], 32, 1, p).is_err());
}
