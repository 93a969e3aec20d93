// End to end in headless Chromium (Debian's, driven by playwright-core):
// the demo page classifies digits drawn with the mouse, opens files through
// its picker and survives a bad one; on the bench page, Morsel's outputs on
// the digits test split equal native Morsel's, and Morsel's load time,
// memory and latency are measured next to onnxruntime-web's (wasm backend,
// one thread), on the same page and inputs. Nothing may leave the origin.
//
// Writes target/wasm-test/{demo.png,bench.json}; with
// MORSEL_UPDATE_SCREENSHOT=1 also examples/web/screenshot.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from './server.mjs';
import { launch } from './browser.mjs';
import { ROOT, OUT, DIGITS_MORSEL, digitsTest, nativeDigitsLogits, median } from './common.mjs';
import { maxAbsDiff, argmaxRows } from './npy.mjs';
import { DIGIT_STROKES } from './strokes.mjs';


let server, chrome;

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  server = await serve();
  chrome = await launch(server);
});

after(async () => {
  await chrome?.close();
  await server?.close();
});

const newPage = () => chrome.newPage({ viewport: { width: 1040, height: 860 }, deviceScaleFactor: 1 });

async function draw(page, strokes) {
  const box = await page.locator('#pad').boundingBox();
  for (const stroke of strokes) {
    const [[x0, y0], ...rest] = stroke;
    await page.mouse.move(box.x + x0 * box.width, box.y + y0 * box.height);
    await page.mouse.down();
    for (const [x, y] of rest) await page.mouse.move(box.x + x * box.width, box.y + y * box.height, { steps: 8 });
    await page.mouse.up();
  }
}

async function drawAndRead(page, digit) {
  await page.click('#clear');
  await draw(page, DIGIT_STROKES[digit]);
  await page.waitForFunction(() => document.querySelector('#prediction').dataset.digit !== '');
  // A frame for the last classification after mouse-up.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  return Number(await page.locator('#prediction').getAttribute('data-digit'));
}

test('demo page: draw digits, read the predictions, screenshot', async () => {
  const page = await newPage();
  await page.goto(server.url + '/');
  await page.waitForSelector('#status[data-state="ready"]', { timeout: 30000 });
  const demo = await page.evaluate(() => window.morselDemo);
  console.log(`demo: ready ${demo.loadMs.toFixed(1)} ms after start (wasm compiled at ${demo.wasmReadyMs.toFixed(1)} ms), wasm memory ${demo.memoryBytes} bytes`);
  // The drawing-to-8×8 step is a heuristic (the model itself is 99% right on
  // the test split): all ten strokes read right today; allow one miss.
  const said = [];
  for (let digit = 0; digit < 10; digit++) said.push(await drawAndRead(page, digit));
  console.log(`demo: drew 0..9, the page says ${said.join(' ')}`);
  assert.ok(said.filter((d, i) => d === i).length >= 9, `drew 0..9, read ${said}`);
  // The screenshot shows both halves: a digit being read, and a file opened and timed.
  await drawAndRead(page, 4);
  await page.setInputFiles('#file', DIGITS_MORSEL);
  await page.waitForSelector('#file-info:not([hidden])');
  await page.click('#bench');
  await page.waitForFunction(() => document.querySelector('#bench-result').textContent !== '');
  const shot = path.join(OUT, 'demo.png');
  await page.screenshot({ path: shot, fullPage: true });
  if (process.env.MORSEL_UPDATE_SCREENSHOT === '1') fs.copyFileSync(shot, path.join(ROOT, 'examples', 'web', 'screenshot.png'));
  await page.context().close();
});

test('demo page: the file picker describes a .morsel, times it, and survives a bad file', async () => {
  const page = await newPage();
  await page.goto(server.url + '/');
  await page.waitForSelector('#status[data-state="ready"]', { timeout: 30000 });
  await page.setInputFiles('#file', DIGITS_MORSEL);
  await page.waitForSelector('#file-info:not([hidden])');
  assert.deepEqual(await page.locator('#file-inputs tbody td').allTextContents(), ['x', 'f32', '[N, 1, 8, 8]']);
  assert.equal(await page.locator('#file-outputs tbody td').first().textContent(), 'logits');
  assert.match(await page.locator('#file-metadata').textContent(), /producermorsel-compress/);
  await page.fill('#sym', '4');
  await page.click('#bench');
  const result = await page.locator('#bench-result').textContent();
  console.log(`demo file picker:\n${result}`);
  assert.match(result, /20 runs: median/);
  assert.match(result, /logits: f32 \[4, 10\]/);

  const bad = fs.readFileSync(DIGITS_MORSEL).subarray(0, 5000);
  await page.setInputFiles('#file', { name: 'truncated.morsel', mimeType: 'application/octet-stream', buffer: bad });
  await page.waitForSelector('#file-error:not([hidden])');
  assert.match(await page.locator('#file-error').textContent(), /^truncated\.morsel: invalid \.morsel file/);
  // The page still works.
  assert.equal(await drawAndRead(page, 7), 7);
  await page.context().close();
});

test('bench page: Chromium outputs equal native Morsel; load, memory, latency next to onnxruntime-web', async () => {
  // Load time, fetch -> ready, each in a fresh page: median of 5.
  const loads = { morsel: [], ort: [] };
  for (let i = 0; i < 5; i++) {
    const p = await newPage();
    await p.goto(server.url + '/bench/');
    loads.morsel.push((await p.evaluate(() => window.bench.loadMorsel())).ms);
    loads.ort.push((await p.evaluate(() => window.bench.loadOrt())).ms);
    await p.context().close();
  }
  const page = await newPage();
  await page.goto(server.url + '/bench/');
  const morselLoad = await page.evaluate(() => window.bench.loadMorsel());
  await page.evaluate(() => window.bench.loadOrt());
  const { x, y } = digitsTest();
  const xs = Array.from(x.data);
  const native = nativeDigitsLogits();
  const out = await page.evaluate(([xs, n]) => window.bench.outputs(xs, n), [xs, 450]);
  const diffNative = maxAbsDiff(out.morsel, native.data);
  const diffOrt = maxAbsDiff(out.morsel, out.ort);
  const pred = argmaxRows(out.morsel, 10);
  const correct = pred.filter((p, i) => p === y[i]).length;

  const lat1 = await page.evaluate(([xs]) => window.bench.latency(xs, 1, 50), [xs]);
  const lat450 = await page.evaluate(([xs]) => window.bench.latency(xs, 450, 20), [xs]);
  const info = await page.evaluate(() => window.bench.info());
  const size = JSON.parse(fs.readFileSync(path.join(OUT, 'size.json'), 'utf8'));
  const report = { chromium: info.userAgent, crossOriginIsolated: info.crossOriginIsolated, ortWeb: info.ortVersion,
    wasmSize: size, loadMs: { morsel: median(loads.morsel), ort: median(loads.ort), all: loads }, wasmMemoryBytesAfterLoad: morselLoad.wasmMemoryBytes,
    digits: { samples: 450, fusedMultiplyAdd: info.fusedMultiplyAdd, maxAbsDiffVsNative: diffNative, maxAbsDiffVsOrtWeb: diffOrt, accuracy: correct / 450 },
    latency: [lat1, lat450] };
  fs.writeFileSync(path.join(OUT, 'bench.json'), JSON.stringify(report, null, 2) + '\n');
  const f = (v) => v.toFixed(3);
  console.log([
    `browser (${info.userAgent.match(/Chrome\/[\d.]+/)?.[0]}, crossOriginIsolated=${info.crossOriginIsolated}), onnxruntime-web ${info.ortVersion}`,
    `  .wasm shipped (a page loads one): simd128 raw ${size.raw} B, gzip -9 ${size.gzip9} B; relaxed SIMD raw ${size.relaxed?.raw} B, gzip -9 ${size.relaxed?.gzip9} B`,
    `  digits test split (450): max |diff| vs native Morsel ${diffNative.toExponential(3)} (fused multiply-add ${info.fusedMultiplyAdd}), vs onnxruntime-web ${diffOrt.toExponential(3)}, accuracy ${correct}/450`,
    `  load (fetch -> ready, median of 5 fresh pages): Morsel ${f(median(loads.morsel))} ms, onnxruntime-web ${f(median(loads.ort))} ms`,
    `  wasm memory: ${morselLoad.wasmMemoryBytes} B after load, ${lat450.wasmMemoryBytes} B after batch 450 (session buffers ${lat450.sessionBytes} B)`,
    ...[lat1, lat450].map((l) => `  latency batch ${l.batch} (median of ${l.morsel.runs}): Morsel ${f(l.morsel.medianMs)} ms, onnxruntime-web ${f(l.ort.medianMs)} ms, Morsel/ort ${l.ratio.toFixed(2)}`),
  ].join('\n'));
  assert.ok(diffNative <= 1e-5, `max |diff| vs native ${diffNative}`);
  // With fused multiply-adds the page computes what native FMA code does
  // (see models.test.mjs): the same bits.
  if (info.fusedMultiplyAdd) {
    assert.ok(Buffer.compare(Buffer.from(new Float32Array(out.morsel).buffer), Buffer.from(native.data.buffer, native.data.byteOffset, native.data.byteLength)) === 0,
      `fused multiply-adds, but not bit-identical to native (max |diff| ${diffNative})`);
  }
  assert.deepEqual(pred, argmaxRows(native.data, 10));
  assert.ok(lat1.morsel.runs >= 20 && lat450.morsel.runs >= 20);
  await page.context().close();
});

test('no request left the page origin, no page errors', () => {
  assert.deepEqual(chrome.external, []);
  assert.deepEqual(chrome.pageErrors, []);
});
