// A tiny static file server for the browser tests: 127.0.0.1, an ephemeral
// port, a few mounts (URL prefix -> directory), no directory listings, no
// path escapes. Responses carry COOP/COEP so pages are cross-origin isolated
// (performance.now() then has 5 µs resolution instead of 100 µs).
//
//   node tests/web/server.mjs [PORT]   serves the demo site and the bench page by hand
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ts': 'text/plain; charset=utf-8',
};

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The mounts the tests use: the assembled demo site, the bench pages,
 * onnxruntime-web, the digits data, the real models (`make wasm-models`).
 */
export function defaultMounts() {
  return {
    '/': path.join(ROOT, 'target', 'wasm-site'),
    '/bench/': path.join(ROOT, 'tests', 'web', 'bench'),
    '/ort/': path.join(ROOT, 'tests', 'web', 'node_modules', 'onnxruntime-web', 'dist'),
    '/digits/': path.join(ROOT, 'examples', 'digits'),
    '/web-models/': path.join(ROOT, 'target', 'web-models'),
  };
}

/** Start serving; resolves to {url, close, requests} once listening. */
export function serve(mounts = defaultMounts(), port = 0) {
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const requests = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    requests.push(url.pathname);
    let pathname = decodeURIComponent(url.pathname);
    if (pathname.endsWith('/')) pathname += 'index.html';
    const prefix = prefixes.find((p) => pathname.startsWith(p));
    const dir = prefix && mounts[prefix];
    const file = dir && path.resolve(dir, '.' + path.posix.normalize('/' + pathname.slice(prefix.length)));
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cache-Control': 'no-store',
    };
    if (!file || !(file === dir || file.startsWith(dir + path.sep))) {
      res.writeHead(404, headers).end('not found');
      return;
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, headers).end('not found');
        return;
      }
      const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
      res.writeHead(200, { ...headers, 'Content-Type': type, 'Content-Length': st.size });
      if (req.method === 'HEAD') res.end();
      else fs.createReadStream(file).pipe(res);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        requests,
        close: () => new Promise((r) => server.close(r)),
      });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await serve(defaultMounts(), Number(process.argv[2] ?? 8000));
  console.log(`demo: ${s.url}/   bench: ${s.url}/bench/   (Ctrl-C to stop)`);
}
