import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode, isDict } from '../src/bencode.js';
import { CreateError, createTorrent, defaultPieceLength, listFiles } from '../src/create.js';
import { PieceHasher } from '../src/hasher.js';
import { parseTorrent } from '../src/metainfo.js';
import { FileStorage, checkExistingData } from '../src/storage/index.js';


function tree(t: { after(fn: () => unknown): void }) {
  const base = mkdtempSync(join(tmpdir(), 'bt-create-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'pack');
  mkdirSync(join(root, 'sub', 'deep'), { recursive: true });
  writeFileSync(join(root, 'sub.txt'), Buffer.alloc(5000, 1));
  writeFileSync(join(root, 'sub', 'a'), Buffer.alloc(40000, 2));
  writeFileSync(join(root, 'sub', 'deep', 'b'), Buffer.alloc(17, 3));
  writeFileSync(join(root, 'empty'), '');
  return { base, root };
}

test('default piece length aims at ≤ 2048 pieces within 16 KiB..16 MiB', () => {
  assert.equal(defaultPieceLength(1), 16384);
  assert.equal(defaultPieceLength(2048 * 16384), 16384);
  assert.equal(defaultPieceLength(2048 * 16384 + 1), 32768);
  assert.equal(defaultPieceLength(4.7e9), 4 * 1024 * 1024);
  assert.equal(defaultPieceLength(1e13), 16 * 1024 * 1024);
  for (const n of [1e8, 1e9, 3e10]) {
    const c = Math.ceil(n / defaultPieceLength(n));
    assert.ok(c > 1024 && c <= 2048, `${n}: ${c} pieces`);
  }
});

test('multi-file: strcmp order, keys, tiers, web seeds, progress; data verifies with FileStorage', async (t) => {
  const { base, root } = tree(t);
  const listed = await listFiles(root);
  assert.deepEqual(listed.files.map((f) => f.path.join('/')), ['empty', 'sub.txt', 'sub/a', 'sub/deep/b']);
  const progress: [number, number][] = [];
  const hasher = new PieceHasher({ workers: 1, syncThreshold: 0 });
  t.after(() => hasher.close());
  const { torrent, metainfo: m } = await createTorrent({
    path: root,
    announce: [['http://a/1', 'http://a/2'], ['udp://b/1']],
    webSeeds: ['http://ws/1', 'http://ws/2'],
    pieceLength: 16384,
    comment: 'c',
    createdBy: 'test',
    creationDate: 1234,
    onProgress: (d, n) => progress.push([d, n]),
    hasher,
  });
  assert.equal(m.name, 'pack');
  assert.equal(m.length, 45017);
  assert.equal(m.pieceCount, 3);
  assert.deepEqual(m.announce, [['http://a/1', 'http://a/2'], ['udp://b/1']]);
  assert.deepEqual(m.urlList, ['http://ws/1', 'http://ws/2']);
  assert.equal(m.comment, 'c');
  assert.equal(m.createdBy, 'test');
  assert.equal(m.creationDate, 1234);
  assert.deepEqual(progress.map((p) => p[1]), [3, 3, 3]);
  assert.deepEqual(progress.map((p) => p[0]).sort(), [1, 2, 3]);
  const top = decode(torrent);
  assert.ok(isDict(top) && isDict(top.info));
  assert.deepEqual(Object.keys(top.info).sort(), ['files', 'name', 'piece length', 'pieces']);
  assert.equal(Buffer.from(top.announce as Uint8Array).toString(), 'http://a/1');
  // The created torrent verifies against the files it was made from.
  const st = new FileStorage(m, base);
  t.after(() => st.close());
  assert.ok((await checkExistingData(m, st, hasher)).isComplete());
});

test('single file, private, flat announce list = one tier each, no date', async (t) => {
  const { root } = tree(t);
  const { torrent, metainfo: m } = await createTorrent({ path: join(root, 'sub', 'a'), private: true, announce: ['http://x/1', 'http://y/2'], creationDate: null, name: 'renamed' });
  assert.equal(m.name, 'renamed');
  assert.equal(m.private, true);
  assert.deepEqual(m.files.map((f) => f.name), ['renamed']);
  assert.deepEqual(m.announce, [['http://x/1'], ['http://y/2']]);
  assert.equal(m.creationDate, undefined);
  assert.deepEqual(parseTorrent(torrent).infoHash, m.infoHash);
});

test('clear errors: missing path, empty folder, zero bytes, bad piece length', async (t) => {
  const { base, root } = tree(t);
  await assert.rejects(createTorrent({ path: join(base, 'nope') }), (e: Error) => e instanceof CreateError && /cannot read .*nope.*ENOENT/.test(e.message));
  mkdirSync(join(base, 'emptydir'));
  await assert.rejects(createTorrent({ path: join(base, 'emptydir') }), /contains no files/);
  await assert.rejects(createTorrent({ path: join(root, 'empty') }), /nothing to share: .* holds 0 bytes/);
  await assert.rejects(createTorrent({ path: root, pieceLength: 30000 }), /piece length must be a power of two between 16 KiB and 64 MiB, got 30000/);
  await assert.rejects(createTorrent({ path: root, pieceLength: 8192 }), /power of two/);
});
