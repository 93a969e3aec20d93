//! A loaded model: the graph plus its built ops, shared cheaply between
//! sessions and threads.

#[cfg(feature = "mmap")]
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "mmap")]
use crate::Error;
use crate::Result;
use crate::format::reader::{self, Store};
use crate::graph::Graph;
use crate::ops::{self, Op};
use crate::session::{Options, Session};
use crate::tensor::{AlignedBuf, Tensor, TensorRef};

#[derive(Clone)]
pub struct Model(Arc<Inner>);

struct Inner {
    graph: Graph,
    ops: Vec<Box<dyn Op>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Model({} nodes, {} values)",
            self.0.graph.nodes.len(),
            self.0.graph.values.len()
        )
    }
}

struct OwnedStore(AlignedBuf);
impl AsRef<[u8]> for OwnedStore {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

struct StaticStore(&'static [u8]);
impl AsRef<[u8]> for StaticStore {
    fn as_ref(&self) -> &[u8] {
        self.0
    }
}

impl Model {
    /// Build a model from a graph: checks its structure and every node's attributes.
    pub fn from_graph(graph: Graph) -> Result<Model> {
        graph.validate()?;
        let mut ops = graph
            .nodes
            .iter()
            .map(ops::build)
            .collect::<Result<Vec<_>>>()?;
        for (op, node) in ops.iter_mut().zip(&graph.nodes) {
            let is_const: smallvec::SmallVec<[bool; 4]> = node
                .inputs
                .iter()
                .map(|i| i.is_some_and(|v| graph.values[v].konst.is_some()))
                .collect();
            op.constant_inputs(&is_const);
        }
        Ok(Model(Arc::new(Inner { graph, ops })))
    }

    /// Open a `.morsel` file by mapping it: weights are used in place, so
    /// opening a large model costs page cache, not private memory.
    #[cfg(feature = "mmap")]
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            context: format!("opening {}", path.display()),
            source,
        })?;
        // SAFETY: the map is read-only. If another process truncates or
        // rewrites the file while it is mapped, reads may fault or see new
        // bytes; morsel writes files atomically (rename), which never does that
        // to a mapped file, and this is the documented contract of `open`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
            context: format!("mapping {}", path.display()),
            source,
        })?;
        let store: Store = Arc::new(map);
        Model::from_graph(reader::read(store)?)
    }

    /// Read a model from bytes (copied once into an aligned buffer).
    /// Never panics, whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let store: Store = Arc::new(OwnedStore(AlignedBuf::from_bytes(bytes)));
        Model::from_graph(reader::read(store)?)
    }

    /// Read a model from static bytes (e.g. `include_bytes!` in firmware),
    /// used in place when 8-byte aligned.
    pub fn from_static(bytes: &'static [u8]) -> Result<Model> {
        if !(bytes.as_ptr() as usize).is_multiple_of(8) {
            return Model::from_bytes(bytes);
        }
        Model::from_graph(reader::read(Arc::new(StaticStore(bytes)))?)
    }

    pub fn graph(&self) -> &Graph {
        &self.0.graph
    }

    pub fn op(&self, node: usize) -> &dyn Op {
        &*self.0.ops[node]
    }

    /// Bytes the ops hold for prepared constants (weights packed for the
    /// matmul kernel on first use), shared by every session of this model.
    pub fn prepared_bytes(&self) -> usize {
        self.0.ops.iter().map(|o| o.prepared_bytes()).sum()
    }

    pub fn session(&self, options: Options) -> Session {
        Session::new(self.clone(), options)
    }

    /// One-off run with default options (a fresh session each call).
    pub fn run(&self, inputs: &[(&str, TensorRef<'_>)]) -> Result<Vec<Tensor>> {
        self.session(Options::default()).run(inputs)
    }
}
