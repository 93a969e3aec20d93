// Morsel and onnxruntime-web side by side on one page, on the same inputs.
// Both single-threaded; onnxruntime-web's wasm files come from this origin
// (/ort/ = tests/web/node_modules/onnxruntime-web/dist), never a CDN.
// The e2e test calls window.bench.*; the button runs everything by hand.
import initMorsel, { Model, wasmMemoryBytes, fusedMultiplyAdd } from '/pkg/morsel_wasm.js';

const MORSEL_URL = '/digits_cnn.morsel';
const ONNX_URL = '/digits/digits_cnn.onnx';
let morsel = null;
let ort = null;
let ortSession = null;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** fetch → ready: wasm fetched and compiled, model fetched and loaded. */
async function loadMorsel() {
  const t0 = performance.now();
  const [, bytes] = await Promise.all([initMorsel(), fetch(MORSEL_URL).then((r) => r.arrayBuffer())]);
  morsel = Model.load(new Uint8Array(bytes));
  return { ms: performance.now() - t0, wasmMemoryBytes: wasmMemoryBytes() };
}

/** fetch → ready for onnxruntime-web: its JS, its wasm, the .onnx, a session. */
async function loadOrt() {
  const t0 = performance.now();
  ort = await import('/ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = '/ort/';
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ortSession = await ort.InferenceSession.create(ONNX_URL, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  return { ms: performance.now() - t0 };
}

function runMorsel(x, shape) {
  return morsel.run({ x: { data: x, shape } }).logits.data;
}

async function runOrt(x, shape) {
  const feeds = { [ortSession.inputNames[0]]: new ort.Tensor('float32', x, shape) };
  const out = await ortSession.run(feeds);
  return out[ortSession.outputNames[0]].data;
}

/** Logits of both runtimes for x [n,1,8,8] (plain arrays, for the test to compare). */
async function outputs(xs, n) {
  const x = Float32Array.from(xs);
  const shape = [n, 1, 8, 8];
  return { morsel: Array.from(runMorsel(x, shape)), ort: Array.from(await runOrt(x, shape)) };
}

/** Median latency of `runs` runs of each runtime after `warmup` runs, batch n. */
async function latency(xs, n, runs = 50, warmup = 5) {
  const x = Float32Array.from(xs.slice(0, n * 64));
  const shape = [n, 1, 8, 8];
  const time = async (f) => {
    for (let i = 0; i < warmup; i++) await f();
    const t = [];
    for (let i = 0; i < runs; i++) {
      const s = performance.now();
      await f();
      t.push(performance.now() - s);
    }
    return { medianMs: median(t), minMs: Math.min(...t), runs };
  };
  const m = await time(() => runMorsel(x, shape));
  const o = await time(() => runOrt(x, shape));
  return { batch: n, morsel: m, ort: o, ratio: m.medianMs / o.medianMs, wasmMemoryBytes: wasmMemoryBytes(), sessionBytes: morsel.sessionBytes };
}

window.bench = {
  loadMorsel,
  loadOrt,
  outputs,
  latency,
  info: () => ({ crossOriginIsolated, ortVersion: ort?.env.versions?.web ?? null, userAgent: navigator.userAgent,
    fusedMultiplyAdd: fusedMultiplyAdd() }),
};

document.getElementById('go').addEventListener('click', async () => {
  const out = document.getElementById('out');
  const log = (s) => (out.textContent += s + '\n');
  log(`morsel load ${JSON.stringify(await loadMorsel())}`);
  log(`ort load ${JSON.stringify(await loadOrt())}`);
  const xs = Array.from({ length: 64 * 450 }, () => Math.random());
  for (const n of [1, 450]) log(JSON.stringify(await latency(xs, n)));
});
