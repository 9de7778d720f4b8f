/**
 * SQLite journal store: WAL mode, synchronous=FULL, one transaction (one fsync) per batch. By default appends run on
 * a writer thread (sqlite-writer.mjs) so the event loop keeps serving and verifying while a batch is fsynced; reads
 * use a second connection on the main thread (WAL readers see committed batches only).
 */
import Database from 'better-sqlite3';
import { Worker } from 'node:worker_threads';
import { open as fsOpen, readFile, rename, unlink } from 'node:fs/promises';
import type { LedgerStorage } from './storage.js';
import type { JournalRow } from './state.js';

type Row = { seq: number; entry: Buffer; hash: Buffer; a1: Buffer | null; a2: Buffer | null; cp_digest: Buffer | null; cp_sig: Buffer | null };

function toRow(r: Row): JournalRow {
  const accounts = [r.a1, r.a2].filter((x): x is Buffer => x !== null);
  const row: JournalRow = { seq: r.seq, entry: r.entry, hash: r.hash, accounts };
  if (r.cp_digest && r.cp_sig) row.checkpoint = { digest: r.cp_digest, sig: r.cp_sig };
  return row;
}

export class SqliteStorage implements LedgerStorage {
  readonly kind = 'sqlite' as const;
  private db: Database.Database;
  private insert!: Database.Statement;
  private tx!: (rows: JournalRow[]) => void;

  private worker: Worker | null = null;
  private nextId = 1;
  private waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private workerError: Error | null = null;

  constructor(
    readonly path: string,
    readonly opts: { threaded?: boolean } = {},
  ) {
    this.db = new Database(path);
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
    const db = this.db;
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    db.exec(`CREATE TABLE IF NOT EXISTS journal (
      seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, hash BLOB NOT NULL,
      a1 BLOB, a2 BLOB, cp_digest BLOB, cp_sig BLOB);
      CREATE INDEX IF NOT EXISTS journal_a1 ON journal(a1, seq);
      CREATE INDEX IF NOT EXISTS journal_a2 ON journal(a2, seq);`);
    this.insert = db.prepare('INSERT INTO journal (seq, entry, hash, a1, a2, cp_digest, cp_sig) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.tx = db.transaction((rows: JournalRow[]) => {
      for (const r of rows) {
        this.insert.run(r.seq, r.entry, r.hash, r.accounts[0] ?? null, r.accounts[1] ?? null, r.checkpoint?.digest ?? null, r.checkpoint?.sig ?? null);
      }
    });
    if (this.opts.threaded ?? (this.path !== ':memory:' && this.path !== '')) {
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
      await this.call({ type: 'open', path: this.path });
    }
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
    if (this.worker) {
      // One packed, transferred buffer per batch: [seq u64][flags u8][len u32][entry][hash 32][a1 32]?[a2 32]?[digest 32 + sig 64]?
      let size = 0;
      for (const r of rows) size += 13 + r.entry.length + 32 + 32 * Math.min(2, r.accounts.length) + (r.checkpoint ? 96 : 0);
      const buf = Buffer.allocUnsafe(size);
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
      const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
      return this.call({ type: 'append', packed: ab }, [ab]);
    }
    // better-sqlite3 is synchronous: COMMIT returns after SQLite's fsync (synchronous=FULL).
    this.tx(rows);
  }

  async history(account: Buffer, limit: number, beforeSeq = Number.MAX_SAFE_INTEGER): Promise<JournalRow[]> {
    const rows = this.db
      .prepare(
        `SELECT * FROM (SELECT * FROM journal WHERE a1 = ? AND seq < ? ORDER BY seq DESC LIMIT ?)
         UNION SELECT * FROM (SELECT * FROM journal WHERE a2 = ? AND seq < ? ORDER BY seq DESC LIMIT ?)
         ORDER BY seq DESC LIMIT ?`,
      )
      .all(account, beforeSeq, limit, account, beforeSeq, limit, limit) as Row[];
    return rows.map(toRow);
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
