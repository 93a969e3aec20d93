// Morsel and onnxruntime-web side by side on the real models (issue 7): one
// case per page, both runtimes single-threaded, the same inputs (.npy files
// fetched from this origin). onnxruntime-web's wasm files come from /ort/
// (tests/web/node_modules/onnxruntime-web/dist), never a CDN; the models and
// inputs from /web-models/ (target/web-models, `make wasm-models`).
// tests/web/models.test.mjs calls window.models.*; the button runs a case by hand.
import initMorsel, { Model, wasmMemoryBytes, int8Kernel, fusedMultiplyAdd } from '/pkg/morsel_wasm.js';

// case -> input set (target/web-models/inputs/<set>/<name>.npy)
const CASES = {
  minilm: { inputs: 'minilm', names: ['input_ids', 'attention_mask', 'token_type_ids'] },
  minilm_int8: { inputs: 'minilm', names: ['input_ids', 'attention_mask', 'token_type_ids'] },
  det: { inputs: 'det', names: ['x'] },
  cls: { inputs: 'cls', names: ['x'] },
};

let current = null; // { name, morsel, ort, session, feeds: {name: {dtype, data, shape}} }
let ort = null;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const NPY = { '<f4': [Float32Array, 'float32'], '<i8': [BigInt64Array, 'int64'], '<i4': [Int32Array, 'int32'] };

/** The few .npy files this page reads: C order, little-endian f32/i64/i32. */
function parseNpy(buf) {
  const bytes = new Uint8Array(buf);
  const view = new DataView(buf);
  if (String.fromCharCode(...bytes.subarray(0, 6)) !== '\x93NUMPY') throw new Error('not an .npy file');
  const major = bytes[6];
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const hstart = major === 1 ? 10 : 12;
  const header = new TextDecoder('latin1').decode(bytes.subarray(hstart, hstart + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error('fortran order not supported');
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (!NPY[descr]) throw new Error(`unsupported npy dtype ${descr}`);
  const [Ctor, ortType] = NPY[descr];
  const n = shape.reduce((a, b) => a * b, 1);
  const start = hstart + hlen;
  const data = new Ctor(buf.slice(start, start + n * Ctor.BYTES_PER_ELEMENT));
  return { dtype: descr, ortType, shape, data };
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.arrayBuffer();
}

/** Load one case: the .morsel into Morsel, the .onnx into onnxruntime-web, the inputs. */
async function load(name) {
  const c = CASES[name];
  if (!c) throw new Error(`unknown case ${name}`);
  const t0 = performance.now();
  const [, bytes] = await Promise.all([initMorsel(), fetchBytes(`/web-models/${name}.morsel`)]);
  const morsel = Model.load(new Uint8Array(bytes));
  const morselMs = performance.now() - t0;

  const t1 = performance.now();
  if (!ort) {
    ort = await import('/ort/ort.wasm.min.mjs');
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
  }
  const onnx = await fetchBytes(`/web-models/${name}.onnx`);
  const session = await ort.InferenceSession.create(new Uint8Array(onnx), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const ortMs = performance.now() - t1;

  const feeds = {};
  for (const n of c.names) feeds[n] = parseNpy(await fetchBytes(`/web-models/inputs/${c.inputs}/${n}.npy`));
  current = { name, morsel, session, feeds };
  return {
    name, loadMs: { morsel: morselMs, ort: ortMs }, morselBytes: bytes.byteLength, onnxBytes: onnx.byteLength,
    inputs: Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, { dtype: v.dtype, shape: v.shape }])),
    wasmMemoryBytes: wasmMemoryBytes(),
  };
}

function runMorsel() {
  const feeds = {};
  for (const [k, v] of Object.entries(current.feeds)) feeds[k] = { data: v.data, shape: v.shape };
  return current.morsel.run(feeds);
}

async function runOrt() {
  const feeds = {};
  for (const [k, v] of Object.entries(current.feeds)) feeds[k] = new ort.Tensor(v.ortType, v.data, v.shape);
  return current.session.run(feeds);
}

function base64(typed) {
  const u8 = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Every output of both runtimes, f32 data as base64 of the raw bytes (bit-exact). */
async function outputs() {
  const m = runMorsel();
  const o = await runOrt();
  const pack = (dtype, shape, data) => ({ dtype, shape: Array.from(shape, Number), b64: base64(data) });
  return {
    morsel: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, pack(v.dtype, v.shape, v.data)])),
    ort: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, pack(v.type, v.dims, v.data)])),
  };
}

/**
 * Median latency of `runs` runs per runtime after `warmup` each, alternating
 * Morsel and onnxruntime-web run by run (which one goes first flips every
 * run), so a slow phase of the machine hits both sides alike.
 */
async function latency(runs = 20, warmup = 3) {
  for (let i = 0; i < warmup; i++) {
    runMorsel();
    await runOrt();
  }
  const tm = [];
  const to = [];
  const timeMorsel = () => { const s = performance.now(); runMorsel(); tm.push(performance.now() - s); };
  const timeOrt = async () => { const s = performance.now(); await runOrt(); to.push(performance.now() - s); };
  for (let i = 0; i < runs; i++) {
    if (i % 2 === 0) { timeMorsel(); await timeOrt(); } else { await timeOrt(); timeMorsel(); }
  }
  const stat = (t) => ({ medianMs: median(t), minMs: Math.min(...t), maxMs: Math.max(...t), runs: t.length });
  const morsel = stat(tm);
  const ortStat = stat(to);
  return { name: current.name, morsel, ort: ortStat, ratio: morsel.medianMs / ortStat.medianMs,
    wasmMemoryBytes: wasmMemoryBytes(), sessionBytes: current.morsel.sessionBytes };
}

window.models = {
  cases: Object.keys(CASES),
  load,
  outputs,
  latency,
  info: () => ({ crossOriginIsolated, ortVersion: ort?.env.versions?.web ?? null, userAgent: navigator.userAgent,
    int8Kernel: int8Kernel(), fusedMultiplyAdd: fusedMultiplyAdd() }),
};

document.getElementById('go').addEventListener('click', async () => {
  const out = document.getElementById('out');
  const log = (s) => (out.textContent += s + '\n');
  const name = document.getElementById('case').value;
  log(`load ${JSON.stringify(await load(name))}`);
  log(JSON.stringify(await latency(name === 'det' ? 5 : 20, 1)));
});
