/**
 * A Speed provider (seeder) in its own process, for provider-restart.test.ts: the test kills it with SIGKILL and
 * starts it again. Every accepted payment state is written durably to a state file (temp file, fsync, rename)
 * BEFORE the ack goes out (SpeedAgent's `persist` hook); on start, channels found in that file are restored and
 * closed by the agent's tick (idle requester / expiry margin).
 *
 *   node --import tsx provider-child.ts '<json config>'
 * Output: JSON lines {"event": "ready"|"restored"|"persisted"|"earned"|"channel-closed"|"warning"|"legacy", ...}.
 * Stdin: {"cmd":"shutdown"} closes every channel and exits 0.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Session } from '@bitorrent/core';
import { LedgerClient, keyPairFromSeed } from '@bitorrent/ledger';
import { SpeedAgent } from '../src/agent.js';
import type { PersistedChannel } from '../src/payments.js';
import { encodePersisted, decodePersisted } from './persist-codec.js';

interface Config {
  ledgerUrl: string;
  torrentPath: string;
  seedDir: string;
  stateFile: string;
  walletSeed: number;
  port: number;
  pieceLength: number;
  reservePrice: string;
  idleCloseMs: number;
  uploadRateLimit: number;
}

const cfg = JSON.parse(process.argv[2]) as Config;
const emit = (event: string, o: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...o })}\n`);
const total = (list: PersistedChannel[]) => list.reduce((s, c) => s + c.cumulative, 0n);

function persist(list: PersistedChannel[]): void {
  const tmp = `${cfg.stateFile}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, encodePersisted(list));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, cfg.stateFile);
  emit('persisted', { channels: list.length, total: total(list).toString() });
}

async function main(): Promise<void> {
  const keys = keyPairFromSeed(Buffer.alloc(32, cfg.walletSeed));
  const ledger = new LedgerClient(cfg.ledgerUrl, { timeoutMs: 2_000 });
  const ledgerId = (await ledger.ledgerInfo()).ledgerId;
  const agent = new SpeedAgent({
    ledger,
    ledgerId,
    keys,
    now: Date.now,
    pieceLength: cfg.pieceLength,
    bidding: { enabled: false },
    reservePrice: BigInt(cfg.reservePrice),
    provider: { maxUnpaid: 1, idleCloseMs: cfg.idleCloseMs },
    persist,
  });
  agent.on('earned', (peer: string, amount: bigint) => emit('earned', { peer, amount: amount.toString(), total: agent.provider.totalEarned().toString() }));
  agent.on('channel-closed', (id: Buffer, amount: bigint) => emit('channel-closed', { id: id.toString('hex'), amount: amount.toString() }));
  agent.on('warning', (m: string) => emit('warning', { message: m }));
  agent.on('legacy', (peer: string, reason: string) => emit('legacy', { peer, reason }));
  if (existsSync(cfg.stateFile)) {
    const list = decodePersisted(readFileSync(cfg.stateFile, 'utf8'));
    agent.provider.importChannels(list, Date.now());
    emit('restored', { channels: list.length, total: total(list).toString(), ids: list.map((c) => c.info.id.toString('hex')) });
  }
  const session = new Session({ port: cfg.port, host: '127.0.0.1', hasherWorkers: 0, uploadRateLimit: cfg.uploadRateLimit });
  await session.listen();
  const torrent = await session.add({ ...agent.torrentOptions(), torrent: readFileSync(cfg.torrentPath), path: cfg.seedDir, skipHashCheck: true });
  agent.attach(torrent);
  const timer = setInterval(() => void agent.tick(), 100);
  emit('ready', { port: session.port });
  const quit = async () => {
    clearInterval(timer);
    await agent.shutdown();
    await session.close();
    emit('exit');
    process.exit(0);
  };
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.includes('"shutdown"')) void quit();
  });
  process.once('SIGTERM', () => void quit());
}

main().catch((e: Error) => {
  emit('error', { message: e.stack ?? e.message });
  process.exit(1);
});
