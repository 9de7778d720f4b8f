// SHA-1 worker for PieceHasher (plain .mjs: no tsx in workers).
// Protocol: main sends { slab: SharedArrayBuffer, index } to (re)install input area `index`, then
// { id, index, length } per job; the worker hashes slabs[index][0, length) and replies { id, digest }.
import { parentPort } from 'node:worker_threads';
import { createHash } from 'node:crypto';

const slabs = [];
parentPort.on('message', (msg) => {
  if (msg.slab) {
    slabs[msg.index] = new Uint8Array(msg.slab);
    return;
  }
  try {
    const digest = createHash('sha1').update(slabs[msg.index].subarray(0, msg.length)).digest();
    parentPort.postMessage({ id: msg.id, digest });
  } catch (err) {
    parentPort.postMessage({ id: msg.id, error: String(err && err.message ? err.message : err) });
  }
});
