/**
 * File-backed piece storage: maps the torrent byte stream onto its files (pieces may span files),
 * opens files lazily through a small LRU of file descriptors, creates directories lazily and files sparse,
 * never writes BEP 47 pad files (they read as zeros), and surfaces every fs failure as a StorageError.
 */
import { constants, promises as fsp, read as fsRead, write as fsWrite } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { type Metainfo, filesForPiece, firstFileAt, pieceSize } from '../metainfo.js';
import { type PieceStorage, StorageError, toStorageError } from './interface.js';

export interface FileStorageOptions {
  /** Indices of files not to store: bytes of a written piece that fall in them are discarded. */
  skipFiles?: Set<number>;
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
  private readonly skip: Set<number>;
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
    this.skip = opts.skipFiles ?? new Set();
    this.maxOpen = Math.max(1, opts.maxOpenFiles ?? 64);
    const root = this.dir.endsWith(sep) ? this.dir : this.dir + sep;
    this.paths = meta.files.map((f) => {
      const p = resolve(join(this.dir, ...f.path));
      // Defense in depth: metainfo paths are already sanitized.
      if (!p.startsWith(root)) throw new StorageError(`storage: file '${f.name}' would be outside ${this.dir}`, 'EINVAL', p);
      return p;
    });
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
      if (f.pad || this.skip.has(i)) continue;
      if (f.length === 0) {
        await this.createEmpty(i);
        continue;
      }
      const from = Math.max(start, f.offset);
      const to = Math.min(end, f.offset + f.length);
      await this.withFile(i, true, async (fh, h) => {
        let off = from - start;
        let pos = from - f.offset;
        let left = to - from;
        h.dirty = true;
        while (left > 0) {
          const bytesWritten = await pwrite(fh.fd, data, off, left, pos);
          if (bytesWritten <= 0) throw new StorageError(`storage: write to ${this.paths[i]} made no progress`, 'EIO', this.paths[i]);
          off += bytesWritten;
          pos += bytesWritten;
          left -= bytesWritten;
        }
      }, 'write');
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

  /** Size on disk of each file (undefined when missing); pad files report their nominal length. */
  async onDiskSizes(): Promise<(number | undefined)[]> {
    return Promise.all(
      this.meta.files.map(async (f, i) => {
        if (f.pad) return f.length;
        try {
          const st = await fsp.stat(this.paths[i]);
          return st.isFile() ? st.size : undefined;
        } catch {
          return undefined;
        }
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
        const filePos = pos - f.offset;
        await this.withFile(i, false, async (fh) => {
          let got = 0;
          while (got < n) {
            const bytesRead = await pread(fh.fd, out, o + got, n - got, filePos + got);
            if (bytesRead === 0) {
              throw new StorageError(`storage: ${this.paths[i]} is shorter than expected (need ${filePos + n} bytes)`, 'ESHORT', this.paths[i]);
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
        throw toStorageError(e, op === 'read' ? 'open' : 'create', this.paths[i]);
      }
      try {
        return await fn(fh, h);
      } catch (e) {
        throw toStorageError(e, op, this.paths[i]);
      }
    } finally {
      h.busy--;
      if (h.busy === 0 && h.retired) void this.dispose(h);
    }
  }

  private async open(i: number, writable: boolean): Promise<FileHandle> {
    const p = this.paths[i];
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
      this.deferredError ??= toStorageError(e, 'sync', i !== undefined ? this.paths[i] : this.dir);
    }
    await fh.close().catch(() => undefined);
  }
}
