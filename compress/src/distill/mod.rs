//! Knowledge distillation: a student graph learns to reproduce a teacher's
//! outputs on a transfer set.
//!
//! The teacher is any model the runtime runs; its outputs on the whole
//! transfer set are computed once ([`teacher_outputs`]). The student is a
//! [`Student`] (the graph on candle with trainable weights): in *repair*
//! mode the compressed teacher itself (pruned zeros held fixed), in
//! *student* mode a smaller architecture. [`distill`] runs the loop:
//! seeded shuffles and validation split, minibatches, warm-up + cosine
//! learning rate, AdamW or SGD with momentum, validation loss and agreement
//! after every epoch (and a progress bar of the steps on a terminal),
//! early stopping on the validation loss (the best epoch's weights are
//! kept), an atomic checkpoint after every epoch that `resume` continues
//! from, and a clear stop on a non-finite loss.

pub mod checkpoint;
pub mod cli;
pub mod loss;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use candle_core::{Device, Tensor as CTensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use morsel_runtime::graph::Graph;
use morsel_runtime::tensor::{Dim, Tensor, dims_str, shape_str};
use morsel_runtime::{DType, Model, Options};
use serde_json::{Value as Json, json};

pub use loss::{Loss, Optim};

use crate::train::{Student, candle_to_tensor, tensor_to_candle};
use checkpoint::Checkpoint;
use loss::{Optimizer, batch_loss, learning_rate, masks};

#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// Length of the schedule, in passes over the training split.
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Share of all steps spent warming up linearly to `lr`.
    pub warmup: f64,
    pub optim: Optim,
    pub loss: Loss,
    pub seed: u64,
    /// Share of the transfer set held out for validation (0: none, and then
    /// no early stopping; the last epoch's weights are kept).
    pub val_fraction: f64,
    /// Stop after this many epochs without a better validation loss.
    pub patience: Option<usize>,
    /// Written after every epoch.
    pub checkpoint: Option<PathBuf>,
    /// Continue from `checkpoint` if it exists.
    pub resume: bool,
    /// Stop after this many epochs of this run, as an interruption would
    /// (tests of `resume`).
    pub stop_after: Option<usize>,
    /// How many of the last outputs are matched intermediate values
    /// ([`expose`]): they add their mean squared error to the loss.
    pub intermediates: usize,
    /// The input (by position) whose zeros mark positions that do not
    /// count (a transformer's attention mask: padding tokens): outputs
    /// shaped `[its dims..., C]` are averaged over the other positions.
    pub loss_mask: Option<usize>,
    /// One line per epoch on stderr.
    pub progress: bool,
}

impl Default for DistillOptions {
    fn default() -> Self {
        DistillOptions {
            epochs: 10,
            batch: 64,
            lr: 1e-3,
            warmup: 0.05,
            optim: Optim::AdamW { weight_decay: 0.0 },
            loss: Loss::Kl {
                temperature: 4.0,
                alpha: 0.0,
            },
            seed: 0,
            val_fraction: 0.1,
            patience: Some(5),
            checkpoint: None,
            resume: false,
            stop_after: None,
            intermediates: 0,
            loss_mask: None,
            progress: true,
        }
    }
}

/// Transfer data: inputs in the teacher's input order, optional labels.
pub struct TransferSet {
    pub inputs: Vec<Tensor>,
    pub labels: Option<Vec<i64>>,
    pub n: usize,
}

/// Validation figures after an epoch.
#[derive(Debug, Clone, Copy)]
pub struct ValStats {
    pub loss: f64,
    /// Top-1 agreement with the teacher (KL), or the mean row cosine to it
    /// (MSE, cosine).
    pub agreement: f64,
    /// Against the labels, when there are labels.
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub lr: f64,
    pub val: Option<ValStats>,
    pub samples_per_sec: f64,
}

#[derive(Debug, Clone, Default)]
pub struct DistillReport {
    pub train_samples: usize,
    pub val_samples: usize,
    pub params: usize,
    pub history: Vec<EpochStats>,
    /// Before the first step (of this run).
    pub initial: Option<ValStats>,
    /// The epoch whose weights were kept (0: the starting weights).
    pub best_epoch: usize,
    pub best: Option<ValStats>,
    pub stopped_early: bool,
    pub resumed_from: Option<usize>,
    /// Training throughput (forward + backward + update) over this run.
    pub samples_per_sec: f64,
    pub seconds: f64,
}

impl DistillReport {
    /// What a model file's metadata keeps: no per-epoch history (it would
    /// cost kilobytes in a model of a few).
    pub fn summary_json(&self) -> Json {
        let val =
            |v: &Option<ValStats>| v.map(|v| json!({"loss": v.loss, "agreement": v.agreement}));
        json!({"train_samples": self.train_samples, "val_samples": self.val_samples,
            "epochs": self.history.len(), "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early, "initial": val(&self.initial), "best": val(&self.best),
            "samples_per_sec": self.samples_per_sec})
    }

    pub fn to_json(&self) -> Json {
        let val = |v: &Option<ValStats>| {
            v.map(|v| json!({"loss": v.loss, "agreement": v.agreement, "accuracy": v.accuracy}))
        };
        json!({
            "train_samples": self.train_samples, "val_samples": self.val_samples,
            "params": self.params, "best_epoch": self.best_epoch,
            "initial": val(&self.initial), "best": val(&self.best),
            "stopped_early": self.stopped_early, "resumed_from": self.resumed_from,
            "samples_per_sec": self.samples_per_sec, "seconds": self.seconds,
            "epochs": self.history.iter().map(|e| json!({"epoch": e.epoch, "train_loss": e.train_loss,
                "lr": e.lr, "val": val(&e.val), "samples_per_sec": e.samples_per_sec})).collect::<Vec<_>>(),
        })
    }
}

// ---------------------------------------------------------------- data

fn convert_to(t: Tensor, want: DType, what: &str) -> Result<Tensor> {
    if t.dtype == want {
        return Ok(t);
    }
    let dims = t.dims.clone();
    Ok(match want {
        DType::F32 => Tensor::from_slice(&dims, &t.to_f32_vec()?)?,
        DType::I64 => Tensor::from_slice(&dims, &t.to_i64_vec().map_err(|e| anyhow!("{e}"))?)?,
        DType::I32 => {
            let v: Vec<i32> = t
                .to_i64_vec()
                .map_err(|e| anyhow!("{e}"))?
                .into_iter()
                .map(|x| x as i32)
                .collect();
            Tensor::from_slice(&dims, &v)?
        }
        other => bail!("{what}: the model takes {other}, which training does not feed"),
    })
}

/// Read a transfer set for `teacher` from an `.npz` ([`transfer_from_arrays`]).
pub fn load_transfer(path: &Path, teacher: &Graph) -> Result<TransferSet> {
    let arrays = crate::npy::read_npz(path)?
        .into_iter()
        .map(|(k, l)| (k, l.tensor))
        .collect();
    transfer_from_arrays(arrays, teacher, &path.display().to_string())
}

/// A transfer set for `teacher`: one array per input (by name, or `x` for a
/// one-input model), labels from `y` or `labels`. Every array must fit the
/// teacher's input shape (symbolic dims take any size). `what` names the
/// source in errors.
pub fn transfer_from_arrays(
    arrays: Vec<(String, Tensor)>,
    teacher: &Graph,
    what: &str,
) -> Result<TransferSet> {
    let mut inputs = Vec::new();
    for (k, &id) in teacher.inputs.iter().enumerate() {
        let v = &teacher.values[id];
        let found = arrays
            .iter()
            .find(|(n, _)| *n == v.name)
            .or_else(|| {
                (teacher.inputs.len() == 1)
                    .then(|| arrays.iter().find(|(n, _)| n == "x"))
                    .flatten()
            })
            .with_context(|| {
                format!(
                    "{what}: no array for the teacher's input {k} '{}' (arrays: {})",
                    v.name,
                    arrays
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let t = &found.1;
        let fits = t.dims.len() == v.shape.len()
            && t.dims.iter().zip(&v.shape).all(|(&d, s)| match s {
                Dim::Known(k) => *k == d,
                Dim::Sym(_) => true,
            });
        if !fits {
            bail!(
                "{what}: array '{}' has shape {}, the teacher's input '{}' is {}",
                found.0,
                dims_str(&t.dims),
                v.name,
                shape_str(&v.shape)
            );
        }
        inputs.push(convert_to(
            t.clone(),
            v.dtype,
            &format!("{what}: array '{}'", found.0),
        )?);
    }
    let n = inputs
        .first()
        .and_then(|t| t.dims.first().copied())
        .context("the teacher has no inputs, or a scalar input")?;
    for t in &inputs {
        ensure!(
            t.dims.first() == Some(&n),
            "{what}: the arrays differ in their number of samples ({} vs {n})",
            dims_str(&t.dims)
        );
    }
    let labels = match arrays.iter().find(|(k, _)| k == "y" || k == "labels") {
        Some((k, l)) => {
            let y = l
                .to_i64_vec()
                .map_err(|e| anyhow!("{what}: labels '{k}': {e}"))?;
            ensure!(y.len() == n, "{what}: {} labels for {n} samples", y.len());
            Some(y)
        }
        None => None,
    };
    Ok(TransferSet { inputs, labels, n })
}

/// Rows `[a, b)` of a tensor's leading dim.
fn rows(t: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    crate::measure::rows(t, a, b)
}

/// Every output of `teacher` on the whole transfer set (batch by batch).
pub fn teacher_outputs(
    teacher: &Model,
    data: &TransferSet,
    batch: usize,
    threads: usize,
) -> Result<Vec<Tensor>> {
    let g = teacher.graph();
    let names: Vec<String> = g.inputs.iter().map(|&i| g.values[i].name.clone()).collect();
    let mut session = teacher.session(Options {
        threads,
        ..Options::default()
    });
    let mut acc: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
    let mut a = 0;
    while a < data.n {
        let b = (a + batch.max(1)).min(data.n);
        let chunk: Vec<Tensor> = data
            .inputs
            .iter()
            .map(|t| rows(t, a, b))
            .collect::<Result<_>>()?;
        let refs: Vec<(&str, _)> = names
            .iter()
            .zip(&chunk)
            .map(|(n, t)| (n.as_str(), t.view()))
            .collect();
        let outs = session
            .run(&refs)
            .map_err(|e| anyhow!("the teacher on samples {a}..{b}: {e}"))?;
        if acc.is_empty() {
            acc = outs.iter().map(|o| (o.dims.clone(), Vec::new())).collect();
        }
        for (k, o) in outs.iter().enumerate() {
            ensure!(
                o.dims.first() == Some(&(b - a)),
                "the teacher's output '{}' has shape {} for {} samples: its leading dim must be the batch",
                g.values[g.outputs[k]].name,
                dims_str(&o.dims),
                b - a
            );
            acc[k].1.extend(o.to_f32_vec()?);
        }
        a = b;
    }
    acc.into_iter()
        .map(|(mut dims, v)| {
            dims[0] = data.n;
            Ok(Tensor::from_slice(&dims, &v)?)
        })
        .collect()
}

/// A student must take the teacher's inputs and produce its outputs.
pub fn check_student(teacher: &Graph, student: &Graph) -> Result<()> {
    let desc = |g: &Graph, ids: &[usize]| -> String {
        ids.iter()
            .map(|&i| g.describe_value(i))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let compatible = |a: &[Dim], b: &[Dim]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Dim::Known(x), Dim::Known(y)) => x == y,
                _ => true,
            })
    };
    let same = |a: &[usize], b: &[usize]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| compatible(&teacher.values[x].shape, &student.values[y].shape))
    };
    if !same(&teacher.inputs, &student.inputs) {
        bail!(
            "the student's inputs ({}) do not match the teacher's ({})",
            desc(student, &student.inputs),
            desc(teacher, &teacher.inputs)
        );
    }
    if !same(&teacher.outputs, &student.outputs) {
        bail!(
            "the student's outputs ({}) do not match the teacher's ({}): a student must produce the teacher's outputs",
            desc(student, &student.outputs),
            desc(teacher, &teacher.outputs)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- the loop

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Fisher–Yates with a stream that depends only on (seed, stream), so a
/// resumed run shuffles epoch k as an uninterrupted one does.
fn shuffle(v: &mut [usize], seed: u64, stream: u64) {
    let mut r = SplitMix(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    for i in (1..v.len()).rev() {
        let j = (r.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn ids(idx: &[usize]) -> Result<CTensor> {
    let v: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(CTensor::from_vec(v, idx.len(), &Device::Cpu)?)
}

/// Tensors of one split or batch.
struct Batch {
    x: Vec<CTensor>,
    t: Vec<CTensor>,
    y: Option<CTensor>,
    n: usize,
}

fn select(all: &Batch, idx: &[usize]) -> Result<Batch> {
    let ix = ids(idx)?;
    Ok(Batch {
        x: all
            .x
            .iter()
            .map(|t| t.index_select(&ix, 0))
            .collect::<candle_core::Result<_>>()?,
        t: all
            .t
            .iter()
            .map(|t| t.index_select(&ix, 0))
            .collect::<candle_core::Result<_>>()?,
        y: all.y.as_ref().map(|y| y.index_select(&ix, 0)).transpose()?,
        n: idx.len(),
    })
}

fn argmax_rows(t: &CTensor) -> Result<Vec<u32>> {
    let c = t.dims().last().copied().unwrap_or(1);
    Ok(t.reshape(((), c))?.argmax(1)?.to_vec1::<u32>()?)
}

/// What a batch's loss is: the loss, how many of the last outputs are
/// matched intermediate values, and the mask input (by position).
#[derive(Clone, Copy)]
struct LossSpec {
    loss: Loss,
    matched: usize,
    mask: Option<usize>,
}

impl LossSpec {
    fn of(o: &DistillOptions) -> LossSpec {
        LossSpec {
            loss: o.loss,
            matched: o.intermediates,
            mask: o.loss_mask,
        }
    }

    /// The batch's mask input as 0/1.
    fn mask(&self, b: &Batch) -> Result<Option<CTensor>> {
        self.mask
            .map(|i| Ok(b.x[i].ne(0f32)?.to_dtype(candle_core::DType::F32)?))
            .transpose()
    }

    /// `loss` on the model's own outputs, plus the mean squared error of
    /// each matched intermediate value (the last `matched` outputs); `m` is
    /// the batch's [`LossSpec::mask`].
    fn total(&self, out: &[CTensor], b: &Batch, m: Option<&CTensor>) -> Result<CTensor> {
        let k = out.len().saturating_sub(self.matched);
        let l = batch_loss(self.loss, &out[..k], &b.t[..k], b.y.as_ref(), m)?;
        Ok(if self.matched > 0 {
            (l + batch_loss(Loss::Mse, &out[k..], &b.t[k..], None, m)?)?
        } else {
            l
        })
    }
}

/// Hidden-state matching: add the values named in `names` (a layer's
/// output, e.g.) to `g`'s outputs, after its own, so that a student and
/// its teacher, both exposed alike, are pulled together there too (see
/// [`DistillOptions::intermediates`]). `what` names the graph in errors.
pub fn expose(g: &mut Graph, names: &[String], what: &str) -> Result<()> {
    for name in names {
        // a value by name, or the first output of a node by name
        let id = g
            .values
            .iter()
            .position(|v| &v.name == name)
            .or_else(|| {
                g.nodes
                    .iter()
                    .find(|n| &n.name == name)
                    .and_then(|n| n.outputs.first().copied())
            })
            .ok_or_else(|| {
                anyhow!("--match {name}: the {what} has no value or node of that name")
            })?;
        ensure!(
            g.values[id].konst.is_none() && !g.inputs.contains(&id),
            "--match {name}: in the {what} that is a constant or an input, not a layer's output"
        );
        ensure!(
            !g.outputs.contains(&id),
            "--match {name}: in the {what} that is an output already (its loss is counted)"
        );
        g.outputs.push(id);
    }
    Ok(())
}

/// Loss, agreement and accuracy of `student` on a split.
fn evaluate(student: &Student, val: &Batch, spec: LossSpec, batch: usize) -> Result<ValStats> {
    let loss = spec.loss;
    let (mut total, mut agree, mut correct) = (0f64, 0f64, 0usize);
    let mut a = 0;
    let all: Vec<usize> = (0..val.n).collect();
    while a < val.n {
        let b = (a + batch).min(val.n);
        let part = select(val, &all[a..b])?;
        let out = student.forward(&part.x)?;
        let m = spec.mask(&part)?;
        let l = spec.total(&out, &part, m.as_ref())?.to_scalar::<f32>()? as f64;
        total += l * part.n as f64;
        let (s, t) = (&out[0], &part.t[0]);
        match loss {
            Loss::Kl { .. } => {
                let (ps, pt) = (argmax_rows(s)?, argmax_rows(t)?);
                agree += ps.iter().zip(&pt).filter(|(a, b)| a == b).count() as f64;
                if let Some(y) = &part.y {
                    let y = y.to_vec1::<u32>()?;
                    correct += ps.iter().zip(&y).filter(|(a, b)| a == b).count();
                }
            }
            Loss::Mse | Loss::Cosine => {
                let one = batch_loss(Loss::Cosine, &out[..1], &part.t[..1], None, m.as_ref())?;
                agree += (1.0 - one.to_scalar::<f32>()? as f64) * part.n as f64;
            }
        }
        a = b;
    }
    let n = val.n.max(1) as f64;
    Ok(ValStats {
        loss: total / n,
        agreement: agree / n,
        accuracy: (val.y.is_some() && matches!(loss, Loss::Kl { .. })).then(|| correct as f64 / n),
    })
}

fn snapshot(student: &Student) -> Result<Vec<CTensor>> {
    student
        .params()
        .iter()
        .map(|p| Ok(p.var.as_tensor().copy()?.detach()))
        .collect()
}

fn restore(student: &Student, values: &[CTensor]) -> Result<()> {
    for (p, v) in student.params().iter().zip(values) {
        p.var.set(v)?;
    }
    Ok(())
}

fn fingerprint(student: &Student) -> String {
    student
        .params()
        .iter()
        .map(|p| format!("{} {:?}", p.name, p.var.dims()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_options(o: &DistillOptions, data: &TransferSet) -> Result<()> {
    ensure!(o.epochs >= 1, "--epochs must be at least 1");
    ensure!(o.batch >= 1, "--batch must be at least 1");
    ensure!(
        o.lr.is_finite() && o.lr > 0.0,
        "--lr must be a positive number, is {}",
        o.lr
    );
    ensure!(
        (0.0..1.0).contains(&o.val_fraction),
        "the validation share must be in [0, 1), is {}",
        o.val_fraction
    );
    ensure!(
        (0.0..=1.0).contains(&o.warmup),
        "--warmup must be in [0, 1], is {}",
        o.warmup
    );
    if let Loss::Kl { temperature, alpha } = o.loss {
        ensure!(
            temperature.is_finite() && temperature > 0.0,
            "--temperature must be positive, is {temperature}"
        );
        ensure!(
            (0.0..=1.0).contains(&alpha),
            "--alpha must be in [0, 1], is {alpha}"
        );
        ensure!(
            alpha == 0.0 || data.labels.is_some(),
            "--alpha {alpha} mixes in cross-entropy on labels, but the transfer data has no labels ('y')"
        );
    }
    ensure!(data.n >= 2, "the transfer set has {} samples", data.n);
    Ok(())
}

/// Train `student` towards `targets` (the teacher's outputs on `data`).
/// On return the student holds the kept weights (the best validation epoch).
pub fn distill(
    student: &Student,
    data: &TransferSet,
    targets: &[Tensor],
    o: &DistillOptions,
) -> Result<DistillReport> {
    check_options(o, data)?;
    let started = Instant::now();
    let n = data.n;
    let all = Batch {
        x: data
            .inputs
            .iter()
            .map(tensor_to_candle)
            .collect::<Result<_>>()?,
        t: targets
            .iter()
            .map(tensor_to_candle)
            .collect::<Result<_>>()?,
        y: match &data.labels {
            Some(y) => {
                let classes = targets
                    .first()
                    .and_then(|t| t.dims.last().copied())
                    .unwrap_or(0) as i64;
                if let Some(bad) = y.iter().find(|&&v| !(0..classes).contains(&v)) {
                    bail!("label {bad} is not a class of the teacher's {classes} outputs");
                }
                let v: Vec<u32> = y.iter().map(|&v| v as u32).collect();
                Some(CTensor::from_vec(v, n, &Device::Cpu)?)
            }
            None => None,
        },
        n,
    };
    // The student must produce what the teacher produced, sample for sample.
    let first = select(&all, &[0])?;
    let probe = student.forward(&first.x)?;
    for (k, (s, t)) in probe.iter().zip(targets).enumerate() {
        let name = |g: &Graph| g.values[g.outputs[k]].name.clone();
        ensure!(
            s.dims().get(1..) == t.dims.get(1..),
            "the student's output {k} '{}' has shape {} per sample, the teacher's is {}: a student must produce the teacher's outputs",
            name(student.graph()),
            dims_str(s.dims().get(1..).unwrap_or(&[])),
            dims_str(t.dims.get(1..).unwrap_or(&[]))
        );
    }
    ensure!(
        probe.len() == targets.len(),
        "the student has {} outputs, the teacher {}",
        probe.len(),
        targets.len()
    );
    if let Some(i) = o.loss_mask {
        let g = student.graph();
        let m = first
            .x
            .get(i)
            .ok_or_else(|| anyhow!("loss mask: the model has no input {i}"))?;
        ensure!(
            probe.iter().any(|s| masks(s, Some(m))),
            "--loss-mask {}: no output is shaped [{}, C] per sample, so it would mask nothing",
            g.values[g.inputs[i]].name,
            m.dims()[1..]
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, o.seed, 0);
    let n_val = if o.val_fraction > 0.0 {
        ((n as f64 * o.val_fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    let (val_idx, train_idx) = order.split_at(n_val);
    let val = (n_val > 0).then(|| select(&all, val_idx)).transpose()?;
    let eval_batch = o.batch.max(256);

    let params = student.params();
    let mut opt = Optimizer::new(o.optim, params)?;
    let steps_per_epoch = train_idx.len().div_ceil(o.batch) as u64;
    let total_steps = steps_per_epoch * o.epochs as u64;
    let warmup = (o.warmup * total_steps as f64).round() as u64;
    let mut report = DistillReport {
        train_samples: train_idx.len(),
        val_samples: n_val,
        params: student.num_params(),
        ..Default::default()
    };
    let (mut epoch0, mut step, mut bad) = (0usize, 0u64, 0usize);
    let mut best_val = f64::INFINITY;
    let mut best = snapshot(student)?;
    let mut saved_epoch: Option<usize> = None;

    if o.resume {
        let path = o
            .checkpoint
            .as_ref()
            .context("--resume needs --checkpoint FILE")?;
        if path.exists() {
            let c = checkpoint::load(path)?;
            ensure!(
                c.fingerprint == fingerprint(student),
                "{}: the checkpoint is of another model (its weights differ in names or shapes)",
                path.display()
            );
            ensure!(
                c.seed == o.seed,
                "{}: the checkpoint was made with --seed {}, this run has {}",
                path.display(),
                c.seed,
                o.seed
            );
            restore(student, &c.params)?;
            opt.state = c.state;
            opt.t = c.step;
            (epoch0, step, bad, best_val, best) =
                (c.epoch, c.step, c.bad_epochs, c.best_val, c.best);
            report.best_epoch = c.best_epoch;
            report.resumed_from = Some(c.epoch);
            saved_epoch = Some(c.epoch);
            if o.progress {
                eprintln!("resuming from {} after epoch {}", path.display(), c.epoch);
            }
        } else if o.progress {
            eprintln!("{} does not exist yet: starting afresh", path.display());
        }
    }

    let nan_stop = |what: &str, value: f64, epoch: usize, saved: Option<usize>| {
        let kept = match (&o.checkpoint, saved) {
            (Some(p), Some(e)) => format!(
                "the last good checkpoint, {} (after epoch {e}), is kept: resume from it with --resume and a lower --lr",
                p.display()
            ),
            (Some(p), None) => format!("no checkpoint was written yet to {}", p.display()),
            (None, _) => "no checkpoint was asked for (--checkpoint FILE keeps one)".into(),
        };
        anyhow!("{what} is {value} in epoch {epoch}: training stopped (try a lower --lr); {kept}")
    };

    if let Some(v) = &val {
        let s = evaluate(student, v, LossSpec::of(o), eval_batch)?;
        report.initial = Some(s);
        if report.resumed_from.is_none() {
            best_val = s.loss;
            report.best = Some(s);
        }
        if o.progress {
            eprintln!(
                "before epoch {:>3}: val loss {:.5}  agreement {:.2}%{}",
                epoch0 + 1,
                s.loss,
                100.0 * s.agreement,
                s.accuracy
                    .map_or(String::new(), |a| format!("  accuracy {:.2}%", 100.0 * a))
            );
        }
    }

    // Steps on a terminal (hidden in logs and pipes, where the per-epoch
    // lines are the record).
    let bar = if o.progress {
        let b = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} step {pos}/{len}  {msg}  {elapsed} elapsed, about {eta} left",
        ) {
            b.set_style(style);
        }
        b.set_position(step);
        b
    } else {
        ProgressBar::hidden()
    };
    let mut trained = 0usize;
    let mut train_secs = 0f64;
    let mut epoch = epoch0;
    while epoch < o.epochs {
        if o.stop_after.is_some_and(|k| epoch - epoch0 >= k) {
            break;
        }
        let t0 = Instant::now();
        let mut perm = train_idx.to_vec();
        shuffle(&mut perm, o.seed, epoch as u64 + 1);
        let (mut sum, mut seen) = (0f64, 0usize);
        let mut lr = o.lr;
        for chunk in perm.chunks(o.batch) {
            lr = learning_rate(o.lr, step, warmup, total_steps);
            let b = select(&all, chunk)?;
            let out = student.forward(&b.x)?;
            let spec = LossSpec::of(o);
            let l = spec.total(&out, &b, spec.mask(&b)?.as_ref())?;
            let lv = l.to_scalar::<f32>()? as f64;
            if !lv.is_finite() {
                return Err(nan_stop("the training loss", lv, epoch + 1, saved_epoch));
            }
            let grads = l.backward()?;
            opt.step(params, &grads, lr)?;
            student.apply_masks()?;
            step += 1;
            sum += lv * b.n as f64;
            seen += b.n;
            bar.set_message(format!(
                "epoch {}/{}  loss {:.5}",
                epoch + 1,
                o.epochs,
                sum / seen as f64
            ));
            bar.inc(1);
        }
        let secs = t0.elapsed().as_secs_f64();
        train_secs += secs;
        trained += seen;
        epoch += 1;
        let vs = match &val {
            Some(v) => Some(evaluate(student, v, LossSpec::of(o), eval_batch)?),
            None => None,
        };
        if let Some(s) = vs.filter(|s| !s.loss.is_finite()) {
            return Err(nan_stop("the validation loss", s.loss, epoch, saved_epoch));
        }
        let improved = vs.is_none_or(|s| s.loss < best_val);
        if improved {
            best_val = vs.map_or(f64::INFINITY, |s| s.loss);
            best = snapshot(student)?;
            report.best_epoch = epoch;
            report.best = vs;
            bad = 0;
        } else {
            bad += 1;
        }
        let stats = EpochStats {
            epoch,
            train_loss: sum / seen.max(1) as f64,
            lr,
            val: vs,
            samples_per_sec: seen as f64 / secs.max(1e-9),
        };
        if o.progress {
            bar.suspend(|| {
                eprintln!(
                    "epoch {epoch:>3}/{}  loss {:.5}{}  lr {lr:.2e}  {:.0} samples/s{}",
                    o.epochs,
                    stats.train_loss,
                    vs.map_or(String::new(), |s| format!(
                        "  val loss {:.5}  agreement {:.2}%{}",
                        s.loss,
                        100.0 * s.agreement,
                        s.accuracy
                            .map_or(String::new(), |a| format!("  accuracy {:.2}%", 100.0 * a))
                    )),
                    stats.samples_per_sec,
                    if improved && vs.is_some() { "  *" } else { "" }
                )
            });
        }
        report.history.push(stats);
        if let Some(path) = &o.checkpoint {
            checkpoint::save(
                path,
                &Checkpoint {
                    epoch,
                    step,
                    best_epoch: report.best_epoch,
                    best_val,
                    bad_epochs: bad,
                    seed: o.seed,
                    fingerprint: fingerprint(student),
                    params: snapshot(student)?,
                    state: opt.state.clone(),
                    best: best.clone(),
                },
            )?;
            saved_epoch = Some(epoch);
        }
        if o.patience.is_some_and(|p| val.is_some() && bad >= p) {
            report.stopped_early = true;
            if o.progress {
                bar.suspend(|| {
                    eprintln!(
                        "early stop: no better validation loss for {bad} epochs; keeping epoch {}",
                        report.best_epoch
                    )
                });
            }
            break;
        }
    }
    bar.finish_and_clear();
    if val.is_some() {
        restore(student, &best)?;
    }
    report.samples_per_sec = trained as f64 / train_secs.max(1e-9);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The student's outputs on the transfer inputs, as runtime tensors (for
/// checks against the runtime).
pub fn forward_tensors(student: &Student, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let xs: Vec<CTensor> = inputs.iter().map(tensor_to_candle).collect::<Result<_>>()?;
    student.forward(&xs)?.iter().map(candle_to_tensor).collect()
}
