//! Criterion benches of `Session::run` on the real models, one thread:
//! all-MiniLM-L6-v2 at batch 1 × 128 tokens and PP-OCR det 1×3×640×640,
//! rec 1×3×48×320 and cls 1×3×48×192 (the first image of each fixture).
//!
//! ```sh
//! cargo bench --bench models                  # all four
//! cargo bench --bench models -- minilm        # criterion's name filter
//! MORSEL_BENCH_THREADS=2 cargo bench --bench models
//! ```
//!
//! The models are imported from `target/models/` (or `$MORSEL_MODELS_DIR`,
//! made by `make models`) through `morsel_compress::load_any` each time, so
//! the numbers always reflect the current import passes and kernels (a
//! `.morsel` in `target/bench/` could be stale). A missing model is reported
//! and skipped. `benches/side_by_side.py` (`make bench`) sets the same cases
//! beside ONNX Runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use morsel::compress::{load_any, npy};
use morsel::{Model, Options, Tensor, TensorRef};

struct Case {
    name: &'static str,
    onnx: &'static str,
    inputs: &'static str,
    /// Keep only the first image of a batch of inputs.
    first_only: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "minilm_1x128",
        onnx: "minilm/model.onnx",
        inputs: "minilm/inputs_b1.npz",
        first_only: false,
    },
    Case {
        name: "ocr_det_1x3x640x640",
        onnx: "ocr/ch_PP-OCRv4_det_infer.onnx",
        inputs: "ocr/det_inputs.npz",
        first_only: true,
    },
    Case {
        name: "ocr_rec_1x3x48x320",
        onnx: "ocr/ch_PP-OCRv4_rec_infer.onnx",
        inputs: "ocr/rec_inputs.npz",
        first_only: true,
    },
    Case {
        name: "ocr_cls_1x3x48x192",
        onnx: "ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        inputs: "ocr/cls_inputs.npz",
        first_only: true,
    },
];

fn models_dir() -> PathBuf {
    std::env::var_os("MORSEL_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/models"))
}

/// The model and its inputs by name (only the arrays the model takes), or why not.
fn load(case: &Case) -> Result<(Model, Vec<(String, Tensor)>), String> {
    let dir = models_dir();
    let (onnx, inputs) = (dir.join(case.onnx), dir.join(case.inputs));
    for p in [&onnx, &inputs] {
        if !p.exists() {
            return Err(format!(
                "{} is missing (run `make models` first)",
                p.display()
            ));
        }
    }
    let model = load_any(&onnx).map_err(|e| format!("{}: {e:#}", onnx.display()))?;
    let g = model.graph();
    let data = npy::read_npz(&inputs)
        .map_err(|e| format!("{}: {e:#}", inputs.display()))?
        .into_iter()
        .filter(|(n, _)| g.inputs.iter().any(|&i| g.values[i].name == *n))
        .map(|(n, l)| (n, l.tensor))
        .collect();
    Ok((model, data))
}

fn bench_models(c: &mut Criterion) {
    let threads: usize = std::env::var("MORSEL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for case in &CASES {
        let (model, data) = match load(case) {
            Ok(x) => x,
            Err(why) => {
                eprintln!("note: skipping {}: {why}", case.name);
                continue;
            }
        };
        // Dims of the sliced inputs live here so the views can borrow them.
        let dims: Vec<Vec<usize>> = data
            .iter()
            .map(|(_, t)| {
                let mut d = t.dims.clone();
                if case.first_only && !d.is_empty() {
                    d[0] = d[0].min(1);
                }
                d
            })
            .collect();
        let feeds: Vec<(&str, TensorRef<'_>)> = data
            .iter()
            .zip(&dims)
            .map(|((n, t), d)| {
                let len = d.iter().product::<usize>() * t.dtype.size();
                let data = &t.data.as_bytes()[..len];
                (
                    n.as_str(),
                    TensorRef {
                        dtype: t.dtype,
                        dims: d,
                        data,
                    },
                )
            })
            .collect();
        let mut session = model.session(Options {
            threads,
            ..Options::default()
        });
        if let Err(e) = session.run(&feeds) {
            eprintln!("note: skipping {}: the first run failed: {e}", case.name);
            continue;
        }
        let mut group = c.benchmark_group("models");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(8));
        group.bench_function(format!("{}/threads={threads}", case.name), |b| {
            b.iter(|| std::hint::black_box(session.run(&feeds).expect("run")))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_models);
criterion_main!(benches);
