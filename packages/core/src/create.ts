/**
 * Torrent creation, mktorrent-compatible: the same files in the same order and the same info keys, so the
 * info-hash equals `mktorrent -l <log2 piece length>` for the same content (checked by an interop test).
 *
 * mktorrent 1.1 walks the directory following symlinks, keeps regular files only (hidden and zero-length
 * ones included, empty directories dropped), orders them by strcmp() of the relative path ("a/b" with '/'
 * separators), and writes info = { files: [{ length, path }] | length, name, piece length, pieces, private? }.
 * Files are streamed through a bounded pipeline (a few pieces in memory) and hashed across file boundaries.
 */
import { promises as fsp } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { encode, type EncodableValue } from './bencode.js';
import { PieceHasher } from './hasher.js';
import { type Metainfo, parseTorrent } from './metainfo.js';

export class CreateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CreateError';
  }
}

export interface CreateTorrentOptions {
  /** File or directory to share. */
  path: string;
  /** Trackers: a flat list (one tier each, like repeated `mktorrent -a`) or tiers (BEP 12). */
  announce?: string[] | string[][];
  webSeeds?: string[];
  private?: boolean;
  /** Bytes, a power of two between 16 KiB and 64 MiB; default chosen by size. */
  pieceLength?: number;
  comment?: string;
  createdBy?: string;
  /** Unix seconds; default now; null omits the key. */
  creationDate?: number | null;
  /** Torrent name; default the basename of `path`. */
  name?: string;
  /** `source` key inside info (private trackers; changes the info-hash like mktorrent -s). */
  source?: string;
  onProgress?(done: number, total: number): void;
  /** Hash pool to use (default: a private one, closed at the end). */
  hasher?: PieceHasher;
}

export interface SourceFile {
  /** Components relative to the torrent root (for a single file: [name]). */
  path: string[];
  abs: string;
  length: number;
}

export const MIN_PIECE_LENGTH = 16 * 1024;
export const MAX_CREATE_PIECE_LENGTH = 64 * 1024 * 1024;

/** Default piece length: the smallest power of two in [16 KiB, 16 MiB] giving at most 2048 pieces. */
export function defaultPieceLength(totalBytes: number): number {
  let pl = MIN_PIECE_LENGTH;
  while (pl < 16 * 1024 * 1024 && Math.ceil(totalBytes / pl) > 2048) pl *= 2;
  return pl;
}

function cmpBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The files of a torrent made from `root`, in mktorrent order. */
export async function listFiles(root: string): Promise<{ single: boolean; files: SourceFile[] }> {
  const abs = resolve(root);
  let st;
  try {
    st = await fsp.stat(abs);
  } catch (e) {
    throw new CreateError(`cannot read '${root}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (st.isFile()) return { single: true, files: [{ path: [basename(abs)], abs, length: st.size }] };
  if (!st.isDirectory()) throw new CreateError(`'${root}' is neither a regular file nor a directory`);
  const out: { rel: string; file: SourceFile }[] = [];
  const visiting = new Set<string>();
  const walk = async (dir: string, rel: string[], dev: number, ino: number) => {
    const key = `${dev}:${ino}`;
    if (visiting.has(key)) throw new CreateError(`symlink loop at '${join(root, ...rel)}'`);
    visiting.add(key);
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch (e) {
      throw new CreateError(`cannot list '${dir}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    for (const n of names) {
      const p = join(dir, n);
      let s;
      try {
        s = await fsp.stat(p); // follows symlinks, like mktorrent
      } catch (e) {
        throw new CreateError(`cannot read '${p}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (s.isDirectory()) await walk(p, [...rel, n], s.dev, s.ino);
      else if (s.isFile()) out.push({ rel: [...rel, n].join('/'), file: { path: [...rel, n], abs: p, length: s.size } });
      // sockets, FIFOs, devices: skipped (mktorrent skips non-regular files too)
    }
    visiting.delete(key);
  };
  await walk(abs, [], st.dev, st.ino);
  out.sort((a, b) => cmpBytes(a.rel, b.rel));
  return { single: false, files: out.map((x) => x.file) };
}

function normalizeTiers(a: string[] | string[][] | undefined): string[][] {
  if (!a) return [];
  const tiers = (a as (string | string[])[]).map((t) => (Array.isArray(t) ? t : [t]));
  return tiers.map((t) => t.map((u) => u.trim()).filter((u) => u.length > 0)).filter((t) => t.length > 0);
}

function checkPieceLength(pl: number): void {
  if (!Number.isInteger(pl) || pl < MIN_PIECE_LENGTH || pl > MAX_CREATE_PIECE_LENGTH || (pl & (pl - 1)) !== 0) {
    throw new CreateError(`piece length must be a power of two between 16 KiB and 64 MiB, got ${pl}`);
  }
}

/** Create a .torrent from a file or directory. */
export async function createTorrent(opts: CreateTorrentOptions): Promise<{ torrent: Buffer; metainfo: Metainfo }> {
  const { single, files } = await listFiles(opts.path);
  const total = files.reduce((s, f) => s + f.length, 0);
  if (files.length === 0) throw new CreateError(`'${opts.path}' contains no files`);
  if (total === 0) throw new CreateError(`nothing to share: '${opts.path}' holds 0 bytes`);
  const pieceLength = opts.pieceLength ?? defaultPieceLength(total);
  checkPieceLength(pieceLength);
  const name = opts.name ?? basename(resolve(opts.path));
  if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new CreateError(`invalid torrent name '${name}'`);
  }

  const pieces = await hashFiles(files, pieceLength, total, opts);

  const info: Record<string, EncodableValue> = {
    name,
    'piece length': pieceLength,
    pieces,
  };
  if (single) info.length = total;
  else info.files = files.map((f) => ({ length: f.length, path: f.path }));
  if (opts.private) info.private = 1;
  if (opts.source) info.source = opts.source;

  const tiers = normalizeTiers(opts.announce);
  const root: Record<string, EncodableValue> = { info };
  if (tiers.length > 0) {
    root.announce = tiers[0][0];
    const count = tiers.reduce((s, t) => s + t.length, 0);
    if (count > 1) root['announce-list'] = tiers;
  }
  if (opts.comment) root.comment = opts.comment;
  root['created by'] = opts.createdBy ?? 'bitorrent 0.1';
  if (opts.creationDate !== null) root['creation date'] = opts.creationDate ?? Math.floor(Date.now() / 1000);
  const ws = (opts.webSeeds ?? []).map((u) => u.trim()).filter(Boolean);
  if (ws.length === 1) root['url-list'] = ws[0];
  else if (ws.length > 1) root['url-list'] = ws;

  const torrent = encode(root);
  return { torrent, metainfo: parseTorrent(torrent) };
}

/** Stream the files in order and SHA-1 each piece (crossing file boundaries); a few pieces in flight. */
async function hashFiles(files: SourceFile[], pieceLength: number, total: number, opts: CreateTorrentOptions): Promise<Buffer> {
  const pieceCount = Math.ceil(total / pieceLength);
  const out = Buffer.alloc(pieceCount * 20);
  const hasher = opts.hasher ?? new PieceHasher();
  const inFlightMax = Math.max(2, hasher.workerCount * 2);
  const inFlight = new Set<Promise<void>>();
  const spare: Buffer[] = [];
  let done = 0;
  let index = 0;
  let piece: Buffer = Buffer.allocUnsafe(pieceLength);
  let fill = 0;
  let firstError: unknown;

  const submit = async (buf: Buffer, len: number) => {
    const i = index++;
    while (inFlight.size >= inFlightMax) await Promise.race(inFlight);
    const p = hasher.sha1(buf.subarray(0, len)).then(
      (d) => {
        d.copy(out, i * 20);
        spare.push(buf);
        done++;
        opts.onProgress?.(done, pieceCount);
      },
      (e) => {
        firstError ??= e;
      },
    );
    const tracked: Promise<void> = p.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  };

  try {
    for (const f of files) {
      if (f.length === 0) continue;
      let fh;
      try {
        fh = await fsp.open(f.abs, 'r');
      } catch (e) {
        throw new CreateError(`cannot open '${f.abs}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      try {
        let pos = 0;
        while (pos < f.length) {
          const want = Math.min(pieceLength - fill, f.length - pos);
          const { bytesRead } = await fh.read(piece, fill, want, pos);
          if (bytesRead === 0) throw new CreateError(`'${f.abs}' shrank while hashing (expected ${f.length} bytes)`);
          pos += bytesRead;
          fill += bytesRead;
          if (fill === pieceLength) {
            await submit(piece, fill);
            if (firstError) throw firstError;
            piece = spare.pop() ?? Buffer.allocUnsafe(pieceLength);
            fill = 0;
          }
        }
        const extra = await fh.read(Buffer.allocUnsafe(1), 0, 1, f.length);
        if (extra.bytesRead !== 0) throw new CreateError(`'${f.abs}' grew while hashing (expected ${f.length} bytes)`);
      } finally {
        await fh.close();
      }
    }
    if (fill > 0) await submit(piece, fill);
    await Promise.all(inFlight);
    if (firstError) throw firstError;
  } finally {
    if (!opts.hasher) await hasher.close();
  }
  if (index !== pieceCount) throw new CreateError(`internal: hashed ${index} pieces, expected ${pieceCount}`);
  return out;
}
