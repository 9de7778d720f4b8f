/**
 * PeerWire: one BitTorrent peer connection over any Duplex (normally a net.Socket).
 *
 * Reports every message as an event and keeps the four choke/interest flags; request tracking,
 * piece picking and choking policy belong to the torrent layer. Hot path notes: reads go straight
 * from socket chunks through the streaming MessageParser (piece blocks are zero-copy views when a
 * message sits in one chunk); writes made in the same tick are corked into one writev, and piece
 * messages write the 13-byte header and the block separately (no concatenation).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { decode, encode, isDict, type BencodeDict, type EncodableValue } from '../bencode.js';
import type { Clock, Timer } from '../clock.js';
import { compactAddress, type WireExtension, type WireExtensionFactory } from './extensions.js';
import {
  MessageParser,
  WireProtocolError,
  encodeAllowedFast,
  encodeBitfield,
  encodeCancel,
  encodeChoke,
  encodeExtendedHeader,
  encodeHandshake,
  encodeHave,
  encodeHaveAll,
  encodeHaveNone,
  encodeInterested,
  encodeKeepAlive,
  encodeNotInterested,
  encodePieceHeader,
  encodePort,
  encodeReject,
  encodeRequest,
  encodeSuggest,
  encodeUnchoke,
  type PeerCaps,
  type WireMessage,
} from './messages.js';

export const DEFAULT_CLIENT_NAME = 'bitorrent 0.1';

export interface PeerWireOptions {
  /** Our 20-byte peer id. */
  peerId: Buffer;
  /** Input arrives through ingest() from one reused read buffer: see ParserOptions.transientChunks. */
  transientChunks?: boolean;
  /** Capabilities we advertise (default: extended and fast on, dht off). */
  reserved?: { extended?: boolean; fast?: boolean; dht?: boolean };
  /** Cap on any incoming message (default 1 MiB). */
  maxMessageLength?: number;
  /** Cap on an incoming piece block (default 16 KiB). */
  maxBlockLength?: number;
  /** Cap on an incoming bitfield in bytes (default maxMessageLength - 1). */
  maxBitfieldLength?: number;
  /** Send a keep-alive when we have sent nothing for this long (default 60 s; 0 disables). */
  keepAliveMs?: number;
  /** Close if nothing is received for this long, handshake included (default 120 s; 0 disables). */
  idleTimeoutMs?: number;
  /** Our listen port, advertised as `p` in the BEP 10 handshake. */
  listenPort?: number;
  /** Client name advertised as `v` (default "bitorrent 0.1"). */
  clientName?: string;
  /** Request queue depth advertised as `reqq` (default 250). */
  reqq?: number;
  /** Clock in ms (default Date.now, or clock.now); the keep-alive/idle timer only polls it. */
  now?: () => number;
  /**
   * needsDrain turns true once this many bytes are queued in the socket (default 1 MiB). The socket's own
   * 16 KiB high-water mark would make a paced uploader stall every block; 'drain' fires when the queue empties.
   */
  writeBufferSize?: number;
  /** Injected clock (core/clock.ts) for the keep-alive/idle timer; default: real timers. */
  clock?: Clock;
}

export interface PeerWireEvents {
  handshake: [infoHash: Buffer, peerId: Buffer, caps: PeerCaps];
  choke: [];
  unchoke: [];
  interested: [];
  'not-interested': [];
  have: [index: number];
  /** `replaces`: a later have-state message; it supersedes everything the peer announced before. */
  bitfield: [bitfield: Buffer, replaces: boolean];
  'have-all': [replaces: boolean];
  'have-none': [replaces: boolean];
  request: [index: number, begin: number, length: number];
  piece: [index: number, begin: number, block: Buffer];
  cancel: [index: number, begin: number, length: number];
  reject: [index: number, begin: number, length: number];
  'allowed-fast': [index: number];
  suggest: [index: number];
  port: [port: number];
  'extended-handshake': [dict: BencodeDict];
  'keep-alive': [];
  drain: [];
  error: [err: Error];
  close: [];
}

// Typed listeners for the built-in events; extensions may emit their own (e.g. 'metadata', 'pex-peers').
export interface PeerWire {
  on<K extends keyof PeerWireEvents>(event: K, listener: (...args: PeerWireEvents[K]) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once<K extends keyof PeerWireEvents>(event: K, listener: (...args: PeerWireEvents[K]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
}

const NO_CAPS: PeerCaps = Object.freeze({ extended: false, fast: false, dht: false });
const EMPTY = Buffer.alloc(0);

export class PeerWire extends EventEmitter {
  readonly socket: Duplex;
  /** Our 20-byte peer id (sent in our handshake). */
  readonly localPeerId: Buffer;
  /** The peer's id once its handshake arrived (same as remotePeerId; WebTorrent naming). */
  peerId: Buffer | undefined;
  readonly localCaps: PeerCaps;

  amChoking = true;
  amInterested = false;
  peerChoking = true;
  peerInterested = false;

  /** Set when the peer's handshake arrives. */
  infoHash: Buffer | undefined;
  remotePeerId: Buffer | undefined;
  peerCaps: PeerCaps = NO_CAPS;
  /** Extension name → the id the peer wants us to use when sending it that extension's messages. */
  readonly peerExtensions = new Map<string, number>();
  /** The peer's BEP 10 handshake dictionary (latest). */
  extendedHandshake: BencodeDict | undefined;

  /** Payload bytes of piece messages sent / received. */
  uploadedBytes = 0;
  downloadedBytes = 0;

  handshakeSent = false;
  handshakeReceived = false;
  extendedHandshakeSent = false;
  destroyed = false;
  /** The error that closed the wire, if any. */
  closeError: Error | undefined;

  private readonly opts: PeerWireOptions;
  private readonly parser: MessageParser;
  private readonly now: () => number;
  private readonly extensions: WireExtension[] = [];
  /** Registered local extensions by name. */
  readonly extensionsByName = new Map<string, WireExtension>();
  private lastRecvAt: number;
  private lastSentAt: number;
  private timer: Timer | undefined;
  private readonly clock: Clock | undefined;
  private readonly writeBufferSize: number;
  private corked = false;
  private queuedTotal = 0;
  private parsing = false;
  private awaitingLocalHandshake = false;
  private readingPaused = false;
  private sawHaveState = false;
  private readonly onData = (chunk: Buffer): void => this.handleData(chunk);
  private readonly uncork = (): void => {
    this.corked = false;
    if (!this.destroyed) this.socket.uncork();
  };
  private readonly sink = (m: WireMessage): boolean => {
    this.handleMessage(m);
    return !(this.destroyed || this.awaitingLocalHandshake);
  };

  constructor(socket: Duplex, opts: PeerWireOptions) {
    super();
    if (!Buffer.isBuffer(opts.peerId) || opts.peerId.length !== 20) throw new TypeError('peerId must be a 20-byte Buffer');
    this.socket = socket;
    this.opts = opts;
    this.localPeerId = Buffer.from(opts.peerId);
    const r = opts.reserved ?? {};
    this.localCaps = { extended: r.extended ?? true, fast: r.fast ?? true, dht: r.dht ?? false };
    this.parser = new MessageParser({
      expectHandshake: true,
      transientChunks: opts.transientChunks,
      maxMessageLength: opts.maxMessageLength,
      maxBlockLength: opts.maxBlockLength,
      maxBitfieldLength: opts.maxBitfieldLength,
    });
    this.clock = opts.clock;
    this.writeBufferSize = Math.max(this.socket.writableHighWaterMark, opts.writeBufferSize ?? 1024 * 1024);
    this.now = opts.now ?? (opts.clock ? () => opts.clock!.now() : Date.now);
    this.lastRecvAt = this.lastSentAt = this.now();

    this.remote(); // cache the address while the socket is open
    socket.on('data', this.onData);
    socket.resume(); // a socket handed over paused (after an MSE handshake or protocol sniffing)
    socket.on('drain', () => this.emit('drain'));
    socket.on('error', (err: Error) => this.destroy(err));
    socket.on('end', () => this.destroy());
    socket.on('close', () => this.destroy());

    const keepAlive = opts.keepAliveMs ?? 60_000;
    const idle = opts.idleTimeoutMs ?? 120_000;
    const periods = [keepAlive, idle].filter((x) => x > 0);
    if (periods.length > 0) {
      const tick = Math.max(5, Math.min(1000, Math.floor(Math.min(...periods) / 4)));
      const fn = (): void => this.onTick(keepAlive, idle);
      this.timer = this.clock ? this.clock.setInterval(fn, tick) : setInterval(fn, tick);
      this.timer.unref?.();
    }
  }

  // ------------------------------------------------------------ state

  /** The socket's remote address (undefined for non-socket Duplexes or before connect). */
  get remoteAddress(): string | undefined {
    return this.remote()?.address;
  }
  get remotePort(): number | undefined {
    return this.remote()?.port;
  }
  private remoteCache: { address: string; port: number | undefined } | undefined;
  private remote(): { address: string; port: number | undefined } | undefined {
    if (!this.remoteCache) {
      const s = this.socket as Duplex & { remoteAddress?: string; remotePort?: number };
      if (s.remoteAddress) this.remoteCache = { address: s.remoteAddress, port: s.remotePort };
    }
    return this.remoteCache;
  }

  /** Both sides advertised BEP 6: requests we will not serve must be answered with reject(). */
  get supportsFast(): boolean {
    return this.localCaps.fast && this.peerCaps.fast;
  }
  get supportsExtended(): boolean {
    return this.localCaps.extended && this.peerCaps.extended;
  }
  /** The peer advertised this BEP 10 extension in its handshake. */
  extensionSupported(name: string): boolean {
    return this.peerExtensions.has(name);
  }
  /** A registered local extension by name. */
  getExtension<E extends WireExtension = WireExtension>(name: string): E | undefined {
    return this.extensionsByName.get(name) as E | undefined;
  }

  /** Bytes queued in the socket, not yet handed to the kernel. */
  get writableLength(): number {
    return this.socket.writableLength;
  }
  /** Bytes ever given to the socket. A buffer passed to a write is free again once `flushedBytes` reaches this. */
  get queuedBytes(): number {
    return this.queuedTotal;
  }
  /** Bytes the socket has handed to the kernel (or dropped at destroy): nothing before this offset is referenced. */
  get flushedBytes(): number {
    return this.destroyed ? this.queuedTotal : this.queuedTotal - this.socket.writableLength;
  }
  /** True when the caller should wait for 'drain' before queueing more piece data. */
  get needsDrain(): boolean {
    return this.socket.writableLength >= this.writeBufferSize;
  }

  pauseReading(): void {
    this.readingPaused = true;
    this.socket.pause();
  }
  resumeReading(): void {
    this.readingPaused = false;
    if (!this.awaitingLocalHandshake && !this.destroyed) this.socket.resume();
  }
  get readingIsPaused(): boolean {
    return this.readingPaused;
  }

  // ------------------------------------------------------------ extensions

  /** Register an extension (before our BEP 10 handshake goes out). Returns the extension instance. */
  use<E extends WireExtension>(factory: WireExtensionFactory<E>): E {
    if (this.extendedHandshakeSent) throw new Error('wire.use() must be called before the extended handshake is sent');
    if (this.extensions.length >= 250) throw new Error('too many wire extensions');
    const ext = factory(this);
    if (!ext || typeof ext.name !== 'string' || typeof ext.onMessage !== 'function') throw new TypeError('wire extension needs a name and onMessage');
    if (this.extensions.some((e) => e.name === ext.name)) throw new Error(`wire extension ${ext.name} already registered`);
    this.extensions.push(ext);
    this.extensionsByName.set(ext.name, ext);
    return ext;
  }

  /** Send an extension message to the peer under the id it gave for `extName`. False if the peer lacks it. */
  sendExtended(extName: string, payload: Buffer): boolean {
    const id = this.peerExtensions.get(extName);
    if (id === undefined || this.destroyed) return false;
    this.write(encodeExtendedHeader(id, payload.length));
    if (payload.length > 0) this.write(payload);
    return true;
  }

  private sendExtendedHandshake(): void {
    this.extendedHandshakeSent = true;
    const m: Record<string, number> = {};
    this.extensions.forEach((e, i) => (m[e.name] = i + 1));
    const dict: Record<string, unknown> = {
      m,
      v: this.opts.clientName ?? DEFAULT_CLIENT_NAME,
      reqq: this.opts.reqq ?? 250,
    };
    if (this.opts.listenPort) dict.p = this.opts.listenPort;
    const yourip = compactAddress(this.remoteAddress);
    if (yourip) dict.yourip = yourip;
    for (const e of this.extensions) e.extendHandshake?.(dict);
    const payload = encode(dict as EncodableValue);
    this.write(encodeExtendedHeader(0, payload.length));
    this.write(payload);
  }

  // ------------------------------------------------------------ sending

  /** Send our handshake: outgoing wires at once; incoming ones from the 'handshake' handler (or later). */
  sendHandshake(infoHash: Buffer): void {
    if (this.destroyed) return;
    if (this.handshakeSent) throw new Error('handshake already sent');
    if (this.handshakeReceived && this.infoHash && !this.infoHash.equals(infoHash)) {
      throw new Error('sendHandshake: info-hash differs from the one the peer asked for');
    }
    this.infoHash = Buffer.from(infoHash);
    this.handshakeSent = true;
    this.write(encodeHandshake(infoHash, this.localPeerId, this.localCaps));
    if (this.handshakeReceived && this.supportsExtended) this.sendExtendedHandshake();
    if (this.awaitingLocalHandshake) {
      this.awaitingLocalHandshake = false;
      // Inside the 'handshake' event the parser just carries on; later, replay what was held back.
      if (!this.parsing) {
        if (!this.readingPaused) this.socket.resume();
        this.handleData(EMPTY);
      }
    }
  }

  keepAlive(): void {
    this.write(encodeKeepAlive());
  }
  choke(): void {
    this.amChoking = true;
    this.write(encodeChoke());
  }
  unchoke(): void {
    this.amChoking = false;
    this.write(encodeUnchoke());
  }
  interested(): void {
    this.amInterested = true;
    this.write(encodeInterested());
  }
  notInterested(): void {
    this.amInterested = false;
    this.write(encodeNotInterested());
  }
  have(index: number): void {
    this.write(encodeHave(index));
  }
  bitfield(bitfield: Uint8Array): void {
    this.write(encodeBitfield(bitfield));
  }
  /** BEP 6 only: returns false (and sends nothing) unless fast was negotiated. */
  haveAll(): boolean {
    return this.supportsFast && this.write(encodeHaveAll());
  }
  /** BEP 6 only: returns false (and sends nothing) unless fast was negotiated. */
  haveNone(): boolean {
    return this.supportsFast && this.write(encodeHaveNone());
  }
  request(index: number, begin: number, length: number): void {
    this.write(encodeRequest(index, begin, length));
  }
  /** Header and block go out as two writes in one corked batch (the block is not copied). */
  piece(index: number, begin: number, block: Buffer): void {
    if (this.destroyed) return;
    this.write(encodePieceHeader(index, begin, block.length));
    this.write(block);
    this.uploadedBytes += block.length;
  }
  cancel(index: number, begin: number, length: number): void {
    this.write(encodeCancel(index, begin, length));
  }
  /** BEP 6 only: returns false (and sends nothing) unless fast was negotiated. */
  reject(index: number, begin: number, length: number): boolean {
    return this.supportsFast && this.write(encodeReject(index, begin, length));
  }
  /** BEP 6 rule in one call: send reject when fast is negotiated, otherwise drop silently. Returns whether sent. */
  rejectRequest(index: number, begin: number, length: number): boolean {
    return this.supportsFast && this.write(encodeReject(index, begin, length));
  }
  /** BEP 6 only: returns false (and sends nothing) unless fast was negotiated. */
  allowedFast(index: number): boolean {
    return this.supportsFast && this.write(encodeAllowedFast(index));
  }
  /** BEP 6 only: returns false (and sends nothing) unless fast was negotiated. */
  suggest(index: number): boolean {
    return this.supportsFast && this.write(encodeSuggest(index));
  }
  port(port: number): void {
    this.write(encodePort(port));
  }

  /** Flush what is queued, then close. */
  end(): void {
    if (this.destroyed) return;
    if (this.corked) this.uncork();
    this.socket.end();
  }

  /** Close now (queued writes are dropped). Emits 'error' (only if err and someone listens) then 'close', once. */
  destroy(err?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.closeError = err;
    if (this.timer) {
      if (this.clock) this.clock.clearInterval(this.timer);
      else clearInterval(this.timer as NodeJS.Timeout);
    }
    this.socket.removeListener('data', this.onData);
    this.socket.destroy();
    for (const e of this.extensions) {
      try {
        e.onClose?.();
      } catch {
        // an extension failing at close must not prevent the close
      }
    }
    if (err && this.listenerCount('error') > 0) this.emit('error', err);
    this.emit('close');
  }

  private write(buf: Buffer): boolean {
    if (this.destroyed) return false;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(buf);
    this.queuedTotal += buf.length;
    this.lastSentAt = this.now();
    return true;
  }

  private onTick(keepAliveMs: number, idleMs: number): void {
    if (this.destroyed) return;
    const t = this.now();
    if (idleMs > 0 && t - this.lastRecvAt >= idleMs) {
      this.destroy(new WireProtocolError('TIMEOUT', `nothing received for ${t - this.lastRecvAt} ms`));
      return;
    }
    if (keepAliveMs > 0 && this.handshakeSent && t - this.lastSentAt >= keepAliveMs) this.keepAlive();
  }

  // ------------------------------------------------------------ receiving

  /**
   * Bytes read from the socket by the caller (a net.Socket created with `onread` into one reused buffer, which
   * emits no 'data'): parsed now. With `transientChunks` the chunk's memory may be reused as soon as this returns.
   */
  ingest(chunk: Buffer): void {
    this.handleData(chunk);
  }

  private handleData(chunk: Buffer): void {
    if (this.destroyed) return;
    if (chunk.length > 0) this.lastRecvAt = this.now();
    this.parsing = true;
    let err: WireProtocolError | null;
    try {
      err = this.parser.feed(chunk, this.sink);
    } catch (e) {
      // A listener threw: treat it as fatal for this connection, not for the process.
      err = null;
      this.parsing = false;
      this.destroy(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    this.parsing = false;
    if (err) this.destroy(err);
    else if (this.awaitingLocalHandshake) this.socket.pause();
  }

  private violation(msg: string): void {
    this.destroy(new WireProtocolError('PROTOCOL_VIOLATION', msg));
  }

  private requireFastIn(type: string): boolean {
    if (this.supportsFast) return true;
    this.violation(`${type} received but the fast extension was not negotiated`);
    return false;
  }

  /**
   * BEP 3 puts bitfield (BEP 6: have-all/have-none) first, but aria2 sends a second bitfield mid-connection
   * (after have-none, requests and haves). Dropping the peer for it made aria2 reconnect every few seconds,
   * so, like libtorrent, a later one is accepted as a full replacement of the peer's piece set;
   * `replaces` tells the listener to forget what the peer announced before.
   */
  private haveState(): boolean {
    const replaces = this.sawHaveState;
    this.sawHaveState = true;
    return replaces;
  }

  private handleMessage(m: WireMessage): void {
    switch (m.type) {
      case 'handshake': {
        const h = m.handshake;
        if (this.handshakeSent && this.infoHash && !this.infoHash.equals(h.infoHash)) {
          this.destroy(new WireProtocolError('BAD_HANDSHAKE', 'peer answered with a different info-hash'));
          return;
        }
        this.handshakeReceived = true;
        this.peerCaps = h.caps;
        this.remotePeerId = h.peerId;
        this.peerId = h.peerId;
        if (!this.infoHash) this.infoHash = h.infoHash;
        if (this.handshakeSent && this.supportsExtended) this.sendExtendedHandshake();
        else if (!this.handshakeSent) this.awaitingLocalHandshake = true;
        this.emit('handshake', h.infoHash, h.peerId, h.caps);
        return;
      }
      case 'keep-alive':
        this.emit('keep-alive');
        return;
      case 'choke':
        this.peerChoking = true;
        this.emit('choke');
        return;
      case 'unchoke':
        this.peerChoking = false;
        this.emit('unchoke');
        return;
      case 'interested':
        this.peerInterested = true;
        this.emit('interested');
        return;
      case 'not-interested':
        this.peerInterested = false;
        this.emit('not-interested');
        return;
      case 'have':
        this.sawHaveState = true;
        this.emit('have', m.index);
        return;
      case 'bitfield':
        this.emit('bitfield', m.bitfield, this.haveState());
        return;
      case 'have-all':
        if (this.requireFastIn('have-all')) this.emit('have-all', this.haveState());
        return;
      case 'have-none':
        if (this.requireFastIn('have-none')) this.emit('have-none', this.haveState());
        return;
      case 'request':
        this.emit('request', m.index, m.begin, m.length);
        return;
      case 'piece':
        this.downloadedBytes += m.block.length;
        this.emit('piece', m.index, m.begin, m.block);
        return;
      case 'cancel':
        this.emit('cancel', m.index, m.begin, m.length);
        return;
      case 'port':
        this.emit('port', m.port);
        return;
      case 'suggest':
        if (this.requireFastIn('suggest')) this.emit('suggest', m.index);
        return;
      case 'reject':
        if (this.requireFastIn('reject')) this.emit('reject', m.index, m.begin, m.length);
        return;
      case 'allowed-fast':
        if (this.requireFastIn('allowed-fast')) this.emit('allowed-fast', m.index);
        return;
      case 'extended':
        if (!this.localCaps.extended) return; // we never advertised it: ignore
        if (m.extId === 0) this.onExtendedHandshake(m.payload);
        else {
          const ext = this.extensions[m.extId - 1];
          if (ext) ext.onMessage(m.payload);
        }
        return;
    }
  }

  private onExtendedHandshake(payload: Buffer): void {
    let dict: BencodeDict;
    try {
      const v = decode(payload, { maxDepth: 16 });
      if (!isDict(v)) throw new Error('not a dictionary');
      dict = v;
    } catch (e) {
      this.destroy(new WireProtocolError('BAD_MESSAGE', `invalid extended handshake: ${(e as Error).message}`));
      return;
    }
    const m = dict.m;
    if (isDict(m)) {
      let n = 0;
      for (const name of Object.keys(m)) {
        if (++n > 256) break;
        const id = m[name];
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 255) continue;
        if (id === 0) this.peerExtensions.delete(name);
        else this.peerExtensions.set(name, id);
      }
    }
    this.extendedHandshake = dict;
    for (const e of this.extensions) e.onExtendedHandshake?.(dict);
    if (!this.destroyed) this.emit('extended-handshake', dict);
  }
}
