//! `morsel`: convert, inspect, run, benchmark and evaluate models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use morsel_compress::calibrate;
use morsel_compress::lowrank::{self, LowRankOptions, Rank};
use morsel_compress::measure::{self, Feed, Summary, argmax_rows, run_batched};
use morsel_compress::npy;
use morsel_compress::prune::{self, PruneOptions, Score};
use morsel_compress::quantize::{self, QuantOptions};
use morsel_runtime::format::writer::{FloatStorage, to_bytes, write_atomic};
use morsel_runtime::tensor::{Dim, Tensor, dims_str, shape_str};
use morsel_runtime::{DType, Model, Options};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "morsel",
    version,
    about = "Make models small and fast, and run them anywhere"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Weights {
    F32,
    F16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum Quantize {
    /// Dynamic int8: weights int8 per output channel, activations per row at run time.
    Int8,
    /// Static int8: as int8, and convs take and give int8 with activation
    /// ranges from --calibration (QLinearConv).
    Int8Static,
}

#[derive(Clone, Copy, ValueEnum)]
enum CalibrationMethod {
    /// The observed minimum and maximum.
    Minmax,
    /// The --percentile and its mirror (tails clipped).
    Percentile,
    /// The KL-closest clipping threshold (TensorRT's entropy calibrator).
    Entropy,
}

#[derive(Clone, Copy, ValueEnum)]
enum PruneScope {
    /// One magnitude threshold across all layers.
    Global,
    /// The same ratio in every layer.
    Layer,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChannelScore {
    /// L1 norm of the channel's weights.
    L1,
    /// L2 norm of the channel's weights.
    L2,
    /// Mean |activation| on --data times the norm of the weights reading it.
    Activation,
}

#[derive(clap::Args)]
struct CompressArgs {
    input: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Remove this share of the output channels (Conv) and neurons
    /// (MatMul/Gemm) of every layer whose channels can be removed, e.g. 0.5.
    #[arg(long)]
    prune_channels: Option<f32>,
    /// Remove this share of the heads of every multi-head attention block
    /// (Q/K/V projections, per-head products and the output projection
    /// shrink together), lowest ‖Wv_h‖·‖Wo_h‖ first, e.g. 0.5.
    #[arg(long)]
    prune_heads: Option<f32>,
    /// How channels are ranked for --prune-channels.
    #[arg(long, value_enum, default_value = "l2")]
    channel_score: ChannelScore,
    /// Zero this share of the weights, smallest magnitudes first, e.g. 0.8.
    #[arg(long)]
    prune: Option<f32>,
    #[arg(long, value_enum, default_value = "global")]
    prune_scope: PruneScope,
    /// Ratio for one layer, `NODE=RATIO` (repeatable; `morsel inspect` lists the layers).
    #[arg(long = "prune-layer")]
    prune_layer: Vec<String>,
    /// Ratio for the first and last weight layers (default 0: they stay dense).
    #[arg(long)]
    prune_ends: Option<f32>,
    /// N:M semi-structured pruning: keep N of every M weights along each
    /// output's inputs, e.g. `2:4` (first and last layers stay dense unless
    /// --prune-ends is given).
    #[arg(long)]
    n_m: Option<String>,
    /// Low-rank factorization keeping this share of each weight's squared
    /// singular values, e.g. 0.95.
    #[arg(long, conflicts_with = "rank_ratio")]
    low_rank: Option<f64>,
    /// Low-rank factorization keeping this share of each weight's full rank.
    #[arg(long)]
    rank_ratio: Option<f64>,
    /// Weight the SVD by each input channel's mean |activation| on --data
    /// (activation-aware, as ASVD).
    #[arg(long)]
    low_rank_aware: bool,
    /// Layers (node names, comma-separated) low-rank leaves alone.
    #[arg(long, value_delimiter = ',')]
    keep_full_rank: Vec<String>,
    #[arg(long, value_enum)]
    quantize: Option<Quantize>,
    /// .npz with the model's inputs by name (and labels `y`), to measure on.
    #[arg(long)]
    data: Option<PathBuf>,
    /// .npz of inputs for the statistics that data-driven steps use
    /// (--quantize int8-static, --max-error, --channel-score activation,
    /// --low-rank-aware); default: --data.
    #[arg(long, alias = "calibrate")]
    calibration: Option<PathBuf>,
    /// With --quantize int8-static: how activation ranges are chosen.
    #[arg(long, value_enum, default_value = "minmax")]
    calibration_method: CalibrationMethod,
    /// With --calibration-method percentile: the percentile kept (in %).
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Node names to leave in f32 (comma-separated; `morsel inspect` lists the layers).
    #[arg(long, value_delimiter = ',')]
    keep_float: Vec<String>,
    /// With --quantize int8: the largest output error allowed, as 1 − cosine
    /// between the f32 and int8 outputs per sample (worst over --calibration,
    /// or --data, samples and outputs). Each int8 layer's error alone is
    /// measured, and layers go back to f32 compute (weights stored as IEEE
    /// halves), the most error per byte first, until the model is within it.
    #[arg(long)]
    max_error: Option<f64>,
    /// Weights with fewer elements than this stay f32 (int8) or full rank.
    #[arg(long, default_value_t = 4096)]
    min_size: usize,
    /// With --quantize int8: convs whose reduction per output (input
    /// channels per group × kernel taps) is shorter than this compute in
    /// f32, with int8-stored weights: faster where int8 does not pay (on
    /// AVX2 without VNNI, 512 made PP-OCR det 11% faster than f32 instead
    /// of 7%), less accurate on PP-OCR det (IoU 0.943 instead of 0.962).
    #[arg(long, default_value_t = 0)]
    min_reduction: usize,
    /// Rows of --data per run.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Rows of --data (or of random input) the latency is measured on.
    #[arg(long, default_value_t = 1)]
    latency_batch: usize,
    /// Runs the latency is the median of (0: do not time).
    #[arg(long, default_value_t = 20)]
    latency_runs: usize,
    /// Without --data: size of a symbolic input dim for the random timing
    /// inputs, e.g. `--dim p2o.DynamicDimension.1=48` (others are 1).
    #[arg(long = "dim")]
    dims: Vec<String>,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    repair: morsel_compress::distill::cli::RepairArgs,
    /// Search prune ratio, low-rank energy and int8 for the smallest (or
    /// fastest, --target) model whose top-1 accuracy on --data is at most
    /// this much below the original's, e.g. `1%` (repairs with --distill).
    #[arg(long)]
    max_drop: Option<String>,
    #[arg(long, value_enum, default_value = "size", requires = "max_drop")]
    target: SearchTarget,
    /// With --max-drop: write a plot of the candidates (.svg, or .html).
    #[arg(long, requires = "max_drop")]
    report: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SearchTarget {
    Size,
    Latency,
}

#[derive(Subcommand)]
enum Cmd {
    /// Import an ONNX model and write it as a .morsel file.
    Convert {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// How to store f32 weights.
        #[arg(long, value_enum, default_value = "f32")]
        weights: Weights,
    },
    /// Compress a model (.onnx or .morsel) into a .morsel file: structured
    /// pruning, then magnitude or N:M pruning, then low-rank factorization,
    /// then int8 (each optional, in that order). With --data, measure the
    /// result against the original (accuracy, agreement, error, latency).
    Compress(Box<CompressArgs>),
    /// Train a smaller student model to reproduce a teacher's outputs on a
    /// transfer set (knowledge distillation) and write it as a .morsel file.
    Distill(morsel_compress::distill::cli::DistillCmd),
    /// Show a model's inputs, outputs, ops, parameters, sizes and metadata.
    Inspect {
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run a model on .npy inputs and write its outputs as .npy files.
    Run {
        model: PathBuf,
        /// `name=file.npy` (or just `file.npy` for a one-input model), or one
        /// `.npz` holding every input by name; repeatable.
        #[arg(short, long = "input", required = true)]
        inputs: Vec<String>,
        #[arg(short = 'd', long, default_value = ".")]
        output_dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Time a model: warm-up, then median and p90 latency, and peak memory.
    Bench {
        model: PathBuf,
        /// Inputs as in `run`; by default random data (floats in [0, 1),
        /// integers 0 or 1), symbolic dims set by --dim (default 1).
        #[arg(short, long = "input")]
        inputs: Vec<String>,
        /// Size for a symbolic dim, e.g. `N=8`.
        #[arg(long = "dim")]
        dims: Vec<String>,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 30)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
        /// Also time each node during the timed runs and print where the
        /// time goes, by op type and the slowest nodes (with --json, a
        /// `profile` field). Costs two clock reads per node.
        #[arg(long)]
        profile: bool,
    },
    /// Accuracy against labels and agreement with a reference, on a .npz data set.
    Eval {
        model: PathBuf,
        /// .npz with the model's inputs by name (or `x` for a one-input
        /// model) and optional labels `y`.
        #[arg(long)]
        data: PathBuf,
        /// Reference outputs: a model (.onnx or .morsel) to run on the same
        /// data, or a .npy of its first output (e.g. from ONNX Runtime).
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    // A closed pipe ends the process (as `head` expects) instead of making
    // every println! panic with EPIPE.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any
    // other thread exists; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Convert {
            input,
            output,
            weights,
        } => convert(&input, &output, weights),
        Cmd::Compress(args) => compress(&args),
        Cmd::Distill(args) => morsel_compress::distill::cli::run_student_mode(&args),
        Cmd::Inspect { model, json } => inspect(&model, json),
        Cmd::Run {
            model,
            inputs,
            output_dir,
            threads,
        } => run(&model, &inputs, &output_dir, threads),
        Cmd::Bench {
            model,
            inputs,
            dims,
            warmup,
            runs,
            threads,
            json,
            profile,
        } => bench(&model, &inputs, &dims, warmup, runs, threads, json, profile),
        Cmd::Eval {
            model,
            data,
            reference,
            batch,
            threads,
            json,
        } => eval(&model, &data, reference.as_deref(), batch, threads, json),
    };
    if let Err(e) = result {
        // One line per cause, outermost first.
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

fn convert(input: &Path, output: &Path, weights: Weights) -> Result<()> {
    if !morsel_compress::is_onnx(input) {
        bail!("{}: convert takes an .onnx file", input.display());
    }
    let t = Instant::now();
    let g = morsel_compress::convert(input)?;
    let storage = match weights {
        Weights::F32 => FloatStorage::F32,
        Weights::F16 => FloatStorage::F16,
        Weights::Bf16 => FloatStorage::BF16,
    };
    let bytes = to_bytes(&g, storage).map_err(|e| anyhow!("{e}"))?;
    // Refuse to write a file we cannot read back.
    Model::from_bytes(&bytes)
        .map_err(|e| anyhow!("internal error: the written model does not load: {e}"))?;
    write_atomic(output, &bytes)?;
    println!(
        "wrote {} ({} bytes, {} nodes) in {:.2}s",
        output.display(),
        bytes.len(),
        g.nodes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `node: reason; …` for an error message.
fn reasons(not: &[prune::NotPrunable]) -> String {
    not.iter()
        .map(|n| format!("{}: {}", n.node, n.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The layers (or blocks) a structured step left whole, for its JSON step.
fn not_prunable_json(not: &[prune::NotPrunable]) -> Vec<serde_json::Value> {
    not.iter()
        .map(|n| json!({"node": n.node, "reason": n.reason}))
        .collect()
}

fn compress(a: &CompressArgs) -> Result<()> {
    let t = Instant::now();
    let input = a.input.as_path();
    let output = a.output.as_path();
    let wants_prune = a.prune.is_some()
        || a.n_m.is_some()
        || a.prune_channels.is_some()
        || a.prune_heads.is_some();
    let wants_low_rank = a.low_rank.is_some() || a.rank_ratio.is_some();
    if a.max_drop.is_some() {
        return search(a);
    }
    if !wants_prune && !wants_low_rank && a.quantize.is_none() {
        bail!(
            "nothing to do: pass one or more of --prune-heads, --prune-channels, --prune, --n-m, --low-rank/--rank-ratio, --quantize int8"
        );
    }
    let mut g = if morsel_compress::is_onnx(input) {
        morsel_compress::convert(input)?
    } else {
        Model::open(input)
            .with_context(|| format!("opening {}", input.display()))?
            .graph()
            .clone()
    };
    let quantized = [
        "QMatMul",
        "QGather",
        "QConv",
        "QLinearConv",
        "QLinearMatMul",
    ];
    if g.nodes
        .iter()
        .any(|n| quantized.contains(&morsel_runtime::ops::op_name(n.op)))
    {
        bail!(
            "{} is already quantized: compress the f32 model instead",
            input.display()
        );
    }
    let reference = g.clone();
    let f32_len = to_bytes(&reference, FloatStorage::F32)
        .map_err(|e| anyhow!("{e}"))?
        .len();
    let ref_model =
        Model::from_graph(reference.clone()).map_err(|e| anyhow!("the f32 model: {e}"))?;
    let data = match &a.data {
        Some(d) => Some(load_feed(&ref_model, d)?),
        None => None,
    };
    let calibration = match &a.calibration {
        Some(c) => Some(load_feed(&ref_model, c)?.0),
        None => data.as_ref().map(|d| d.0.clone()),
    };
    let mut steps: Vec<serde_json::Value> = Vec::new();
    let say = |s: String| {
        if !a.json {
            println!("{s}");
        }
    };

    // 1. Structured pruning: attention heads, then channels.
    if let Some(ratio) = a.prune_heads {
        let (blocks, not) = morsel_compress::heads::attention_blocks(&mut g)?;
        if blocks.is_empty() {
            bail!(
                "--prune-heads: no attention block's heads can be removed ({})",
                if not.is_empty() {
                    "the model has no MatMul of a Softmax and a value".into()
                } else {
                    reasons(&not)
                }
            );
        }
        let keeps = morsel_compress::heads::select_heads(&g, &blocks, ratio)?;
        say(format!(
            "attention-head pruning ({:.0}% of heads, ranked by |Wv_h|·|Wo_h|): {} blocks",
            ratio * 100.0,
            blocks.len()
        ));
        let mut layers = Vec::new();
        for (b, k) in blocks.iter().zip(&keeps) {
            let name = g.nodes[b.out].name.clone();
            say(format!(
                "  {:<56} {:>3} -> {:<3} heads of {}",
                name,
                b.heads,
                k.len(),
                b.dim
            ));
            layers.push(json!({"node": name, "heads": b.heads, "kept": k}));
        }
        for n in &not {
            say(format!("  kept whole: {:<45} {}", n.node, n.reason));
        }
        morsel_compress::heads::remove_heads(&mut g, &blocks, &keeps)?;
        let step = format!("prune-heads({ratio})");
        quantize::add_recipe_step(&mut g, &step);
        steps
            .push(json!({"step": step, "blocks": layers, "not_prunable": not_prunable_json(&not)}));
    }
    if let Some(ratio) = a.prune_channels {
        let (groups, not) = prune::channel_groups(&mut g)?;
        if groups.is_empty() {
            bail!(
                "--prune-channels: no layer's channels can be removed ({})",
                reasons(&not)
            );
        }
        let (score, score_name) = match a.channel_score {
            ChannelScore::L1 => (Score::L1, "l1"),
            ChannelScore::L2 => (Score::L2, "l2"),
            ChannelScore::Activation => {
                let feed = calibration
                    .as_ref()
                    .context("--channel-score activation needs --data or --calibration")?;
                (
                    Score::Activation(activation_stats(&g, &groups, feed, a.threads)?),
                    "activation",
                )
            }
        };
        let keeps = prune::select_channels(&g, &groups, ratio, &score)?;
        say(format!(
            "structured pruning ({:.0}% of channels, ranked by {score_name}): {} layers",
            ratio * 100.0,
            groups.len()
        ));
        let mut layers = Vec::new();
        for (gr, k) in groups.iter().zip(&keeps) {
            let name = g.nodes[gr.producer].name.clone();
            say(format!(
                "  {:<56} {:>5} -> {:<5} channels",
                name,
                gr.channels,
                k.len()
            ));
            layers.push(json!({"node": name, "channels": gr.channels, "kept": k.len()}));
        }
        for n in &not {
            say(format!("  kept whole: {:<45} {}", n.node, n.reason));
        }
        prune::remove_channels(&mut g, &groups, &keeps)?;
        let step = format!("prune-channels({ratio},{score_name})");
        quantize::add_recipe_step(&mut g, &step);
        steps
            .push(json!({"step": step, "layers": layers, "not_prunable": not_prunable_json(&not)}));
    }

    // 2. Unstructured / N:M pruning.
    let mut sparsity_report = |g: &mut morsel_runtime::Graph,
                               step: String,
                               layers: Vec<prune::LayerSparsity>|
     -> Result<()> {
        let (p, z) = layers
            .iter()
            .fold((0, 0), |(p, z), l| (p + l.params, z + l.zeros));
        say(format!(
            "{step}: {z} of {p} weights are zero ({:.1}%)",
            100.0 * z as f64 / p.max(1) as f64
        ));
        for l in &layers {
            say(format!(
                "  {:<56} {:>7} {:>9} weights  {:>5.1}% zero",
                l.node,
                l.op,
                l.params,
                100.0 * l.sparsity()
            ));
        }
        quantize::add_recipe_step(g, &step);
        steps.push(json!({"step": step, "layers": layers.iter().map(|l| json!({"node": l.node, "params": l.params, "zeros": l.zeros})).collect::<Vec<_>>()}));
        Ok(())
    };
    if let Some(ratio) = a.prune {
        let overrides = a
            .prune_layer
            .iter()
            .map(|s| {
                let (n, r) = s
                    .rsplit_once('=')
                    .with_context(|| format!("--prune-layer '{s}': expected NODE=RATIO"))?;
                let r: f32 = r
                    .parse()
                    .with_context(|| format!("--prune-layer '{s}': '{r}' is not a number"))?;
                Ok((n.to_string(), r))
            })
            .collect::<Result<Vec<_>>>()?;
        let o = PruneOptions {
            ratio,
            global: matches!(a.prune_scope, PruneScope::Global),
            ends: a.prune_ends,
            overrides,
        };
        let layers = prune::prune_magnitude(&mut g, &o)?;
        let scope = if o.global { "global" } else { "layer" };
        sparsity_report(&mut g, format!("prune-magnitude({ratio},{scope})"), layers)?;
    }
    if let Some(nm) = &a.n_m {
        let (n, m) = nm
            .split_once(':')
            .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)))
            .with_context(|| format!("--n-m '{nm}': expected N:M, e.g. 2:4"))?;
        // The first and last weight layers stay dense, as with --prune,
        // unless --prune-ends is given.
        let ends: Vec<String> = if a.prune_ends.is_some() {
            Vec::new()
        } else {
            let names: Vec<&String> = g
                .nodes
                .iter()
                .filter(|n| prune::weight_of(&g, n).is_some())
                .map(|n| &n.name)
                .collect();
            match names.as_slice() {
                [first, .., last] if names.len() > 2 => vec![(*first).clone(), (*last).clone()],
                _ => Vec::new(),
            }
        };
        let layers = prune::prune_n_m(&mut g, n, m, &ends)?;
        sparsity_report(&mut g, format!("prune-n-m({n}:{m})"), layers)?;
    }

    // 3. Low-rank factorization.
    if wants_low_rank {
        let rank = match (a.low_rank, a.rank_ratio) {
            (Some(e), _) => Rank::Energy(e),
            (_, Some(r)) => Rank::Ratio(r),
            _ => unreachable!(),
        };
        let input_stats = if a.low_rank_aware {
            let feed = calibration
                .as_ref()
                .context("--low-rank-aware needs --data or --calibration")?;
            layer_input_stats(&g, feed, a.threads)?
        } else {
            Default::default()
        };
        let o = LowRankOptions {
            rank,
            skip: a.keep_full_rank.clone(),
            min_size: a.min_size,
            input_stats,
            alpha: 0.5,
        };
        let r = lowrank::factorize(&mut g, &o)?;
        let (pb, pa) = r.factorized.iter().fold((0, 0), |(b, a), f| {
            (b + f.params_before, a + f.params_after)
        });
        let aware = if a.low_rank_aware {
            ", activation-aware"
        } else {
            ""
        };
        let step = match rank {
            Rank::Energy(e) => format!("low-rank(energy {e}{aware})"),
            Rank::Ratio(q) => format!("low-rank(rank ratio {q}{aware})"),
        };
        say(format!(
            "{step}: {} layers factorized, their weights {pb} -> {pa} parameters; {} left full rank",
            r.factorized.len(),
            r.skipped.len()
        ));
        for f in &r.factorized {
            say(format!(
                "  {:<56} {:>7} {:>12} rank {:>4}  energy {:.3}  ‖W−Wr‖/‖W‖ {:.3}",
                f.node,
                f.op,
                dims_str(&f.shape),
                f.rank,
                f.energy,
                f.rel_error
            ));
        }
        for s in &r.skipped {
            say(format!("  full rank: {:<45} {}", s.node, s.reason));
        }
        quantize::add_recipe_step(&mut g, &step);
        steps.push(json!({"step": step,
            "factorized": r.factorized.iter().map(|f| json!({"node": f.node, "shape": f.shape, "rank": f.rank,
                "params_before": f.params_before, "params_after": f.params_after, "energy": f.energy, "rel_error": f.rel_error})).collect::<Vec<_>>(),
            "skipped": r.skipped.iter().map(|s| json!({"node": s.node, "reason": s.reason})).collect::<Vec<_>>()}));
    }

    // 3b. Distillation repair (distill/cli.rs): the compressed model learns
    // the original's outputs (with --qat, through the rounding of step 4).
    let mut qopts = QuantOptions {
        keep_float: a.keep_float.clone(),
        min_size: a.min_size,
        min_reduction: a.min_reduction,
        half_weights: Vec::new(),
    };
    if a.repair.qat && !matches!(a.quantize, Some(Quantize::Int8)) {
        bail!(
            "--qat trains through the rounding of --quantize int8 (dynamic: inputs per row at run time); pass --quantize int8 (int8-static's calibrated ranges are not simulated)"
        );
    }
    let qat = a.repair.qat.then_some(&qopts);
    if let Some(step) = morsel_compress::distill::cli::repair(
        &mut g, &ref_model, &a.repair, qat, a.threads, a.json,
    )? {
        steps.push(step);
    }

    // 4. int8.
    let mut guard = None;
    if let Some(max_error) = a.max_error {
        if a.quantize.is_none() {
            bail!("--max-error bounds the error of --quantize int8; pass --quantize int8 too");
        }
        let feed = calibration
            .as_ref()
            .context("--max-error needs --data or --calibration to measure the error on")?;
        let (o, gd) =
            quantize::sensitivity_guard(&g, &qopts, max_error, feed, a.batch, a.threads, |m| {
                say(m)
            })?;
        qopts = o;
        guard = Some(gd);
    }
    let method = match a.calibration_method {
        CalibrationMethod::Minmax => calibrate::Method::MinMax,
        CalibrationMethod::Percentile => calibrate::Method::Percentile(a.percentile),
        CalibrationMethod::Entropy => calibrate::Method::Entropy,
    };
    let mut static_report = None;
    let qreport = match a.quantize {
        Some(q @ (Quantize::Int8 | Quantize::Int8Static)) => {
            let is_static = matches!(q, Quantize::Int8Static);
            let calib = if is_static {
                let feed = calibration.as_ref().context(
                    "--quantize int8-static needs --calibration (or --data): activation ranges come from it",
                )?;
                let n = calibrate::check_feed(feed)?;
                Some((feed, n, g.clone()))
            } else {
                None
            };
            let mut r = quantize::quantize_dynamic(&mut g, &qopts)?;
            if let Some(gd) = &guard {
                for k in r.kept.iter_mut().filter(|k| gd.kept.contains(&k.node)) {
                    let alone = gd
                        .sensitivity
                        .iter()
                        .find(|s| s.0 == k.node)
                        .map_or(0.0, |s| s.1);
                    k.reason = format!(
                        "--max-error {:.2e}: put back in f32 (alone int8: error {alone:.2e})",
                        gd.max_error
                    );
                }
            }
            quantize::add_recipe_step(&mut g, "quantize-int8-dynamic");
            if !a.json {
                print_quant_report(&r, &qopts);
            }
            if let Some((feed, n, f32_graph)) = calib {
                let names = calibrate::wanted(&g);
                let ranges =
                    calibrate::calibrate(&f32_graph, &names, feed, a.batch, a.threads, method)?;
                let sr = calibrate::quantize_static(&mut g, &ranges, method, n)?;
                quantize::add_recipe_step(&mut g, &format!("quantize-int8-static ({})", sr.method));
                if !a.json {
                    print_static_report(&sr);
                }
                static_report = Some(sr);
            }
            Some(r)
        }
        None => None,
    };

    // Measure the model as it will be read back from the file.
    let bytes = to_bytes(&g, FloatStorage::F32).map_err(|e| anyhow!("{e}"))?;
    let new_model = Model::from_bytes(&bytes).map_err(|e| anyhow!("the compressed model: {e}"))?;
    let error = match &data {
        Some((feed, _)) => Some(quantize::measure_error(
            &ref_model, &new_model, feed, a.batch, a.threads,
        )?),
        None => None,
    };
    let timing_feed = match &data {
        Some((feed, _)) => measure::head(feed, a.latency_batch)?,
        None => random_inputs(&ref_model, &a.dims).context(
            "making random inputs to time the models (pass --data to time on real ones)",
        )?,
    };
    let mut before = summarize(
        "original",
        &ref_model,
        f32_len,
        &data,
        &timing_feed,
        None,
        a,
    )?;
    let mut after = summarize(
        "compressed",
        &new_model,
        bytes.len(),
        &data,
        &timing_feed,
        Some(&ref_model),
        a,
    )?;
    after.min_cosine = error
        .as_ref()
        .and_then(|e| e.first())
        .map(|e| e.min_row_cosine);
    // Random inputs with symbolic dims of 1 may not fit the model (a 2×2
    // pool on a 1×1 image): then nothing is timed and the file is still
    // written. Only the original decides that; if it runs and the
    // compressed model does not, that is an error.
    let untimeable = match (&data, a.latency_runs) {
        (None, 1..) => ref_model.run(&timing_feed_refs(&timing_feed)).err(),
        _ => None,
    };
    if a.latency_runs > 0 {
        match untimeable {
            None => {
                let l = measure::latencies(
                    &[&ref_model, &new_model],
                    &timing_feed,
                    a.latency_runs,
                    a.threads,
                )?;
                before.latency_ms = Some(l[0]);
                after.latency_ms = Some(l[1]);
            }
            Some(e) => eprintln!(
                "note: latency not measured: the original model does not run on random inputs {} ({e:#}); pass --data, or --dim NAME=SIZE for its symbolic dims",
                timing_feed
                    .iter()
                    .map(|(n, t)| format!("{n}={}", dims_str(&t.dims)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    if let Some(r) = &qreport {
        let mut meta = quantize::metadata_json(r, &qopts, error.as_deref());
        if let Some(gd) = &guard {
            meta["max_error"] = gd.to_json();
        }
        if let Some(sr) = &static_report {
            meta["method"] = json!("int8-static");
            meta["activations"] = json!(format!(
                "convs ({} of them, QLinearConv): int8 in and out, per-tensor scale and zero point from {} calibration samples ({}); other layers: int8 asymmetric per row, quantized at run time",
                sr.converted.len(),
                sr.samples,
                sr.method
            ));
            meta["static"] = sr.to_json();
        }
        measure::round_floats(&mut meta);
        g.metadata.insert("quantization".into(), meta.to_string());
    }
    let mut measured = json!({"before": before.to_json(), "after": after.to_json()});
    // The file's own size is not known until this metadata is in it (the
    // number here would be the size without it); the file says it anyway.
    if let Some(m) = measured["after"].as_object_mut() {
        m.remove("file_bytes");
    }
    if let Some(d) = &a.data {
        measured["data"] = json!(d.display().to_string());
    }
    let file_steps: Vec<serde_json::Value> = steps.iter().map(step_summary).collect();
    let mut compression = json!({"steps": file_steps, "measured": measured});
    measure::round_floats(&mut compression);
    g.metadata
        .insert("compression".into(), compression.to_string());
    let bytes = to_bytes(&g, FloatStorage::F32).map_err(|e| anyhow!("{e}"))?;
    Model::from_bytes(&bytes)
        .map_err(|e| anyhow!("internal error: the written model does not load: {e}"))?;
    write_atomic(output, &bytes)?;
    after.file_bytes = bytes.len();
    let ratio = f32_len as f64 / bytes.len().max(1) as f64;
    if a.json {
        let mut j = json!({"steps": steps, "before": before.to_json(), "after": after.to_json(),
            "file": output.display().to_string(), "file_bytes": bytes.len(), "f32_file_bytes": f32_len,
            "size_ratio": ratio});
        if let Some(r) = &qreport {
            j["quantization"] = quantize::metadata_json(r, &qopts, error.as_deref());
            // --json carries the per-layer report too (shapes, bytes,
            // int8-stored weights), which the file's metadata leaves out.
            j["quantization"]["layers"] = r.to_json();
            if let Some(gd) = &guard {
                j["quantization"]["max_error"] = gd.to_json();
            }
            if let Some(sr) = &static_report {
                j["quantization"]["static"] = sr.to_json();
            }
        }
        if let Some(e) = &error {
            j["error"] = json!(e.iter().map(|o| json!({"name": o.name, "max_abs_diff": o.max_abs_diff,
                "mean_abs_diff": o.mean_abs_diff, "cosine": o.cosine, "min_row_cosine": o.min_row_cosine,
                "mean_row_cosine": o.mean_row_cosine, "samples": o.samples})).collect::<Vec<_>>());
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    match (&error, &a.data) {
        (Some(e), Some(d)) => {
            println!(
                "error of the compressed model vs the original on {}:",
                d.display()
            );
            println!(
                "  {:<24} {:>11} {:>11} {:>10} {:>12} {:>12} {:>8}",
                "output",
                "max|diff|",
                "mean|diff|",
                "cosine",
                "min sample",
                "mean sample",
                "samples"
            );
            for o in e {
                println!(
                    "  {:<24} {:>11.3e} {:>11.3e} {:>10.6} {:>12.6} {:>12.6} {:>8}",
                    o.name,
                    o.max_abs_diff,
                    o.mean_abs_diff,
                    o.cosine,
                    o.min_row_cosine,
                    o.mean_row_cosine,
                    o.samples
                );
            }
            println!("  (sample = one row of the leading dim; its cosine is over that row)");
        }
        _ => println!(
            "error: not measured (pass --data inputs.npz to measure it against the original)"
        ),
    }
    let timed_on: Vec<String> = timing_feed
        .iter()
        .map(|(n, t)| format!("{n}={}", dims_str(&t.dims)))
        .collect();
    println!(
        "before/after (FLOPs and latency at {}, {} thread(s)):",
        timed_on.join(", "),
        a.threads
    );
    measure::print_table(&[before, after]);
    println!(
        "wrote {} ({} bytes, {:.2} MiB; the f32 .morsel is {} bytes: {ratio:.2}x smaller) in {:.2}s",
        output.display(),
        bytes.len(),
        bytes.len() as f64 / 1048576.0,
        f32_len,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `morsel compress --max-drop` (compress/src/search.rs).
fn search(a: &CompressArgs) -> Result<()> {
    use morsel_compress::search::{self, Repair, SearchOptions, Target};
    let g = morsel_compress::load_any(&a.input)?.graph().clone();
    let model = Model::from_graph(g.clone()).map_err(|e| anyhow!("the f32 model: {e}"))?;
    let data = a
        .data
        .as_ref()
        .context("--max-drop needs --data val.npz (with labels y)")?;
    let (feed, labels) = load_feed(&model, data)?;
    let target = match a.target {
        SearchTarget::Size => Target::Size,
        SearchTarget::Latency => Target::Latency,
    };
    let mut o = SearchOptions::new(
        search::parse_drop(a.max_drop.as_deref().unwrap_or(""))?,
        target,
    );
    o.min_size = a.min_size;
    o.batch = a.batch;
    o.threads = a.threads;
    o.latency_runs = a.latency_runs;
    o.latency_batch = a.latency_batch;
    o.progress = !a.json;
    if a.repair.qat {
        bail!("--qat is not used by the --max-drop search (it repairs in f32, then quantizes)");
    }
    if let Some(p) = &a.repair.distill {
        o.repair = Some(Repair {
            transfer: morsel_compress::distill::load_transfer(p, &g)?,
            options: a.repair.train.options(&g, false)?,
            source: p.display().to_string(),
            max_repairs: 4,
        });
    }
    search::run_cli(
        &g,
        &feed,
        labels.as_deref(),
        &o,
        &a.output,
        a.report.as_deref(),
        a.json,
    )
    .map(|_| ())
}

/// A step as the file's metadata keeps it: per-layer sparsity and ranks
/// are left out (`morsel inspect` reads them off the weights; `--json`
/// prints them), totals stay.
fn step_summary(step: &serde_json::Value) -> serde_json::Value {
    let mut s = step.clone();
    let Some(o) = s.as_object_mut() else {
        return s;
    };
    if let Some(layers) = o.get("layers").and_then(|l| l.as_array()).cloned()
        && layers.iter().all(|l| l.get("zeros").is_some())
    {
        let sum = |k: &str| {
            layers
                .iter()
                .filter_map(|l| l.get(k).and_then(|v| v.as_u64()))
                .sum::<u64>()
        };
        o.remove("layers");
        o.insert("layers_pruned".into(), json!(layers.len()));
        o.insert("params".into(), json!(sum("params")));
        o.insert("zeros".into(), json!(sum("zeros")));
    }
    if let Some(f) = o.remove("factorized").and_then(|f| f.as_array().cloned()) {
        let sum = |k: &str| {
            f.iter()
                .filter_map(|l| l.get(k).and_then(|v| v.as_u64()))
                .sum::<u64>()
        };
        o.insert("layers_factorized".into(), json!(f.len()));
        o.insert("params_before".into(), json!(sum("params_before")));
        o.insert("params_after".into(), json!(sum("params_after")));
        o.remove("skipped");
    }
    o.remove("not_prunable");
    s
}

/// One column of the before/after table.
fn summarize(
    label: &str,
    model: &Model,
    file_bytes: usize,
    data: &Option<(Feed, Option<Vec<i64>>)>,
    timing_feed: &Feed,
    reference: Option<&Model>,
    a: &CompressArgs,
) -> Result<Summary> {
    let (params, nonzero_params) = prune::parameters(model.graph());
    let dims: Vec<(String, Vec<usize>)> = timing_feed
        .iter()
        .map(|(n, t)| (n.clone(), t.dims.clone()))
        .collect();
    let mut s = Summary {
        label: label.into(),
        params,
        nonzero_params,
        file_bytes,
        flops: measure::flops(model.graph(), &dims).ok(),
        ..Summary::default()
    };
    if let Some((feed, labels)) = data {
        let (out, dims) = run_batched(model, feed, a.batch, a.threads)?;
        let n = dims.first().copied().unwrap_or(0);
        // Top-1 only makes sense for [N, classes] outputs.
        if dims.len() == 2 && n > 0 {
            let pred = argmax_rows(&out, dims[1]);
            if let Some(y) = labels
                && y.len() == n
            {
                let ok = pred
                    .iter()
                    .zip(y)
                    .filter(|(p, y)| **p as i64 == **y)
                    .count();
                s.accuracy = Some(ok as f64 / n as f64);
            }
            if let Some(r) = reference {
                let (ro, _) = run_batched(r, feed, a.batch, a.threads)?;
                let rp = argmax_rows(&ro, dims[1]);
                let same = pred.iter().zip(&rp).filter(|(a, b)| a == b).count();
                s.agreement = Some(same as f64 / n as f64);
            }
        }
    }
    Ok(s)
}

/// Mean |x| per channel of each consumer input of `groups`, on up to 32
/// rows of `feed`.
fn activation_stats(
    g: &morsel_runtime::Graph,
    groups: &[prune::ChannelGroup],
    feed: &Feed,
    threads: usize,
) -> Result<std::collections::HashMap<usize, Vec<f64>>> {
    let mut wanted: Vec<(usize, usize, usize)> = Vec::new();
    for gr in groups {
        for &(_, v) in &gr.consumers {
            if !wanted.iter().any(|w| w.0 == v) {
                wanted.push((v, gr.axis, gr.channels));
            }
        }
    }
    channel_means(g, &wanted, feed, threads)
}

/// Mean |x| along `axis` (with `channels` entries) of each wanted value
/// `(value, axis, channels)`, on up to 32 rows of `feed`: graph inputs are
/// read from the feed, intermediates by running the model with them as
/// extra outputs.
fn channel_means(
    g: &morsel_runtime::Graph,
    wanted: &[(usize, usize, usize)],
    feed: &Feed,
    threads: usize,
) -> Result<std::collections::HashMap<usize, Vec<f64>>> {
    let sample = measure::head(feed, 32)?;
    let mut probe = g.clone();
    let first = probe.outputs.len();
    let inner: Vec<usize> = wanted
        .iter()
        .map(|w| w.0)
        .filter(|v| !g.inputs.contains(v))
        .collect();
    probe.outputs.extend(&inner);
    let m = Model::from_graph(probe).map_err(|e| anyhow!("{e}"))?;
    let mut s = m.session(Options {
        threads,
        ..Options::default()
    });
    let refs: Vec<(&str, _)> = sample.iter().map(|(n, t)| (n.as_str(), t.view())).collect();
    let outs = s.run(&refs).map_err(|e| anyhow!("{e}"))?;
    let mut stats = std::collections::HashMap::new();
    for &(v, axis, c) in wanted {
        let t = match inner.iter().position(|&i| i == v) {
            Some(i) => &outs[first + i],
            None => {
                let name = &g.values[v].name;
                &sample
                    .iter()
                    .find(|(n, _)| n == name)
                    .with_context(|| format!("no data for input '{name}'"))?
                    .1
            }
        };
        if t.dims.get(axis) != Some(&c) {
            bail!(
                "'{}' is {} at run time, expected {c} channels on axis {axis}",
                g.values[v].name,
                dims_str(&t.dims)
            );
        }
        let x = t.to_f32_vec()?;
        let inner: usize = t.dims[axis + 1..].iter().product();
        let mut sum = vec![0f64; c];
        for (j, val) in x.iter().enumerate() {
            sum[(j / inner.max(1)) % c] += val.abs() as f64;
        }
        let per = (x.len() / c.max(1)).max(1) as f64;
        stats.insert(v, sum.into_iter().map(|s| s / per).collect());
    }
    Ok(stats)
}

/// Mean |input| per input channel of every MatMul, Gemm and Conv with a
/// constant weight, by node name (activation-aware low-rank).
fn layer_input_stats(
    g: &morsel_runtime::Graph,
    feed: &Feed,
    threads: usize,
) -> Result<std::collections::HashMap<String, Vec<f64>>> {
    let mut g = g.clone();
    g.infer_shapes().map_err(|e| anyhow!("{e}"))?;
    let mut wanted = Vec::new();
    let mut names = Vec::new();
    for n in &g.nodes {
        let Some((_, layout)) = prune::weight_of(&g, n) else {
            continue;
        };
        let Some(Some(x)) = n.inputs.first().copied() else {
            continue;
        };
        let rank = g.values[x].shape.len();
        let (axis, c) = match morsel_runtime::ops::op_name(n.op) {
            "MatMul" | "Gemm" if rank >= 1 => (rank - 1, layout.reduction()),
            "Conv" if rank >= 3 => {
                let w = n.inputs[1].and_then(|w| g.values[w].konst.as_ref());
                match w {
                    Some(w) if n.attrs.int("group", 1).unwrap_or(1) == 1 => (1, w.dims[1]),
                    _ => continue,
                }
            }
            _ => continue,
        };
        if !wanted.iter().any(|w: &(usize, usize, usize)| w.0 == x) {
            wanted.push((x, axis, c));
        }
        names.push((n.name.clone(), x));
    }
    let by_value = channel_means(&g, &wanted, feed, threads)?;
    Ok(names
        .into_iter()
        .filter_map(|(n, x)| Some((n, by_value.get(&x)?.clone())))
        .collect())
}

fn print_static_report(r: &calibrate::StaticReport) {
    println!(
        "static int8 ({} on {} calibration samples): {} conv{} take{} and give int8 (QLinearConv); {} QuantizeLinear and {} DequantizeLinear remain",
        r.method,
        r.samples,
        r.converted.len(),
        if r.converted.len() == 1 { "" } else { "s" },
        if r.converted.len() == 1 { "s" } else { "" },
        r.quantize_nodes,
        r.dequantize_nodes
    );
    for (n, why) in &r.dynamic {
        println!("  {n}: dynamic, {why}");
    }
}

fn print_quant_report(report: &quantize::QuantReport, opts: &QuantOptions) {
    let mib = |b: usize| b as f64 / 1048576.0;
    let (wb, wa) = report.weight_bytes();
    println!(
        "int8 dynamic quantization: {} layers to int8, {} kept in f32; their weights {:.1} MiB -> {:.1} MiB",
        report.converted.len(),
        report.kept.len(),
        mib(wb),
        mib(wa)
    );
    let stored: Vec<_> = report.kept.iter().filter_map(|k| k.int8_storage).collect();
    if !stored.is_empty() {
        let (f, q) = stored
            .iter()
            .fold((0, 0), |(a, b), (f, q, _)| (a + f, b + q));
        println!(
            "  of those kept in f32, {} store their weights int8 (computing in f32): {:.1} KiB -> {:.1} KiB",
            stored.len(),
            f as f64 / 1024.0,
            q as f64 / 1024.0
        );
    }
    if report.converted.is_empty() {
        println!(
            "note: no layer was converted (int8 covers MatMul, Gemm and embedding Gathers with constant f32 weights of at least --min-size {} elements)",
            opts.min_size
        );
    } else {
        println!("converted (weight relative error ‖W−Ŵ‖/‖W‖):");
    }
    for c in &report.converted {
        println!(
            "  {:<56} {:>7} -> {:<8} {:>12}  {:.2e}",
            c.node,
            c.from,
            c.to,
            dims_str(&c.shape),
            c.weight_rel_error
        );
    }
    if !report.kept.is_empty() {
        println!("kept in f32:");
        for k in &report.kept {
            match (k.int8_storage, k.half_storage) {
                (Some((_, _, rel)), _) => println!(
                    "  {:<56} {:>7}  {}; weight stored int8 per channel (rel. error {rel:.2e}), widened at load",
                    k.node, k.op, k.reason
                ),
                (None, true) => println!(
                    "  {:<56} {:>7}  {}; weights stored as IEEE halves, widened at load",
                    k.node, k.op, k.reason
                ),
                (None, false) => println!("  {:<56} {:>7}  {}", k.node, k.op, k.reason),
            }
        }
    }
}

/// The inputs in a `.npz` for `model` (by input name, or `x` for a
/// one-input model) and its labels (`y` or `labels`) if any.
fn load_feed(model: &Model, data: &Path) -> Result<(Feed, Option<Vec<i64>>)> {
    let g = model.graph();
    let arrays = npy::read_npz(data)?;
    let input_names: Vec<String> = g.inputs.iter().map(|&i| g.values[i].name.clone()).collect();
    let mut feed = Vec::new();
    let mut labels: Option<Vec<i64>> = None;
    for (k, l) in arrays {
        if k == "y" || k == "labels" {
            labels = Some(
                l.tensor
                    .to_i64_vec()
                    .map_err(|e| anyhow!("labels '{k}': {e}"))?,
            );
        } else if input_names.contains(&k) {
            let t = adapt_dtype(model, &k, l)?;
            feed.push((k, t));
        } else if k == "x" && input_names.len() == 1 {
            let name = input_names[0].clone();
            let t = adapt_dtype(model, &name, l)?;
            feed.push((name, t));
        }
    }
    if feed.len() != input_names.len() {
        bail!(
            "{}: needs arrays for the model's inputs ({}) — found {}",
            data.display(),
            input_names.join(", "),
            feed.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((feed, labels))
}

fn inspect(path: &Path, as_json: bool) -> Result<()> {
    let model = morsel_compress::load_any(path)?;
    let g = model.graph();
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry(morsel_runtime::ops::op_name(n.op)).or_insert(0) += 1;
    }
    let params: usize = g
        .values
        .iter()
        .filter_map(|v| v.konst.as_ref())
        .filter(|t| t.dtype.is_float() || t.dtype == DType::I8)
        .map(|t| t.numel())
        .sum();
    let file_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let encodings = if morsel_compress::is_onnx(path) {
        BTreeMap::new()
    } else {
        let bytes = std::fs::read(path)?;
        let store: morsel_runtime::format::reader::Store = std::sync::Arc::new(bytes);
        morsel_runtime::format::reader::encoding_sizes(store).map_err(|e| anyhow!("{e}"))?
    };
    let layers = morsel_compress::layers::layers(g);
    // Peak activation memory, planned before running (symbolic dims = 1).
    let dims1: Vec<Vec<usize>> = g
        .inputs
        .iter()
        .map(|&i| {
            g.values[i]
                .shape
                .iter()
                .map(|d| d.known().unwrap_or(1))
                .collect()
        })
        .collect();
    let planned = model
        .session(Options::default())
        .plan(&dims1)
        .map(|p| (p.activation_bytes(), p.unshared_bytes()));
    let io = |ids: &[usize]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|&i| {
                let v = &g.values[i];
                json!({"name": v.name, "dtype": v.dtype.name(), "shape": v.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>()})
            })
            .collect()
    };
    if as_json {
        let j = json!({
            "file": path.display().to_string(),
            "file_bytes": file_size,
            "inputs": io(&g.inputs),
            "outputs": io(&g.outputs),
            "nodes": g.nodes.len(),
            "ops": ops,
            "parameters": params,
            "bytes_by_encoding": encodings,
            "layers": layers.iter().map(|l| l.to_json()).collect::<Vec<_>>(),
            "planned_activation_bytes": planned.as_ref().ok().map(|p| p.0),
            "metadata": g.metadata,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("{} ({} bytes)", path.display(), file_size);
    println!("inputs:");
    for &i in &g.inputs {
        println!("  {}", g.describe_value(i));
    }
    println!("outputs:");
    for &i in &g.outputs {
        println!("  {}", g.describe_value(i));
    }
    println!("nodes: {}   parameters: {}", g.nodes.len(), params);
    match &planned {
        Ok((a, u)) => println!(
            "activation memory (planned, symbolic dims = 1): {:.1} KiB ({:.1} KiB if nothing were shared)",
            *a as f64 / 1024.0,
            *u as f64 / 1024.0
        ),
        Err(e) => println!("activation memory: not plannable before running ({e})"),
    }
    println!("ops:");
    for (op, n) in &ops {
        println!("  {op:<20} {n}");
    }
    if !encodings.is_empty() {
        println!("tensor bytes by encoding and dtype:");
        for (e, n) in &encodings {
            println!("  {e:<20} {n}");
        }
    }
    if !layers.is_empty() {
        println!(
            "layers with weights ({}; bytes include int8 scales):",
            layers.len()
        );
        for l in &layers {
            let zeros = if l.sparsity > 0.0 {
                format!(" {:>5.1}% zero;", 100.0 * l.sparsity)
            } else {
                String::new()
            };
            println!(
                "  {:<50} {:<8} {:<18} {:>9} B {zeros} {}; {}",
                l.node, l.op, l.weight, l.weight_bytes, l.encoding, l.compute
            );
        }
    }
    if !g.metadata.is_empty() {
        println!("metadata:");
        for (k, v) in &g.metadata {
            match (k.as_str(), serde_json::from_str::<serde_json::Value>(v)) {
                ("quantization", Ok(q)) => print_quantization(&q),
                _ => println!("  {k}: {v}"),
            }
        }
    }
    Ok(())
}

/// The `quantization` metadata in short (`inspect --json` has all of it).
fn print_quantization(q: &serde_json::Value) {
    let s = |k: &str| q[k].as_str().unwrap_or("?").to_string();
    println!(
        "  quantization: {}, {} layers converted, {} kept in f32 (inspect --json lists them)",
        s("method"),
        q["nodes_converted"],
        q["nodes_kept_float"],
    );
    let (weights, activations) = quantize::method_text(q["method"].as_str().unwrap_or(""));
    let or = |k: &str, default: &str| q[k].as_str().unwrap_or(default).to_string();
    println!("    weights: {}", or("weights", weights));
    println!("    activations: {}", or("activations", activations));
    match &q["error"] {
        serde_json::Value::Array(outs) => {
            for o in outs {
                let f = |k: &str| o[k].as_f64().unwrap_or(f64::NAN);
                println!(
                    "    measured vs f32, {} on {} samples: max|diff| {:.3e}, mean|diff| {:.3e}, cosine {:.6} (per sample: min {:.6}, mean {:.6})",
                    o["output"].as_str().unwrap_or("?"),
                    o["samples"],
                    f("max_abs_diff"),
                    f("mean_abs_diff"),
                    f("cosine"),
                    f("min_sample_cosine"),
                    f("mean_sample_cosine"),
                );
            }
        }
        e => println!("    error: {}", e.as_str().unwrap_or("?")),
    }
}

/// Parse `name=path` arguments against the model's inputs.
fn load_inputs(model: &Model, args: &[String]) -> Result<Vec<(String, Tensor)>> {
    let g = model.graph();
    let mut out = Vec::new();
    for a in args {
        // One .npz holds every input by name (as `eval --data` reads it).
        if a.ends_with(".npz") && !a.contains('=') {
            for (name, loaded) in npy::read_npz(Path::new(a))? {
                if !g.inputs.iter().any(|&i| g.values[i].name == name) {
                    bail!("'{a}' has an array '{name}' that is not an input of the model");
                }
                let t = adapt_dtype(model, &name, loaded)?;
                out.push((name, t));
            }
            continue;
        }
        let (name, file) = match a.split_once('=') {
            Some((n, f)) => (n.to_string(), f),
            None if g.inputs.len() == 1 => (g.values[g.inputs[0]].name.clone(), a.as_str()),
            None => bail!(
                "'{a}': the model has {} inputs; write name=file.npy, or pass one .npz holding every input by name",
                g.inputs.len()
            ),
        };
        let loaded = npy::read_npy(Path::new(file))?;
        let t = adapt_dtype(model, &name, loaded)?;
        out.push((name, t));
    }
    Ok(out)
}

/// numpy saves float64 by default: convert it to the model's f32, saying so.
fn adapt_dtype(model: &Model, name: &str, l: npy::Loaded) -> Result<Tensor> {
    let g = model.graph();
    let want = g
        .inputs
        .iter()
        .map(|&i| &g.values[i])
        .find(|v| v.name == name)
        .map(|v| v.dtype);
    if l.stored == "<f8" && want == Some(DType::F32) {
        eprintln!("note: input '{name}' is float64; converted to float32");
    } else if l.stored == "<f8" {
        bail!(
            "input '{name}' is float64; the model wants {}",
            want.map(|d| d.name()).unwrap_or("?")
        );
    }
    Ok(l.tensor)
}

fn run(path: &Path, args: &[String], out_dir: &Path, threads: usize) -> Result<()> {
    let model = morsel_compress::load_any(path)?;
    let inputs = load_inputs(&model, args)?;
    let mut session = model.session(Options {
        threads,
        ..Options::default()
    });
    let refs: Vec<(&str, _)> = inputs.iter().map(|(n, t)| (n.as_str(), t.view())).collect();
    let outputs = session.run(&refs).map_err(|e| anyhow!("{e}"))?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let g = model.graph();
    for (&o, t) in g.outputs.iter().zip(&outputs) {
        let name = &g.values[o].name;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let file = out_dir.join(format!("{safe}.npy"));
        npy::write_npy(&file, t)?;
        println!(
            "{name}: {} {} -> {}",
            t.dtype,
            dims_str(&t.dims),
            file.display()
        );
    }
    Ok(())
}

/// Deterministic pseudo-random inputs for benchmarking.
/// `feed` as the name/view pairs `Model::run` takes.
fn timing_feed_refs(feed: &[(String, Tensor)]) -> Vec<(&str, morsel_runtime::TensorRef<'_>)> {
    feed.iter().map(|(n, t)| (n.as_str(), t.view())).collect()
}

fn random_inputs(model: &Model, dims: &[String]) -> Result<Vec<(String, Tensor)>> {
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for d in dims {
        let (k, v) = d
            .split_once('=')
            .with_context(|| format!("--dim '{d}': write NAME=SIZE"))?;
        sizes.insert(
            k.to_string(),
            v.parse()
                .with_context(|| format!("--dim '{d}': size is not a number"))?,
        );
    }
    let g = model.graph();
    let known: Vec<&str> = g
        .inputs
        .iter()
        .flat_map(|&i| g.values[i].shape.iter())
        .filter_map(|d| match d {
            Dim::Sym(s) => Some(&**s),
            Dim::Known(_) => None,
        })
        .collect();
    if let Some(k) = sizes.keys().find(|k| !known.contains(&k.as_str())) {
        let mut names = known.clone();
        names.sort_unstable();
        names.dedup();
        bail!(
            "--dim '{k}': the model's inputs have no symbolic dim of that name ({})",
            if names.is_empty() {
                "they have none".to_string()
            } else {
                format!("theirs: {}", names.join(", "))
            }
        );
    }
    let mut seed = 0x2545F491u32;
    let mut out = Vec::new();
    for &i in &g.inputs {
        let v = &g.values[i];
        let shape: Vec<usize> = v
            .shape
            .iter()
            .map(|d| match d {
                Dim::Known(n) => *n,
                Dim::Sym(s) => sizes.get(&**s).copied().unwrap_or(1),
            })
            .collect();
        let n: usize = shape.iter().product();
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let t = match v.dtype {
            DType::F32 => Tensor::from_slice(
                &shape,
                &(0..n)
                    .map(|_| (next() >> 8) as f32 / (1 << 24) as f32)
                    .collect::<Vec<_>>(),
            )?,
            // Integer inputs are mostly indices (token ids, token types)
            // and masks: 0s and 1s are valid for any table of two or more
            // rows, and for a mask.
            DType::I64 => Tensor::from_slice(
                &shape,
                &(0..n).map(|_| (next() % 2) as i64).collect::<Vec<_>>(),
            )?,
            DType::I32 => Tensor::from_slice(
                &shape,
                &(0..n).map(|_| (next() % 2) as i32).collect::<Vec<_>>(),
            )?,
            d => bail!(
                "cannot make random data for input '{}' of dtype {d}; pass --input",
                v.name
            ),
        };
        out.push((v.name.clone(), t));
    }
    Ok(out)
}

/// Anonymous (private, not file-backed) memory of this process (Linux), in bytes.
fn anon_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = s.lines().find(|l| l.starts_with("Anonymous:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn bench(
    path: &Path,
    args: &[String],
    dims: &[String],
    warmup: usize,
    runs: usize,
    threads: usize,
    as_json: bool,
    profile: bool,
) -> Result<()> {
    let anon_before = anon_bytes();
    let model = morsel_compress::load_any(path)?;
    let anon_loaded = anon_bytes();
    let inputs = if args.is_empty() {
        random_inputs(&model, dims)?
    } else {
        load_inputs(&model, args)?
    };
    let mut session = model.session(Options {
        threads,
        ..Options::default()
    });
    let refs: Vec<(&str, _)> = inputs.iter().map(|(n, t)| (n.as_str(), t.view())).collect();
    for _ in 0..warmup.max(1) {
        session.run(&refs).map_err(|e| anyhow!("{e}"))?;
    }
    if profile {
        session.set_profiling(true).map_err(|e| anyhow!("{e}"))?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let out = session.run(&refs).map_err(|e| anyhow!("{e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let (med, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
    let rss = peak_rss();
    let load_private = anon_loaded
        .zip(anon_before)
        .map(|(a, b)| a.saturating_sub(b));
    let planned = session
        .plan(
            &inputs
                .iter()
                .map(|(_, t)| t.dims.clone())
                .collect::<Vec<_>>(),
        )
        .ok()
        .map(|p| p.activation_bytes());
    let shapes: Vec<String> = inputs
        .iter()
        .map(|(n, t)| format!("{n}={}", dims_str(&t.dims)))
        .collect();
    let nodes = session.profile();
    if as_json {
        let mut report = json!({"model": path.display().to_string(), "inputs": shapes, "threads": threads, "runs": times.len(),
                   "median_ms": med, "p90_ms": p90, "min_ms": times[0], "peak_rss_bytes": rss,
                   "load_private_bytes": load_private, "planned_activation_bytes": planned,
                   "held_bytes": session.held_bytes()});
        if profile {
            report["profile"] = nodes
                .iter()
                .map(|n| {
                    json!({"node": n.node, "op": n.op, "calls": n.calls,
                                "ms_per_run": n.total.as_secs_f64() * 1e3 / n.calls.max(1) as f64})
                })
                .collect();
        }
        println!("{report}");
    } else {
        println!(
            "{} [{}] threads={threads}",
            path.display(),
            shapes.join(", ")
        );
        println!(
            "  median {med:.3} ms   p90 {p90:.3} ms   min {:.3} ms   ({} runs after {} warm-up)",
            times[0],
            times.len(),
            warmup.max(1)
        );
        let mib = |b: Option<u64>| {
            b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
                .unwrap_or_else(|| "n/a".into())
        };
        println!(
            "  peak RSS {}   private memory added by loading {}   file {}",
            mib(rss),
            mib(load_private),
            mib(std::fs::metadata(path).ok().map(|m| m.len()))
        );
        println!(
            "  planned activations {:.1} KiB   held by the session (activations + scratch) {:.1} KiB",
            planned.unwrap_or(0) as f64 / 1024.0,
            session.held_bytes() as f64 / 1024.0
        );
        if profile {
            print_profile(&nodes);
        }
    }
    Ok(())
}

/// Where the time went: by op type, then the slowest nodes (ms per run).
fn print_profile(nodes: &[morsel_runtime::NodeTime]) {
    let per_run =
        |n: &morsel_runtime::NodeTime| n.total.as_secs_f64() * 1e3 / n.calls.max(1) as f64;
    let total: f64 = nodes.iter().map(per_run).sum();
    let mut by_op: Vec<(&str, usize, f64)> = Vec::new();
    for n in nodes {
        match by_op.iter_mut().find(|(op, _, _)| *op == n.op) {
            Some(e) => {
                e.1 += 1;
                e.2 += per_run(n);
            }
            None => by_op.push((n.op, 1, per_run(n))),
        }
    }
    by_op.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("  profile: {total:.3} ms per run in {} nodes", nodes.len());
    println!(
        "    {:<24} {:>6} {:>10} {:>6}",
        "op", "nodes", "ms/run", "share"
    );
    for (op, count, ms) in &by_op {
        println!(
            "    {op:<24} {count:>6} {ms:>10.3} {:>5.1}%",
            100.0 * ms / total.max(1e-12)
        );
    }
    println!("    slowest nodes:");
    for n in nodes.iter().take(15) {
        let ms = per_run(n);
        println!(
            "    {:<40} {:<16} {ms:>8.3} {:>5.1}%",
            n.node,
            n.op,
            100.0 * ms / total.max(1e-12)
        );
    }
}

fn eval(
    path: &Path,
    data: &Path,
    reference: Option<&Path>,
    batch: usize,
    threads: usize,
    as_json: bool,
) -> Result<()> {
    let model = morsel_compress::load_any(path)?;
    let (feed, labels) = load_feed(&model, data)?;
    let t = Instant::now();
    let (out, dims) = run_batched(&model, &feed, batch, threads)?;
    let secs = t.elapsed().as_secs_f64();
    let n = dims.first().copied().unwrap_or(0);
    let classes = out.len().checked_div(n).unwrap_or(0);
    let pred = argmax_rows(&out, classes);
    let mut report = serde_json::Map::new();
    report.insert("samples".into(), json!(n));
    report.insert("output_shape".into(), json!(dims_str(&dims)));
    report.insert("seconds".into(), json!(secs));
    if let Some(y) = &labels {
        if y.len() != n {
            bail!("{} labels for {n} samples", y.len());
        }
        let correct = pred
            .iter()
            .zip(y)
            .filter(|(p, y)| **p as i64 == **y)
            .count();
        report.insert("accuracy".into(), json!(correct as f64 / n.max(1) as f64));
        report.insert("correct".into(), json!(correct));
    }
    if let Some(r) = reference {
        let ref_out: Vec<f32> = if r.extension().is_some_and(|e| e == "npy") {
            let t = npy::read_npy(r)?.tensor;
            if t.numel() != out.len() {
                bail!(
                    "reference {} has shape {}, the model's output is {}",
                    r.display(),
                    dims_str(&t.dims),
                    dims_str(&dims)
                );
            }
            t.to_f32_vec()?
        } else {
            let rm = morsel_compress::load_any(r)?;
            run_batched(&rm, &feed, batch, threads)?.0
        };
        if ref_out.len() != out.len() {
            bail!(
                "reference output has {} values, the model's has {}",
                ref_out.len(),
                out.len()
            );
        }
        let max_diff = out
            .iter()
            .zip(&ref_out)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let rp = argmax_rows(&ref_out, classes);
        let agree = pred.iter().zip(&rp).filter(|(a, b)| a == b).count();
        report.insert("reference".into(), json!(r.display().to_string()));
        report.insert("max_abs_diff".into(), json!(max_diff));
        report.insert(
            "top1_agreement".into(),
            json!(agree as f64 / n.max(1) as f64),
        );
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} samples, output {})",
        path.display(),
        data.display(),
        n,
        dims_str(&dims)
    );
    if let Some(a) = report.get("accuracy") {
        println!(
            "  accuracy        {:.4} ({}/{})",
            a.as_f64().unwrap_or(0.0),
            report["correct"],
            n
        );
    }
    if let Some(r) = reference {
        println!("  vs reference    {}", r.display());
        println!(
            "  max |diff|      {:.3e}",
            report["max_abs_diff"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "  top-1 agreement {:.4}",
            report["top1_agreement"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = shape_str;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use morsel_runtime::graph::{Attrs, Graph, Node};
    use morsel_runtime::ops::op_id;

    /// Random integer inputs stay valid indices for a two-row table (a
    /// BERT token-type embedding), so `compress` without --data can time
    /// such a model (it failed on MiniLM with ids 0..99).
    #[test]
    fn random_integer_inputs_index_a_two_row_table() {
        let mut g = Graph::default();
        let ids = g.add_value(
            "token_type_ids",
            DType::I64,
            vec![Dim::Known(1), Dim::Sym("seq".into())],
        );
        let table = g.add_const(
            "table",
            Tensor::from_slice(&[2, 3], &[0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(),
        );
        let out = g.add_value("out", DType::F32, Vec::new());
        g.nodes.push(Node {
            name: "gather".into(),
            op: op_id("Gather").unwrap(),
            attrs: Attrs::new(),
            inputs: vec![Some(table), Some(ids)],
            outputs: vec![out],
        });
        g.inputs.push(ids);
        g.outputs.push(out);
        let model = Model::from_graph(g).unwrap();
        let inputs = random_inputs(&model, &["seq=64".to_string()]).unwrap();
        let t = &inputs[0].1;
        assert_eq!(t.dims, vec![1, 64]);
        let v = t.to_i64_vec().unwrap();
        assert!(v.iter().all(|&i| i == 0 || i == 1), "{v:?}");
        assert!(v.contains(&0) && v.contains(&1), "both rows used: {v:?}");
        let mut s = model.session(Options::default());
        let r = s.run(&[("token_type_ids", t.view())]).unwrap();
        assert_eq!(r[0].dims, vec![1, 64, 3]);
    }
}
