import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { makeLedger, tempDir } from './helpers.js';
import { createLedgerServer } from '../src/server.js';
import { LedgerClient } from '../src/client.js';
import { LedgerError } from '../src/state.js';
import { signPaymentState, checkPaymentState } from '../src/payment.js';
import { signOp } from '../src/ops.js';
import { BTT } from '../src/codec.js';
import { sign } from '../src/keys.js';

function raw(url: string, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      const c: Buffer[] = [];
      res.on('data', (d) => c.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(Buffer.concat(c).toString() || 'null') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function code(p: Promise<unknown>, c: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof LedgerError && e.code === c);
}

test('HTTP server + SDK: every operation, lookups, error codes, limits', async (t) => {
  const f = await makeLedger(t);
  const srv = createLedgerServer({ ledger: f.ledger, opsPerKeyPerSec: 5, clock: f.clock.now });
  const url = await srv.listen();
  t.after(() => srv.close());
  const c = new LedgerClient(url);
  t.after(() => c.close());
  const { alice, bob, carol, clock } = f;

  const info = await c.ledgerInfo();
  assert.deepEqual(info.ledgerId, f.ledger.state.ledgerId);
  assert.equal(info.supply, 990_000_000_000n * BTT);
  await c.transfer({ fromKeys: alice, to: carol.publicKey, amount: 3n });
  assert.equal((await c.account(carol.publicKey)).balance, 3n);
  const fr = await c.faucet({ keys: carol });
  assert.equal((await c.account(carol.publicKey)).balance, 3n + fr.amount);
  const { channelId } = await c.openChannel({ requesterKeys: alice, provider: bob.publicKey, deposit: 1000n, expiresAt: clock.t + 60_000 });
  await c.topUp({ requesterKeys: alice, channelId, amount: 500n });
  const ch = (await c.channel(channelId))!;
  assert.equal(ch.deposit, 1500n);
  assert.deepEqual(ch.ledgerId, info.ledgerId);
  const st = { ledgerId: info.ledgerId, channelId, sequence: 7n, cumulative: 600n };
  const sig = signPaymentState(st, alice.secretKey);
  assert.deepEqual(checkPaymentState(ch, undefined, st, sig, clock.t), { ok: true });
  await code(c.closeChannel({ providerKeys: carol, state: st, signature: sig }), 'not_provider');
  const cr = await c.closeChannel({ providerKeys: bob, state: st, signature: sig });
  const closed = (await c.channel(channelId))!;
  assert.equal(closed.status, 'closed');
  assert.equal(closed.settled, 600n);
  assert.equal(closed.closedSequence, 7n);
  assert.equal(closed.closeSeq, cr.seq);
  assert.equal(await c.channel(Buffer.alloc(32)), undefined);
  assert.equal((await c.channels(alice.publicKey)).length, 1);
  const h = await c.history(alice.publicKey, { limit: 10 });
  assert.deepEqual(h.map((e) => e.kind), ['close', 'topup', 'open', 'transfer']);
  assert.equal(h[0]!.cumulative, 600n);
  assert.deepEqual(await c.opStatus(bob.publicKey, cr.opId), { seq: cr.seq });
  assert.equal(await c.opStatus(bob.publicKey, Buffer.alloc(16)), undefined);

  // Rejections surface as codes with HTTP statuses.
  const op = signOp(info.ledgerId, alice, { kind: 'transfer', to: bob.publicKey, amount: 1n });
  await code(c.submit(Buffer.concat([op.msg, sign(op.msg, bob.secretKey)])), 'bad_signature');
  await code(c.transfer({ fromKeys: bob, to: alice.publicKey, amount: 10n ** 30n }), 'insufficient_funds');
  // Schema validation and limits.
  const J = { 'content-type': 'application/json' };
  assert.equal((await raw(url, 'POST', '/v1/ops', '{"op":"zz"}', J)).json.error.code, 'bad_request');
  assert.equal((await raw(url, 'POST', '/v1/ops', '{"op":"00","x":1}', J)).json.error.code, 'bad_request');
  assert.equal((await raw(url, 'POST', '/v1/ops', '{nope', J)).json.error.code, 'bad_json');
  assert.equal((await raw(url, 'POST', '/v1/ops', '{}', {})).status, 415);
  const big = await raw(url, 'POST', '/v1/ops', JSON.stringify({ op: 'a'.repeat(10_000) }), J);
  assert.equal(big.status, 413);
  assert.equal((await raw(url, 'PUT', '/v1/accounts/' + 'a'.repeat(64))).status, 405);
  assert.equal((await raw(url, 'GET', '/v1/accounts/xyz')).status, 404);
  assert.equal((await raw(url, 'GET', '/v1/accounts/' + 'a'.repeat(64) + '/history?limit=0')).status, 400);
  // Auto-batched submissions (one POST /v1/ops/batch): each op gets its own result or error.
  const batchOps = [
    signOp(info.ledgerId, bob, { kind: 'transfer', to: alice.publicKey, amount: 1n }).wire,
    signOp(info.ledgerId, bob, { kind: 'transfer', to: alice.publicKey, amount: 10n ** 30n }).wire,
    Buffer.concat([op.msg, sign(op.msg, bob.secretKey)]),
  ];
  const settled = await Promise.allSettled(batchOps.map((w) => c.submit(w)));
  assert.equal(settled[0]!.status, 'fulfilled');
  assert.ok(settled[1]!.status === 'rejected' && (settled[1].reason as LedgerError).code === 'insufficient_funds' && (settled[1].reason as LedgerError).status === 422);
  assert.ok(settled[2]!.status === 'rejected' && (settled[2].reason as LedgerError).code === 'bad_signature');
  assert.equal((await raw(url, 'POST', '/v1/ops/batch', JSON.stringify({ ops: [] }), J)).status, 400);
  assert.equal((await raw(url, 'POST', '/v1/ops/batch', JSON.stringify({ ops: Array(257).fill('00') }), J)).status, 400);
  const rb = await raw(url, 'POST', '/v1/ops/batch', JSON.stringify({ ops: ['zz'] }), J);
  assert.equal(rb.json.results[0].error.code, 'bad_request');
  // Per-key rate limit (5/s, burst 10): carol's key runs out, alice's does not.
  let limited = 0;
  for (let i = 0; i < 15; i++) {
    try {
      await c.transfer({ fromKeys: carol, to: bob.publicKey, amount: 1n });
    } catch (e) {
      if (e instanceof LedgerError && e.code === 'rate_limited') limited++;
      else throw e;
    }
  }
  // Burst 10; carol already used 2 (faucet, refused close) and the virtual clock does not move: 8 pass, 7 refused.
  assert.equal(limited, 7);
  await c.transfer({ fromKeys: alice, to: bob.publicKey, amount: 1n });
  assert.equal(f.ledger.state.sumBalances() + f.ledger.state.escrow, info.supply);
});

test('rate limits: forged ops do not spend the named key\'s allowance; batches pay per op per IP', async (t) => {
  const f = await makeLedger(t, { verifyThreads: 2 });
  const srv = createLedgerServer({ ledger: f.ledger, opsPerKeyPerSec: 5, requestsPerIpPerSec: 20, clock: f.clock.now });
  const url = await srv.listen();
  t.after(() => srv.close());
  const { alice, bob } = f;
  const J = { 'content-type': 'application/json' };
  // 12 ops that name alice as signer but are signed by bob: more than alice's burst (10).
  const forged = Array.from({ length: 12 }, () => {
    const op = signOp(f.ledger.state.ledgerId, alice, { kind: 'transfer', to: bob.publicKey, amount: 1n });
    return Buffer.concat([op.msg, sign(op.msg, bob.secretKey)]).toString('hex');
  });
  const r = await raw(url, 'POST', '/v1/ops/batch', JSON.stringify({ ops: forged }), J);
  assert.equal(r.status, 200);
  assert.deepEqual(new Set(r.json.results.map((x: any) => x.error.code)), new Set(['bad_signature']));
  // Alice's allowance is intact: her full burst of 10 genuine ops passes.
  const genuine = Array.from({ length: 10 }, () => signOp(f.ledger.state.ledgerId, alice, { kind: 'transfer', to: bob.publicKey, amount: 1n }).wire.toString('hex'));
  const g = await raw(url, 'POST', '/v1/ops/batch', JSON.stringify({ ops: genuine }), J);
  assert.equal(g.status, 200);
  assert.ok(g.json.results.every((x: any) => typeof x.seq === 'number'), JSON.stringify(g.json.results));
  // The IP allowance (burst 40) paid 1 per op: 12 + 10 used, so a batch of 19 more is refused whole, before any check.
  const more = Array.from({ length: 19 }, () => forged[0]!);
  const m = await raw(url, 'POST', '/v1/ops/batch', JSON.stringify({ ops: more }), J);
  assert.equal(m.status, 429);
  assert.equal(m.json.error.code, 'rate_limited');
});

test('wallet CLI against a served ledger', async (t) => {
  const dir = tempDir(t);
  const f = await makeLedger(t, { genesis: { faucetAmount: 100n * BTT, faucetDifficulty: 4 } });
  const srv = createLedgerServer({ ledger: f.ledger });
  const url = await srv.listen();
  t.after(() => srv.close());
  const bin = fileURLToPath(new URL('../../cli/bin/bitorrent.js', import.meta.url));
  const env = { ...process.env, BITORRENT_HOME: join(dir, 'home'), BITORRENT_PASSPHRASE: 'correct horse', BITORRENT_LEDGER: url };
  const run = (args: string[], extra: Record<string, string> = {}) =>
    new Promise<{ code: number; out: string; err: string }>((resolve) => {
      const p = spawn(process.execPath, [bin, 'wallet', ...args], { env: { ...env, ...extra } });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      t.after(() => p.kill('SIGKILL'));
      p.on('close', (code) => resolve({ code: code ?? 1, out, err }));
    });
  const created = await run(['create', '--json']);
  assert.equal(created.code, 0, created.err);
  const addr = JSON.parse(created.out).address as string;
  assert.equal((await run(['address'])).out.trim(), addr);
  assert.notEqual((await run(['create'])).code, 0); // exists
  assert.equal((await run(['faucet'])).code, 0);
  assert.equal((await run(['balance'])).out.trim(), '100 BTT');
  const bad = await run(['send', f.bob.publicKey.toString('hex'), '1'], { BITORRENT_PASSPHRASE: 'wrong' });
  assert.notEqual(bad.code, 0);
  assert.match(bad.err, /wrong passphrase/);
  const opId = 'ab'.repeat(16);
  const s1 = await run(['send', f.bob.publicKey.toString('hex'), '2.5', '--op-id', opId, '--json']);
  assert.equal(s1.code, 0, s1.err);
  const s2 = await run(['send', f.bob.publicKey.toString('hex'), '2.5', '--op-id', opId, '--json']);
  assert.equal(JSON.parse(s2.out).duplicate, true);
  assert.equal((await run(['balance'])).out.trim(), '97.5 BTT');
  const over = await run(['send', f.bob.publicKey.toString('hex'), '1000']);
  assert.match(over.err, /insufficient_funds/);
  const hist = JSON.parse((await run(['history', '--json'])).out).history;
  assert.deepEqual(hist.map((h: { kind: string }) => h.kind), ['transfer', 'faucet']);
  assert.deepEqual(JSON.parse((await run(['channels', '--json'])).out).channels, []);
  assert.equal((await run(['balance', f.bob.publicKey.toString('hex')])).out.trim(), '2.5 BTT');
});

test('SDK auto-batching: ops pending in one turn go out as requests of at most maxBatchOps, each op answered on its own', async (t) => {
  const f = await makeLedger(t);
  const srv = createLedgerServer({ ledger: f.ledger, clock: f.clock.now });
  const url = await srv.listen();
  t.after(() => srv.close());
  const paths: string[] = [];
  srv.server.on('request', (req) => paths.push(req.url ?? ''));
  assert.throws(() => new LedgerClient(url, { maxBatchOps: 0 }), RangeError);
  assert.throws(() => new LedgerClient(url, { maxBatchOps: 257 }), RangeError);
  const c = new LedgerClient(url, { maxBatchOps: 2 });
  t.after(() => c.close());
  const id = f.ledger.state.ledgerId;
  const ops = [1n, 2n, 3n, 4n, 5n].map((amount) => signOp(id, f.alice, { kind: 'transfer', to: f.bob.publicKey, amount }).wire);
  const before = (await c.account(f.bob.publicKey)).balance;
  const results = await Promise.all(ops.map((w) => c.submit(w)));
  // 5 ops, at most 2 per request: two batches of 2 and the last op alone on POST /v1/ops.
  assert.deepEqual(paths.filter((p) => p.startsWith('/v1/ops')).sort(), ['/v1/ops', '/v1/ops/batch', '/v1/ops/batch']);
  assert.equal(new Set(results.map((r) => r.seq)).size, 5);
  assert.equal((await c.account(f.bob.publicKey)).balance, before + 15n);
});
