/**
 * Metainfo (.torrent) parsing, BEP 3 with BEP 12 (announce-list), BEP 19 (url-list), BEP 27 (private),
 * BEP 47 (pad files) and the v1 half of BEP 52 hybrid torrents.
 *
 * Strict where security matters (paths, lengths, piece table size) and tolerant where real torrents are
 * sloppy (utf-8 variants preferred, unknown keys ignored, empty announce tiers dropped).
 * The info-hash is the SHA-1 of the exact info-dict bytes as they appear in the file, never a re-encoding.
 */
import { createHash } from 'node:crypto';
import { type BencodeDict, type BencodeValue, BencodeError, decode, decodeWithSpan, isDict } from './bencode.js';

export class MetainfoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetainfoError';
  }
}

export interface TorrentFile {
  /**
   * Sanitized path components relative to the download directory. For multi-file torrents the first
   * component is the torrent name (the top folder), as libtorrent lays files out; single-file: [name].
   */
  path: string[];
  /** `path` joined with '/'. */
  name: string;
  length: number;
  /** Offset of the file's first byte in the torrent's byte stream. */
  offset: number;
  /** BEP 47 padding file: never written to disk, reads as zeros. */
  pad: boolean;
  /** Raw BEP 47 attribute string ('x' executable, 'h' hidden, 'p' pad, 'l' symlink), if any. */
  attr?: string;
}

export interface Metainfo {
  infoHash: Buffer;
  infoHashHex: string;
  name: string;
  pieceLength: number;
  pieceCount: number;
  /** Concatenated 20-byte SHA-1 piece hashes. */
  pieceHashes: Buffer;
  /** Total length of the byte stream, pad files included. */
  length: number;
  files: TorrentFile[];
  /** Tracker tiers (BEP 12), falling back to [[announce]]; empty when trackerless. */
  announce: string[][];
  /** Web seeds (BEP 19). */
  urlList: string[];
  private: boolean;
  comment?: string;
  createdBy?: string;
  creationDate?: number;
  /** Exact bencoded bytes of the info dict (served over ut_metadata, BEP 9). */
  infoBuffer: Buffer;
  /** BEP 52 hybrid (v1 + v2): only the v1 part is used. */
  isHybrid: boolean;
}

export interface ParseInfoOptions {
  announce?: string[][];
  urlList?: string[];
  comment?: string;
  createdBy?: string;
  creationDate?: number;
  /** When given (magnet download), the SHA-1 of `info` must equal it. */
  expectedInfoHash?: Buffer;
}

/** Largest piece length accepted: 64 MiB. */
export const MAX_PIECE_LENGTH = 64 * 1024 * 1024;
/** Largest number of files accepted in one torrent. */
export const MAX_FILES = 1_000_000;
const MAX_PATH_DEPTH = 64;
const MAX_COMPONENT_BYTES = 1024;

/** Parse a .torrent file. Throws MetainfoError naming the problem and the field. */
export function parseTorrent(buf: Uint8Array): Metainfo {
  let value: BencodeValue;
  let span: Uint8Array | undefined;
  try {
    ({ value, span } = decodeWithSpan(buf, 'info'));
  } catch (e) {
    if (e instanceof BencodeError) throw new MetainfoError(`not a valid torrent file: ${e.message}`);
    throw e;
  }
  if (!isDict(value)) throw new MetainfoError('not a valid torrent file: top level is not a dictionary');
  if (span === undefined) throw new MetainfoError("info: missing (a torrent must contain an 'info' dictionary)");
  const root = value;
  const opts: ParseInfoOptions = {
    announce: parseAnnounce(root),
    urlList: parseUrlList(root['url-list']),
    comment: optText(root, 'comment'),
    createdBy: optText(root, 'created by'),
  };
  const cd = root['creation date'];
  if (typeof cd === 'number' && cd >= 0) opts.creationDate = cd;
  return buildMeta(Buffer.from(span), root.info, opts);
}

/** Parse a bare info dict (metadata fetched over ut_metadata for a magnet link). */
export function parseInfoDict(info: Buffer, opts: ParseInfoOptions = {}): Metainfo {
  let value: BencodeValue;
  try {
    value = decode(info);
  } catch (e) {
    if (e instanceof BencodeError) throw new MetainfoError(`info: not valid bencode: ${e.message}`);
    throw e;
  }
  return buildMeta(Buffer.from(info), value, opts);
}

/** Size in bytes of piece `index` (the last one may be short). */
export function pieceSize(meta: Pick<Metainfo, 'pieceLength' | 'pieceCount' | 'length'>, index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= meta.pieceCount) {
    throw new RangeError(`piece index ${index} out of range (0..${meta.pieceCount - 1})`);
  }
  if (index < meta.pieceCount - 1) return meta.pieceLength;
  return meta.length - meta.pieceLength * (meta.pieceCount - 1);
}

/** Expected SHA-1 of piece `index` (a view into meta.pieceHashes). */
export function pieceHash(meta: Pick<Metainfo, 'pieceHashes' | 'pieceCount'>, index: number): Buffer {
  if (!Number.isInteger(index) || index < 0 || index >= meta.pieceCount) {
    throw new RangeError(`piece index ${index} out of range (0..${meta.pieceCount - 1})`);
  }
  return meta.pieceHashes.subarray(index * 20, index * 20 + 20);
}

/** Indices of the files (zero-length ones included) that overlap piece `index`. */
export function filesForPiece(meta: Metainfo, index: number): number[] {
  const start = index * meta.pieceLength;
  const end = start + pieceSize(meta, index);
  const out: number[] = [];
  for (let i = firstFileAt(meta.files, start); i < meta.files.length; i++) {
    const f = meta.files[i];
    if (f.length > 0 ? f.offset >= end : f.offset > end || (f.offset === end && end !== meta.length)) break;
    out.push(i);
  }
  return out;
}

/** Range of pieces [first, last] holding file `fileIndex`'s bytes; undefined for zero-length files. */
export function piecesForFile(meta: Metainfo, fileIndex: number): [number, number] | undefined {
  const f = meta.files[fileIndex];
  if (!f) throw new RangeError(`file index ${fileIndex} out of range`);
  if (f.length === 0) return undefined;
  return [Math.floor(f.offset / meta.pieceLength), Math.floor((f.offset + f.length - 1) / meta.pieceLength)];
}

/** Index of the first file whose byte range ends after `pos` (binary search; files are sorted by offset). */
export function firstFileAt(files: TorrentFile[], pos: number): number {
  let lo = 0, hi = files.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const f = files[mid];
    if (f.offset + f.length <= pos && !(f.length === 0 && f.offset === pos)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------------------------------------------------

function buildMeta(infoBuffer: Buffer, infoValue: BencodeValue | undefined, opts: ParseInfoOptions): Metainfo {
  if (!isDict(infoValue)) throw new MetainfoError('info: expected a dictionary');
  const info = infoValue;
  const infoHash = createHash('sha1').update(infoBuffer).digest();
  if (opts.expectedInfoHash && !infoHash.equals(opts.expectedInfoHash)) {
    throw new MetainfoError(
      `info: SHA-1 ${infoHash.toString('hex')} does not match the expected info-hash ${opts.expectedInfoHash.toString('hex')}`,
    );
  }
  const metaVersion = info['meta version'];
  const hasPieces = info.pieces !== undefined;
  if (metaVersion !== undefined && metaVersion !== 1 && !hasPieces) {
    if (metaVersion === 2) throw new MetainfoError('v2-only torrents (BEP 52) are not supported yet');
    throw new MetainfoError(`info.meta version: unsupported version ${String(metaVersion)}`);
  }
  const isHybrid = metaVersion === 2 && hasPieces;

  const name = sanitizeComponent(preferUtf8(info, 'name', 'info.name'), 'info.name');

  const pieceLength = intField(info['piece length'], 'info.piece length');
  if (pieceLength <= 0) throw new MetainfoError(`info.piece length: must be positive, got ${pieceLength}`);
  if (pieceLength > MAX_PIECE_LENGTH) {
    throw new MetainfoError(`info.piece length: ${pieceLength} exceeds the maximum of ${MAX_PIECE_LENGTH} (64 MiB)`);
  }

  const pieces = info.pieces;
  if (!(pieces instanceof Uint8Array)) throw new MetainfoError('info.pieces: missing or not a byte string');
  if (pieces.length % 20 !== 0) throw new MetainfoError(`info.pieces: length ${pieces.length} is not a multiple of 20`);

  const files: TorrentFile[] = [];
  let total = 0;
  if (info.files !== undefined) {
    if (info.length !== undefined) throw new MetainfoError("info: has both 'length' and 'files'");
    const list = info.files;
    if (!Array.isArray(list)) throw new MetainfoError('info.files: expected a list');
    if (list.length === 0) throw new MetainfoError('info.files: empty list');
    if (list.length > MAX_FILES) throw new MetainfoError(`info.files: ${list.length} files exceeds the maximum of ${MAX_FILES}`);
    const seen = new Map<string, number>();
    const dirs = new Set<string>();
    for (let i = 0; i < list.length; i++) {
      const where = `info.files[${i}]`;
      const fd = list[i];
      if (!isDict(fd)) throw new MetainfoError(`${where}: expected a dictionary`);
      const length = intField(fd.length, `${where}.length`);
      if (length < 0) throw new MetainfoError(`${where}.length: negative length ${length}`);
      const attr = fd.attr instanceof Uint8Array ? Buffer.from(fd.attr).toString('latin1') : undefined;
      const comps = parsePath(fd, where);
      const pad = (attr !== undefined && attr.includes('p')) || comps[0] === '.pad' ||
        comps[comps.length - 1].startsWith('_____padding_file_');
      const path = [name, ...comps];
      const joined = path.join('/');
      if (!pad) {
        const prev = seen.get(joined);
        if (prev !== undefined) throw new MetainfoError(`${where}.path: '${comps.join('/')}' duplicates info.files[${prev}]`);
        if (dirs.has(joined)) throw new MetainfoError(`${where}.path: '${comps.join('/')}' is also used as a directory`);
        seen.set(joined, i);
        for (let k = 1; k < path.length; k++) {
          const d = path.slice(0, k).join('/');
          const clash = seen.get(d);
          if (clash !== undefined) {
            throw new MetainfoError(`${where}.path: directory '${path.slice(1, k).join('/')}' is also a file (info.files[${clash}])`);
          }
          dirs.add(d);
        }
      }
      const file: TorrentFile = { path, name: joined, length, offset: total, pad };
      if (attr !== undefined) file.attr = attr;
      files.push(file);
      total += length;
      if (!Number.isSafeInteger(total)) throw new MetainfoError('info.files: total length is too large');
    }
  } else {
    const length = intField(info.length, 'info.length');
    if (length < 0) throw new MetainfoError(`info.length: negative length ${length}`);
    total = length;
    files.push({ path: [name], name, length, offset: 0, pad: false });
  }
  if (total === 0) throw new MetainfoError('info: torrent holds no data (total length is 0)');

  const pieceCount = Math.ceil(total / pieceLength);
  if (pieces.length / 20 !== pieceCount) {
    throw new MetainfoError(
      `info.pieces: has ${pieces.length / 20} hashes but ${total} bytes in pieces of ${pieceLength} need ${pieceCount}`,
    );
  }

  const meta: Metainfo = {
    infoHash,
    infoHashHex: infoHash.toString('hex'),
    name,
    pieceLength,
    pieceCount,
    pieceHashes: Buffer.from(pieces),
    length: total,
    files,
    announce: opts.announce ?? [],
    urlList: opts.urlList ?? [],
    private: info.private === 1,
    infoBuffer,
    isHybrid,
  };
  if (opts.comment !== undefined) meta.comment = opts.comment;
  if (opts.createdBy !== undefined) meta.createdBy = opts.createdBy;
  if (opts.creationDate !== undefined) meta.creationDate = opts.creationDate;
  return meta;
}

function intField(v: BencodeValue | undefined, what: string): number {
  if (v === undefined) throw new MetainfoError(`${what}: missing`);
  if (typeof v === 'bigint') throw new MetainfoError(`${what}: integer ${v} is out of range`);
  if (typeof v !== 'number') throw new MetainfoError(`${what}: expected an integer`);
  return v;
}

/** `key.utf-8` when it is a byte string, else `key` (which must be a byte string). */
function preferUtf8(d: BencodeDict, key: string, what: string): string {
  const u = d[`${key}.utf-8`];
  if (u instanceof Uint8Array && u.length > 0) return Buffer.from(u).toString('utf8');
  const v = d[key];
  if (v === undefined) throw new MetainfoError(`${what}: missing`);
  if (!(v instanceof Uint8Array)) throw new MetainfoError(`${what}: expected a byte string`);
  return Buffer.from(v).toString('utf8');
}

function parsePath(fd: BencodeDict, where: string): string[] {
  let raw = fd['path.utf-8'];
  let field = `${where}.path.utf-8`;
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every((c) => c instanceof Uint8Array)) {
    raw = fd.path;
    field = `${where}.path`;
  }
  if (raw === undefined) throw new MetainfoError(`${field}: missing`);
  if (!Array.isArray(raw)) throw new MetainfoError(`${field}: expected a list`);
  if (raw.length === 0) throw new MetainfoError(`${field}: empty path`);
  if (raw.length > MAX_PATH_DEPTH) throw new MetainfoError(`${field}: ${raw.length} components exceeds the maximum depth of ${MAX_PATH_DEPTH}`);
  return raw.map((c, k) => {
    if (!(c instanceof Uint8Array)) throw new MetainfoError(`${field}[${k}]: expected a byte string`);
    return sanitizeComponent(Buffer.from(c).toString('utf8'), field);
  });
}

/** Reject anything that could escape the download directory or is not a plain file name. */
function sanitizeComponent(c: string, field: string): string {
  if (c.length === 0) throw new MetainfoError(`${field}: empty path component is not allowed`);
  if (c === '..' || c === '.') throw new MetainfoError(`${field}: component '${c}' is not allowed`);
  if (c.includes('\0')) throw new MetainfoError(`${field}: component contains a NUL byte`);
  if (c.includes('/') || c.includes('\\')) {
    throw new MetainfoError(`${field}: component '${c}' contains a path separator (absolute or nested paths are not allowed)`);
  }
  if (/^[A-Za-z]:/.test(c)) throw new MetainfoError(`${field}: component '${c}' looks like an absolute (drive) path`);
  if (Buffer.byteLength(c) > MAX_COMPONENT_BYTES) throw new MetainfoError(`${field}: component is longer than ${MAX_COMPONENT_BYTES} bytes`);
  return c;
}

function optText(d: BencodeDict, key: string): string | undefined {
  const u = d[`${key}.utf-8`];
  if (u instanceof Uint8Array) return Buffer.from(u).toString('utf8');
  const v = d[key];
  return v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : undefined;
}

function isUrlish(s: string): boolean {
  return s.length > 0 && s.length <= 4096 && !/[\0\r\n]/.test(s);
}

function parseAnnounce(root: BencodeDict): string[][] {
  const tiers: string[][] = [];
  const seen = new Set<string>();
  const al = root['announce-list'];
  if (Array.isArray(al)) {
    for (const tier of al) {
      // Tolerate a flat list of strings (seen in the wild): each becomes its own tier.
      const entries = Array.isArray(tier) ? tier : [tier];
      const urls: string[] = [];
      for (const u of entries) {
        if (!(u instanceof Uint8Array)) continue;
        const s = Buffer.from(u).toString('utf8').trim();
        if (!isUrlish(s) || seen.has(s)) continue;
        seen.add(s);
        urls.push(s);
      }
      if (urls.length) tiers.push(urls);
    }
  }
  if (tiers.length === 0) {
    const a = root.announce;
    if (a instanceof Uint8Array) {
      const s = Buffer.from(a).toString('utf8').trim();
      if (isUrlish(s)) tiers.push([s]);
    }
  }
  return tiers;
}

function parseUrlList(v: BencodeValue | undefined): string[] {
  const out: string[] = [];
  const add = (x: BencodeValue) => {
    if (!(x instanceof Uint8Array)) return;
    const s = Buffer.from(x).toString('utf8').trim();
    if (isUrlish(s) && !out.includes(s)) out.push(s);
  };
  if (v instanceof Uint8Array) add(v);
  else if (Array.isArray(v)) v.forEach(add);
  return out;
}
