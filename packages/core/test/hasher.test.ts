import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { PieceHasher, sha1Sync } from '../src/hasher.js';

const ref = (b: Uint8Array) => createHash('sha1').update(b).digest();

test('pool hashes match crypto for many concurrent jobs of mixed sizes; inputs left intact', async (t) => {
  const h = new PieceHasher({ workers: 2, syncThreshold: 1024 });
  t.after(() => h.close());
  const inputs = Array.from({ length: 40 }, (_, i) => randomBytes([0, 1, 1000, 5000, 262144, 1 << 20][i % 6]));
  const copies = inputs.map((b) => Buffer.from(b));
  // A view into a larger buffer (non-zero byteOffset) must hash only its own bytes.
  const big = randomBytes(300000);
  const view = big.subarray(12345, 12345 + 200000);
  const digests = await Promise.all([...inputs.map((b) => h.sha1(b)), h.sha1(view)]);
  inputs.forEach((b, i) => {
    assert.deepEqual(digests[i], ref(b));
    assert.deepEqual(b, copies[i]);
  });
  assert.deepEqual(digests[inputs.length], ref(view));
  assert.deepEqual(sha1Sync(view), ref(view));
});

test('workers: 0 hashes synchronously; close rejects later calls', async () => {
  const h = new PieceHasher({ workers: 0 });
  const b = randomBytes(100000);
  assert.deepEqual(await h.sha1(b), ref(b));
  await h.close();
  await assert.rejects(h.sha1(b), /closed/);
});

test('an idle pool does not keep the process alive (workers unref when idle)', async () => {
  const h = new PieceHasher({ workers: 1, syncThreshold: 0 });
  assert.deepEqual(await h.sha1(Buffer.from('abc')), ref(Buffer.from('abc')));
  // Not closing on purpose would be checked by the runner hanging; close to be tidy.
  await h.close();
});
