//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use morsel::compress::npy;
use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::runtime::graph::{Attr, Attrs, Graph, Node};
use morsel::runtime::ops::op_id;
use morsel::runtime::tensor::Dim;
use morsel::{DType, Tensor};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn digits_dir() -> PathBuf {
    repo().join("examples/digits")
}

/// The bundled digits CNN, imported from ONNX and serialised to .morsel bytes.
pub fn digits_morsel_bytes() -> Vec<u8> {
    let g = morsel::compress::convert(&digits_dir().join("digits_cnn.onnx"))
        .expect("import digits_cnn.onnx");
    to_bytes(&g, FloatStorage::F32).expect("serialise")
}

pub fn npy(path: &Path) -> Tensor {
    npy::read_npy(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .tensor
}

pub fn npz(path: &Path) -> Vec<(String, Tensor)> {
    npy::read_npz(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|(k, l)| (k, l.tensor))
        .collect()
}

/// Share of rows of `logits` (`classes` per row) whose argmax is the label.
pub fn accuracy(logits: &[f32], labels: &[i64], classes: usize) -> f64 {
    let pred = morsel::compress::measure::argmax_rows(logits, classes);
    assert_eq!(pred.len(), labels.len(), "one label per row of logits");
    let ok = pred
        .iter()
        .zip(labels)
        .filter(|(p, y)| **p as i64 == **y)
        .count();
    ok as f64 / labels.len().max(1) as f64
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Where `make models` puts the real-model fixtures (`MORSEL_MODELS_DIR` overrides).
pub fn models_dir() -> PathBuf {
    std::env::var_os("MORSEL_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/models"))
}

/// A real-model fixture file, or a failure that says how to make it.
pub fn fixture(rel: &str) -> PathBuf {
    let p = models_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make models` to fetch the real-model fixtures and make their \
         ONNX Runtime references (tests/models/README.md)",
        p.display()
    );
    p
}

/// A small deterministic generator (an LCG) for test data: values in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// An f32 tensor of these dims and values.
pub fn t(dims: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_slice(dims, v).unwrap()
}

/// An embedding lookup then a dense layer: `ids` (i64 `[2, 5]`) →
/// `Gather(table [vocab, width])` → `MatMul(W [width, n])` with a bias and a
/// fused GELU → `y` (`[2, 5, n]`); random weights from `rng`.
pub fn embedding_and_dense(rng: &mut Rng, vocab: usize, width: usize, n: usize) -> Graph {
    let mut g = Graph::default();
    let ids = g.add_value("ids", DType::I64, vec![Dim::Known(2), Dim::Known(5)]);
    g.inputs.push(ids);
    let table = g.add_const("table", t(&[vocab, width], &rng.vec(vocab * width)));
    let w = g.add_const("w", t(&[width, n], &rng.vec(width * n)));
    let b = g.add_const("b", t(&[n], &rng.vec(n)));
    let e = g.add_value("e", DType::F32, vec![]);
    let y = g.add_value("y", DType::F32, vec![]);
    g.nodes.push(Node {
        name: "embed".into(),
        op: op_id("Gather").unwrap(),
        attrs: Attrs::new(),
        inputs: vec![Some(table), Some(ids)],
        outputs: vec![e],
    });
    let mut gelu = Attrs::new();
    gelu.set("activation", Attr::Str("gelu".into()));
    g.nodes.push(Node {
        name: "dense".into(),
        op: op_id("MatMul").unwrap(),
        attrs: gelu,
        inputs: vec![Some(e), Some(w), Some(b)],
        outputs: vec![y],
    });
    g.outputs.push(y);
    g.infer_shapes().unwrap();
    g
}
