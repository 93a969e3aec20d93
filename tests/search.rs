//! Compression to an accuracy budget (compress/src/search.rs) on the bundled
//! digits CNN, with small grids: the model written really is within the
//! budget (its accuracy recomputed here from the file), the frontier is
//! Pareto, per-class counts add up to the overall accuracy, distillation
//! repair runs on configurations that missed, and a budget nothing meets is
//! an error that says what came closest.
//!
//! `cargo test --test search`

mod common;

use std::path::PathBuf;

use common::*;
use morsel::compress::distill::{DistillOptions, transfer_from_arrays};
use morsel::compress::measure::{argmax_rows, run_batched};
use morsel::compress::search::{
    Repair, SearchOptions, SearchResult, Target, pareto, parse_drop, per_class, run_cli, search,
};
use morsel::runtime::graph::Graph;
use morsel::{Model, Tensor};

fn digits() -> Graph {
    morsel::compress::convert(&digits_dir().join("digits_cnn.onnx")).unwrap()
}

/// The test split: the input by the model's input name, and the labels.
fn test_split(g: &Graph) -> (Vec<(String, Tensor)>, Vec<i64>) {
    let name = g.values[g.inputs[0]].name.clone();
    let mut feed = Vec::new();
    let mut labels = Vec::new();
    for (k, t) in npz(&digits_dir().join("digits_test.npz")) {
        if k == "y" {
            labels = t.to_i64_vec().unwrap();
        } else {
            feed.push((name.clone(), t));
        }
    }
    (feed, labels)
}

/// Accuracy of a model, computed here (not by the search).
fn accuracy(m: &Model, feed: &[(String, Tensor)], labels: &[i64]) -> f64 {
    let (out, dims) = run_batched(m, feed, 128, 1).unwrap();
    let pred = argmax_rows(&out, dims[1]);
    let ok = pred
        .iter()
        .zip(labels)
        .filter(|(p, y)| **p as i64 == **y)
        .count();
    ok as f64 / labels.len() as f64
}

fn small_grid(max_drop: f64) -> SearchOptions {
    let mut o = SearchOptions::new(max_drop, Target::Size);
    o.prune = vec![0.0, 0.5, 0.8, 0.95];
    o.energies = vec![None, Some(0.9)];
    o.min_size = 0;
    o.latency_runs = 1;
    o
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("morsel-search-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn check_frontier(r: &SearchResult, target: Target) {
    let cost = |i: usize| {
        let c = &r.candidates[i];
        match target {
            Target::Size => c.file_bytes as f64,
            Target::Latency => c.latency_ms,
        }
    };
    assert!(!r.frontier.is_empty());
    for &f in &r.frontier {
        for j in 0..r.candidates.len() {
            let dominates = cost(j) <= cost(f)
                && r.candidates[j].accuracy >= r.candidates[f].accuracy
                && (cost(j) < cost(f) || r.candidates[j].accuracy > r.candidates[f].accuracy);
            assert!(
                !dominates,
                "frontier point {} is dominated by {}",
                r.candidates[f].config.label(),
                r.candidates[j].config.label()
            );
        }
    }
    // And every point left off is dominated by one on it.
    for i in (0..r.candidates.len()).filter(|i| !r.frontier.contains(i)) {
        assert!(
            r.frontier.iter().any(
                |&f| cost(f) <= cost(i) && r.candidates[f].accuracy >= r.candidates[i].accuracy
            ),
            "{} is off the frontier but not dominated",
            r.candidates[i].config.label()
        );
    }
}

#[test]
fn chosen_model_is_within_the_budget_and_the_report_adds_up() {
    let g = digits();
    let (feed, labels) = test_split(&g);
    let o = small_grid(0.01);
    let (out, report) = (tmp("chosen.morsel"), tmp("report.svg"));
    let r = run_cli(&g, &feed, Some(&labels), &o, &out, Some(&report), true).unwrap();

    // The written file, measured here.
    let original = accuracy(&Model::from_graph(g.clone()).unwrap(), &feed, &labels);
    let written = Model::open(&out).unwrap();
    let acc = accuracy(&written, &feed, &labels);
    let chosen = &r.candidates[r.chosen.expect("something meets 1% on digits")];
    eprintln!(
        "original {:.4}, chosen {} {:.4} ({} bytes; {} candidates)",
        original,
        chosen.config.label(),
        acc,
        chosen.file_bytes,
        r.candidates.len()
    );
    assert!(
        original - acc <= 0.01 + 1e-12,
        "{original} -> {acc}: over the budget"
    );
    assert_eq!(acc, chosen.accuracy, "the file is the candidate measured");
    assert_eq!(original, r.original.accuracy);
    // The choice is the smallest within the budget.
    for c in &r.candidates {
        if original - c.accuracy <= 0.01 + 1e-12 {
            assert!(
                c.file_bytes >= chosen.file_bytes,
                "{} is smaller",
                c.config.label()
            );
        }
    }

    check_frontier(&r, Target::Size);
    assert!(r.frontier.contains(&r.chosen.unwrap()));

    // Per-class counts add up to the overall accuracy, for every candidate.
    for c in std::iter::once(&r.original).chain(&r.candidates) {
        let ok: usize = c.per_class.iter().map(|p| p.0).sum();
        let n: usize = c.per_class.iter().map(|p| p.1).sum();
        assert_eq!(n, labels.len());
        assert!((ok as f64 / n as f64 - c.accuracy).abs() < 1e-12);
    }
    let changes = r.class_changes();
    assert_eq!(
        changes.iter().map(|c| c.samples).sum::<usize>(),
        labels.len()
    );
    let weighted: f64 = changes
        .iter()
        .map(|c| c.after * c.samples as f64)
        .sum::<f64>()
        / labels.len() as f64;
    assert!((weighted - acc).abs() < 1e-9);
    for c in &changes {
        assert_eq!(c.flagged, c.before - c.after > 0.01 + 1e-12);
    }
    let j = r.to_json();
    assert_eq!(
        j["flagged_classes"].as_array().unwrap().len(),
        changes.iter().filter(|c| c.flagged).count()
    );
    let svg = std::fs::read_to_string(&report).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("chosen:") && svg.trim_end().ends_with("</svg>")
    );
}

#[test]
fn repair_runs_on_configurations_that_missed() {
    let g = digits();
    let (feed, labels) = test_split(&g);
    let mut o = small_grid(0.01);
    o.prune = vec![0.8, 0.9];
    o.energies = vec![None];
    o.int8 = false;
    let train = transfer_from_arrays(
        npz(&digits_dir().join("digits_train.npz")),
        &g,
        "digits_train.npz",
    )
    .unwrap();
    o.repair = Some(Repair {
        transfer: train,
        options: DistillOptions {
            epochs: 2,
            lr: 3e-3,
            progress: false,
            ..DistillOptions::default()
        },
        source: "digits_train.npz".into(),
        max_repairs: 1,
    });
    let r = search(&g, &feed, &labels, &o).unwrap();
    let unrepaired = r
        .candidates
        .iter()
        .find(|c| c.config.prune == 0.9 && !c.config.repaired)
        .unwrap();
    let repaired: Vec<_> = r.candidates.iter().filter(|c| c.config.repaired).collect();
    if r.original.accuracy - unrepaired.accuracy > 0.01 {
        assert_eq!(repaired.len(), 1, "prune 0.9 missed, so it is repaired");
        eprintln!(
            "prune 0.9: {:.4} -> {:.4} after 2 epochs",
            unrepaired.accuracy, repaired[0].accuracy
        );
    }
    check_frontier(&r, Target::Size);
    if let Some(i) = r.chosen {
        assert!(r.original.accuracy - r.candidates[i].accuracy <= 0.01 + 1e-12);
    }
}

#[test]
fn a_budget_nothing_meets_is_a_clear_error() {
    let g = digits();
    let (feed, labels) = test_split(&g);
    let mut o = small_grid(0.0);
    o.prune = vec![0.95];
    o.energies = vec![None];
    o.int8 = false;
    // Asking for 50 points *more* than the original: nothing can meet it.
    o.max_drop = -0.5;
    let out = tmp("none.morsel");
    let _ = std::fs::remove_file(&out);
    let e = run_cli(&g, &feed, Some(&labels), &o, &out, None, true)
        .err()
        .expect("nothing meets the budget");
    let msg = e.to_string();
    assert!(msg.contains("no candidate is within --max-drop"), "{msg}");
    assert!(msg.contains("the most accurate was"), "{msg}");
    assert!(!out.exists(), "no model is written");
    // Without labels there is nothing to measure.
    let e = run_cli(&g, &feed, None, &o, &out, None, true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("needs labels"), "{e}");
}

#[test]
fn pareto_and_parsing() {
    // Brute force on pseudo-random points, with ties.
    let mut s = 7u64;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        ((s >> 33) % 20) as f64
    };
    let pts: Vec<(f64, f64)> = (0..200).map(|_| (next(), next())).collect();
    let f = pareto(&pts);
    for i in 0..pts.len() {
        let dominated = pts
            .iter()
            .any(|&(c, a)| c <= pts[i].0 && a >= pts[i].1 && (c < pts[i].0 || a > pts[i].1));
        assert_eq!(f.contains(&i), !dominated, "point {i} {:?}", pts[i]);
    }
    assert!(f.windows(2).all(|w| pts[w[0]].0 <= pts[w[1]].0));

    assert_eq!(parse_drop("1%").unwrap(), 0.01);
    assert_eq!(parse_drop("0.5 %").unwrap(), 0.005);
    assert_eq!(parse_drop("0.02").unwrap(), 0.02);
    assert!(parse_drop("abc").is_err());
    assert!(parse_drop("150%").is_err());
    assert_eq!(
        per_class(&[0, 1, 1, 2], &[0, 1, 2, 2], 3),
        vec![(1, 1), (1, 1), (1, 2)]
    );
}
