//! Training on the IR: a [`Graph`] run node by node on candle tensors, so
//! candle's autograd can differentiate it (distillation, `distill.rs`).
//!
//! Every constant f32 weight of a MatMul, Gemm or Conv (and their biases),
//! and the scale and shift of a LayerNormalization, becomes a candle
//! [`Var`]; every other constant (embedding tables among them) stays
//! fixed. Integer values (the Shape → Gather → Unsqueeze → Concat →
//! Reshape subgraphs exporters write, indices, token ids, attention masks
//! until they are cast to float) are computed on concrete `i64`s and are
//! not differentiated. A weight that holds zeros when training starts (a pruned
//! one) keeps them: [`Student::apply_masks`] puts the zeros back after each
//! optimizer step. [`Student::export`] writes the trained values back into
//! the graph's constants. [`Student::fake_quantize`] makes training
//! quantization-aware: the forward pass rounds what int8 will round.
//!
//! This is an interpreter for training, not the runtime: it follows the ONNX
//! definitions of the ops it knows and refuses the others, listing every
//! unsupported node at once.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail, ensure};
use candle_core::{Device, Tensor as CTensor, Var};
use morsel_runtime::DType;
use morsel_runtime::graph::{Attrs, Graph, Node, ValueId};
use morsel_runtime::ops::op_name;
use morsel_runtime::tensor::Tensor;

use crate::quantize::{
    Rounding, as_halves, bias_as_stored, fake_quantize_stored, fake_quantize_weight,
};

mod shape;
mod window;

use shape::{
    broadcast, concat_ints, dims_of, gather, ints_binary, relabel, reshape, slice, squeeze,
    transpose_ints,
};

/// The ops the interpreter runs.
pub const SUPPORTED_OPS: &[&str] = &[
    "MatMul",
    "Gemm",
    "Conv",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Erf",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Softmax",
    "LayerNormalization",
    "ReduceSum",
    "ReduceMean",
    "ReduceL2",
    "Expand",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Gather",
    "Shape",
    "Slice",
    "Cast",
    "Identity",
];

/// A value while the graph runs: a float tensor that autograd tracks, or
/// concrete integers (shapes, indices).
#[derive(Clone, Debug)]
enum Val {
    F(CTensor),
    I(Ints),
}

#[derive(Clone, Debug)]
struct Ints {
    dims: Vec<usize>,
    v: Vec<i64>,
}

impl Ints {
    fn vec(v: Vec<i64>) -> Ints {
        Ints {
            dims: vec![v.len()],
            v,
        }
    }
}

/// A trainable weight.
#[derive(Debug)]
pub struct Param {
    /// The constant in the graph it came from.
    pub value: ValueId,
    pub name: String,
    pub var: Var,
    /// A weight (weight decay applies), not a bias.
    pub weight: bool,
    /// 1 where the weight may change, 0 where it was zero at the start
    /// (pruned); `None` for a weight without zeros and for biases.
    pub mask: Option<CTensor>,
}

/// A graph ready to train.
pub struct Student {
    graph: Graph,
    params: Vec<Param>,
    /// Constants that are not trained, by value id.
    consts: Vec<Option<Val>>,
    /// Per node: how int8 will round it, when training is
    /// quantization-aware ([`Student::fake_quantize`]).
    rounding: Vec<Option<Rounding>>,
}

fn to_candle(t: &Tensor) -> Result<CTensor> {
    Ok(CTensor::from_vec(
        t.to_f32_vec()?,
        t.dims.clone(),
        &Device::Cpu,
    )?)
}

/// A runtime tensor as candle f32 (integers converted).
pub fn tensor_to_candle(t: &Tensor) -> Result<CTensor> {
    to_candle(t)
}

/// A candle tensor back as a runtime f32 tensor.
pub fn candle_to_tensor(t: &CTensor) -> Result<Tensor> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Tensor::from_slice(t.dims(), &v)?)
}

/// Input slots of `op` that hold weights (masked when pruned) and biases.
fn trainable_slots(op: &str) -> (&'static [usize], &'static [usize]) {
    match op {
        "MatMul" | "Gemm" => (&[0, 1], &[2]),
        "Conv" => (&[1], &[2]),
        // scale and shift: trained, without weight decay or masks
        "LayerNormalization" => (&[], &[1, 2]),
        _ => (&[], &[]),
    }
}

impl Student {
    /// Prepare `graph` for training. Fails listing every node whose op the
    /// interpreter does not run.
    pub fn new(graph: Graph) -> Result<Student> {
        let unsupported: Vec<String> = graph
            .nodes
            .iter()
            .filter(|n| !SUPPORTED_OPS.contains(&op_name(n.op)))
            .map(|n| format!("node '{}' ({})", n.name, op_name(n.op)))
            .collect();
        if !unsupported.is_empty() {
            bail!(
                "cannot train this graph: {} node(s) with ops training does not support: {}",
                unsupported.len(),
                unsupported.join(", ")
            );
        }
        // Which constants are weights or biases.
        let mut role: HashMap<ValueId, bool> = HashMap::new(); // true = weight (maskable)
        for n in &graph.nodes {
            let (w, b) = trainable_slots(op_name(n.op));
            for (slots, is_weight) in [(w, true), (b, false)] {
                for &s in slots {
                    if let Some(Some(id)) = n.inputs.get(s) {
                        let v = &graph.values[*id];
                        if v.dtype == DType::F32 && v.konst.is_some() {
                            let e = role.entry(*id).or_insert(is_weight);
                            *e |= is_weight;
                        }
                    }
                }
            }
        }
        let mut consts = vec![None; graph.values.len()];
        let mut params = Vec::new();
        for (id, v) in graph.values.iter().enumerate() {
            let Some(t) = &v.konst else { continue };
            if let Some(&is_weight) = role.get(&id) {
                let ct = to_candle(t).with_context(|| format!("constant '{}'", v.name))?;
                let mask = if is_weight {
                    let m = ct.ne(0f32)?.to_dtype(candle_core::DType::F32)?;
                    let zeros = m.elem_count() - m.sum_all()?.to_scalar::<f32>()? as usize;
                    (zeros > 0).then_some(m)
                } else {
                    None
                };
                params.push(Param {
                    value: id,
                    name: v.name.clone(),
                    var: Var::from_tensor(&ct)?,
                    weight: is_weight,
                    mask,
                });
            } else if t.dtype.is_float() {
                consts[id] = Some(Val::F(to_candle(t)?));
            } else {
                let v = t
                    .to_i64_vec()
                    .map_err(|e| anyhow!("constant '{}': {e}", v.name))?;
                consts[id] = Some(Val::I(Ints {
                    dims: t.dims.clone(),
                    v,
                }));
            }
        }
        let rounding = vec![None; graph.nodes.len()];
        Ok(Student {
            graph,
            params,
            consts,
            rounding,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Number of trainable scalars (masked-out weights included).
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Put the pruned zeros back (after an optimizer step).
    pub fn apply_masks(&self) -> Result<()> {
        for p in &self.params {
            if let Some(m) = &p.mask {
                p.var.set(&p.var.as_tensor().mul(m)?)?;
            }
        }
        Ok(())
    }

    /// Train quantization-aware: from now on the forward pass rounds what
    /// int8 will round (`plan`, from [`crate::quantize::qat_plan`]), the
    /// way it will round it, and the backward pass goes straight through
    /// the rounding (its gradient taken as 1; Bengio et al. 2013, Jacob et
    /// al. 2018):
    /// - QMatMul and QConv weights: symmetric int8 per output channel, the
    ///   same scales and values the compressor writes; the weights being
    ///   trained stay f32, so the int8 of the last step is what ships.
    /// - Their inputs: asymmetric int8 per row over the row's range, as the
    ///   runtime quantizes each row of a QMatMul's input. A QConv
    ///   quantizes each im2col patch at run time; here each sample's whole
    ///   input gets one range, a coarser grid than the runtime's (so
    ///   training sees more rounding noise than inference, not less).
    /// - Weights of layers computing in f32 on int8-stored weights: the
    ///   stored rounding, input untouched.
    /// - Biases of both: as halves, as the file stores them; the weight
    ///   and bias of layers the file keeps as halves, likewise.
    /// - Embedding tables (constants): rounded per row once, here.
    pub fn fake_quantize(&mut self, plan: &[(String, Rounding)]) -> Result<()> {
        let by_name: HashMap<&str, usize> = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        for (name, how) in plan {
            let &i = by_name
                .get(name.as_str())
                .ok_or_else(|| anyhow!("quantization-aware training: no node '{name}'"))?;
            let n = &self.graph.nodes[i];
            if *how == Rounding::Table
                && let Some(t) = n.inputs.first().copied().flatten()
                && let Some(Val::F(table)) = &self.consts[t]
            {
                let rounded = round_rows_of(table)?;
                self.consts[t] = Some(Val::F(rounded));
                continue;
            }
            self.rounding[i] = Some(*how);
        }
        Ok(())
    }

    /// The graph with the trained values in its constants.
    pub fn export(&self) -> Result<Graph> {
        let mut g = self.graph.clone();
        for p in &self.params {
            let t = candle_to_tensor(p.var.as_tensor())?;
            g.values[p.value].konst = Some(t);
        }
        Ok(g)
    }

    /// Run the graph on `inputs` (in the graph's input order; f32 inputs as
    /// f32 tensors, integer inputs as tensors holding whole numbers).
    pub fn forward(&self, inputs: &[CTensor]) -> Result<Vec<CTensor>> {
        let g = &self.graph;
        ensure!(
            inputs.len() == g.inputs.len(),
            "the graph has {} inputs, got {}",
            g.inputs.len(),
            inputs.len()
        );
        let mut env = self.consts.clone();
        for p in &self.params {
            env[p.value] = Some(Val::F(p.var.as_tensor().clone()));
        }
        for (&id, t) in g.inputs.iter().zip(inputs) {
            let v = &g.values[id];
            env[id] = Some(if v.dtype.is_float() {
                Val::F(t.clone())
            } else {
                let v: Vec<i64> = t
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(|x| x as i64)
                    .collect();
                Val::I(Ints {
                    dims: t.dims().to_vec(),
                    v,
                })
            });
        }
        for (n, how) in g.nodes.iter().zip(&self.rounding) {
            let mut ins: Vec<Option<Val>> = n
                .inputs
                .iter()
                .map(|i| i.and_then(|i| env[i].clone()))
                .collect();
            if let Some(how) = how {
                fake_quantize_inputs(n, *how, &mut ins).with_context(|| {
                    format!("node '{}' ({}): rounding as int8", n.name, op_name(n.op))
                })?;
            }
            let out = eval_node(n, &ins)
                .with_context(|| format!("node '{}' ({})", n.name, op_name(n.op)))?;
            for (&o, v) in n.outputs.iter().zip(out) {
                env[o] = Some(v);
            }
        }
        g.outputs
            .iter()
            .map(|&o| match env[o].take() {
                Some(Val::F(t)) => Ok(t),
                Some(Val::I(i)) => ints_to_f(&i),
                None => bail!("graph output '{}' was not computed", g.values[o].name),
            })
            .collect()
    }
}

// ---------------------------------------------------------------- helpers

fn ints_to_f(i: &Ints) -> Result<CTensor> {
    let v: Vec<f32> = i.v.iter().map(|&x| x as f32).collect();
    Ok(CTensor::from_vec(v, i.dims.clone(), &Device::Cpu)?)
}

fn input(ins: &[Option<Val>], k: usize) -> Result<&Val> {
    ins.get(k)
        .and_then(|v| v.as_ref())
        .ok_or_else(|| anyhow!("input {k} is missing"))
}

fn fin(ins: &[Option<Val>], k: usize) -> Result<CTensor> {
    match input(ins, k)? {
        Val::F(t) => Ok(t.clone()),
        Val::I(i) => ints_to_f(i),
    }
}

fn iin(ins: &[Option<Val>], k: usize, what: &str) -> Result<Ints> {
    match input(ins, k)? {
        Val::I(i) => Ok(i.clone()),
        Val::F(_) => bail!("{what} (input {k}) must be integers, is a float tensor"),
    }
}

fn norm_axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        (-r..r).contains(&a),
        "axis {a} is out of range for rank {rank}"
    );
    Ok(if a < 0 { a + r } else { a } as usize)
}

// ---------------------------------------------------------------- int8 rounding

/// `x` forward, `rounded` (its values as int8 gives them back) backward: the
/// straight-through estimator.
fn straight_through(x: &CTensor, rounded: Vec<f32>) -> Result<CTensor> {
    let q = CTensor::from_vec(rounded, x.dims(), x.device())?;
    Ok((x + (q - x.detach())?)?)
}

fn values(x: &CTensor) -> Result<Vec<f32>> {
    Ok(x.detach().flatten_all()?.to_vec1::<f32>()?)
}

/// A table rounded per row (its first axis), as QGather stores it.
fn round_rows_of(t: &CTensor) -> Result<CTensor> {
    let rows = t.dim(0)?;
    let cols = t.elem_count() / rows.max(1);
    straight_through(t, fake_quantize_weight(&values(t)?, rows, cols, false))
}

/// Each row of `len` values quantized as the runtime quantizes a row of a
/// QMatMul's input ([`morsel_runtime::ops::qmatmul::quantize_row`]).
fn round_activation(x: &CTensor, len: usize) -> Result<CTensor> {
    let v = values(x)?;
    let mut out = vec![0f32; v.len()];
    let mut q = vec![0i8; len];
    for (row, o) in v.chunks(len.max(1)).zip(out.chunks_mut(len.max(1))) {
        let q = &mut q[..row.len()];
        let (scale, z) = morsel_runtime::ops::qmatmul::quantize_row(row, q);
        for (o, &q) in o.iter_mut().zip(q.iter()) {
            *o = (q as i32 - z) as f32 * scale;
        }
    }
    straight_through(x, out)
}

/// Float input `k` (if present) replaced by `round` of its values,
/// straight through.
fn round_input(
    ins: &mut [Option<Val>],
    k: usize,
    round: impl FnOnce(Vec<f32>) -> Vec<f32>,
) -> Result<()> {
    if let Some(Some(Val::F(x))) = ins.get(k) {
        let x = x.clone();
        let rounded = round(values(&x)?);
        ins[k] = Some(Val::F(straight_through(&x, rounded)?));
    }
    Ok(())
}

/// Round the weight (and, for [`Rounding::Compute`], the input) of node `n`
/// in place, as int8 will.
fn fake_quantize_inputs(n: &Node, how: Rounding, ins: &mut [Option<Val>]) -> Result<()> {
    let op = op_name(n.op);
    if how == Rounding::Table {
        let t = fin(ins, 0)?;
        ins[0] = Some(Val::F(round_rows_of(&t)?));
        return Ok(());
    }
    if how == Rounding::Half {
        for k in [1, 2] {
            round_input(ins, k, |v| as_halves(&v).unwrap_or(v))?;
        }
        return Ok(());
    }
    let w = fin(ins, 1)?;
    let dims = w.dims().to_vec();
    let wv = values(&w)?;
    let rounded = match (how, op) {
        (Rounding::Stored, _) => fake_quantize_stored(&wv, &dims, 0)?,
        (_, "Conv") => {
            let m = dims[0];
            fake_quantize_weight(&wv, m, wv.len() / m.max(1), false)
        }
        (_, "MatMul" | "Gemm") => {
            let [r, c] = dims[..] else {
                bail!("the weight is {dims:?}, not 2-D");
            };
            let trans_b = op == "Gemm" && n.attrs.int("transB", 0)? != 0;
            let alpha = if op == "Gemm" {
                n.attrs.float("alpha", 1.0)?
            } else {
                1.0
            };
            // int8 stores alpha·W; rounded, alpha is divided back out.
            let scaled: Vec<f32> = wv.iter().map(|x| x * alpha).collect();
            let mut v = fake_quantize_weight(&scaled, r, c, !trans_b);
            if alpha != 1.0 {
                v.iter_mut().for_each(|x| *x /= alpha);
            }
            v
        }
        _ => bail!("int8 rounds only MatMul, Gemm and Conv weights"),
    };
    ins[1] = Some(Val::F(straight_through(&w, rounded)?));
    // The bias, stored as halves (a Gemm's only when beta = 1: int8 stores beta·C).
    let beta_one = op != "Gemm" || n.attrs.float("beta", 1.0)? == 1.0;
    if beta_one {
        round_input(ins, 2, |v| bias_as_stored(&v))?;
    }
    if how == Rounding::Compute {
        let x = fin(ins, 0)?;
        let len = if op == "Conv" {
            x.elem_count() / x.dim(0)?.max(1)
        } else {
            x.dim(x.rank() - 1)?
        };
        ins[0] = Some(Val::F(round_activation(&x, len)?));
    }
    Ok(())
}

// ---------------------------------------------------------------- activations

/// The fused `activation` attribute of MatMul, Gemm and Conv.
fn fused_activation(a: &Attrs, x: CTensor) -> Result<CTensor> {
    let name = a.string("activation", "")?;
    let alpha = |d: f32| a.float("activation_alpha", d);
    let beta = |d: f32| a.float("activation_beta", d);
    let (scale, shift) = (
        a.float("activation_scale", 1.0)?,
        a.float("activation_shift", 0.0)?,
    );
    let y = fused_base(&name, alpha, beta, x)?;
    Ok(if scale == 1.0 && shift == 0.0 {
        y
    } else {
        y.affine(scale as f64, shift as f64)?
    })
}

fn fused_base(
    name: &str,
    alpha: impl Fn(f32) -> morsel_runtime::Result<f32>,
    beta: impl Fn(f32) -> morsel_runtime::Result<f32>,
    x: CTensor,
) -> Result<CTensor> {
    Ok(match name {
        "" => x,
        "relu" => x.relu()?,
        "leaky_relu" => leaky_relu(&x, alpha(0.01)?)?,
        "sigmoid" => candle_nn::ops::sigmoid(&x)?,
        "tanh" => x.tanh()?,
        "hard_sigmoid" => hard_sigmoid(&x, alpha(0.2)?, beta(0.5)?)?,
        "hard_swish" => (&x * hard_sigmoid(&x, 1.0 / 6.0, 0.5)?)?,
        "gelu" => x.gelu_erf()?,
        "gelu_tanh" => x.gelu()?,
        "clip" => clip(&x, alpha(f32::NEG_INFINITY)?, beta(f32::INFINITY)?)?,
        other => bail!("fused activation '{other}' is not supported in training"),
    })
}

fn leaky_relu(x: &CTensor, a: f32) -> Result<CTensor> {
    Ok((x.relu()? - (x.neg()?.relu()? * a as f64)?)?)
}

fn hard_sigmoid(x: &CTensor, a: f32, b: f32) -> Result<CTensor> {
    Ok(x.affine(a as f64, b as f64)?.clamp(0f32, 1f32)?)
}

fn clip(x: &CTensor, lo: f32, hi: f32) -> Result<CTensor> {
    let mut y = x.clone();
    if lo.is_finite() {
        y = y.maximum(lo)?;
    }
    if hi.is_finite() {
        y = y.minimum(hi)?;
    }
    Ok(y)
}

// ---------------------------------------------------------------- the ops

fn eval_node(n: &Node, ins: &[Option<Val>]) -> Result<Vec<Val>> {
    let a = &n.attrs;
    let op = op_name(n.op);
    let one = |t: CTensor| Ok(vec![Val::F(t)]);
    match op {
        "MatMul" => {
            let (x, w) = (fin(ins, 0)?, fin(ins, 1)?);
            let mut y = matmul(&x, &w)?;
            if ins.get(2).is_some_and(|b| b.is_some()) {
                y = y.broadcast_add(&fin(ins, 2)?)?;
            }
            one(fused_activation(a, y)?)
        }
        "Gemm" => {
            let (mut x, mut w) = (fin(ins, 0)?, fin(ins, 1)?);
            if a.int("transA", 0)? != 0 {
                x = x.t()?;
            }
            if a.int("transB", 0)? != 0 {
                w = w.t()?;
            }
            let alpha = a.float("alpha", 1.0)? as f64;
            let beta = a.float("beta", 1.0)? as f64;
            let mut y = x.matmul(&w)?;
            if alpha != 1.0 {
                y = y.affine(alpha, 0.0)?;
            }
            if ins.get(2).is_some_and(|b| b.is_some()) {
                let c = fin(ins, 2)?;
                let c = if beta != 1.0 { c.affine(beta, 0.0)? } else { c };
                y = y.broadcast_add(&c)?;
            }
            one(fused_activation(a, y)?)
        }
        "Conv" => one(fused_activation(a, conv(a, ins)?)?),
        "Add" | "Sub" | "Mul" | "Div" => binary(op, ins),
        "Relu" => one(fin(ins, 0)?.relu()?),
        "LeakyRelu" => one(leaky_relu(&fin(ins, 0)?, a.float("alpha", 0.01)?)?),
        "Sigmoid" => one(candle_nn::ops::sigmoid(&fin(ins, 0)?)?),
        "Tanh" => one(fin(ins, 0)?.tanh()?),
        "Gelu" => match a.string("approximate", "none")?.as_str() {
            "tanh" => one(fin(ins, 0)?.gelu()?),
            _ => one(fin(ins, 0)?.gelu_erf()?),
        },
        "Erf" => one(fin(ins, 0)?.erf()?),
        "Exp" => one(fin(ins, 0)?.exp()?),
        "Log" => one(fin(ins, 0)?.log()?),
        "Sqrt" => one(fin(ins, 0)?.sqrt()?),
        "Neg" => one(fin(ins, 0)?.neg()?),
        "Abs" => one(fin(ins, 0)?.abs()?),
        "Reciprocal" => one(fin(ins, 0)?.recip()?),
        "HardSigmoid" => one(hard_sigmoid(
            &fin(ins, 0)?,
            a.float("alpha", 0.2)?,
            a.float("beta", 0.5)?,
        )?),
        "HardSwish" => {
            let x = fin(ins, 0)?;
            one((&x * hard_sigmoid(&x, 1.0 / 6.0, 0.5)?)?)
        }
        "Clip" => {
            let bound = |k: usize, d: f32| -> Result<f32> {
                match ins.get(k).and_then(|v| v.as_ref()) {
                    None => Ok(d),
                    Some(_) => Ok(fin(ins, k)?.flatten_all()?.to_vec1::<f32>()?[0]),
                }
            };
            one(clip(
                &fin(ins, 0)?,
                bound(1, f32::NEG_INFINITY)?,
                bound(2, f32::INFINITY)?,
            )?)
        }
        "Softmax" => {
            let x = fin(ins, 0)?;
            let legacy = a.int("legacy", 0)? != 0;
            let axis = norm_axis(a.int("axis", if legacy { 1 } else { -1 })?, x.rank())?;
            if legacy {
                let dims = x.dims().to_vec();
                let rows: usize = dims[..axis].iter().product();
                let flat = x.reshape((rows, ()))?;
                one(candle_nn::ops::softmax(&flat, 1)?.reshape(dims)?)
            } else {
                one(candle_nn::ops::softmax(&x, axis)?)
            }
        }
        "LayerNormalization" => one(layer_norm(a, ins)?),
        "ReduceSum" | "ReduceMean" | "ReduceL2" => one(reduce(op, a, ins)?),
        "Expand" => {
            let shape = iin(ins, 1, "the shape")?;
            let v = input(ins, 0)?;
            let dims = broadcast(
                &dims_of(v),
                &shape
                    .v
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .collect::<Vec<_>>(),
            )?;
            match v {
                Val::F(t) => one(t.broadcast_as(dims)?.contiguous()?),
                Val::I(i) => {
                    let target = Ints {
                        v: vec![0; dims.iter().product()],
                        dims,
                    };
                    Ok(vec![Val::I(ints_binary(i, &target, |x, _| Ok(x))?)])
                }
            }
        }
        "MaxPool" | "AveragePool" => one(window::pool(op, a, &fin(ins, 0)?)?),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = fin(ins, 0)?;
            ensure!(x.rank() >= 3, "input has shape {:?}", x.dims());
            let mut y = x;
            for ax in (2..y.rank()).rev() {
                y = if op == "GlobalAveragePool" {
                    y.mean_keepdim(ax)?
                } else {
                    y.max_keepdim(ax)?
                };
            }
            one(y)
        }
        "Reshape" => reshape(a, ins),
        "Flatten" => {
            let v = input(ins, 0)?;
            let dims = dims_of(v);
            let r = dims.len() as i64;
            let ax = a.int("axis", 1)?;
            ensure!((-r..=r).contains(&ax), "axis {ax} out of range");
            let ax = if ax < 0 { ax + r } else { ax } as usize;
            let outer: usize = dims[..ax].iter().product();
            let inner: usize = dims[ax..].iter().product();
            relabel(v, vec![outer, inner])
        }
        "Transpose" => {
            let v = input(ins, 0)?;
            let r = dims_of(v).len();
            let perm: Vec<usize> = match a.ints("perm")? {
                Some(p) => p.iter().map(|&x| norm_axis(x, r)).collect::<Result<_>>()?,
                None => (0..r).rev().collect(),
            };
            match v {
                Val::F(t) => one(t.permute(perm)?),
                Val::I(i) => Ok(vec![Val::I(transpose_ints(i, &perm)?)]),
            }
        }
        "Squeeze" | "Unsqueeze" => squeeze(op, ins),
        "Concat" => {
            let vals: Vec<&Val> = ins.iter().flatten().collect();
            ensure!(!vals.is_empty(), "no inputs");
            let r = dims_of(vals[0]).len();
            let axis = norm_axis(a.int("axis", 0)?, r)?;
            if vals.iter().all(|v| matches!(v, Val::I(_))) {
                let parts: Vec<Ints> = vals
                    .iter()
                    .map(|v| match v {
                        Val::I(i) => i.clone(),
                        Val::F(_) => unreachable!(),
                    })
                    .collect();
                Ok(vec![Val::I(concat_ints(&parts, axis)?)])
            } else {
                let ts = ins
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| fin(ins, k))
                    .collect::<Result<Vec<_>>>()?;
                one(CTensor::cat(&ts, axis)?)
            }
        }
        "Gather" => gather(a, ins),
        "Shape" => {
            let dims = dims_of(input(ins, 0)?);
            let r = dims.len() as i64;
            let clampi = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
            let s = clampi(a.int("start", 0)?);
            let e = match a.get("end") {
                None => dims.len(),
                Some(_) => clampi(a.int("end", r)?),
            };
            let v = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
            Ok(vec![Val::I(Ints::vec(v))])
        }
        "Slice" => slice(ins),
        "Cast" => {
            let to = u8::try_from(a.int("to", -1)?)
                .ok()
                .and_then(|c| DType::from_code(c).ok())
                .context("attribute 'to' is not a dtype code")?;
            let v = input(ins, 0)?;
            match (v, to.is_float()) {
                (Val::F(t), true) => one(t.clone()),
                (Val::I(i), true) => one(ints_to_f(i)?),
                (Val::I(i), false) => Ok(vec![Val::I(i.clone())]),
                (Val::F(t), false) => {
                    let v = t
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .into_iter()
                        .map(|x| x as i64)
                        .collect();
                    Ok(vec![Val::I(Ints {
                        dims: t.dims().to_vec(),
                        v,
                    })])
                }
            }
        }
        "Identity" => Ok(vec![input(ins, 0)?.clone()]),
        other => bail!("op {other} is not supported in training"),
    }
}

/// LayerNormalization: each row over the axes from `axis` on, normalised
/// to mean 0 and variance 1 (with `epsilon`), times the scale, plus the
/// shift.
fn layer_norm(a: &Attrs, ins: &[Option<Val>]) -> Result<CTensor> {
    let x = fin(ins, 0)?;
    let axis = norm_axis(a.int("axis", -1)?, x.rank())?;
    let eps = a.float("epsilon", 1e-5)? as f64;
    let dims = x.dims().to_vec();
    let rows: usize = dims[..axis].iter().product();
    let flat = x.reshape((rows, ()))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let y = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims)?;
    let mut y = y.broadcast_mul(&fin(ins, 1)?)?;
    if ins.get(2).is_some_and(|b| b.is_some()) {
        y = y.broadcast_add(&fin(ins, 2)?)?;
    }
    Ok(y)
}

/// ReduceSum / ReduceMean / ReduceL2 over the axes given as input 1
/// (opset 13 / 18 on) or as the `axes` attribute (before), all axes when
/// there are none (unless `noop_with_empty_axes`).
fn reduce(op: &str, a: &Attrs, ins: &[Option<Val>]) -> Result<CTensor> {
    let x = fin(ins, 0)?;
    let r = x.rank();
    let axes: Vec<i64> = match ins.get(1).and_then(|v| v.as_ref()) {
        Some(_) => iin(ins, 1, "axes")?.v,
        None => a.ints("axes")?.map(|v| v.to_vec()).unwrap_or_default(),
    };
    if axes.is_empty() && a.int("noop_with_empty_axes", 0)? != 0 {
        return Ok(x);
    }
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..r).collect()
    } else {
        axes.iter()
            .map(|&v| norm_axis(v, r))
            .collect::<Result<_>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let keep = a.int("keepdims", 1)? != 0;
    let mut y = if op == "ReduceL2" { x.sqr()? } else { x };
    let count: usize = axes.iter().map(|&ax| y.dims()[ax]).product();
    for &ax in axes.iter().rev() {
        y = if keep { y.sum_keepdim(ax)? } else { y.sum(ax)? };
    }
    Ok(match op {
        "ReduceMean" => y.affine(1.0 / count.max(1) as f64, 0.0)?,
        "ReduceL2" => y.sqrt()?,
        _ => y,
    })
}

/// numpy matmul: 1-D operands promoted, batch dims broadcast.
fn matmul(x: &CTensor, w: &CTensor) -> Result<CTensor> {
    match (x.rank(), w.rank()) {
        (1, _) => Ok(matmul(&x.unsqueeze(0)?, w)?.squeeze(w.rank().max(2) - 2)?),
        (_, 1) => {
            let y = matmul(x, &w.unsqueeze(1)?)?;
            Ok(y.squeeze(y.rank() - 1)?)
        }
        (2, 2) => Ok(x.matmul(w)?),
        (r, 2) => {
            // [..., M, K] × [K, N] as one [B·M, K] product.
            let dims = x.dims().to_vec();
            let k = dims[r - 1];
            let y = x.reshape(((), k))?.matmul(w)?;
            let mut out = dims[..r - 1].to_vec();
            out.push(w.dim(1)?);
            Ok(y.reshape(out)?)
        }
        // (candle's batched matmul wants row-major batches: a Transpose's
        // permuted view is copied first)
        _ => Ok(x.contiguous()?.broadcast_matmul(&w.contiguous()?)?),
    }
}

fn binary(op: &str, ins: &[Option<Val>]) -> Result<Vec<Val>> {
    if let (Val::I(x), Val::I(y)) = (input(ins, 0)?, input(ins, 1)?) {
        let r = match op {
            "Add" => ints_binary(x, y, |a, b| Ok(a.wrapping_add(b)))?,
            "Sub" => ints_binary(x, y, |a, b| Ok(a.wrapping_sub(b)))?,
            "Mul" => ints_binary(x, y, |a, b| Ok(a.wrapping_mul(b)))?,
            _ => ints_binary(x, y, |a, b| {
                ensure!(b != 0, "integer division by zero");
                Ok(a.div_euclid(b))
            })?,
        };
        return Ok(vec![Val::I(r)]);
    }
    let (x, y) = (fin(ins, 0)?, fin(ins, 1)?);
    let z = match op {
        "Add" => x.broadcast_add(&y)?,
        "Sub" => x.broadcast_sub(&y)?,
        "Mul" => x.broadcast_mul(&y)?,
        _ => x.broadcast_div(&y)?,
    };
    Ok(vec![Val::F(z)])
}

/// Conv over 1 or 2 spatial axes, pads as given (asymmetric ones padded
/// explicitly), with the bias.
fn conv(a: &Attrs, ins: &[Option<Val>]) -> Result<CTensor> {
    let (x, w) = (fin(ins, 0)?, fin(ins, 1)?);
    let r = x.rank();
    ensure!(
        r == 3 || r == 4,
        "input has shape {:?}: training supports 1-D and 2-D convolutions",
        x.dims()
    );
    let sp = r - 2;
    let kernel: Vec<usize> = w.dims()[2..].to_vec();
    let group = a.int("group", 1)? as usize;
    let get = |k: &str, d: usize| -> Result<Vec<usize>> {
        Ok(match a.ints(k)? {
            Some(v) => v.iter().map(|&x| x as usize).collect(),
            None => vec![d; sp],
        })
    };
    let strides = get("strides", 1)?;
    let dil = get("dilations", 1)?;
    ensure!(
        group >= 1 && strides.iter().chain(&dil).all(|&v| v >= 1),
        "group {group}, strides {strides:?} and dilations {dil:?} must be at least 1"
    );
    let input: Vec<usize> = x.dims()[2..].to_vec();
    let pads = window::pads(a, &input, &kernel, &strides, &dil)?;
    ensure!(
        strides.iter().all(|&s| s == strides[0]) && dil.iter().all(|&d| d == dil[0]),
        "strides {strides:?} / dilations {dil:?} differ between axes: not supported in training"
    );
    let symmetric = pads.iter().all(|&p| p == pads[0]);
    let (xp, p) = if symmetric {
        (x, pads[0])
    } else {
        let mut xp = x;
        for i in 0..sp {
            xp = xp.pad_with_zeros(2 + i, pads[i], pads[sp + i])?;
        }
        (xp, 0)
    };
    let y = if sp == 1 {
        xp.conv1d(&w, p, strides[0], dil[0], group)?
    } else {
        xp.conv2d(&w, p, strides[0], dil[0], group)?
    };
    if ins.get(2).is_some_and(|b| b.is_some()) {
        let b = fin(ins, 2)?;
        let mut bd = vec![1, b.elem_count()];
        bd.extend(std::iter::repeat_n(1, sp));
        return Ok(y.broadcast_add(&b.reshape(bd)?)?);
    }
    Ok(y)
}
