/**
 * Durable provider channel states, so that a provider that crashes still closes its channels (and is paid) from
 * the last states it acknowledged.
 *
 *  - encodePersisted / decodePersisted: text form of PersistedChannel[] (JSON; Buffers as {"$b": hex}, bigints as
 *    {"$n": decimal}); decode checks every field and throws a clear error on anything else.
 *  - writeFileDurable: temp file in the same folder, fsync, rename over the target, fsync the folder.
 *  - ChannelStateStore: one folder per (ledger, wallet) under the user's state dir; each running process writes its
 *    own file `channels-<pid>.json` (two `bitorrent seed` processes on one wallet never overwrite each other).
 *    At start-up recover() gathers the files of processes that are no longer running; the caller imports them,
 *    saves them as its own, then adopt()s (deletes) the old files.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { PersistedChannel } from './payments.js';

function enc(v: unknown): unknown {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return { $b: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex') };
  if (typeof v === 'bigint') return { $n: v.toString() };
  if (Array.isArray(v)) return v.map(enc);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]));
  return v;
}

function dec(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dec);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && typeof o.$b === 'string' && /^([0-9a-f]{2})*$/.test(o.$b)) return Buffer.from(o.$b, 'hex');
    if (keys.length === 1 && typeof o.$n === 'string' && /^-?\d{1,40}$/.test(o.$n)) return BigInt(o.$n);
    return Object.fromEntries(keys.map((k) => [k, dec(o[k])]));
  }
  return v;
}

export function encodePersisted(list: PersistedChannel[]): string {
  return JSON.stringify({ v: 1, channels: enc(list) });
}

/** Throws Error('speed state file: …') on anything but a well-formed v1 state list. */
export function decodePersisted(text: string): PersistedChannel[] {
  let j: { v?: unknown; channels?: unknown };
  try {
    j = JSON.parse(text) as { v?: unknown; channels?: unknown };
  } catch {
    throw new Error('speed state file: not JSON (truncated or corrupt)');
  }
  if (j === null || typeof j !== 'object' || j.v !== 1 || !Array.isArray(j.channels)) throw new Error('speed state file: unknown format');
  const list = dec(j.channels) as PersistedChannel[];
  for (const c of list) {
    const i = c?.info;
    const ok =
      c !== null && typeof c === 'object' &&
      typeof c.requester === 'string' && /^[0-9a-f]{64}$/.test(c.requester) && typeof c.sequence === 'bigint' && c.sequence >= 0n && typeof c.cumulative === 'bigint' && c.cumulative >= 0n && Buffer.isBuffer(c.sig) &&
      i !== null && typeof i === 'object' && Buffer.isBuffer(i.id) && i.id.length === 32 && Buffer.isBuffer(i.ledgerId) && i.ledgerId.length === 32 && Buffer.isBuffer(i.requester) && Buffer.isBuffer(i.provider) &&
      typeof i.deposit === 'bigint' && typeof i.expiresAt === 'number' && Number.isFinite(i.expiresAt);
    if (!ok) throw new Error('speed state file: malformed channel entry');
  }
  return list;
}

/** Write `text` to `path` so that after a crash the file holds either the old or the new content, whole. */
export function writeFileDurable(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    const b = Buffer.from(text, 'utf8');
    let off = 0;
    while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  // The rename itself must survive a power loss: fsync the folder (not supported on every platform).
  try {
    const d = openSync(dirname(path), 'r');
    try {
      fsyncSync(d);
    } finally {
      closeSync(d);
    }
  } catch {
    /* best effort */
  }
}

/** writeFileDurable without blocking the event loop (temp file, fsync, rename, folder fsync). */
export async function writeFileDurableAsync(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  try {
    const d = await open(dirname(path), 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    /* best effort, as writeFileDurable */
  }
}

/** Merge state lists: one entry per channel, the highest cumulative state wins. */
export function mergePersisted(...lists: PersistedChannel[][]): PersistedChannel[] {
  const by = new Map<string, PersistedChannel>();
  for (const list of lists) {
    for (const c of list) {
      const id = c.info.id.toString('hex');
      const prev = by.get(id);
      if (!prev || c.cumulative > prev.cumulative || (c.cumulative === prev.cumulative && c.sequence > prev.sequence)) by.set(id, c);
    }
  }
  return [...by.values()];
}

/** `<stateDir>/speed/<ledger id hex[0..16]>-<wallet key hex[0..16]>` */
export function speedStateDir(stateDir: string, ledgerId: Buffer, publicKey: Buffer): string {
  return join(stateDir, 'speed', `${ledgerId.toString('hex').slice(0, 16)}-${publicKey.toString('hex').slice(0, 16)}`);
}

/** The XDG state dir the CLI uses for resume data: $XDG_STATE_HOME/bitorrent or ~/.local/state/bitorrent. */
export function defaultSpeedStateBase(env: NodeJS.ProcessEnv, home: string): string {
  return join(env.XDG_STATE_HOME || join(home, '.local', 'state'), 'bitorrent');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface RecoveredState {
  channels: PersistedChannel[];
  /** Files read (of processes no longer running) and their stale temp files; adopt() them once saved as ours. */
  files: string[];
  /** Files that could not be read (left in place, never deleted). */
  errors: string[];
}

export class ChannelStateStore {
  readonly dir: string;
  readonly file: string;
  private readonly pid: number;
  private readonly alive: (pid: number) => boolean;

  constructor(dir: string, opts: { pid?: number; isAlive?: (pid: number) => boolean } = {}) {
    this.dir = dir;
    this.pid = opts.pid ?? process.pid;
    this.alive = opts.isAlive ?? pidAlive;
    this.file = join(dir, `channels-${this.pid}.json`);
  }

  /** States left by processes that are no longer running (a file named after our own pid is a dead one's too). */
  recover(): RecoveredState {
    const out: RecoveredState = { channels: [], files: [], errors: [] };
    if (!existsSync(this.dir)) return out;
    const lists: PersistedChannel[][] = [];
    for (const name of readdirSync(this.dir)) {
      // A temp file of a writer killed mid-write: never read (the rename did not happen), removed on adopt().
      const tmp = /^channels-\d{1,10}\.json\.(\d{1,10})\.tmp$/.exec(name);
      if (tmp && (Number(tmp[1]) === this.pid || !this.alive(Number(tmp[1])))) out.files.push(join(this.dir, name));
      const m = /^channels-(\d{1,10})\.json$/.exec(name);
      if (!m) continue;
      const pid = Number(m[1]);
      if (pid !== this.pid && this.alive(pid)) continue;
      const path = join(this.dir, name);
      try {
        lists.push(decodePersisted(readFileSync(path, 'utf8')));
        out.files.push(path);
      } catch (e) {
        out.errors.push(`${path}: ${(e as Error).message}`);
      }
    }
    out.channels = mergePersisted(...lists);
    return out;
  }

  /** Durably replace our file with `list` (an empty list removes the file). */
  save(list: PersistedChannel[]): void {
    if (list.length === 0) {
      try {
        unlinkSync(this.file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      return;
    }
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileDurable(this.file, encodePersisted(list));
  }

  private writing = false;
  private dirMade = false;
  private lastWriteAt = -Infinity;
  private next?: { get: () => PersistedChannel[]; waiters: { resolve: () => void; reject: (e: Error) => void }[] };
  /** Writes start at most this often (ms): at full speed one write then covers dozens of payments (group commit). */
  groupCommitMs = 100;

  /**
   * Group commit, off the event loop: resolves once a durable write that started after this call has completed.
   * `get` is called when a write starts, so one write (one fsync) covers every caller that arrived since the previous
   * write started — at full speed a provider accepts a payment every millisecond or two; a write (temp file, fsync,
   * rename, folder fsync) costs several. Callers wait at most groupCommitMs plus one write.
   */
  saveLatest(get: () => PersistedChannel[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const n = (this.next ??= { get, waiters: [] });
      n.get = get;
      n.waiters.push({ resolve, reject });
      if (!this.writing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.next) {
        const wait = this.lastWriteAt + this.groupCommitMs - performance.now();
        if (wait > 0) await new Promise<void>((r) => setTimeout(r, wait));
        const batch = this.next;
        this.next = undefined;
        this.lastWriteAt = performance.now();
        try {
          const list = batch.get();
          if (list.length === 0) await unlink(this.file).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
          else {
            if (!this.dirMade) await mkdir(this.dir, { recursive: true, mode: 0o700 });
            this.dirMade = true;
            await writeFileDurableAsync(this.file, encodePersisted(list));
          }
          for (const w of batch.waiters) w.resolve();
        } catch (e) {
          for (const w of batch.waiters) w.reject(e as Error);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** Delete recovered files (call after save() holds their channels). */
  adopt(files: string[]): void {
    for (const f of files) {
      if (f === this.file) continue;
      try {
        unlinkSync(f);
      } catch {
        /* already gone */
      }
    }
  }
}

// ---- ledger ids by URL (so Speed can start while the ledger is briefly unreachable) ----

const MAX_LEDGER_IDS = 64;

function ledgerIdsFile(stateDir: string): string {
  return join(stateDir, 'speed', 'ledgers.json');
}

function readLedgerIds(stateDir: string): Record<string, string> {
  try {
    const j = JSON.parse(readFileSync(ledgerIdsFile(stateDir), 'utf8')) as { v?: unknown; ledgers?: unknown };
    if (j?.v !== 1 || j.ledgers === null || typeof j.ledgers !== 'object' || Array.isArray(j.ledgers)) return {};
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(j.ledgers as Record<string, unknown>)) if (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) out[k] = v;
    return out;
  } catch {
    return {};
  }
}

/** The ledger id last seen at `url` (undefined: never, or the record is unreadable). */
export function recallLedgerId(stateDir: string, url: string): Buffer | undefined {
  const h = readLedgerIds(stateDir)[url];
  return h ? Buffer.from(h, 'hex') : undefined;
}

/** Record the ledger id seen at `url` (most recent 64 URLs kept). */
export function rememberLedgerId(stateDir: string, url: string, ledgerId: Buffer): void {
  const all = readLedgerIds(stateDir);
  const hex = ledgerId.toString('hex');
  if (all[url] === hex) return;
  delete all[url];
  all[url] = hex;
  const keys = Object.keys(all);
  for (const k of keys.slice(0, Math.max(0, keys.length - MAX_LEDGER_IDS))) delete all[k];
  mkdirSync(join(stateDir, 'speed'), { recursive: true, mode: 0o700 });
  writeFileDurable(ledgerIdsFile(stateDir), JSON.stringify({ v: 1, ledgers: all }));
}
