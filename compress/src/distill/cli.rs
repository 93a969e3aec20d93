//! The command-line faces of distillation: the training flags shared by
//! `morsel compress --distill` (repair) and `morsel distill` (student), and
//! the two drivers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::ValueEnum;
use morsel_runtime::format::writer::{FloatStorage, to_bytes, write_atomic};
use morsel_runtime::graph::Graph;
use morsel_runtime::{DType, Model};
use serde_json::{Value as Json, json};

use super::{
    DistillOptions, DistillReport, Loss, Optim, TransferSet, check_student, distill, expose,
    load_transfer, teacher_outputs,
};
use crate::measure::{argmax_rows, run_batched};
use crate::quantize::{QuantOptions, qat_plan};
use crate::train::Student;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    /// KL on temperature-softened logits (×T²), mixed with label
    /// cross-entropy by --alpha.
    Kl,
    /// Mean squared error to the teacher's outputs.
    Mse,
    /// 1 − cosine similarity to the teacher's outputs (embeddings).
    Cosine,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimArg {
    Adamw,
    Sgd,
}

/// Training flags (both modes).
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Passes over the transfer set (the schedule's length; early stopping may end sooner).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = 64)]
    pub train_batch: usize,
    /// Peak learning rate (after warm-up; cosine decay to 0 after it).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.05)]
    pub warmup: f64,
    #[arg(long, value_enum, default_value = "kl")]
    pub loss: LossArg,
    /// Softmax temperature of the KL loss.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// Weight of the cross-entropy on labels (`y` in the transfer set);
    /// the KL term gets 1 − alpha. 1 = labels alone.
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f32,
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimArg,
    /// AdamW's decoupled weight decay (weights only, not biases).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// SGD's momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Seeds the validation split and the shuffles: same seed, same weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of the transfer set held out to validate on (0: none).
    #[arg(long, default_value_t = 0.1)]
    pub val_split: f64,
    /// Stop after this many epochs without a better validation loss (0: never).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Checkpoint file (safetensors), written atomically after every epoch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from --checkpoint if it exists.
    #[arg(long)]
    pub resume: bool,
    /// Hidden-state matching: values inside the graph (comma-separated
    /// names of layer outputs as the ONNX file names them, or of the nodes
    /// that make them) whose mean squared error to the teacher's
    /// same-named values is added to the loss. Each must exist in both,
    /// with the same shape per sample.
    #[arg(long = "match", value_delimiter = ',')]
    pub matches: Vec<String>,
    /// A model input whose zeros mark positions that do not count, such as
    /// a transformer's `attention_mask` (padding tokens): outputs shaped
    /// `[its shape..., C]` average their loss over the other positions.
    #[arg(long)]
    pub loss_mask: Option<String>,
}

impl TrainArgs {
    /// `--loss-mask`'s input, by its position among `g`'s inputs.
    fn loss_mask_input(&self, g: &Graph) -> Result<Option<usize>> {
        let Some(name) = &self.loss_mask else {
            return Ok(None);
        };
        let names: Vec<&str> = g
            .inputs
            .iter()
            .map(|&i| g.values[i].name.as_str())
            .collect();
        match names.iter().position(|n| n == name) {
            Some(i) => Ok(Some(i)),
            None => bail!(
                "--loss-mask {name}: the model has no input of that name (its inputs: {})",
                names.join(", ")
            ),
        }
    }

    /// The options for training `model` (or a student with its inputs).
    pub fn options(&self, model: &Graph, progress: bool) -> Result<DistillOptions> {
        Ok(DistillOptions {
            epochs: self.epochs,
            batch: self.train_batch,
            lr: self.lr,
            warmup: self.warmup,
            optim: match self.optimizer {
                OptimArg::Adamw => Optim::AdamW {
                    weight_decay: self.weight_decay,
                },
                OptimArg::Sgd => Optim::Sgd {
                    momentum: self.momentum,
                },
            },
            loss: match self.loss {
                LossArg::Kl => Loss::Kl {
                    temperature: self.temperature,
                    alpha: self.alpha,
                },
                LossArg::Mse => Loss::Mse,
                LossArg::Cosine => Loss::Cosine,
            },
            seed: self.seed,
            val_fraction: self.val_split,
            patience: (self.patience > 0).then_some(self.patience),
            checkpoint: self.checkpoint.clone(),
            resume: self.resume,
            stop_after: None,
            intermediates: self.matches.len(),
            loss_mask: self.loss_mask_input(model)?,
            progress,
        })
    }
}

/// `morsel compress … --distill transfer.npz`.
#[derive(clap::Args, Debug, Clone)]
pub struct RepairArgs {
    /// Repair the pruned / factorized model by distillation from the
    /// original on this transfer set (.npz: the inputs, optional labels
    /// `y`), before int8. Pruned zeros stay zero.
    #[arg(long)]
    pub distill: Option<PathBuf>,
    /// Quantization-aware repair (with --quantize): train through the int8
    /// rounding that follows (weights per output channel, layer inputs per
    /// row, gradients straight through the rounding), so the int8 weights
    /// written are the ones the last step trained.
    #[arg(long, requires = "distill")]
    pub qat: bool,
    #[command(flatten)]
    pub train: TrainArgs,
}

fn summary_line(r: &DistillReport) -> String {
    let best = r.best.map_or(String::new(), |b| {
        format!(
            "; validation agreement {:.2}% -> {:.2}%",
            100.0 * r.initial.map_or(f64::NAN, |i| i.agreement),
            100.0 * b.agreement
        )
    });
    format!(
        "{} epochs on {} samples ({} held out), kept epoch {}{}{}; {:.0} samples/s, {:.1}s",
        r.history.len(),
        r.train_samples,
        r.val_samples,
        r.best_epoch,
        if r.stopped_early { " (early stop)" } else { "" },
        best,
        r.samples_per_sec,
        r.seconds
    )
}

/// Repair mode: the compressed graph `g` learns `teacher`'s outputs; with
/// `qat` (the int8 options that follow, for --qat) through int8's rounding.
/// Returns the step's JSON for the compression report, or `None` without
/// --distill.
pub fn repair(
    g: &mut Graph,
    teacher: &Model,
    a: &RepairArgs,
    qat: Option<&QuantOptions>,
    threads: usize,
    quiet: bool,
) -> Result<Option<Json>> {
    let Some(path) = &a.distill else {
        return Ok(None);
    };
    // Progress goes to stderr, also with --json (stdout stays the JSON):
    // a run can take half an hour.
    let o = a.train.options(teacher.graph(), true)?;
    let data = load_transfer(path, teacher.graph())?;
    let (targets, mut student) =
        with_matches(teacher, g.clone(), &a.train.matches, &data, threads)?;
    let mut rounded = None;
    if let Some(q) = qat {
        let plan = qat_plan(g, q)?;
        student.fake_quantize(&plan)?;
        rounded = Some(plan.len());
    }
    let report = distill(&student, &data, &targets, &o)?;
    let outputs = g.outputs.len();
    *g = student.export()?;
    g.outputs.truncate(outputs);
    let step = format!(
        "distill({},{} epochs{})",
        o.loss.describe(),
        report.history.len(),
        if qat.is_some() { ", int8-aware" } else { "" }
    );
    crate::quantize::add_recipe_step(g, &step);
    if !quiet {
        println!("{step}: {}", summary_line(&report));
    }
    let mut j = report.summary_json();
    j["step"] = json!(step);
    if let Some(n) = rounded {
        j["qat_rounded_nodes"] = json!(n);
    }
    j["transfer"] = json!(path.display().to_string());
    Ok(Some(j))
}

/// The teacher's targets on `data` and the student ready to train, both
/// with the `--match` values exposed as extra outputs.
fn with_matches(
    teacher: &Model,
    mut student: Graph,
    matches: &[String],
    data: &TransferSet,
    threads: usize,
) -> Result<(Vec<morsel_runtime::tensor::Tensor>, Student)> {
    let targets = if matches.is_empty() {
        teacher_outputs(teacher, data, 256, threads)?
    } else {
        let mut tg = teacher.graph().clone();
        expose(&mut tg, matches, "teacher")?;
        let t =
            Model::from_graph(tg).map_err(|e| anyhow!("the teacher with --match outputs: {e}"))?;
        teacher_outputs(&t, data, 256, threads)?
    };
    expose(&mut student, matches, "student")?;
    Ok((targets, Student::new(student)?))
}

/// `morsel distill`.
#[derive(clap::Args, Debug, Clone)]
pub struct DistillCmd {
    /// The teacher (.onnx or .morsel).
    #[arg(long)]
    pub teacher: PathBuf,
    /// The student (.onnx or .morsel): a smaller model with the teacher's
    /// inputs and outputs, random or pre-trained weights.
    #[arg(long)]
    pub student: PathBuf,
    /// Transfer set (.npz): the teacher's inputs by name (or `x`), optional labels `y`.
    pub transfer: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Labelled .npz to report accuracy on (teacher, student before and after).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainArgs,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

fn load_graph(path: &Path) -> Result<Graph> {
    if crate::is_onnx(path) {
        crate::convert(path)
    } else {
        Ok(crate::load_any(path)?.graph().clone())
    }
}

/// Float constants: the parameter count `inspect` reports.
pub fn param_count(g: &Graph) -> usize {
    g.values
        .iter()
        .filter_map(|v| v.konst.as_ref())
        .filter(|t| t.dtype.is_float() || t.dtype == DType::I8)
        .map(|t| t.numel())
        .sum()
}

/// Accuracy of `model` on labelled data.
fn accuracy(model: &Model, data: &TransferSet, threads: usize) -> Result<Option<f64>> {
    let Some(y) = &data.labels else {
        return Ok(None);
    };
    let g = model.graph();
    let feed: Vec<(String, morsel_runtime::tensor::Tensor)> = g
        .inputs
        .iter()
        .zip(&data.inputs)
        .map(|(&i, t)| (g.values[i].name.clone(), t.clone()))
        .collect();
    let (out, dims) = run_batched(model, &feed, 256, threads)?;
    let classes = dims.last().copied().unwrap_or(1);
    let pred = argmax_rows(&out, classes);
    let ok = pred
        .iter()
        .zip(y)
        .filter(|(p, y)| **p as i64 == **y)
        .count();
    Ok(Some(ok as f64 / y.len().max(1) as f64))
}

/// Peak resident set size of this process (Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Student mode: train `--student` on `--teacher`'s outputs and write it.
pub fn run_student_mode(a: &DistillCmd) -> Result<()> {
    let t = Instant::now();
    let teacher = crate::load_any(&a.teacher)?;
    let sg = load_graph(&a.student)?;
    check_student(teacher.graph(), &sg)?;
    let data = load_transfer(&a.transfer, teacher.graph())?;
    let test = match &a.data {
        Some(d) => Some(load_transfer(d, teacher.graph())?),
        None => None,
    };
    let (targets, student) =
        with_matches(&teacher, sg.clone(), &a.train.matches, &data, a.threads)?;
    let outputs = sg.outputs.len();
    let before_model = Model::from_graph(sg).map_err(|e| anyhow!("the student: {e}"))?;
    let o = a.train.options(teacher.graph(), true)?;
    let report = distill(&student, &data, &targets, &o)?;
    let mut g = student.export()?;
    g.outputs.truncate(outputs);
    let step = format!(
        "distill({},{} epochs)",
        o.loss.describe(),
        report.history.len()
    );
    crate::quantize::add_recipe_step(&mut g, &step);
    g.metadata.insert(
        "distillation".into(),
        json!({"teacher": a.teacher.display().to_string(), "transfer": a.transfer.display().to_string(),
               "report": report.summary_json()})
        .to_string(),
    );
    let bytes = to_bytes(&g, FloatStorage::F32).map_err(|e| anyhow!("{e}"))?;
    let after_model = Model::from_bytes(&bytes)
        .map_err(|e| anyhow!("internal error: the written student does not load: {e}"))?;
    let (tp, sp) = (param_count(teacher.graph()), param_count(&g));
    let acc = match &test {
        Some(d) => Some((
            accuracy(&teacher, d, a.threads)?,
            accuracy(&before_model, d, a.threads)?,
            accuracy(&after_model, d, a.threads)?,
        )),
        None => None,
    };
    if acc.is_some_and(|(t, _, _)| t.is_none()) {
        bail!("--data has no labels ('y'): nothing to measure accuracy against");
    }
    write_atomic(&a.output, &bytes)?;
    let rss = peak_rss();
    if a.json {
        let mut j = json!({"teacher_params": tp, "student_params": sp, "report": report.to_json(),
            "file": a.output.display().to_string(), "file_bytes": bytes.len(), "peak_rss_bytes": rss});
        if let Some((t, b, s)) = acc {
            j["accuracy"] = json!({"teacher": t, "student_before": b, "student_after": s});
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("{step}: {}", summary_line(&report));
    println!(
        "parameters: teacher {tp}, student {sp} ({:.1}% of the teacher)",
        100.0 * sp as f64 / tp.max(1) as f64
    );
    if let (Some((Some(t), Some(b), Some(s))), Some(d)) = (acc, &a.data) {
        println!(
            "accuracy on {}: teacher {:.2}%, student before {:.2}%, after {:.2}%",
            d.display(),
            100.0 * t,
            100.0 * b,
            100.0 * s
        );
    }
    println!(
        "wrote {} ({} bytes) in {:.1}s; peak RSS {}",
        a.output.display(),
        bytes.len(),
        t.elapsed().as_secs_f64(),
        rss.map_or("unknown".into(), |b| format!(
            "{:.1} MiB",
            b as f64 / 1048576.0
        ))
    );
    Ok(())
}
