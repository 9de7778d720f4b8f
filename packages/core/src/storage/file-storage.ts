/**
 * File-backed piece storage: maps the torrent byte stream onto its files (pieces may span files),
 * opens files lazily through a small LRU of file descriptors, creates directories lazily and files sparse,
 * never writes BEP 47 pad files (they read as zeros), and surfaces every fs failure as a StorageError.
 *
 * Skipped files (priority 0) are not created: the bytes of a piece that fall in a skipped file that does not
 * exist go to a part file, `<dir>/.<infohash hex>.parts`, at their torrent offset (sparse), so a piece shared
 * with a wanted file stays whole (it can be served and verified). Un-skipping a file moves its bytes from the
 * part file into the file; the part file is deleted when nothing is skipped any more.
 */
import { constants, promises as fsp, read as fsRead, write as fsWrite } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { type Metainfo, filesForPiece, firstFileAt, pieceSize } from '../metainfo.js';
import { type PieceStorage, StorageError, toStorageError } from './interface.js';

export interface FileStorageOptions {
  /** Indices of files not to create: bytes of a written piece that fall in them go to the part file. */
  skipFiles?: Set<number>;
  /** Part file path (default `<dir>/.<infohash hex>.parts`). */
  partFile?: string;
  /** Maximum file descriptors kept open (LRU), default 64. */
  maxOpenFiles?: number;
}

interface Handle {
  fh: Promise<FileHandle>;
  writable: boolean;
  busy: number;
  dirty: boolean;
  /** Removed from the cache; close as soon as it is idle. */
  retired: boolean;
}

const WRITE_FLAGS = constants.O_RDWR | constants.O_CREAT;

/*
 * Positional I/O on the handle's descriptor through the callback API: about half the per-call cost of
 * FileHandle.read/write (no FileHandle bookkeeping, one promise instead of several). The descriptor stays
 * valid for the call: withHandle() keeps the handle busy, so it is not closed underneath us.
 */
function pwrite(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fsWrite(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}
function pread(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

export class FileStorage implements PieceStorage {
  readonly meta: Metainfo;
  readonly dir: string;
  /** Absolute on-disk path of each file (pad files included, though never created). */
  readonly paths: string[];
  /** The part file, for bytes of skipped files (see the header). */
  readonly partPath: string;
  /** Handle-cache key of the part file (one past the last file index). */
  private readonly PART: number;
  /** paths plus the part file, indexed like the handle cache. */
  private readonly ioPaths: string[];
  private skip: Set<number>;
  /** Whether a skipped file exists on disk (then it is used as it is); cached, updated when we create one. */
  private readonly skippedExists = new Map<number, boolean>();
  /** Files being moved out of the part file: their reads and writes wait for the move. */
  private readonly moving = new Map<number, Promise<void>>();
  /** Part-file writes in flight (a move waits for them, so it cannot miss bytes). */
  private readonly partWrites = new Set<Promise<unknown>>();
  private readonly maxOpen: number;
  private readonly handles = new Map<number, Handle>();
  private readonly madeDirs = new Set<string>();
  private readonly madeEmpty = new Set<number>();
  private closed = false;
  /** A datasync failure while evicting a descriptor, reported by the next flush(). */
  private deferredError?: StorageError;

  constructor(meta: Metainfo, dir: string, opts: FileStorageOptions = {}) {
    this.meta = meta;
    this.dir = resolve(dir);
    this.skip = new Set(opts.skipFiles ?? []);
    this.maxOpen = Math.max(1, opts.maxOpenFiles ?? 64);
    const root = this.dir.endsWith(sep) ? this.dir : this.dir + sep;
    this.paths = meta.files.map((f) => {
      const p = resolve(join(this.dir, ...f.path));
      // Defense in depth: metainfo paths are already sanitized.
      if (!p.startsWith(root)) throw new StorageError(`storage: file '${f.name}' would be outside ${this.dir}`, 'EINVAL', p);
      return p;
    });
    this.partPath = opts.partFile ?? join(this.dir, `.${meta.infoHash.toString('hex')}.parts`);
    this.PART = meta.files.length;
    this.ioPaths = [...this.paths, this.partPath];
  }

  /**
   * Change which files are skipped. A file that stops being skipped and does not exist yet is created from the
   * part file's bytes for it (its reads and writes wait for that); when no file is skipped any more, the part
   * file is deleted. Bytes already written to a file that becomes skipped stay where they are.
   */
  async setSkipFiles(skip: Iterable<number>): Promise<void> {
    this.assertOpen();
    const next = new Set(skip);
    const unskipped = [...this.skip].filter((i) => !next.has(i));
    this.skip = next;
    for (const i of next) if (!this.skippedExists.has(i) && this.handles.has(i)) this.skippedExists.set(i, true);
    const moves: Promise<void>[] = [];
    for (const i of unskipped) {
      if (this.skippedExists.get(i) === true) continue;
      const move = this.moveFromPart(i).finally(() => this.moving.delete(i));
      this.moving.set(i, move);
      moves.push(move);
    }
    await Promise.all(moves);
    for (const i of unskipped) this.skippedExists.delete(i);
    if (next.size === 0) await this.removePartFile();
  }

  /** Copy file i's bytes from the part file into the file (creating it); nothing to do without a part file. */
  private async moveFromPart(i: number): Promise<void> {
    const f = this.meta.files[i];
    if (f.pad) return;
    if (f.length === 0) return this.createEmpty(i); // no piece write may come to create it any more

    await Promise.all([...this.partWrites]);
    let partSize: number;
    try {
      partSize = (await fsp.stat(this.partPath)).size;
    } catch {
      return;
    }
    // Only the file's first and last pieces can share bytes with wanted files, so only they were written here.
    const pl = this.meta.pieceLength;
    const ranges: [number, number][] = [];
    const firstEnd = Math.min(f.offset + f.length, (Math.floor(f.offset / pl) + 1) * pl);
    ranges.push([f.offset, firstEnd]);
    const lastStart = Math.max(firstEnd, Math.floor((f.offset + f.length - 1) / pl) * pl);
    if (lastStart < f.offset + f.length) ranges.push([lastStart, f.offset + f.length]);
    const buf = Buffer.alloc(pl);
    for (const [from, to] of ranges) {
      const n = Math.min(to, partSize) - from;
      if (n <= 0) continue;
      const chunk = buf.subarray(0, n);
      await this.withFile(this.PART, false, async (fh) => {
        let got = 0;
        while (got < n) {
          const r = await pread(fh.fd, chunk, got, n - got, from + got);
          if (r === 0) break; // a hole at the end: zeros, as the buffer already holds
          got += r;
        }
      }, 'read');
      await this.withFile(i, true, async (fh, h) => {
        h.dirty = true;
        let done = 0;
        while (done < n) {
          const w = await pwrite(fh.fd, chunk, done, n - done, from - f.offset + done);
          if (w <= 0) throw new StorageError(`storage: write to ${this.paths[i]} made no progress`, 'EIO', this.paths[i]);
          done += w;
        }
      }, 'write');
    }
  }

  private async removePartFile(): Promise<void> {
    const h = this.handles.get(this.PART);
    if (h) {
      this.handles.delete(this.PART);
      h.retired = true;
      h.dirty = false;
      if (h.busy === 0) await this.dispose(h);
    }
    await fsp.unlink(this.partPath).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw toStorageError(e, 'delete', this.partPath);
    });
  }

  /**
   * Skipped file i, absent from disk: its bytes live in the part file. A file being moved out of the part file
   * waits for the move (and is then no longer skipped). Callers test `skip`/`moving` first to keep the common
   * case free of an await.
   */
  private async inPartFile(i: number): Promise<boolean> {
    const moving = this.moving.get(i);
    if (moving) await moving;
    if (!this.skip.has(i)) return false;
    let e = this.skippedExists.get(i);
    if (e === undefined) {
      e = await fsp.stat(this.paths[i]).then((st) => st.isFile(), () => false);
      if (this.skip.has(i)) this.skippedExists.set(i, e);
    }
    return !e;
  }

  async readBlock(index: number, begin: number, length: number, target?: Buffer): Promise<Buffer> {
    const size = this.checkIndex(index);
    if (!Number.isInteger(begin) || !Number.isInteger(length) || begin < 0 || length < 0 || begin + length > size) {
      throw new StorageError(`storage: block ${begin}+${length} is outside piece ${index} (${size} bytes)`, 'ERANGE');
    }
    const out = target ? target.subarray(0, length) : Buffer.allocUnsafe(length);
    if (out.length < length) throw new StorageError('storage: target buffer too small', 'ERANGE');
    await this.readRange(index * this.meta.pieceLength + begin, out);
    return out;
  }

  async readPiece(index: number): Promise<Buffer> {
    return this.readBlock(index, 0, this.checkIndex(index));
  }

  async writePiece(index: number, data: Buffer): Promise<void> {
    const size = this.checkIndex(index);
    if (data.length !== size) throw new StorageError(`storage: piece ${index} must be ${size} bytes, got ${data.length}`, 'ERANGE');
    const start = index * this.meta.pieceLength;
    const end = start + size;
    const files = this.meta.files;
    for (const i of filesForPiece(this.meta, index)) {
      const f = files[i];
      if (f.pad) continue;
      if (f.length === 0) {
        if (!this.skip.has(i)) await this.createEmpty(i);
        continue;
      }
      const toPart = (this.skip.has(i) || this.moving.has(i)) && (await this.inPartFile(i));
      const key = toPart ? this.PART : i;
      const from = Math.max(start, f.offset);
      const to = Math.min(end, f.offset + f.length);
      const write = this.withFile(key, true, async (fh, h) => {
        let off = from - start;
        let pos = toPart ? from : from - f.offset;
        let left = to - from;
        h.dirty = true;
        while (left > 0) {
          const bytesWritten = await pwrite(fh.fd, data, off, left, pos);
          if (bytesWritten <= 0) throw new StorageError(`storage: write to ${this.ioPaths[key]} made no progress`, 'EIO', this.ioPaths[key]);
          off += bytesWritten;
          pos += bytesWritten;
          left -= bytesWritten;
        }
      }, 'write');
      if (toPart) {
        this.partWrites.add(write);
        void write.finally(() => this.partWrites.delete(write)).catch(() => undefined);
      }
      await write;
    }
  }

  async flush(): Promise<void> {
    this.assertOpen();
    const work: Promise<void>[] = [];
    for (const [i, h] of this.handles) {
      if (!h.dirty) continue;
      h.dirty = false;
      work.push(
        this.withHandle(i, h, (fh) => fh.datasync(), 'sync'),
      );
    }
    await Promise.all(work);
    const e = this.deferredError;
    if (e) {
      this.deferredError = undefined;
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => undefined);
    this.closed = true;
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map((h) => h.fh.then((fh) => fh.close(), () => undefined).catch(() => undefined)));
  }

  /**
   * Size on disk of each file (undefined when missing); pad files report their nominal length. A skipped file
   * held in the part file reports how much of it the part file covers.
   */
  async onDiskSizes(): Promise<(number | undefined)[]> {
    const size = (p: string): Promise<number | undefined> => fsp.stat(p).then((st) => (st.isFile() ? st.size : undefined), () => undefined);
    const part = this.skip.size > 0 ? await size(this.partPath) : undefined;
    return Promise.all(
      this.meta.files.map(async (f, i) => {
        if (f.pad) return f.length;
        const sz = await size(this.paths[i]);
        if (sz !== undefined || !this.skip.has(i) || part === undefined) return sz;
        return Math.max(0, Math.min(f.length, part - f.offset));
      }),
    );
  }

  // -------------------------------------------------------------------------------------------------------

  private assertOpen(): void {
    if (this.closed) throw new StorageError('storage: closed', 'ECLOSED');
  }

  private checkIndex(index: number): number {
    this.assertOpen();
    try {
      return pieceSize(this.meta, index);
    } catch (e) {
      throw new StorageError(`storage: ${(e as Error).message}`, 'ERANGE');
    }
  }

  private async readRange(start: number, out: Buffer): Promise<void> {
    const files = this.meta.files;
    const end = start + out.length;
    let pos = start;
    for (let i = firstFileAt(files, start); pos < end; i++) {
      const f = files[i];
      if (!f) throw new StorageError(`storage: read past end of torrent at ${pos}`, 'ERANGE');
      if (f.length === 0) continue;
      const to = Math.min(end, f.offset + f.length);
      const o = pos - start;
      const n = to - pos;
      if (f.pad) {
        out.fill(0, o, o + n);
      } else {
        const fromPart = (this.skip.has(i) || this.moving.has(i)) && (await this.inPartFile(i));
        const key = fromPart ? this.PART : i;
        const filePos = fromPart ? pos : pos - f.offset;
        await this.withFile(key, false, async (fh) => {
          let got = 0;
          while (got < n) {
            const bytesRead = await pread(fh.fd, out, o + got, n - got, filePos + got);
            if (bytesRead === 0) {
              throw new StorageError(`storage: ${this.ioPaths[key]} is shorter than expected (need ${filePos + n} bytes)`, 'ESHORT', this.ioPaths[key]);
            }
            got += bytesRead;
          }
        }, 'read');
      }
      pos = to;
    }
  }

  private async createEmpty(i: number): Promise<void> {
    if (this.madeEmpty.has(i)) return;
    await this.withFile(i, true, async () => undefined, 'create');
    this.madeEmpty.add(i);
  }

  private async withFile<T>(i: number, writable: boolean, fn: (fh: FileHandle, h: Handle) => Promise<T>, op: string): Promise<T> {
    this.assertOpen();
    let h = this.handles.get(i);
    if (h && writable && !h.writable) {
      // Upgrade a read-only descriptor: retire it (closed once idle) and open a writable one.
      this.handles.delete(i);
      h.retired = true;
      if (h.busy === 0) void this.dispose(h);
      h = undefined;
    }
    if (!h) {
      h = { fh: this.open(i, writable), writable, busy: 0, dirty: false, retired: false };
      this.handles.set(i, h);
      this.evict(h);
    } else {
      // LRU: move to the most recently used position.
      this.handles.delete(i);
      this.handles.set(i, h);
    }
    return this.withHandle(i, h, fn, op);
  }

  private async withHandle<T>(i: number, h: Handle, fn: (fh: FileHandle, h: Handle) => Promise<T>, op: string): Promise<T> {
    h.busy++;
    try {
      let fh: FileHandle;
      try {
        fh = await h.fh;
      } catch (e) {
        if (this.handles.get(i) === h) this.handles.delete(i);
        throw toStorageError(e, op === 'read' ? 'open' : 'create', this.ioPaths[i]);
      }
      try {
        return await fn(fh, h);
      } catch (e) {
        throw toStorageError(e, op, this.ioPaths[i]);
      }
    } finally {
      h.busy--;
      if (h.busy === 0 && h.retired) void this.dispose(h);
    }
  }

  private async open(i: number, writable: boolean): Promise<FileHandle> {
    const p = this.ioPaths[i];
    if (!writable) return fsp.open(p, 'r');
    const d = dirname(p);
    if (!this.madeDirs.has(d)) {
      await fsp.mkdir(d, { recursive: true });
      this.madeDirs.add(d);
    }
    return fsp.open(p, WRITE_FLAGS, 0o666);
  }

  private evict(keep: Handle): void {
    if (this.handles.size <= this.maxOpen) return;
    for (const [i, h] of this.handles) {
      if (this.handles.size <= this.maxOpen) break;
      if (h.busy > 0 || h === keep) continue;
      this.handles.delete(i);
      h.retired = true;
      void this.dispose(h, i);
    }
  }

  private async dispose(h: Handle, i?: number): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await h.fh;
    } catch {
      return;
    }
    try {
      if (h.dirty) await fh.datasync();
    } catch (e) {
      this.deferredError ??= toStorageError(e, 'sync', i !== undefined ? this.ioPaths[i] : this.dir);
    }
    await fh.close().catch(() => undefined);
  }
}
