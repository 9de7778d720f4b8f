/**
 * The real `bitorrent seed --speed` provider, SIGKILLed (by PID) mid-transfer and started again: every payment
 * state it acknowledged was on disk first (<state-dir>/speed/…/channels-<pid>.json, temp + fsync + rename); the
 * restarted process restores it and closes the channel with it on the ledger (here at Ctrl-C/SIGTERM, before
 * expiry): the provider is paid exactly the persisted state, the requester refunded the rest.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LedgerClient, BTT, encryptKeystore, writeKeystore } from '@bitorrent/ledger';
import { runCli, SAFE } from '../../cli/test/helpers/cli-proc.js';
import type { PersistedChannel } from '../src/payments.js';
import { decodePersisted, speedStateDir } from '../src/persist.js';
import { tempDir, wallet, makePayload, startPeer, ticker, until, ledgerService } from './speed-swarm.js';

const PIECE = 16 * 1024;
const PIECES = 24;
const RESERVE = 1000n;
const START = 1000n * BTT;

const sum = (list: PersistedChannel[]) => list.reduce((s, c) => s + c.cumulative, 0n);

test('bitorrent seed --speed: SIGKILL mid-transfer, restart, the persisted channel state is closed on the ledger, exact', async (t) => {
  const dir = tempDir(t, 'speed-cli-crash-');
  const seederKeys = wallet(0xc1);
  const bidderKeys = wallet(0xc2);
  const svc = await ledgerService(t, join(dir, 'ledger.db'), [bidderKeys.publicKey], START);
  const ledgerId = (await svc.ledger.ledgerInfo()).ledgerId;
  const { seedDir, torrent, torrentPath } = await makePayload(dir, PIECES * PIECE, PIECE);
  const walletPath = join(dir, 'seeder-wallet.json');
  writeKeystore(walletPath, encryptKeystore(seederKeys, 'pw', 1 << 10));
  const stateDir = join(dir, 'state');
  const sdir = speedStateDir(stateDir, ledgerId, seederKeys.publicKey);
  const args = ['seed', torrentPath, '--data', seedDir, '--json', ...SAFE, '--no-resume', '--speed', '--spending-rate', '0', '--reserve-price', RESERVE.toString(), '--wallet', walletPath, '--ledger', svc.url, '--state-dir', stateDir, '--max-up', '64K'];
  const env = { BITORRENT_PASSPHRASE: 'pw', NODE_OPTIONS: '' };

  const p1 = runCli(t, args, { env });
  const port = Number((await p1.waitJson((o) => o.event === 'seeding', 30_000)).port);
  const client = new LedgerClient(svc.url, { timeoutMs: 2_000 });
  t.after(() => client.close());
  const bidder = await startPeer(t, { torrent, path: join(dir, 'bidder'), peers: [{ host: '127.0.0.1', port }], agent: { ledger: client, ledgerId, keys: bidderKeys, now: Date.now, pieceLength: PIECE } });
  const bAgent = bidder.agent!;
  await bAgent.refreshBalance();
  const tick = ticker(t, () => [bAgent]);
  const file1 = join(sdir, `channels-${p1.pid}.json`);
  const onDisk = () => (existsSync(file1) ? sum(decodePersisted(readFileSync(file1, 'utf8'))) : 0n);
  // Two pieces' worth accepted (written before their acks): crash now.
  await until(() => onDisk() >= 2n * RESERVE * BigInt(PIECE), () => `persisted ${onDisk()}; seeder stderr: ${p1.stderr().slice(-2000)}`, 30_000, [bAgent], ['paid']);
  process.kill(p1.pid, 'SIGKILL');
  assert.equal((await p1.exited).signal, 'SIGKILL');
  tick.stop();
  await bidder.session.close(); // the requester is gone for good: nobody will resync the provider

  const saved = decodePersisted(readFileSync(file1, 'utf8'));
  assert.equal(saved.length, 1);
  const expected = sum(saved);
  assert.ok(expected <= bAgent.totalPaid(), `disk ${expected}, signed ${bAgent.totalPaid()}`);
  assert.ok(expected < RESERVE * BigInt(PIECES * PIECE), 'the crash was mid-transfer');
  // Not necessarily a whole number of pieces: blocks sent before the bid was answered are free (price 0), so the
  // first paid piece can be partly free (docs/speed-protocol.md §5.2). Exactness is checked on the ledger below.
  assert.ok(expected > 0n && expected % RESERVE === 0n, `persisted ${expected}: paid per byte at the reserve price`);
  const chId = saved[0].info.id;
  assert.equal((await svc.ledger.channel(chId))?.status, 'open');
  assert.equal((await svc.ledger.account(seederKeys.publicKey)).balance, 0n);

  // Restart: the dead run's state is restored and adopted; Ctrl-C/SIGTERM closes it with the last state.
  const p2 = runCli(t, args, { env });
  await p2.waitJson((o) => o.event === 'seeding', 30_000);
  assert.match(p2.stderr(), /1 unclosed channel\(s\) from an earlier run restored/);
  // The dead run's file was adopted (deleted); only p2's own remains. p2 may be mid-write of that file at this
  // moment (temp file + rename), so its own temp file is not a leftover.
  assert.deepEqual(readdirSync(sdir).filter((f) => f !== `channels-${p2.pid}.json.${p2.pid}.tmp`), [`channels-${p2.pid}.json`]);
  p2.kill('SIGTERM');
  const ex = await p2.exited;
  assert.equal(ex.code, 0, p2.stderr());
  const ch = (await svc.ledger.channel(chId))!;
  assert.equal(ch.status, 'closed');
  assert.equal(ch.settled, expected);
  assert.ok(Date.now() < ch.expiresAt);
  assert.equal((await svc.ledger.account(seederKeys.publicKey)).balance, expected);
  assert.equal((await svc.ledger.account(bidderKeys.publicKey)).balance, START - expected);
  assert.equal((await svc.ledger.ledgerInfo()).openChannels, 0);
  assert.deepEqual(readdirSync(sdir), [], 'everything closed: no state left');
  t.diagnostic(`persisted and settled ${expected} base units (${expected / (RESERVE * BigInt(PIECE))} pieces)`);
});
