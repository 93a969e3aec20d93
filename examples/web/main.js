// Morsel demo: a drawing pad classified live by the bundled digits CNN, and
// a file picker that opens any .morsel, shows what it takes and gives, and
// times a run on random input. Everything it fetches comes from its own
// origin: pkg/ (the web build of the morsel-wasm package) and the model.
import init, { Model, version, wasmMemoryBytes } from './pkg/morsel_wasm.js';

const $ = (id) => document.getElementById(id);
const ms = (t) => (t < 1 ? `${(t * 1000).toFixed(0)} µs` : `${t.toFixed(1)} ms`);
const mb = (b) => `${(b / (1 << 20)).toFixed(2)} MiB`;
const kib = (b) => `${(b / 1024).toFixed(1)} KiB`;

/** What the tests read back: load timings, the last prediction. */
const demo = (window.morselDemo = { ready: false });
let digits = null;

async function start() {
  const t0 = performance.now();
  try {
    // Compile the wasm and fetch the model at the same time.
    const [, modelBytes] = await Promise.all([
      init().then(() => (demo.wasmReadyMs = performance.now() - t0)),
      fetch('digits_cnn.morsel').then((r) => {
        if (!r.ok) throw new Error(`digits_cnn.morsel: HTTP ${r.status}`);
        return r.arrayBuffer();
      }),
    ]);
    digits = Model.load(new Uint8Array(modelBytes));
    demo.loadMs = performance.now() - t0;
    demo.memoryBytes = wasmMemoryBytes();
    demo.ready = true;
    $('status').dataset.state = 'ready';
    $('status').textContent = `ready in ${ms(demo.loadMs)} (fetch → wasm compiled → model loaded) · wasm memory ${mb(demo.memoryBytes)}`;
    $('footer').textContent = `morsel-wasm ${version()} · this page fetches nothing beyond its own origin`;
  } catch (e) {
    $('status').dataset.state = 'error';
    $('status').textContent = `could not start: ${e.message}`;
    throw e;
  }
}

// ---- drawing pad --------------------------------------------------------

const pad = $('pad');
const padCtx = pad.getContext('2d');
const small = new OffscreenCanvas(32, 32);
const smallCtx = small.getContext('2d', { willReadFrequently: true });
const preview = $('input-preview').getContext('2d');
/** Pen width in the 32×32 bitmap (`?pen=N` overrides): 6 reads all ten test strokes right; 3-4 misses 1 and 7. */
const PEN_32 = Number(new URLSearchParams(location.search).get('pen') ?? 6);

function clearPad() {
  padCtx.fillStyle = '#000';
  padCtx.fillRect(0, 0, pad.width, pad.height);
  preview.fillStyle = '#000';
  preview.fillRect(0, 0, 96, 96);
  strokes = [];
  $('prediction').textContent = '–';
  $('prediction').dataset.digit = '';
  $('confidence').textContent = '';
  $('draw-timing').textContent = '';
  renderProbs(null);
}

/** The strokes drawn since the last clear, in pad pixels: [[x, y], ...] each. */
let strokes = [];

/**
 * The drawing as the model's input, made the way scikit-learn's 8×8 digits
 * were: a size-normalised 32×32 bitmap whose "on" pixels are counted in
 * each 4×4 block (0..16), divided by 16. The strokes are redrawn into the
 * 32×32 box (aspect kept, centred) with a fixed pen, so the result does not
 * depend on how large or with how thick a pen the digit was drawn.
 */
function strokesToInput() {
  const pts = strokes.flat();
  if (pts.length === 0) return null;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), y0 = Math.min(...ys);
  const bw = Math.max(...xs) - x0, bh = Math.max(...ys) - y0;
  const box = 32 - PEN_32;
  const s = box / Math.max(bw, bh, pad.width / 8);
  const ox = (32 - bw * s) / 2 - x0 * s, oy = (32 - bh * s) / 2 - y0 * s;
  smallCtx.fillStyle = '#000';
  smallCtx.fillRect(0, 0, 32, 32);
  smallCtx.strokeStyle = '#fff';
  smallCtx.lineWidth = PEN_32;
  smallCtx.lineCap = 'round';
  smallCtx.lineJoin = 'round';
  for (const stroke of strokes) {
    smallCtx.beginPath();
    smallCtx.moveTo(stroke[0][0] * s + ox, stroke[0][1] * s + oy);
    for (const [x, y] of stroke) smallCtx.lineTo(x * s + ox + 1e-3, y * s + oy);
    smallCtx.stroke();
  }
  const bits = smallCtx.getImageData(0, 0, 32, 32).data;
  const x = new Float32Array(64);
  for (let py = 0; py < 32; py++) {
    for (let px = 0; px < 32; px++) {
      if (bits[(py * 32 + px) * 4] > 127) x[(py >> 2) * 8 + (px >> 2)] += 1 / 16;
    }
  }
  return x;
}

function renderProbs(probs) {
  const list = $('probs');
  list.replaceChildren(
    ...Array.from({ length: 10 }, (_, d) => {
      const li = document.createElement('li');
      const p = probs ? probs[d] : 0;
      li.innerHTML = `<span class="digit">${d}</span><span class="bar"><span style="width:${(p * 100).toFixed(1)}%"></span></span><span class="pct">${probs ? (p * 100).toFixed(1) + '%' : ''}</span>`;
      return li;
    }),
  );
}

function classify() {
  if (!digits) return;
  const x = strokesToInput();
  if (!x) return;
  for (let i = 0; i < 64; i++) {
    const v = Math.round(x[i] * 255);
    preview.fillStyle = `rgb(${v},${v},${v})`;
    preview.fillRect((i % 8) * 12, (i >> 3) * 12, 12, 12);
  }
  const t0 = performance.now();
  const { logits } = digits.run({ x: { data: x, shape: [1, 1, 8, 8] } });
  const dt = performance.now() - t0;
  const z = Array.from(logits.data);
  const top = Math.max(...z);
  const e = z.map((v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  const probs = e.map((v) => v / sum);
  const digit = z.indexOf(top);
  $('prediction').textContent = String(digit);
  $('prediction').dataset.digit = String(digit);
  $('confidence').textContent = `${(probs[digit] * 100).toFixed(1)}% sure`;
  $('draw-timing').textContent = `inference ${ms(dt)}`;
  renderProbs(probs);
  demo.lastInput = x;
  demo.lastLogits = z;
}

let drawing = false;
let queued = false;
function at(ev) {
  const r = pad.getBoundingClientRect();
  return [((ev.clientX - r.left) * pad.width) / r.width, ((ev.clientY - r.top) * pad.height) / r.height];
}
function scheduleClassify() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    classify();
  });
}
pad.addEventListener('pointerdown', (ev) => {
  drawing = true;
  pad.setPointerCapture(ev.pointerId);
  const [x, y] = at(ev);
  strokes.push([[x, y]]);
  padCtx.beginPath();
  padCtx.moveTo(x, y);
  padCtx.lineTo(x + 0.01, y);
  padCtx.stroke();
  scheduleClassify();
});
pad.addEventListener('pointermove', (ev) => {
  if (!drawing) return;
  const [x, y] = at(ev);
  strokes[strokes.length - 1].push([x, y]);
  padCtx.lineTo(x, y);
  padCtx.stroke();
  scheduleClassify();
});
const stop = () => {
  drawing = false;
  scheduleClassify();
};
pad.addEventListener('pointerup', stop);
pad.addEventListener('pointercancel', stop);
padCtx.strokeStyle = '#fff';
padCtx.lineWidth = 22;
padCtx.lineCap = 'round';
padCtx.lineJoin = 'round';
$('clear').addEventListener('click', clearPad);
clearPad();

// ---- any .morsel file ---------------------------------------------------

let fileModel = null;

const shapeStr = (shape) => `[${shape.join(', ')}]`;
function fillRows(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement('tr');
      for (const c of cells) {
        const td = document.createElement('td');
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    }),
  );
}

$('file').addEventListener('change', async () => {
  const file = $('file').files[0];
  if (!file) return;
  fileModel?.free();
  fileModel = null;
  $('file-info').hidden = true;
  $('file-error').hidden = true;
  $('bench-result').textContent = '';
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const t0 = performance.now();
    fileModel = Model.load(bytes);
    const dt = performance.now() - t0;
    const io = (vs) => vs.map((v) => [v.name, v.dtype, shapeStr(v.shape)]);
    fillRows($('file-inputs').tBodies[0], io(fileModel.inputs));
    fillRows($('file-outputs').tBodies[0], io(fileModel.outputs));
    fillRows($('file-metadata').tBodies[0], Object.entries(fileModel.metadata));
    $('file-summary').textContent = `${file.name}: ${kib(file.size)}, loaded in ${ms(dt)}`;
    $('file-info').hidden = false;
  } catch (e) {
    $('file-error').textContent = `${file.name}: ${e.message}`;
    $('file-error').hidden = false;
  }
});

/** Random data for one input, symbolic dims set to `sym`. */
function randomFeed(info, sym) {
  const shape = info.shape.map((d) => (typeof d === 'number' ? d : sym));
  const n = shape.reduce((a, b) => a * b, 1);
  const ints = (Ctor, lo, hi) => Ctor.from({ length: n }, () => lo + Math.floor(Math.random() * (hi - lo)));
  let data;
  switch (info.dtype) {
    case 'i32': data = ints(Int32Array, 0, 10); break;
    case 'i64': data = BigInt64Array.from({ length: n }, () => BigInt(Math.floor(Math.random() * 10))); break;
    case 'i8': data = ints(Int8Array, -128, 128); break;
    case 'u8': data = ints(Uint8Array, 0, 256); break;
    case 'bool': data = ints(Uint8Array, 0, 2); break;
    default: data = Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
  }
  return { data, shape };
}

$('bench').addEventListener('click', () => {
  if (!fileModel) return;
  const out = $('bench-result');
  try {
    const sym = Math.max(1, Number($('sym').value) || 1);
    const feeds = Object.fromEntries(fileModel.inputs.map((i) => [i.name, randomFeed(i, sym)]));
    const t0 = performance.now();
    const result = fileModel.run(feeds); // plans for these shapes
    const first = performance.now() - t0;
    const times = [];
    for (let i = 0; i < 20; i++) {
      const s = performance.now();
      fileModel.run(feeds);
      times.push(performance.now() - s);
    }
    times.sort((a, b) => a - b);
    const outs = Object.entries(result).map(([k, v]) => `  ${k}: ${v.dtype} ${shapeStr(v.shape)}`);
    out.textContent = [
      `first run ${ms(first)} (plans memory for these shapes)`,
      `20 runs: median ${ms((times[9] + times[10]) / 2)}, min ${ms(times[0])}`,
      `outputs:`,
      ...outs,
      `session buffers ${kib(fileModel.sessionBytes)} · wasm memory ${mb(wasmMemoryBytes())}`,
    ].join('\n');
  } catch (e) {
    out.textContent = `run failed: ${e.message}`;
  }
});

start();
