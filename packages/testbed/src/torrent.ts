/** Torrent-file helpers for the test bed: mktorrent wrapper, info-hash, magnet links. */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { bdecode, isBDict, type BValue } from './bdecode.js';
import { requireTool } from './util.js';
import { startProcess, withOutput } from './process.js';

export interface MktorrentOptions {
  /** Announce URLs: each entry is one tier (mktorrent -a, repeated). */
  announce?: string[];
  /** Piece length as a power of two (mktorrent -l). Default 16 (64 KiB) — many pieces for small test payloads. */
  pieceLengthLog2?: number;
  private?: boolean;
  webSeeds?: string[];
  comment?: string;
  name?: string;
  /** Omit the creation date (mktorrent -d) for reproducible output. Default true. */
  noDate?: boolean;
  source?: string;
}

export interface TorrentFile {
  path: string;
  bytes: Buffer;
  /** Hex SHA-1 of the bencoded info dictionary, exactly as stored in the file. */
  infoHash: string;
  name: string;
  pieceLength: number;
  pieceCount: number;
  totalLength: number;
}

/** Runs mktorrent on `target` (file or folder), writing `output`. Throws if mktorrent is missing. */
export async function mktorrent(target: string, output: string, opts: MktorrentOptions = {}): Promise<TorrentFile> {
  const bin = requireTool('mktorrent');
  if (!bin) throw new Error('mktorrent is not installed');
  const args: string[] = [];
  for (const a of opts.announce ?? []) args.push('-a', a);
  args.push('-l', String(opts.pieceLengthLog2 ?? 16));
  if (opts.private) args.push('-p');
  for (const w of opts.webSeeds ?? []) args.push('-w', w);
  if (opts.comment) args.push('-c', opts.comment);
  if (opts.name) args.push('-n', opts.name);
  if (opts.noDate ?? true) args.push('-d');
  if (opts.source) args.push('-s', opts.source);
  args.push('-o', output, target);
  const p = startProcess(bin, args, { name: 'mktorrent' });
  const code = await p.exited;
  if (code !== 0) throw withOutput(p, `mktorrent exited with ${code}`);
  return readTorrent(output);
}

/** Reads a .torrent and returns its info-hash and a few fields. */
export async function readTorrent(path: string): Promise<TorrentFile> {
  const bytes = await readFile(path);
  return { path, bytes, ...parseTorrentBytes(bytes) };
}

export function parseTorrentBytes(bytes: Uint8Array): Omit<TorrentFile, 'path' | 'bytes'> {
  const { value, infoSpan } = bdecode(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  if (!isBDict(value) || !infoSpan) throw new Error('torrent has no info dictionary');
  const info = value.info as { [k: string]: BValue };
  const num = (v: BValue | undefined): number => (typeof v === 'number' ? v : 0);
  const pieces = info.pieces;
  let totalLength = 0;
  if (typeof info.length === 'number') totalLength = info.length;
  else if (Array.isArray(info.files)) for (const f of info.files) if (isBDict(f)) totalLength += num(f.length);
  return {
    infoHash: createHash('sha1').update(infoSpan).digest('hex'),
    name: Buffer.isBuffer(info.name) ? info.name.toString('utf8') : '',
    pieceLength: num(info['piece length']),
    pieceCount: Buffer.isBuffer(pieces) ? pieces.length / 20 : 0,
    totalLength,
  };
}

/** Formats a magnet link for an info-hash (optional display name, trackers, x.pe peers). */
export function magnetLink(infoHash: string, opts: { name?: string; trackers?: string[]; peers?: string[] } = {}): string {
  const parts = [`xt=urn:btih:${infoHash}`];
  if (opts.name) parts.push(`dn=${encodeURIComponent(opts.name)}`);
  for (const t of opts.trackers ?? []) parts.push(`tr=${encodeURIComponent(t)}`);
  for (const p of opts.peers ?? []) parts.push(`x.pe=${encodeURIComponent(p)}`);
  return `magnet:?${parts.join('&')}`;
}
