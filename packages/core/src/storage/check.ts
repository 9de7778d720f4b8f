/** Hash check of data already on disk (when a torrent is added, or when fast-resume data is not trusted). */
import { BitField } from '../bitfield.js';
import type { PieceHasher } from '../hasher.js';
import { type Metainfo, firstFileAt, pieceHash, pieceSize } from '../metainfo.js';
import { FileStorage } from './file-storage.js';
import { type PieceStorage, StorageError } from './interface.js';

export interface CheckOptions {
  /** Only check these pieces (others stay unset). */
  pieces?: Iterable<number>;
  /** Pieces read ahead while hashing (bounded memory: concurrency × piece length). Default 4. */
  concurrency?: number;
}

/**
 * Verify every piece against its SHA-1. Pieces whose data is missing or short (StorageError) are absent;
 * any other error (EACCES, EIO, ...) is thrown. With a FileStorage, pieces lying in missing or short files
 * are skipped without reading.
 */
export async function checkExistingData(
  meta: Metainfo,
  storage: PieceStorage,
  hasher: Pick<PieceHasher, 'sha1'>,
  onProgress?: (done: number, total: number) => void,
  opts: CheckOptions = {},
): Promise<BitField> {
  const have = new BitField(meta.pieceCount);
  const list = opts.pieces ? [...opts.pieces] : Array.from({ length: meta.pieceCount }, (_, i) => i);
  const total = list.length;
  // Bytes actually present from the start of each file: a piece needs every overlapped byte.
  let available: ((index: number) => boolean) | undefined;
  if (storage instanceof FileStorage) {
    const sizes = await storage.onDiskSizes();
    available = (index) => {
      const start = index * meta.pieceLength;
      const end = start + pieceSize(meta, index);
      for (let i = firstFileAt(meta.files, start); i < meta.files.length; i++) {
        const f = meta.files[i];
        if (f.length === 0 || f.offset + f.length <= start) continue;
        if (f.offset >= end) break;
        const need = Math.min(end, f.offset + f.length) - f.offset;
        const sz = sizes[i];
        if (sz === undefined || sz < need) return false;
      }
      return true;
    };
  }
  let done = 0;
  let next = 0;
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  // One reusable buffer per worker: the hasher copies its input before resolving, so memory stays at
  // concurrency × piece length instead of garbage proportional to the torrent's size.
  const worker = async () => {
    const scratch = Buffer.allocUnsafe(meta.pieceLength);
    while (next < list.length) {
      const index = list[next++];
      if (!available || available(index)) {
        let data: Buffer | undefined;
        try {
          data = await storage.readBlock(index, 0, pieceSize(meta, index), scratch);
        } catch (e) {
          if (!(e instanceof StorageError) || !['ENOENT', 'ESHORT', 'ENOTDIR', 'EISDIR'].includes(e.code)) throw e;
        }
        if (data && (await hasher.sha1(data)).equals(pieceHash(meta, index))) have.set(index);
      }
      done++;
      onProgress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, total)) }, worker));
  return have;
}
