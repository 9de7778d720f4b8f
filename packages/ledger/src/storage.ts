/** Durable journal storage: SQLite (default, embedded) or PostgreSQL (`postgres://…`). */
import type { JournalRow } from './state.js';

export interface LedgerStorage {
  readonly kind: 'sqlite' | 'postgres';
  /** Create tables if needed. */
  init(): Promise<void>;
  /** Stream the journal rows with seq ≥ fromSeq (default 0) in order. */
  scan(onRow: (row: JournalRow) => void, fromSeq?: number): Promise<void>;
  /** Append rows (one batch) atomically; resolves only once durable (fsynced). */
  append(rows: JournalRow[]): Promise<void>;
  /** Newest-first rows touching `account`, with seq < beforeSeq. */
  history(account: Buffer, limit: number, beforeSeq?: number): Promise<JournalRow[]>;
  /**
   * Latest saved state snapshot (opaque bytes, see Ledger), or null. Optional: storages without it always replay the
   * whole journal at start-up.
   */
  loadSnapshot?(): Promise<Buffer | null>;
  /** Replace the saved snapshot, atomically (a crash leaves the old one or the new one). */
  saveSnapshot?(data: Buffer): Promise<void>;
  /** Number of rows (−1 if unknown). */
  count(): Promise<number>;
  close(): Promise<void>;
}

/** A `postgres://` or `postgresql://` URL (anything else is a SQLite file path). */
export function isPostgresUrl(db: string): boolean {
  return /^postgres(ql)?:\/\//.test(db);
}

/**
 * A SQLite file path or a postgres:// URL. `readOnly` (SQLite): open an existing file for scan() and count() only,
 * with no schema creation or migration (PostgreSQL's init() only creates what is missing).
 */
export async function openStorage(db: string, opts: { readOnly?: boolean } = {}): Promise<LedgerStorage> {
  if (isPostgresUrl(db)) {
    const { PostgresStorage } = await import('./storage-pg.js');
    return new PostgresStorage(db);
  }
  const { SqliteStorage } = await import('./storage-sqlite.js');
  return new SqliteStorage(db, { readOnly: opts.readOnly });
}
