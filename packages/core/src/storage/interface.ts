/**
 * The engine talks to piece storage through this interface (after anacrolix/torrent storage/interface.go);
 * FileStorage is the default, file-backed implementation. Pieces are verified by the caller before writePiece.
 */
export interface PieceStorage {
  /**
   * Read `length` bytes at `begin` inside piece `index`. Throws StorageError if the data is not on disk.
   * With `target`, the bytes go into target[0, length) (a pre-allocated buffer) and a view of it is returned.
   */
  readBlock(index: number, begin: number, length: number, target?: Buffer): Promise<Buffer>;
  /** Write a whole, already verified piece. */
  /** The engine reuses `data` once this resolves: implementations must not keep a reference to it. */
  writePiece(index: number, data: Buffer): Promise<void>;
  readPiece(index: number): Promise<Buffer>;
  /** Make written data durable (fdatasync). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export class StorageError extends Error {
  /** errno-style code: ENOSPC, EACCES, ENOENT, ESHORT (file shorter than the torrent says), ESKIPPED, ERANGE, ECLOSED ... */
  readonly code: string;
  readonly path?: string;
  constructor(message: string, code: string, path?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
    this.code = code;
    if (path !== undefined) this.path = path;
  }
}

const REASONS: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  EISDIR: 'a directory is in the way',
  ENOTDIR: 'a file is in the way of a directory',
  ENOENT: 'file not found',
  EMFILE: 'too many open files',
  EIO: 'I/O error',
  EFBIG: 'file too large for this file system',
  ENAMETOOLONG: 'file name too long',
};

/** Wrap a Node fs error into a StorageError whose message names the operation, file and reason. */
export function toStorageError(err: unknown, op: string, path: string): StorageError {
  if (err instanceof StorageError) return err;
  const code = (err as NodeJS.ErrnoException)?.code ?? 'EIO';
  const reason = REASONS[code] ?? (err instanceof Error ? err.message : String(err));
  return new StorageError(`storage: ${op} ${path}: ${reason} (${code})`, code, path, { cause: err });
}
