//! Ops: one file per family, each with shape inference and evaluation side
//! by side. [`REGISTRY`] maps the stable numeric id stored in `.morsel` files
//! to the op's name and its builder. Adding an op touches its op file, one
//! registry line, the importer mapping, and a test.

use std::fmt::Debug;

use crate::dtype::DType;
use crate::graph::{Attrs, Node};
use crate::tensor::{AlignedBuf, Blob, Shape, Tensor, TensorMut, TensorRef, concrete, numel};
use crate::{Error, Result};

pub mod broadcast;
pub mod conv;
pub mod conv_transpose;
pub mod elementwise;
pub mod gemm;
pub mod layer_norm;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod qconv;
pub mod qgather;
pub mod qlinear;
pub mod qmatmul;
pub mod quant_linear;
pub mod reduce;
pub mod resize;
pub mod shape;
pub mod shape_index;
pub mod shape_layout;
pub mod shape_values;

/// The stable numeric id of an op in the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u16);

/// What is known about a value before running: dtype, shape (maybe
/// symbolic), and its contents when they are known (constants, shapes).
#[derive(Debug, Clone)]
pub struct Fact {
    pub dtype: DType,
    pub shape: Shape,
    pub value: Option<Tensor>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Shape) -> Fact {
        Fact {
            dtype,
            shape,
            value: None,
        }
    }
    pub fn known(t: Tensor) -> Fact {
        Fact {
            dtype: t.dtype,
            shape: crate::tensor::known_shape(&t.dims),
            value: Some(t),
        }
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// The dims, if all are known.
    pub fn dims(&self) -> Option<Vec<usize>> {
        concrete(&self.shape)
    }
}

/// Per-run state kernels may use: thread count and a reusable scratch buffer.
#[derive(Default)]
pub struct Ctx {
    pub threads: usize,
    /// May ops keep packed copies of constant weights (see
    /// [`crate::session::Options::pack_weights`])?
    pub pack_weights: bool,
    scratch: Vec<f32>,
}

impl Ctx {
    pub fn new(threads: usize) -> Ctx {
        Ctx {
            threads: threads.max(1),
            pack_weights: true,
            scratch: Vec::new(),
        }
    }
    /// A scratch slice of `n` f32s; grows once, then reused (contents unspecified).
    pub fn scratch(&mut self, n: usize) -> &mut [f32] {
        if self.scratch.len() < n {
            self.scratch.resize(n, 0.0);
        }
        &mut self.scratch[..n]
    }
    pub fn scratch_capacity_bytes(&self) -> usize {
        self.scratch.capacity() * 4
    }
}

/// Outputs below this many elements are computed on one thread by the
/// memory-bound ops (elementwise, Resize, Concat): a fork and join costs
/// about as much as a few thousand elements.
pub const PAR_MIN_ELEMS: usize = 1 << 15;

/// `f(start, piece)` over at most `threads` contiguous pieces of `out`,
/// each (but the last) a multiple of `unit` elements long, `start` being the
/// piece's offset; in parallel when built with threads and `out` has at
/// least [`PAR_MIN_ELEMS`] elements, else once over the whole.
pub fn par_pieces<T: Send>(
    threads: usize,
    out: &mut [T],
    unit: usize,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    if threads > 1 && out.len() >= PAR_MIN_ELEMS {
        let unit = unit.max(1);
        let len = out.len().div_ceil(threads).div_ceil(unit) * unit;
        return crate::par::try_chunks_mut(threads, out, len, |i, piece| f(i * len, piece));
    }
    f(0, out)
}

/// A built op: attributes validated, ready to infer and run.
pub trait Op: Send + Sync + Debug {
    /// Output facts from input facts (`None` = omitted optional input).
    /// May set `value` when the output is known without running (e.g. `Shape`).
    fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<Fact>>;
    /// Compute outputs (shapes already set by `infer`) from inputs.
    fn eval(
        &self,
        ctx: &mut Ctx,
        inputs: &[Option<TensorRef<'_>>],
        outputs: &mut [TensorMut<'_>],
    ) -> Result<()>;
    /// Told once, when a model is built, which inputs are graph constants:
    /// an op may then prepare them on first use (e.g. pack weights for its
    /// kernel) instead of on every run.
    fn constant_inputs(&mut self, _is_const: &[bool]) {}
    /// Bytes held for prepared constants (e.g. packed weights).
    fn prepared_bytes(&self) -> usize {
        0
    }
}

pub type Builder = fn(&Attrs) -> Result<Box<dyn Op>>;

pub struct OpDef {
    pub id: OpId,
    pub name: &'static str,
    pub build: Builder,
}

macro_rules! registry {
    ($($id:literal $name:literal => $build:path,)*) => {
        /// Every op this runtime knows. Ids are part of the file format: never reuse one.
        pub static REGISTRY: &[OpDef] = &[
            $(OpDef { id: OpId($id), name: $name, build: $build },)*
        ];
    };
}

registry! {
    1 "MatMul" => matmul::build_matmul,
    2 "Gemm" => matmul::build_gemm,
    10 "Add" => elementwise::build_add,
    11 "Sub" => elementwise::build_sub,
    12 "Mul" => elementwise::build_mul,
    13 "Div" => elementwise::build_div,
    14 "Pow" => elementwise::build_pow,
    15 "Max" => elementwise::build_max,
    16 "Min" => elementwise::build_min,
    17 "Equal" => elementwise::build_equal,
    18 "Less" => elementwise::build_less,
    19 "Greater" => elementwise::build_greater,
    20 "Where" => elementwise::build_where,
    30 "Relu" => elementwise::build_relu,
    31 "LeakyRelu" => elementwise::build_leaky_relu,
    32 "Sigmoid" => elementwise::build_sigmoid,
    33 "Tanh" => elementwise::build_tanh,
    34 "HardSigmoid" => elementwise::build_hard_sigmoid,
    35 "HardSwish" => elementwise::build_hard_swish,
    36 "Clip" => elementwise::build_clip,
    37 "Neg" => elementwise::build_neg,
    38 "Exp" => elementwise::build_exp,
    39 "Log" => elementwise::build_log,
    40 "Sqrt" => elementwise::build_sqrt,
    41 "Erf" => elementwise::build_erf,
    42 "Abs" => elementwise::build_abs,
    43 "Reciprocal" => elementwise::build_reciprocal,
    44 "Gelu" => elementwise::build_gelu,
    50 "Softmax" => norm::build_softmax,
    51 "BatchNormalization" => norm::build_batch_norm,
    60 "Conv" => conv::build_conv,
    61 "ConvTranspose" => conv::build_conv_transpose,
    70 "MaxPool" => pool::build_max_pool,
    71 "AveragePool" => pool::build_average_pool,
    72 "GlobalAveragePool" => pool::build_global_average_pool,
    73 "GlobalMaxPool" => pool::build_global_max_pool,
    80 "Reshape" => shape::build_reshape,
    81 "Flatten" => shape::build_flatten,
    82 "Transpose" => shape::build_transpose,
    83 "Concat" => shape::build_concat,
    84 "Split" => shape::build_split,
    85 "Slice" => shape::build_slice,
    86 "Squeeze" => shape::build_squeeze,
    87 "Unsqueeze" => shape::build_unsqueeze,
    88 "Gather" => shape::build_gather,
    89 "Shape" => shape::build_shape,
    90 "ConstantOfShape" => shape::build_constant_of_shape,
    91 "Cast" => shape::build_cast,
    92 "Identity" => shape::build_identity,
    93 "Pad" => shape::build_pad,
    94 "Expand" => shape::build_expand,
    95 "Range" => shape::build_range,
    96 "Tile" => shape::build_tile,
    100 "Resize" => resize::build_resize,
    110 "ReduceSum" => reduce::build_reduce_sum,
    111 "ReduceMean" => reduce::build_reduce_mean,
    112 "ReduceMax" => reduce::build_reduce_max,
    113 "ReduceMin" => reduce::build_reduce_min,
    114 "ReduceProd" => reduce::build_reduce_prod,
    115 "ReduceL1" => reduce::build_reduce_l1,
    116 "ReduceL2" => reduce::build_reduce_l2,
    117 "ReduceSumSquare" => reduce::build_reduce_sum_square,
    118 "ReduceLogSum" => reduce::build_reduce_log_sum,
    119 "ReduceLogSumExp" => reduce::build_reduce_log_sum_exp,
    120 "ArgMax" => reduce::build_arg_max,
    121 "ArgMin" => reduce::build_arg_min,
    122 "LayerNormalization" => layer_norm::build_layer_norm,
    130 "QMatMul" => qmatmul::build_qmatmul,
    131 "QGather" => qgather::build_qgather,
    132 "QConv" => qconv::build_qconv,
    140 "QuantizeLinear" => quant_linear::build_quantize_linear,
    141 "DequantizeLinear" => quant_linear::build_dequantize_linear,
    142 "DynamicQuantizeLinear" => quant_linear::build_dynamic_quantize_linear,
    143 "MatMulInteger" => quant_linear::build_matmul_integer,
    144 "ConvInteger" => quant_linear::build_conv_integer,
    145 "QLinearConv" => qlinear::build_qlinear_conv,
    146 "QLinearMatMul" => qlinear::build_qlinear_matmul,
}

pub fn lookup(id: OpId) -> Option<&'static OpDef> {
    REGISTRY.iter().find(|d| d.id == id)
}

pub fn op_id(name: &str) -> Option<OpId> {
    REGISTRY.iter().find(|d| d.name == name).map(|d| d.id)
}

pub fn op_name(id: OpId) -> &'static str {
    lookup(id).map(|d| d.name).unwrap_or("?")
}

/// Build the op of a node, naming the node in any error.
pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let def = lookup(node.op).ok_or_else(|| {
        Error::Unsupported(format!("node '{}': unknown op id {}", node.name, node.op.0))
    })?;
    (def.build)(&node.attrs).map_err(|e| e.in_node(&node.name, def.name))
}

/// Run an op on owned tensors, allocating its outputs (constant folding).
pub fn eval_owned(op: &dyn Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let facts: Vec<Option<Fact>> = inputs.iter().map(|t| t.clone().map(Fact::known)).collect();
    let out_facts = op.infer(&facts)?;
    let mut dims = Vec::with_capacity(out_facts.len());
    for f in &out_facts {
        dims.push(
            f.dims()
                .ok_or_else(|| Error::Graph("output shape is not concrete".into()))?,
        );
    }
    let mut bufs: Vec<AlignedBuf> = Vec::with_capacity(out_facts.len());
    for (f, d) in out_facts.iter().zip(&dims) {
        bufs.push(AlignedBuf::zeroed(numel(d)?.saturating_mul(f.dtype.size())));
    }
    {
        let views: Vec<Option<TensorRef<'_>>> = inputs
            .iter()
            .map(|t| t.as_ref().map(|t| t.view()))
            .collect();
        let mut outs: Vec<TensorMut<'_>> = bufs
            .iter_mut()
            .zip(&out_facts)
            .zip(&dims)
            .map(|((b, f), d)| TensorMut {
                dtype: f.dtype,
                dims: d,
                data: b.as_bytes_mut(),
            })
            .collect();
        op.eval(&mut Ctx::new(1), &views, &mut outs)?;
    }
    bufs.into_iter()
        .zip(out_facts)
        .zip(dims)
        .map(|((b, f), d)| Tensor::new(f.dtype, d, Blob::owned(b)))
        .collect()
}

// ---- helpers shared by op files ----

/// Input `i`, which must be present.
/// A weight packed for its kernel: when the weight is a graph constant
/// (and the session allows it), packed once on first use and shared by
/// every later run; otherwise packed afresh for each run.
#[derive(Debug)]
pub(crate) struct PackOnce<T> {
    constant: bool,
    packed: std::sync::OnceLock<T>,
}

impl<T> PackOnce<T> {
    pub(crate) fn new() -> PackOnce<T> {
        PackOnce {
            constant: false,
            packed: std::sync::OnceLock::new(),
        }
    }
    /// From [`Op::constant_inputs`]: whether input `i` (the weight) is a constant.
    pub(crate) fn note_constant(&mut self, is_const: &[bool], i: usize) {
        self.constant = is_const.get(i).copied().unwrap_or(false);
    }
    /// The copy kept for later runs, if made.
    pub(crate) fn kept(&self) -> Option<&T> {
        self.packed.get()
    }
    /// The packed weight: the kept copy (made now if this is the first run
    /// and `keep` allows it), or a fresh one stored in `fresh`.
    pub(crate) fn get<'a>(
        &'a self,
        keep: bool,
        fresh: &'a mut Option<T>,
        pack: impl FnOnce() -> Result<T>,
    ) -> Result<&'a T> {
        if !(self.constant && keep) {
            return Ok(fresh.insert(pack()?));
        }
        if let Some(p) = self.packed.get() {
            return Ok(p);
        }
        // Another thread may race us here; either copy is the same.
        let _ = self.packed.set(pack()?);
        self.packed
            .get()
            .ok_or_else(|| Error::Graph("the packed weight vanished".into()))
    }
}

pub fn req<T>(inputs: &[Option<T>], i: usize) -> Result<&T> {
    inputs
        .get(i)
        .and_then(|x| x.as_ref())
        .ok_or_else(|| Error::Graph(format!("missing required input {i}")))
}

/// Input `i` if present.
pub fn opt<T>(inputs: &[Option<T>], i: usize) -> Option<&T> {
    inputs.get(i).and_then(|x| x.as_ref())
}

/// Normalise a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(Error::Graph(format!(
            "axis {a} is out of range for rank {rank}"
        )));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// The known integer contents of a fact (shape-like inputs).
pub fn known_ints(f: &Fact, what: &str) -> Result<Option<Vec<i64>>> {
    match &f.value {
        Some(t) => Ok(Some(
            t.to_i64_vec()
                .map_err(|e| Error::Graph(format!("{what}: {e}")))?,
        )),
        None => Ok(None),
    }
}

/// Check an input's dtype.
pub fn expect_dtype(f: &Fact, want: DType, what: &str) -> Result<()> {
    if f.dtype != want {
        return Err(Error::Graph(format!(
            "{what} must be {want}, is {}",
            f.dtype
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_ids_and_names_are_unique() {
        let mut ids: Vec<u16> = REGISTRY.iter().map(|d| d.id.0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), REGISTRY.len());
        let mut names: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
    }
}
