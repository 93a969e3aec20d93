//! Real models end to end, compared with ONNX Runtime: all-MiniLM-L6-v2
//! (sentence embeddings) and PP-OCRv4 det + rec and the PP-OCR mobile v2.0
//! angle classifier. Each is imported from ONNX, written to `.morsel` bytes,
//! read back and run on the fixture inputs; the references are ORT's outputs
//! on the same inputs.
//!
//! The fixtures (~300 MB, git-ignored) live in `target/models/` (or
//! `$MORSEL_MODELS_DIR`) and are made by `make models` (tests/models/README.md).
//! When they are missing these tests fail and say so: they never pass
//! without having run.

mod common;

use std::path::Path;

use common::*;
use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::{Model, Options, Tensor};

/// Import the ONNX file and go through the `.morsel` bytes, as users do.
fn load(onnx: &Path) -> Model {
    let g = morsel::compress::convert(onnx)
        .unwrap_or_else(|e| panic!("importing {}: {e:#}", onnx.display()));
    let bytes = to_bytes(&g, FloatStorage::F32).expect("serialise to .morsel");
    Model::from_bytes(&bytes).expect("read the .morsel bytes back")
}

fn input<'a>(data: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &data
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("the fixture inputs have no '{name}'"))
        .1
}

fn options() -> Options {
    Options {
        threads: 2,
        ..Options::default()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

// ---------------------------------------------------------------- MiniLM

/// Run MiniLM on one input file and compare both outputs with ORT's:
/// `sentence_embedding` by cosine per sentence, `last_hidden_state` by max
/// abs diff at real tokens (padding positions are well defined but differ
/// more between implementations; tests/models/README.md).
fn check_minilm(model: &Model, session: &mut morsel::Session, inputs: &str, refs: &str) {
    let data = npz(&fixture(&format!("minilm/{inputs}.npz")));
    let names = ["input_ids", "attention_mask", "token_type_ids"];
    let feeds: Vec<(&str, _)> = names.iter().map(|&n| (n, input(&data, n).view())).collect();
    let out = session.run(&feeds).expect("run MiniLM");
    let g = model.graph();
    let out_names: Vec<&str> = g
        .outputs
        .iter()
        .map(|&o| g.values[o].name.as_str())
        .collect();
    assert_eq!(out_names, ["last_hidden_state", "sentence_embedding"]);

    let mask = input(&data, "attention_mask").to_i64_vec().unwrap();
    let ref_hidden = npy(&fixture(&format!("minilm/{refs}last_hidden_state.npy")));
    let ref_emb = npy(&fixture(&format!("minilm/{refs}sentence_embedding.npy")));
    assert_eq!(out[0].dims, ref_hidden.dims, "last_hidden_state shape");
    assert_eq!(out[1].dims, ref_emb.dims, "sentence_embedding shape");
    let hidden = out[0].to_f32_vec().unwrap();
    let want = ref_hidden.to_f32_vec().unwrap();
    let width = *ref_hidden.dims.last().unwrap();
    let mut diff = 0f32;
    for (t, &m) in mask.iter().enumerate() {
        if m != 0 {
            let (a, b) = (&hidden[t * width..][..width], &want[t * width..][..width]);
            diff = diff.max(max_abs_diff(a, b));
        }
    }
    assert!(
        diff <= 1e-4,
        "{inputs}: last_hidden_state max |diff| at real tokens {diff:e} vs ONNX Runtime"
    );
    let emb = out[1].to_f32_vec().unwrap();
    let want = ref_emb.to_f32_vec().unwrap();
    let dim = ref_emb.dims[1];
    for (s, (a, b)) in emb.chunks(dim).zip(want.chunks(dim)).enumerate() {
        let c = cosine(a, b);
        assert!(
            c >= 0.9999,
            "{inputs}: sentence {s}: cosine {c} with ONNX Runtime's embedding"
        );
    }
    println!(
        "MiniLM {inputs}: last_hidden_state max |diff| at real tokens {diff:.3e}, \
         sentence_embedding max |diff| {:.3e}",
        max_abs_diff(&emb, &want)
    );
}

#[test]
fn minilm_matches_onnx_runtime() {
    let model = load(&fixture("minilm/model.onnx"));
    let mut s = model.session(options());
    // all 32 sentences, then one sentence: a second plan in the same session
    check_minilm(&model, &mut s, "inputs", "ref_");
    check_minilm(&model, &mut s, "inputs_b1", "ref_b1_");
}

// ---------------------------------------------------------------- PP-OCR

fn check_ocr(onnx: &str, what: &str) {
    let model = load(&fixture(&format!("ocr/{onnx}")));
    let data = npz(&fixture(&format!("ocr/{what}_inputs.npz")));
    let reference = npy(&fixture(&format!("ocr/ref_{what}.npy")));
    let g = model.graph();
    let name = g.values[g.inputs[0]].name.clone();
    let mut s = model.session(options());
    let out = s.run(&[(&name, input(&data, "x").view())]).expect("run");
    assert_eq!(out[0].dims, reference.dims, "{what}: output shape");
    let diff = max_abs_diff(
        &out[0].to_f32_vec().unwrap(),
        &reference.to_f32_vec().unwrap(),
    );
    println!("PP-OCR {what}: max |diff| {diff:.3e}");
    assert!(diff <= 1e-3, "{what}: max |diff| {diff:e} vs ONNX Runtime");
}

#[test]
fn ppocr_det_matches_onnx_runtime() {
    check_ocr("ch_PP-OCRv4_det_infer.onnx", "det");
}

#[test]
fn ppocr_rec_matches_onnx_runtime() {
    check_ocr("ch_PP-OCRv4_rec_infer.onnx", "rec");
}

#[test]
fn ppocr_cls_matches_onnx_runtime() {
    check_ocr("ch_ppocr_mobile_v2.0_cls_infer.onnx", "cls");
}

// ---------------------------------------------------------------- training

/// Distillation runs on MiniLM's graph (LayerNormalization, the masked mean
/// pooling's Expand / ReduceSum, ReduceL2, attention's batched MatMuls): the
/// training interpreter's forward pass equals the runtime's on held-out
/// sentences, and a few steps of repair on a 50%-magnitude-pruned copy
/// lower its loss on sentences it did not train on. (The full repair, 50%
/// of FFN neurons removed and 6,000 sentences, is in the README: it takes
/// minutes.)
#[test]
fn minilm_trains_on_the_ir() {
    use morsel::compress::distill::{
        DistillOptions, Loss, distill, forward_tensors, load_transfer, teacher_outputs,
    };
    use morsel::compress::measure::rows;
    use morsel::compress::prune::{PruneOptions, prune_magnitude};
    use morsel::compress::train::Student;

    let teacher = morsel::compress::convert(&fixture("minilm/model.onnx")).unwrap();
    let mut pruned = teacher.clone();
    prune_magnitude(
        &mut pruned,
        &PruneOptions {
            ratio: 0.5,
            global: false,
            ends: None,
            overrides: vec![],
        },
    )
    .unwrap();

    // forward: 8 held-out sentences, interpreter vs runtime, on the pruned graph
    let held = load_transfer(&fixture("minilm/heldout.npz"), &teacher).unwrap();
    let eight: Vec<Tensor> = held.inputs.iter().map(|t| rows(t, 0, 8).unwrap()).collect();
    let student = Student::new(pruned.clone()).unwrap();
    let ours = forward_tensors(&student, &eight).unwrap();
    let m = Model::from_graph(pruned).unwrap();
    let names = ["input_ids", "attention_mask", "token_type_ids"];
    let feeds: Vec<(&str, _)> = names
        .iter()
        .zip(&eight)
        .map(|(&n, t)| (n, t.view()))
        .collect();
    let want = m.run(&feeds).unwrap();
    for (k, what) in ["last_hidden_state", "sentence_embedding"]
        .iter()
        .enumerate()
    {
        assert_eq!(ours[k].dims, want[k].dims, "{what}");
        let d = max_abs_diff(
            &ours[k].to_f32_vec().unwrap(),
            &want[k].to_f32_vec().unwrap(),
        );
        println!("MiniLM pruned, training forward vs runtime: {what} max |diff| {d:.2e}");
        assert!(d <= 2e-4, "{what}: max |diff| {d}");
    }

    // a few steps: 48 sentences to train on, 16 to validate on
    let transfer = load_transfer(&fixture("minilm/transfer.npz"), &teacher).unwrap();
    let data = morsel::compress::distill::TransferSet {
        inputs: transfer
            .inputs
            .iter()
            .map(|t| rows(t, 0, 64).unwrap())
            .collect(),
        labels: None,
        n: 64,
    };
    let t = teacher_outputs(&Model::from_graph(teacher).unwrap(), &data, 64, 2).unwrap();
    let o = DistillOptions {
        epochs: 3,
        batch: 16,
        lr: 3e-4,
        loss: Loss::Cosine,
        val_fraction: 0.25,
        patience: None,
        // padding tokens' hidden states do not count (`--loss-mask attention_mask`)
        loss_mask: Some(1),
        progress: false,
        ..DistillOptions::default()
    };
    let report = distill(&student, &data, &t, &o).unwrap();
    let before = report.initial.unwrap().loss;
    let after = report.history.last().unwrap().val.unwrap().loss;
    println!(
        "MiniLM pruned 50%: validation cosine loss {before:.4} -> {after:.4} after 3 epochs of 48"
    );
    assert!(after < 0.8 * before, "{before} -> {after}");
}
