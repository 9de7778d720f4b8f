import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from './helpers.js';
import { runCrashTest } from './crash-harness.js';

// 10 random SIGKILLs in npm test; LEDGER_CRASH_KILLS=100 for the long version (also run by `npm run bench -- ledger`).
const kills = Number(process.env.LEDGER_CRASH_KILLS ?? 10);

test(`crash: ${kills} SIGKILLs of a real server under concurrent clients (SQLite)`, async (t) => {
  const dir = tempDir(t);
  const rep = await runCrashTest({ db: join(dir, 'crash.db'), keyFile: join(dir, 'crash.key'), kills, clients: 8, seed: 4242, after: (fn) => t.after(fn), log: (s) => t.diagnostic(s) });
  t.diagnostic(JSON.stringify(rep));
  assert.ok(rep.acked > kills * 5, `enough load: ${rep.acked} acked`);
  assert.ok(rep.snapshotStarts > 0, `some restarts resumed from a snapshot: ${JSON.stringify(rep)}`);
});
