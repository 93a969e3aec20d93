//! NodeProto → IR nodes. Each ONNX op maps to one runtime op; attributes
//! that later opsets turned into inputs become constant inputs here, so the
//! runtime implements only the latest form of each op.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use morsel_runtime::DType;
use morsel_runtime::graph::{Attr, Attrs, Graph, Node, ValueId};
use morsel_runtime::ops::op_id;
use morsel_runtime::tensor::{Dim, Tensor};

use super::proto::{self, AttributeProto, ModelProto, NodeProto, attr_type as at};
use super::tensor::{dtype_from_onnx, onnx_type_name, tensor_from_proto};

/// The opset range the importer knows. Each op is imported with the
/// semantics of its version in the model's opset.
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 28;

struct Importer<'a> {
    g: Graph,
    names: HashMap<String, ValueId>,
    opset: i64,
    base_dir: Option<&'a Path>,
    unsupported: Vec<String>,
}

pub fn import(model: &ModelProto, base_dir: Option<&Path>) -> Result<Graph> {
    let graph = model
        .graph
        .as_ref()
        .context("the ONNX model has no graph")?;
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain.as_str() {
            "" | "ai.onnx" => opset = Some(o.version),
            _ => {}
        }
    }
    let opset = opset.unwrap_or(MAX_OPSET);
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        bail!(
            "ONNX opset {opset} is not supported (this importer reads opsets {MIN_OPSET} to {MAX_OPSET})"
        );
    }
    let mut im = Importer {
        g: Graph::default(),
        names: HashMap::new(),
        opset,
        base_dir,
        unsupported: Vec::new(),
    };

    for init in &graph.initializer {
        let t = tensor_from_proto(init, base_dir)
            .with_context(|| format!("initializer '{}'", init.name))?;
        let id = im.g.add_const(&init.name, t);
        im.names.insert(init.name.clone(), id);
    }
    if !graph.sparse_initializer.is_empty() {
        bail!("sparse initializers are not supported");
    }
    for vi in &graph.input {
        if im.names.contains_key(&vi.name) {
            continue; // an initializer listed as an input (old exporters): a constant
        }
        let (dtype, shape) =
            value_type(vi).with_context(|| format!("graph input '{}'", vi.name))?;
        let id = im.g.add_value(&vi.name, dtype, shape);
        im.g.inputs.push(id);
        im.names.insert(vi.name.clone(), id);
    }
    for node in &graph.node {
        im.node(node)
            .with_context(|| format!("node '{}' ({})", node_name(node), node.op_type))?;
    }
    if !im.unsupported.is_empty() {
        bail!(
            "the model uses {} node(s) Morsel does not support:\n  {}",
            im.unsupported.len(),
            im.unsupported.join("\n  ")
        );
    }
    for vo in &graph.output {
        let id = *im
            .names
            .get(&vo.name)
            .with_context(|| format!("graph output '{}' is never computed", vo.name))?;
        let id = if im.g.values[id].name != vo.name || im.g.inputs.contains(&id) {
            // the output is an alias (Identity/Dropout removed) or an input: keep its name
            let out = im.g.add_value(
                &vo.name,
                im.g.values[id].dtype,
                im.g.values[id].shape.clone(),
            );
            im.push(
                "Identity",
                &format!("{}_identity", vo.name),
                Attrs::new(),
                vec![Some(id)],
                vec![out],
            )?;
            out
        } else {
            id
        };
        im.g.outputs.push(id);
    }
    im.g.metadata.insert(
        "source_producer".into(),
        format!("{} {}", model.producer_name, model.producer_version),
    );
    im.g.metadata
        .insert("source_opset".into(), opset.to_string());
    let mut g = im.g;
    crate::passes::cleanup(&mut g)?;
    g.infer_shapes().map_err(|e| anyhow!("{e}"))?;
    // Where inference could not name an output dim (e.g. a batch dim that
    // went through a runtime shape subgraph), keep the exporter's name for it.
    for vo in &graph.output {
        let Ok((_, declared)) = value_type(vo) else {
            continue;
        };
        let Some(id) = g
            .outputs
            .iter()
            .copied()
            .find(|&o| g.values[o].name == vo.name)
        else {
            continue;
        };
        let shape = &mut g.values[id].shape;
        if shape.len() == declared.len() {
            for (d, want) in shape.iter_mut().zip(declared) {
                let unnamed = matches!(d, Dim::Sym(s) if &**s == "?");
                if unnamed && !matches!(&want, Dim::Sym(s) if &**s == "?") {
                    *d = want;
                }
            }
        }
    }
    Ok(g)
}

fn node_name(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

fn value_type(vi: &proto::ValueInfoProto) -> Result<(DType, Vec<Dim>)> {
    let tp = vi.r#type.as_ref().context("has no type")?;
    if tp.sequence_type.is_some() || tp.map_type.is_some() || tp.optional_type.is_some() {
        bail!("sequence, map and optional types are not supported");
    }
    let tt = tp.tensor_type.as_ref().context("is not a tensor")?;
    let dtype = dtype_from_onnx(tt.elem_type)?;
    let shape = match &tt.shape {
        None => bail!("has no shape (rank unknown)"),
        Some(s) => s
            .dim
            .iter()
            .map(|d| match (d.dim_value, &d.dim_param) {
                (Some(v), _) if v >= 0 => Dim::Known(v as usize),
                (_, Some(p)) if !p.is_empty() => Dim::Sym(Arc::from(p.as_str())),
                _ => Dim::unknown(),
            })
            .collect(),
    };
    Ok((dtype, shape))
}

/// Generic attribute conversion; tensor/graph attributes are handled per op.
fn attrs_of(node: &NodeProto) -> Result<Attrs> {
    let mut a = Attrs::new();
    for p in &node.attribute {
        if !p.ref_attr_name.is_empty() {
            bail!(
                "attribute '{}' refers to a function attribute (not supported)",
                p.name
            );
        }
        let v = match attr_kind(p) {
            at::INT => Attr::Int(p.i),
            at::FLOAT => Attr::Float(p.f),
            at::INTS => Attr::Ints(p.ints.clone()),
            at::FLOATS => Attr::Floats(p.floats.clone()),
            at::STRING => Attr::Str(String::from_utf8_lossy(&p.s).into_owned()),
            at::TENSOR | at::GRAPH | at::STRINGS => continue,
            other => bail!("attribute '{}' has unsupported type {other}", p.name),
        };
        a.set(&p.name, v);
    }
    Ok(a)
}

/// The attribute type; old files may leave `type` unset.
fn attr_kind(p: &AttributeProto) -> i32 {
    if p.r#type != 0 {
        return p.r#type;
    }
    if !p.ints.is_empty() {
        at::INTS
    } else if !p.floats.is_empty() {
        at::FLOATS
    } else if p.t.is_some() {
        at::TENSOR
    } else if !p.s.is_empty() {
        at::STRING
    } else if p.f != 0.0 {
        at::FLOAT
    } else {
        at::INT
    }
}

fn find_attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

impl Importer<'_> {
    fn input(&self, node: &NodeProto, i: usize) -> Result<Option<ValueId>> {
        match node.input.get(i) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self.names.get(n).copied().map(Some).ok_or_else(|| {
                anyhow!(
                    "input '{n}' is not defined before this node (graph not topologically sorted?)"
                )
            }),
        }
    }

    fn inputs(&self, node: &NodeProto) -> Result<Vec<Option<ValueId>>> {
        (0..node.input.len()).map(|i| self.input(node, i)).collect()
    }

    fn konst(&mut self, base: &str, t: Tensor) -> ValueId {
        let name = self.g.fresh_name(base);
        self.g.add_const(&name, t)
    }

    /// New output values for a node (dtype and shape set by inference later).
    fn outputs(&mut self, node: &NodeProto) -> Result<Vec<ValueId>> {
        let mut out = Vec::new();
        let used = node
            .output
            .iter()
            .rposition(|o| !o.is_empty())
            .map_or(0, |i| i + 1);
        for (k, o) in node.output.iter().take(used).enumerate() {
            if o.is_empty() {
                // an omitted optional output still holds its position
                let name = self
                    .g
                    .fresh_name(&format!("{}_unused_{k}", node_name(node)));
                out.push(self.g.add_value(&name, DType::F32, Vec::new()));
                continue;
            }
            if self.names.contains_key(o) {
                bail!("value '{o}' is defined twice");
            }
            let id = self.g.add_value(o, DType::F32, Vec::new());
            self.names.insert(o.clone(), id);
            out.push(id);
        }
        Ok(out)
    }

    fn push(
        &mut self,
        op: &str,
        name: &str,
        attrs: Attrs,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<ValueId>,
    ) -> Result<()> {
        let id = op_id(op).ok_or_else(|| anyhow!("runtime has no op {op}"))?;
        self.g.nodes.push(Node {
            name: name.to_string(),
            op: id,
            attrs,
            inputs,
            outputs,
        });
        Ok(())
    }

    /// Turn attribute `key` (ints) into a constant i64 input, for ops whose
    /// attribute became an input in a later opset.
    fn ints_attr_as_input(&mut self, node: &NodeProto, key: &str) -> Result<Option<ValueId>> {
        match find_attr(node, key) {
            None => Ok(None),
            Some(a) => {
                let t = Tensor::from_slice(&[a.ints.len()], &a.ints)?;
                Ok(Some(self.konst(&format!("{}_{key}", node_name(node)), t)))
            }
        }
    }

    fn alias(&mut self, node: &NodeProto, from: ValueId) {
        if let Some(o) = node.output.first() {
            self.names.insert(o.clone(), from);
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<()> {
        let name = node_name(node);
        if !matches!(node.domain.as_str(), "" | "ai.onnx") {
            self.unsupported.push(format!(
                "{} (op {} of domain '{}')",
                name, node.op_type, node.domain
            ));
            self.outputs(node)?;
            return Ok(());
        }
        let op = node.op_type.as_str();
        let mut attrs = attrs_of(node)?;
        let mut ins = self.inputs(node)?;
        let opset = self.opset;
        match op {
            "Constant" => {
                let t = constant_value(node)?;
                let out = node.output.first().context("Constant has no output")?;
                let id = self.g.add_const(out, t);
                self.names.insert(out.clone(), id);
                return Ok(());
            }
            "Identity" => {
                let x = ins
                    .first()
                    .copied()
                    .flatten()
                    .context("Identity needs an input")?;
                self.alias(node, x);
                return Ok(());
            }
            "Dropout" => {
                if node.output.len() > 1 && !node.output[1].is_empty() {
                    bail!("Dropout's mask output is not supported at inference");
                }
                let x = ins
                    .first()
                    .copied()
                    .flatten()
                    .context("Dropout needs an input")?;
                self.alias(node, x);
                return Ok(());
            }
            "Softmax" if opset < 13 => {
                attrs.set("legacy", Attr::Int(1));
                if attrs.get("axis").is_none() {
                    attrs.set("axis", Attr::Int(1));
                }
            }
            "Clip" if opset < 11 => {
                let lo = attrs.float("min", f32::MIN)?;
                let hi = attrs.float("max", f32::MAX)?;
                attrs = Attrs::new();
                let lo = self.konst(&format!("{name}_min"), Tensor::scalar(lo));
                let hi = self.konst(&format!("{name}_max"), Tensor::scalar(hi));
                ins = vec![ins.first().copied().flatten(), Some(lo), Some(hi)];
            }
            "Squeeze" | "Unsqueeze" if opset < 13 => {
                let axes = self.ints_attr_as_input(node, "axes")?;
                attrs = Attrs::new();
                ins = vec![ins.first().copied().flatten(), axes];
            }
            "ReduceSum" if opset < 13 => {
                let axes = self.ints_attr_as_input(node, "axes")?;
                attrs.0.remove("axes");
                ins = vec![ins.first().copied().flatten(), axes];
            }
            "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
            | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp"
                if opset < 18 =>
            {
                let axes = self.ints_attr_as_input(node, "axes")?;
                attrs.0.remove("axes");
                ins = vec![ins.first().copied().flatten(), axes];
            }
            "Split" => {
                if opset < 13 {
                    let split = self.ints_attr_as_input(node, "split")?;
                    attrs.0.remove("split");
                    ins = vec![ins.first().copied().flatten(), split];
                }
                attrs.set("num_outputs", Attr::Int(node.output.len() as i64));
            }
            "Slice" if opset < 10 => {
                let starts = self.ints_attr_as_input(node, "starts")?;
                let ends = self.ints_attr_as_input(node, "ends")?;
                let axes = self.ints_attr_as_input(node, "axes")?;
                attrs = Attrs::new();
                ins = vec![ins.first().copied().flatten(), starts, ends, axes];
            }
            "Pad" if opset < 11 => {
                let pads = self.ints_attr_as_input(node, "pads")?;
                let value = attrs.float("value", 0.0)?;
                let value = self.konst(&format!("{name}_value"), Tensor::scalar(value));
                let mode = attrs.string("mode", "constant")?;
                attrs = Attrs::new().with("mode", Attr::Str(mode));
                ins = vec![ins.first().copied().flatten(), pads, Some(value)];
            }
            "Resize" if opset < 11 => {
                // opset 10: (X, scales)
                ins = vec![
                    ins.first().copied().flatten(),
                    None,
                    ins.get(1).copied().flatten(),
                ];
            }
            "QuantizeLinear" if attrs.get("output_dtype").is_some() => {
                let to = attrs.int("output_dtype", 0)? as i32;
                if to != 0 {
                    let d = dtype_from_onnx(to).with_context(|| {
                        format!("QuantizeLinear output_dtype {}", onnx_type_name(to))
                    })?;
                    attrs.set("output_dtype", Attr::Int(d.code() as i64));
                } else {
                    attrs.0.remove("output_dtype");
                }
            }
            "Cast" => {
                let to = attrs.int("to", 0)? as i32;
                let d = dtype_from_onnx(to)
                    .with_context(|| format!("Cast to {}", onnx_type_name(to)))?;
                attrs = Attrs::new().with("to", Attr::Int(d.code() as i64));
            }
            "ConstantOfShape" => {
                attrs = Attrs::new();
                let (dt, f, i) = match find_attr(node, "value").and_then(|a| a.t.as_ref()) {
                    None => (DType::F32, 0.0, 0),
                    Some(tp) => {
                        let t = tensor_from_proto(tp, self.base_dir)?;
                        if t.numel() != 1 {
                            bail!("ConstantOfShape value must have one element");
                        }
                        let f = t.to_f32_vec()?[0];
                        let i = match t.dtype {
                            DType::I64 | DType::I32 => t.to_i64_vec()?[0],
                            _ => f as i64,
                        };
                        (t.dtype, f, i)
                    }
                };
                attrs.set("value_dtype", Attr::Int(dt.code() as i64));
                attrs.set("value_f", Attr::Float(f));
                attrs.set("value_i", Attr::Int(i));
            }
            "BatchNormalization" => {
                if attrs.int("training_mode", 0)? != 0 {
                    bail!("BatchNormalization in training mode is not supported");
                }
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    bail!(
                        "BatchNormalization's training outputs (running mean/var) are not supported"
                    );
                }
                attrs = Attrs::new().with("epsilon", Attr::Float(attrs.float("epsilon", 1e-5)?));
            }
            "MaxPool" if node.output.iter().skip(1).any(|o| !o.is_empty()) => {
                bail!("MaxPool's Indices output is not supported");
            }
            _ => {}
        }
        let Some(id) = op_id(op) else {
            self.unsupported.push(format!("{name} (op {op})"));
            self.outputs(node)?;
            return Ok(());
        };
        let mut outputs = self.outputs(node)?;
        if matches!(op, "BatchNormalization" | "MaxPool") {
            outputs.truncate(1);
        }
        let _ = id;
        self.push(op, &name, attrs, ins, outputs)
    }
}

fn constant_value(node: &NodeProto) -> Result<Tensor> {
    let a = node
        .attribute
        .first()
        .context("Constant has no value attribute")?;
    Ok(match a.name.as_str() {
        "value" => tensor_from_proto(
            a.t.as_ref().context("Constant value is not a tensor")?,
            None,
        )?,
        "value_float" => Tensor::scalar(a.f),
        "value_floats" => Tensor::from_slice(&[a.floats.len()], &a.floats)?,
        "value_int" => Tensor::scalar(a.i),
        "value_ints" => Tensor::from_slice(&[a.ints.len()], &a.ints)?,
        other => bail!("Constant attribute '{other}' is not supported"),
    })
}
