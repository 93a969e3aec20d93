// Paths and the native reference shared by the Node and browser tests.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { ROOT } from './server.mjs';
import { readNpy, readNpz, writeNpyF32 } from './npy.mjs';

export { ROOT };
export const PKG = process.env.MORSEL_WASM_PKG ?? path.join(ROOT, 'target', 'wasm-pkg');
export const DIGITS_MORSEL = path.join(ROOT, 'target', 'digits_cnn.morsel');
export const OUT = path.join(ROOT, 'target', 'wasm-test');
// The native CLI: $MORSEL_CLI, else the release build, else the debug one
// (same numerics: Rust never contracts or reorders float math by opt-level).
const MORSEL_CLI = process.env.MORSEL_CLI ??
  ['release', 'debug'].map((p) => path.join(ROOT, 'target', p, 'morsel')).find((f) => fs.existsSync(f));

/** The digits test split: x [450,1,8,8] f32, y [450] labels. */
export function digitsTest() {
  const { x, y } = readNpz(path.join(ROOT, 'examples', 'digits', 'digits_test.npz'));
  return { x, y: Array.from(y.data, Number) };
}

/**
 * Native Morsel's logits for the digits test split: `morsel run` on the same
 * .morsel file and the same x, through the CLI the README documents. With
 * `baseline`, run with MORSEL_ISA=baseline (no FMA: the wasm build's
 * arithmetic, runtime/src/kernels/cpu.rs).
 */
export function nativeDigitsLogits({ baseline = false } = {}) {
  fs.mkdirSync(OUT, { recursive: true });
  const { x } = digitsTest();
  const xFile = path.join(OUT, 'digits_test_x.npy');
  writeNpyF32(xFile, x.data, x.shape);
  const dir = path.join(OUT, baseline ? 'native-baseline' : 'native');
  const env = { ...process.env, ...(baseline ? { MORSEL_ISA: 'baseline' } : {}) };
  execFileSync(MORSEL_CLI, ['run', DIGITS_MORSEL, '--input', `x=${xFile}`, '-d', dir], { stdio: 'pipe', env });
  return readNpy(path.join(dir, 'logits.npy'));
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
