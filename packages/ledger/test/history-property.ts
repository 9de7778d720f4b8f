/** A storage's history lookups (SQLite's deferred account index, PostgreSQL's indexes) must answer like a full scan. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { LedgerStorage } from '../src/storage.js';
import type { JournalRow } from '../src/state.js';

export const historyAccounts = [1, 2, 3, 4].map((i) => Buffer.alloc(32, i));

export function historyRow(seq: number, acc: number[]): JournalRow {
  return { seq, entry: Buffer.from(`entry ${seq}`), hash: Buffer.alloc(32, seq & 255), accounts: acc.map((i) => historyAccounts[i]!) };
}

/** What history must answer: newest first, seq < before, touching the account, at most limit. */
function expected(rows: JournalRow[], a: Buffer, limit: number, before: number): number[] {
  return rows
    .filter((r) => r.seq < before && r.accounts.some((x) => x.equals(a)))
    .map((r) => r.seq)
    .reverse()
    .slice(0, limit);
}

/**
 * Random batches appended (SQLite indexes history every `everyRows` rows), then random queries, before and after
 * reopening. `open(run, everyRows, variant, reopened)` returns an initialised storage on run's own journal.
 */
export async function assertHistoryMatchesScan(open: (run: number, everyRows: number, variant: boolean, reopened: boolean) => Promise<LedgerStorage>, numRuns: number): Promise<void> {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 12 }),
      fc.integer({ min: 1, max: 9 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 80 })), { minLength: 1, maxLength: 8 }),
      fc.boolean(),
      async (batches, everyRows, queries, variant) => {
        const id = run++;
        const all: JournalRow[] = [];
        const check = async (st: LedgerStorage) => {
          for (const [ai, limit, before] of queries) {
            const got = (await st.history(historyAccounts[ai]!, limit, before)).map((r) => r.seq);
            assert.deepEqual(got, expected(all, historyAccounts[ai]!, limit, before));
          }
          for (const r of await st.history(historyAccounts[0]!, 1000)) assert.deepEqual(r.accounts, all[r.seq - 1]!.accounts);
        };
        const s = await open(id, everyRows, variant, false);
        try {
          for (const b of batches) {
            const rows = b.map((acc, i) => historyRow(all.length + 1 + i, acc));
            await s.append(rows);
            all.push(...rows);
          }
          await check(s);
        } finally {
          await s.close();
        }
        const again = await open(id, everyRows, !variant, true);
        try {
          await check(again);
        } finally {
          await again.close();
        }
      },
    ),
    { numRuns },
  );
}
