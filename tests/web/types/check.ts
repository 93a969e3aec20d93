// Compile-only check of the generated TypeScript types (tsc --noEmit,
// strict): the API as a TS user writes it must type-check, and the lines
// marked @ts-expect-error must be rejected.
import init, { Model, wasmMemoryBytes, version, int8Kernel, fusedMultiplyAdd } from '../../../target/wasm-pkg/web/morsel_wasm.js';
import type { Feeds, Outputs, TensorOutput, ValueInfo, MorselError, Dim, DType } from '../../../target/wasm-pkg/web/morsel_wasm.js';
import * as node from '../../../target/wasm-pkg/node/morsel_wasm.js';
import * as bundler from '../../../target/wasm-pkg/bundler/morsel_wasm.js';

export async function use(bytes: Uint8Array): Promise<number> {
  await init();
  const model: Model = Model.load(bytes);
  const inputs: ValueInfo[] = model.inputs;
  const dims: Dim[] = inputs[0].shape;
  const dtype: DType = model.outputs[0].dtype;
  const meta: Record<string, string> = model.metadata;
  const feeds: Feeds = {
    x: { data: new Float32Array(64), shape: [1, 1, 8, 8] },
    ids: { data: new BigInt64Array(4), shape: [1, 4] },
    mask: { data: new Uint8Array(4), shape: [1, 4] },
  };
  model.memoryLimit = 64 << 20;
  const limit: number | undefined = model.memoryLimit;
  model.memoryLimit = undefined;
  const out: Outputs = model.run(feeds);
  const logits: TensorOutput = out.logits;
  let first = 0;
  if (logits.dtype === 'f32') {
    const f: Float32Array = logits.data; // narrowed by dtype
    first = f[0];
  } else if (logits.dtype === 'i64') {
    const b: BigInt64Array = logits.data;
    first = Number(b[0]);
  }
  try {
    Model.load(new Uint8Array(3));
  } catch (e) {
    const err = e as MorselError;
    const kind: 'format' | 'unsupported' | 'input' | 'graph' | 'memory' | 'io' = err.kind;
    console.log(kind, err.message, limit, dims, dtype, meta, version(), wasmMemoryBytes(), int8Kernel(), fusedMultiplyAdd() === true, model.sessionBytes);
  }
  model.free();

  // @ts-expect-error: data must be a typed array, not a plain array
  model.run({ x: { data: [0, 1], shape: [1, 2] } });
  // @ts-expect-error: Float64Array is not an input type
  model.run({ x: { data: new Float64Array(2), shape: [2] } });
  // @ts-expect-error: shape is required
  model.run({ x: { data: new Float32Array(2) } });
  // @ts-expect-error: an f32 output's data is not a BigInt64Array
  const wrong: BigInt64Array = logits.dtype === 'f32' ? logits.data : new BigInt64Array(0);
  // @ts-expect-error: inputs are read-only
  model.inputs = [];
  void wrong;

  // The Node and bundler builds have the same API without init().
  const n: node.Model = node.Model.load(bytes);
  const b: bundler.Outputs = bundler.Model.load(bytes).run({ x: { data: new Float32Array(64), shape: [1, 1, 8, 8] } });
  n.free();
  return first + Object.keys(b).length;
}
