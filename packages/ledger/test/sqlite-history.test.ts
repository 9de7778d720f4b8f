import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import fc from 'fast-check';
import Database from 'better-sqlite3';
import { SqliteStorage } from '../src/storage-sqlite.js';
import type { JournalRow } from '../src/state.js';
import { tempDir } from './helpers.js';

const accounts = [1, 2, 3, 4].map((i) => Buffer.alloc(32, i));

function row(seq: number, acc: number[]): JournalRow {
  return { seq, entry: Buffer.from(`entry ${seq}`), hash: Buffer.alloc(32, seq & 255), accounts: acc.map((i) => accounts[i]!) };
}

/** What history must answer: newest first, seq < before, touching the account, at most limit. */
function expected(rows: JournalRow[], a: Buffer, limit: number, before: number): number[] {
  return rows
    .filter((r) => r.seq < before && r.accounts.some((x) => x.equals(a)))
    .map((r) => r.seq)
    .reverse()
    .slice(0, limit);
}

test('history: the deferred account index plus the scanned tail answer like a full scan, before and after reopening', async (t) => {
  const dir = tempDir(t);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 12 }),
      fc.integer({ min: 1, max: 9 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 80 })), { minLength: 1, maxLength: 8 }),
      fc.boolean(),
      async (batches, everyRows, queries, threaded) => {
        const path = join(dir, `h${run++}.db`);
        let s = new SqliteStorage(path, { threaded, indexEveryRows: everyRows });
        await s.init();
        const all: JournalRow[] = [];
        for (const b of batches) {
          const rows = b.map((acc, i) => row(all.length + 1 + i, acc));
          await s.append(rows).catch(async (e) => {
            await s.close();
            throw e;
          });
          all.push(...rows);
        }
        const check = async (st: SqliteStorage) => {
          for (const [ai, limit, before] of queries) {
            const got = (await st.history(accounts[ai]!, limit, before)).map((r) => r.seq);
            assert.deepEqual(got, expected(all, accounts[ai]!, limit, before));
          }
          const full = await st.history(accounts[0]!, 1000);
          for (const r of full) assert.deepEqual(r.accounts, all[r.seq - 1]!.accounts);
        };
        try {
          await check(s);
        } finally {
          await s.close();
        }
        s = new SqliteStorage(path, { threaded: !threaded, indexEveryRows: everyRows });
        await s.init();
        try {
          await check(s);
        } finally {
          await s.close();
        }
      },
    ),
    { numRuns: 40 },
  );
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
