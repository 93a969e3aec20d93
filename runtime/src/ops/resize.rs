//! Resize (opset 13–19 semantics): nearest (any dtype, by bytes) and n-linear
//! (f32) over the resized axes, with the coordinate transformation modes
//! half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners,
//! asymmetric (and the opset-11 tf_half_pixel_for_nn).
//!
//! Rejected with `Unsupported`: cubic, tf_crop_and_resize, antialias,
//! keep_aspect_ratio_policy other than stretch. Coordinates are computed in
//! f32 like ONNX Runtime, so ties in nearest rounding land the same way.

use super::{Ctx, Fact, Op, axis, known_ints, opt, par_pieces, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::tensor::{Dim, TensorMut, TensorRef, dims_str, numel};
use crate::{Error, Result, bail, ensure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug)]
struct Resize {
    mode: Mode,
    coord: Coord,
    rounding: Rounding,
    axes: Option<Vec<i64>>,
}

pub fn build_resize(a: &Attrs) -> Result<Box<dyn Op>> {
    let mode = match a.string("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" => Mode::Linear,
        "cubic" => bail!(Unsupported, "Resize mode 'cubic'"),
        m => bail!(
            Graph,
            "attribute 'mode' is '{m}', expected nearest, linear or cubic"
        ),
    };
    let coord = match a
        .string("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
        "tf_crop_and_resize" => bail!(
            Unsupported,
            "Resize coordinate_transformation_mode 'tf_crop_and_resize'"
        ),
        m => bail!(Graph, "attribute 'coordinate_transformation_mode' is '{m}'"),
    };
    let rounding = match a.string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => Rounding::PreferFloor,
        "round_prefer_ceil" => Rounding::PreferCeil,
        "floor" => Rounding::Floor,
        "ceil" => Rounding::Ceil,
        m => bail!(
            Graph,
            "attribute 'nearest_mode' is '{m}', expected round_prefer_floor, round_prefer_ceil, floor or ceil"
        ),
    };
    ensure!(
        a.int("antialias", 0)? == 0,
        Unsupported,
        "Resize with antialias=1"
    );
    let policy = a.string("keep_aspect_ratio_policy", "stretch")?;
    ensure!(
        policy == "stretch",
        Unsupported,
        "Resize keep_aspect_ratio_policy '{policy}'"
    );
    // exclude_outside only changes cubic (and antialiased) weights; for
    // nearest and linear the clamped neighbours give the same result.
    let ex = a.int("exclude_outside", 0)?;
    ensure!(
        ex == 0 || ex == 1,
        Graph,
        "attribute 'exclude_outside' must be 0 or 1, is {ex}"
    );
    Ok(Box::new(Resize {
        mode,
        coord,
        rounding,
        axes: a.ints("axes")?,
    }))
}

/// What a resized axis asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Keep,
    Scale(f32),
    Size(usize),
}

impl Target {
    /// Output length for input length `n`.
    fn out_len(self, n: usize) -> Result<usize> {
        match self {
            Target::Keep => Ok(n),
            Target::Size(s) => Ok(s),
            Target::Scale(s) => {
                // floor(n · scale), in f64 like the ONNX reference.
                let v = (n as f64 * s as f64).floor();
                ensure!(
                    v < (1u64 << 52) as f64,
                    Graph,
                    "Resize output dim {n} × {s} is too large"
                );
                Ok(v as usize)
            }
        }
    }
    /// The scale used in the coordinate transform.
    fn scale(self, n_in: usize, n_out: usize) -> f32 {
        match self {
            Target::Keep => 1.0,
            Target::Scale(s) => s,
            Target::Size(_) => n_out as f32 / n_in as f32,
        }
    }
}

/// The known contents of scales/sizes: absent (missing or empty), known, or not known yet.
enum Given<T> {
    Absent,
    Known(Vec<T>),
    Unknown,
}

fn given<T>(f: Option<&Fact>, read: impl Fn(&Fact) -> Result<Option<Vec<T>>>) -> Result<Given<T>> {
    let Some(f) = f else { return Ok(Given::Absent) };
    Ok(match read(f)? {
        Some(v) if v.is_empty() => Given::Absent,
        Some(v) => Given::Known(v),
        None if f.shape.first().and_then(Dim::known) == Some(0) => Given::Absent,
        None => Given::Unknown,
    })
}

impl Resize {
    /// Per-axis targets of a rank-`rank` input from the scales or sizes values.
    fn targets(
        &self,
        rank: usize,
        scales: Option<&[f32]>,
        sizes: Option<&[i64]>,
    ) -> Result<Vec<Target>> {
        let axes: Vec<usize> = match &self.axes {
            Some(ax) => ax.iter().map(|&a| axis(a, rank)).collect::<Result<_>>()?,
            None => (0..rank).collect(),
        };
        let mut t = vec![Target::Keep; rank];
        let n = match (scales, sizes) {
            (Some(_), Some(_)) => bail!(
                Graph,
                "both scales and sizes are given; exactly one must be"
            ),
            (None, None) => bail!(
                Graph,
                "neither scales nor sizes is given; exactly one must be"
            ),
            (Some(s), None) => s.len(),
            (None, Some(s)) => s.len(),
        };
        ensure!(
            n == axes.len(),
            Graph,
            "{} has {n} values, expected {} (one per resized axis)",
            if scales.is_some() { "scales" } else { "sizes" },
            axes.len()
        );
        for (k, &a) in axes.iter().enumerate() {
            ensure!(
                t[a] == Target::Keep,
                Graph,
                "attribute 'axes' {:?} repeats axis {a}",
                self.axes
            );
            t[a] = match (scales, sizes) {
                (Some(s), _) => {
                    ensure!(
                        s[k] > 0.0 && s[k].is_finite(),
                        Graph,
                        "scales {s:?}: each scale must be positive"
                    );
                    Target::Scale(s[k])
                }
                (_, Some(s)) => {
                    ensure!(
                        s[k] >= 0 && s[k] <= i32::MAX as i64,
                        Graph,
                        "sizes {s:?}: each size must be in 0..=2^31-1"
                    );
                    Target::Size(s[k] as usize)
                }
                _ => Target::Keep,
            };
        }
        Ok(t)
    }

    /// Source coordinate of output index `x` on an axis of `n_in` → `n_out` with `scale`.
    fn source(&self, x: usize, n_in: usize, n_out: usize, scale: f32) -> f32 {
        let xf = x as f32;
        match self.coord {
            Coord::HalfPixel => (xf + 0.5) / scale - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = n_out as f32 / (scale * n_in as f32);
                let offset = n_in as f32 / 2.0 * (1.0 - adjustment);
                offset + (xf + 0.5) / scale - 0.5
            }
            Coord::PytorchHalfPixel => {
                if n_out > 1 {
                    (xf + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            Coord::AlignCorners => {
                // The spec's length_resized is n_in·scale, not the rounded
                // output length (they differ when scales are given).
                let resized = n_in as f32 * scale;
                if n_out == 1 || resized <= 1.0 {
                    0.0
                } else {
                    xf * (n_in - 1) as f32 / (resized - 1.0)
                }
            }
            Coord::Asymmetric => xf / scale,
            Coord::TfHalfPixelForNn => (xf + 0.5) / scale,
        }
    }

    fn nearest(&self, c: f32, n_in: usize) -> usize {
        let i = match self.rounding {
            Rounding::Floor => c.floor(),
            Rounding::Ceil => c.ceil(),
            Rounding::PreferFloor if c.fract() == 0.5 || c.fract() == -0.5 => c.floor(),
            Rounding::PreferCeil if c.fract() == 0.5 || c.fract() == -0.5 => c.ceil(),
            Rounding::PreferFloor | Rounding::PreferCeil => c.round(),
        };
        // NaN and negatives clamp to 0 through the saturating cast.
        (i.max(0.0) as usize).min(n_in.saturating_sub(1))
    }
}

impl Op for Resize {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let x = req(inputs, 0)?;
        ensure!(x.rank() >= 1, Graph, "input X is a scalar");
        if self.mode == Mode::Linear {
            ensure!(
                x.dtype == DType::F32,
                Unsupported,
                "linear Resize of {} (f32 only)",
                x.dtype
            );
        }
        let scales = given(opt(inputs, 2), |f| {
            ensure!(
                f.dtype == DType::F32,
                Graph,
                "scales must be f32, is {}",
                f.dtype
            );
            f.value.as_ref().map(|t| t.to_f32_vec()).transpose()
        })?;
        let sizes = given(opt(inputs, 3), |f| known_ints(f, "sizes"))?;
        let (sc, sz) = match (scales, sizes) {
            (Given::Unknown, _) | (_, Given::Unknown) => {
                // Unknown until the values are: the planner reports it (or
                // plans again with the caller's small inputs as values).
                // Only the axes outside `axes` keep their dims.
                let shape = match &self.axes {
                    Some(ax) => {
                        let ax: Vec<usize> = ax
                            .iter()
                            .map(|&a| axis(a, x.rank()))
                            .collect::<Result<_>>()?;
                        x.shape
                            .iter()
                            .enumerate()
                            .map(|(i, d)| {
                                if ax.contains(&i) {
                                    Dim::unknown()
                                } else {
                                    d.clone()
                                }
                            })
                            .collect()
                    }
                    None => vec![Dim::unknown(); x.rank()],
                };
                return Ok(vec![Fact::new(x.dtype, shape)]);
            }
            (s, z) => (
                match s {
                    Given::Known(v) => Some(v),
                    _ => None,
                },
                match z {
                    Given::Known(v) => Some(v),
                    _ => None,
                },
            ),
        };
        let targets = self.targets(x.rank(), sc.as_deref(), sz.as_deref())?;
        let mut shape = Vec::with_capacity(x.rank());
        for (d, t) in x.shape.iter().zip(&targets) {
            shape.push(match (t, d.known()) {
                // A scale of exactly 1 keeps the dim, symbolic or not (floor(n·1) = n).
                (Target::Keep, _) | (Target::Scale(1.0), _) => d.clone(),
                (Target::Size(s), _) => Dim::Known(*s),
                (t, Some(n)) => Dim::Known(t.out_len(n)?),
                (_, None) => Dim::unknown(),
            });
        }
        Ok(vec![Fact::new(x.dtype, shape)])
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let x = req(inputs, 0)?;
        let scales = opt(inputs, 2)
            .filter(|t| t.numel() > 0)
            .map(|t| t.f32())
            .transpose()?;
        let sizes = opt(inputs, 3)
            .filter(|t| t.numel() > 0)
            .map(|t| t.to_i64_vec())
            .transpose()?;
        let rank = x.rank();
        ensure!(rank >= 1, Graph, "input X is a scalar");
        let targets = self.targets(rank, scales, sizes.as_deref())?;
        let out = outputs
            .get_mut(0)
            .ok_or_else(|| Error::Graph("missing output".into()))?;
        let od = out.dims;
        let want: Vec<usize> = x
            .dims
            .iter()
            .zip(&targets)
            .map(|(&n, t)| t.out_len(n))
            .collect::<Result<_>>()?;
        ensure!(
            od == want.as_slice() && out.dtype == x.dtype,
            Graph,
            "output buffer is {}, Resize makes {}",
            dims_str(od),
            dims_str(&want)
        );
        let es = x.dtype.size();
        ensure!(
            numel(x.dims)?.checked_mul(es) == Some(x.data.len()),
            Graph,
            "input X data does not match {}",
            dims_str(x.dims)
        );
        ensure!(
            numel(od)?.checked_mul(es) == Some(out.data.len()),
            Graph,
            "output data does not match {}",
            dims_str(od)
        );
        if out.data.is_empty() {
            return Ok(());
        }
        for (a, (&n_in, &n_out)) in x.dims.iter().zip(od).enumerate() {
            ensure!(
                n_in > 0 || n_out == 0,
                Graph,
                "axis {a} of input X is empty, cannot resize it to {n_out}"
            );
        }
        // Input strides, and per axis a table over output positions.
        let mut strides = vec![1usize; rank];
        for a in (0..rank.saturating_sub(1)).rev() {
            strides[a] = strides[a + 1] * x.dims[a + 1];
        }
        let mut tables: Vec<Vec<(usize, usize, f32)>> = Vec::with_capacity(rank);
        for a in 0..rank {
            let (n_in, n_out) = (x.dims[a], od[a]);
            let scale = targets[a].scale(n_in, n_out);
            let identity = n_in == n_out && scale == 1.0;
            tables.push(
                (0..n_out)
                    .map(|o| {
                        if identity {
                            return (o * strides[a], o * strides[a], 0.0);
                        }
                        let c = self.source(o, n_in, n_out, scale);
                        match self.mode {
                            Mode::Nearest => {
                                let i = self.nearest(c, n_in) * strides[a];
                                (i, i, 0.0)
                            }
                            Mode::Linear => {
                                let c = c.clamp(0.0, (n_in - 1) as f32);
                                let i0 = (c.floor() as usize).min(n_in - 1);
                                let i1 = (i0 + 1).min(n_in - 1);
                                (
                                    i0 * strides[a],
                                    i1 * strides[a],
                                    if i1 == i0 { 0.0 } else { c - i0 as f32 },
                                )
                            }
                        }
                    })
                    .collect(),
            );
        }
        // Whole output rows per thread.
        let w = od[rank - 1].max(1);
        let tables = &tables;
        fn near<T: Copy + Send + Sync + bytemuck::Pod>(
            threads: usize,
            x: &[u8],
            y: &mut [u8],
            w: usize,
            tables: &[Vec<(usize, usize, f32)>],
        ) -> Result<()> {
            let x: &[T] = bytemuck::try_cast_slice(x).map_err(cast_err)?;
            let y: &mut [T] = bytemuck::try_cast_slice_mut(y).map_err(cast_err)?;
            par_pieces(threads, y, w, |start, piece| {
                nearest(x, piece, tables, start / w);
                Ok(())
            })
        }
        let t = ctx.threads;
        match self.mode {
            Mode::Nearest => match es {
                1 => near::<u8>(t, x.data, out.data, w, tables),
                2 => near::<u16>(t, x.data, out.data, w, tables),
                4 => near::<u32>(t, x.data, out.data, w, tables),
                _ => near::<u64>(t, x.data, out.data, w, tables),
            },
            Mode::Linear => {
                let xs = x.f32()?;
                par_pieces(t, out.f32()?, w, |start, piece| {
                    linear(xs, piece, tables, start / w)
                })
            }
        }
    }
}

fn cast_err(e: bytemuck::PodCastError) -> Error {
    Error::Graph(format!("misaligned tensor data: {e:?}"))
}

/// Walk output rows `first..first + count` (a row: all axes but the last
/// fixed) in order, calling `f(row - first, outer_index)`.
fn for_rows(
    tables: &[Vec<(usize, usize, f32)>],
    (first, count): (usize, usize),
    mut f: impl FnMut(usize, &[usize]),
) {
    let outer = &tables[..tables.len() - 1];
    let mut idx = vec![0usize; outer.len()];
    let mut r = first;
    for a in (0..outer.len()).rev() {
        idx[a] = r % outer[a].len();
        r /= outer[a].len();
    }
    for row in 0..count {
        f(row, &idx);
        for a in (0..outer.len()).rev() {
            idx[a] += 1;
            if idx[a] < outer[a].len() {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// Output rows `first..` into `y` (whole rows). A row reading the same input
/// row as the one before it (upsampling along an outer axis) is a copy.
fn nearest<T: Copy>(x: &[T], y: &mut [T], tables: &[Vec<(usize, usize, f32)>], first: usize) {
    let Some(last) = tables.last() else { return };
    let w = last.len();
    if w == 0 {
        return;
    }
    let mut prev = None;
    for_rows(tables, (first, y.len() / w), |row, idx| {
        let base: usize = idx.iter().zip(tables).map(|(&i, t)| t[i].0).sum();
        if let Some((pb, pr)) = prev
            && pb == base
        {
            y.copy_within(pr * w..(pr + 1) * w, row * w);
            return;
        }
        for (o, &(off, _, _)) in y[row * w..][..w].iter_mut().zip(last) {
            *o = x[base + off];
        }
        prev = Some((base, row));
    });
}

/// Most outer axes that may interpolate at once (2^6 corners per row).
const MAX_CORNERS: usize = 64;

/// Output rows `first..` into `y` (whole rows).
fn linear(
    x: &[f32],
    y: &mut [f32],
    tables: &[Vec<(usize, usize, f32)>],
    first: usize,
) -> Result<()> {
    let Some(last) = tables.last() else {
        return Ok(());
    };
    let interpolated = tables[..tables.len() - 1]
        .iter()
        .filter(|t| t.iter().any(|e| e.2 != 0.0))
        .count();
    ensure!(
        interpolated <= 6,
        Unsupported,
        "linear Resize over {} axes (7 at most)",
        interpolated + 1
    );
    let w = last.len();
    if w == 0 {
        return Ok(());
    }
    for_rows(tables, (first, y.len() / w), |row, idx| {
        // The (offset, weight) corners the outer axes contribute to this row.
        let mut corners = [(0usize, 1f32); MAX_CORNERS];
        let mut n = 1;
        for (&i, t) in idx.iter().zip(tables) {
            let (i0, i1, f) = t[i];
            if f == 0.0 {
                corners[..n].iter_mut().for_each(|c| c.0 += i0);
                continue;
            }
            for k in 0..n {
                let (off, cw) = corners[k];
                corners[k] = (off + i0, cw * (1.0 - f));
                corners[n + k] = (off + i1, cw * f);
            }
            n *= 2;
        }
        let corners = &corners[..n];
        let dst = &mut y[row * w..][..w];
        for (o, &(a0, a1, f)) in dst.iter_mut().zip(last) {
            let mut acc = 0f32;
            for &(base, cw) in corners {
                let (p, q) = (x[base + a0], x[base + a1]);
                acc += cw * (p + f * (q - p));
            }
            *o = acc;
        }
    });
    Ok(())
}

#[cfg(test)]
#[path = "tests/resize.rs"]
mod tests;
