// SQLite journal schema and writer, shared by the writer thread (sqlite-writer.mjs) and the inline path of
// storage-sqlite.ts. Plain ESM (no tsx) because worker threads load it directly; types in sqlite-journal.d.mts.
//
// Appends are one transaction (one fsync) per batch and touch only the journal table, whose rows arrive in seq order
// (appends at the right edge of one B-tree). The per-account history index is derived from the journal's a1/a2
// columns and is brought up to date in bulk, off the acknowledgement path, every INDEX_EVERY_ROWS rows or
// INDEX_EVERY_MS: indexing every row as it was committed (two secondary indexes keyed by account) dirtied one index
// page per account per commit and cost more than the rest of the write (measured 27 vs 9–13 µs of writer CPU per op
// at 64 clients). Readers cover the unindexed tail by scanning journal rows after `indexed` (a rowid range).

export const JOURNAL_SCHEMA = `
  CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, hash BLOB NOT NULL,
    a1 BLOB, a2 BLOB, cp_digest BLOB, cp_sig BLOB);
  CREATE TABLE IF NOT EXISTS account_history (
    account BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, seq)) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS journal_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
  DROP INDEX IF EXISTS journal_a1;
  DROP INDEX IF EXISTS journal_a2;`;

/** Newest-first rows touching :a with seq < :b, at most :n: the indexed part plus the scanned tail. */
export const HISTORY_SQL = `
  SELECT * FROM journal WHERE seq IN (
    SELECT seq FROM (SELECT seq FROM account_history WHERE account = :a AND seq < :b ORDER BY seq DESC LIMIT :n)
    UNION ALL
    SELECT seq FROM (SELECT seq FROM journal
      WHERE seq > (SELECT coalesce(max(v), 0) FROM journal_meta WHERE k = 'indexed') AND seq < :b AND (a1 = :a OR a2 = :a)
      ORDER BY seq DESC LIMIT :n))
  ORDER BY seq DESC LIMIT :n`;

export const INDEX_EVERY_ROWS = 2048;
export const INDEX_EVERY_MS = 500;

/**
 * Prepare a connection (WAL, synchronous=FULL, schema) for appending. `append(packed)` writes one batch in one
 * transaction; packed = repeated [seq u64][flags u8: accounts 0..2 | 4 = checkpoint][len u32][entry][hash 32]
 * [a1 32]?[a2 32]?[digest 32 + sig 64]?. Call `afterAppend()` once the batch has been acknowledged: it indexes
 * history when enough rows or time have accumulated. `indexNow()` indexes everything appended so far. Neither
 * throws: index failures are retried later (only the initial catch-up at open may throw).
 */
export function openJournalWriter(db, opts = {}) {
  const everyRows = opts.everyRows ?? INDEX_EVERY_ROWS;
  const everyMs = opts.everyMs ?? INDEX_EVERY_MS;
  const now = opts.now ?? Date.now;
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.exec(JOURNAL_SCHEMA);
  const ins = db.prepare('INSERT INTO journal (seq, entry, hash, a1, a2, cp_digest, cp_sig) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const getIndexed = db.prepare(`SELECT v FROM journal_meta WHERE k = 'indexed'`).pluck();
  const setIndexed = db.prepare(`INSERT INTO journal_meta (k, v) VALUES ('indexed', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v`);
  const lastSeq = db.prepare('SELECT coalesce(max(seq), 0) FROM journal').pluck();
  // Sorted by (account, seq) so each account's index page is visited once per run.
  const fill = db.prepare(`INSERT OR IGNORE INTO account_history (account, seq)
    SELECT a, seq FROM (SELECT a1 AS a, seq FROM journal WHERE seq > :from AND seq <= :to AND a1 IS NOT NULL
      UNION ALL SELECT a2, seq FROM journal WHERE seq > :from AND seq <= :to AND a2 IS NOT NULL) ORDER BY a, seq`);
  const insertBatch = db.transaction((b) => {
    let o = 0;
    let rows = 0;
    while (o < b.length) {
      const seq = Number(b.readBigUInt64BE(o));
      const flags = b[o + 8];
      const len = b.readUInt32BE(o + 9);
      o += 13;
      const entry = b.subarray(o, (o += len));
      const hash = b.subarray(o, (o += 32));
      const n = flags & 3;
      const a1 = n >= 1 ? b.subarray(o, (o += 32)) : null;
      const a2 = n >= 2 ? b.subarray(o, (o += 32)) : null;
      let d = null;
      let s = null;
      if (flags & 4) {
        d = b.subarray(o, (o += 32));
        s = b.subarray(o, (o += 64));
      }
      ins.run(seq, entry, hash, a1, a2, d, s);
      rows++;
    }
    return rows;
  });
  // Indexes up to the journal's last committed seq (read inside the transaction), so a failed COMMIT can never let
  // the index claim rows that are not on disk.
  const index = db.transaction(() => {
    const from = getIndexed.get() ?? 0;
    const to = lastSeq.get();
    if (to <= from) return;
    fill.run({ from, to });
    setIndexed.run(to);
  });
  let rowsSince = 0;
  let lastIndexAt = now();
  const indexNow = () => {
    rowsSince = 0;
    lastIndexAt = now();
    index();
  };
  indexNow(); // a journal written before this index existed, or rows left unindexed by a crash
  // The index is derived data: a failed run (e.g. the database busy) is not an error of the append or the close that
  // triggered it; the next run, or the next open, catches up.
  const tryIndex = () => {
    try {
      indexNow();
    } catch {}
  };
  return {
    append(b) {
      rowsSince += insertBatch(b);
    },
    afterAppend() {
      if (rowsSince >= everyRows || (rowsSince > 0 && now() - lastIndexAt >= everyMs)) tryIndex();
    },
    indexNow: tryIndex,
  };
}
