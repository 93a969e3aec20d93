//! Distillation losses, the optimizers and the learning-rate schedule.
//!
//! The optimizers are ours, not candle-nn's: candle-nn's AdamW keeps its
//! moments private (a resumed run could not restore them, so it would not
//! continue where it stopped) and its SGD has no momentum. The AdamW update
//! is the decoupled one (Loshchilov & Hutter), as in candle-nn and PyTorch.

use anyhow::{Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{D, Tensor as CTensor};

use crate::train::Param;

/// What the student's outputs are pulled towards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// KL divergence between the temperature-softened teacher and student
    /// distributions (last axis), times T² (Hinton et al. 2015), mixed with
    /// cross-entropy on the labels: `alpha·CE + (1 − alpha)·T²·KL`.
    Kl { temperature: f32, alpha: f32 },
    /// Mean squared error (regression outputs, embeddings).
    Mse,
    /// 1 − cosine similarity along the last axis (embeddings).
    Cosine,
}

impl Loss {
    pub fn describe(&self) -> String {
        match self {
            Loss::Kl { temperature, alpha } => format!("kl(T={temperature},alpha={alpha})"),
            Loss::Mse => "mse".into(),
            Loss::Cosine => "cosine".into(),
        }
    }
}

/// `[..., C]` as `[rows, C]`.
fn rows(t: &CTensor) -> Result<CTensor> {
    let c = t.dims().last().copied().unwrap_or(1);
    Ok(t.reshape(((), c))?)
}

/// The mean of `v`, one value per row of `s` (`[..., C]`). With a `mask`
/// (1 where a position counts, 0 where not: padding tokens) and `s` of
/// shape `[mask's dims..., C]`, over the rows the mask keeps.
fn row_mean(v: &CTensor, s: &CTensor, mask: Option<&CTensor>) -> Result<CTensor> {
    if let Some(m) = mask.filter(|_| masks(s, mask)) {
        let m = m.flatten_all()?;
        let kept = m.sum_all()?.maximum(1f32)?;
        return Ok(((v * &m)?.sum_all()? / kept)?);
    }
    Ok(v.mean_all()?)
}

/// Whether `mask` selects rows of `s` (see [`row_mean`]).
pub(super) fn masks(s: &CTensor, mask: Option<&CTensor>) -> bool {
    mask.is_some_and(|m| s.rank() == m.rank() + 1 && s.dims()[..m.rank()] == *m.dims())
}

/// The loss of one batch: summed over the outputs; the label term (if any)
/// uses the first output. `mask` (0/1, e.g. `[batch, tokens]`) leaves the
/// positions it zeroes out of every output shaped `[mask's dims..., C]`.
pub fn batch_loss(
    loss: Loss,
    student: &[CTensor],
    teacher: &[CTensor],
    labels: Option<&CTensor>,
    mask: Option<&CTensor>,
) -> Result<CTensor> {
    let mut total: Option<CTensor> = None;
    let mut add = |t: CTensor| -> Result<()> {
        total = Some(match total.take() {
            None => t,
            Some(a) => (a + t)?,
        });
        Ok(())
    };
    for (k, (s, t)) in student.iter().zip(teacher).enumerate() {
        match loss {
            Loss::Kl { temperature, alpha } => {
                let tt = temperature as f64;
                let (s2, t2) = (rows(s)?, rows(t)?);
                if alpha < 1.0 {
                    let ls = candle_nn::ops::log_softmax(&(s2.clone() / tt)?, D::Minus1)?;
                    let lt = candle_nn::ops::log_softmax(&(t2 / tt)?, D::Minus1)?;
                    let per_row = (lt.exp()? * (lt - ls)?)?.sum(D::Minus1)?;
                    let kl =
                        row_mean(&per_row, s, mask)?.affine((1.0 - alpha as f64) * tt * tt, 0.0)?;
                    add(kl)?;
                }
                if let (0, Some(y), true) = (k, labels, alpha > 0.0) {
                    let ce = candle_nn::loss::cross_entropy(&s2, y)?;
                    add(ce.affine(alpha as f64, 0.0)?)?;
                }
            }
            Loss::Mse if masks(s, mask) => {
                let per_row = rows(&(s - t)?.sqr()?)?.mean(D::Minus1)?;
                add(row_mean(&per_row, s, mask)?)?
            }
            Loss::Mse => add((s - t)?.sqr()?.mean_all()?)?,
            Loss::Cosine => {
                let (s2, t2) = (rows(s)?, rows(t)?);
                let dot = (&s2 * &t2)?.sum(D::Minus1)?;
                let ns = s2.sqr()?.sum(D::Minus1)?.sqrt()?;
                let nt = t2.sqr()?.sum(D::Minus1)?.sqrt()?;
                let cos = (dot / ((ns * nt)? + 1e-12)?)?;
                add(row_mean(&cos, s, mask)?.affine(-1.0, 1.0)?)?;
            }
        }
    }
    match total {
        Some(t) => Ok(t),
        None => bail!("the model has no outputs to train"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optim {
    /// AdamW with decoupled weight decay on weights (not biases).
    AdamW { weight_decay: f64 },
    /// SGD with (PyTorch-style) momentum: `v = μ·v + g`, `θ -= lr·v`.
    Sgd { momentum: f64 },
}

/// An optimizer whose state can be checkpointed.
pub struct Optimizer {
    kind: Optim,
    /// Steps taken (AdamW's bias correction).
    pub t: u64,
    /// Per parameter: AdamW's first and second moments; SGD's velocity (and
    /// an unused zero tensor, so both kinds checkpoint alike).
    pub state: Vec<(CTensor, CTensor)>,
}

impl Optimizer {
    pub fn new(kind: Optim, params: &[Param]) -> Result<Optimizer> {
        let state = params
            .iter()
            .map(|p| {
                let z = p.var.as_tensor().zeros_like()?;
                Ok((z.clone(), z))
            })
            .collect::<Result<_>>()?;
        Ok(Optimizer { kind, t: 0, state })
    }

    /// One update of every parameter that has a gradient; a pruned weight's
    /// gradient is masked so its zeros get no momentum.
    pub fn step(&mut self, params: &[Param], grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        for (p, (m, v)) in params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = match &p.mask {
                Some(mask) => g.mul(mask)?,
                None => g.clone(),
            };
            let theta = p.var.as_tensor();
            let next = match self.kind {
                Optim::AdamW { weight_decay } => {
                    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
                    let nm = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
                    let nv = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let mh = (&nm / (1.0 - b1.powi(self.t as i32)))?;
                    let vh = (&nv / (1.0 - b2.powi(self.t as i32)))?;
                    let decay = if p.weight {
                        1.0 - lr * weight_decay
                    } else {
                        1.0
                    };
                    let step = (mh / (vh.sqrt()? + eps)?)?;
                    // Detached: the state must not hold this step's autograd graph.
                    *m = nm.detach();
                    *v = nv.detach();
                    ((theta * decay)? - (step * lr)?)?
                }
                Optim::Sgd { momentum } => {
                    let nm = ((&*m * momentum)? + g)?;
                    let next = (theta - (&nm * lr)?)?;
                    *m = nm.detach();
                    next
                }
            };
            p.var.set(&next)?;
        }
        Ok(())
    }
}

/// Linear warm-up over `warmup` steps, then cosine decay to zero at `total`.
pub fn learning_rate(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 4, 100) - 0.25).abs() < 1e-12);
        assert!((learning_rate(1.0, 3, 4, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 4, 4, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(1.0, 52, 4, 100) < 0.51);
        assert!(learning_rate(1.0, 100, 4, 100).abs() < 1e-12);
    }

    #[test]
    fn kl_is_zero_for_equal_logits_and_matches_its_definition() {
        let dev = Device::Cpu;
        let s = CTensor::new(&[[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0]], &dev).unwrap();
        let t = CTensor::new(&[[0.5f32, 2.5, 0.0], [1.0, -1.0, 2.0]], &dev).unwrap();
        let kl = |s: &CTensor, t: &CTensor, temp: f32| {
            batch_loss(
                Loss::Kl {
                    temperature: temp,
                    alpha: 0.0,
                },
                std::slice::from_ref(s),
                std::slice::from_ref(t),
                None,
                None,
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
        };
        assert!(kl(&s, &s, 2.0).abs() < 1e-6);
        // Reference in f64 from the definition.
        let sv: Vec<Vec<f32>> = s.to_vec2().unwrap();
        let tv: Vec<Vec<f32>> = t.to_vec2().unwrap();
        let temp = 2.0f64;
        let mut want = 0.0;
        for (sr, tr) in sv.iter().zip(&tv) {
            let sm = |r: &Vec<f32>| {
                let e: Vec<f64> = r.iter().map(|&x| (x as f64 / temp).exp()).collect();
                let z: f64 = e.iter().sum();
                e.into_iter().map(|x| x / z).collect::<Vec<_>>()
            };
            let (ps, pt) = (sm(sr), sm(tr));
            want += pt
                .iter()
                .zip(&ps)
                .map(|(a, b)| a * (a / b).ln())
                .sum::<f64>();
        }
        want = want / 2.0 * temp * temp;
        assert!((kl(&s, &t, 2.0) - want).abs() < 1e-5, "{}", kl(&s, &t, 2.0));
    }

    #[test]
    fn cosine_loss_is_zero_for_parallel_rows() {
        let dev = Device::Cpu;
        let s = CTensor::new(&[[1.0f32, 2.0], [3.0, -1.0]], &dev).unwrap();
        let t = (&s * 3.0).unwrap();
        let l = batch_loss(Loss::Cosine, &[s], &[t], None, None).unwrap();
        assert!(l.to_scalar::<f32>().unwrap().abs() < 1e-6);
    }

    #[test]
    fn a_mask_leaves_padding_positions_out() {
        let dev = Device::Cpu;
        // [2 sequences, 3 tokens, 2]; the masked positions disagree.
        let s = [
            [[1f32, 2.0], [3.0, -1.0], [5.0, 5.0]],
            [[0.5, 1.0], [1.0, 0.0], [2.0, 2.0]],
        ];
        let mut t = s.map(|q| q.map(|r| r.map(|v| 2.0 * v)));
        let mask = [[1f32, 1.0, 0.0], [1.0, 0.0, 0.0]];
        for (b, row) in mask.iter().enumerate() {
            for (k, &m) in row.iter().enumerate() {
                if m == 0.0 {
                    t[b][k] = [-1.0, 7.0];
                }
            }
        }
        let (s, t) = (
            CTensor::new(&s, &dev).unwrap(),
            CTensor::new(&t, &dev).unwrap(),
        );
        let m = CTensor::new(&mask, &dev).unwrap();
        let l = |loss: Loss, m: Option<&CTensor>| {
            batch_loss(
                loss,
                std::slice::from_ref(&s),
                std::slice::from_ref(&t),
                None,
                m,
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
        };
        // The kept rows are parallel: no cosine loss, unless all count.
        assert!(l(Loss::Cosine, Some(&m)).abs() < 1e-6);
        assert!(l(Loss::Cosine, None) > 0.1);
        // MSE over the three kept rows, t = 2s there: mean of s².
        let kept = [[1f64, 2.0], [3.0, -1.0], [0.5, 1.0]];
        let want = kept.iter().flatten().map(|v| v * v).sum::<f64>() / 6.0;
        assert!((l(Loss::Mse, Some(&m)) - want).abs() < 1e-5);
        // A mask that fits no output's shape changes nothing.
        let other = CTensor::new(&[1f32, 0.0], &dev).unwrap();
        assert_eq!(l(Loss::Mse, Some(&other)), l(Loss::Mse, None));
    }
}
