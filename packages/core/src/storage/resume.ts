/**
 * Fast resume: remember which pieces are verified together with each file's size and mtime, so a restart
 * trusts the bitfield instead of re-hashing. Save after `storage.flush()` (writes change mtimes):
 *   await storage.flush(); await store.save(meta.infoHash, await makeResumeData(meta, dir, have));
 * On load, `validateResume` returns the bitfield only if every file's size and mtime are unchanged;
 * otherwise undefined and the caller re-checks everything. `diffResume` reports which files changed and
 * which pieces to re-check when a partial re-check is wanted.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BitField } from '../bitfield.js';
import { decode, encode, isDict } from '../bencode.js';
import { type Metainfo, piecesForFile } from '../metainfo.js';

export interface ResumeFileState {
  /** Bytes on disk, -1 when the file does not exist. */
  size: number;
  mtimeMs: number;
}

export interface ResumeData {
  /** Bitfield of verified pieces (wire format). */
  have: Buffer;
  files: ResumeFileState[];
  /** Optional info dict bytes (so a magnet download resumes without fetching metadata again). */
  torrent?: Buffer;
}

const toUs = (ms: number) => Math.round(ms * 1000);

export class ResumeStore {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  private file(infoHash: Buffer | string): string {
    const hex = typeof infoHash === 'string' ? infoHash.toLowerCase() : infoHash.toString('hex');
    if (!/^[0-9a-f]{40}$/.test(hex)) throw new Error(`resume: invalid info-hash '${hex}'`);
    return join(this.dir, `${hex}.resume`);
  }

  /** The saved data, or undefined when absent or unreadable (a corrupt file means "re-check"). */
  async load(infoHash: Buffer | string): Promise<ResumeData | undefined> {
    let buf: Buffer;
    try {
      buf = await fsp.readFile(this.file(infoHash));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      const v = decode(buf);
      if (!isDict(v) || v.version !== 1 || !(v.have instanceof Uint8Array) || !Array.isArray(v.files)) return undefined;
      const files: ResumeFileState[] = [];
      for (const f of v.files) {
        if (!Array.isArray(f) || typeof f[0] !== 'number' || typeof f[1] !== 'number') return undefined;
        files.push({ size: f[0], mtimeMs: f[1] / 1000 });
      }
      const out: ResumeData = { have: Buffer.from(v.have), files };
      if (v.torrent instanceof Uint8Array) out.torrent = Buffer.from(v.torrent);
      return out;
    } catch {
      return undefined;
    }
  }

  /** Atomic: write a temp file, fsync it, rename over the old one, fsync the directory. */
  async save(infoHash: Buffer | string, data: ResumeData): Promise<void> {
    const target = this.file(infoHash);
    await fsp.mkdir(this.dir, { recursive: true });
    const body = encode({
      version: 1,
      have: data.have,
      files: data.files.map((f) => [Math.trunc(f.size), toUs(f.mtimeMs)]),
      torrent: data.torrent,
    });
    const tmp = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await fsp.open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fsp.rename(tmp, target);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    try {
      const d = await fsp.open(this.dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    } catch {
      // directory fsync is not supported everywhere; the rename is still atomic
    }
  }

  async remove(infoHash: Buffer | string): Promise<void> {
    await fsp.rm(this.file(infoHash), { force: true });
  }
}

/** Current size/mtime of each file (size -1 when missing; pad files report their nominal length). */
export async function statFiles(meta: Metainfo, dir: string): Promise<ResumeFileState[]> {
  return Promise.all(
    meta.files.map(async (f) => {
      if (f.pad) return { size: f.length, mtimeMs: 0 };
      try {
        const st = await fsp.stat(join(resolve(dir), ...f.path));
        return { size: st.size, mtimeMs: st.mtimeMs };
      } catch {
        return { size: -1, mtimeMs: 0 };
      }
    }),
  );
}

/** Snapshot the current file states with the verified-pieces bitfield (call after storage.flush()). */
export async function makeResumeData(meta: Metainfo, dir: string, have: BitField): Promise<ResumeData> {
  if (have.length !== meta.pieceCount) throw new RangeError('resume: bitfield length does not match the torrent');
  return { have: have.toBuffer(), files: await statFiles(meta, dir) };
}

export interface ResumeDiff {
  /** Saved bitfield with the pieces of changed files cleared. */
  have: BitField;
  /** Files whose size or mtime differ from the saved state. */
  changedFiles: number[];
  /** Pieces that were marked present but overlap a changed file: re-check these. */
  recheckPieces: number[];
}

/** Compare saved resume data with the disk. Undefined when the data does not fit this torrent at all. */
export async function diffResume(meta: Metainfo, dir: string, data: ResumeData): Promise<ResumeDiff | undefined> {
  if (data.files.length !== meta.files.length) return undefined;
  let have: BitField;
  try {
    have = BitField.fromBuffer(data.have, meta.pieceCount);
  } catch {
    return undefined;
  }
  const now = await statFiles(meta, dir);
  const changedFiles: number[] = [];
  const recheck = new Set<number>();
  for (let i = 0; i < now.length; i++) {
    if (meta.files[i].pad) continue;
    const a = data.files[i], b = now[i];
    if (a.size === b.size && (a.size === -1 || toUs(a.mtimeMs) === toUs(b.mtimeMs))) continue;
    changedFiles.push(i);
    const r = piecesForFile(meta, i);
    if (!r) continue;
    for (let p = r[0]; p <= r[1]; p++) if (have.get(p)) recheck.add(p);
  }
  const recheckPieces = [...recheck].sort((x, y) => x - y);
  for (const p of recheckPieces) have.set(p, false);
  return { have, changedFiles, recheckPieces };
}

/** The saved bitfield if every file's size and mtime still match; otherwise undefined (re-check everything). */
export async function validateResume(meta: Metainfo, dir: string, data: ResumeData): Promise<BitField | undefined> {
  const d = await diffResume(meta, dir, data);
  if (!d || d.changedFiles.length > 0) return undefined;
  return d.have;
}
