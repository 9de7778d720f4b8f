import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger, type LedgerOptions, type GenesisParams } from '../src/ledger.js';
import { keyPairFromSeed, type KeyPair } from '../src/keys.js';
import { BTT, sha256 } from '../src/codec.js';

export function seededKeys(name: string): KeyPair {
  return keyPairFromSeed(sha256(Buffer.from('test-key:' + name)));
}

export function tempDir(t: { after(fn: () => void | Promise<void>): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'btt-ledger-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export class VirtualClock {
  constructor(public t = 1_700_000_000_000) {}
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export interface Fixture {
  ledger: Ledger;
  clock: VirtualClock;
  ledgerKeys: KeyPair;
  alice: KeyPair;
  bob: KeyPair;
  carol: KeyPair;
  db: string;
  reopen(): Promise<Ledger>;
}

export async function makeLedger(
  t: { after(fn: () => void | Promise<void>): void },
  o: { db?: string; genesis?: GenesisParams; verifyThreads?: number } & Partial<LedgerOptions> = {},
): Promise<Fixture> {
  const db = o.db ?? join(tempDir(t), 'ledger.db');
  const clock = new VirtualClock();
  const ledgerKeys = seededKeys('ledger');
  const alice = seededKeys('alice');
  const bob = seededKeys('bob');
  const carol = seededKeys('carol');
  const genesis: GenesisParams = o.genesis ?? {
    allocations: [
      { account: alice.publicKey, amount: 1000n * BTT },
      { account: bob.publicKey, amount: 500n * BTT },
    ],
    faucetAmount: 10n * BTT,
    faucetDifficulty: 4,
    maxChannelMs: 3600_000,
    createdAt: clock.t,
  };
  const base = { ...o, db, ledgerKeys, genesis, clock: clock.now, expiryIntervalMs: 0, verifyThreads: o.verifyThreads ?? 0 };
  const f: Fixture = {
    ledger: await Ledger.open(base),
    clock,
    ledgerKeys,
    alice,
    bob,
    carol,
    db,
    async reopen() {
      await f.ledger.close();
      f.ledger = await Ledger.open(base);
      return f.ledger;
    },
  };
  t.after(() => f.ledger.close());
  return f;
}
