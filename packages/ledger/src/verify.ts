/** Offline journal verification: replay from genesis checking every hash link, signature, checkpoint and the final state. */
import type { LedgerStorage } from './storage.js';
import { LedgerState, decodeEntry } from './state.js';

export interface VerifyReport {
  ok: boolean;
  entries: number;
  height: number;
  ledgerId?: string;
  supply?: string;
  balances?: string;
  escrow?: string;
  accounts?: number;
  openChannels?: number;
  error?: string;
}

export async function verifyJournal(storage: LedgerStorage): Promise<VerifyReport> {
  let state: LedgerState | null = null;
  let entries = 0;
  let lastHadCheckpoint = false;
  try {
    await storage.scan((row) => {
      if (!state) {
        const e = decodeEntry(row.entry);
        if (e.type !== 'genesis') throw new Error('journal does not start with a genesis entry');
        state = new LedgerState(e.genesis);
      }
      state.replay(row, true);
      lastHadCheckpoint = !!row.checkpoint;
      entries++;
    });
  } catch (e) {
    const s = state as LedgerState | null;
    return { ok: false, entries, height: s?.height ?? -1, error: (e as Error).message };
  }
  const s = state as LedgerState | null;
  if (!s) return { ok: false, entries: 0, height: -1, error: 'empty journal' };
  const balances = s.sumBalances();
  const base = {
    entries,
    height: s.height,
    ledgerId: s.ledgerId.toString('hex'),
    supply: s.genesis.supply.toString(),
    balances: balances.toString(),
    escrow: s.escrow.toString(),
    accounts: s.accounts.size,
    openChannels: s.openChannels,
  };
  let error: string | undefined;
  let openEscrow = 0n;
  for (const c of s.channels.values()) if (c.status === 'open') openEscrow += c.deposit;
  if (openEscrow !== s.escrow) error = 'escrow total differs from open channels';
  for (const a of s.accounts.values()) if (a.balance < 0n) error = 'negative balance';
  if (balances + s.escrow !== s.genesis.supply) error = `supply not conserved: ${balances} + ${s.escrow} != ${s.genesis.supply}`;
  if (!lastHadCheckpoint) error = 'last entry carries no signed checkpoint';
  return error ? { ok: false, ...base, error } : { ok: true, ...base };
}
