// SQLite journal writer thread (plain ESM, no tsx): owns the write connection so the main thread never blocks on
// fsync. Messages: {id, type:'open', path} | {id, type:'append', rows:[[seq, entry, hash, a1, a2, cpDigest, cpSig]...]}
// | {id, type:'close'}; replies {id, ok:true} or {id, ok:false, error}.
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
      tx = db.transaction((rows) => {
        for (const r of rows) ins.run(r[0], Buffer.from(r[1]), Buffer.from(r[2]), r[3] && Buffer.from(r[3]), r[4] && Buffer.from(r[4]), r[5] && Buffer.from(r[5]), r[6] && Buffer.from(r[6]));
      });
    } else if (m.type === 'append') {
      tx(m.rows);
    } else if (m.type === 'close') {
      db?.close();
      db = null;
    }
    parentPort.postMessage({ id: m.id, ok: true });
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
});
