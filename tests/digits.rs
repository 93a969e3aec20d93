//! The bundled digits CNN end to end: ONNX → .morsel → runtime, compared
//! with ONNX Runtime's outputs (examples/digits/make_digits_model.py made
//! them) on the whole test split.

mod common;

use common::*;
use morsel::{Model, Options};

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |m, (i, &x)| if x > m.1 { (i, x) } else { m },
        )
        .0
}

#[test]
fn digits_cnn_matches_onnx_runtime_on_the_test_split() {
    let bytes = digits_morsel_bytes();
    let model = Model::from_bytes(&bytes).expect("load .morsel");
    let data = npz(&digits_dir().join("digits_test.npz"));
    let x = &data.iter().find(|(k, _)| k == "x").expect("x").1;
    let y = data
        .iter()
        .find(|(k, _)| k == "y")
        .expect("y")
        .1
        .to_i64_vec()
        .unwrap();
    let reference = npy(&digits_dir().join("digits_test_ref_logits.npy"));
    let want = reference.to_f32_vec().unwrap();

    for threads in [1, 2] {
        let mut s = model.session(Options {
            threads,
            ..Options::default()
        });
        let out = s.run(&[("x", x.view())]).expect("run");
        assert_eq!(out[0].dims, reference.dims);
        let got = out[0].to_f32_vec().unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff <= 1e-4,
            "max abs diff vs ONNX Runtime {diff} (threads {threads})"
        );

        let ours = got.chunks(10).map(argmax);
        let theirs = want.chunks(10).map(argmax);
        let acc_ours = ours
            .clone()
            .zip(&y)
            .filter(|(p, y)| *p as i64 == **y)
            .count();
        let acc_ort = theirs.zip(&y).filter(|(p, y)| *p as i64 == **y).count();
        assert_eq!(acc_ours, acc_ort, "accuracy differs from ONNX Runtime");
        assert!(
            acc_ours * 100 >= 95 * y.len(),
            "accuracy {acc_ours}/{} is implausibly low",
            y.len()
        );
    }
}

#[test]
fn batch_dim_stays_free_and_single_samples_match() {
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let g = model.graph();
    let input = &g.values[g.inputs[0]];
    assert!(
        matches!(input.shape[0], morsel::runtime::Dim::Sym(_)),
        "batch dim should be symbolic: {:?}",
        input.shape
    );
    let x = npy(&digits_dir().join("sample_input.npy"));
    let want = npy(&digits_dir().join("sample_ref_logits.npy"))
        .to_f32_vec()
        .unwrap();
    let mut s = model.session(Options::default());
    // run twice: the second run reuses the plan and buffers
    for _ in 0..2 {
        let out = s.run(&[("x", x.view())]).unwrap();
        assert!(max_abs_diff(&out[0].to_f32_vec().unwrap(), &want) <= 1e-4);
    }
}

#[test]
fn planned_memory_is_less_than_the_sum_of_intermediates() {
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let mut s = model.session(Options::default());
    let plan = s.plan(&[vec![64, 1, 8, 8]]).unwrap();
    assert!(plan.activation_bytes() > 0);
    assert!(
        plan.activation_bytes() < plan.unshared_bytes(),
        "planned {} bytes, unshared {}",
        plan.activation_bytes(),
        plan.unshared_bytes()
    );
}

#[test]
fn run_into_writes_what_run_returns_and_checks_buffer_sizes() {
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let x = npy(&digits_dir().join("sample_input.npy"));
    let mut s = model.session(Options::default());
    let want = s.run(&[("x", x.view())]).unwrap();
    assert_eq!(
        s.output_dims(std::slice::from_ref(&x.dims)).unwrap(),
        [want[0].dims.clone()]
    );
    let mut buf = vec![0u8; want[0].data.len()];
    s.run_into(&[("x", x.view())], &mut [&mut buf]).unwrap();
    assert_eq!(buf, want[0].data.as_bytes());

    let mut short = vec![7u8; buf.len() - 4];
    let err = s
        .run_into(&[("x", x.view())], &mut [&mut short])
        .unwrap_err();
    assert!(err.to_string().contains("output 0"), "{err}");
    assert!(
        short.iter().all(|&b| b == 7),
        "a refused buffer is left untouched"
    );
    let err = s.run_into(&[("x", x.view())], &mut []).unwrap_err();
    assert!(err.to_string().contains("1 outputs, 0 buffers"), "{err}");
}

#[test]
fn memory_use_splits_what_a_run_holds_by_owner() {
    let model = Model::from_bytes(&digits_morsel_bytes()).unwrap();
    let x = npy(&digits_dir().join("sample_input.npy"));
    let mut s = model.session(Options::default());
    let planned = s
        .plan(std::slice::from_ref(&x.dims))
        .unwrap()
        .activation_bytes();
    assert_eq!(s.memory().activations, 0, "nothing is held before a run");
    s.run(&[("x", x.view())]).unwrap();
    let m = s.memory();
    // The slots are allocated exactly as planned.
    assert_eq!(m.activations, planned);
    assert_eq!(s.held_bytes(), m.activations + m.session_scratch);
    // Conv packs im2col panels in the kernels' per-thread scratch: counted
    // there (process-wide, so other tests' threads may add to it).
    assert!(m.kernel_scratch > 0);
    assert_eq!(
        m.total(),
        m.activations + m.session_scratch + m.kernel_scratch + m.prepared_weights
    );
}
