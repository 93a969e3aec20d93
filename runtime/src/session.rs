//! Running a model. A [`Session`] plans each new set of input shapes once:
//! concrete shapes for every value, folding of what is known before running
//! (shape subgraphs), and buffer slots assigned from live intervals so that
//! values whose lifetimes do not overlap share memory. A warmed-up run with
//! the same input shapes allocates nothing per op; only the outputs it
//! returns are fresh memory.

use smallvec::SmallVec;

use crate::dtype::DType;
use crate::graph::ValueId;
use crate::model::Model;
use crate::ops::{self, Ctx, Fact};
use crate::tensor::{
    AlignedBuf, Dim, Tensor, TensorMut, TensorRef, dims_str, known_shape, numel, shape_str,
};
use crate::{Error, Result};

/// Settings for a session.
#[derive(Debug, Clone)]
pub struct Options {
    /// Threads for the heavy kernels (matmul, conv). 1 on wasm.
    pub threads: usize,
    /// Refuse to run when the planned activation memory exceeds this many bytes.
    pub memory_limit: Option<usize>,
    /// Let MatMul keep a copy of each constant weight packed for its kernel
    /// (made on first use, shared by all sessions of the model): faster
    /// for products of many rows, but the copy is private memory next to a
    /// memory-mapped file. Products of up to 48 rows read weights in place
    /// either way. Default on.
    pub pack_weights: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: 1,
            memory_limit: None,
            pack_weights: true,
        }
    }
}

/// Where a value's data lives during a run.
#[derive(Debug, Clone)]
enum Src {
    Const(ValueId),
    Folded(usize),
    Input(usize),
    Slot { slot: usize, bytes: usize },
}

#[derive(Debug)]
struct Step {
    node: usize,
    inputs: Vec<Option<(Src, usize)>>, // source and index into plan.dims
    outputs: Vec<(usize, usize, usize)>, // slot, bytes, value id
}

/// Inputs this small (in elements) may be planned by value.
const SMALL_INPUT: usize = 64;

fn is_small(t: &TensorRef<'_>) -> bool {
    t.numel() <= SMALL_INPUT
}

/// What a plan was made for: input dims, and for value-keyed sessions the
/// bytes of each small input (`None` for the others).
#[derive(Debug)]
struct PlanKey {
    dims: Vec<Vec<usize>>,
    values: Vec<Option<Vec<u8>>>,
}

impl PlanKey {
    fn matches(&self, inputs: &[TensorRef<'_>], value_keyed: bool) -> bool {
        self.dims.len() == inputs.len()
            && self.dims.iter().zip(inputs).all(|(d, t)| d[..] == *t.dims)
            && (!value_keyed
                || self.values.len() == inputs.len()
                    && self.values.iter().zip(inputs).all(|(v, t)| match v {
                        Some(b) => b[..] == *t.data,
                        None => !is_small(t),
                    }))
    }
}

/// The plan for one set of input shapes.
#[derive(Debug)]
pub struct Plan {
    steps: Vec<Step>,
    folded: Vec<Tensor>,
    /// Concrete dims and dtype of every value (indexed by value id).
    dims: Vec<Vec<usize>>,
    dtypes: Vec<DType>,
    loc: Vec<Option<Src>>,
    slot_bytes: Vec<usize>,
}

impl Plan {
    /// Bytes of activation memory the plan needs (all slots).
    pub fn activation_bytes(&self) -> usize {
        self.slot_bytes.iter().sum()
    }
    /// Bytes the same values would need if none shared memory.
    pub fn unshared_bytes(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| s.outputs.iter().map(|o| o.1))
            .sum()
    }
    pub fn slots(&self) -> usize {
        self.slot_bytes.len()
    }
}

pub struct Session {
    model: Model,
    options: Options,
    /// Plans by input dims (and, for value-keyed models, the bytes of their
    /// small inputs); few per session, searched linearly so a lookup needs
    /// no key allocation.
    plans: Vec<(PlanKey, Plan)>,
    /// Set once planning by shapes alone failed but planning with the values
    /// of small inputs worked: the graph takes shape parameters as inputs
    /// (e.g. Reshape's target shape fed by the caller).
    value_keyed: bool,
    slots: Vec<AlignedBuf>,
    ctx: Ctx,
    /// Time per graph node summed over runs, while profiling is on.
    profile: Option<Vec<(u32, std::time::Duration)>>,
}

/// One node's share of the time, from [`Session::profile`].
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub node: String,
    pub op: &'static str,
    /// Runs of this node since profiling was turned on.
    pub calls: u32,
    pub total: std::time::Duration,
}

fn round64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

impl Session {
    pub fn new(model: Model, options: Options) -> Session {
        let mut ctx = Ctx::new(options.threads);
        ctx.pack_weights = options.pack_weights;
        Session {
            model,
            options,
            plans: Vec::new(),
            value_keyed: false,
            slots: Vec::new(),
            ctx,
            profile: None,
        }
    }

    /// Turn per-node timing on (clearing what was gathered) or off. It
    /// costs two clock reads per node. Not available on wasm32 without
    /// WASI, which has no clock std can read: there it is an error.
    pub fn set_profiling(&mut self, on: bool) -> Result<()> {
        if cfg!(all(target_arch = "wasm32", target_os = "unknown")) && on {
            return Err(Error::Unsupported(
                "profiling needs a clock; wasm32-unknown-unknown has none std can read".into(),
            ));
        }
        self.profile =
            on.then(|| vec![(0, std::time::Duration::ZERO); self.model.graph().nodes.len()]);
        Ok(())
    }

    /// Time per node since profiling was turned on, slowest first; empty
    /// when it is off.
    pub fn profile(&self) -> Vec<NodeTime> {
        let g = self.model.graph();
        let mut out: Vec<NodeTime> = self
            .profile
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, (calls, _))| *calls > 0)
            .map(|(i, &(calls, total))| NodeTime {
                node: g.nodes[i].name.clone(),
                op: ops::op_name(g.nodes[i].op),
                calls,
                total,
            })
            .collect();
        out.sort_by_key(|n| std::cmp::Reverse(n.total));
        out
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Check the caller's inputs against the graph: names, dtypes, shapes.
    /// Returns the inputs in graph order.
    fn match_inputs<'a>(
        &self,
        inputs: &[(&str, TensorRef<'a>)],
    ) -> Result<SmallVec<[TensorRef<'a>; 4]>> {
        let g = self.model.graph();
        for (name, _) in inputs {
            if !g.inputs.iter().any(|&i| g.values[i].name == *name) {
                let names: Vec<&str> = g
                    .inputs
                    .iter()
                    .map(|&i| g.values[i].name.as_str())
                    .collect();
                return Err(Error::Input(format!(
                    "the model has no input '{name}' (its inputs: {})",
                    names.join(", ")
                )));
            }
        }
        let mut out: SmallVec<[TensorRef<'a>; 4]> = SmallVec::new();
        for &vid in &g.inputs {
            let v = &g.values[vid];
            let given = inputs.iter().find(|(n, _)| *n == v.name).map(|(_, t)| *t);
            let t = given.ok_or_else(|| {
                Error::Input(format!(
                    "missing input '{}' ({} {})",
                    v.name,
                    v.dtype,
                    shape_str(&v.shape)
                ))
            })?;
            if t.dtype != v.dtype {
                return Err(Error::Input(format!(
                    "input '{}' must be {}, got {}",
                    v.name, v.dtype, t.dtype
                )));
            }
            let bad_shape = || {
                Error::Input(format!(
                    "input '{}' must have shape {}, got {}",
                    v.name,
                    shape_str(&v.shape),
                    dims_str(t.dims)
                ))
            };
            if t.dims.len() != v.shape.len() {
                return Err(bad_shape());
            }
            for (d, &n) in v.shape.iter().zip(t.dims) {
                match d {
                    Dim::Known(k) if *k != n => return Err(bad_shape()),
                    Dim::Sym(s) if &**s != "?" => {
                        // the same symbol in an earlier input must have the same size
                        for (k, prev) in out.iter().enumerate() {
                            let pv = &g.values[g.inputs[k]];
                            for (pd, &pn) in pv.shape.iter().zip(prev.dims) {
                                if matches!(pd, Dim::Sym(ps) if ps == s) && pn != n {
                                    return Err(Error::Input(format!(
                                        "input '{}' has {s}={n} but input '{}' has {s}={pn}",
                                        v.name, pv.name
                                    )));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            let want = numel(t.dims)?.checked_mul(t.dtype.size());
            if want != Some(t.data.len()) {
                return Err(Error::Input(format!(
                    "input '{}' has {} bytes of data for {} {}",
                    v.name,
                    t.data.len(),
                    t.dtype,
                    dims_str(t.dims)
                )));
            }
            out.push(t);
        }
        Ok(out)
    }

    fn find_plan(&self, inputs: &[TensorRef<'_>]) -> Option<usize> {
        let vk = self.value_keyed;
        self.plans.iter().position(|(k, _)| k.matches(inputs, vk))
    }

    /// Plan (or fetch the cached plan) for these input dims.
    pub fn plan<D: AsRef<[usize]>>(&mut self, input_dims: &[D]) -> Result<&Plan> {
        let key = PlanKey {
            dims: input_dims.iter().map(|d| d.as_ref().to_vec()).collect(),
            values: Vec::new(),
        };
        if let Some(i) = self
            .plans
            .iter()
            .position(|(k, _)| k.dims == key.dims && k.values.is_empty())
        {
            return Ok(&self.plans[i].1);
        }
        let plan = build_plan(&self.model, &key.dims, None, self.options.memory_limit)?;
        self.insert_plan(key, plan)
    }

    fn insert_plan(&mut self, key: PlanKey, plan: Plan) -> Result<&Plan> {
        if let Some(limit) = self.options.memory_limit {
            let need = plan.activation_bytes();
            if need > limit {
                return Err(Error::Memory(format!(
                    "this run needs {need} bytes of activation memory, the budget is {limit} bytes"
                )));
            }
        }
        self.plans.push((key, plan));
        Ok(&self.plans[self.plans.len() - 1].1)
    }

    /// Plan for these inputs: by shapes, or (when the graph needs it) by the
    /// values of its small inputs too.
    fn plan_for(&mut self, inputs: &[TensorRef<'_>]) -> Result<usize> {
        if let Some(i) = self.find_plan(inputs) {
            return Ok(i);
        }
        let dims: Vec<Vec<usize>> = inputs.iter().map(|t| t.dims.to_vec()).collect();
        let limit = self.options.memory_limit;
        if !self.value_keyed {
            match build_plan(&self.model, &dims, None, limit) {
                Ok(plan) => {
                    self.insert_plan(
                        PlanKey {
                            dims,
                            values: Vec::new(),
                        },
                        plan,
                    )?;
                    return Ok(self.plans.len() - 1);
                }
                Err(e) if inputs.iter().any(|t| is_small(t)) => {
                    // Retry with the small inputs' values known; keep the
                    // first error if that does not help either.
                    match build_plan(&self.model, &dims, Some(inputs), limit) {
                        Ok(plan) => {
                            self.value_keyed = true;
                            self.plans.clear();
                            let values = inputs
                                .iter()
                                .map(|t| is_small(t).then(|| t.data.to_vec()))
                                .collect();
                            self.insert_plan(PlanKey { dims, values }, plan)?;
                            return Ok(self.plans.len() - 1);
                        }
                        Err(e2) => {
                            return Err(if std::env::var_os("MORSEL_DEBUG_PLAN").is_some() {
                                e2
                            } else {
                                e
                            });
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let plan = build_plan(&self.model, &dims, Some(inputs), limit)?;
        let values = inputs
            .iter()
            .map(|t| is_small(t).then(|| t.data.to_vec()))
            .collect();
        self.insert_plan(PlanKey { dims, values }, plan)?;
        Ok(self.plans.len() - 1)
    }

    /// Run the model. Inputs by name; outputs in the graph's output order,
    /// each a fresh tensor (see [`Session::run_into`] to write them into
    /// buffers the caller owns instead).
    pub fn run(&mut self, inputs: &[(&str, TensorRef<'_>)]) -> Result<Vec<Tensor>> {
        self.run_with(inputs, |outs| outs.iter().map(|t| t.to_tensor()).collect())
    }

    /// Run the model and write each output's bytes into the caller's buffer
    /// (graph output order; each exactly as long as the output, whose dims
    /// follow from the input dims: see [`Session::output_dims`]). The only
    /// copy of an output is the one into `outputs`; a warm run allocates
    /// nothing. Buffers of the wrong length are an [`Error::Input`] naming
    /// the output, and are then left untouched (no buffer is written).
    pub fn run_into(
        &mut self,
        inputs: &[(&str, TensorRef<'_>)],
        outputs: &mut [&mut [u8]],
    ) -> Result<()> {
        self.run_with(inputs, |outs| {
            if outs.len() != outputs.len() {
                return Err(Error::Input(format!(
                    "the model has {} outputs, {} buffers were given",
                    outs.len(),
                    outputs.len()
                )));
            }
            for (k, (t, buf)) in outs.iter().zip(outputs.iter()).enumerate() {
                if t.data.len() != buf.len() {
                    return Err(Error::Input(format!(
                        "output {k} ({} {}) has {} bytes, its buffer {}",
                        t.dtype,
                        dims_str(t.dims),
                        t.data.len(),
                        buf.len()
                    )));
                }
            }
            for (t, buf) in outs.iter().zip(outputs.iter_mut()) {
                buf.copy_from_slice(t.data);
            }
            Ok(())
        })?
    }

    /// Run the model and hand its outputs (graph order) to `f` as views of
    /// the session's own buffers, valid during the call: for callers that
    /// copy them somewhere themselves (the C API writes them straight into
    /// the caller's memory).
    pub fn run_with<R>(
        &mut self,
        inputs: &[(&str, TensorRef<'_>)],
        f: impl FnOnce(&[TensorRef<'_>]) -> R,
    ) -> Result<R> {
        let inputs = self.match_inputs(inputs)?;
        // Caller memory may be unaligned for its dtype: copy only then.
        let realigned: SmallVec<[Option<AlignedBuf>; 4]> = inputs
            .iter()
            .map(|t| {
                (!(t.data.as_ptr() as usize).is_multiple_of(t.dtype.size()))
                    .then(|| AlignedBuf::from_bytes(t.data))
            })
            .collect();
        let inputs: SmallVec<[TensorRef<'_>; 4]> = inputs
            .iter()
            .zip(&realigned)
            .map(|(t, r)| match r {
                Some(b) => TensorRef {
                    dtype: t.dtype,
                    dims: t.dims,
                    data: b.as_bytes(),
                },
                None => *t,
            })
            .collect();
        let pi = self.plan_for(&inputs)?;
        let Session {
            model,
            plans,
            slots,
            ctx,
            profile,
            ..
        } = self;
        let plan = &plans[pi].1;
        if slots.len() < plan.slot_bytes.len() {
            slots.resize_with(plan.slot_bytes.len(), AlignedBuf::default);
        }
        let graph = model.graph();
        let mut run_steps = || -> Result<()> {
            for step in &plan.steps {
                let node = &graph.nodes[step.node];
                let started = profile.as_ref().map(|_| std::time::Instant::now());
                let mut outs: SmallVec<[AlignedBuf; 4]> = step
                    .outputs
                    .iter()
                    .map(|&(slot, bytes, _)| {
                        let mut b = std::mem::take(&mut slots[slot]);
                        b.resize(bytes);
                        b
                    })
                    .collect();
                let result = {
                    let mut ins: SmallVec<[Option<TensorRef<'_>>; 8]> = SmallVec::new();
                    for i in &step.inputs {
                        ins.push(match i {
                            None => None,
                            Some((src, v)) => Some(view(
                                graph,
                                plan,
                                &inputs,
                                src,
                                &plan.dims[*v],
                                plan.dtypes[*v],
                                slots,
                            )?),
                        });
                    }
                    let mut out_views: SmallVec<[TensorMut<'_>; 4]> = outs
                        .iter_mut()
                        .zip(&step.outputs)
                        .map(|(b, &(_, _, v))| TensorMut {
                            dtype: plan.dtypes[v],
                            dims: &plan.dims[v],
                            data: b.as_bytes_mut(),
                        })
                        .collect();
                    model.op(step.node).eval(ctx, &ins, &mut out_views)
                };
                for (b, &(slot, _, _)) in outs.into_iter().zip(&step.outputs) {
                    slots[slot] = b;
                }
                if let (Some(p), Some(t)) = (profile.as_mut(), started)
                    && let Some(e) = p.get_mut(step.node)
                {
                    e.0 += 1;
                    e.1 += t.elapsed();
                }
                result.map_err(|e| e.in_node(&node.name, ops::op_name(node.op)))?;
            }
            Ok(())
        };
        run_steps()?;
        let mut results: SmallVec<[TensorRef<'_>; 4]> = SmallVec::new();
        for &o in &graph.outputs {
            let src = plan.loc[o].as_ref().ok_or_else(|| {
                Error::Graph(format!(
                    "output '{}' was never computed",
                    graph.values[o].name
                ))
            })?;
            results.push(view(
                graph,
                plan,
                &inputs,
                src,
                &plan.dims[o],
                plan.dtypes[o],
                slots,
            )?);
        }
        Ok(f(&results))
    }

    /// Dims of each output (graph order) for these input dims (graph input
    /// order), from the plan: what [`Session::run_into`]'s buffers must hold.
    pub fn output_dims<D: AsRef<[usize]>>(&mut self, input_dims: &[D]) -> Result<Vec<Vec<usize>>> {
        let model = self.model.clone();
        let plan = self.plan(input_dims)?;
        Ok(model
            .graph()
            .outputs
            .iter()
            .map(|&o| plan.dims[o].clone())
            .collect())
    }

    /// Bytes held by this session's activation slots and its own scratch
    /// (not the kernels' per-thread scratch: see [`Session::memory`]).
    pub fn held_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.capacity_bytes()).sum::<usize>()
            + self.ctx.scratch_capacity_bytes()
    }

    /// What memory a run uses besides its inputs, outputs and the model
    /// file, split by owner, as held now (after a run: what it needed).
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            activations: self.slots.iter().map(|s| s.capacity_bytes()).sum(),
            session_scratch: self.ctx.scratch_capacity_bytes(),
            kernel_scratch: crate::kernels::scratch_held_bytes(),
            prepared_weights: self.model.prepared_bytes(),
        }
    }
}

/// Memory held for running, by owner ([`Session::memory`]). Only
/// `activations` is planned ([`Plan::activation_bytes`]) and covered by
/// [`Options::memory_limit`]; the rest is reported so that a measurement
/// (resident memory) can be compared with the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// The session's activation buffers: the plan's slots, once a run has
    /// used them.
    pub activations: usize,
    /// The session's own scratch (per-row statistics, col2im buffers).
    pub session_scratch: usize,
    /// The kernels' per-thread scratch, process-wide
    /// ([`crate::kernels::scratch_held_bytes`]): f32 matmul/conv packing
    /// (one 256 KiB block of B per thread that packs), depthwise-conv
    /// padded planes, QMatMul's quantized rows. Shared by every session
    /// running on those threads.
    pub kernel_scratch: usize,
    /// Constant weights the model's ops packed for their kernels
    /// ([`Model::prepared_bytes`]): shared by every session of the model.
    pub prepared_weights: usize,
}

impl MemoryUse {
    pub fn total(&self) -> usize {
        self.activations + self.session_scratch + self.kernel_scratch + self.prepared_weights
    }
}
fn view<'a>(
    graph: &'a crate::graph::Graph,
    plan: &'a Plan,
    inputs: &[TensorRef<'a>],
    src: &Src,
    dims: &'a [usize],
    dtype: DType,
    slots: &'a [AlignedBuf],
) -> Result<TensorRef<'a>> {
    Ok(match src {
        Src::Const(v) => graph.values[*v]
            .konst
            .as_ref()
            .ok_or_else(|| Error::Graph("constant without data".into()))?
            .view(),
        Src::Folded(i) => plan.folded[*i].view(),
        Src::Input(i) => inputs[*i],
        Src::Slot { slot, bytes } => TensorRef {
            dtype,
            dims,
            data: &slots[*slot].as_bytes()[..*bytes],
        },
    })
}

/// Concrete shapes, folding and slot assignment for one set of input dims.
/// `known`: the caller's inputs, whose small ones are then treated as
/// constants (folded into the plan).
fn build_plan(
    model: &Model,
    input_dims: &[Vec<usize>],
    known: Option<&[TensorRef<'_>]>,
    memory_limit: Option<usize>,
) -> Result<Plan> {
    let g = model.graph();
    let nv = g.values.len();
    let mut dims: Vec<Vec<usize>> = vec![Vec::new(); nv];
    let mut dtypes: Vec<DType> = g.values.iter().map(|v| v.dtype).collect();
    let mut loc: Vec<Option<Src>> = vec![None; nv];
    let mut folded: Vec<Tensor> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();

    for (k, (&vid, d)) in g.inputs.iter().zip(input_dims).enumerate() {
        dims[vid] = d.clone();
        loc[vid] = Some(Src::Input(k));
        if let Some(t) = known.and_then(|ins| ins.get(k)).filter(|t| is_small(t)) {
            loc[vid] = Some(Src::Folded(folded.len()));
            folded.push(t.to_tensor());
        }
    }
    for (vid, v) in g.values.iter().enumerate() {
        if let Some(t) = &v.konst {
            dims[vid] = t.dims.clone();
            loc[vid] = Some(Src::Const(vid));
        }
    }
    let value_of = |src: &Option<Src>, folded: &[Tensor]| -> Option<Tensor> {
        match src {
            Some(Src::Const(v)) => g.values[*v].konst.clone(),
            Some(Src::Folded(i)) => Some(folded[*i].clone()),
            _ => None,
        }
    };

    for (ni, node) in g.nodes.iter().enumerate() {
        let op = model.op(ni);
        let name = ops::op_name(node.op);
        let mut facts: Vec<Option<Fact>> = Vec::with_capacity(node.inputs.len());
        for i in &node.inputs {
            facts.push(match i {
                None => None,
                Some(v) => {
                    if loc[*v].is_none() {
                        return Err(Error::Graph(format!(
                            "node '{}' ({name}): input '{}' is not computed",
                            node.name, g.values[*v].name
                        )));
                    }
                    Some(match value_of(&loc[*v], &folded) {
                        Some(t) => Fact::known(t),
                        None => Fact::new(dtypes[*v], known_shape(&dims[*v])),
                    })
                }
            });
        }
        let out = op.infer(&facts).map_err(|e| e.in_node(&node.name, name))?;
        if out.len() < node.outputs.len() {
            return Err(Error::Graph(format!(
                "node '{}' ({name}) has {} outputs, its op makes {}",
                node.name,
                node.outputs.len(),
                out.len()
            )));
        }
        let all_inputs_known = facts.iter().flatten().all(|f| f.value.is_some());
        let all_outputs_known = out.iter().all(|f| f.value.is_some());
        let mut out_dims = Vec::with_capacity(out.len());
        for f in &out {
            out_dims.push(f.dims().ok_or_else(|| {
                Error::Graph(format!(
                    "node '{}' ({name}): output shape {} is not known before running",
                    node.name,
                    shape_str(&f.shape)
                ))
            })?);
        }
        if all_outputs_known || all_inputs_known {
            if let Some(limit) = memory_limit {
                let mut need = 0usize;
                for (f, d) in out.iter().zip(&out_dims) {
                    need = need.saturating_add(
                        numel(d)
                            .unwrap_or(usize::MAX)
                            .saturating_mul(f.dtype.size()),
                    );
                }
                if need > limit {
                    return Err(Error::Memory(format!(
                        "node '{}' ({name}) would fold to {need} bytes, the budget is {limit} bytes",
                        node.name
                    )));
                }
            }
            let values: Vec<Tensor> = if all_outputs_known {
                out.into_iter().filter_map(|f| f.value).collect()
            } else {
                let ins: Vec<Option<Tensor>> =
                    facts.into_iter().map(|f| f.and_then(|f| f.value)).collect();
                ops::eval_owned(op, &ins).map_err(|e| e.in_node(&node.name, name))?
            };
            for (&o, t) in node.outputs.iter().zip(values) {
                dims[o] = t.dims.clone();
                dtypes[o] = t.dtype;
                loc[o] = Some(Src::Folded(folded.len()));
                folded.push(t);
            }
            continue;
        }
        for ((&o, f), d) in node.outputs.iter().zip(&out).zip(out_dims) {
            dims[o] = d;
            dtypes[o] = f.dtype;
            // computed by a step; its slot is assigned below
            loc[o] = Some(Src::Slot {
                slot: usize::MAX,
                bytes: 0,
            });
        }
        steps.push(Step {
            node: ni,
            inputs: Vec::new(),
            outputs: Vec::new(),
        });
    }

    // Live intervals: the last step that reads each value computed by a step.
    let mut producer_step = vec![usize::MAX; nv];
    for (si, s) in steps.iter().enumerate() {
        for &o in &g.nodes[s.node].outputs {
            producer_step[o] = si;
        }
    }
    let mut last_use = producer_step.clone();
    for (si, s) in steps.iter().enumerate() {
        for v in g.nodes[s.node].inputs.iter().flatten() {
            if producer_step[*v] != usize::MAX {
                last_use[*v] = si;
            }
        }
    }
    for &o in &g.outputs {
        if producer_step[o] != usize::MAX {
            last_use[o] = usize::MAX - 1; // lives to the end
        }
    }

    // Greedy slot assignment: best-fit among free slots, growing if needed.
    let mut slot_bytes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for si in 0..steps.len() {
        let node = &g.nodes[steps[si].node];
        let mut outputs = Vec::with_capacity(node.outputs.len());
        for &o in &node.outputs {
            let bytes = numel(&dims[o])?
                .checked_mul(dtypes[o].size())
                .ok_or_else(|| {
                    Error::Graph(format!("value '{}' is too large", g.values[o].name))
                })?;
            let need = round64(bytes);
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, s)| slot_bytes[**s] >= need)
                .min_by_key(|(_, s)| slot_bytes[**s])
                .map(|(i, _)| i)
                .or_else(|| {
                    free.iter()
                        .enumerate()
                        .max_by_key(|(_, s)| slot_bytes[**s])
                        .map(|(i, _)| i)
                });
            let slot = match pick {
                Some(i) => free.swap_remove(i),
                None => {
                    slot_bytes.push(0);
                    slot_bytes.len() - 1
                }
            };
            slot_bytes[slot] = slot_bytes[slot].max(need);
            loc[o] = Some(Src::Slot { slot, bytes });
            outputs.push((slot, bytes, o));
        }
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for i in &node.inputs {
            inputs.push(match i {
                None => None,
                Some(v) => Some((
                    loc[*v].clone().ok_or_else(|| {
                        Error::Graph(format!("value '{}' has no location", g.values[*v].name))
                    })?,
                    *v,
                )),
            });
        }
        // Free what dies here: inputs read for the last time, outputs never read.
        let mut dying: Vec<usize> = node
            .inputs
            .iter()
            .flatten()
            .copied()
            .chain(node.outputs.iter().copied())
            .filter(|&v| last_use[v] == si)
            .collect();
        dying.sort_unstable();
        dying.dedup();
        for v in dying {
            if let Some(Src::Slot { slot, .. }) = loc[v] {
                free.push(slot);
            }
        }
        steps[si].inputs = inputs;
        steps[si].outputs = outputs;
    }
    for &o in &g.outputs {
        if loc[o].is_none() {
            return Err(Error::Graph(format!(
                "output '{}' is never computed",
                g.values[o].name
            )));
        }
    }
    Ok(Plan {
        steps,
        folded,
        dims,
        dtypes,
        loc,
        slot_bytes,
    })
}
