//! ONNX backend node tests, through the path users take: import → write
//! `.morsel` → read → run, compared with the outputs ONNX's reference
//! implementation computed (tests/conformance/generate.py writes them).
//!
//! `tests/conformance/allowlist.txt` lists the tests expected to pass: this
//! test fails if one of them fails. Every other test of an op Morsel
//! supports is listed in `tests/conformance/excluded.txt` with the reason.
//! `MORSEL_CONFORMANCE_UPDATE=1 cargo test --test conformance` rewrites both
//! files from the current results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use morsel::runtime::format::writer::{FloatStorage, to_bytes};
use morsel::runtime::ops::REGISTRY;
use morsel::{DType, Model, Tensor};

fn data_dir() -> PathBuf {
    std::env::var_os("MORSEL_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/onnx-node-tests"))
}

fn list_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(name)
}

/// Run one node test; Ok(()) when every output matches.
fn run_case(dir: &Path) -> Result<(), String> {
    let g = morsel::compress::onnx::load(&dir.join("model.onnx")).map_err(|e| format!("{e:#}"))?;
    let bytes = to_bytes(&g, FloatStorage::F32).map_err(|e| e.to_string())?;
    let model = Model::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let ds = dir.join("test_data_set_0");
    let read = |kind: &str| -> Result<Vec<(String, Tensor)>, String> {
        let mut v = Vec::new();
        for j in 0.. {
            let p = ds.join(format!("{kind}_{j}.pb"));
            if !p.exists() {
                break;
            }
            v.push(
                morsel::compress::onnx::read_tensor_pb(&p)
                    .map_err(|e| format!("{kind} {j}: {e:#}"))?,
            );
        }
        Ok(v)
    };
    let inputs = read("input")?;
    let expected = read("output")?;
    let gi = &model.graph().inputs;
    // Inputs in the data set follow the graph's declared inputs, which may
    // include initializers; feed by the model's input names in order.
    let names: Vec<String> = gi
        .iter()
        .map(|&i| model.graph().values[i].name.clone())
        .collect();
    let mut feeds = Vec::new();
    for (k, (pb_name, t)) in inputs.iter().enumerate() {
        let name = if names.contains(pb_name) {
            pb_name.clone()
        } else {
            names.get(k).cloned().unwrap_or_default()
        };
        if names.contains(&name) {
            feeds.push((name, t.clone()));
        }
    }
    let refs: Vec<(&str, _)> = feeds.iter().map(|(n, t)| (n.as_str(), t.view())).collect();
    let outs = model.run(&refs).map_err(|e| e.to_string())?;
    if outs.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            outs.len(),
            expected.len()
        ));
    }
    for (k, (got, (_, want))) in outs.iter().zip(&expected).enumerate() {
        compare(got, want).map_err(|e| format!("output {k}: {e}"))?;
    }
    Ok(())
}

fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dims != want.dims {
        return Err(format!("shape {:?}, expected {:?}", got.dims, want.dims));
    }
    if got.dtype != want.dtype {
        return Err(format!("dtype {}, expected {}", got.dtype, want.dtype));
    }
    match got.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            let (a, b) = (
                got.to_f32_vec().map_err(|e| e.to_string())?,
                want.to_f32_vec().map_err(|e| e.to_string())?,
            );
            let (rtol, atol) = if got.dtype == DType::F32 {
                (1e-3, 1e-5)
            } else {
                (1e-2, 1e-3)
            };
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let ok =
                    (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * y.abs();
                if !ok {
                    return Err(format!("element {i}: {x}, expected {y}"));
                }
            }
        }
        _ => {
            if got.data.as_bytes() != want.data.as_bytes() {
                return Err("integer/bool values differ".into());
            }
        }
    }
    Ok(())
}

fn read_list(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(list_file(name)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('#') {
            Some((n, why)) => (n.trim().to_string(), why.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect()
}

#[test]
fn onnx_backend_node_tests() {
    let dir = data_dir();
    let index = std::fs::read_to_string(dir.join("index.tsv")).unwrap_or_else(|_| {
        panic!(
            "{}/index.tsv is missing: generate the tests with `.venv/bin/python tests/conformance/generate.py {}` (make test does)",
            dir.display(),
            dir.display()
        )
    });
    let supported: BTreeSet<&str> = REGISTRY.iter().map(|d| d.name).collect();
    let allow = read_list("allowlist.txt");
    let excluded = read_list("excluded.txt");

    let mut per_op: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut results: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    let mut regressions = Vec::new();
    let mut unlisted = Vec::new();
    for line in index.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(op)) = (f.next(), f.next()) else {
            continue;
        };
        if !supported.contains(op) {
            continue;
        }
        let case = dir.join(name);
        let r = std::panic::catch_unwind(|| run_case(&case)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("PANIC: {}", msg.unwrap_or_default()))
        });
        let e = per_op.entry(op.to_string()).or_default();
        e.1 += 1;
        if r.is_ok() {
            e.0 += 1;
        }
        if let Err(msg) = &r
            && (allow.contains_key(name) || msg.starts_with("PANIC"))
        {
            regressions.push(format!("{name}: {msg}"));
        }
        if !allow.contains_key(name) && !excluded.contains_key(name) {
            unlisted.push(name.to_string());
        }
        results.insert(name.to_string(), r);
    }

    let (mut pass, mut total) = (0, 0);
    println!("{:<24} {:>6} {:>6}", "op", "pass", "total");
    for (op, (p, t)) in &per_op {
        println!("{op:<24} {p:>6} {t:>6}");
        pass += p;
        total += t;
    }
    println!("{:<24} {pass:>6} {total:>6}", "TOTAL");

    if std::env::var_os("MORSEL_CONFORMANCE_UPDATE").is_some() {
        let mut a = String::from(
            "# ONNX node tests expected to pass (MORSEL_CONFORMANCE_UPDATE=1 rewrites this).\n",
        );
        let mut x =
            String::from("# Node tests of supported ops that do not pass, with the reason.\n");
        for (name, r) in &results {
            match r {
                Ok(()) => a.push_str(&format!("{name}\n")),
                Err(e) => {
                    // drop the "importing <path>: " prefix; keep the cause on one line
                    let e = match e.split_once("model.onnx: ") {
                        Some((_, rest)) => rest,
                        None => e.as_str(),
                    };
                    let why: String = e
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .chars()
                        .take(240)
                        .collect();
                    x.push_str(&format!("{name}  # {why}\n"));
                }
            }
        }
        std::fs::write(list_file("allowlist.txt"), a).unwrap();
        std::fs::write(list_file("excluded.txt"), x).unwrap();
        println!("rewrote allowlist.txt and excluded.txt");
        return;
    }
    let newly_passing: Vec<&String> = results
        .iter()
        .filter(|(n, r)| r.is_ok() && !allow.contains_key(*n))
        .map(|(n, _)| n)
        .collect();
    if !newly_passing.is_empty() {
        println!(
            "{} tests pass but are not on the allowlist (MORSEL_CONFORMANCE_UPDATE=1 adds them)",
            newly_passing.len()
        );
    }
    if let Some(filter) = std::env::var_os("MORSEL_CONFORMANCE_SHOW") {
        let filter = filter.to_string_lossy().into_owned();
        for (name, r) in &results {
            if let Err(e) = r
                && name.contains(&filter)
            {
                println!("{name}: {e}");
            }
        }
    }
    assert!(
        regressions.is_empty(),
        "{} allowlisted tests failed (or panicked):\n{}",
        regressions.len(),
        regressions.join("\n")
    );
    assert!(
        unlisted.is_empty(),
        "{} tests of supported ops are on neither list, e.g. {:?}",
        unlisted.len(),
        &unlisted[..unlisted.len().min(10)]
    );
    assert!(pass > 0, "no conformance test passed");
}
