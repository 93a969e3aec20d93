//! `MatMul` with numpy semantics: 1-D promotion on either side,
//! broadcasting of the leading batch dims. Also the shape checks `Gemm`
//! ([`super::gemm`], builder re-exported here for the registry) shares.
//!
//! f32 runs through [`kernels::matmul`] on strided views of the operands:
//! broadcast batches are never copied, and when `B` has no batch while `A`
//! has all of it, the whole batch is one `[batch·M, K] × [K, N]` product.
//! i32/i64 (shape subgraphs) use a plain loop with wrapping arithmetic.
//!
//! An optional fused [`Activation`] (attributes `activation`,
//! `activation_alpha`, `activation_beta`) runs in place on f32 outputs, on
//! each output tile as the kernel finishes it; an optional third input, a
//! bias of `[N]` (what the compressor fuses from a following `Add`), starts
//! the accumulators. A constant 2-D `B` (a weight) is packed for the kernel
//! on first use and kept by the op; a pruned one (few enough nonzeros for
//! the number of rows, [`sparse::sparse_pays`]) runs on the sparse kernel
//! instead, from compressed columns built on first use.

use super::broadcast::broadcast_shapes;
use super::gemm::Activation;
use super::{Ctx, Fact, Op, opt, req};
use crate::dtype::{DType, Element};
use crate::graph::Attrs;
use crate::kernels::sgemm::{self, Bias, Lhs, PackedB, Rhs};
use crate::kernels::sparse::{self, SparseB};
use crate::kernels::{self, Mat};
use crate::tensor::{Dim, Shape, TensorMut, TensorRef, dims_str, numel, shape_str};
use crate::{Error, Result};
use std::sync::OnceLock;

pub use super::gemm::build_gemm;

// ---------------------------------------------------------------- shared checks

pub(super) fn inner_mismatch(op: &str, a: &str, ka: &Dim, b: &str, kb: &Dim) -> Error {
    Error::Graph(format!(
        "{op}: inner dimensions differ: A is {a} (k={ka}), B is {b} (k={kb})"
    ))
}

fn checked(x: usize, y: usize, what: &str) -> Result<usize> {
    x.checked_mul(y)
        .ok_or_else(|| Error::Graph(format!("{what}: size {x}×{y} overflows")))
}

pub(super) fn check_len(what: &str, dims: &[usize], len: usize) -> Result<()> {
    let want = numel(dims)?;
    if want != len {
        return Err(Error::Graph(format!(
            "{what} has {len} elements, its shape {} needs {want}",
            dims_str(dims)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- MatMul

#[derive(Debug)]
struct MatMul {
    act: Activation,
    /// B is a graph constant: pack it once.
    const_b: bool,
    packed: OnceLock<PackedB>,
    /// The constant B as compressed columns, when it is sparse enough for
    /// some number of rows (`None`: too dense; decided on first use).
    sparse: OnceLock<Option<SparseB>>,
}

/// Output shape of numpy matmul on (maybe symbolic) shapes.
pub(super) fn matmul_shape(a: &[Dim], b: &[Dim]) -> Result<Shape> {
    let (ra, rb) = (a.len(), b.len());
    if ra == 0 || rb == 0 {
        return Err(Error::Graph(format!(
            "MatMul: operands must have rank >= 1, A is {}, B is {}",
            shape_str(a),
            shape_str(b)
        )));
    }
    let ka = &a[ra - 1];
    let kb = if rb == 1 { &b[0] } else { &b[rb - 2] };
    if let (Dim::Known(x), Dim::Known(y)) = (ka, kb)
        && x != y
    {
        return Err(inner_mismatch(
            "MatMul",
            &shape_str(a),
            ka,
            &shape_str(b),
            kb,
        ));
    }
    let a_batch: Shape = a[..ra.saturating_sub(2)].to_vec();
    let b_batch: Shape = b[..rb.saturating_sub(2)].to_vec();
    let mut out = broadcast_shapes(&[&a_batch, &b_batch]).map_err(|e| {
        Error::Graph(format!(
            "MatMul: batch dims of A {} and B {} do not broadcast ({e})",
            shape_str(a),
            shape_str(b)
        ))
    })?;
    if ra >= 2 {
        out.push(a[ra - 2].clone());
    }
    if rb >= 2 {
        out.push(b[rb - 1].clone());
    }
    Ok(out)
}

/// Concrete matmul geometry, checked against the output dims.
pub(super) struct Geometry<'d> {
    a_batch: &'d [usize],
    b_batch: &'d [usize],
    pub(super) out_batch: &'d [usize],
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
}

/// Dim `d` of `batch` right-aligned to `rank` (1 where missing).
fn aligned(batch: &[usize], rank: usize, d: usize) -> usize {
    let off = rank - batch.len();
    if d < off {
        1
    } else {
        batch.get(d - off).copied().unwrap_or(1)
    }
}

impl<'d> Geometry<'d> {
    pub(super) fn new(a: &'d [usize], b: &'d [usize], out: &'d [usize]) -> Result<Geometry<'d>> {
        let (ra, rb) = (a.len(), b.len());
        if ra == 0 || rb == 0 {
            return Err(Error::Graph(format!(
                "MatMul: operands must have rank >= 1, A is {}, B is {}",
                dims_str(a),
                dims_str(b)
            )));
        }
        let (m, k) = if ra == 1 {
            (1, a[0])
        } else {
            (a[ra - 2], a[ra - 1])
        };
        let (kb, n) = if rb == 1 {
            (b[0], 1)
        } else {
            (b[rb - 2], b[rb - 1])
        };
        if k != kb {
            return Err(inner_mismatch(
                "MatMul",
                &dims_str(a),
                &Dim::Known(k),
                &dims_str(b),
                &Dim::Known(kb),
            ));
        }
        let a_batch = &a[..ra.saturating_sub(2)];
        let b_batch = &b[..rb.saturating_sub(2)];
        let rank = a_batch.len().max(b_batch.len());
        let bad_out = || {
            Error::Graph(format!(
                "MatMul: output is {}, which does not fit A {} and B {}",
                dims_str(out),
                dims_str(a),
                dims_str(b)
            ))
        };
        if out.len() != rank + usize::from(ra > 1) + usize::from(rb > 1) {
            return Err(bad_out());
        }
        for d in 0..rank {
            let (x, y) = (aligned(a_batch, rank, d), aligned(b_batch, rank, d));
            let want = if x == 1 {
                y
            } else if y == 1 || y == x {
                x
            } else {
                return Err(Error::Graph(format!(
                    "MatMul: batch dims of A {} and B {} do not broadcast",
                    dims_str(a),
                    dims_str(b)
                )));
            };
            if out[d] != want {
                return Err(bad_out());
            }
        }
        if (ra > 1 && out[rank] != m) || (rb > 1 && out[out.len() - 1] != n) {
            return Err(bad_out());
        }
        Ok(Geometry {
            a_batch,
            b_batch,
            out_batch: &out[..rank],
            m,
            k,
            n,
        })
    }

    /// Indices of the A and B matrices used by output matrix `i`.
    pub(super) fn operands(&self, i: usize) -> (usize, usize) {
        let rank = self.out_batch.len();
        let (mut rem, mut ai, mut bi, mut sa, mut sb) = (i, 0, 0, 1, 1);
        for d in (0..rank).rev() {
            let od = self.out_batch[d].max(1);
            let idx = rem % od;
            rem /= od;
            let (da, db) = (
                aligned(self.a_batch, rank, d),
                aligned(self.b_batch, rank, d),
            );
            if da != 1 {
                ai += idx * sa;
            }
            if db != 1 {
                bi += idx * sb;
            }
            sa *= da;
            sb *= db;
        }
        (ai, bi)
    }
}

fn part<'s, T>(data: &'s [T], index: usize, size: usize, what: &str) -> Result<&'s [T]> {
    index
        .checked_mul(size)
        .and_then(|s| data.get(s..s.checked_add(size)?))
        .ok_or_else(|| Error::Graph(format!("MatMul: {what} matrix {index} is out of bounds")))
}

/// What the f32 path needs besides the operands.
#[derive(Clone, Copy)]
struct Extras<'a> {
    bias: Option<&'a [f32]>,
    act: Activation,
    /// Packed B (when B is a constant 2-D weight).
    packed: Option<&'a PackedB>,
    /// Sparse B (a constant 2-D weight sparse enough for these rows).
    sparse: Option<&'a SparseB>,
    threads: usize,
}

fn matmul_f32(
    g: &Geometry<'_>,
    x: &[f32],
    y: &[f32],
    o: &mut [f32],
    ex: &Extras<'_>,
) -> Result<()> {
    let (m, k, n) = (g.m, g.k, g.n);
    let batches = numel(g.out_batch)?;
    let (mk, kn, mn) = (
        checked(m, k, "MatMul A")?,
        checked(k, n, "MatMul B")?,
        checked(m, n, "MatMul output")?,
    );
    if batches == 0 || mn == 0 {
        return Ok(());
    }
    if numel(g.b_batch)? == 1 && numel(g.a_batch)? == batches {
        // B is shared by every batch and A is contiguous: one tall product.
        let rows = checked(batches, m, "MatMul A")?;
        let a = Mat::rows(part(x, 0, checked(rows, k, "MatMul A")?, "A")?, rows, k);
        let b = Mat::rows(part(y, 0, kn, "B")?, k, n);
        let c = o
            .get_mut(..checked(rows, n, "MatMul output")?)
            .ok_or_else(|| Error::Graph("MatMul: output buffer is too small".into()))?;
        if let Some(sb) = ex.sparse.filter(|sb| sb.k == k && sb.n == n) {
            let act = ex.act;
            let apply = move |s: &mut [f32]| act.apply(s);
            let epi: Option<sgemm::Epilogue<'_>> = (act != Activation::None).then_some(&apply);
            return sparse::matmul(a, sb, c, n, ex.bias, epi, ex.threads);
        }
        let rhs = match ex.packed {
            Some(p) if p.k == k && p.n == n => Rhs::Packed(p),
            _ => Rhs::View(b),
        };
        return product(Lhs::View(a), rhs, c, n, ex);
    }
    let c = o
        .get_mut(..checked(batches, mn, "MatMul output")?)
        .ok_or_else(|| Error::Graph("MatMul: output buffer is too small".into()))?;
    let one = |i: usize, c: &mut [f32], ex: &Extras<'_>| {
        let (ai, bi) = g.operands(i);
        let a = Mat::rows(part(x, ai, mk, "A")?, m, k);
        let b = Mat::rows(part(y, bi, kn, "B")?, k, n);
        product(Lhs::View(a), Rhs::View(b), c, n, ex)
    };
    // Several products (attention's heads): whole products per thread, so
    // small ones do not each pay a fork and join.
    if ex.threads > 1 && batches > 1 && batches.saturating_mul(mn).saturating_mul(k) >= 1 << 17 {
        let single = Extras { threads: 1, ..*ex };
        return crate::par::try_chunks_mut(ex.threads, c, mn, |i, c| one(i, c, &single));
    }
    for (i, c) in c.chunks_exact_mut(mn).enumerate() {
        one(i, c, ex)?;
    }
    Ok(())
}

/// One product through the kernel, with bias and activation fused.
fn product(a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32], n: usize, ex: &Extras<'_>) -> Result<()> {
    let bias = match ex.bias {
        Some(v) => Bias::Col(v),
        None => Bias::None,
    };
    let act = ex.act;
    let apply = move |s: &mut [f32]| act.apply(s);
    let epi: Option<sgemm::Epilogue<'_>> = (act != Activation::None).then_some(&apply);
    kernels::with_scratch(|scratch| sgemm::matmul(a, b, c, n, bias, epi, ex.threads, scratch))
}

/// Integers for the plain-loop matmul; products and sums wrap.
trait IntElem: Element {
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;
}
impl IntElem for i64 {
    fn to_i64(self) -> i64 {
        self
    }
    fn from_i64(v: i64) -> i64 {
        v
    }
}
impl IntElem for i32 {
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> i32 {
        v as i32 // wrapping, like i32 arithmetic would
    }
}

fn matmul_int<T: IntElem>(
    g: &Geometry<'_>,
    a: TensorRef<'_>,
    b: TensorRef<'_>,
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let (x, y) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
    check_len("MatMul A", a.dims, x.len())?;
    check_len("MatMul B", b.dims, y.len())?;
    let o = out.as_slice_mut::<T>()?;
    let (m, k, n) = (g.m, g.k, g.n);
    let batches = numel(g.out_batch)?;
    let (mk, kn, mn) = (
        checked(m, k, "MatMul A")?,
        checked(k, n, "MatMul B")?,
        checked(m, n, "MatMul output")?,
    );
    if checked(batches, mn, "MatMul output")? != o.len() {
        return Err(Error::Graph(
            "MatMul: output buffer does not match its shape".into(),
        ));
    }
    if mn == 0 {
        return Ok(());
    }
    for (i, c) in o.chunks_exact_mut(mn).enumerate() {
        let (ai, bi) = g.operands(i);
        let (pa, pb) = (part(x, ai, mk, "A")?, part(y, bi, kn, "B")?);
        for r in 0..m {
            for col in 0..n {
                let mut s = 0i64;
                for p in 0..k {
                    s = s.wrapping_add(
                        pa[r * k + p]
                            .to_i64()
                            .wrapping_mul(pb[p * n + col].to_i64()),
                    );
                }
                c[r * n + col] = T::from_i64(s);
            }
        }
    }
    Ok(())
}

pub(super) fn first_out<'o, 'a>(
    outputs: &'o mut [TensorMut<'a>],
    op: &str,
) -> Result<&'o mut TensorMut<'a>> {
    outputs
        .first_mut()
        .ok_or_else(|| Error::Graph(format!("{op}: no output buffer")))
}

impl Op for MatMul {
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (req(inputs, 0)?, req(inputs, 1)?);
        if a.dtype != b.dtype {
            return Err(Error::Graph(format!(
                "MatMul: A is {} and B is {}: dtypes differ",
                a.dtype, b.dtype
            )));
        }
        match a.dtype {
            DType::F32 => {}
            DType::I32 | DType::I64 if self.act == Activation::None => {}
            DType::I32 | DType::I64 => {
                return Err(Error::Unsupported(format!(
                    "MatMul: fused activation {:?} on {} tensors",
                    self.act, a.dtype
                )));
            }
            d => return Err(Error::Unsupported(format!("MatMul on {d} tensors"))),
        }
        let out = matmul_shape(&a.shape, &b.shape)?;
        if let Some(bias) = opt(inputs, 2) {
            let n = if b.rank() >= 2 {
                &b.shape[b.rank() - 1]
            } else {
                &Dim::Known(1)
            };
            let ok = a.dtype == DType::F32
                && bias.dtype == DType::F32
                && bias.rank() == 1
                && !matches!((&bias.shape[0], n), (Dim::Known(x), Dim::Known(y)) if x != y);
            if !ok {
                return Err(Error::Graph(format!(
                    "MatMul: bias must be f32 [N] with N = {n} (B is {}), got {} {}",
                    shape_str(&b.shape),
                    bias.dtype,
                    shape_str(&bias.shape)
                )));
            }
        }
        Ok(vec![Fact::new(a.dtype, out)])
    }

    fn constant_inputs(&mut self, is_const: &[bool]) {
        self.const_b = is_const.get(1).copied().unwrap_or(false);
    }

    fn prepared_bytes(&self) -> usize {
        let sparse = self.sparse.get().and_then(Option::as_ref);
        self.packed.get().map_or(0, |p| p.bytes()) + sparse.map_or(0, |s| s.bytes())
    }

    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()> {
        let (a, b) = (*req(inputs, 0)?, *req(inputs, 1)?);
        let out = first_out(outputs, "MatMul")?;
        if a.dtype != b.dtype || out.dtype != a.dtype {
            return Err(Error::Graph(format!(
                "MatMul: dtypes differ: A {}, B {}, output {}",
                a.dtype, b.dtype, out.dtype
            )));
        }
        let out_dims = out.dims;
        let g = Geometry::new(a.dims, b.dims, out_dims)?;
        match a.dtype {
            DType::F32 => {
                let (x, y) = (a.f32()?, b.f32()?);
                check_len("MatMul A", a.dims, x.len())?;
                check_len("MatMul B", b.dims, y.len())?;
                let o = out.f32()?;
                check_len("MatMul output", out_dims, o.len())?;
                let bias = match opt(inputs, 2) {
                    Some(t) => {
                        let v = t.f32()?;
                        if v.len() != g.n {
                            return Err(Error::Graph(format!(
                                "MatMul: bias has {} values, N is {}",
                                v.len(),
                                g.n
                            )));
                        }
                        Some(v)
                    }
                    None => None,
                };
                // Pack only when enough rows reuse it: up to 48 rows the
                // kernel reads B in place, and the model stays zero-copy.
                let rows = numel(g.a_batch)?.saturating_mul(g.m);
                let weight = self.const_b && b.dims.len() == 2 && ctx.pack_weights;
                // A pruned weight: the sparse kernel, when it beats the dense
                // one at this density for this many rows (kernels::sparse).
                let sparse = if weight {
                    self.sparse
                        .get_or_init(|| {
                            let dense = sparse::density(y) > sparse::density_max();
                            if dense {
                                None
                            } else {
                                SparseB::new(Mat::rows(y, g.k, g.n)).ok()
                            }
                        })
                        .as_ref()
                        .filter(|s| sparse::sparse_pays(rows, s.density()))
                } else {
                    None
                };
                let worth = rows > sgemm::MR * sgemm::IN_PLACE_MAX_PANELS;
                let packed = if weight && worth && sparse.is_none() {
                    if self.packed.get().is_none() {
                        // First run: pack the weight (another thread may
                        // race us; either result is the same).
                        let _ = self.packed.set(PackedB::new(Mat::rows(y, g.k, g.n))?);
                    }
                    self.packed.get()
                } else {
                    None
                };
                let ex = Extras {
                    bias,
                    act: self.act,
                    packed,
                    sparse,
                    threads: ctx.threads,
                };
                matmul_f32(&g, x, y, o, &ex)
            }
            _ if opt(inputs, 2).is_some() => Err(Error::Unsupported(format!(
                "MatMul with a bias on {} tensors",
                a.dtype
            ))),
            DType::I64 if self.act == Activation::None => matmul_int::<i64>(&g, a, b, out),
            DType::I32 if self.act == Activation::None => matmul_int::<i32>(&g, a, b, out),
            d => Err(Error::Unsupported(format!(
                "MatMul on {d} tensors with activation {:?}",
                self.act
            ))),
        }
    }
}

pub fn build_matmul(a: &Attrs) -> Result<Box<dyn Op>> {
    Ok(Box::new(MatMul {
        act: Activation::from_attrs(a)?,
        const_b: false,
        packed: OnceLock::new(),
        sparse: OnceLock::new(),
    }))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::graph::Attr;
    use crate::ops::eval_owned;
    use crate::tensor::{AlignedBuf, Tensor, known_shape};

    pub(crate) struct Rng(pub(crate) u32);
    impl Rng {
        pub(crate) fn f(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
            (self.0 >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        }
        pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f()).collect()
        }
        fn ints(&mut self, n: usize) -> Vec<i64> {
            (0..n).map(|_| (self.f() * 20.0) as i64).collect()
        }
    }

    pub(crate) fn t(dims: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_slice(dims, v).unwrap()
    }

    pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// numpy matmul, straight from the definition: promote 1-D operands,
    /// broadcast batch dims index by index, then drop promoted dims.
    fn naive_matmul<T: Copy>(
        a: &[T],
        ad: &[usize],
        b: &[T],
        bd: &[usize],
        mul: impl Fn(T, T) -> f64,
    ) -> (Vec<usize>, Vec<f64>) {
        let pa: Vec<usize> = if ad.len() == 1 {
            vec![1, ad[0]]
        } else {
            ad.to_vec()
        };
        let pb: Vec<usize> = if bd.len() == 1 {
            vec![bd[0], 1]
        } else {
            bd.to_vec()
        };
        let (m, k, n) = (pa[pa.len() - 2], pa[pa.len() - 1], pb[pb.len() - 1]);
        assert_eq!(k, pb[pb.len() - 2]);
        let (ba, bb) = (&pa[..pa.len() - 2], &pb[..pb.len() - 2]);
        let rank = ba.len().max(bb.len());
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (ba, bb) = (pad(ba), pad(bb));
        let batch: Vec<usize> = ba
            .iter()
            .zip(&bb)
            .map(|(&x, &y)| if x == 1 { y } else { x })
            .collect();
        let total: usize = batch.iter().product();
        let mut out = vec![0f64; total * m * n];
        for bi in 0..total {
            let mut idx = vec![0; rank];
            let mut r = bi;
            for d in (0..rank).rev() {
                idx[d] = r % batch[d];
                r /= batch[d];
            }
            let flat = |dims: &[usize]| {
                idx.iter()
                    .zip(dims)
                    .fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i })
            };
            let (oa, ob) = (flat(&ba) * m * k, flat(&bb) * k * n);
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f64;
                    for p in 0..k {
                        s += mul(a[oa + i * k + p], b[ob + p * n + j]);
                    }
                    out[bi * m * n + i * n + j] = s;
                }
            }
        }
        let mut dims = batch;
        if ad.len() > 1 {
            dims.push(m);
        }
        if bd.len() > 1 {
            dims.push(n);
        }
        (dims, out)
    }

    const CASES: &[(&[usize], &[usize], &[usize])] = &[
        (&[3], &[3], &[]),
        (&[3], &[3, 4], &[4]),
        (&[2, 3], &[3], &[2]),
        (&[2, 5, 3], &[3], &[2, 5]),
        (&[3], &[2, 3, 4], &[2, 4]),
        (&[1, 4], &[4, 1], &[1, 1]),
        (&[2, 1, 3, 4], &[5, 4, 6], &[2, 5, 3, 6]),
        (&[7, 33, 17], &[17, 9], &[7, 33, 9]),
        (&[2, 3, 5, 17], &[1, 1, 17, 9], &[2, 3, 5, 9]),
        (&[3, 1, 5, 2], &[1, 4, 2, 7], &[3, 4, 5, 7]),
        (&[5, 3], &[4, 3, 2], &[4, 5, 2]),
        (&[4, 5, 3], &[4, 3, 2], &[4, 5, 2]),
        (&[0, 3], &[3, 4], &[0, 4]),
        (&[2, 3, 0], &[0, 4], &[2, 3, 4]),
        (&[2, 0, 3, 4], &[4, 5], &[2, 0, 3, 5]),
    ];

    #[test]
    fn matmul_matches_naive_with_broadcasting_and_1d() {
        let op = build_matmul(&Attrs::new()).unwrap();
        let mut rng = Rng(7);
        for &(ad, bd, od) in CASES {
            let av = rng.vec(ad.iter().product());
            let bv = rng.vec(bd.iter().product());
            let (want_dims, want) = naive_matmul(&av, ad, &bv, bd, |x, y| x as f64 * y as f64);
            assert_eq!(want_dims, od, "reference shape for {ad:?} x {bd:?}");
            let out = eval_owned(op.as_ref(), &[Some(t(ad, &av)), Some(t(bd, &bv))]).unwrap();
            assert_eq!(out[0].dims, od, "{ad:?} x {bd:?}");
            assert_close(
                out[0].as_slice::<f32>().unwrap(),
                &want,
                1e-5,
                &format!("{ad:?} x {bd:?}"),
            );
        }
    }

    #[test]
    fn matmul_integers_match_naive_exactly() {
        let op = build_matmul(&Attrs::new()).unwrap();
        let mut rng = Rng(3);
        for &(ad, bd, od) in CASES {
            let av = rng.ints(ad.iter().product());
            let bv = rng.ints(bd.iter().product());
            let (_, want) = naive_matmul(&av, ad, &bv, bd, |x, y| (x * y) as f64);
            let out = eval_owned(
                op.as_ref(),
                &[
                    Some(Tensor::from_slice(ad, &av).unwrap()),
                    Some(Tensor::from_slice(bd, &bv).unwrap()),
                ],
            )
            .unwrap();
            assert_eq!(out[0].dims, od);
            let got: Vec<f64> = out[0]
                .as_slice::<i64>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_eq!(got, want, "i64 {ad:?} x {bd:?}");
            let (a32, b32): (Vec<i32>, Vec<i32>) = (
                av.iter().map(|&v| v as i32).collect(),
                bv.iter().map(|&v| v as i32).collect(),
            );
            let out = eval_owned(
                op.as_ref(),
                &[
                    Some(Tensor::from_slice(ad, &a32).unwrap()),
                    Some(Tensor::from_slice(bd, &b32).unwrap()),
                ],
            )
            .unwrap();
            let got: Vec<f64> = out[0]
                .as_slice::<i32>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_eq!(got, want, "i32 {ad:?} x {bd:?}");
        }
    }

    #[test]
    fn matmul_with_threads_matches_naive() {
        let op = build_matmul(&Attrs::new()).unwrap();
        let mut rng = Rng(11);
        for (ad, bd) in [
            (&[2usize, 64, 96][..], &[96usize, 81][..]),
            (&[3, 1, 47, 96], &[2, 96, 65]),
        ] {
            let (av, bv) = (rng.vec(ad.iter().product()), rng.vec(bd.iter().product()));
            let (od, want) = naive_matmul(&av, ad, &bv, bd, |x, y| x as f64 * y as f64);
            let mut buf = AlignedBuf::zeroed(want.len() * 4);
            let (a, b) = (t(ad, &av), t(bd, &bv));
            let mut outs = [TensorMut {
                dtype: DType::F32,
                dims: &od,
                data: buf.as_bytes_mut(),
            }];
            op.eval(
                &mut Ctx::new(2),
                &[Some(a.view()), Some(b.view())],
                &mut outs,
            )
            .unwrap();
            assert_close(outs[0].f32().unwrap(), &want, 1e-5, "threaded");
        }
    }

    fn erf64(x: f64) -> f64 {
        // Maclaurin series; converges quickly for the |x| < 4 used here.
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    pub(crate) fn act_attrs(name: &str, alpha: Option<f32>, beta: Option<f32>) -> Attrs {
        let mut a = Attrs::new().with("activation", Attr::Str(name.into()));
        if let Some(v) = alpha {
            a.set("activation_alpha", Attr::Float(v));
        }
        if let Some(v) = beta {
            a.set("activation_beta", Attr::Float(v));
        }
        a
    }

    /// Fused activation cases: (activation, activation_alpha, activation_beta).
    pub(crate) const ACTS: &[(&str, Option<f32>, Option<f32>)] = &[
        ("", None, None),
        ("relu", None, None),
        ("leaky_relu", None, None),
        ("leaky_relu", Some(0.3), None),
        ("sigmoid", None, None),
        ("tanh", None, None),
        ("hard_sigmoid", None, None),
        ("hard_sigmoid", Some(0.4), Some(0.3)),
        ("hard_swish", None, None),
        ("gelu", None, None),
        ("clip", Some(-0.5), Some(1.0)),
        ("clip", None, Some(0.25)),
    ];

    /// The activation from its ONNX definition, in f64.
    pub(crate) fn act_ref(name: &str, alpha: Option<f32>, beta: Option<f32>, x: f64) -> f64 {
        let (a, b) = (alpha.map(f64::from), beta.map(f64::from));
        match name {
            "" => x,
            "relu" => x.max(0.0),
            "leaky_relu" if x < 0.0 => a.unwrap_or(0.01) * x,
            "leaky_relu" => x,
            "sigmoid" => 1.0 / (1.0 + (-x).exp()),
            "tanh" => x.tanh(),
            "hard_sigmoid" => (a.unwrap_or(0.2) * x + b.unwrap_or(0.5)).clamp(0.0, 1.0),
            "hard_swish" => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            "gelu" => 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())),
            "clip" => x
                .max(a.unwrap_or(f64::NEG_INFINITY))
                .min(b.unwrap_or(f64::INFINITY)),
            _ => unreachable!("no reference for {name}"),
        }
    }

    #[test]
    fn matmul_fused_activations_match_reference() {
        let mut rng = Rng(5);
        let (ad, bd) = ([2usize, 5, 6], [6usize, 7]);
        let av: Vec<f32> = rng.vec(60).iter().map(|v| v * 1.5).collect();
        let bv = rng.vec(42);
        let (_, plain) = naive_matmul(&av, &ad, &bv, &bd, |x, y| x as f64 * y as f64);
        for &(name, alpha, beta) in ACTS {
            let op = build_matmul(&act_attrs(name, alpha, beta)).unwrap();
            let out = eval_owned(op.as_ref(), &[Some(t(&ad, &av)), Some(t(&bd, &bv))]).unwrap();
            let want: Vec<f64> = plain
                .iter()
                .map(|&x| act_ref(name, alpha, beta, x))
                .collect();
            assert_close(out[0].as_slice::<f32>().unwrap(), &want, 1e-5, name);
        }
    }

    #[test]
    fn matmul_errors_are_clear() {
        let op = build_matmul(&Attrs::new()).unwrap();
        let e = eval_owned(
            op.as_ref(),
            &[Some(t(&[2, 3], &[0.0; 6])), Some(t(&[4, 5], &[0.0; 20]))],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("MatMul: inner dimensions differ: A is [2, 3] (k=3), B is [4, 5] (k=4)"),
            "{e}"
        );
        let e = eval_owned(
            op.as_ref(),
            &[
                Some(t(&[2, 2, 3], &[0.0; 12])),
                Some(t(&[3, 3, 1], &[0.0; 9])),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("do not broadcast"), "{e}");
        let e = eval_owned(
            op.as_ref(),
            &[Some(Tensor::scalar(1f32)), Some(t(&[1], &[1.0]))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("rank >= 1"), "{e}");
        let e = eval_owned(
            op.as_ref(),
            &[
                Some(t(&[1], &[1.0])),
                Some(Tensor::from_slice(&[1], &[1i64]).unwrap()),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("dtypes differ"), "{e}");
        let e = build_matmul(&act_attrs("swish", None, None)).unwrap_err();
        assert!(e.to_string().contains("'swish'"), "{e}");
        let relu = build_matmul(&act_attrs("relu", None, None)).unwrap();
        let i = Tensor::from_slice(&[1, 1], &[1i64]).unwrap();
        assert!(eval_owned(relu.as_ref(), &[Some(i.clone()), Some(i)]).is_err());
        // Outputs that do not fit the inputs are refused, not written out of bounds.
        let (a, b) = (t(&[2, 3], &[1.0; 6]), t(&[3, 4], &[1.0; 12]));
        let mut buf = AlignedBuf::zeroed(4 * 4);
        let mut outs = [TensorMut {
            dtype: DType::F32,
            dims: &[1, 4],
            data: buf.as_bytes_mut(),
        }];
        assert!(
            op.eval(
                &mut Ctx::new(1),
                &[Some(a.view()), Some(b.view())],
                &mut outs
            )
            .is_err()
        );
    }

    /// A pruned constant weight runs on the sparse kernel (for the row
    /// counts where it pays) with the fused bias and activation, and gives
    /// what the dense path gives; a dense constant weight does not.
    #[test]
    fn sparse_constant_weight_matches_dense_with_bias_and_activation() {
        let mut rng = Rng(13);
        let (k, n) = (70usize, 37usize);
        for (sparsity, want_sparse) in [(0.9, true), (0.0, false)] {
            let wv: Vec<f32> = (0..k * n)
                .map(|_| {
                    let v = rng.f();
                    if (v + 1.0) / 2.0 < sparsity { 0.0 } else { v }
                })
                .collect();
            let bias = rng.vec(n);
            for &(name, alpha, beta) in &ACTS[..4] {
                // 1 row, few rows, 1-D A, many rows in a batch.
                for ad in [&[1usize, 70][..], &[9, 70], &[70], &[2, 50, 70]] {
                    let av = rng.vec(ad.iter().product());
                    let (od, plain) =
                        naive_matmul(&av, ad, &wv, &[k, n], |x, y| x as f64 * y as f64);
                    let want: Vec<f64> = plain
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| act_ref(name, alpha, beta, x + bias[i % n] as f64))
                        .collect();
                    let mut op = build_matmul(&act_attrs(name, alpha, beta)).unwrap();
                    op.constant_inputs(&[false, true, true]);
                    let (a, w, b) = (t(ad, &av), t(&[k, n], &wv), t(&[n], &bias));
                    let inputs = [Some(a.view()), Some(w.view()), Some(b.view())];
                    for threads in [1, 2] {
                        let mut buf = AlignedBuf::zeroed(want.len() * 4);
                        let mut outs = [TensorMut {
                            dtype: DType::F32,
                            dims: &od,
                            data: buf.as_bytes_mut(),
                        }];
                        op.eval(&mut Ctx::new(threads), &inputs, &mut outs).unwrap();
                        let what = format!("{name} {ad:?} sparsity {sparsity} threads {threads}");
                        assert_close(outs[0].f32().unwrap(), &want, 1e-5, &what);
                    }
                    // 90% zeros: compressed columns (8 bytes a nonzero) are kept.
                    let held = op.prepared_bytes();
                    if want_sparse {
                        let nnz = wv.iter().filter(|&&v| v != 0.0).count();
                        assert!(held >= nnz * 8 && held < k * n * 4, "{held}");
                    } else {
                        assert!(held == 0 || held >= k * n * 4, "{held}");
                    }
                }
            }
        }
    }

    pub(crate) fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    pub(crate) fn fact(shape: Shape) -> Option<Fact> {
        Some(Fact::new(DType::F32, shape))
    }

    #[test]
    fn matmul_infers_symbolic_shapes() {
        let op = build_matmul(&Attrs::new()).unwrap();
        let k = Dim::Known;
        let cases: Vec<(Shape, Shape, Shape)> = vec![
            (
                vec![sym("N"), sym("S"), k(384)],
                vec![k(384), k(1536)],
                vec![sym("N"), sym("S"), k(1536)],
            ),
            (
                vec![sym("N"), k(12), sym("S"), k(32)],
                vec![sym("N"), k(12), k(32), sym("S")],
                vec![sym("N"), k(12), sym("S"), sym("S")],
            ),
            (
                vec![sym("N"), k(1), k(3), k(4)],
                vec![k(5), k(4), k(6)],
                vec![sym("N"), k(5), k(3), k(6)],
            ),
            (vec![k(4)], vec![sym("N"), k(4), k(6)], vec![sym("N"), k(6)]),
            (vec![sym("N"), k(4)], vec![k(4)], vec![sym("N")]),
            (
                vec![sym("N"), sym("K")],
                vec![sym("K"), k(2)],
                vec![sym("N"), k(2)],
            ),
        ];
        for (a, b, want) in cases {
            let out = op.infer(&[fact(a.clone()), fact(b.clone())]).unwrap();
            assert_eq!(out[0].shape, want, "{} x {}", shape_str(&a), shape_str(&b));
            assert_eq!(out[0].dtype, DType::F32);
        }
        let e = op
            .infer(&[fact(vec![sym("N"), k(3)]), fact(vec![k(4), k(5)])])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("MatMul: inner dimensions differ: A is [N, 3] (k=3), B is [4, 5] (k=4)"),
            "{e}"
        );
        assert!(
            op.infer(&[fact(vec![k(2), k(2), k(3)]), fact(vec![k(3), k(3), k(1)])])
                .is_err()
        );
        assert!(op.infer(&[fact(vec![]), fact(vec![k(3)])]).is_err());
        let f16 = Some(Fact::new(DType::F16, known_shape(&[2, 2])));
        assert!(op.infer(&[f16.clone(), f16]).is_err());
    }
}
