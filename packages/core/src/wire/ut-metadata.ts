/**
 * BEP 9 ut_metadata: fetch the info dictionary from a peer (magnet links) and serve ours.
 *
 * Usage:
 *   const md = wire.use(utMetadata({ infoHash, getMetadata: () => infoBytes }));
 *   wire.on('metadata', (buf) => ...); wire.on('metadata-error', (err) => ...);
 *   md.fetch();   // any time; waits for the peer's extended handshake if needed
 *
 * Everything is bounded: the peer's metadata_size/total_size is checked against maxMetadataSize
 * before anything is allocated, pieces must have the exact expected length, only pieces we asked
 * for are accepted, at most `maxOutstanding` requests are in flight, and we reject requests while more
 * than 1 MiB is queued for the peer (instead of queueing without bound).
 */
import { createHash } from 'node:crypto';
import { decodePrefix, encode, isDict, type BencodeDict } from '../bencode.js';
import type { WireExtension, WireExtensionFactory } from './extensions.js';
import type { PeerWire } from './peer-wire.js';

export const METADATA_PIECE_SIZE = 16 * 1024;
export const DEFAULT_MAX_METADATA_SIZE = 16 * 1024 * 1024;

/** Reject metadata requests while this much is already queued for the peer (flood protection). */
const MAX_SERVE_QUEUE = 1024 * 1024;
const MSG_REQUEST = 0, MSG_DATA = 1, MSG_REJECT = 2;

export class UtMetadataError extends Error {
  constructor(
    readonly code: 'NOT_SUPPORTED' | 'BAD_SIZE' | 'TOO_LARGE' | 'REJECTED' | 'BAD_PIECE' | 'HASH_MISMATCH' | 'CLOSED' | 'TIMEOUT',
    message: string,
  ) {
    super(`ut_metadata: ${message}`);
    this.name = 'UtMetadataError';
  }
}

export interface UtMetadataOptions {
  infoHash: Buffer;
  /** The raw info dictionary bytes when we have them (served to peers), else undefined. */
  getMetadata: () => Buffer | undefined;
  /** Refuse metadata larger than this (default 16 MiB). */
  maxMetadataSize?: number;
  /** Requests in flight at once while fetching (default 16). */
  maxOutstanding?: number;
}

export interface UtMetadataExtension extends WireExtension {
  /** Start (or continue) fetching; result is emitted on the wire as 'metadata' or 'metadata-error'. */
  fetch(): void;
  /** Peer's advertised metadata_size (after its extended handshake). */
  readonly peerMetadataSize: number | undefined;
  /** Whether a fetch is running. */
  readonly fetching: boolean;
  /** Resolved when the metadata arrived and verified; rejected on error. Starts the fetch. */
  fetchAsync(): Promise<Buffer>;
  /** Metadata pieces received so far in the running fetch (a caller's stall timer watches it). */
  readonly piecesReceived: number;
  /** Give up the running fetch (emits 'metadata-error' with `code`, TIMEOUT by default); fetch() may start again later. */
  abort(message?: string): void;
}

export function utMetadata(opts: UtMetadataOptions): WireExtensionFactory<UtMetadataExtension> {
  if (!Buffer.isBuffer(opts.infoHash) || opts.infoHash.length !== 20) throw new TypeError('utMetadata: infoHash must be 20 bytes');
  const maxSize = opts.maxMetadataSize ?? DEFAULT_MAX_METADATA_SIZE;
  const maxOutstanding = Math.max(1, opts.maxOutstanding ?? 16);
  return (wire: PeerWire) => new UtMetadata(wire, opts, maxSize, maxOutstanding);
}

class UtMetadata implements UtMetadataExtension {
  readonly name = 'ut_metadata';
  peerMetadataSize: number | undefined;
  fetching = false;
  private wanted = false;
  private done = false;
  private buf: Buffer | undefined;
  private numPieces = 0;
  private nextPiece = 0;
  private received = 0;
  private got: Uint8Array | undefined;
  private inFlight = new Set<number>();

  constructor(
    private readonly wire: PeerWire,
    private readonly opts: UtMetadataOptions,
    private readonly maxSize: number,
    private readonly maxOutstanding: number,
  ) {}

  extendHandshake(dict: Record<string, unknown>): void {
    const md = this.opts.getMetadata();
    if (md) dict.metadata_size = md.length;
  }

  onExtendedHandshake(dict: BencodeDict): void {
    const s = dict.metadata_size;
    if (typeof s === 'number' && Number.isInteger(s)) this.peerMetadataSize = s;
    if (this.wanted && !this.fetching && !this.done) this.start();
  }

  fetch(): void {
    if (this.done || this.fetching) return;
    this.wanted = true;
    if (this.wire.extendedHandshake) this.start();
    else if (this.wire.handshakeReceived && !this.wire.supportsExtended) {
      this.fail(new UtMetadataError('NOT_SUPPORTED', 'peer does not support the extension protocol'));
    }
  }

  fetchAsync(): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const onMeta = (b: Buffer): void => {
        this.wire.removeListener('metadata-error', onErr);
        resolve(b);
      };
      const onErr = (e: Error): void => {
        this.wire.removeListener('metadata', onMeta);
        reject(e);
      };
      this.wire.once('metadata', onMeta);
      this.wire.once('metadata-error', onErr);
      this.fetch();
    });
  }

  get piecesReceived(): number {
    return this.received;
  }

  abort(message = 'no metadata piece arrived in time'): void {
    if (this.fetching) this.fail(new UtMetadataError('TIMEOUT', message));
  }

  private start(): void {
    if (!this.wire.extensionSupported('ut_metadata')) {
      this.fail(new UtMetadataError('NOT_SUPPORTED', 'peer does not support ut_metadata'));
      return;
    }
    const size = this.peerMetadataSize;
    if (size === undefined || size <= 0) {
      this.fail(new UtMetadataError('BAD_SIZE', `peer advertised no usable metadata_size (${size})`));
      return;
    }
    if (size > this.maxSize) {
      this.fail(new UtMetadataError('TOO_LARGE', `peer metadata_size ${size} exceeds the limit of ${this.maxSize}`));
      return;
    }
    this.fetching = true;
    this.buf = Buffer.alloc(size);
    this.numPieces = Math.ceil(size / METADATA_PIECE_SIZE);
    this.got = new Uint8Array(this.numPieces);
    this.nextPiece = 0;
    this.received = 0;
    this.pump();
  }

  private pump(): void {
    while (this.fetching && this.inFlight.size < this.maxOutstanding && this.nextPiece < this.numPieces) {
      const piece = this.nextPiece++;
      this.inFlight.add(piece);
      this.wire.sendExtended('ut_metadata', encode({ msg_type: MSG_REQUEST, piece }));
    }
  }

  private fail(err: UtMetadataError): void {
    this.fetching = false;
    this.wanted = false;
    this.buf = undefined;
    this.got = undefined;
    this.inFlight.clear();
    this.wire.emit('metadata-error', err);
  }

  onMessage(payload: Buffer): void {
    let dict: BencodeDict;
    let end: number;
    try {
      const r = decodePrefix(payload, { maxDepth: 4 });
      if (!isDict(r.value)) return;
      dict = r.value;
      end = r.end;
    } catch {
      return; // garbage from a hostile or broken peer: ignore the message
    }
    const type = dict.msg_type;
    const piece = dict.piece;
    if (typeof type !== 'number' || typeof piece !== 'number' || !Number.isInteger(piece) || piece < 0) return;
    if (type === MSG_REQUEST) this.serve(piece);
    else if (type === MSG_DATA) this.onData(piece, dict.total_size, payload.subarray(end));
    else if (type === MSG_REJECT) {
      if (this.fetching && this.inFlight.has(piece)) {
        this.fail(new UtMetadataError('REJECTED', `peer rejected metadata piece ${piece}`));
      }
    }
  }

  private serve(piece: number): void {
    const md = this.opts.getMetadata();
    const reject = (): void => {
      this.wire.sendExtended('ut_metadata', encode({ msg_type: MSG_REJECT, piece }));
    };
    if (!md || piece * METADATA_PIECE_SIZE >= md.length || this.wire.writableLength > MAX_SERVE_QUEUE) return reject();
    const start = piece * METADATA_PIECE_SIZE;
    const data = md.subarray(start, Math.min(md.length, start + METADATA_PIECE_SIZE));
    const head = encode({ msg_type: MSG_DATA, piece, total_size: md.length });
    this.wire.sendExtended('ut_metadata', Buffer.concat([head, data]));
  }

  private onData(piece: number, totalSize: unknown, data: Buffer): void {
    if (!this.fetching || !this.buf || !this.got) return;
    if (!this.inFlight.has(piece)) return; // unsolicited: ignore
    const size = this.buf.length;
    if (totalSize !== size) {
      this.fail(new UtMetadataError('BAD_SIZE', `peer's total_size ${String(totalSize)} differs from its metadata_size ${size}`));
      return;
    }
    const start = piece * METADATA_PIECE_SIZE;
    const expected = Math.min(METADATA_PIECE_SIZE, size - start);
    if (data.length !== expected) {
      this.fail(new UtMetadataError('BAD_PIECE', `metadata piece ${piece} is ${data.length} bytes, expected ${expected}`));
      return;
    }
    this.inFlight.delete(piece);
    if (this.got[piece] === 0) {
      this.got[piece] = 1;
      data.copy(this.buf, start);
      this.received++;
    }
    if (this.received < this.numPieces) {
      this.pump();
      return;
    }
    const buf = this.buf;
    const digest = createHash('sha1').update(buf).digest();
    if (!digest.equals(this.opts.infoHash)) {
      this.fail(new UtMetadataError('HASH_MISMATCH', `metadata SHA-1 ${digest.toString('hex')} does not match the info-hash ${this.opts.infoHash.toString('hex')}`));
      return;
    }
    this.fetching = false;
    this.done = true;
    this.buf = undefined;
    this.got = undefined;
    this.wire.emit('metadata', buf);
  }

  onClose(): void {
    if (this.fetching) this.fail(new UtMetadataError('CLOSED', 'connection closed before the metadata arrived'));
  }
}
