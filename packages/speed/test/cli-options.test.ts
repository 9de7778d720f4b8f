/** setupSpeed: off by default, off without a wallet, disclosure with the real balance, bad input rejected. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger, keyPairFromSeed, BTT } from '@bitorrent/ledger';
import { encryptKeystore, writeKeystore } from '@bitorrent/ledger';
import { setupSpeed, speedCliOptions } from '../src/cli-options.js';

test('setupSpeed: off unless --speed and a wallet; disclosure states the cap, rate and balance; --no-speed wins', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'speed-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const keys = keyPairFromSeed(Buffer.alloc(32, 0x61));
  const ledger = await Ledger.open({
    db: join(dir, 'ledger.db'),
    ledgerKeys: keyPairFromSeed(Buffer.alloc(32, 0x60)),
    genesis: { allocations: [{ account: keys.publicKey, amount: 50n * BTT }], faucetAmount: 0n },
    verifyThreads: 0,
  });
  t.after(() => ledger.close());
  const wallet = join(dir, 'wallet.json');
  const env = { BITORRENT_PASSPHRASE: 'pw', BITORRENT_HOME: dir };
  const logs: string[] = [];
  const ctx = { stdout: () => {}, log: (s: string) => void logs.push(s), env, ledger };
  const parse = (args: string[]) => parseArgs({ args, options: speedCliOptions, strict: true }).values;

  assert.equal(await setupSpeed(parse([]), ctx), undefined); // default off
  assert.equal(await setupSpeed(parse(['--speed']), ctx), undefined); // no wallet yet
  assert.match(logs.join('\n'), /Speed off: no wallet/);
  writeKeystore(wallet, encryptKeystore(keys, 'pw', 1 << 10));
  assert.equal(await setupSpeed(parse(['--speed', '--no-speed']), ctx), undefined);

  const s = await setupSpeed(parse(['--speed', '--spending-rate', '0.5', '--max-spend', '2.5']), ctx);
  assert.ok(s);
  t.after(() => s.close());
  assert.match(s.disclosure, /^Speed on: spending up to 2\.5 BTT on each torrent at rate 0\.5; balance 50 BTT/);
  const opts = s.perTorrentOptions(Buffer.alloc(20, 7), () => 1 << 20);
  assert.equal(opts.extensions?.length, 1);
  assert.ok(opts.choker && opts.uploadGate);
  assert.equal(s.agents.length, 1);

  assert.equal(s.agents[0].provider.maxUnpaid, 64, 'default K: 16 MiB of 256 KiB pieces (no metadata yet)');
  // --unpaid-limit in whole pieces of the torrent.
  const s2 = await setupSpeed(parse(['--speed', '--unpaid-limit', '1M']), ctx);
  assert.ok(s2);
  t.after(() => s2.close());
  s2.perTorrentOptions(Buffer.alloc(20, 8), () => 1 << 20);
  assert.equal(s2.agents[0].provider.maxUnpaid, 4);
  await assert.rejects(setupSpeed(parse(['--speed', '--unpaid-limit', 'lots']), ctx), /--unpaid-limit must be a size/);
  await assert.rejects(setupSpeed(parse(['--speed', '--unpaid-limit', '0']), ctx), /--unpaid-limit must be a size/);
  await assert.rejects(setupSpeed(parse(['--speed', '--spending-rate', '1.5']), ctx), /--spending-rate must be a number 0\.\.1/);
  await assert.rejects(setupSpeed(parse(['--speed', '--max-spend', 'lots']), ctx), /--max-spend must be a BTT amount/);
  await assert.rejects(setupSpeed(parse(['--speed']), { ...ctx, env: { ...env, BITORRENT_PASSPHRASE: 'wrong' } }), /wrong passphrase/);
  // Ledger unreachable: said clearly, plain peer.
  logs.length = 0;
  const down = await setupSpeed(parse(['--speed', '--ledger', 'http://127.0.0.1:1']), { stdout: () => {}, log: (m: string) => void logs.push(m), env });
  assert.equal(down, undefined);
  assert.match(logs.join('\n'), /Speed off: ledger http:\/\/127\.0\.0\.1:1 unreachable/);
});
