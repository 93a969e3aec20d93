//! What a compression step bought and cost, measured: parameters, file
//! bytes, FLOPs, latency and agreement with the original on the user's data
//! (the before/after table `morsel compress` prints).

use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use morsel_runtime::graph::Graph;
use morsel_runtime::ops::op_name;
use morsel_runtime::tensor::{AlignedBuf, Blob, Tensor, known_shape};
use morsel_runtime::{DType, Model, Options};
use serde_json::{Value as Json, json};

/// Inputs by name.
pub type Feed = Vec<(String, Tensor)>;

/// Rows `[a, b)` of the leading dim.
pub fn rows(t: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    let per: usize = t.dims[1..].iter().product::<usize>() * t.dtype.size();
    let mut dims = t.dims.clone();
    dims[0] = b - a;
    Ok(Tensor::new(
        t.dtype,
        dims,
        Blob::owned(AlignedBuf::from_bytes(&t.data.as_bytes()[a * per..b * per])),
    )?)
}

/// Rows `[a, b)` of every input.
pub fn feed_rows(feed: &[(String, Tensor)], a: usize, b: usize) -> Result<Feed> {
    feed.iter()
        .map(|(k, t)| Ok((k.clone(), rows(t, a, b)?)))
        .collect()
}

/// The first `n` rows of every input.
pub fn head(feed: &Feed, n: usize) -> Result<Feed> {
    feed.iter()
        .map(|(k, t)| {
            let n = n.min(t.dims.first().copied().unwrap_or(1));
            Ok((k.clone(), rows(t, 0, n)?))
        })
        .collect()
}

/// Run `model` over the data in batches; returns the first output's rows as f32.
pub fn run_batched(
    model: &Model,
    data: &[(String, Tensor)],
    batch: usize,
    threads: usize,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let n = data
        .first()
        .map(|(_, t)| t.dims.first().copied().unwrap_or(1))
        .unwrap_or(0);
    let mut session = model.session(Options {
        threads,
        ..Options::default()
    });
    let mut all = Vec::new();
    let mut out_dims = Vec::new();
    let mut a = 0;
    while a < n {
        let b = (a + batch.max(1)).min(n);
        let chunk = feed_rows(data, a, b)?;
        let refs: Vec<(&str, _)> = chunk.iter().map(|(k, t)| (k.as_str(), t.view())).collect();
        let outs = session
            .run(&refs)
            .map_err(|e| anyhow!("rows {a}..{b}: {e}"))?;
        let o = outs.first().context("the model has no outputs")?;
        out_dims = o.dims.clone();
        all.extend(o.to_f32_vec()?);
        a = b;
    }
    if let Some(d) = out_dims.first_mut() {
        *d = n;
    }
    Ok((all, out_dims))
}

pub fn argmax_rows(v: &[f32], classes: usize) -> Vec<usize> {
    v.chunks(classes.max(1))
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (i, &x)| if x > m.1 { (i, x) } else { m },
                )
                .0
        })
        .collect()
}

/// Multiply-adds ×2 of the weight layers for inputs of these dims, counting
/// only nonzero weights (a pruned weight's zeros do no work in the sparse
/// kernel, and removed channels none at all), plus the products of two
/// activations (attention).
pub fn flops(g: &Graph, dims: &[(String, Vec<usize>)]) -> Result<u64> {
    let mut g = g.clone();
    for &i in &g.inputs.clone() {
        let name = g.values[i].name.clone();
        if let Some((_, d)) = dims.iter().find(|(n, _)| *n == name) {
            g.values[i].shape = known_shape(d);
        }
    }
    g.infer_shapes().map_err(|e| anyhow!("{e}"))?;
    let numel = |v: usize| -> u64 {
        g.values[v]
            .shape
            .iter()
            .map(|d| d.known().unwrap_or(1) as u64)
            .product()
    };
    let nnz = |t: &Tensor| -> u64 {
        match t.dtype {
            DType::F32 => {
                t.as_slice::<f32>()
                    .map_or(0, |s| s.iter().filter(|x| **x != 0.0).count()) as u64
            }
            DType::I8 => {
                t.as_slice::<i8>()
                    .map_or(0, |s| s.iter().filter(|x| **x != 0).count()) as u64
            }
            _ => t.numel() as u64,
        }
    };
    let mut total = 0u64;
    for n in &g.nodes {
        let op = op_name(n.op);
        let Some(&out) = n.outputs.first() else {
            continue;
        };
        // The weight: input 1, or 3 for the QLinear ops.
        let wi = if op.starts_with("QLinear") { 3 } else { 1 };
        let w = n
            .inputs
            .get(wi)
            .copied()
            .flatten()
            .and_then(|w| g.values[w].konst.as_ref());
        let macs = match (op, w) {
            ("MatMul" | "QMatMul" | "QLinearMatMul" | "Gemm", Some(w)) if w.dims.len() == 2 => {
                let n_out = if op == "Gemm" && n.attrs.int("transB", 0).unwrap_or(0) != 0 {
                    w.dims[0]
                } else {
                    w.dims[1]
                };
                numel(out) / n_out.max(1) as u64 * nnz(w)
            }
            ("Conv" | "QConv" | "QLinearConv", Some(w)) if w.dims.len() >= 3 => {
                // Each output position of each output channel uses that
                // channel's weights once.
                numel(out) / w.dims[0].max(1) as u64 * nnz(w)
            }
            ("ConvTranspose", Some(w)) if w.dims.len() >= 3 => {
                let x = n.inputs[0].map_or(0, numel);
                x / w.dims[0].max(1) as u64 * nnz(w)
            }
            ("MatMul", None) => {
                let a = n.inputs[0].map(|a| &g.values[a].shape);
                let k = a
                    .and_then(|s| s.last())
                    .and_then(|d| d.known())
                    .unwrap_or(0);
                numel(out) * k as u64
            }
            _ => 0,
        };
        total += 2 * macs;
    }
    Ok(total)
}

/// Median latency in ms of each model over `runs` runs (after 2 warm-ups
/// each), the models taking turns run by run so that a busy machine slows
/// them alike.
pub fn latencies(models: &[&Model], feed: &Feed, runs: usize, threads: usize) -> Result<Vec<f64>> {
    let mut sessions: Vec<_> = models
        .iter()
        .map(|m| {
            m.session(Options {
                threads,
                ..Options::default()
            })
        })
        .collect();
    let refs: Vec<(&str, _)> = feed.iter().map(|(n, t)| (n.as_str(), t.view())).collect();
    for s in &mut sessions {
        for _ in 0..2 {
            s.run(&refs).map_err(|e| anyhow!("{e}"))?;
        }
    }
    let mut times = vec![Vec::with_capacity(runs); sessions.len()];
    for _ in 0..runs.max(1) {
        for (s, t) in sessions.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            std::hint::black_box(s.run(&refs).map_err(|e| anyhow!("{e}"))?);
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

/// One column of the before/after table.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub label: String,
    /// Elements of the float and int8 constants.
    pub params: usize,
    pub nonzero_params: usize,
    pub file_bytes: usize,
    pub flops: Option<u64>,
    pub latency_ms: Option<f64>,
    /// Top-1 accuracy on the data's labels.
    pub accuracy: Option<f64>,
    /// Top-1 agreement with the original model.
    pub agreement: Option<f64>,
    /// Cosine of the first output vs the original, worst sample.
    pub min_cosine: Option<f64>,
}

impl Summary {
    /// The measures as JSON; ones not measured (no `--data`, no labels, a
    /// latency that could not be timed) are left out rather than `null`:
    /// this goes into every file's metadata, and a small model's file is a
    /// few KiB.
    pub fn to_json(&self) -> Json {
        let mut j = json!({"model": self.label, "params": self.params, "nonzero_params": self.nonzero_params,
               "file_bytes": self.file_bytes, "flops": self.flops, "latency_ms": self.latency_ms,
               "accuracy": self.accuracy, "agreement": self.agreement, "min_cosine": self.min_cosine});
        if let Some(m) = j.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        j
    }
}

/// Every float in `j` to 6 significant digits, for metadata stored in the
/// file: `0.9866666666666667` and `4744.439290107869` say no more than
/// `0.986667` and `4744.44`, and a small model's file is a few KiB.
pub fn round_floats(j: &mut Json) {
    match j {
        Json::Number(n) if n.is_f64() => {
            if let Some(x) = n.as_f64()
                && x.is_finite()
                && x != 0.0
            {
                let r: f64 = format!("{x:.5e}").parse().unwrap_or(x);
                if let Some(v) = serde_json::Number::from_f64(r) {
                    *n = v;
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(round_floats),
        Json::Object(o) => o.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// Print the table: one row per measure, one column per model.
pub fn print_table(cols: &[Summary]) {
    let fmt_opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        (
            "parameters",
            cols.iter().map(|c| c.params.to_string()).collect(),
        ),
        (
            "nonzero parameters",
            cols.iter().map(|c| c.nonzero_params.to_string()).collect(),
        ),
        (
            "file bytes",
            cols.iter().map(|c| c.file_bytes.to_string()).collect(),
        ),
        (
            "MFLOPs (nonzero weights)",
            cols.iter()
                .map(|c| fmt_opt(c.flops.map(|f| format!("{:.2}", f as f64 / 1e6))))
                .collect(),
        ),
        (
            "latency ms (median)",
            cols.iter()
                .map(|c| fmt_opt(c.latency_ms.map(|l| format!("{l:.3}"))))
                .collect(),
        ),
    ];
    if cols.iter().any(|c| c.accuracy.is_some()) {
        rows.push((
            "accuracy %",
            cols.iter()
                .map(|c| fmt_opt(c.accuracy.map(|a| format!("{:.2}", a * 100.0))))
                .collect(),
        ));
    }
    if cols.iter().any(|c| c.agreement.is_some()) {
        rows.push((
            "top-1 agreement %",
            cols.iter()
                .map(|c| fmt_opt(c.agreement.map(|a| format!("{:.2}", a * 100.0))))
                .collect(),
        ));
    }
    if cols.iter().any(|c| c.min_cosine.is_some()) {
        rows.push((
            "min sample cosine",
            cols.iter()
                .map(|c| fmt_opt(c.min_cosine.map(|a| format!("{a:.6}"))))
                .collect(),
        ));
    }
    print!("  {:<26}", "");
    for c in cols {
        print!(" {:>14}", c.label);
    }
    println!();
    for (name, vals) in rows {
        print!("  {name:<26}");
        for v in vals {
            print!(" {v:>14}");
        }
        println!();
    }
}

#[cfg(test)]
mod round_tests {
    use super::*;

    #[test]
    fn floats_keep_six_significant_digits_and_integers_stay() {
        let mut j = serde_json::json!({"a": 0.9866666666666667, "b": [4744.439290107869, 3, -1.5e-7],
            "c": {"d": 13.06686019897461, "e": 0.0, "f": 156032}});
        round_floats(&mut j);
        assert_eq!(
            j.to_string(),
            r#"{"a":0.986667,"b":[4744.44,3,-1.5e-7],"c":{"d":13.0669,"e":0.0,"f":156032}}"#
        );
    }
}
