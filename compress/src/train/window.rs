//! Sliding-window geometry (pads from `pads`/`auto_pad`, output sizes with
//! `ceil_mode`) and pooling for training.
//!
//! candle's own 2-D pools only differentiate when the kernel equals the
//! stride and there is no padding; they are used when that holds. Every
//! other pool is built from differentiable pieces: the input is padded, and
//! each kernel offset contributes one strided view (a narrow, a reshape that
//! splits the axis into `[out, stride]`, and a narrow that keeps position 0),
//! combined with `maximum` or a sum.

use anyhow::{Result, bail, ensure};
use candle_core::{Device, Tensor as CTensor};
use morsel_runtime::graph::Attrs;

/// Pads `[begin..., end...]` for the spatial axes of `input`.
pub(super) fn pads(
    a: &Attrs,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> Result<Vec<usize>> {
    let sp = input.len();
    ensure!(
        kernel.len() == sp && strides.len() == sp && dil.len() == sp,
        "kernel {kernel:?}, strides {strides:?}, dilations {dil:?} do not match {sp} spatial axes"
    );
    let auto = a.string("auto_pad", "NOTSET")?;
    Ok(match auto.as_str() {
        "NOTSET" | "" => match a.ints("pads")? {
            Some(p) => {
                ensure!(p.len() == 2 * sp, "pads {p:?} for {sp} spatial axes");
                ensure!(p.iter().all(|&x| x >= 0), "negative pads {p:?}");
                p.iter().map(|&x| x as usize).collect()
            }
            None => vec![0; 2 * sp],
        },
        "VALID" => vec![0; 2 * sp],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut p = vec![0; 2 * sp];
            for i in 0..sp {
                let out = input[i].div_ceil(strides[i]);
                let eff = dil[i] * (kernel[i] - 1) + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(input[i]);
                let small = total / 2;
                let (b, e) = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                p[i] = b;
                p[sp + i] = e;
            }
            p
        }
        other => bail!("auto_pad '{other}' is not supported"),
    })
}

/// Output length of one axis.
fn out_len(input: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize, ceil: bool) -> usize {
    let eff = d * (k - 1) + 1;
    let span = (input + pb + pe).saturating_sub(eff);
    let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
    // A last window that would start in the end padding is dropped (ONNX, PyTorch).
    if ceil && (out - 1) * s >= input + pb {
        out -= 1;
    }
    out
}

/// Positions `offset, offset + s, …` (`n` of them) along `axis`.
fn strided(x: &CTensor, axis: usize, offset: usize, s: usize, n: usize) -> Result<CTensor> {
    let len = x.dim(axis)?;
    let take = (n * s).min(len - offset);
    let mut y = x.narrow(axis, offset, take)?;
    if take < n * s {
        y = y.pad_with_zeros(axis, 0, n * s - take)?;
    }
    if s == 1 {
        return Ok(y);
    }
    let mut dims = y.dims().to_vec();
    dims[axis] = n;
    dims.insert(axis + 1, s);
    Ok(y.reshape(dims)?.narrow(axis + 1, 0, 1)?.squeeze(axis + 1)?)
}

/// Pad `axis` with `value` (`begin` before, `end` after).
fn pad_value(x: &CTensor, axis: usize, begin: usize, end: usize, value: f32) -> Result<CTensor> {
    if begin == 0 && end == 0 {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return Ok(x.pad_with_zeros(axis, begin, end)?);
    }
    let mut parts = Vec::new();
    let block = |n: usize| -> Result<CTensor> {
        let mut d = x.dims().to_vec();
        d[axis] = n;
        Ok(CTensor::full(value, d, &Device::Cpu)?)
    };
    if begin > 0 {
        parts.push(block(begin)?);
    }
    parts.push(x.clone());
    if end > 0 {
        parts.push(block(end)?);
    }
    Ok(CTensor::cat(&parts, axis)?)
}

/// MaxPool or AveragePool (`op`) over the trailing spatial axes of `x`.
pub(super) fn pool(op: &str, a: &Attrs, x: &CTensor) -> Result<CTensor> {
    let is_max = op == "MaxPool";
    let kernel: Vec<usize> = match a.ints("kernel_shape")? {
        Some(k) => k.iter().map(|&v| v as usize).collect(),
        None => bail!("attribute 'kernel_shape' is required"),
    };
    let sp = kernel.len();
    ensure!(
        x.rank() == sp + 2,
        "input {:?} for a {sp}-D kernel",
        x.dims()
    );
    let get = |k: &str| -> Result<Vec<usize>> {
        Ok(match a.ints(k)? {
            Some(v) => v.iter().map(|&x| x as usize).collect(),
            None => vec![1; sp],
        })
    };
    let strides = get("strides")?;
    let dil = get("dilations")?;
    let ceil = a.int("ceil_mode", 0)? != 0;
    let include_pad = a.int("count_include_pad", 0)? != 0;
    let input: Vec<usize> = x.dims()[2..].to_vec();
    ensure!(
        kernel.iter().chain(&strides).chain(&dil).all(|&v| v >= 1),
        "kernel {kernel:?}, strides {strides:?} and dilations {dil:?} must be at least 1"
    );
    let p = pads(a, &input, &kernel, &strides, &dil)?;
    let outs: Vec<usize> = (0..sp)
        .map(|i| {
            out_len(
                input[i],
                kernel[i],
                strides[i],
                dil[i],
                p[i],
                p[sp + i],
                ceil,
            )
        })
        .collect();

    let plain = sp == 2
        && p.iter().all(|&v| v == 0)
        && dil.iter().all(|&d| d == 1)
        && kernel == strides
        && (0..2).all(|i| outs[i] == (input[i] - kernel[i]) / strides[i] + 1);
    if plain {
        let k = (kernel[0], kernel[1]);
        return Ok(if is_max {
            x.max_pool2d_with_stride(k, k)?
        } else {
            x.avg_pool2d_with_stride(k, k)?
        });
    }

    // Pad every axis: the explicit pads, then what the last window needs.
    let fill = if is_max { f32::NEG_INFINITY } else { 0.0 };
    let mut xp = x.clone();
    // Ones where a position counts towards an average's divisor.
    let mut ones = CTensor::ones(input.clone(), candle_core::DType::F32, &Device::Cpu)?;
    for i in 0..sp {
        let eff = dil[i] * (kernel[i] - 1) + 1;
        let need = (outs[i] - 1) * strides[i] + eff;
        let extra = need.saturating_sub(input[i] + p[i] + p[sp + i]);
        xp = pad_value(&xp, 2 + i, p[i], p[sp + i] + extra, fill)?;
        let (ob, oe) = if include_pad {
            (p[i], p[sp + i])
        } else {
            (0, 0)
        };
        ones = pad_value(&ones, i, ob, oe, 1.0)?;
        ones = ones.pad_with_zeros(i, p[i] - ob, p[sp + i] - oe + extra)?;
    }
    // Every kernel offset: one strided view per axis.
    let mut acc: Option<(CTensor, CTensor)> = None;
    let total: usize = kernel.iter().product();
    for flat in 0..total {
        let mut rem = flat;
        let mut v = xp.clone();
        let mut c = ones.clone();
        for i in (0..sp).rev() {
            let k = rem % kernel[i];
            rem /= kernel[i];
            v = strided(&v, 2 + i, k * dil[i], strides[i], outs[i])?;
            if !is_max {
                c = strided(&c, i, k * dil[i], strides[i], outs[i])?;
            }
        }
        acc = Some(match acc {
            None => (v, c),
            Some((a, n)) if is_max => (a.maximum(&v)?, n),
            Some((a, n)) => ((a + v)?, (n + c)?),
        });
    }
    let (sum, count) = acc.expect("a kernel has at least one offset");
    if is_max {
        Ok(sum)
    } else {
        Ok(sum.broadcast_div(&count)?)
    }
}
