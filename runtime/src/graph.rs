//! The one graph IR. The ONNX importer builds it, compression passes rewrite
//! it, the writer serialises it, the reader rebuilds it, the session runs it.

use std::collections::BTreeMap;

use crate::dtype::DType;
use crate::ops::{self, OpId};
use crate::tensor::{Shape, Tensor, shape_str};
use crate::{Error, Result};

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// An attribute value. Tensor-valued attributes become constant inputs at import.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(String),
}

/// A node's attributes, in a stable order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, Attr>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }
    pub fn with(mut self, key: &str, value: Attr) -> Attrs {
        self.0.insert(key.to_string(), value);
        self
    }
    pub fn set(&mut self, key: &str, value: Attr) {
        self.0.insert(key.to_string(), value);
    }
    pub fn get(&self, key: &str) -> Option<&Attr> {
        self.0.get(key)
    }
    pub fn int(&self, key: &str, default: i64) -> Result<i64> {
        match self.0.get(key) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(other) => Err(Error::Graph(format!(
                "attribute '{key}' should be an int, is {other:?}"
            ))),
        }
    }
    pub fn float(&self, key: &str, default: f32) -> Result<f32> {
        match self.0.get(key) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(other) => Err(Error::Graph(format!(
                "attribute '{key}' should be a float, is {other:?}"
            ))),
        }
    }
    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(Error::Graph(format!(
                "attribute '{key}' should be ints, is {other:?}"
            ))),
        }
    }
    pub fn floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(other) => Err(Error::Graph(format!(
                "attribute '{key}' should be floats, is {other:?}"
            ))),
        }
    }
    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.0.get(key) {
            None => Ok(default.to_string()),
            Some(Attr::Str(v)) => Ok(v.clone()),
            Some(other) => Err(Error::Graph(format!(
                "attribute '{key}' should be a string, is {other:?}"
            ))),
        }
    }
}

/// A value: a graph input, a constant, or a node's output.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub dtype: DType,
    /// Known before running; symbolic dims stay free (e.g. a batch `N`).
    pub shape: Shape,
    /// Set for constants (weights, folded values).
    pub konst: Option<Tensor>,
    /// How a file stores the constant.
    pub storage: Storage,
}

/// How a constant is stored in a `.morsel` file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Storage {
    /// Exactly: raw, or sparse where that is smaller (the writer's choice).
    #[default]
    Exact,
    /// An f32 constant as int8 with one f32 scale per slice along `axis`
    /// (symmetric, values in [-127, 127]): a quarter of the bytes, widened
    /// back to f32 at load, so it computes in f32. Lossy: the compressor
    /// asks for it (`--quantize int8`, for layers whose compute stays f32).
    Int8PerChannel { axis: usize },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op: OpId,
    pub attrs: Attrs,
    /// `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

/// A model: values, nodes in topological order, inputs, outputs, metadata.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Producer, source hash, recipe, report: strings (JSON where structured).
    pub metadata: BTreeMap<String, String>,
}

impl Graph {
    pub fn add_value(&mut self, name: &str, dtype: DType, shape: Shape) -> ValueId {
        self.values.push(Value {
            name: name.to_string(),
            dtype,
            shape,
            konst: None,
            storage: Storage::Exact,
        });
        self.values.len() - 1
    }

    pub fn add_const(&mut self, name: &str, t: Tensor) -> ValueId {
        let shape = crate::tensor::known_shape(&t.dims);
        self.values.push(Value {
            name: name.to_string(),
            dtype: t.dtype,
            shape,
            konst: Some(t),
            storage: Storage::Exact,
        });
        self.values.len() - 1
    }

    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// A name not used by any value, starting from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let taken: std::collections::HashSet<&str> =
            self.values.iter().map(|v| v.name.as_str()).collect();
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .unwrap_or_default()
    }

    /// Which node produces each value (None for inputs and constants).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                if o < p.len() {
                    p[o] = Some(i);
                }
            }
        }
        p
    }

    /// How many node inputs and graph outputs read each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for i in n.inputs.iter().flatten() {
                c[*i] += 1;
            }
        }
        for &o in &self.outputs {
            c[o] += 1;
        }
        c
    }

    /// Structural checks a reader must do before anything indexes by id:
    /// ids in range, topological order, every value defined once.
    pub fn validate(&self) -> Result<()> {
        let nv = self.values.len();
        let mut defined = vec![false; nv];
        for &i in &self.inputs {
            if i >= nv {
                return Err(Error::Graph(format!(
                    "input id {i} out of range ({nv} values)"
                )));
            }
            defined[i] = true;
        }
        for (i, v) in self.values.iter().enumerate() {
            if v.konst.is_some() {
                defined[i] = true;
            }
        }
        for n in &self.nodes {
            ops::lookup(n.op).ok_or_else(|| {
                Error::Unsupported(format!("node '{}': unknown op id {}", n.name, n.op.0))
            })?;
            for (k, i) in n.inputs.iter().enumerate() {
                if let Some(i) = *i
                    && (i >= nv || !defined[i])
                {
                    return Err(Error::Graph(format!(
                        "node '{}': input {k} is not defined before the node",
                        n.name
                    )));
                }
            }
            for &o in &n.outputs {
                if o >= nv || defined[o] {
                    return Err(Error::Graph(format!(
                        "node '{}': output id {o} is out of range or defined twice",
                        n.name
                    )));
                }
                defined[o] = true;
            }
        }
        for &o in &self.outputs {
            if o >= nv || !defined[o] {
                return Err(Error::Graph(format!(
                    "graph output id {o} is never computed"
                )));
            }
        }
        Ok(())
    }

    /// Re-infer every node output's dtype and (symbolic) shape from the inputs.
    pub fn infer_shapes(&mut self) -> Result<()> {
        for ni in 0..self.nodes.len() {
            let node = &self.nodes[ni];
            let op = ops::build(node)?;
            let facts: Vec<Option<ops::Fact>> = node
                .inputs
                .iter()
                .map(|i| {
                    i.map(|i| {
                        let v = &self.values[i];
                        ops::Fact {
                            dtype: v.dtype,
                            shape: v.shape.clone(),
                            value: v.konst.clone(),
                        }
                    })
                })
                .collect();
            let out = op
                .infer(&facts)
                .map_err(|e| e.in_node(&node.name, ops::op_name(node.op)))?;
            let outputs = node.outputs.clone();
            if out.len() < outputs.len() {
                return Err(Error::Graph(format!(
                    "node '{}' has {} outputs, its op makes {}",
                    node.name,
                    outputs.len(),
                    out.len()
                )));
            }
            for (o, f) in outputs.into_iter().zip(out) {
                self.values[o].dtype = f.dtype;
                self.values[o].shape = f.shape;
            }
        }
        Ok(())
    }

    /// One line per input/output: `name: f32 [N, 1, 8, 8]`.
    pub fn describe_value(&self, id: ValueId) -> String {
        let v = &self.values[id];
        format!("{}: {} {}", v.name, v.dtype, shape_str(&v.shape))
    }
}
