//! Opening a large .morsel maps it: weights stay in the page cache and are
//! used in place, so the process's private (anonymous) memory grows by far
//! less than the file. Alone in its own test binary so no other test's
//! allocations blur the measurement.

use morsel::runtime::format::writer::{FloatStorage, to_bytes, write_atomic};
use morsel::runtime::graph::{Graph, Node};
use morsel::runtime::ops::op_id;
use morsel::runtime::tensor::{Dim, Tensor};
use morsel::{DType, Model, Options, TensorRef};

/// Anonymous memory of this process in bytes (Linux smaps_rollup).
fn anon_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").expect("smaps_rollup");
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("Anonymous:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("Anonymous line");
    kb * 1024
}

#[test]
fn opening_a_64mb_model_does_not_copy_its_weights() {
    // y = relu(x · W1) · W2 with 2 × 32 MiB of f32 weights
    let (k, n) = (2048usize, 4096usize);
    let mut g = Graph::default();
    let x = g.add_value("x", DType::F32, vec![Dim::Sym("N".into()), Dim::Known(k)]);
    g.inputs.push(x);
    let w1: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    let w2: Vec<f32> = (0..n * k).map(|i| ((i % 7) as f32 - 3.0) * 1e-3).collect();
    let w1 = g.add_const("w1", Tensor::from_slice(&[k, n], &w1).unwrap());
    let w2 = g.add_const("w2", Tensor::from_slice(&[n, k], &w2).unwrap());
    let h = g.add_value("h", DType::F32, vec![]);
    let r = g.add_value("r", DType::F32, vec![]);
    let y = g.add_value("y", DType::F32, vec![]);
    let node = |name: &str, op: &str, inputs: Vec<usize>, out: usize| Node {
        name: name.into(),
        op: op_id(op).unwrap(),
        attrs: Default::default(),
        inputs: inputs.into_iter().map(Some).collect(),
        outputs: vec![out],
    };
    g.nodes.push(node("mm1", "MatMul", vec![x, w1], h));
    g.nodes.push(node("relu", "Relu", vec![h], r));
    g.nodes.push(node("mm2", "MatMul", vec![r, w2], y));
    g.outputs.push(y);
    g.infer_shapes().unwrap();
    let bytes = to_bytes(&g, FloatStorage::F32).unwrap();
    let file_len = bytes.len() as u64;
    assert!(file_len >= 64 << 20);
    let dir = std::env::temp_dir().join(format!("morsel-zero-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.morsel");
    write_atomic(&path, &bytes).unwrap();
    drop(bytes);
    drop(g);

    let before = anon_bytes();
    let model = Model::open(&path).unwrap();
    let mut s = model.session(Options::default());
    let input = vec![0.5f32; k];
    let out = s
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::F32,
                dims: &[1, k],
                data: morsel::runtime::bytemuck::cast_slice(&input),
            },
        )])
        .unwrap();
    assert_eq!(out[0].dims, vec![1, k]);
    let grown = anon_bytes().saturating_sub(before);
    eprintln!("file {file_len} bytes; anonymous memory grew by {grown} bytes after open + run");
    assert!(
        grown < file_len / 10,
        "anonymous memory grew by {grown} bytes for a {file_len}-byte file"
    );
    // Many rows would make MatMul pack its weights (a private copy) unless
    // the session says not to.
    let rows = 64;
    let mut s = model.session(Options {
        pack_weights: false,
        ..Options::default()
    });
    let input = vec![0.5f32; rows * k];
    let out = s
        .run(&[(
            "x",
            TensorRef {
                dtype: DType::F32,
                dims: &[rows, k],
                data: morsel::runtime::bytemuck::cast_slice(&input),
            },
        )])
        .unwrap();
    assert_eq!(out[0].dims, vec![rows, k]);
    let grown = anon_bytes().saturating_sub(before);
    eprintln!("{rows} rows, pack_weights off: anonymous memory grew by {grown} bytes");
    assert!(
        grown < file_len / 10,
        "anonymous memory grew by {grown} bytes for a {file_len}-byte file"
    );
    std::fs::remove_dir_all(&dir).ok();
}
