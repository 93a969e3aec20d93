//! Compression to an accuracy budget (issue 6, items 4 and 5):
//! `morsel compress model.onnx --data val.npz --max-drop 1%` tries a grid of
//! magnitude-pruning ratios × low-rank energies × int8 (off, every layer, or
//! every layer but the sensitive ones), optionally repairs the smallest
//! configurations that missed the budget by distillation, measures every
//! candidate (file bytes, latency, top-1 accuracy and per-class accuracy on
//! the labelled data) and returns the smallest (or fastest) one whose
//! accuracy drop from the original is within the budget, with the Pareto
//! frontier of everything it tried and an SVG report.
//!
//! Per-class accuracy is reported because compression hurts some classes
//! more than the average shows (Hooker et al., "What do compressed deep
//! neural networks forget?", 2019): a class whose accuracy fell by more than
//! the budget is flagged even when the average is within it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use morsel_runtime::Model;
use morsel_runtime::format::writer::{FloatStorage, to_bytes, write_atomic};
use morsel_runtime::graph::Graph;
use serde_json::{Value as Json, json};

use crate::distill::{DistillOptions, TransferSet, distill, teacher_outputs};
use crate::lowrank::{self, LowRankOptions, Rank};
use crate::measure::{self, Feed, argmax_rows, run_batched};
use crate::prune::{self, PruneOptions};
use crate::quantize::{self, QuantOptions};
use crate::train::Student;

/// What the search minimises among the candidates within the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Size,
    Latency,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Size => "size",
            Target::Latency => "latency",
        }
    }
}

/// Distillation repair of configurations that missed the budget: the
/// cheapest ones (by the target) that could beat the best candidate within
/// it, skipping those at chance level.
pub struct Repair {
    pub transfer: TransferSet,
    pub options: DistillOptions,
    /// Where the transfer set came from (for the report).
    pub source: String,
    /// At most this many configurations are repaired (the smallest that missed).
    pub max_repairs: usize,
}

pub struct SearchOptions {
    /// Largest accepted accuracy drop, as a fraction (0.01 = one point).
    pub max_drop: f64,
    pub target: Target,
    /// Global magnitude-pruning ratios to try (0 = no pruning).
    pub prune: Vec<f32>,
    /// Low-rank energies to try (`None` = no factorization).
    pub energies: Vec<Option<f64>>,
    /// Try int8 (all layers, and all but the sensitive layers).
    pub int8: bool,
    /// Weights smaller than this stay f32 / full rank.
    pub min_size: usize,
    /// Rows per run when measuring accuracy.
    pub batch: usize,
    pub threads: usize,
    /// Runs the latency is the median of.
    pub latency_runs: usize,
    /// Rows of the data the latency is measured on.
    pub latency_batch: usize,
    pub repair: Option<Repair>,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl SearchOptions {
    /// The default grid: prune 0, 0.5..0.95; energy none, 0.99, 0.95, 0.9; int8.
    pub fn new(max_drop: f64, target: Target) -> SearchOptions {
        SearchOptions {
            max_drop,
            target,
            prune: vec![0.0, 0.5, 0.7, 0.8, 0.9, 0.95],
            energies: vec![None, Some(0.99), Some(0.95), Some(0.9)],
            int8: true,
            min_size: 4096,
            batch: 256,
            threads: 1,
            latency_runs: 20,
            latency_batch: 1,
            repair: None,
            progress: false,
        }
    }
}

/// How int8 was applied to a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Int8 {
    Off,
    All,
    /// Every quantizable layer but these (the sensitive ones).
    AllBut(Vec<String>),
}

/// One point of the search grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub prune: f32,
    pub energy: Option<f64>,
    pub repaired: bool,
    pub int8: Int8,
}

impl Config {
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if self.prune > 0.0 {
            parts.push(format!("prune {}", self.prune));
        }
        if let Some(e) = self.energy {
            parts.push(format!("rank {e}"));
        }
        if self.repaired {
            parts.push("kd".into());
        }
        match &self.int8 {
            Int8::Off => {}
            Int8::All => parts.push("int8".into()),
            Int8::AllBut(k) => parts.push(format!("int8-{}f32", k.len())),
        }
        if parts.is_empty() {
            "original".into()
        } else {
            parts.join(" + ")
        }
    }

    fn to_json(&self) -> Json {
        json!({"prune": (f64::from(self.prune) * 1e6).round() / 1e6, "low_rank_energy": self.energy, "distilled": self.repaired,
            "int8": match &self.int8 { Int8::Off => json!(false), Int8::All => json!("all"),
                Int8::AllBut(k) => json!({"keep_float": k}) }})
    }
}

/// A measured candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub config: Config,
    pub file_bytes: usize,
    pub latency_ms: f64,
    pub accuracy: f64,
    /// (correct, total) per class (class = label value).
    pub per_class: Vec<(usize, usize)>,
}

impl Candidate {
    fn cost(&self, t: Target) -> f64 {
        match t {
            Target::Size => self.file_bytes as f64,
            Target::Latency => self.latency_ms,
        }
    }

    fn to_json(&self, original: &Candidate) -> Json {
        json!({"label": self.config.label(), "config": self.config.to_json(),
            "file_bytes": self.file_bytes, "latency_ms": self.latency_ms, "accuracy": self.accuracy,
            "drop": original.accuracy - self.accuracy})
    }
}

/// Accuracy of the original with one layer int8 and the rest f32.
#[derive(Debug, Clone)]
pub struct Sensitivity {
    pub node: String,
    pub accuracy: f64,
    /// Drop from the original (fraction).
    pub drop: f64,
    /// Drop above half the budget: left f32 in the `int8-…f32` candidates.
    pub sensitive: bool,
}

/// One class before and after.
#[derive(Debug, Clone)]
pub struct ClassChange {
    pub class: usize,
    pub samples: usize,
    pub before: f64,
    pub after: f64,
    /// Lost more than the budget.
    pub flagged: bool,
}

pub struct SearchResult {
    pub original: Candidate,
    pub candidates: Vec<Candidate>,
    /// Indices into `candidates` of the Pareto frontier (cost of the target
    /// vs accuracy), cheapest first.
    pub frontier: Vec<usize>,
    /// Index into `candidates`, or `None` when nothing met the budget.
    pub chosen: Option<usize>,
    pub sensitivity: Vec<Sensitivity>,
    pub max_drop: f64,
    pub target: Target,
    pub samples: usize,
    pub repair_source: Option<String>,
    pub seconds: f64,
    /// The chosen model's graph (as measured).
    pub chosen_graph: Option<Graph>,
}

/// Top-1 correct / total per class, classes `0..classes`.
pub fn per_class(pred: &[usize], labels: &[i64], classes: usize) -> Vec<(usize, usize)> {
    let mut c = vec![(0, 0); classes];
    for (&p, &y) in pred.iter().zip(labels) {
        let Ok(y) = usize::try_from(y) else { continue };
        if y >= c.len() {
            c.resize(y + 1, (0, 0));
        }
        c[y].1 += 1;
        if p == y {
            c[y].0 += 1;
        }
    }
    c
}

/// The Pareto frontier of (cost, accuracy) points — lower cost and higher
/// accuracy are better: the points no other point dominates, by cost
/// ascending.
pub fn pareto(points: &[(f64, f64)]) -> Vec<usize> {
    let dominated = |i: usize| {
        let (ci, ai) = points[i];
        points
            .iter()
            .any(|&(c, a)| c <= ci && a >= ai && (c < ci || a > ai))
    };
    let mut f: Vec<usize> = (0..points.len()).filter(|&i| !dominated(i)).collect();
    f.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
    f
}

struct Eval<'a> {
    feed: &'a Feed,
    labels: &'a [i64],
    timing: Feed,
    o: &'a SearchOptions,
}

impl Eval<'_> {
    fn measure(&self, config: Config, g: &Graph) -> Result<Candidate> {
        let bytes = to_bytes(g, FloatStorage::F32).map_err(|e| anyhow!("{e}"))?;
        let model =
            Model::from_bytes(&bytes).map_err(|e| anyhow!("candidate {}: {e}", config.label()))?;
        let (out, dims) = run_batched(&model, self.feed, self.o.batch, self.o.threads)?;
        if dims.len() != 2 {
            bail!(
                "--max-drop needs a classifier: the first output is [{}], not [N, classes]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let pred = argmax_rows(&out, dims[1]);
        let per_class = per_class(&pred, self.labels, dims[1]);
        let ok: usize = per_class.iter().map(|c| c.0).sum();
        let latency_ms = if self.o.latency_runs > 0 {
            measure::latencies(&[&model], &self.timing, self.o.latency_runs, self.o.threads)?[0]
        } else {
            0.0
        };
        Ok(Candidate {
            config,
            file_bytes: bytes.len(),
            latency_ms,
            accuracy: ok as f64 / self.labels.len().max(1) as f64,
            per_class,
        })
    }
}

fn pruned_factorized(
    reference: &Graph,
    prune_ratio: f32,
    energy: Option<f64>,
    min_size: usize,
) -> Result<Option<Graph>> {
    let mut g = reference.clone();
    if prune_ratio > 0.0 {
        let o = PruneOptions {
            ratio: prune_ratio,
            global: true,
            ends: None,
            overrides: Vec::new(),
        };
        prune::prune_magnitude(&mut g, &o)?;
        quantize::add_recipe_step(&mut g, &format!("prune-magnitude({prune_ratio},global)"));
    }
    if let Some(e) = energy {
        let o = LowRankOptions {
            rank: Rank::Energy(e),
            skip: Vec::new(),
            min_size,
            input_stats: Default::default(),
            alpha: 0.5,
        };
        let r = lowrank::factorize(&mut g, &o)?;
        if r.factorized.is_empty() {
            // Same as the configuration without low-rank.
            return Ok(None);
        }
        quantize::add_recipe_step(&mut g, &format!("low-rank(energy {e})"));
    }
    Ok(Some(g))
}

fn with_int8(g: &Graph, int8: &Int8, min_size: usize) -> Result<Graph> {
    let mut g = g.clone();
    let keep_float = match int8 {
        Int8::Off => return Ok(g),
        Int8::All => Vec::new(),
        Int8::AllBut(k) => k.clone(),
    };
    quantize::quantize_dynamic(
        &mut g,
        &QuantOptions {
            keep_float,
            min_size,
            ..QuantOptions::default()
        },
    )?;
    quantize::add_recipe_step(&mut g, "quantize-int8-dynamic");
    Ok(g)
}

/// Run the search. `labels` are the classes of the rows of `feed`.
pub fn search(
    reference: &Graph,
    feed: &Feed,
    labels: &[i64],
    o: &SearchOptions,
) -> Result<SearchResult> {
    let started = Instant::now();
    let n = feed
        .first()
        .map(|(_, t)| t.dims.first().copied().unwrap_or(1))
        .unwrap_or(0);
    if labels.len() != n || n == 0 {
        bail!(
            "--max-drop needs labels: {} labels for {n} rows of data",
            labels.len()
        );
    }
    let say = |s: String| {
        if o.progress {
            eprintln!("{s}");
        }
    };
    let ev = Eval {
        feed,
        labels,
        timing: measure::head(feed, o.latency_batch)?,
        o,
    };
    let plain = Config {
        prune: 0.0,
        energy: None,
        repaired: false,
        int8: Int8::Off,
    };
    let original = ev.measure(plain.clone(), reference)?;
    let floor = original.accuracy - o.max_drop - 1e-12;

    // Per-layer int8 sensitivity: one layer int8 at a time.
    let mut sensitivity = Vec::new();
    if o.int8 {
        let mut probe = reference.clone();
        let r = quantize::quantize_dynamic(
            &mut probe,
            &QuantOptions {
                min_size: o.min_size,
                ..QuantOptions::default()
            },
        )?;
        let layers: Vec<String> = r.converted.iter().map(|c| c.node.clone()).collect();
        for l in &layers {
            let others: Vec<String> = layers.iter().filter(|k| *k != l).cloned().collect();
            let g = with_int8(reference, &Int8::AllBut(others), o.min_size)?;
            let c = ev.measure(plain.clone(), &g)?;
            let drop = original.accuracy - c.accuracy;
            say(format!(
                "int8 sensitivity {l}: accuracy {:.2}% (drop {:+.2} points)",
                100.0 * c.accuracy,
                100.0 * drop
            ));
            sensitivity.push(Sensitivity {
                node: l.clone(),
                accuracy: c.accuracy,
                drop,
                sensitive: drop > o.max_drop / 2.0,
            });
        }
    }
    let sensitive: Vec<String> = sensitivity
        .iter()
        .filter(|s| s.sensitive)
        .map(|s| s.node.clone())
        .collect();
    let int8_variants = {
        let mut v = vec![Int8::Off];
        if o.int8 {
            v.push(Int8::All);
            if !sensitive.is_empty() && sensitive.len() < sensitivity.len() {
                v.push(Int8::AllBut(sensitive.clone()));
            }
        }
        v
    };

    let mut candidates: Vec<Candidate> = Vec::new();
    // The float (pruned / factorized) graphs, for repair.
    let mut floats: Vec<(f32, Option<f64>, Graph)> = Vec::new();
    for &p in &o.prune {
        for &e in &o.energies {
            let Some(g) = pruned_factorized(reference, p, e, o.min_size)? else {
                continue;
            };
            for q in &int8_variants {
                let config = Config {
                    prune: p,
                    energy: e,
                    repaired: false,
                    int8: q.clone(),
                };
                if config == plain {
                    continue;
                }
                let c = ev.measure(config, &with_int8(&g, q, o.min_size)?)?;
                say(format!(
                    "{:<32} {:>8} B {:>8.3} ms  accuracy {:.2}%",
                    c.config.label(),
                    c.file_bytes,
                    c.latency_ms,
                    100.0 * c.accuracy
                ));
                candidates.push(c);
            }
            if p > 0.0 || e.is_some() {
                floats.push((p, e, g));
            }
        }
    }

    let mut repaired: Vec<(f32, Option<f64>, Graph)> = Vec::new();
    // Distillation repair of the cheapest configurations that missed the
    // budget and could beat the best one within it.
    if let Some(r) = &o.repair {
        let best_cost = candidates
            .iter()
            .filter(|c| c.accuracy >= floor)
            .map(|c| c.cost(o.target))
            .fold(f64::INFINITY, f64::min);
        let mut todo: Vec<(f64, usize)> = floats
            .iter()
            .enumerate()
            .filter_map(|(i, (p, e, _))| {
                let mine: Vec<&Candidate> = candidates
                    .iter()
                    .filter(|c| c.config.prune == *p && c.config.energy == *e)
                    .collect();
                let cheapest_missed = mine
                    .iter()
                    .filter(|c| c.accuracy < floor)
                    .map(|c| c.cost(o.target))
                    .fold(f64::INFINITY, f64::min);
                // A configuration at chance level has collapsed (e.g. a
                // layer pruned away): a short repair does not bring it back.
                let collapsed = mine
                    .iter()
                    .all(|c| c.accuracy <= 1.5 / c.per_class.len().max(1) as f64);
                (cheapest_missed < best_cost && !collapsed).then_some((cheapest_missed, i))
            })
            .collect();
        todo.sort_by(|a, b| a.0.total_cmp(&b.0));
        todo.truncate(r.max_repairs);
        if !todo.is_empty() {
            say(format!(
                "distillation repair of {} configuration(s) that missed the budget",
                todo.len()
            ));
            let teacher =
                Model::from_graph(reference.clone()).map_err(|e| anyhow!("the original: {e}"))?;
            let targets = teacher_outputs(&teacher, &r.transfer, 256, o.threads)?;
            for (_, i) in todo {
                let (p, e, g) = &floats[i];
                let student = Student::new(g.clone())?;
                let rep = distill(&student, &r.transfer, &targets, &r.options)?;
                let mut g = student.export()?;
                quantize::add_recipe_step(
                    &mut g,
                    &format!("distill({} epochs)", rep.history.len()),
                );
                for q in &int8_variants {
                    let config = Config {
                        prune: *p,
                        energy: *e,
                        repaired: true,
                        int8: q.clone(),
                    };
                    let c = ev.measure(config, &with_int8(&g, q, o.min_size)?)?;
                    say(format!(
                        "{:<32} {:>8} B {:>8.3} ms  accuracy {:.2}%",
                        c.config.label(),
                        c.file_bytes,
                        c.latency_ms,
                        100.0 * c.accuracy
                    ));
                    candidates.push(c);
                }
                repaired.push((*p, *e, g));
            }
        }
    }

    let points: Vec<(f64, f64)> = candidates
        .iter()
        .map(|c| (c.cost(o.target), c.accuracy))
        .collect();
    let frontier = pareto(&points);
    let chosen = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.accuracy >= floor)
        .min_by(|(_, a), (_, b)| {
            a.cost(o.target)
                .total_cmp(&b.cost(o.target))
                .then(b.accuracy.total_cmp(&a.accuracy))
        })
        .map(|(i, _)| i);
    let chosen_graph = match chosen {
        Some(i) => {
            let c = &candidates[i].config;
            let base = if c.repaired {
                repaired
                    .iter()
                    .find(|(p, e, _)| *p == c.prune && *e == c.energy)
                    .map(|f| f.2.clone())
                    .context("internal error: the repaired graph is gone")?
            } else {
                pruned_factorized(reference, c.prune, c.energy, o.min_size)?
                    .context("internal error: the chosen configuration does not build")?
            };
            Some(with_int8(&base, &c.int8, o.min_size)?)
        }
        None => None,
    };
    Ok(SearchResult {
        original,
        candidates,
        frontier,
        chosen,
        sensitivity,
        max_drop: o.max_drop,
        target: o.target,
        samples: n,
        repair_source: o.repair.as_ref().map(|r| r.source.clone()),
        seconds: started.elapsed().as_secs_f64(),
        chosen_graph,
    })
}

impl SearchResult {
    /// Per-class accuracy of the original and the chosen model.
    pub fn class_changes(&self) -> Vec<ClassChange> {
        let Some(c) = self.chosen.map(|i| &self.candidates[i]) else {
            return Vec::new();
        };
        let frac = |(ok, n): (usize, usize)| ok as f64 / n.max(1) as f64;
        self.original
            .per_class
            .iter()
            .zip(&c.per_class)
            .enumerate()
            .filter(|(_, (b, _))| b.1 > 0)
            .map(|(k, (&b, &a))| ClassChange {
                class: k,
                samples: b.1,
                before: frac(b),
                after: frac(a),
                flagged: frac(b) - frac(a) > self.max_drop + 1e-12,
            })
            .collect()
    }

    fn no_fit_message(&self) -> String {
        let best = self
            .candidates
            .iter()
            .max_by(|a, b| a.accuracy.total_cmp(&b.accuracy));
        match best {
            Some(b) => format!(
                "no candidate is within --max-drop {:.2} points of the original's {:.2}% ({} tried); the most accurate was {} at {:.2}% ({:+.2} points, {} bytes): loosen the budget, add --distill transfer.npz, or compress by hand",
                100.0 * self.max_drop,
                100.0 * self.original.accuracy,
                self.candidates.len(),
                b.config.label(),
                100.0 * b.accuracy,
                100.0 * (b.accuracy - self.original.accuracy),
                b.file_bytes
            ),
            None => "no candidates were tried (empty grid)".into(),
        }
    }

    pub fn to_json(&self) -> Json {
        let o = &self.original;
        json!({
            "max_drop": self.max_drop, "target": self.target.name(), "samples": self.samples,
            "distill": self.repair_source, "seconds": self.seconds,
            "original": {"file_bytes": o.file_bytes, "latency_ms": o.latency_ms, "accuracy": o.accuracy},
            "candidates": self.candidates.iter().enumerate().map(|(i, c)| {
                let mut j = c.to_json(o);
                j["frontier"] = json!(self.frontier.contains(&i));
                j["within_budget"] = json!(o.accuracy - c.accuracy <= self.max_drop + 1e-12);
                j
            }).collect::<Vec<_>>(),
            "frontier": self.frontier,
            "chosen": self.chosen.map(|i| self.candidates[i].to_json(o)),
            "chosen_index": self.chosen,
            "int8_sensitivity": self.sensitivity.iter().map(|s| json!({"node": s.node,
                "accuracy": s.accuracy, "drop": s.drop, "kept_f32": s.sensitive})).collect::<Vec<_>>(),
            "per_class": self.class_changes().iter().map(|c| json!({"class": c.class,
                "samples": c.samples, "before": c.before, "after": c.after,
                "flagged": c.flagged})).collect::<Vec<_>>(),
            "flagged_classes": self.class_changes().iter().filter(|c| c.flagged)
                .map(|c| c.class).collect::<Vec<_>>(),
        })
    }

    pub fn print(&self) {
        let o = &self.original;
        println!(
            "searched {} candidates in {:.1}s on {} labelled rows (target: {}, budget: {:.2} points)",
            self.candidates.len(),
            self.seconds,
            self.samples,
            self.target.name(),
            100.0 * self.max_drop
        );
        if !self.sensitivity.is_empty() {
            println!("int8 sensitivity (one layer int8, the rest f32):");
            for s in &self.sensitivity {
                println!(
                    "  {:<40} accuracy {:>6.2}%  drop {:+.2} points{}",
                    s.node,
                    100.0 * s.accuracy,
                    100.0 * s.drop,
                    if s.sensitive {
                        "  sensitive: f32 in int8-Nf32"
                    } else {
                        ""
                    }
                );
            }
        }
        println!("Pareto frontier ({} vs accuracy):", self.target.name());
        println!(
            "  {:<34} {:>10} {:>7} {:>11} {:>10} {:>8}",
            "candidate", "file bytes", "smaller", "latency ms", "accuracy %", "drop pts"
        );
        let row = |label: &str, c: &Candidate, mark: &str| {
            println!(
                "  {:<34} {:>10} {:>6.2}x {:>11.3} {:>10.2} {:>8.2} {mark}",
                label,
                c.file_bytes,
                o.file_bytes as f64 / c.file_bytes.max(1) as f64,
                c.latency_ms,
                100.0 * c.accuracy,
                100.0 * (o.accuracy - c.accuracy)
            )
        };
        row("original", o, "");
        for &i in &self.frontier {
            let c = &self.candidates[i];
            let within = o.accuracy - c.accuracy <= self.max_drop + 1e-12;
            let mark = if Some(i) == self.chosen {
                "<- chosen"
            } else if within {
                ""
            } else {
                "over budget"
            };
            row(&c.config.label(), c, mark);
        }
        let changes = self.class_changes();
        if !changes.is_empty() {
            println!("per-class accuracy, original -> chosen:");
            println!(
                "  {:>5} {:>7} {:>9} {:>9} {:>8}",
                "class", "samples", "before %", "after %", "change"
            );
            for c in &changes {
                println!(
                    "  {:>5} {:>7} {:>9.2} {:>9.2} {:>+8.2}{}",
                    c.class,
                    c.samples,
                    100.0 * c.before,
                    100.0 * c.after,
                    100.0 * (c.after - c.before),
                    if c.flagged {
                        "  FLAGGED: lost more than the budget"
                    } else {
                        ""
                    }
                );
            }
            let flagged = changes.iter().filter(|c| c.flagged).count();
            println!(
                "  {flagged} class(es) lost more than {:.2} points",
                100.0 * self.max_drop
            );
        }
    }

    /// The report: accuracy vs the target's cost for every candidate
    /// (colour: latency for a size search, file bytes for a latency search),
    /// the frontier as a line, the choice ringed, the budget as a dashed
    /// line; below it, per-class accuracy before and after.
    pub fn svg(&self) -> String {
        let (w, h) = (820.0, 760.0);
        let (x0, x1, y0, y1) = (80.0, 600.0, 50.0, 410.0);
        let o = &self.original;
        let all: Vec<&Candidate> = std::iter::once(o).chain(&self.candidates).collect();
        let xs: Vec<f64> = all.iter().map(|c| c.cost(self.target)).collect();
        let colour_of = |c: &Candidate| match self.target {
            Target::Size => c.latency_ms,
            Target::Latency => c.file_bytes as f64,
        };
        // Sizes on a log scale (they span 10x and more); accuracy from
        // 10 points (or 3 budgets) below the original: lower points sit on
        // the bottom edge as triangles.
        let log = self.target == Target::Size;
        let tx = |v: f64| if log { v.max(1e-9).ln() } else { v };
        let (xmin, xmax) = span(&xs.iter().map(|&v| tx(v)).collect::<Vec<_>>());
        let accs: Vec<f64> = all.iter().map(|c| 100.0 * c.accuracy).collect();
        let amax = accs.iter().copied().fold(0.0, f64::max);
        let floor = 100.0 * o.accuracy - (100.0 * 3.0 * self.max_drop).max(10.0);
        let lowest = accs.iter().copied().fold(f64::INFINITY, f64::min);
        let (amin, amax) = (lowest.max(floor) - 0.5, amax + 0.5);
        let (cmin, cmax) = span(&all.iter().map(|c| colour_of(c)).collect::<Vec<_>>());
        let px = |v: f64| x0 + (tx(v) - xmin) / (xmax - xmin).max(1e-12) * (x1 - x0);
        let py = |a: f64| (y1 - (a - amin) / (amax - amin).max(1e-12) * (y1 - y0)).min(y1);
        let colour = |v: f64| {
            let t = ((v - cmin) / (cmax - cmin).max(1e-12)).clamp(0.0, 1.0);
            // blue (fast / small) -> orange -> red (slow / big)
            let (r, g, b) = (
                (40.0 + 200.0 * t) as u8,
                (90.0 + 90.0 * (1.0 - (2.0 * t - 1.0).abs())) as u8,
                (200.0 - 170.0 * t) as u8,
            );
            format!("rgb({r},{g},{b})")
        };
        let (xunit, xfmt): (&str, Box<dyn Fn(f64) -> String>) = match self.target {
            Target::Size => (
                "file size (KiB, log scale)",
                Box::new(|v| format!("{:.1}", v / 1024.0)),
            ),
            Target::Latency => ("latency (ms)", Box::new(|v| format!("{v:.3}"))),
        };
        let cunit = match self.target {
            Target::Size => "latency ms",
            Target::Latency => "file bytes",
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="28" font-size="15" font-weight="bold">{} candidates: accuracy vs {} (budget {:.2} points, {} rows)</text>"#,
            self.candidates.len(),
            self.target.name(),
            100.0 * self.max_drop,
            self.samples
        );
        // Axes and ticks.
        let _ = writeln!(
            s,
            r#"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            x1 - x0,
            y1 - y0
        );
        for k in 0..=5 {
            let t = xmin + (xmax - xmin) * k as f64 / 5.0;
            let v = if log { t.exp() } else { t };
            let x = px(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                y1 + 16.0,
                xfmt(v)
            );
            let a = amin + (amax - amin) * k as f64 / 5.0;
            let y = py(a);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{a:.1}</text>"##,
                x0 - 6.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{xunit}</text>"#,
            (x0 + x1) / 2.0,
            y1 + 36.0
        );
        let _ = writeln!(
            s,
            r#"<text x="20" y="{}" transform="rotate(-90 20 {})" text-anchor="middle">top-1 accuracy (%)</text>"#,
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0
        );
        // Budget line.
        let yb = py(100.0 * (o.accuracy - self.max_drop));
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{yb:.1}" x2="{x1}" y2="{yb:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="#c00">budget</text>"##,
            x0 + 4.0,
            yb - 4.0
        );
        // Frontier.
        let pts: Vec<String> = self
            .frontier
            .iter()
            .map(|&i| {
                let c = &self.candidates[i];
                format!(
                    "{:.1},{:.1}",
                    px(c.cost(self.target)),
                    py(100.0 * c.accuracy)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="black" stroke-width="1.5"/>"#,
            pts.join(" ")
        );
        for (i, c) in self.candidates.iter().enumerate() {
            let (x, y) = (px(c.cost(self.target)), py(100.0 * c.accuracy));
            let front = self.frontier.contains(&i);
            if y >= y1 && 100.0 * c.accuracy < amin {
                let _ = writeln!(
                    s,
                    r#"<path d="M{:.1},{:.1} l5,-9 l-10,0 z" fill="{}" stroke="{}"><title>{}: {} B, {:.3} ms, {:.2}% (below the plot)</title></path>"#,
                    x,
                    y1 - 1.0,
                    colour(colour_of(c)),
                    if front { "black" } else { "none" },
                    c.config.label(),
                    c.file_bytes,
                    c.latency_ms,
                    100.0 * c.accuracy
                );
                continue;
            }
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{}" fill="{}" stroke="{}" stroke-width="{}" opacity="0.9"><title>{}: {} B, {:.3} ms, {:.2}%</title></circle>"#,
                if front { 6 } else { 4 },
                colour(colour_of(c)),
                if front { "black" } else { "none" },
                if front { 1.5 } else { 0.0 },
                c.config.label(),
                c.file_bytes,
                c.latency_ms,
                100.0 * c.accuracy
            );
        }
        let (x, y) = (px(o.cost(self.target)), py(100.0 * o.accuracy));
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}" stroke="black" transform="rotate(45 {x:.1} {y:.1})"/><text x="{:.1}" y="{:.1}" text-anchor="end">original</text>"#,
            x - 5.0,
            y - 5.0,
            colour(colour_of(o)),
            x - 10.0,
            y - 8.0
        );
        if let Some(c) = self.chosen.map(|i| &self.candidates[i]) {
            let (x, y) = (px(c.cost(self.target)), py(100.0 * c.accuracy));
            let _ = writeln!(
                s,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="12" fill="none" stroke="#0a0" stroke-width="3"/><text x="{:.1}" y="{:.1}" fill="#070" font-weight="bold">chosen: {} ({} B, {:.2}%)</text>"##,
                x + 14.0,
                y - 14.0,
                c.config.label(),
                c.file_bytes,
                100.0 * c.accuracy
            );
        }
        // Colour legend.
        let lx = x1 + 30.0;
        let _ = writeln!(s, r#"<text x="{lx}" y="{y0}">colour: {cunit}</text>"#);
        for k in 0..=4 {
            let v = cmin + (cmax - cmin) * k as f64 / 4.0;
            let y = y0 + 18.0 + 20.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<circle cx="{}" cy="{y}" r="6" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                lx + 6.0,
                colour(v),
                lx + 18.0,
                y + 4.0,
                match self.target {
                    Target::Size => format!("{v:.3}"),
                    Target::Latency => format!("{v:.0}"),
                }
            );
        }
        let ly = y0 + 130.0;
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{ly}">black ring, line: Pareto</text><text x="{lx}" y="{}">▼ on the axis: below it</text><text x="{lx}" y="{}">green ring: chosen</text><text x="{lx}" y="{}" fill="#c00">dashed: original − budget</text>"##,
            ly + 18.0,
            ly + 36.0,
            ly + 54.0
        );
        // Per-class bars.
        let changes = self.class_changes();
        let (by0, by1) = (500.0, 700.0);
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="{}" font-size="14" font-weight="bold">per-class accuracy: original (grey) vs chosen (green; red = lost more than the budget)</text>"#,
            by0 - 20.0
        );
        if changes.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{x0}" y="{}">nothing met the budget: no chosen model</text>"#,
                by0 + 20.0
            );
        } else {
            let lo = changes
                .iter()
                .map(|c| c.before.min(c.after))
                .fold(1.0, f64::min);
            let lo = ((100.0 * lo - 5.0) / 5.0).floor().max(0.0) * 5.0;
            let bpy = |a: f64| by1 - (100.0 * a - lo) / (100.0 - lo).max(1e-9) * (by1 - by0);
            let _ = writeln!(
                s,
                r#"<line x1="{x0}" y1="{by1}" x2="{x1}" y2="{by1}" stroke="black"/><text x="{}" y="{by1}" text-anchor="end">{lo:.0}%</text><text x="{}" y="{}" text-anchor="end">100%</text>"#,
                x0 - 6.0,
                x0 - 6.0,
                by0 + 4.0
            );
            let slot = (x1 - x0) / changes.len() as f64;
            for (k, c) in changes.iter().enumerate() {
                let x = x0 + slot * k as f64 + slot * 0.15;
                let bw = slot * 0.33;
                let _ = writeln!(
                    s,
                    r##"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="#999"/><rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{}" text-anchor="middle">{}{}</text><text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{:+.1}</text>"##,
                    bpy(c.before),
                    by1 - bpy(c.before),
                    x + bw,
                    bpy(c.after),
                    by1 - bpy(c.after),
                    if c.flagged { "#c00" } else { "#2a2" },
                    x + bw,
                    by1 + 16.0,
                    c.class,
                    if c.flagged { " !" } else { "" },
                    x + bw,
                    by1 + 30.0,
                    100.0 * (c.after - c.before)
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{x0}" y="{}">class (below: change in points)</text>"#,
                by1 + 50.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// The chosen model as file bytes, with the search in its metadata.
    pub fn chosen_bytes(&self) -> Result<Option<Vec<u8>>> {
        let (Some(i), Some(g)) = (self.chosen, &self.chosen_graph) else {
            return Ok(None);
        };
        let mut g = g.clone();
        let o = &self.original;
        let c = &self.candidates[i];
        g.metadata.insert(
            "compression".into(),
            json!({"search": {"max_drop": self.max_drop, "target": self.target.name(),
                "candidates": self.candidates.len(), "chosen": c.to_json(o),
                "original_accuracy": o.accuracy, "samples": self.samples,
                "distill": self.repair_source}})
            .to_string(),
        );
        let bytes = to_bytes(&g, FloatStorage::F32).map_err(|e| anyhow!("{e}"))?;
        Model::from_bytes(&bytes)
            .map_err(|e| anyhow!("internal error: the written model does not load: {e}"))?;
        Ok(Some(bytes))
    }
}

fn span(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    }
}

/// Parse `1%`, `1.5%` or `0.01` as a fraction.
pub fn parse_drop(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| {
        anyhow!("--max-drop '{s}': expected a percentage like 1% or a fraction like 0.01")
    })?;
    if !(0.0..1.0).contains(&v) {
        bail!("--max-drop '{s}': must be at least 0 and below 100%");
    }
    Ok(v)
}

/// `morsel compress --max-drop`: search, print (or --json), write the
/// report and the chosen model. Errors when nothing met the budget (after
/// printing the frontier and writing the report).
pub fn run_cli(
    reference: &Graph,
    feed: &Feed,
    labels: Option<&[i64]>,
    o: &SearchOptions,
    output: &Path,
    report: Option<&Path>,
    as_json: bool,
) -> Result<SearchResult> {
    let labels = labels.context("--max-drop needs labels (`y`) in --data")?;
    let r = search(reference, feed, labels, o)?;
    if let Some(p) = report {
        let svg = r.svg();
        let text = if p
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html"))
        {
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>morsel compress --max-drop</title></head><body>{svg}<pre>{}</pre></body></html>\n",
                serde_json::to_string_pretty(&r.to_json())?
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
            )
        } else {
            svg
        };
        write_atomic(p, text.as_bytes())?;
    }
    let bytes = r.chosen_bytes()?;
    if let Some(b) = &bytes {
        write_atomic(output, b)?;
    }
    if as_json {
        let mut j = r.to_json();
        j["file"] = json!(bytes.as_ref().map(|_| output.display().to_string()));
        j["file_bytes"] = json!(bytes.as_ref().map(|b| b.len()));
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        r.print();
        if let Some(b) = &bytes {
            println!(
                "wrote {} ({} bytes, {:.2}x smaller than the original's {} bytes){}",
                output.display(),
                b.len(),
                r.original.file_bytes as f64 / b.len().max(1) as f64,
                r.original.file_bytes,
                report.map_or(String::new(), |p| format!("; report {}", p.display()))
            );
        }
    }
    if bytes.is_none() {
        bail!("{}", r.no_fit_message());
    }
    Ok(r)
}
