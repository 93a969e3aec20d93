// A/B timing of two builds of the Node package on one model, in one process,
// taking turns run by run (so machine noise hits both alike), e.g. before
// and after a kernel change:
//
//   cp -r target/wasm-pkg /tmp/pkg-before   # then change, `bash wasm/build.sh`
//   node benches/wasm_ab.mjs /tmp/pkg-before target/wasm-pkg \
//       target/web-models/minilm_int8.morsel target/web-models/inputs/minilm [runs=30]
//
// The input directory holds one NAME.npy per model input (`make wasm-models`
// writes such directories). Prints each side's median and the ratio B/A.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { readNpy } from '../tests/web/npy.mjs';

const require = createRequire(import.meta.url);
const [pkgA, pkgB, model, inputs, runs = '30'] = process.argv.slice(2);
if (!inputs) {
  console.error('usage: node benches/wasm_ab.mjs PKG_A PKG_B MODEL.morsel INPUT_DIR [runs]');
  process.exit(2);
}
const modelClass = (pkg) => {
  const pj = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8'));
  return require(path.resolve(pkg, pj.exports['.'].node.default)).Model;
};
const bytes = fs.readFileSync(model);
const models = [pkgA, pkgB].map((p) => modelClass(p).load(bytes));
const feeds = {};
for (const f of fs.readdirSync(inputs).filter((f) => f.endsWith('.npy'))) {
  const a = readNpy(path.join(inputs, f));
  feeds[f.slice(0, -4)] = { data: a.data, shape: a.shape };
}
for (const m of models) for (let i = 0; i < 3; i++) m.run(feeds);
const times = [[], []];
for (let i = 0; i < Number(runs); i++) {
  for (const j of i % 2 ? [1, 0] : [0, 1]) {
    const t = performance.now();
    models[j].run(feeds);
    times[j].push(performance.now() - t);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const [a, b] = times.map(median);
console.log(`A ${a.toFixed(2)} ms  B ${b.toFixed(2)} ms  B/A ${(b / a).toFixed(3)}  (medians of ${runs}, taking turns)`);
