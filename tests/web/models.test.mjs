// The real models in headless Chromium (issue 7): MiniLM (batch 1 x 128, f32
// and dynamic int8), PP-OCRv4 det (1x3x640x640) and PP-OCR cls (1x3x48x192).
// On tests/web/bench/models.html, one page per case: (a) Morsel's outputs in
// Chromium against native Morsel's (`morsel run` on the same .morsel and .npy
// files, made by `make wasm-models`): bit-identical, f32 and int8, (b) Morsel's latency next to
// onnxruntime-web's (wasm backend, one thread, same page and inputs; int8
// MiniLM against ONNX Runtime's own quantize_dynamic model), printed as a
// table with ratios and written to target/wasm-test/models.json. Speed is
// reported, never asserted (a shared, noisy machine). Nothing may leave the
// origin; no page errors.
//
// MORSEL_WEB_RUNS (default 20) sets the timed runs per side and case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from './server.mjs';
import { launch } from './browser.mjs';
import { ROOT, OUT } from './common.mjs';
import { readNpy, maxAbsDiff } from './npy.mjs';

const MODELS = path.join(ROOT, 'target', 'web-models');
const RUNS = Number(process.env.MORSEL_WEB_RUNS ?? 20);

// Which native run the page must equal bit for bit depends on one thing:
// whether a multiply-add rounds once or twice. Native x86-64 runs its
// sgemm and vectorised math (exp, erf, GELU) with AVX2+FMA, one rounding
// per multiply-add (`ref/`); with MORSEL_ISA=baseline it runs SSE2 loops
// and portable tiles, two roundings (`ref_baseline/`). The relaxed-SIMD
// build uses `f32x4.relaxed_madd` where the engine fuses it (Chromium on
// x86 with FMA: `fusedMultiplyAdd()` is true), with each element's
// operations in the same order as the native FMA copies, so it must equal
// `ref/`; the simd128 build (or an engine that does not fuse) must equal
// `ref_baseline/`. Everything else (integer kernels, row quantization,
// layer norm, softmax sums) has the same bits on every build.
//
// The issue's bars against native (`ref/`): 1e-5 for f32, bit-identical for
// int8. Where the page does not fuse, int8 MiniLM cannot meet the second:
// the last-bit differences in the f32 ops between the int8 matmuls move
// some activations across a step of the next QMatMul's run-time row
// quantization, which grows over six layers (measured 2026-11-26, simd128:
// 0.156 on last_hidden_state, 3% of its max |value|, 4.9e-3 on the
// unit-norm sentence_embedding, equally close to f32 as native int8 is).
// Then "ABOVE THE BAR" is printed with the number, and the looser `bound`
// below is asserted, to keep it from growing.
const TOLERANCE = {
  minilm: { default: { bar: 1e-5, bound: 1e-5 } },
  minilm_int8: {
    last_hidden_state: { bar: 0, bound: 0.3 },
    sentence_embedding: { bar: 0, bound: 1e-2 },
  },
  det: { default: { bar: 1e-5, bound: 1e-4 } },
  cls: { default: { bar: 1e-5, bound: 1e-5 } },
};

const LABELS = {
  minilm: 'MiniLM f32 (1x128)',
  minilm_int8: 'MiniLM int8 (1x128)',
  det: 'PP-OCRv4 det (1x3x640x640)',
  cls: 'PP-OCR cls (1x3x48x192)',
};

let server, chrome;
const results = {};

before(async () => {
  for (const c of Object.keys(LABELS)) {
    for (const ref of ['ref', 'ref_baseline']) {
      if (!fs.existsSync(path.join(MODELS, ref, c, '.done'))) throw new Error(`${MODELS}/${ref}/${c} missing: run \`make wasm-models\``);
    }
  }
  fs.mkdirSync(OUT, { recursive: true });
  server = await serve();
  chrome = await launch(server);
});

after(async () => {
  await chrome?.close();
  await server?.close();
});

const newPage = () => chrome.newPage();

function decode(o) {
  const buf = Buffer.from(o.b64, 'base64');
  const Ctor = { f32: Float32Array, float32: Float32Array, i64: BigInt64Array, int64: BigInt64Array, i32: Int32Array, int32: Int32Array }[o.dtype];
  if (!Ctor) throw new Error(`dtype ${o.dtype}`);
  const data = new Ctor(buf.length / Ctor.BYTES_PER_ELEMENT);
  new Uint8Array(data.buffer).set(buf);
  return { dtype: o.dtype, shape: o.shape, data };
}

/** Elements whose f32 bit patterns differ. */
function bitDiffs(a, b) {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) n++;
  return n;
}

/** max |a - b| / max |b|: how large the difference is next to the values. */
function relToMax(a, b, diff) {
  let m = 0;
  for (const v of b) m = Math.max(m, Math.abs(v));
  return m ? diff / m : diff;
}

for (const name of Object.keys(LABELS)) {
  test(`${LABELS[name]}: Chromium outputs vs native Morsel; latency next to onnxruntime-web`, async () => {
    const page = await newPage();
    await page.goto(server.url + '/bench/models.html');
    const loaded = await page.evaluate((n) => window.models.load(n), name);
    const outs = await page.evaluate(() => window.models.outputs());
    const refDir = path.join(MODELS, 'ref', name);
    const refNames = fs.readdirSync(refDir).filter((f) => f.endsWith('.npy')).map((f) => f.slice(0, -4)).sort();
    assert.deepEqual(Object.keys(outs.morsel).sort(), refNames, 'output names');
    const compare = {};
    for (const out of refNames) {
      const native = readNpy(path.join(refDir, `${out}.npy`));
      const web = decode(outs.morsel[out]);
      assert.deepEqual(web.shape, native.shape, `${out} shape`);
      const diff = maxAbsDiff(web.data, native.data);
      const bits = bitDiffs(web.data, native.data);
      const ort = outs.ort[out] ? decode(outs.ort[out]) : null;
      const baseline = readNpy(path.join(MODELS, 'ref_baseline', name, `${out}.npy`));
      compare[out] = {
        bitsDifferVsNativeBaseline: bitDiffs(web.data, baseline.data),
        maxAbsDiffVsNativeBaseline: maxAbsDiff(web.data, baseline.data),
        shape: web.shape,
        maxAbsDiffVsNative: diff,
        relToMaxAbs: relToMax(web.data, native.data, diff),
        bitsDifferVsNative: bits,
        elements: web.data.length,
        maxAbsDiffVsOrtWeb: ort ? maxAbsDiff(web.data, ort.data) : null,
      };
    }
    const lat = await page.evaluate(([r, w]) => window.models.latency(r, w), [RUNS, name === 'det' ? 2 : 3]);
    const info = await page.evaluate(() => window.models.info());
    results[name] = { label: LABELS[name], load: loaded, outputs: compare, latency: lat, info };
    await page.context().close();

    for (const [out, c] of Object.entries(compare)) {
      console.log(`${name} ${out}: vs native with MORSEL_ISA=baseline, ${c.bitsDifferVsNativeBaseline}/${c.elements} elements differ in bits ` +
        `(max |diff| ${c.maxAbsDiffVsNativeBaseline.toExponential(3)})`);
      console.log(`${name} ${out} ${JSON.stringify(c.shape)}: max |diff| vs native ${c.maxAbsDiffVsNative.toExponential(3)} ` +
        `(${(c.relToMaxAbs).toExponential(2)} of max |value|), ${c.bitsDifferVsNative}/${c.elements} elements differ in bits; ` +
        `vs onnxruntime-web ${c.maxAbsDiffVsOrtWeb?.toExponential(3)}`);
    }
    console.log(`${name}: Morsel ${lat.morsel.medianMs.toFixed(2)} ms, onnxruntime-web ${lat.ort.medianMs.toFixed(2)} ms (medians of ${lat.morsel.runs}), Morsel/ort ${lat.ratio.toFixed(2)}`);
    // int8: how far each side is from native f32 Morsel (which one drifts).
    if (name.endsWith('_int8')) {
      for (const out of refNames) {
        const f32 = readNpy(path.join(MODELS, 'ref', name.replace(/_int8$/, ''), `${out}.npy`)).data;
        const nat = readNpy(path.join(refDir, `${out}.npy`)).data;
        const web = decode(outs.morsel[out]).data;
        compare[out].maxAbsDiffVsF32 = { native: maxAbsDiff(nat, f32), chromium: maxAbsDiff(web, f32) };
        console.log(`${name} ${out}: max |diff| vs native f32 Morsel: native int8 ${maxAbsDiff(nat, f32).toExponential(3)}, Chromium int8 ${maxAbsDiff(web, f32).toExponential(3)}`);
      }
    }
    const tol = TOLERANCE[name];
    const fused = info.fusedMultiplyAdd;
    for (const [out, c] of Object.entries(compare)) {
      if (fused) {
        assert.equal(c.bitsDifferVsNative, 0,
          `${name} ${out}: fused multiply-adds, but not bit-identical to native (max |diff| ${c.maxAbsDiffVsNative})`);
      } else {
        assert.equal(c.bitsDifferVsNativeBaseline, 0,
          `${name} ${out}: not bit-identical to native MORSEL_ISA=baseline (max |diff| ${c.maxAbsDiffVsNativeBaseline})`);
      }
      const { bar, bound } = tol[out] ?? tol.default;
      c.bar = bar;
      c.bound = bound;
      c.meetsBar = bar === 0 ? c.bitsDifferVsNative === 0 : c.maxAbsDiffVsNative <= bar;
      if (!c.meetsBar) {
        console.log(`${name} ${out}: ABOVE THE BAR: ${bar === 0 ? 'not bit-identical to native' : `max |diff| > ${bar}`} ` +
          `(max |diff| ${c.maxAbsDiffVsNative.toExponential(3)}); asserting the documented bound ${bound}`);
      }
      if (bound === 0) assert.equal(c.bitsDifferVsNative, 0, `${name} ${out}: not bit-identical to native (max |diff| ${c.maxAbsDiffVsNative})`);
      else assert.ok(c.maxAbsDiffVsNative <= bound, `${name} ${out}: max |diff| vs native ${c.maxAbsDiffVsNative} > ${bound}`);
    }
    assert.ok(lat.morsel.runs >= 20 && lat.ort.runs >= 20 || RUNS < 20);
  });
}

test('report: latency table (Morsel / onnxruntime-web), target/wasm-test/models.json', () => {
  const names = Object.keys(LABELS).filter((n) => results[n]);
  const info = results[names[0]]?.info ?? {};
  let size = null;
  try { size = JSON.parse(fs.readFileSync(path.join(OUT, 'size.json'), 'utf8')); } catch { /* wasm/build.sh writes it */ }
  const rows = names.map((n) => {
    const r = results[n];
    return [r.label, r.latency.morsel.medianMs.toFixed(2), r.latency.ort.medianMs.toFixed(2), r.latency.ratio.toFixed(2), String(r.latency.morsel.runs)];
  });
  const head = ['model', 'Morsel ms', 'ort-web ms', 'Morsel/ort', 'runs'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  console.log([
    `headless Chromium (${info.userAgent?.match(/Chrome\/[\d.]+/)?.[0]}, crossOriginIsolated=${info.crossOriginIsolated}), onnxruntime-web ${info.ortVersion} (wasm, 1 thread), Morsel int8 kernel ${info.int8Kernel}, fused multiply-add ${info.fusedMultiplyAdd}`,
    `Morsel .wasm: simd128 ${size ? `${size.raw} B raw, ${size.gzip9} B gzip -9` : '?'}; relaxed SIMD ${size?.relaxed ? `${size.relaxed.raw} B raw, ${size.relaxed.gzip9} B gzip -9` : '?'} (the page loads one)`,
    `median latency, runs alternating Morsel / onnxruntime-web:`,
    line(head), ...rows.map(line),
  ].join('\n'));
  fs.writeFileSync(path.join(OUT, 'models.json'), JSON.stringify({ chromium: info.userAgent, crossOriginIsolated: info.crossOriginIsolated,
    ortWeb: info.ortVersion, int8Kernel: info.int8Kernel, fusedMultiplyAdd: info.fusedMultiplyAdd, wasmSize: size, runs: RUNS, cases: results }, null, 2) + '\n');
  assert.equal(names.length, Object.keys(LABELS).length, 'every case ran');
});

test('no request left the page origin, no page errors', () => {
  assert.deepEqual(chrome.external, []);
  assert.deepEqual(chrome.pageErrors, []);
});
