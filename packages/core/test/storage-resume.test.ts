import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode } from '../src/bencode.js';
import { BitField } from '../src/bitfield.js';
import { parseInfoDict, pieceSize } from '../src/metainfo.js';
import { FileStorage, ResumeStore, diffResume, makeResumeData, validateResume } from '../src/storage/index.js';

function setup(t: { after(fn: () => unknown): void }) {
  const lens = [100, 0, 60, 90];
  const stream = Buffer.alloc(250);
  for (let i = 0; i < stream.length; i++) stream[i] = (i * 7) & 0xff;
  const pl = 64;
  const hashes = Buffer.concat(
    Array.from({ length: Math.ceil(250 / pl) }, (_, i) => createHash('sha1').update(stream.subarray(i * pl, (i + 1) * pl)).digest()),
  );
  const meta = parseInfoDict(encode({ name: 'r', 'piece length': pl, pieces: hashes, files: lens.map((length, i) => ({ length, path: [`f${i}`] })) }));
  const dir = mkdtempSync(join(tmpdir(), 'bt-resume-'));
  const state = mkdtempSync(join(tmpdir(), 'bt-resume-state-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  });
  return { meta, dir, state, stream };
}

test('save/load round trip; unchanged files → bitfield trusted without re-hashing', async (t) => {
  const { meta, dir, state, stream } = setup(t);
  const st = new FileStorage(meta, dir);
  const have = new BitField(meta.pieceCount);
  for (const i of [0, 1, 3]) {
    await st.writePiece(i, stream.subarray(i * 64, i * 64 + pieceSize(meta, i)));
    have.set(i);
  }
  await st.flush();
  await st.close();
  const store = new ResumeStore(state);
  assert.equal(await store.load(meta.infoHash), undefined);
  const data = await makeResumeData(meta, dir, have);
  await store.save(meta.infoHash, { ...data, torrent: meta.infoBuffer });
  assert.deepEqual(readdirSync(state), [`${meta.infoHashHex}.resume`]); // no temp file left behind
  const loaded = await store.load(meta.infoHashHex);
  assert.ok(loaded);
  assert.deepEqual(loaded.have, have.toBuffer());
  assert.deepEqual(loaded.torrent, meta.infoBuffer);
  assert.equal(loaded.files.length, 4);
  const trusted = await validateResume(meta, dir, loaded);
  assert.ok(trusted);
  assert.deepEqual([...trusted.indices()], [0, 1, 3]);
});

test('touching a file invalidates; diffResume names the file and the pieces to re-check', async (t) => {
  const { meta, dir, state, stream } = setup(t);
  const st = new FileStorage(meta, dir);
  for (let i = 0; i < meta.pieceCount; i++) await st.writePiece(i, stream.subarray(i * 64, i * 64 + pieceSize(meta, i)));
  await st.close();
  const store = new ResumeStore(state);
  await store.save(meta.infoHash, await makeResumeData(meta, dir, BitField.allSet(meta.pieceCount)));
  const data = (await store.load(meta.infoHash))!;
  assert.ok(await validateResume(meta, dir, data));
  // f2 covers bytes 100..160 → pieces 1 and 2.
  const f2 = join(dir, 'r', 'f2');
  utimesSync(f2, new Date(), new Date(Date.now() + 5000));
  assert.equal(await validateResume(meta, dir, data), undefined);
  const d = await diffResume(meta, dir, data);
  assert.ok(d);
  assert.deepEqual(d.changedFiles, [2]);
  assert.deepEqual(d.recheckPieces, [1, 2]);
  assert.deepEqual([...d.have.indices()], [0, 3]);
  // A size change is detected too (here with the mtime also changing).
  appendFileSync(join(dir, 'r', 'f3'), 'x');
  assert.deepEqual((await diffResume(meta, dir, data))!.changedFiles, [2, 3]);
});

test('deleted file, wrong bitfield length, corrupt resume file → not trusted', async (t) => {
  const { meta, dir, state, stream } = setup(t);
  const st = new FileStorage(meta, dir);
  for (let i = 0; i < meta.pieceCount; i++) await st.writePiece(i, stream.subarray(i * 64, i * 64 + pieceSize(meta, i)));
  await st.close();
  const data = await makeResumeData(meta, dir, BitField.allSet(meta.pieceCount));
  assert.equal(await validateResume(meta, dir, { ...data, have: Buffer.alloc(5) }), undefined);
  assert.equal(await validateResume(meta, dir, { ...data, files: data.files.slice(1) }), undefined);
  rmSync(join(dir, 'r', 'f0'));
  assert.equal(await validateResume(meta, dir, data), undefined);
  const store = new ResumeStore(state);
  writeFileSync(join(state, `${meta.infoHashHex}.resume`), 'garbage');
  assert.equal(await store.load(meta.infoHash), undefined);
  await store.remove(meta.infoHash);
  assert.deepEqual(readdirSync(state), []);
});
