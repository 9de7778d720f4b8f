// SQLite journal writer thread (plain ESM, no tsx): owns the write connection so the main thread never blocks on
// fsync. Messages: {id, type:'open', path} | {id, type:'append', packed: ArrayBuffer}
// (packed: see storage-sqlite.ts) | {id, type:'close'}; replies {id, ok:true} or {id, ok:false, error}.
import { parentPort } from 'node:worker_threads';
import { createRequire } from 'node:module';

const Database = createRequire(import.meta.url)('better-sqlite3');
let db = null;
let tx = null;

parentPort.on('message', (m) => {
  try {
    if (m.type === 'open') {
      db = new Database(m.path);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('busy_timeout = 5000');
      const ins = db.prepare('INSERT INTO journal (seq, entry, hash, a1, a2, cp_digest, cp_sig) VALUES (?, ?, ?, ?, ?, ?, ?)');
      tx = db.transaction((b) => {
        let o = 0;
        while (o < b.length) {
          const seq = Number(b.readBigUInt64BE(o));
          const flags = b[o + 8];
          const len = b.readUInt32BE(o + 9);
          o += 13;
          const entry = b.subarray(o, (o += len));
          const hash = b.subarray(o, (o += 32));
          const n = flags & 3;
          const a1 = n >= 1 ? b.subarray(o, (o += 32)) : null;
          const a2 = n >= 2 ? b.subarray(o, (o += 32)) : null;
          let d = null;
          let s = null;
          if (flags & 4) {
            d = b.subarray(o, (o += 32));
            s = b.subarray(o, (o += 64));
          }
          ins.run(seq, entry, hash, a1, a2, d, s);
        }
      });
    } else if (m.type === 'append') {
      tx(Buffer.from(m.packed));
    } else if (m.type === 'close') {
      db?.close();
      db = null;
    }
    parentPort.postMessage({ id: m.id, ok: true });
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
});
