//! # morsel-wasm
//!
//! The Morsel runtime for browsers and Node, through wasm-bindgen. JS sees
//! one class, `Model`:
//!
//! ```js
//! const model = Model.load(bytes);                 // Uint8Array of a .morsel file
//! model.inputs;                                    // [{name: "x", dtype: "f32", shape: ["N", 1, 8, 8]}]
//! const out = model.run({ x: { data: new Float32Array(64), shape: [1, 1, 8, 8] } });
//! out.logits.data;                                 // Float32Array(10), out.logits.shape = [1, 10]
//! model.free();                                    // release the wasm memory now, not at GC
//! ```
//!
//! Every runtime error is thrown as a JS `Error` named `MorselError`, with the
//! runtime's one-line message and a `kind` ("format", "input", ...). The
//! reader never panics on bad bytes, so a bad file is an exception the page
//! catches, not a dead page. Conversions between JS values and tensors live
//! in `convert.rs`; the TypeScript types of those values are written out below
//! (wasm-bindgen cannot derive them from `JsValue`).

use js_sys::{Array, Object, Reflect};
use morsel_runtime::{ErrorKind, Options, Session};
use wasm_bindgen::prelude::*;

mod convert;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Element type of a tensor, as the `.morsel` file names it. */
export type DType = "f32" | "f16" | "bf16" | "i8" | "u8" | "i32" | "i64" | "bool";

/** A dimension known before running: a size, or a symbol such as "N" that the caller picks ("?" when unnamed). */
export type Dim = number | string;

/** A model input or output as declared in the file. */
export interface ValueInfo {
  name: string;
  dtype: DType;
  shape: Dim[];
}

/**
 * The data of an input tensor, row-major. Float32Array feeds f32 inputs (and f16/bf16 ones,
 * converted), Int32Array i32, BigInt64Array i64, Int8Array i8, Uint8Array u8 and bool.
 */
export type InputData = Float32Array | Int32Array | BigInt64Array | Int8Array | Uint8Array;

/** One input: its data and its concrete shape (product of `shape` = `data.length`). */
export interface TensorInput {
  data: InputData;
  shape: readonly number[];
}

/** The inputs of a run, by name. */
export type Feeds = Record<string, TensorInput>;

/** One output: fresh JS memory (not a view of wasm memory), safe to keep. f16/bf16 outputs come as f32. */
export type TensorOutput =
  | { dtype: "f32" | "f16" | "bf16"; shape: number[]; data: Float32Array }
  | { dtype: "i32"; shape: number[]; data: Int32Array }
  | { dtype: "i64"; shape: number[]; data: BigInt64Array }
  | { dtype: "i8"; shape: number[]; data: Int8Array }
  | { dtype: "u8" | "bool"; shape: number[]; data: Uint8Array };

/** The outputs of a run, by name, in the model's output order. */
export type Outputs = Record<string, TensorOutput>;

/** What went wrong, as `MorselError.kind`. */
export type ErrorKind = "format" | "unsupported" | "input" | "graph" | "memory" | "io";

/** Errors thrown by Morsel: `name` is "MorselError", `message` the runtime's one-line message. */
export interface MorselError extends Error {
  kind: ErrorKind;
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// Panics (which the runtime should never raise) are printed to the
/// console before the wasm trap turns them into a JS `RuntimeError`.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| console_error(&format!("morsel: {info}"))));
    });
}

/// The runtime's error as a JS `Error` named `MorselError`, with `kind`.
fn js_error(e: morsel_runtime::Error) -> JsValue {
    error_value(e.kind(), &e.to_string())
}

fn error_value(kind: ErrorKind, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("MorselError");
    let kind = match kind {
        ErrorKind::Format => "format",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Input => "input",
        ErrorKind::Graph => "graph",
        ErrorKind::Memory => "memory",
        ErrorKind::Io => "io",
    };
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&err, &"kind".into(), &kind.into());
    err.into()
}

/// A loaded `.morsel` model with its session: plans made for one set of
/// input shapes are kept, so repeated runs of the same shapes allocate
/// nothing but their outputs.
#[wasm_bindgen]
pub struct Model {
    session: Session,
    memory_limit: Option<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.session.model().fmt(f)
    }
}

#[wasm_bindgen]
impl Model {
    /// Read a `.morsel` file from its bytes. Throws a `MorselError` (kind
    /// "format" or "unsupported") for anything that is not a model this
    /// build can run; never crashes the page.
    pub fn load(bytes: &[u8]) -> Result<Model, JsValue> {
        install_panic_hook();
        let model = morsel_runtime::Model::from_bytes(bytes).map_err(js_error)?;
        Ok(Model {
            session: model.session(Options::default()),
            memory_limit: None,
        })
    }

    /// Most bytes of activation memory a run may plan; a run that needs
    /// more throws a `MorselError` of kind "memory" instead of growing wasm
    /// memory. `undefined` (the default) means no limit. Setting it drops
    /// the plans made so far.
    #[wasm_bindgen(getter, js_name = memoryLimit)]
    pub fn memory_limit(&self) -> Option<f64> {
        self.memory_limit.map(|b| b as f64)
    }

    #[wasm_bindgen(setter, js_name = memoryLimit)]
    pub fn set_memory_limit(&mut self, bytes: Option<f64>) {
        self.memory_limit = bytes.map(|b| b.clamp(0.0, usize::MAX as f64) as usize);
        let options = Options {
            memory_limit: self.memory_limit,
            ..Options::default()
        };
        self.session = self.session.model().session(options);
    }

    /// The model's inputs: name, dtype and shape (symbolic dims as strings).
    #[wasm_bindgen(getter, unchecked_return_type = "ValueInfo[]")]
    pub fn inputs(&self) -> Array {
        let g = self.session.model().graph();
        g.inputs.iter().map(|&v| value_info(&g.values[v])).collect()
    }

    /// The model's outputs: name, dtype and shape (symbolic dims as strings).
    #[wasm_bindgen(getter, unchecked_return_type = "ValueInfo[]")]
    pub fn outputs(&self) -> Array {
        let g = self.session.model().graph();
        g.outputs
            .iter()
            .map(|&v| value_info(&g.values[v]))
            .collect()
    }

    /// How the file was made: producer, source model sha256, recipe, report.
    #[wasm_bindgen(getter, unchecked_return_type = "Record<string, string>")]
    pub fn metadata(&self) -> Object {
        let obj = Object::new();
        for (k, v) in &self.session.model().graph().metadata {
            // Setting a string property on a plain object cannot fail.
            let _ = Reflect::set(&obj, &k.into(), &v.into());
        }
        obj
    }

    /// Bytes of activation memory this model's session holds (planned
    /// buffers and kernel scratch), after its runs so far.
    #[wasm_bindgen(getter, js_name = sessionBytes)]
    pub fn session_bytes(&self) -> usize {
        self.session.held_bytes()
    }

    /// Run the model. `feeds` maps every input name to `{data, shape}`;
    /// returns every output by name as `{dtype, shape, data}`. Throws a
    /// `MorselError` (kind "input") when a name, dtype, shape or length is
    /// wrong, naming what was expected.
    #[wasm_bindgen(unchecked_return_type = "Outputs")]
    pub fn run(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Feeds")] feeds: JsValue,
    ) -> Result<Object, JsValue> {
        let model = self.session.model().clone();
        let graph = model.graph();
        let inputs = convert::read_feeds(graph, &feeds)?;
        let refs: Vec<(&str, morsel_runtime::TensorRef<'_>)> =
            inputs.iter().map(|i| (i.name.as_str(), i.view())).collect();
        let outputs = self.session.run(&refs).map_err(js_error)?;
        let obj = Object::new();
        for (&vid, t) in graph.outputs.iter().zip(&outputs) {
            let out = convert::output(t).map_err(js_error)?;
            // Setting a property on a plain object cannot fail.
            let _ = Reflect::set(&obj, &graph.values[vid].name.as_str().into(), &out);
        }
        Ok(obj)
    }
}

fn value_info(v: &morsel_runtime::graph::Value) -> JsValue {
    let obj = Object::new();
    let shape: Array = v
        .shape
        .iter()
        .map(|d| match d.known() {
            Some(n) => JsValue::from(n as f64),
            None => JsValue::from(d.to_string()),
        })
        .collect();
    // Setting properties on a plain object cannot fail.
    let _ = Reflect::set(&obj, &"name".into(), &v.name.as_str().into());
    let _ = Reflect::set(&obj, &"dtype".into(), &v.dtype.name().into());
    let _ = Reflect::set(&obj, &"shape".into(), &shape);
    obj.into()
}

/// Bytes of linear memory the wasm instance has now (it only grows).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) * 65536) as f64
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0.0
    }
}

/// The int8 matrix kernel this build runs on this engine and CPU:
/// `"RelaxedDot"` (the relaxed-SIMD build where its dot product is exact,
/// e.g. Chromium on x86 with AVX-VNNI), `"Simd128"`, or `"Generic"`.
#[wasm_bindgen(js_name = int8Kernel)]
pub fn int8_kernel() -> String {
    format!("{:?}", morsel_runtime::kernels::int8::Kernel::best())
}

/// Whether the f32 kernels (matrix multiply, exp, erf, GELU, …) fuse their
/// multiply-adds: true in the relaxed-SIMD build on an engine whose
/// `f32x4.relaxed_madd` rounds once (Chromium on x86 with FMA). Then f32
/// results have the bits of native Morsel on x86-64 with FMA; otherwise
/// those of native Morsel with `MORSEL_ISA=baseline` (no FMA).
#[wasm_bindgen(js_name = fusedMultiplyAdd)]
pub fn fused_multiply_add() -> bool {
    morsel_runtime::kernels::sgemm::fused() && morsel_runtime::kernels::math::fused()
}

/// The version of this package's runtime.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
