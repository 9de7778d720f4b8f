import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { join } from 'node:path';
import { makeLedger, seededKeys, tempDir } from './helpers.js';
import { LedgerError, LedgerState } from '../src/state.js';
import { signPaymentState } from '../src/payment.js';
import { verifyJournal } from '../src/verify.js';
import { SqliteStorage } from '../src/storage-sqlite.js';
import type { KeyPair } from '../src/keys.js';

type Cmd =
  | { t: 'transfer'; from: number; to: number; amount: number }
  | { t: 'open'; from: number; to: number; deposit: number; ttl: number }
  | { t: 'topup'; ch: number; amount: number; extend: number }
  | { t: 'close'; ch: number; frac: number; wrongSigner: boolean }
  | { t: 'advance'; ms: number }
  | { t: 'faucet'; who: number }
  | { t: 'retry'; idx: number };

const N = 4;
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ t: fc.constant('transfer' as const), from: fc.nat(N - 1), to: fc.nat(N - 1), amount: fc.integer({ min: 0, max: 400 }) }),
  fc.record({ t: fc.constant('open' as const), from: fc.nat(N - 1), to: fc.nat(N - 1), deposit: fc.integer({ min: 0, max: 300 }), ttl: fc.integer({ min: 1, max: 5000 }) }),
  fc.record({ t: fc.constant('topup' as const), ch: fc.nat(20), amount: fc.integer({ min: 0, max: 100 }), extend: fc.integer({ min: 0, max: 2000 }) }),
  fc.record({ t: fc.constant('close' as const), ch: fc.nat(20), frac: fc.integer({ min: 0, max: 120 }), wrongSigner: fc.boolean() }),
  fc.record({ t: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3000 }) }),
  fc.record({ t: fc.constant('faucet' as const), who: fc.nat(N - 1) }),
  fc.record({ t: fc.constant('retry' as const), idx: fc.nat(50) }),
);

test('random operation sequences: conservation, no negative balance, journal replay reproduces the state', async (t) => {
  const dir = tempDir(t);
  let run = 0;
  const okCount: Record<string, number> = {};
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(cmd, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 12 }), async (rounds) => {
      const db = join(dir, `p${run++}.db`);
      const keys: KeyPair[] = Array.from({ length: N }, (_, i) => seededKeys('p' + i));
      const holder: { after: (() => void | Promise<void>)[] } = { after: [] };
      const f = await makeLedger({ after: (fn) => holder.after.push(fn) }, {
        db,
        genesis: { allocations: keys.slice(0, 3).map((k) => ({ account: k.publicKey, amount: 1000n })), faucetAmount: 50n, faucetDifficulty: 2, maxChannelMs: 6000, createdAt: 1_700_000_000_000 },
      });
      const L = f.ledger;
      const lid = L.state.ledgerId;
      const channels: { id: Buffer; req: KeyPair; prov: KeyPair; deposit: bigint }[] = [];
      const sent: Buffer[] = [];
      const supply = L.state.genesis.supply;
      try {
        for (const round of rounds) {
          const ps = round.map(async (c): Promise<void> => {
            try {
              await doCmd(c);
              okCount[c.t] = (okCount[c.t] ?? 0) + 1;
            } catch (e) {
              if (!(e instanceof LedgerError)) throw e;
              assert.notEqual(e.code, 'unavailable');
            }
          });
          async function doCmd(c: Cmd): Promise<void> {
            {
              if (c.t === 'transfer') {
                const r = await L.transfer({ fromKeys: keys[c.from]!, to: keys[c.to]!.publicKey, amount: BigInt(c.amount) });
                void r;
              } else if (c.t === 'open') {
                const r = await L.openChannel({ requesterKeys: keys[c.from]!, provider: keys[c.to]!.publicKey, deposit: BigInt(c.deposit), expiresAt: f.clock.t + c.ttl });
                channels.push({ id: r.channelId, req: keys[c.from]!, prov: keys[c.to]!, deposit: BigInt(c.deposit) });
              } else if (c.t === 'topup') {
                const ch = channels[c.ch % Math.max(1, channels.length)];
                if (!ch) return;
                const info = await L.channel(ch.id);
                await L.topUp({ requesterKeys: ch.req, channelId: ch.id, amount: BigInt(c.amount), expiresAt: (info?.expiresAt ?? 0) + c.extend });
              } else if (c.t === 'close') {
                const ch = channels[c.ch % Math.max(1, channels.length)];
                if (!ch) return;
                const info = await L.channel(ch.id);
                const dep = info?.deposit ?? ch.deposit;
                const state = { ledgerId: lid, channelId: ch.id, sequence: 1n, cumulative: (dep * BigInt(c.frac)) / 100n };
                const sig = signPaymentState(state, ch.req.secretKey);
                await L.closeChannel({ providerKeys: c.wrongSigner ? ch.req : ch.prov, state, signature: sig });
              } else if (c.t === 'advance') {
                f.clock.advance(c.ms);
                await L.tick();
              } else if (c.t === 'faucet') {
                await L.faucet({ keys: keys[c.who]! });
              } else if (c.t === 'retry') {
                const w = sent[c.idx % Math.max(1, sent.length)];
                if (w) {
                  const r = await L.submit(w);
                  assert.equal(r.duplicate, true);
                }
              }
            }
          }
          await Promise.all(ps);
          // Remember applied wire ops for retries.
          const rows = await L.storage.history(keys[0]!.publicKey, 5);
          for (const r of rows) if (r.entry[16] === 1) sent.push(Buffer.from(r.entry.subarray(17)));
          const s = L.state;
          assert.equal(s.sumBalances() + s.escrow, supply, 'conservation');
          for (const a of s.accounts.values()) assert.ok(a.balance >= 0n, 'no negative balance');
          let open = 0n;
          for (const c of s.channels.values()) {
            if (c.status === 'open') open += c.deposit;
            assert.ok(c.settled <= c.deposit);
          }
          assert.equal(open, s.escrow);
        }
        const digest = L.state.digest;
        const height = L.state.height;
        await f.ledger.close();
        // Independent replay from the journal with signature checks.
        const st = new SqliteStorage(db);
        await st.init();
        const rep = await verifyJournal(st);
        await st.close();
        assert.equal(rep.ok, true, rep.error);
        assert.equal(rep.height, height);
        const l2 = await f.reopen();
        assert.deepEqual(l2.state.digest, digest);
        assert.ok(l2.state instanceof LedgerState);
      } finally {
        for (const fn of holder.after) await fn();
      }
    }),
    { numRuns: 25, seed: 20261122 },
  );
  for (const k of ['transfer', 'open', 'topup', 'close', 'faucet', 'retry']) assert.ok((okCount[k] ?? 0) > 0, `some ${k} succeeded: ${JSON.stringify(okCount)}`);
});
