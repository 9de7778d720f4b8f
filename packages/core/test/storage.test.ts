import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, promises as fsp, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { encode } from '../src/bencode.js';
import { PieceHasher } from '../src/hasher.js';
import { type Metainfo, parseInfoDict, pieceSize } from '../src/metainfo.js';
import { FileStorage, StorageError, checkExistingData } from '../src/storage/index.js';

interface Spec { length: number; pad: boolean }

/** A multi-file torrent over `stream` (pad ranges must be zero) with correct piece hashes. */
function makeMeta(specs: Spec[], pieceLength: number, stream: Buffer): Metainfo {
  const count = Math.ceil(stream.length / pieceLength);
  const hashes = Buffer.alloc(count * 20);
  for (let i = 0; i < count; i++) {
    createHash('sha1').update(stream.subarray(i * pieceLength, Math.min(stream.length, (i + 1) * pieceLength))).digest().copy(hashes, i * 20);
  }
  let n = 0;
  const files = specs.map((s, i) =>
    s.pad ? { length: s.length, path: ['.pad', `${n++}`], attr: 'p' } : { length: s.length, path: [`d${i % 3}`, `f${i}`] },
  );
  return parseInfoDict(encode({ name: 'root', 'piece length': pieceLength, pieces: hashes, files }));
}

function makeStream(specs: Spec[], seed: Buffer): Buffer {
  const total = specs.reduce((s, f) => s + f.length, 0);
  const out = Buffer.alloc(total);
  let off = 0;
  for (const s of specs) {
    if (!s.pad) for (let i = 0; i < s.length; i++) out[off + i] = seed[(off + i) % seed.length] ^ (i * 31);
    off += s.length;
  }
  return out;
}

const tmp = () => mkdtempSync(join(tmpdir(), 'bt-storage-'));

test('property: write all pieces in any order, read arbitrary blocks back = the byte stream', async () => {
  const specArb = fc.array(
    fc.oneof(
      { weight: 5, arbitrary: fc.record({ length: fc.integer({ min: 1, max: 300 }), pad: fc.constant(false) }) },
      { weight: 2, arbitrary: fc.record({ length: fc.constant(0), pad: fc.constant(false) }) },
      { weight: 1, arbitrary: fc.record({ length: fc.integer({ min: 1, max: 100 }), pad: fc.constant(true) }) },
    ),
    { minLength: 1, maxLength: 12 },
  ).filter((s) => s.some((f) => f.length > 0));
  await fc.assert(
    fc.asyncProperty(
      specArb,
      fc.integer({ min: 1, max: 130 }),
      fc.integer({ min: 1, max: 4 }),
      fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat()), { minLength: 1, maxLength: 20 }),
      fc.nat(),
      async (specs, pieceLength, maxOpen, blocks, shuffle) => {
        const stream = makeStream(specs, randomBytes(61));
        const meta = makeMeta(specs, pieceLength, stream);
        const dir = tmp();
        const st = new FileStorage(meta, dir, { maxOpenFiles: maxOpen });
        try {
          const order = Array.from({ length: meta.pieceCount }, (_, i) => i);
          for (let i = order.length - 1; i > 0; i--) {
            const j = (shuffle + i * 7919) % (i + 1);
            [order[i], order[j]] = [order[j], order[i]];
          }
          // Concurrent writes, as the engine does.
          await Promise.all(order.map((i) => st.writePiece(i, stream.subarray(i * pieceLength, i * pieceLength + pieceSize(meta, i)))));
          await st.flush();
          for (const [a, b, c] of blocks) {
            const index = a % meta.pieceCount;
            const size = pieceSize(meta, index);
            const begin = b % size;
            const length = 1 + (c % (size - begin));
            const got = await st.readBlock(index, begin, length);
            const at = index * pieceLength + begin;
            assert.deepEqual(got, stream.subarray(at, at + length));
          }
          for (let i = 0; i < meta.pieceCount; i++) {
            assert.deepEqual(await st.readPiece(i), stream.subarray(i * pieceLength, i * pieceLength + pieceSize(meta, i)));
          }
          // On disk: regular files hold their slice, zero-length files exist, pad files are never created.
          for (let i = 0; i < meta.files.length; i++) {
            const f = meta.files[i];
            const p = join(dir, ...f.path);
            if (f.pad) assert.equal(existsSync(p), false, `pad file ${f.name} must not exist`);
            else assert.deepEqual(readFileSync(p), stream.subarray(f.offset, f.offset + f.length), f.name);
          }
          const have = await checkExistingData(meta, st, { sha1: async (b) => createHash('sha1').update(b).digest() });
          assert.ok(have.isComplete());
        } finally {
          await st.close();
          rmSync(dir, { recursive: true, force: true });
        }
      },
    ),
    { numRuns: 60 },
  );
});

test('missing / short files: reads fail with StorageError, check marks those pieces absent', async (t) => {
  const specs: Spec[] = [{ length: 100, pad: false }, { length: 50, pad: false }, { length: 30, pad: true }, { length: 120, pad: false }];
  const stream = makeStream(specs, randomBytes(17));
  const meta = makeMeta(specs, 64, stream); // 300 bytes → 5 pieces
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const st = new FileStorage(meta, dir);
  await assert.rejects(st.readPiece(0), (e: Error) => e instanceof StorageError && e.code === 'ENOENT' && /file not found/.test(e.message));
  for (let i = 0; i < meta.pieceCount; i++) await st.writePiece(i, stream.subarray(i * 64, i * 64 + pieceSize(meta, i)));
  await st.close();
  // Truncate file 3 (bytes 180..300) to 40 bytes → pieces 3 (192..256) and 4 absent; piece 2 (128..192) needs 12 bytes of it.
  await fsp.truncate(join(dir, ...meta.files[3].path), 40);
  // Corrupt one byte of file 0 → piece 1 (64..128) bad.
  const f0 = join(dir, ...meta.files[0].path);
  const b = readFileSync(f0);
  b[70] ^= 0xff;
  writeFileSync(f0, b);
  const st2 = new FileStorage(meta, dir);
  t.after(() => st2.close());
  await assert.rejects(st2.readPiece(4), (e: Error) => e instanceof StorageError && e.code === 'ESHORT');
  const hasher = new PieceHasher({ workers: 1, syncThreshold: 0 });
  t.after(() => hasher.close());
  const progress: number[] = [];
  const have = await checkExistingData(meta, st2, hasher, (d) => progress.push(d));
  assert.deepEqual([...have.indices()], [0, 2]);
  assert.deepEqual(progress, [1, 2, 3, 4, 5]);
  // Without the FileStorage shortcut (plain PieceStorage wrapper) the result is the same.
  const plain = { readBlock: st2.readBlock.bind(st2), readPiece: st2.readPiece.bind(st2), writePiece: st2.writePiece.bind(st2), flush: async () => {}, close: async () => {} };
  assert.deepEqual([...(await checkExistingData(meta, plain, hasher)).indices()], [0, 2]);
});

test('bad arguments: wrong piece size, out-of-range block, closed storage', async (t) => {
  const specs: Spec[] = [{ length: 100, pad: false }];
  const stream = makeStream(specs, randomBytes(5));
  const meta = makeMeta(specs, 64, stream);
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const st = new FileStorage(meta, dir);
  await assert.rejects(st.writePiece(0, Buffer.alloc(10)), /piece 0 must be 64 bytes, got 10/);
  await assert.rejects(st.writePiece(2, Buffer.alloc(10)), /piece index 2 out of range/);
  await assert.rejects(st.readBlock(1, 30, 10), /block 30\+10 is outside piece 1 \(36 bytes\)/);
  await st.close();
  await assert.rejects(st.readPiece(0), (e: Error) => e instanceof StorageError && e.code === 'ECLOSED');
});

test('property: skipped files are never created, every written piece reads back whole (part file), and un-skipping moves the bytes into the file', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 90 }), { minLength: 2, maxLength: 6 }),
      fc.integer({ min: 8, max: 64 }),
      fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
      fc.integer({ min: 0, max: 1e9 }),
      async (lengths, pieceLength, skipped, seed) => {
        const specs: Spec[] = lengths.map((length) => ({ length, pad: false }));
        const stream = makeStream(specs, Buffer.from([seed & 255, (seed >> 8) & 255, 7, 11, 13]));
        const meta = makeMeta(specs, pieceLength, stream);
        const skip = new Set(specs.map((_, i) => i).filter((i) => skipped[i]));
        const dir = tmp();
        try {
          const st = new FileStorage(meta, dir, { skipFiles: skip });
          const piece = (i: number) => stream.subarray(i * pieceLength, i * pieceLength + pieceSize(meta, i));
          // Write the pieces a download would want: those touching a file that is not skipped.
          const wanted: number[] = [];
          for (let i = 0; i < meta.pieceCount; i++) {
            const start = i * pieceLength, end = start + pieceSize(meta, i);
            if (meta.files.some((f, k) => !skip.has(k) && f.offset < end && f.offset + f.length > start)) wanted.push(i);
          }
          for (const i of wanted) await st.writePiece(i, piece(i));
          for (const k of skip) assert.equal(existsSync(join(dir, ...meta.files[k].path)), false, `skipped file ${k} created`);
          for (const i of wanted) assert.deepEqual(await st.readPiece(i), piece(i), `piece ${i} reads back whole`);
          const sizes = await st.onDiskSizes();
          const have = await checkExistingData(meta, st, new PieceHasher({ workers: 0 }));
          for (const i of wanted) assert.ok(have.get(i), `piece ${i} passes a check (sizes ${sizes})`);
          // Nothing skipped any more: the files get their bytes, the rest is written, and everything matches.
          await st.setSkipFiles([]);
          for (let i = 0; i < meta.pieceCount; i++) if (!wanted.includes(i)) await st.writePiece(i, piece(i));
          await st.close();
          let off = 0;
          for (const f of meta.files) {
            assert.deepEqual(readFileSync(join(dir, ...f.path)), stream.subarray(off, off + f.length));
            off += f.length;
          }
          assert.equal(existsSync(st.partPath), false, 'part file removed');
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    ),
    { numRuns: 40 },
  );
});

test('a file that exists when it becomes skipped keeps receiving its bytes (no part file)', async (t) => {
  const specs: Spec[] = [{ length: 40, pad: false }, { length: 40, pad: false }, { length: 40, pad: false }];
  const stream = makeStream(specs, randomBytes(9));
  const meta = makeMeta(specs, 32, stream);
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const st = new FileStorage(meta, dir);
  await st.writePiece(1, stream.subarray(32, 64)); // creates files 0 and 1
  await st.setSkipFiles([1]);
  await st.writePiece(2, stream.subarray(64, 96));
  await st.close();
  assert.equal(existsSync(st.partPath), false);
  assert.deepEqual(readFileSync(join(dir, ...meta.files[1].path)).subarray(0, 40), stream.subarray(40, 80));
});

test('ENOSPC surfaces as a StorageError naming the file (never silent)', async (t) => {
  if (!existsSync('/dev/full')) return t.skip('/dev/full not available');
  const specs: Spec[] = [{ length: 100, pad: false }];
  const stream = makeStream(specs, randomBytes(5));
  const meta = makeMeta(specs, 64, stream);
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'root', 'd0'), { recursive: true });
  symlinkSync('/dev/full', join(dir, 'root', 'd0', 'f0'));
  const st = new FileStorage(meta, dir);
  t.after(() => st.close());
  await assert.rejects(st.writePiece(0, stream.subarray(0, 64)), (e: Error) => {
    assert.ok(e instanceof StorageError);
    assert.equal(e.code, 'ENOSPC');
    assert.match(e.message, /storage: write .*f0: no space left on device \(ENOSPC\)/);
    return true;
  });
});

test('EACCES surfaces as a StorageError', async (t) => {
  if (process.getuid?.() === 0) return t.skip('running as root: permissions are not enforced');
  const specs: Spec[] = [{ length: 100, pad: false }];
  const stream = makeStream(specs, randomBytes(5));
  const meta = makeMeta(specs, 64, stream);
  const dir = tmp();
  t.after(() => {
    chmodSync(dir, 0o755);
    rmSync(dir, { recursive: true, force: true });
  });
  chmodSync(dir, 0o500);
  const st = new FileStorage(meta, dir);
  t.after(() => st.close());
  await assert.rejects(st.writePiece(0, stream.subarray(0, 64)), (e: Error) => e instanceof StorageError && e.code === 'EACCES' && /permission denied/.test(e.message));
});

test('files are created sparse and directories lazily', async (t) => {
  const specs: Spec[] = [{ length: 4 << 20, pad: false }];
  const meta = makeMeta(specs, 1 << 20, Buffer.alloc(4 << 20));
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const st = new FileStorage(meta, dir);
  assert.equal(existsSync(join(dir, 'root')), false);
  await st.writePiece(3, Buffer.alloc(1 << 20, 1));
  await st.close();
  const s = statSync(join(dir, ...meta.files[0].path));
  assert.equal(s.size, 4 << 20);
  assert.ok(s.blocks * 512 < 2 << 20, `expected a sparse file, ${s.blocks * 512} bytes allocated`);
  const st2 = new FileStorage(meta, dir);
  t.after(() => st2.close());
  const have = await checkExistingData(meta, st2, { sha1: async (b) => createHash('sha1').update(b).digest() });
  // Holes read as zeros, which is what the torrent's pieces 0-2 hold; piece 3 was written with ones.
  assert.deepEqual([...have.indices()], [0, 1, 2]);
});

test('a directory or file in the way gives a clear StorageError', async (t) => {
  const specs: Spec[] = [{ length: 100, pad: false }, { length: 10, pad: false }];
  const stream = makeStream(specs, randomBytes(5));
  const meta = makeMeta(specs, 64, stream); // files root/d0/f0, root/d1/f1
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'root', 'd0', 'f0'), { recursive: true }); // directory where file f0 goes
  writeFileSync(join(dir, 'root', 'd1'), 'x'); // file where directory d1 goes
  const st = new FileStorage(meta, dir);
  t.after(() => st.close());
  await assert.rejects(st.writePiece(0, stream.subarray(0, 64)), (e: Error) => e instanceof StorageError && e.code === 'EISDIR' && /f0: a directory is in the way/.test(e.message));
  rmSync(join(dir, 'root', 'd0', 'f0'), { recursive: true });
  await assert.rejects(st.writePiece(1, stream.subarray(64, 110)), (e: Error) => e instanceof StorageError && /d1/.test(e.message) && ['ENOTDIR', 'EEXIST'].includes(e.code));
});

test('an empty file that stops being skipped is created even though no piece write is left to create it', async (t) => {
  const specs: Spec[] = [{ length: 40, pad: false }, { length: 0, pad: false }, { length: 40, pad: false }];
  const stream = makeStream(specs, randomBytes(9));
  const meta = makeMeta(specs, 32, stream);
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const st = new FileStorage(meta, dir, { skipFiles: new Set([1]) });
  for (let i = 0; i < meta.pieceCount; i++) await st.writePiece(i, stream.subarray(i * 32, i * 32 + pieceSize(meta, i)));
  assert.equal(existsSync(join(dir, ...meta.files[1].path)), false);
  await st.setSkipFiles([]);
  await st.close();
  assert.equal(statSync(join(dir, ...meta.files[1].path)).size, 0);
});
