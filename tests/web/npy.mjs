// Just enough numpy I/O for the tests: read .npy (f32, i64, i32) and .npz
// (stored or deflated zip entries), write f32 .npy for the native CLI.
import fs from 'node:fs';
import zlib from 'node:zlib';

const ARRAYS = { '<f4': Float32Array, '<i8': BigInt64Array, '<i4': Int32Array };

/** Parse .npy bytes into {dtype, shape, data}. */
export function parseNpy(buf) {
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (bytes.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error('not an .npy file');
  const major = bytes[6];
  const hlen = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = bytes.toString('latin1', major === 1 ? 10 : 12, start);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error('fortran order not supported');
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const Ctor = ARRAYS[descr];
  if (!Ctor) throw new Error(`unsupported npy dtype ${descr}`);
  const n = shape.reduce((a, b) => a * b, 1);
  // Copy: the payload offset need not be aligned for the element type.
  const data = new Ctor(n);
  new Uint8Array(data.buffer).set(bytes.subarray(start, start + n * Ctor.BYTES_PER_ELEMENT));
  return { dtype: descr, shape, data };
}

export const readNpy = (file) => parseNpy(fs.readFileSync(file));

/** Read every array of an .npz (numpy's zip) by name, without the ".npy". */
export function readNpz(file) {
  const zip = fs.readFileSync(file);
  const out = {};
  // The central directory gives sizes even when local headers defer them.
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error(`${file}: not a zip`);
  let p = zip.readUInt32LE(eocd + 16);
  const count = zip.readUInt16LE(eocd + 10);
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error(`${file}: bad central directory`);
    const method = zip.readUInt16LE(p + 10);
    let csize = zip.readUInt32LE(p + 20);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    let local = zip.readUInt32LE(p + 42);
    const name = zip.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 (numpy writes it for big arrays): sizes and offset in the extra field.
    if (csize === 0xffffffff || local === 0xffffffff) {
      const extra = zip.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen);
      for (let q = 0; q < extra.length; ) {
        const id = extra.readUInt16LE(q), len = extra.readUInt16LE(q + 2);
        if (id === 1) {
          let r = q + 4;
          if (zip.readUInt32LE(p + 24) === 0xffffffff) r += 8; // uncompressed size
          if (csize === 0xffffffff) { csize = Number(extra.readBigUInt64LE(r)); r += 8; }
          if (local === 0xffffffff) local = Number(extra.readBigUInt64LE(r));
        }
        q += 4 + len;
      }
    }
    const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const raw = zip.subarray(start, start + csize);
    const data = method === 0 ? raw : method === 8 ? zlib.inflateRawSync(raw) : null;
    if (!data) throw new Error(`${file}: ${name} uses zip method ${method}`);
    out[name.replace(/\.npy$/, '')] = parseNpy(data);
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** Write a C-order f32 array as .npy (format 1.0). */
export function writeNpyF32(file, data, shape) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

/** Max |a - b| over two equal-length float arrays. */
export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Row-wise argmax of an [n, k] array. */
export function argmaxRows(data, k) {
  const out = [];
  for (let r = 0; r < data.length / k; r++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (data[r * k + j] > data[r * k + best]) best = j;
    out.push(best);
  }
  return out;
}
