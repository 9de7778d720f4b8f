// Ed25519 batch verifier worker (plain ESM, no tsx). Message: ArrayBuffer of items
// [pub 32][sig 64][len u16 BE][msg len] ...; reply: Uint8Array of 0/1 verdicts.
import { parentPort } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { createPublicKey, verify as cVerify } from 'node:crypto';

let sodium = null;
if (!process.env.BITORRENT_NO_SODIUM) {
  try {
    sodium = createRequire(import.meta.url)('sodium-native');
  } catch {
    sodium = null;
  }
}
const SPKI = Buffer.from('302a300506032b6570032100', 'hex');
function verify(msg, sig, pub) {
  try {
    if (sodium) return sodium.crypto_sign_verify_detached(sig, msg, pub);
    return cVerify(null, msg, createPublicKey({ key: Buffer.concat([SPKI, pub]), format: 'der', type: 'spki' }), sig);
  } catch {
    return false;
  }
}
parentPort.on('message', ({ id, buf, n }) => {
  const b = Buffer.from(buf);
  const out = new Uint8Array(n);
  let p = 0;
  for (let i = 0; i < n; i++) {
    const pub = b.subarray(p, p + 32);
    const sig = b.subarray(p + 32, p + 96);
    const len = b.readUInt16BE(p + 96);
    const msg = b.subarray(p + 98, p + 98 + len);
    p += 98 + len;
    out[i] = verify(msg, sig, pub) ? 1 : 0;
  }
  parentPort.postMessage({ id, out }, [out.buffer]);
});
