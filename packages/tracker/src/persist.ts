/**
 * Swarm state persistence: one binary snapshot written atomically (temp file, fsync, rename).
 *
 * Layout (big-endian): "BTTRKST1" | savedAt u32 (unix s) | swarms u32 | per swarm:
 *   info_hash[20] | completed u32 | n4 u32 | n6 u32 | n4 × (addr[6] | word u32) | n6 × (addr[18] | word u32)
 * where word = seeder bit 31 | age in seconds (0..2^31-1) at save time; then SHA-1 of all preceding bytes.
 */
import { createHash } from 'node:crypto';
import { open, rename, readFile, unlink } from 'node:fs/promises';
import { SwarmStore } from './swarm.js';

const MAGIC = Buffer.from('BTTRKST1', 'latin1');

export class StateFileError extends Error {
  constructor(path: string, why: string) {
    super(`tracker state file ${path}: ${why}`);
    this.name = 'StateFileError';
  }
}

export function serializeStore(store: SwarmStore, nowUnix: number): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(16);
  MAGIC.copy(head, 0);
  head.writeUInt32BE(nowUnix >>> 0, 8);
  parts.push(head);
  let count = 0;
  for (const [ih, sw] of store.swarms) {
    const n4 = sw.v4 ? sw.v4.n : 0;
    const n6 = sw.v6 ? sw.v6.n : 0;
    if (n4 + n6 === 0 && sw.completed === 0) continue;
    const b = Buffer.allocUnsafe(32 + n4 * 10 + n6 * 22);
    b.write(ih, 0, 'latin1');
    b.writeUInt32BE(sw.completed >>> 0, 20);
    b.writeUInt32BE(n4, 24);
    b.writeUInt32BE(n6, 28);
    let o = 32;
    for (const t of [sw.v4, sw.v6]) {
      if (!t) continue;
      for (let i = 0; i < t.n; i++) {
        t.copyAddr(i, b, o);
        o += t.stride;
        const m = t.meta(i);
        const age = Math.min(0x7fffffff, Math.max(0, nowUnix - store.lastSeenUnix(m)));
        b.writeUInt32BE(((SwarmStore.isSeeder(m) ? 0x80000000 : 0) | age) >>> 0, o);
        o += 4;
      }
    }
    parts.push(b);
    count++;
  }
  head.writeUInt32BE(count, 12);
  const body = Buffer.concat(parts);
  const digest = createHash('sha1').update(body).digest();
  return Buffer.concat([body, digest]);
}

/** Load a snapshot into `store`. Throws StateFileError on any inconsistency. Returns peers restored. */
export function deserializeInto(store: SwarmStore, data: Buffer, nowUnix: number, path = '(buffer)'): number {
  if (data.length < 36) throw new StateFileError(path, 'too short');
  if (!data.subarray(0, 8).equals(MAGIC)) throw new StateFileError(path, 'bad magic (not a bitorrent tracker state file)');
  const body = data.subarray(0, data.length - 20);
  if (!createHash('sha1').update(body).digest().equals(data.subarray(data.length - 20))) {
    throw new StateFileError(path, 'checksum mismatch (truncated or corrupted)');
  }
  const savedAt = body.readUInt32BE(8);
  const count = body.readUInt32BE(12);
  let o = 16;
  let restored = 0;
  for (let s = 0; s < count; s++) {
    if (o + 32 > body.length) throw new StateFileError(path, `swarm ${s} truncated`);
    const ih = body.toString('latin1', o, o + 20);
    const completed = body.readUInt32BE(o + 20);
    const n4 = body.readUInt32BE(o + 24);
    const n6 = body.readUInt32BE(o + 28);
    o += 32;
    if (o + n4 * 10 + n6 * 22 > body.length) throw new StateFileError(path, `swarm ${s} peer list truncated`);
    store.restoreCompleted(ih, completed);
    for (const [n, stride] of [[n4, 6], [n6, 18]] as const) {
      for (let i = 0; i < n; i++) {
        const w = body.readUInt32BE(o + stride);
        const lastSeen = Math.min(nowUnix, savedAt - (w & 0x7fffffff));
        if (store.restorePeer(ih, stride === 18, body, o, lastSeen, (w & 0x80000000) !== 0)) restored++;
        o += stride + 4;
      }
    }
  }
  if (o !== body.length) throw new StateFileError(path, 'trailing bytes');
  return restored;
}

/** Write the snapshot atomically: a crash leaves either the old file or the new one, never a torn file. */
export async function saveState(store: SwarmStore, path: string, nowUnix: number): Promise<number> {
  const data = serializeStore(store, nowUnix);
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
  return data.length;
}

/** Load a snapshot if the file exists. Returns peers restored, or -1 when there was no file. */
export async function loadState(store: SwarmStore, path: string, nowUnix: number): Promise<number> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return -1;
    throw new StateFileError(path, (e as Error).message);
  }
  return deserializeInto(store, data, nowUnix, path);
}
