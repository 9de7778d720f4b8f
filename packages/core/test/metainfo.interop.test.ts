// Parsing torrents made by libtorrent 2.0 (python3-libtorrent): v1, hybrid v1+v2 with BEP 47 pad files, v2-only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetainfoError, parseTorrent } from '../src/metainfo.js';
import { FileStorage, checkExistingData } from '../src/storage/index.js';
import { PieceHasher } from '../src/hasher.js';

const PY = '/usr/bin/python3';
const probe = spawnSync(PY, ['-c', 'import libtorrent'], { encoding: 'utf8' });
const missing = probe.status !== 0;
if (missing && process.env.CI === 'true') throw new Error('python3-libtorrent is required in CI');

const SCRIPT = `
import libtorrent as lt, sys, json
src, parent, out, mode = sys.argv[1:5]
fs = lt.file_storage()
lt.add_files(fs, src)
flags = {'hybrid': 0, 'v1': lt.create_torrent.v1_only, 'v2': lt.create_torrent.v2_only}[mode]
t = lt.create_torrent(fs, 32768, flags=flags)
t.add_tracker('http://127.0.0.1:1/announce', 0)
t.add_tracker('udp://127.0.0.1:2', 1)
lt.set_piece_hashes(t, parent)
open(out, 'wb').write(lt.bencode(t.generate()))
ti = lt.torrent_info(out)
ih = ti.info_hashes()
fst = ti.files()
print(json.dumps({'v1': ih.v1.to_bytes().hex() if ih.has_v1() else None, 'pieces': ti.num_pieces(), 'size': ti.total_size(),
  'files': [[fst.file_path(i), fst.file_size(i), bool(fst.file_flags(i) & 1)] for i in range(fst.num_files())]}))
`;

function tree(base: string): string {
  const root = join(base, 'content');
  mkdirSync(join(root, 'sub', 'deep'), { recursive: true });
  const files: [string, number][] = [['a.bin', 50000], ['sub/b.bin', 70001], ['sub/deep/c', 3], ['z', 40000], ['empty', 0]];
  files.forEach(([p, n], k) => writeFileSync(join(root, p), Buffer.alloc(n, k + 1)));
  return root;
}

for (const mode of ['v1', 'hybrid'] as const) {
  test(`libtorrent ${mode} torrent: same info-hash, files, pad files; data verifies through FileStorage`, { skip: missing && 'python3-libtorrent not installed' }, async (t) => {
    const base = mkdtempSync(join(tmpdir(), 'bt-lt-'));
    t.after(() => rmSync(base, { recursive: true, force: true }));
    const root = tree(base);
    const out = join(base, 'x.torrent');
    const r = spawnSync(PY, ['-c', SCRIPT, root, base, out, mode], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const lt = JSON.parse(r.stdout) as { v1: string; pieces: number; size: number; files: [string, number, boolean][] };
    const m = parseTorrent(readFileSync(out));
    assert.equal(m.infoHashHex, lt.v1);
    assert.equal(m.isHybrid, mode === 'hybrid');
    assert.equal(m.pieceCount, lt.pieces);
    assert.equal(m.length, lt.size);
    assert.deepEqual(m.files.map((f) => [f.name, f.length, f.pad]), lt.files);
    if (mode === 'hybrid') assert.ok(m.files.some((f) => f.pad), 'hybrid torrents carry pad files');
    assert.deepEqual(m.announce, [['http://127.0.0.1:1/announce'], ['udp://127.0.0.1:2']]);
    const st = new FileStorage(m, base);
    t.after(() => st.close());
    const hasher = new PieceHasher({ workers: 1 });
    t.after(() => hasher.close());
    assert.ok((await checkExistingData(m, st, hasher)).isComplete(), 'pad files must read as zeros');
  });
}

test('libtorrent v2-only torrent: clear unsupported error', { skip: missing && 'python3-libtorrent not installed' }, (t) => {
  const base = mkdtempSync(join(tmpdir(), 'bt-lt2-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = tree(base);
  const out = join(base, 'x.torrent');
  const r = spawnSync(PY, ['-c', SCRIPT, root, base, out, 'v2'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.throws(() => parseTorrent(readFileSync(out)), (e: Error) => e instanceof MetainfoError && e.message === 'v2-only torrents (BEP 52) are not supported yet');
});
