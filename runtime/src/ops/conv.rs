//! Conv (1-D, 2-D, 3-D) with an optional fused activation, and the window
//! geometry (kernel, strides, dilations, pads, auto_pad) that Conv,
//! ConvTranspose and the pools share.
//!
//! Kernels: a 1×1 stride-1 unpadded conv is one matmul per image and group
//! straight on the input; a conv with one input channel per group
//! (depthwise, with any channel multiplier) runs a direct loop; everything
//! else runs the matmul kernel on a virtual im2col matrix that [`Im2col`]
//! unfolds straight into the kernel's packed panels, block by block. Bias
//! and activation are applied by the kernel on each finished block.
//! 1-D and 2-D problems are treated as 3-D with leading unit axes.

pub(crate) use super::elementwise::Activation;
use super::{Ctx, Fact, Op, expect_dtype, opt, req};
use crate::dtype::DType;
use crate::graph::Attrs;
use crate::kernels::sgemm::{self, Bias, Lhs, PackRhs, Rhs};
use crate::kernels::sparse::{self, SparseB};
use crate::kernels::{self, Mat};
use crate::tensor::{Dim, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result, bail, ensure};

pub use super::conv_transpose::build_conv_transpose;

// ---------------------------------------------------------------- geometry

/// Largest kernel, stride, dilation or pad accepted from a model.
const MAX_ATTR: i64 = i32::MAX as i64;

/// Validate an int-list attribute: every value in `min..=MAX_ATTR`.
pub(crate) fn attr_usizes(a: &Attrs, key: &str, min: i64) -> Result<Option<Vec<usize>>> {
    let Some(v) = a.ints(key)? else {
        return Ok(None);
    };
    v.iter()
        .map(|&x| {
            if x < min || x > MAX_ATTR {
                bail!(
                    Graph,
                    "attribute '{key}' = {v:?}: each value must be in {min}..={MAX_ATTR}"
                );
            }
            Ok(x as usize)
        })
        .collect::<Result<Vec<usize>>>()
        .map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    pub(crate) fn parse(a: &Attrs) -> Result<AutoPad> {
        Ok(match a.string("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            s => bail!(
                Graph,
                "attribute 'auto_pad' is '{s}', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"
            ),
        })
    }
}

/// Concrete geometry of a sliding window over three spatial axes (1-D and
/// 2-D problems get leading unit axes: input 1, kernel 1, stride 1, no pad).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geo {
    pub input: [usize; 3],
    pub output: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
}

impl Geo {
    pub(crate) fn unit() -> Geo {
        Geo {
            input: [1; 3],
            output: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            dilation: [1; 3],
            pad_begin: [0; 3],
            pad_end: [0; 3],
        }
    }
    pub(crate) fn in_size(&self) -> usize {
        self.input.iter().product()
    }
    pub(crate) fn out_size(&self) -> usize {
        self.output.iter().product()
    }
    pub(crate) fn k_size(&self) -> usize {
        self.kernel.iter().product()
    }
    /// The spatial output dims of an `r`-axis problem.
    pub(crate) fn out_dims(&self, r: usize) -> &[usize] {
        &self.output[3 - r..]
    }
}

/// Positions `o < n_out` whose source `o * s + a - b` lies in `0..n_in`, as
/// a range `lo..hi` (empty when none). Used by every window kernel to hoist
/// bounds checks out of the inner loops.
#[inline]
pub(crate) fn valid_range(
    n_out: usize,
    n_in: usize,
    s: usize,
    a: usize,
    b: usize,
) -> (usize, usize) {
    let lo = if b > a { (b - a).div_ceil(s) } else { 0 };
    let hi = if n_in + b > a {
        (n_in + b - a).div_ceil(s).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Window attributes as given, validated but not yet tied to input sizes.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub kernel: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    pub pads: Option<Vec<usize>>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

impl Window {
    /// Read kernel_shape, strides, dilations, pads, auto_pad (and ceil_mode
    /// for pools) and check their lengths agree.
    pub(crate) fn parse(a: &Attrs, pool: bool) -> Result<Window> {
        let ceil_mode = match (pool, a.int("ceil_mode", 0)?) {
            (false, _) | (true, 0) => false,
            (true, 1) => true,
            (_, v) => bail!(Graph, "attribute 'ceil_mode' must be 0 or 1, is {v}"),
        };
        let w = Window {
            kernel: attr_usizes(a, "kernel_shape", 1)?,
            strides: attr_usizes(a, "strides", 1)?,
            dilations: attr_usizes(a, "dilations", 1)?,
            pads: attr_usizes(a, "pads", 0)?,
            auto_pad: AutoPad::parse(a)?,
            ceil_mode,
        };
        if let Some(p) = &w.pads {
            ensure!(
                p.len() % 2 == 0,
                Graph,
                "attribute 'pads' has {} values, expected begin and end per axis",
                p.len()
            );
        }
        if let Some(r) = w.rank() {
            w.check_rank(r)?;
        }
        Ok(w)
    }

    /// The spatial rank the attributes imply, if any says.
    pub(crate) fn rank(&self) -> Option<usize> {
        (self.kernel.as_ref().map(Vec::len))
            .or(self.strides.as_ref().map(Vec::len))
            .or(self.dilations.as_ref().map(Vec::len))
            .or(self.pads.as_ref().map(|p| p.len() / 2))
    }

    pub(crate) fn check_rank(&self, r: usize) -> Result<()> {
        for (name, v, per) in [
            ("kernel_shape", &self.kernel, 1),
            ("strides", &self.strides, 1),
            ("dilations", &self.dilations, 1),
            ("pads", &self.pads, 2),
        ] {
            if let Some(v) = v {
                ensure!(
                    v.len() == per * r,
                    Graph,
                    "attribute '{name}' has {} values, expected {} for {r} spatial axes",
                    v.len(),
                    per * r
                );
            }
        }
        Ok(())
    }

    pub(crate) fn stride(&self, i: usize) -> usize {
        self.strides
            .as_ref()
            .and_then(|v| v.get(i).copied())
            .unwrap_or(1)
    }
    pub(crate) fn dilation(&self, i: usize) -> usize {
        self.dilations
            .as_ref()
            .and_then(|v| v.get(i).copied())
            .unwrap_or(1)
    }
    /// Explicit pads (begin, end) of axis `i` out of `r`.
    pub(crate) fn pads_of(&self, i: usize, r: usize) -> (usize, usize) {
        match &self.pads {
            Some(p) => (
                p.get(i).copied().unwrap_or(0),
                p.get(r + i).copied().unwrap_or(0),
            ),
            None => (0, 0),
        }
    }

    /// The kernel size of axis `i`: the weight's dim checked against
    /// `kernel_shape`, or `kernel_shape` alone when the weight's is unknown.
    pub(crate) fn kernel_dim(&self, i: usize, from_weight: Option<usize>) -> Result<Option<usize>> {
        let attr = self.kernel.as_ref().and_then(|k| k.get(i).copied());
        match (attr, from_weight) {
            (Some(a), Some(w)) if a != w => {
                bail!(
                    Graph,
                    "attribute 'kernel_shape' says {a} on spatial axis {i}, the weight has {w}"
                )
            }
            (a, w) => Ok(w.or(a)),
        }
    }

    /// Output length and (begin, end) pads of spatial axis `i` of `r`.
    pub(crate) fn axis(
        &self,
        i: usize,
        r: usize,
        input: usize,
        kernel: usize,
    ) -> Result<(usize, usize, usize)> {
        let (s, d) = (self.stride(i), self.dilation(i));
        ensure!(kernel >= 1, Graph, "kernel size is 0 on spatial axis {i}");
        let big = || {
            Error::Graph(format!(
                "window on spatial axis {i} is too large (input {input}, kernel {kernel})"
            ))
        };
        let dk = (kernel - 1)
            .checked_mul(d)
            .and_then(|x| x.checked_add(1))
            .ok_or_else(big)?;
        let (pb, pe) = match self.auto_pad {
            AutoPad::NotSet => self.pads_of(i, r),
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input.div_ceil(s);
                let need = out
                    .saturating_sub(1)
                    .checked_mul(s)
                    .and_then(|x| x.checked_add(dk))
                    .ok_or_else(big)?;
                let total = need.saturating_sub(input);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        };
        let padded = input
            .checked_add(pb)
            .and_then(|x| x.checked_add(pe))
            .ok_or_else(big)?;
        // Keeps every index computation of the kernels inside isize.
        let limit = padded.checked_add(dk).and_then(|x| x.checked_add(s));
        ensure!(
            limit.is_some_and(|l| l <= isize::MAX as usize),
            Graph,
            "{}",
            big()
        );
        if padded < dk {
            bail!(
                Graph,
                "spatial axis {i}: input {input} with pads ({pb}, {pe}) is smaller than the kernel extent {dk} (kernel {kernel}, dilation {d})"
            );
        }
        let out = if self.auto_pad == AutoPad::NotSet && self.ceil_mode {
            let o = (padded - dk).div_ceil(s) + 1;
            // A last window that would start in the end padding is dropped.
            if (o - 1) * s >= input + pb { o - 1 } else { o }
        } else if matches!(self.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            input.div_ceil(s)
        } else {
            (padded - dk) / s + 1
        };
        Ok((out, pb, pe))
    }

    /// Symbolic output dim of spatial axis `i` of `r`.
    pub(crate) fn out_dim(
        &self,
        i: usize,
        r: usize,
        input: &Dim,
        kernel: Option<usize>,
    ) -> Result<Dim> {
        Ok(match (input.known(), kernel) {
            (Some(n), Some(k)) => Dim::Known(self.axis(i, r, n, k)?.0),
            _ => Dim::unknown(),
        })
    }

    /// Concrete geometry for spatial input dims and kernel dims (1 to 3 axes).
    pub(crate) fn geo(&self, input: &[usize], kernel: &[usize]) -> Result<Geo> {
        let r = input.len();
        ensure!(
            (1..=3).contains(&r) && kernel.len() == r,
            Unsupported,
            "{r} spatial axes (1 to 3 supported)"
        );
        self.check_rank(r)?;
        let mut g = Geo::unit();
        for i in 0..r {
            let k = self.kernel_dim(i, Some(kernel[i]))?.unwrap_or(1);
            let (o, pb, pe) = self.axis(i, r, input[i], k)?;
            let j = 3 - r + i;
            g.input[j] = input[i];
            g.output[j] = o;
            g.kernel[j] = k;
            g.stride[j] = self.stride(i);
            g.dilation[j] = self.dilation(i);
            g.pad_begin[j] = pb;
            g.pad_end[j] = pe;
        }
        Ok(g)
    }
}

/// A tensor's data must hold exactly its dims' elements.
pub(crate) fn check_len(len: usize, dims: &[usize], what: &str) -> Result<()> {
    ensure!(
        numel(dims)? == len,
        Graph,
        "{what} {} has {len} elements of data",
        dims_str(dims)
    );
    Ok(())
}

/// The checked inputs of Conv and ConvTranspose eval: X, W, optional bias.
pub(crate) struct Operands<'a> {
    pub x: TensorRef<'a>,
    pub w: TensorRef<'a>,
    pub xs: &'a [f32],
    pub ws: &'a [f32],
    pub bs: Option<&'a [f32]>,
    pub rank: usize,
}

impl<'a> Operands<'a> {
    pub(crate) fn of(inputs: &[Option<TensorRef<'a>>]) -> Result<Operands<'a>> {
        let (x, w) = (*req(inputs, 0)?, *req(inputs, 1)?);
        let (xs, ws) = (x.f32()?, w.f32()?);
        let bs = opt(inputs, 2).map(|b| b.f32()).transpose()?;
        let rank = x.rank();
        ensure!(
            (3..=5).contains(&rank) && w.rank() == rank,
            Graph,
            "X {} and W {} do not fit a conv",
            dims_str(x.dims),
            dims_str(w.dims)
        );
        check_len(xs.len(), x.dims, "input X")?;
        check_len(ws.len(), w.dims, "weight W")?;
        Ok(Operands {
            x,
            w,
            xs,
            ws,
            bs,
            rank,
        })
    }
}

/// The output buffer of a conv-shaped op, checked against what the op
/// makes, `[n, m, output dims of geo]`, and its bias (if any) against `m`.
pub(crate) fn conv_output<'o>(
    outputs: &'o mut [TensorMut<'_>],
    [n, m]: [usize; 2],
    rank: usize,
    geo: &Geo,
    bias: Option<&[f32]>,
) -> Result<&'o mut [f32]> {
    if let Some(b) = bias {
        ensure!(
            b.len() == m,
            Graph,
            "bias B has {} values, expected {m}",
            b.len()
        );
    }
    let out = outputs
        .get_mut(0)
        .ok_or_else(|| Error::Graph("missing output".into()))?;
    let r = rank - 2;
    ensure!(
        out.dims.len() == rank && out.dims[..2] == [n, m] && out.dims[2..] == *geo.out_dims(r),
        Graph,
        "output buffer is {}, the conv makes [{n}, {m}, {:?}]",
        dims_str(out.dims),
        geo.out_dims(r)
    );
    let od = out.dims;
    let y = out.f32()?;
    check_len(y.len(), od, "output Y")?;
    Ok(y)
}

/// Add a per-row bias and apply the activation to `rows` rows of `len`.
pub(crate) fn finish_rows(y: &mut [f32], len: usize, bias: Option<&[f32]>, act: Activation) {
    if len == 0 {
        return;
    }
    for (j, row) in y.chunks_exact_mut(len).enumerate() {
        if let Some(&b) = bias.and_then(|b| b.get(j)) {
            row.iter_mut().for_each(|v| *v += b);
        }
        act.apply(row);
    }
}

// ---------------------------------------------------------------- Conv

#[derive(Debug)]
struct Conv {
    win: Window,
    group: usize,
    act: Activation,
    /// W is a graph constant (told at model build).
    const_w: bool,
    /// W as compressed columns of Wᵀ, when it is sparse enough for the
    /// sparse kernel ([`SPARSE_DENSITY_MAX`]); built at the first run.
    sparse: std::sync::OnceLock<Option<SparseB>>,
}

/// Weight density at or below which a group-1 Conv with a constant weight
/// runs on the sparse kernel ([`sparse::conv`]) instead of the dense
/// matmul. `cargo run --release -p morsel-runtime --example sparse_conv`
/// with this bound set to 1 (sparse at every density; one thread, Xeon
/// with AVX-512, 2026-11-27), sparse/dense time:
///
/// ```text
/// conv                    density 0.5   0.3   0.2   0.1
/// digits 3×3 16→32 @8×8           0.85  0.83  0.80  0.67
/// 3×3 16→32 @40×40                1.29  0.91  0.75  0.53
/// 3×3 24→24 @80×80                1.90  1.24  0.96  0.79
/// 1×1 96→24 @80×80                1.54  0.91  0.77  0.53
/// 1×1 24→96 @80×80                1.16  0.90  0.80  0.67
/// ```
///
/// Sparse wins everywhere from 80% zeros (0.2), most places from 70%; a
/// k×k conv also pays for unfolding its im2col rows (the 3×3 at 80×80).
pub const SPARSE_DENSITY_MAX: f64 = 0.2;

/// Largest im2col matrix (floats) the sparse path unfolds for a k×k conv;
/// above it the dense path, which unfolds block by block, runs.
const SPARSE_UNFOLD_MAX: usize = 1 << 22;

pub(crate) fn group_attr(a: &Attrs) -> Result<usize> {
    let g = a.int("group", 1)?;
    ensure!(
        (1..=MAX_ATTR).contains(&g),
        Graph,
        "attribute 'group' must be at least 1, is {g}"
    );
    Ok(g as usize)
}

pub fn build_conv(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(Conv {
        win: Window::parse(a, false)?,
        group: group_attr(a)?,
        act: Activation::from_attrs(a)?,
        const_w: false,
        sparse: std::sync::OnceLock::new(),
    }))
}

/// Common checks of X and W ranks (3 to 5) for Conv and ConvTranspose.
pub(crate) fn check_ranks(x: &Fact, w: &Fact) -> Result<usize> {
    let rank = x.rank();
    ensure!(
        rank >= 3,
        Graph,
        "input X has shape {}, expected [N, C, spatial...]",
        shape_str(&x.shape)
    );
    ensure!(
        rank <= 5,
        Unsupported,
        "input X has {} spatial axes (1 to 3 supported)",
        rank - 2
    );
    ensure!(
        w.rank() == rank,
        Graph,
        "weight W has shape {}, expected rank {rank} like X {}",
        shape_str(&w.shape),
        shape_str(&x.shape)
    );
    Ok(rank - 2)
}

/// Check an optional bias fact against the output channel count.
pub(crate) fn check_bias(b: Option<&Fact>, m: Option<usize>) -> Result<()> {
    if let Some(b) = b {
        expect_dtype(b, DType::F32, "bias B")?;
        let ok = b.rank() == 1
            && (m.is_none() || b.shape[0].known().is_none() || b.shape[0].known() == m);
        ensure!(
            ok,
            Graph,
            "bias B has shape {}, expected [{}]",
            shape_str(&b.shape),
            m.map_or("M".into(), |m| m.to_string())
        );
    }
    Ok(())
}

impl Op for Conv {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (req(inputs, 0)?, req(inputs, 1)?);
        expect_dtype(x, DType::F32, "input X")?;
        expect_dtype(w, DType::F32, "weight W")?;
        let r = check_ranks(x, w)?;
        self.win.check_rank(r)?;
        let g = self.group;
        if let (Some(c), Some(cg)) = (x.shape[1].known(), w.shape[1].known()) {
            ensure!(
                cg.checked_mul(g) == Some(c),
                Graph,
                "input X {} has {c} channels, weight W {} with group {g} expects {}",
                shape_str(&x.shape),
                shape_str(&w.shape),
                cg.saturating_mul(g)
            );
        }
        let m = w.shape[0].known();
        if let Some(m) = m {
            ensure!(
                m % g == 0,
                Graph,
                "weight W has {m} output channels, not divisible by group {g}"
            );
        }
        check_bias(opt(inputs, 2), m)?;
        let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
        for i in 0..r {
            let k = self.win.kernel_dim(i, w.shape[2 + i].known())?;
            shape.push(self.win.out_dim(i, r, &x.shape[2 + i], k)?);
        }
        Ok(vec![Fact::new(DType::F32, shape)])
    }

    fn constant_inputs(&mut self, is_const: &[bool]) {
        self.const_w = is_const.get(1).copied().unwrap_or(false);
    }

    fn prepared_bytes(&self) -> usize {
        self.sparse
            .get()
            .and_then(Option::as_ref)
            .map_or(0, |s| s.bytes())
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let Operands {
            x,
            w,
            xs,
            ws,
            bs,
            rank,
        } = Operands::of(inputs)?;
        let (n, c, m, cg, g) = (x.dims[0], x.dims[1], w.dims[0], w.dims[1], self.group);
        ensure!(
            cg.checked_mul(g) == Some(c) && m % g == 0,
            Graph,
            "X {} does not fit W {} with group {g}",
            dims_str(x.dims),
            dims_str(w.dims)
        );
        let geo = self.win.geo(&x.dims[2..], &w.dims[2..])?;
        let y = conv_output(outputs, [n, m], rank, &geo, bs)?;
        let (in_sp, out_sp, ksp) = (geo.in_size(), geo.out_size(), geo.k_size());
        if y.is_empty() {
            return Ok(());
        }
        let (mg, threads) = (m / g, ctx.threads);
        if cg == 1 && geo.input[0] == 1 && geo.kernel[0] == 1 && geo.output[0] == 1 {
            depthwise(xs, ws, bs, y, c, mg, &geo, self.act, threads);
            return Ok(());
        }
        let k = cg * ksp;
        let pointwise = geo.kernel == [1; 3]
            && geo.stride == [1; 3]
            && geo.pad_begin == [0; 3]
            && geo.pad_end == [0; 3];
        let act = self.act;
        let apply = move |s: &mut [f32]| act.apply(s);
        let epi: Option<sgemm::Epilogue<'_>> = (act != Activation::None).then_some(&apply);
        // A pruned constant weight: the sparse kernel, one image at a time.
        let sparse = if self.const_w && g == 1 && ctx.pack_weights {
            self.sparse
                .get_or_init(|| {
                    (sparse::density(ws) <= SPARSE_DENSITY_MAX)
                        .then(|| SparseB::new(Mat::rows(ws, m, k).t()).ok())
                        .flatten()
                })
                .as_ref()
                .filter(|s| s.k == k && s.n == m)
                .filter(|_| pointwise || k.saturating_mul(out_sp) <= SPARSE_UNFOLD_MAX)
        } else {
            None
        };
        if let Some(sb) = sparse {
            for ni in 0..n {
                let xi = &xs[ni * c * in_sp..][..c * in_sp];
                let yi = &mut y[ni * m * out_sp..][..m * out_sp];
                if pointwise {
                    sparse::conv(sb, xi, out_sp, yi, bs, epi, threads)?;
                } else {
                    kernels::with_scratch(|s| {
                        if s.len() < k * out_sp {
                            s.resize(k * out_sp, 0.0);
                        }
                        let cols = &mut s[..k * out_sp];
                        Im2col { x: xi, geo: &geo }.unfold(k, cols);
                        sparse::conv(sb, cols, out_sp, yi, bs, epi, threads)
                    })?;
                }
            }
            return Ok(());
        }
        for ni in 0..n {
            for gi in 0..g {
                let xg = &xs[(ni * c + gi * cg) * in_sp..][..cg * in_sp];
                let wg = Mat::rows(&ws[gi * mg * k..][..mg * k], mg, k);
                let yg = &mut y[(ni * m + gi * mg) * out_sp..][..mg * out_sp];
                let bias = match bs {
                    Some(b) => Bias::Row(&b[gi * mg..][..mg]),
                    None => Bias::None,
                };
                let unfold = Im2col { x: xg, geo: &geo };
                let rhs = if pointwise {
                    Rhs::View(Mat::rows(xg, cg, in_sp))
                } else {
                    Rhs::Packer {
                        k,
                        n: out_sp,
                        pack: &unfold,
                    }
                };
                kernels::with_scratch(|s| {
                    sgemm::matmul(Lhs::View(wg), rhs, yg, out_sp, bias, epi, threads, s)
                })?;
            }
        }
        Ok(())
    }
}

/// Unfolds `cg` input channels (im2col) straight into the matmul kernel's
/// packed panels, one `KC × NC` block at a time: no unfolded copy of the
/// image is ever made. Row `k` of the virtual `[cg·kD·kH·kW, oD·oH·oW]`
/// matrix is (channel, kernel offset); column `j` an output position; zeros
/// where the window reads padding.
pub(crate) struct Im2col<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) geo: &'a Geo,
}

impl Im2col<'_> {
    /// Row `kidx` of the virtual matrix, columns `j0..j0 + row.len()`.
    fn fill_row(&self, kidx: usize, j0: usize, row: &mut [f32]) {
        let g = self.geo;
        let [id, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let [_, kh, kw] = g.kernel;
        let [sd, sh, sw] = g.stride;
        let [dd, dh, dw] = g.dilation;
        let [pd, ph, pw] = g.pad_begin;
        let (in_sp, ksp) = (g.in_size(), g.k_size());
        {
            let (ch, rem) = (kidx / ksp, kidx % ksp);
            let (a, rem) = (rem / (kh * kw), rem % (kh * kw));
            let (b, e) = (rem / kw, rem % kw);
            let xc = &self.x[ch * in_sp..][..in_sp];
            let (lo, hi) = valid_range(ow, iw, sw, e * dw, pw);
            let mut j = j0;
            while j < j0 + row.len() {
                let (r, x0) = (j / ow, j % ow);
                let x1 = ow.min(x0 + (j0 + row.len() - j));
                let seg = &mut row[j - j0..j - j0 + (x1 - x0)];
                let (z, yy) = (r / oh, r % oh);
                let iz = (z * sd + a * dd).checked_sub(pd).filter(|&v| v < id);
                let iy = (yy * sh + b * dh).checked_sub(ph).filter(|&v| v < ih);
                match (iz, iy) {
                    (Some(iz), Some(iy)) if lo < hi => {
                        let src = &xc[(iz * ih + iy) * iw..][..iw];
                        let (v0, v1) = (lo.clamp(x0, x1), hi.clamp(x0, x1));
                        seg[..v0 - x0].fill(0.0);
                        seg[v1 - x0..].fill(0.0);
                        let valid = &mut seg[v0 - x0..v1 - x0];
                        // v0 >= lo, so the window starts inside the row.
                        let start = (v0 * sw + e * dw).saturating_sub(pw);
                        if valid.is_empty() {
                        } else if sw == 1 {
                            valid.copy_from_slice(&src[start..start + valid.len()]);
                        } else {
                            for (t, d) in valid.iter_mut().enumerate() {
                                *d = src[start + t * sw];
                            }
                        }
                    }
                    _ => seg.fill(0.0),
                }
                j += x1 - x0;
            }
        }
    }

    /// The whole `[k, out]` matrix, row-major, into `dst`.
    fn unfold(&self, k: usize, dst: &mut [f32]) {
        let out = self.geo.out_size();
        for (kidx, row) in dst.chunks_exact_mut(out).take(k).enumerate() {
            self.fill_row(kidx, 0, row);
        }
    }
}

impl PackRhs for Im2col<'_> {
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let mut row = [0f32; sgemm::NC];
        let row = &mut row[..nc.min(sgemm::NC)];
        for kk in 0..kc {
            self.fill_row(k0 + kk, j0, row);
            // Scatter the row into its panels (whole panels as fixed-size
            // copies: two vector moves, not a memcpy call).
            const NR: usize = sgemm::NR;
            let mut pieces = row.chunks_exact(NR);
            for (p, piece) in pieces.by_ref().enumerate() {
                if let (Ok(d), Ok(piece)) = (
                    <&mut [f32; NR]>::try_from(&mut dst[(p * kc + kk) * NR..][..NR]),
                    <&[f32; NR]>::try_from(piece),
                ) {
                    *d = *piece;
                }
            }
            let rest = pieces.remainder();
            if !rest.is_empty() {
                let p = row.len() / NR;
                let d = &mut dst[(p * kc + kk) * NR..][..NR];
                d[..rest.len()].copy_from_slice(rest);
                d[rest.len()..].fill(0.0);
            }
        }
    }
}

/// Convolution with one input channel per group (depthwise, channel
/// multiplier `mg`): a direct loop per output plane, no im2col. Only for
/// problems whose depth axis is trivial (1-D and 2-D).
fn depthwise(
    xs: &[f32],
    ws: &[f32],
    bs: Option<&[f32]>,
    y: &mut [f32],
    c: usize,
    mg: usize,
    g: &Geo,
    act: Activation,
    threads: usize,
) {
    let (in_sp, out_sp, ksp) = (g.in_size(), g.out_size(), g.k_size());
    let m = c * mg;
    let plane = |idx: usize, yp: &mut [f32]| {
        let (ni, oc) = (idx / m, idx % m);
        let xp = &xs[(ni * c + oc / mg) * in_sp..][..in_sp];
        depthwise_plane(xp, &ws[oc * ksp..][..ksp], bs.map_or(0.0, |b| b[oc]), yp, g);
        act.apply(yp);
    };
    if threads > 1 && y.len().saturating_mul(ksp) >= 1 << 16 {
        crate::par::chunks_mut(threads, y, out_sp, plane);
        return;
    }
    for (i, yp) in y.chunks_exact_mut(out_sp).enumerate() {
        plane(i, yp);
    }
}

fn depthwise_plane(x: &[f32], w: &[f32], bias: f32, y: &mut [f32], g: &Geo) {
    crate::kernels::with_scratch(|buf| {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::avx512f() {
            // SAFETY: the CPU has AVX-512 F (checked at run time).
            unsafe { depthwise_plane_avx512(x, w, bias, y, g, buf) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            unsafe { depthwise_plane_avx2(x, w, bias, y, g, buf) };
            return;
        }
        depthwise_plane_impl::<32>(x, w, bias, y, g, buf, dw_chunk::<32>, dw_chunk::<32>)
    })
}

/// The same loop compiled for AVX2 (8 lanes instead of SSE's 4).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_plane_avx2(
    x: &[f32],
    w: &[f32],
    bias: f32,
    y: &mut [f32],
    g: &Geo,
    buf: &mut Vec<f32>,
) {
    let chunk = |base: &[f32], offs: &[usize], w: &[f32], bias: f32, x0: usize, row: &mut [f32]| {
        dw_chunk_avx2(base, offs, w, bias, x0, row)
    };
    depthwise_plane_impl::<32>(x, w, bias, y, g, buf, chunk, chunk)
}

/// The same loop compiled for AVX-512, 64 columns at a time in four zmm
/// sums held in registers (then 32 in four ymm sums).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn depthwise_plane_avx512(
    x: &[f32],
    w: &[f32],
    bias: f32,
    y: &mut [f32],
    g: &Geo,
    buf: &mut Vec<f32>,
) {
    depthwise_plane_impl::<64>(
        x,
        w,
        bias,
        y,
        g,
        buf,
        |base, offs, w, bias, x0, row| dw_chunk_avx512(base, offs, w, bias, x0, row),
        |base, offs, w, bias, x0, row| dw_chunk_avx2(base, offs, w, bias, x0, row),
    )
}

/// [`dw_chunk`] of 32 columns in four ymm sums. Each column's taps are
/// added in the same order as in the portable copy, multiply then add
/// (no fused multiply-add, which Rust does not contract either), so the
/// bits are the same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dw_chunk_avx2(base: &[f32], offs: &[usize], w: &[f32], bias: f32, x0: usize, row: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(bias); 4];
    for (&off, &wv) in offs.iter().zip(w) {
        // In bounds: the padded plane holds every tap of every output.
        let v = &base[off + x0..][..32];
        let wv = _mm256_set1_ps(wv);
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `v` holds 32 values, so 8 from 8·k are in it.
            let x = unsafe { _mm256_loadu_ps(v.as_ptr().add(8 * k)) };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, x));
        }
    }
    let out = &mut row[x0..][..32];
    for (k, a) in acc.into_iter().enumerate() {
        // SAFETY: `out` holds 32 values.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), a) };
    }
}

/// [`dw_chunk`] of 64 columns in four zmm sums, in the same order as the
/// portable copy (see [`dw_chunk_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dw_chunk_avx512(base: &[f32], offs: &[usize], w: &[f32], bias: f32, x0: usize, row: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(bias); 4];
    for (&off, &wv) in offs.iter().zip(w) {
        let v = &base[off + x0..][..64];
        let wv = _mm512_set1_ps(wv);
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `v` holds 64 values, so 16 from 16·k are in it.
            let x = unsafe { _mm512_loadu_ps(v.as_ptr().add(16 * k)) };
            *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, x));
        }
    }
    let out = &mut row[x0..][..64];
    for (k, a) in acc.into_iter().enumerate() {
        // SAFETY: `out` holds 64 values.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * k), a) };
    }
}

#[inline(always)]
/// `buf`: scratch for the zero-padded plane (grown as needed, reused);
/// `WIDE` output columns at a time (`wide`), then 32 (`half`, when WIDE is
/// 64), then 8.
#[allow(clippy::too_many_arguments)]
fn depthwise_plane_impl<const WIDE: usize>(
    x: &[f32],
    w: &[f32],
    bias: f32,
    y: &mut [f32],
    g: &Geo,
    buf: &mut Vec<f32>,
    wide: impl Fn(&[f32], &[usize], &[f32], f32, usize, &mut [f32]),
    half: impl Fn(&[f32], &[usize], &[f32], f32, usize, &mut [f32]),
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    let [_, sh, sw] = g.stride;
    let [_, dh, dw] = g.dilation;
    let [_, ph, pw] = g.pad_begin;
    let ranges: [(usize, usize); 16] = std::array::from_fn(|e| {
        if e < kw {
            valid_range(ow, iw, sw, e * dw, pw)
        } else {
            (0, 0)
        }
    });
    // Copy the plane once into a zero-padded buffer split into `sw` phases
    // by column (phase φ holds padded columns φ, φ+sw, …; one phase for
    // stride 1). Tap (b, e) of output column x reads padded column
    // x·sw + e·dw, which is phase (e·dw) mod sw at x + (e·dw)/sw: so every
    // tap reads consecutive floats for consecutive outputs, at any stride,
    // and each output column reads all its taps in place, 32 or 8 columns
    // at a time with the sums in registers (one vector load + multiply-add
    // per tap; several independent sums so the adds' latency does not
    // bound it).
    const MAX_TAPS: usize = 64;
    if kh * kw <= MAX_TAPS && ow >= 8 {
        let pwid = (ow - 1) * sw + (kw - 1) * dw + 1;
        let prows = (oh - 1) * sh + (kh - 1) * dh + 1;
        let qw = pwid.div_ceil(sw);
        if buf.len() < prows * sw * qw {
            buf.resize(prows * sw * qw, 0.0);
        }
        let plane = &mut buf[..prows * sw * qw];
        for (r, prow) in plane.chunks_exact_mut(sw * qw).enumerate() {
            let src = r
                .checked_sub(ph)
                .filter(|&v| v < ih)
                .map(|iy| &x[iy * iw..][..iw]);
            match src {
                None => prow.fill(0.0),
                Some(src) if sw == 1 => {
                    // Input column ix sits at padded column ix + pw; the
                    // ones past the last window are never read.
                    prow.fill(0.0);
                    if pw < pwid {
                        let n = iw.min(pwid - pw);
                        prow[pw..pw + n].copy_from_slice(&src[..n]);
                    }
                }
                Some(src) => {
                    for (phase, dst) in prow.chunks_exact_mut(qw).enumerate() {
                        for (q, d) in dst.iter_mut().enumerate() {
                            *d = (q * sw + phase)
                                .checked_sub(pw)
                                .and_then(|ix| src.get(ix))
                                .copied()
                                .unwrap_or(0.0);
                        }
                    }
                }
            }
        }
        let plane: &[f32] = plane;
        // Where tap t of output column 0 sits, from the row's first
        // padded row; and the step between output rows.
        // (Once per plane, so no division at stride 1: 25 taps' `/` and
        // `%` cost as much as the sums of a 2×96 plane.)
        let mut offs = [0usize; MAX_TAPS];
        for (b, row) in offs.chunks_exact_mut(kw).take(kh).enumerate() {
            for (e, o) in row.iter_mut().enumerate() {
                *o = if sw == 1 {
                    b * dh * qw + e * dw
                } else {
                    (b * dh * sw + (e * dw) % sw) * qw + (e * dw) / sw
                };
            }
        }
        for (yy, row) in y.chunks_exact_mut(ow).enumerate().take(oh) {
            let base = &plane[yy * sh * sw * qw..];
            // Kernel rows that read only zero padding add nothing: the
            // row's taps are those of kernel rows b0..b1 (a run, as taps go
            // row by row), the same run on every path, so the same bits.
            let first = yy * sh;
            let b0 = ph.saturating_sub(first).div_ceil(dh).min(kh);
            let b1 = (ph + ih).saturating_sub(first).div_ceil(dh).clamp(b0, kh);
            let (offs, w) = (&offs[b0 * kw..b1 * kw], &w[b0 * kw..b1 * kw]);
            let mut x0 = 0;
            while x0 + WIDE <= ow {
                wide(base, offs, w, bias, x0, row);
                x0 += WIDE;
            }
            while WIDE > 32 && x0 + 32 <= ow {
                half(base, offs, w, bias, x0, row);
                x0 += 32;
            }
            while x0 + 8 <= ow {
                dw_chunk::<8>(base, offs, w, bias, x0, row);
                x0 += 8;
            }
            for (xx, o) in row.iter_mut().enumerate().skip(x0) {
                let mut acc = bias;
                for (&off, &wv) in offs.iter().zip(w) {
                    acc += wv * base[off + xx];
                }
                *o = acc;
            }
        }
        return;
    }
    for (yy, row) in y.chunks_exact_mut(ow).enumerate().take(oh) {
        row.fill(bias);
        for b in 0..kh {
            let Some(iy) = (yy * sh + b * dh).checked_sub(ph).filter(|&v| v < ih) else {
                continue;
            };
            let src = &x[iy * iw..][..iw];
            for e in 0..kw {
                let wv = w[b * kw + e];
                let (lo, hi) = if e < 16 {
                    ranges[e]
                } else {
                    valid_range(ow, iw, sw, e * dw, pw)
                };
                if lo >= hi {
                    continue;
                }
                let start = lo * sw + e * dw - pw;
                if sw == 1 {
                    for (o, &v) in row[lo..hi].iter_mut().zip(&src[start..start + (hi - lo)]) {
                        *o += wv * v;
                    }
                } else {
                    for (j, o) in row[lo..hi].iter_mut().enumerate() {
                        *o += wv * src[start + j * sw];
                    }
                }
            }
        }
    }
}

/// `N` output columns from `x0` of one depthwise row: tap `t` of column
/// `x` is `base[offs[t] + x]`.
#[inline(always)]
fn dw_chunk<const N: usize>(
    base: &[f32],
    offs: &[usize],
    w: &[f32],
    bias: f32,
    x0: usize,
    row: &mut [f32],
) {
    let mut acc = [bias; N];
    for (&off, &wv) in offs.iter().zip(w) {
        // In bounds: the padded plane holds every tap of every output.
        let v = &base[off + x0..][..N];
        for (a, &v) in acc.iter_mut().zip(v) {
            *a += wv * v;
        }
    }
    row[x0..x0 + N].copy_from_slice(&acc);
}

#[cfg(test)]
#[path = "tests/conv.rs"]
pub(crate) mod tests;
