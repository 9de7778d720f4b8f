/** PostgreSQL journal store: one transaction per batch; COMMIT returns after the WAL flush (synchronous_commit=on). */
import pg from 'pg';
import type { LedgerStorage } from './storage.js';
import type { JournalRow } from './state.js';

type Row = { seq: string; entry: Buffer; hash: Buffer; a1: Buffer | null; a2: Buffer | null; cp_digest: Buffer | null; cp_sig: Buffer | null };

function toRow(r: Row): JournalRow {
  const accounts = [r.a1, r.a2].filter((x): x is Buffer => x !== null);
  const row: JournalRow = { seq: Number(r.seq), entry: r.entry, hash: r.hash, accounts };
  if (r.cp_digest && r.cp_sig) row.checkpoint = { digest: r.cp_digest, sig: r.cp_sig };
  return row;
}

export class PostgresStorage implements LedgerStorage {
  readonly kind = 'postgres' as const;
  private pool: pg.Pool;
  private writer: pg.PoolClient | null = null;

  constructor(url: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 4 });
    this.pool.on('error', () => {});
  }

  async init(): Promise<void> {
    await this.pool.query(`CREATE TABLE IF NOT EXISTS journal (
      seq BIGINT PRIMARY KEY, entry BYTEA NOT NULL, hash BYTEA NOT NULL,
      a1 BYTEA, a2 BYTEA, cp_digest BYTEA, cp_sig BYTEA)`);
    await this.pool.query('CREATE INDEX IF NOT EXISTS journal_a1 ON journal(a1, seq)');
    await this.pool.query('CREATE INDEX IF NOT EXISTS journal_a2 ON journal(a2, seq)');
    await this.pool.query('CREATE TABLE IF NOT EXISTS ledger_snapshot (id INT PRIMARY KEY CHECK (id = 1), data BYTEA NOT NULL)');
    this.writer = await this.pool.connect();
    this.writer.on('error', () => {});
    await this.writer.query('SET synchronous_commit = on');
  }

  async loadSnapshot(): Promise<Buffer | null> {
    const r = await this.pool.query<{ data: Buffer }>('SELECT data FROM ledger_snapshot WHERE id = 1');
    return r.rows[0]?.data ?? null;
  }

  /** One upsert on a pool connection (not the journal writer's), so journal commits are not held up. */
  async saveSnapshot(data: Buffer): Promise<void> {
    await this.pool.query('INSERT INTO ledger_snapshot (id, data) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data', [data]);
  }

  async scan(onRow: (row: JournalRow) => void, fromSeq = 0): Promise<void> {
    let from = fromSeq - 1;
    for (;;) {
      const r = await this.pool.query<Row>('SELECT * FROM journal WHERE seq > $1 ORDER BY seq LIMIT 10000', [from]);
      for (const x of r.rows) onRow(toRow(x));
      if (r.rows.length < 10000) return;
      from = Number(r.rows[r.rows.length - 1]!.seq);
    }
  }

  async append(rows: JournalRow[]): Promise<void> {
    const w = this.writer;
    if (!w) throw new Error('storage not initialised');
    const seqs: string[] = [];
    const entries: Buffer[] = [];
    const hashes: Buffer[] = [];
    const a1: (Buffer | null)[] = [];
    const a2: (Buffer | null)[] = [];
    const cd: (Buffer | null)[] = [];
    const cs: (Buffer | null)[] = [];
    for (const r of rows) {
      seqs.push(String(r.seq));
      entries.push(r.entry);
      hashes.push(r.hash);
      a1.push(r.accounts[0] ?? null);
      a2.push(r.accounts[1] ?? null);
      cd.push(r.checkpoint?.digest ?? null);
      cs.push(r.checkpoint?.sig ?? null);
    }
    // One statement, implicit transaction: atomic and durable at return.
    await w.query(
      `INSERT INTO journal (seq, entry, hash, a1, a2, cp_digest, cp_sig)
       SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[])`,
      [seqs, entries, hashes, a1, a2, cd, cs],
    );
  }

  async history(account: Buffer, limit: number, beforeSeq = Number.MAX_SAFE_INTEGER): Promise<JournalRow[]> {
    const r = await this.pool.query<Row>(
      `SELECT * FROM journal WHERE (a1 = $1 OR a2 = $1) AND seq < $2 ORDER BY seq DESC LIMIT $3`,
      [account, beforeSeq, limit],
    );
    return r.rows.map(toRow);
  }

  async count(): Promise<number> {
    const r = await this.pool.query<{ n: string }>('SELECT count(*) AS n FROM journal');
    return Number(r.rows[0]!.n);
  }

  async close(): Promise<void> {
    this.writer?.release();
    this.writer = null;
    await this.pool.end();
  }
}
