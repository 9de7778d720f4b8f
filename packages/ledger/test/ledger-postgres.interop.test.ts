/** The ledger suite against a real PostgreSQL 15 server started here (Debian package postgresql-15). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import pg from 'pg';
import { makeLedger, tempDir } from './helpers.js';
import { postgresAvailable, startPostgres } from './pg-harness.js';
import { runCrashTest } from './crash-harness.js';
import { PostgresStorage } from '../src/storage-pg.js';
import { verifyJournal } from '../src/verify.js';
import { signPaymentState } from '../src/payment.js';
import { LedgerError } from '../src/state.js';
import { BTT } from '../src/codec.js';
import { assertHistoryMatchesScan } from './history-property.js';

const missing = postgresAvailable();
if (missing && process.env.CI === 'true') throw new Error(`CI: ${missing}`);
const kills = Number(process.env.LEDGER_CRASH_KILLS ?? 10);

async function freshDb(admin: string, name: string): Promise<string> {
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return admin.replace(/\/postgres$/, `/${name}`);
}

test('PostgreSQL: operations, expiry across restart, journal verify', { skip: missing ?? false }, async (t) => {
  const { url } = await startPostgres((fn) => t.after(fn));
  const db = await freshDb(url, 'ops');
  const f = await makeLedger(t, { db });
  const { alice, bob, carol, clock } = f;
  const L = f.ledger;
  assert.equal(L.storage.kind, 'postgres');
  await L.transfer({ fromKeys: alice, to: carol.publicKey, amount: 5n * BTT });
  await L.faucet({ keys: carol });
  const ch = await L.openChannel({ requesterKeys: alice, provider: bob.publicKey, deposit: 100n, expiresAt: clock.t + 10_000 });
  const ch2 = await L.openChannel({ requesterKeys: alice, provider: bob.publicKey, deposit: 50n, expiresAt: clock.t + 10_000 });
  const st = { ledgerId: L.state.ledgerId, channelId: ch.channelId, sequence: 3n, cumulative: 60n };
  await assert.rejects(L.closeChannel({ providerKeys: alice, state: st, signature: signPaymentState(st, alice.secretKey) }), (e: unknown) => e instanceof LedgerError && e.code === 'not_provider');
  await L.closeChannel({ providerKeys: bob, state: st, signature: signPaymentState(st, alice.secretKey) });
  const rs = await Promise.all(Array.from({ length: 50 }, () => L.transfer({ fromKeys: alice, to: bob.publicKey, amount: 1n })));
  assert.equal(new Set(rs.map((r) => r.seq)).size, 50);
  await L.close();
  clock.advance(10_000);
  const l2 = await f.reopen();
  assert.equal((await l2.channel(ch2.channelId))!.status, 'expired');
  assert.equal((await l2.account(bob.publicKey)).balance, 500n * BTT + 60n + 50n);
  assert.deepEqual((await l2.history(bob.publicKey, { limit: 1 }))[0]!.kind, 'expire');
  await l2.close();
  const s = new PostgresStorage(db);
  await s.init();
  const rep = await verifyJournal(s);
  await s.close();
  assert.equal(rep.ok, true, rep.error);
  assert.equal(rep.openChannels, 0);
});

test(`PostgreSQL crash: ${kills} SIGKILLs of a real ledger server`, { skip: missing ?? false }, async (t) => {
  const { url } = await startPostgres((fn) => t.after(fn));
  const db = await freshDb(url, 'crash');
  const dir = tempDir(t);
  const rep = await runCrashTest({ db, keyFile: join(dir, 'crash.key'), kills, clients: 8, seed: 777, after: (fn) => t.after(fn), log: (x) => t.diagnostic(x) });
  t.diagnostic(JSON.stringify(rep));
  assert.ok(rep.acked > kills * 5);
});

test('PostgreSQL: history answers like a full scan over random journals, before and after reopening', { skip: missing ?? false }, async (t) => {
  const { url } = await startPostgres((fn) => t.after(fn));
  await assertHistoryMatchesScan(async (run, _everyRows, _variant, reopened) => {
    const db = reopened ? url.replace(/\/postgres$/, `/hist${run}`) : await freshDb(url, `hist${run}`);
    const s = new PostgresStorage(db);
    await s.init();
    return s;
  }, 15);
});
