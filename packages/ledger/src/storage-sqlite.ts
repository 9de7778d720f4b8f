/**
 * SQLite journal store: WAL mode, synchronous=FULL, one transaction (one fsync) per batch; schema, writer and the
 * deferred per-account history index in sqlite-journal.mjs. By default appends run on a writer thread
 * (sqlite-writer.mjs) so the event loop keeps serving and verifying while a batch is fsynced; reads use a second
 * connection on the main thread (WAL readers see committed batches only).
 */
import Database from 'better-sqlite3';
import { Worker } from 'node:worker_threads';
import { open as fsOpen, readFile, rename, unlink } from 'node:fs/promises';
import type { LedgerStorage } from './storage.js';
import type { JournalRow } from './state.js';
import { openJournalWriter, HISTORY_SQL, type JournalWriter } from './sqlite-journal.mjs';

type Row = { seq: number; entry: Buffer; hash: Buffer; a1: Buffer | null; a2: Buffer | null; cp_digest: Buffer | null; cp_sig: Buffer | null };

/** One batch as the journal writer takes it (see openJournalWriter in sqlite-journal.mjs). */
function packRows(rows: JournalRow[]): Buffer {
  let size = 0;
  for (const r of rows) size += 13 + r.entry.length + 32 + 32 * Math.min(2, r.accounts.length) + (r.checkpoint ? 96 : 0);
  const buf = Buffer.allocUnsafeSlow(size);
  let o = 0;
  for (const r of rows) {
    const n = Math.min(2, r.accounts.length);
    buf.writeBigUInt64BE(BigInt(r.seq), o);
    buf[o + 8] = n | (r.checkpoint ? 4 : 0);
    buf.writeUInt32BE(r.entry.length, o + 9);
    o += 13;
    o += r.entry.copy(buf, o);
    o += r.hash.copy(buf, o);
    for (let i = 0; i < n; i++) o += r.accounts[i]!.copy(buf, o);
    if (r.checkpoint) {
      o += r.checkpoint.digest.copy(buf, o);
      o += r.checkpoint.sig.copy(buf, o);
    }
  }
  return buf;
}

function toRow(r: Row): JournalRow {
  const accounts = [r.a1, r.a2].filter((x): x is Buffer => x !== null);
  const row: JournalRow = { seq: r.seq, entry: r.entry, hash: r.hash, accounts };
  if (r.cp_digest && r.cp_sig) row.checkpoint = { digest: r.cp_digest, sig: r.cp_sig };
  return row;
}

export class SqliteStorage implements LedgerStorage {
  readonly kind = 'sqlite' as const;
  private db: Database.Database;
  /** Inline mode (no writer thread): the journal writer on this connection. */
  private inline: JournalWriter | null = null;
  private historyQuery!: Database.Statement;

  private worker: Worker | null = null;
  private nextId = 1;
  private waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private workerError: Error | null = null;

  constructor(
    readonly path: string,
    /**
     * threaded: writer thread (default for files); indexEveryRows: history index batch (tests; see sqlite-journal.mjs);
     * readOnly: an existing database, opened read-only for scan() and count() only (`ledger verify`: no schema
     * creation or migration, no writer).
     */
    readonly opts: { threaded?: boolean; indexEveryRows?: number; readOnly?: boolean } = {},
  ) {
    this.db = opts.readOnly ? new Database(path, { readonly: true, fileMustExist: true }) : new Database(path);
  }

  private call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<void> {
    const w = this.worker!;
    if (this.workerError) return Promise.reject(this.workerError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.postMessage({ ...msg, id }, transfer);
    });
  }

  async init(): Promise<void> {
    if (this.opts.readOnly) return;
    const threaded = this.opts.threaded ?? (this.path !== ':memory:' && this.path !== '');
    if (threaded) {
      const w = new Worker(new URL('./sqlite-writer.mjs', import.meta.url));
      w.on('message', (m: { id: number; ok: boolean; error?: string }) => {
        const p = this.waiting.get(m.id);
        if (!p) return;
        this.waiting.delete(m.id);
        if (m.ok) p.resolve();
        else p.reject(new Error(`sqlite: ${m.error}`));
      });
      const fail = (e: Error) => {
        this.workerError = e;
        for (const p of this.waiting.values()) p.reject(e);
        this.waiting.clear();
      };
      w.on('error', fail);
      w.on('exit', (code) => fail(new Error(`sqlite writer thread exited (${code})`)));
      this.worker = w;
      // The writer's connection creates the schema (and indexes any history backlog) before the first read.
      await this.call({ type: 'open', path: this.path, everyRows: this.opts.indexEveryRows });
      this.db.pragma('busy_timeout = 5000');
    } else this.inline = openJournalWriter(this.db, { everyRows: this.opts.indexEveryRows });
    this.historyQuery = this.db.prepare(HISTORY_SQL);
  }

  async scan(onRow: (row: JournalRow) => void, fromSeq = 0): Promise<void> {
    const st = this.db.prepare('SELECT * FROM journal WHERE seq >= ? ORDER BY seq');
    for (const r of st.iterate(fromSeq) as Iterable<Row>) onRow(toRow(r));
  }

  /** The snapshot lives next to the database, in `<db>-snapshot` (none for in-memory databases). */
  get snapshotPath(): string | null {
    return this.path === ':memory:' || this.path === '' ? null : `${this.path}-snapshot`;
  }

  async loadSnapshot(): Promise<Buffer | null> {
    const p = this.snapshotPath;
    if (!p) return null;
    try {
      return await readFile(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** Write to a temporary file, fsync, rename over the old snapshot (off the event loop: libuv's thread pool). */
  async saveSnapshot(data: Buffer): Promise<void> {
    if (this.opts.readOnly) throw new Error('sqlite: storage opened read-only');
    const p = this.snapshotPath;
    if (!p) return;
    const tmp = `${p}.tmp`;
    const fh = await fsOpen(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.datasync();
    } catch (e) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw e;
    }
    await fh.close();
    await rename(tmp, p);
  }

  async append(rows: JournalRow[]): Promise<void> {
    if (this.opts.readOnly) throw new Error('sqlite: storage opened read-only');
    const packed = packRows(rows);
    if (this.worker) {
      const ab = packed.buffer as ArrayBuffer; // allocUnsafeSlow: the whole ArrayBuffer, safe to transfer
      return this.call({ type: 'append', packed: ab }, [ab]);
    }
    // better-sqlite3 is synchronous: COMMIT returns after SQLite's fsync (synchronous=FULL).
    this.inline!.append(packed);
    this.inline!.afterAppend();
  }

  async history(account: Buffer, limit: number, beforeSeq = Number.MAX_SAFE_INTEGER): Promise<JournalRow[]> {
    if (this.opts.readOnly) throw new Error('sqlite: history is not available on a read-only storage');
    return (this.historyQuery.all({ a: account, b: beforeSeq, n: limit }) as Row[]).map(toRow);
  }

  async count(): Promise<number> {
    return (this.db.prepare('SELECT count(*) AS n FROM journal').get() as { n: number }).n;
  }

  async close(): Promise<void> {
    if (this.worker) {
      const w = this.worker;
      await this.call({ type: 'close' }).catch(() => {});
      this.workerError = new Error('storage closed');
      w.removeAllListeners('exit');
      await w.terminate();
      this.worker = null;
    }
    this.db.close();
  }
}
