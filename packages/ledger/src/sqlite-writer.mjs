// SQLite journal writer thread (plain ESM, no tsx): owns the write connection so the main thread never blocks on
// fsync. Messages: {id, type:'open', path, everyRows?} | {id, type:'append', packed: ArrayBuffer} (layout: openJournalWriter in
// sqlite-journal.mjs) | {id, type:'close'}; replies {id, ok:true} or {id, ok:false, error}.
import { parentPort } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { openJournalWriter } from './sqlite-journal.mjs';

const Database = createRequire(import.meta.url)('better-sqlite3');
let db = null;
let writer = null;

parentPort.on('message', (m) => {
  try {
    if (m.type === 'open') {
      db = new Database(m.path);
      writer = openJournalWriter(db, { everyRows: m.everyRows });
    } else if (m.type === 'append') {
      writer.append(Buffer.from(m.packed));
    } else if (m.type === 'close') {
      writer?.indexNow(); // a short tail for the next start
      db?.close();
      db = null;
    }
    parentPort.postMessage({ id: m.id, ok: true });
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, error: String(e && e.message ? e.message : e) });
    return;
  }
  // After the acknowledgement: history indexing is never on an append's path to durability.
  if (m.type === 'append') writer.afterAppend();
});
