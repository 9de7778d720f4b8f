/**
 * Shared set-up for the Speed swarm tests that run real core Sessions on loopback with a real ledger
 * (libtorrent-swarm.interop, ledger-outage, provider-restart). Not a test file itself.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent, type Torrent, type PeerAddress, type UploadGate } from '@bitorrent/core';
import { Ledger, createLedgerServer, keyPairFromSeed, type KeyPair } from '@bitorrent/ledger';
import { SpeedAgent, type SpeedAgentOptions } from '../src/agent.js';

export interface After {
  after(fn: () => unknown): void;
}

/** A temp dir removed after the test. */
export function tempDir(t: After, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Deterministic wallet key pair n (1..255). */
export function wallet(n: number): KeyPair {
  return keyPairFromSeed(Buffer.alloc(32, n));
}

/** A fresh embedded ledger (SQLite in `dir`), funding each key with `amount` at genesis. Closed after the test. */
export async function openLedger(t: After, dir: string, funded: Buffer[], amount: bigint, clock?: () => number): Promise<Ledger> {
  const ledger = await Ledger.open({
    db: join(dir, 'ledger.db'),
    ledgerKeys: wallet(0xf0),
    genesis: { allocations: funded.map((account) => ({ account, amount })), faucetAmount: 0n, ...(clock ? { createdAt: clock() } : {}) },
    ...(clock ? { clock } : {}),
    expiryIntervalMs: 0,
    verifyThreads: 0,
  });
  t.after(() => ledger.close().catch(() => {}));
  return ledger;
}

/** Random payload of `size` bytes in `dir`/seed/payload.bin and its .torrent (also written to `dir`/payload.torrent). */
export async function makePayload(dir: string, size: number, pieceLength: number): Promise<{ seedDir: string; file: string; data: Buffer; torrent: Buffer; torrentPath: string }> {
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir, { recursive: true });
  const file = join(seedDir, 'payload.bin');
  const data = randomBytes(size);
  writeFileSync(file, data);
  const { torrent } = await createTorrent({ path: file, pieceLength });
  const torrentPath = join(dir, 'payload.torrent');
  writeFileSync(torrentPath, torrent);
  return { seedDir, file, data, torrent, torrentPath };
}

export interface SpeedPeer {
  session: Session;
  torrent: Torrent;
  agent?: SpeedAgent;
}

/**
 * A core Session on 127.0.0.1 (ephemeral port) holding `torrent`, with a SpeedAgent attached when `agent` options
 * are given (none: a plain legacy peer). The session is closed after the test.
 */
export async function startPeer(
  t: After,
  o: {
    torrent: Buffer;
    path: string;
    seed?: boolean;
    peers?: PeerAddress[];
    agent?: SpeedAgentOptions;
    uploadRateLimit?: number;
    uploadSlots?: number;
    /** Wrap the agent's upload gate (to observe what is served to whom). */
    gate?: (g: UploadGate) => UploadGate;
  },
): Promise<SpeedPeer> {
  const session = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0, uploadRateLimit: o.uploadRateLimit ?? 0 });
  t.after(() => session.close().catch(() => {}));
  await session.listen();
  const agent = o.agent ? new SpeedAgent(o.agent) : undefined;
  mkdirSync(o.path, { recursive: true });
  const opts = agent?.torrentOptions();
  if (opts?.uploadGate && o.gate) opts.uploadGate = o.gate(opts.uploadGate);
  const torrent = await session.add({
    ...opts,
    torrent: o.torrent,
    path: o.path,
    peers: o.peers,
    ...(o.seed ? { skipHashCheck: true } : {}),
    ...(o.uploadSlots ? { uploadSlots: o.uploadSlots } : {}),
  });
  agent?.attach(torrent);
  return { session, torrent, agent };
}

/** Ticks every agent every `ms` (as the CLI does each second), until the test ends or stop() is called. */
export function ticker(t: After, agents: () => SpeedAgent[], ms = 100): { stop(): void } {
  const timer = setInterval(() => {
    for (const a of agents()) void a.tick();
  }, ms);
  const stop = () => clearInterval(timer);
  t.after(stop);
  return { stop };
}

/** Resolves with `p`, or rejects with `what()` after `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what()}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for a condition that is a consequence of network messages between agents (no event exposes it):
 * re-checks it each time one of `emitters` emits one of `events`, and on a coarse backstop interval.
 */
export async function until(cond: () => boolean, what: () => string, ms = 15_000, emitters: { on(e: string, f: () => void): unknown; off(e: string, f: () => void): unknown }[] = [], events: string[] = []): Promise<void> {
  if (cond()) return;
  let iv: NodeJS.Timeout | undefined;
  let check = () => {};
  try {
    await withTimeout(
      new Promise<void>((resolve) => {
        check = () => {
          if (cond()) resolve();
        };
        iv = setInterval(check, 20);
        for (const em of emitters) for (const e of events) em.on(e, check);
      }),
      ms,
      what,
    );
  } finally {
    clearInterval(iv);
    for (const em of emitters) for (const e of events) em.off(e, check);
  }
}

/** An embedded ledger behind its HTTP server; stop() closes both, start() reopens the same journal on the same port. */
export async function ledgerService(t: After, db: string, funded: Buffer[], amount: bigint, clock: () => number = Date.now) {
  const ledgerKeys = wallet(0xf1);
  let ledger: Ledger | undefined;
  let srv: ReturnType<typeof createLedgerServer> | undefined;
  let port = 0;
  const svc = {
    url: '',
    up: false,
    get ledger(): Ledger {
      return ledger!;
    },
    async start(): Promise<void> {
      ledger = await Ledger.open({ db, ledgerKeys, genesis: { allocations: funded.map((account) => ({ account, amount })), faucetAmount: 0n, createdAt: clock() }, clock, expiryIntervalMs: 0, verifyThreads: 0 });
      srv = createLedgerServer({ ledger, port });
      svc.url = await srv.listen();
      port = Number(new URL(svc.url).port);
      svc.up = true;
    },
    /** Stops accepting connections synchronously (server.close), then closes the journal. */
    async stop(): Promise<void> {
      svc.up = false;
      const s = srv, l = ledger;
      srv = undefined;
      ledger = undefined;
      await s?.close();
      await l?.close();
    },
  };
  await svc.start();
  t.after(() => svc.stop());
  return svc;
}

