import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStorage } from '../src/storage-sqlite.js';
import { tempDir } from './helpers.js';
import { assertHistoryMatchesScan, historyAccounts as accounts } from './history-property.js';

test('history: the deferred account index plus the scanned tail answer like a full scan, threaded and inline, before and after reopening', async (t) => {
  const dir = tempDir(t);
  await assertHistoryMatchesScan(async (run, everyRows, threaded) => {
    const s = new SqliteStorage(join(dir, `h${run}.db`), { threaded, indexEveryRows: everyRows });
    await s.init();
    return s;
  }, 40);
});

test('history: a journal written with the old per-row account indexes is migrated at open (indexes dropped, history indexed)', async (t) => {
  const path = join(tempDir(t), 'old.db');
  const db = new Database(path);
  db.exec(`CREATE TABLE journal (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, hash BLOB NOT NULL, a1 BLOB, a2 BLOB, cp_digest BLOB, cp_sig BLOB);
    CREATE INDEX journal_a1 ON journal(a1, seq); CREATE INDEX journal_a2 ON journal(a2, seq);`);
  const ins = db.prepare('INSERT INTO journal (seq, entry, hash, a1, a2) VALUES (?, ?, ?, ?, ?)');
  for (let seq = 1; seq <= 50; seq++) ins.run(seq, Buffer.from('e'), Buffer.alloc(32), accounts[seq % 3], seq % 2 ? accounts[3] : null);
  db.close();
  const s = new SqliteStorage(path);
  await s.init();
  t.after(() => s.close());
  assert.deepEqual((await s.history(accounts[3]!, 3)).map((r) => r.seq), [49, 47, 45]);
  assert.deepEqual((await s.history(accounts[0]!, 2, 10)).map((r) => r.seq), [9, 6]);
  const check = new Database(path, { readonly: true });
  t.after(() => check.close());
  assert.deepEqual(check.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'journal_a%'`).all(), []);
  assert.equal(check.prepare(`SELECT v FROM journal_meta WHERE k = 'indexed'`).pluck().get(), 50);
  assert.equal(check.prepare('SELECT count(*) FROM account_history').pluck().get(), 75);
});

test('ledger verify opens the journal read-only: an old-format journal verifies and is left as it was (no migration)', async (t) => {
  const { makeLedger } = await import('./helpers.js');
  const { runLedgerCli } = await import('../src/cli.js');
  const f = await makeLedger(t);
  for (let i = 0; i < 5; i++) await f.ledger.transfer({ fromKeys: f.alice, to: f.bob.publicKey, amount: BigInt(i + 1) });
  await f.ledger.close();
  // Back to the layout before the deferred history index: per-row account indexes, no history tables.
  const db = new Database(f.db);
  db.exec(`DROP TABLE IF EXISTS account_history; DROP TABLE IF EXISTS journal_meta;
    CREATE INDEX journal_a1 ON journal(a1, seq); CREATE INDEX journal_a2 ON journal(a2, seq);`);
  const schema = () => db.prepare(`SELECT type, name FROM sqlite_master ORDER BY name`).all();
  const before = schema();
  const rows = db.prepare('SELECT count(*) FROM journal').pluck().get();
  db.close();
  const log = console.log, err = console.error;
  const out: string[] = [];
  console.log = (s: string) => void out.push(String(s));
  console.error = (s: string) => void out.push(String(s));
  let code: number | void;
  try {
    code = await runLedgerCli(['verify', '--db', f.db]);
  } finally {
    console.log = log;
    console.error = err;
  }
  assert.equal(code, 0, out.join('\n'));
  assert.equal(JSON.parse(out[0]!).entries, rows);
  const after = new Database(f.db, { readonly: true });
  t.after(() => after.close());
  assert.deepEqual(after.prepare(`SELECT type, name FROM sqlite_master ORDER BY name`).all(), before);
});
