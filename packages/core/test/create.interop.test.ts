// Info-hash equality with the real mktorrent 1.1 binary (Debian package `mktorrent`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTorrent } from '../src/create.js';
import { parseTorrent } from '../src/metainfo.js';

const have = spawnSync('mktorrent', ['-h'], { encoding: 'utf8' });
const missing = have.error !== undefined;
if (missing && process.env.CI === 'true') throw new Error('mktorrent is required in CI (apt-get install mktorrent)');

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function mktorrent(args: string[], cwd: string): Buffer {
  const out = join(cwd, `mk-${Math.random().toString(36).slice(2)}.torrent`);
  const r = spawnSync('mktorrent', ['-d', '-o', out, ...args], { cwd, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `mktorrent failed: ${r.stderr}`);
  return readFileSync(out);
}

test('multi-file tree with nested dirs, hidden, empty, unicode and tricky ordering: same info-hash as mktorrent', { skip: missing && 'mktorrent not installed' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bt-mkt-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'My Data');
  const files: [string, number][] = [
    ['a.txt', 5000], ['a/b.bin', 70000], ['a/.hidden', 3], ['a/c/deep.dat', 40000], ['a-b', 1], ['A', 0],
    ['sub.txt', 12], ['sub/x', 33333], ['sub/ümlaut é.txt', 2048], ['.dot/f', 100], ['z/empty', 0], ['Zeta', 65536], ['b', 32768],
  ];
  files.forEach(([p, n], i) => {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), bytes(n, i + 1));
  });
  mkdirSync(join(root, 'emptydir'));
  symlinkSync('a.txt', join(root, 'link-to-a'));
  for (const log2 of [15, 16, 18]) {
    const mk = parseTorrent(mktorrent(['-l', String(log2), root], base));
    const ours = await createTorrent({ path: root, pieceLength: 2 ** log2, creationDate: null });
    assert.equal(ours.metainfo.infoHashHex, mk.infoHashHex, `piece length 2^${log2}`);
    assert.deepEqual(ours.metainfo.infoBuffer, mk.infoBuffer);
  }
  // Private flag and source string live inside info.
  const mk = parseTorrent(mktorrent(['-l', '15', '-p', '-s', 'SRC', '-a', 'http://127.0.0.1:1/announce', root], base));
  const ours = await createTorrent({ path: root, pieceLength: 32768, private: true, source: 'SRC', announce: ['http://127.0.0.1:1/announce'] });
  assert.equal(ours.metainfo.infoHashHex, mk.infoHashHex);
  assert.deepEqual(ours.metainfo.announce, mk.announce);
});

test('single file: same info-hash as mktorrent (exact multiple and ragged last piece)', { skip: missing && 'mktorrent not installed' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bt-mkt1-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  for (const [name, n] of [['exact.bin', 4 * 32768], ['ragged.bin', 100001], ['tiny', 1]] as const) {
    const p = join(base, name);
    writeFileSync(p, bytes(n, n));
    const mk = parseTorrent(mktorrent(['-l', '15', p], base));
    const ours = await createTorrent({ path: p, pieceLength: 32768, creationDate: null });
    assert.equal(ours.metainfo.infoHashHex, mk.infoHashHex, name);
    assert.deepEqual(ours.metainfo.infoBuffer, mk.infoBuffer);
  }
});
