// The Node build of the package (target/wasm-pkg/node): load, describe, run
// the digits CNN on its whole test split against native Morsel, errors, and
// free() really giving memory back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { PKG, DIGITS_MORSEL, digitsTest, nativeDigitsLogits } from './common.mjs';
import { maxAbsDiff, argmaxRows } from './npy.mjs';

const require = createRequire(import.meta.url);
const pkgJson = JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8'));
const morsel = require(path.join(PKG, pkgJson.exports['.'].node.default));
const { Model, version, wasmMemoryBytes } = morsel;
const bytes = fs.readFileSync(DIGITS_MORSEL);

test('package.json points at files that exist', () => {
  const targets = JSON.stringify(pkgJson.exports).match(/"\.\/[^"]+"/g).map((s) => JSON.parse(s));
  for (const t of [...targets, pkgJson.main, pkgJson.module, pkgJson.types]) {
    assert.ok(fs.existsSync(path.join(PKG, t)), `${t} missing`);
  }
  assert.equal(version(), pkgJson.version);
});

test('describes the digits model', () => {
  const m = Model.load(bytes);
  try {
    assert.deepEqual(m.inputs, [{ name: 'x', dtype: 'f32', shape: ['N', 1, 8, 8] }]);
    assert.equal(m.outputs[0].name, 'logits');
    assert.equal(m.outputs[0].shape[1], 10);
    assert.match(m.metadata.producer, /^morsel-compress /);
    assert.equal(m.metadata.source_name, 'digits_cnn.onnx');
  } finally {
    m.free();
  }
});

test('whole digits test split equals native Morsel (max |diff| <= 1e-5; bit-identical with MORSEL_ISA=baseline)', () => {
  const { x, y } = digitsTest();
  const native = nativeDigitsLogits();
  const m = Model.load(bytes);
  const out = m.run({ x: { data: x.data, shape: x.shape } });
  m.free();
  assert.equal(out.logits.dtype, 'f32');
  assert.deepEqual(out.logits.shape, [450, 10]);
  assert.ok(out.logits.data instanceof Float32Array);
  const diff = maxAbsDiff(out.logits.data, native.data);
  const pred = argmaxRows(out.logits.data, 10);
  const correct = pred.filter((p, i) => p === y[i]).length;
  console.log(`node: 450 digits, max |diff| vs native ${diff.toExponential(3)}, accuracy ${correct}/450`);
  assert.ok(diff <= 1e-5, `max |diff| ${diff}`);
  assert.deepEqual(pred, argmaxRows(native.data, 10));
  // Without FMA natively too, the wasm build's arithmetic: the same bits.
  const baseline = nativeDigitsLogits({ baseline: true });
  const same = Buffer.compare(Buffer.from(out.logits.data.buffer, out.logits.data.byteOffset, out.logits.data.byteLength),
    Buffer.from(baseline.data.buffer, baseline.data.byteOffset, baseline.data.byteLength)) === 0;
  assert.ok(same, `not bit-identical to native MORSEL_ISA=baseline (max |diff| ${maxAbsDiff(out.logits.data, baseline.data)})`);
});

test('bad files and bad inputs throw MorselError with the runtime message', () => {
  const load = (b) => () => Model.load(b);
  for (const b of [new Uint8Array(0), new TextEncoder().encode('hello'), bytes.subarray(0, 1000)]) {
    assert.throws(load(b), (e) => e instanceof Error && e.name === 'MorselError' && e.kind === 'format' && /^invalid \.morsel file/.test(e.message));
  }
  const flipped = Uint8Array.from(bytes);
  flipped[80000] ^= 1; // inside the weights: the DATA section CRC catches it
  assert.throws(load(flipped), { name: 'MorselError', kind: 'format' });

  const m = Model.load(bytes);
  const x = new Float32Array(64);
  const bad = [
    [{ x: { data: x, shape: [1, 8, 8] } }, /input 'x' must have shape \[N, 1, 8, 8\], got \[1, 8, 8\]/],
    [{ x: { data: new Int32Array(64), shape: [1, 1, 8, 8] } }, /input 'x' must be f32, got i32/],
    [{ x: { data: x, shape: [2, 1, 8, 8] } }, /data has 64 elements but shape \[2, 1, 8, 8\] needs 128/],
    [{ x: { data: [0, 1], shape: [1, 1, 8, 8] } }, /data must be a Float32Array/],
    [{ x: { data: x } }, /shape must be an array of non-negative integers/],
    [{ y: { data: x, shape: [1, 1, 8, 8] } }, /the model has no input 'y' \(its inputs: x\)/],
    [{}, /missing input 'x' \(f32 \[N, 1, 8, 8\]\)/],
    [null, /run\(\) takes an object/],
  ];
  for (const [feeds, msg] of bad) {
    assert.throws(() => m.run(feeds), (e) => e instanceof Error && e.kind === 'input' && msg.test(e.message));
  }
  // One good run: the session then holds the planned buffers.
  m.run({ x: { data: x, shape: [1, 1, 8, 8] } });
  const held = m.sessionBytes;
  m.memoryLimit = 1024;
  assert.equal(m.memoryLimit, 1024);
  // The error names what the plan needs: more than the budget, no more than a working session holds.
  assert.throws(() => m.run({ x: { data: x, shape: [1, 1, 8, 8] } }), (e) => {
    const need = Number(/needs (\d+) bytes of activation memory, the budget is 1024 bytes/.exec(e.message)?.[1]);
    return e.kind === 'memory' && need > 1024 && need <= held;
  });
  m.memoryLimit = undefined;
  assert.equal(m.memoryLimit, undefined);
  // Still usable after every error.
  assert.deepEqual(m.run({ x: { data: x, shape: [1, 1, 8, 8] } }).logits.shape, [1, 10]);
  m.free();
  assert.throws(() => m.run({ x: { data: x, shape: [1, 1, 8, 8] } }), Error);
});

test('free() gives the memory back: 200 load/run/free cycles do not grow wasm memory', () => {
  const x = { data: new Float32Array(64 * 32), shape: [32, 1, 8, 8] };
  const cycle = () => {
    const m = Model.load(bytes);
    m.run({ x });
    m.free();
  };
  for (let i = 0; i < 5; i++) cycle();
  const before = wasmMemoryBytes();
  for (let i = 0; i < 200; i++) cycle();
  const after = wasmMemoryBytes();
  console.log(`node: wasm memory ${before} -> ${after} bytes over 200 load/run/free cycles`);
  assert.equal(after, before);
});

test('the Node build imports as ESM too, and the bundler build runs under wasm ESM integration', async () => {
  const esm = await import(pathToFileURL(path.join(PKG, 'node', 'morsel_wasm.js')).href);
  assert.equal(typeof esm.Model.load, 'function');
  // What a bundler does with `import * as wasm from './morsel_wasm_bg.wasm'`,
  // done by Node itself (child process: the flag is per process).
  const script = `
    import { Model } from ${JSON.stringify(pathToFileURL(path.join(PKG, pkgJson.exports['.'].default)).href)};
    import fs from 'node:fs';
    const m = Model.load(fs.readFileSync(${JSON.stringify(DIGITS_MORSEL)}));
    const out = m.run({ x: { data: new Float32Array(64), shape: [1, 1, 8, 8] } });
    console.log(JSON.stringify(out.logits.shape));`;
  const out = execFileSync(process.execPath, ['--no-warnings', '--experimental-wasm-modules', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(out.trim(), '[1,10]');
});
