//! Training checkpoints: one safetensors file holding the weights, the
//! optimizer state and the best weights so far, with the loop's counters in
//! the header's metadata. Written atomically (temporary file, then rename),
//! so an interrupted run leaves the previous checkpoint whole.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor as CTensor};

const FORMAT: &str = "morsel-distill-checkpoint";
const VERSION: &str = "1";

/// Everything a resumed run needs.
pub struct Checkpoint {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    pub best_epoch: usize,
    pub best_val: f64,
    pub bad_epochs: usize,
    pub seed: u64,
    /// `name dims` of every parameter, in order: a checkpoint of another
    /// model or another pruning is refused.
    pub fingerprint: String,
    pub params: Vec<CTensor>,
    pub state: Vec<(CTensor, CTensor)>,
    pub best: Vec<CTensor>,
}

pub fn save(path: &Path, c: &Checkpoint) -> Result<()> {
    let mut tensors: Vec<(String, CTensor)> = Vec::new();
    for (i, p) in c.params.iter().enumerate() {
        tensors.push((format!("param.{i}"), p.clone()));
        tensors.push((format!("state.{i}.0"), c.state[i].0.clone()));
        tensors.push((format!("state.{i}.1"), c.state[i].1.clone()));
        tensors.push((format!("best.{i}"), c.best[i].clone()));
    }
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("version", VERSION.to_string()),
        ("epoch", c.epoch.to_string()),
        ("step", c.step.to_string()),
        ("best_epoch", c.best_epoch.to_string()),
        // Bits, so infinity and every f64 survive the round trip.
        ("best_val_bits", c.best_val.to_bits().to_string()),
        ("bad_epochs", c.bad_epochs.to_string()),
        ("seed", c.seed.to_string()),
        ("fingerprint", c.fingerprint.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .context("serializing the checkpoint")?;
    morsel_runtime::format::writer::write_atomic(path, &bytes)
        .with_context(|| format!("writing checkpoint {}", path.display()))?;
    Ok(())
}

pub fn load(path: &Path) -> Result<Checkpoint> {
    let what = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {what}"))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{what} is not a safetensors file"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("{what} is not a Morsel distillation checkpoint");
    }
    if meta.get("version").map(String::as_str) != Some(VERSION) {
        bail!(
            "{what}: checkpoint version {:?}, this build reads {VERSION}",
            meta.get("version")
        );
    }
    let get = |k: &str| -> Result<&String> {
        meta.get(k)
            .with_context(|| format!("{what}: metadata '{k}' is missing"))
    };
    let num = |k: &str| -> Result<u64> {
        get(k)?
            .parse::<u64>()
            .with_context(|| format!("{what}: metadata '{k}' is not a number"))
    };
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("reading the tensors of {what}"))?;
    let mut take = |k: String| -> Result<CTensor> {
        tensors
            .remove(&k)
            .with_context(|| format!("{what}: tensor '{k}' is missing"))
    };
    let fingerprint = get("fingerprint")?.clone();
    let n = fingerprint.lines().count();
    let mut params = Vec::with_capacity(n);
    let mut state = Vec::with_capacity(n);
    let mut best = Vec::with_capacity(n);
    for i in 0..n {
        params.push(take(format!("param.{i}"))?);
        state.push((take(format!("state.{i}.0"))?, take(format!("state.{i}.1"))?));
        best.push(take(format!("best.{i}"))?);
    }
    Ok(Checkpoint {
        epoch: num("epoch")? as usize,
        step: num("step")?,
        best_epoch: num("best_epoch")? as usize,
        best_val: f64::from_bits(num("best_val_bits")?),
        bad_epochs: num("bad_epochs")? as usize,
        seed: num("seed")?,
        fingerprint,
        params,
        state,
        best,
    })
}
