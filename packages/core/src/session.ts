/**
 * A session runs many torrents on one listen port: it accepts incoming connections, routes each to the
 * torrent named in its handshake, and owns what torrents share (hasher pool, UDP tracker socket, global
 * rate limits and connection budget, fast-resume store, DHT).
 */
import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock } from './clock.js';
import type { PeerAddress } from './compact.js';
import { parseTorrent, type Metainfo } from './metainfo.js';
import { parseTorrentId } from './magnet.js';
import { PieceHasher } from './hasher.js';
import { ResumeStore } from './storage/index.js';
import { TokenBucket } from './rate-limit.js';
import { UdpTrackerClient } from './tracker-client/index.js';
import { PeerWire } from './wire/peer-wire.js';
import { switchToOwnBuffer } from './wire/socket-read.js';
import { mseRespond, mseTorrentKey, isPlaintextHandshake, Rc4Stream, CRYPTO_PLAINTEXT, CRYPTO_RC4, type EncryptionPolicy } from './wire/mse.js';
import type { Duplex } from 'node:stream';
import type { WireExtensionFactory } from './wire/extensions.js';
import { Torrent, MAX_PEER_REQUEST_QUEUE, type TorrentDht, type TorrentOptions, type UploadGate } from './torrent.js';
import type { ChokerPolicy } from './choker.js';

export const CLIENT_NAME = 'bitorrent 0.1.0';
/** Azureus-style peer id prefix: client "bI", version 0.1.0. */
export const PEER_ID_PREFIX = '-bI0100-';
/** Incoming MSE handshakes in progress at once (each holds a socket for up to 15 s). */
const MAX_HANDSHAKING = 64;

export interface SessionOptions {
  /** TCP listen port; 0 picks a free one (default 6881). */
  port?: number;
  /** Listen address (default '::' = all IPv6 and IPv4). */
  host?: string;
  peerId?: Buffer;
  /** Where fast-resume data and fetched metadata are kept; none = no fast-resume. */
  stateDir?: string;
  /** Bytes/s, 0 = unlimited. */
  uploadRateLimit?: number;
  downloadRateLimit?: number;
  /** Connections across all torrents (default 200). */
  maxConnections?: number;
  /** Per torrent (default 50). */
  maxConnectionsPerTorrent?: number;
  dht?: TorrentDht;
  /** Extra BEP 10 extensions installed on every wire (third-party plugins such as Speed). */
  extensions?: WireExtensionFactory[];
  /** Choker policy factory per torrent (default: the standard choker). */
  choker?: (infoHash: Buffer) => ChokerPolicy;
  clock?: Clock;
  hasherWorkers?: number;
  log?: (msg: string) => void;
  /**
   * MSE/PE (protocol encryption). 'enabled' (default): accept plaintext and encrypted connections, dial in
   * plaintext and retry encrypted when a peer hangs up before its handshake (peers that require encryption do);
   * 'prefer': dial encrypted first; 'required': encrypted (RC4) only, both ways; 'disabled': plaintext only.
   */
  encryption?: EncryptionPolicy;
}

export interface AddTorrentOptions {
  /** .torrent bytes, a parsed Metainfo, a magnet URI or a 40-hex info-hash. */
  torrent: Buffer | Uint8Array | Metainfo | string;
  /** Directory the torrent's files are saved in. */
  path: string;
  /** Keep seeding after completion (default true). */
  seed?: boolean;
  peers?: PeerAddress[];
  /** Extra trackers (a tier each). */
  trackers?: string[];
  sequential?: boolean;
  filePriorities?: number[];
  uploadRateLimit?: number;
  downloadRateLimit?: number;
  maxConnections?: number;
  uploadSlots?: number;
  skipHashCheck?: boolean;
  pex?: boolean;
  /** BEP 10 extensions for this torrent only (e.g. a per-torrent Speed agent). */
  extensions?: WireExtensionFactory[];
  /** Choker policy for this torrent (default: the session's, else the standard choker). */
  choker?: ChokerPolicy;
  uploadGate?: UploadGate;
  /** Download from the torrent's BEP 19 web seeds (default true). */
  webSeeds?: boolean;
}

export class Session extends EventEmitter {
  readonly peerId: Buffer;
  readonly clock: Clock;
  private server: Server | undefined;
  private listenPort = 0;
  private readonly torrents = new Map<string, Torrent>();
  /** HASH('req2', info-hash) → info-hash: how an MSE responder recognises the torrent a peer wants. */
  private readonly mseKeys = new Map<string, Buffer>();
  private readonly hasher: PieceHasher;
  private readonly resumeStore: ResumeStore | undefined;
  private readonly udpTracker: UdpTrackerClient;
  readonly globalUpload: TokenBucket;
  readonly globalDownload: TokenBucket;
  private connections = 0;
  private readonly incoming = new Set<Socket>();
  /** Incoming connections inside an MSE handshake. */
  private handshaking = 0;
  private closed = false;

  constructor(private readonly opts: SessionOptions = {}) {
    super();
    this.clock = opts.clock ?? systemClock;
    this.peerId = opts.peerId ?? Buffer.concat([Buffer.from(PEER_ID_PREFIX, 'latin1'), randomBytes(12)]);
    if (this.peerId.length !== 20) throw new Error('peer id must be 20 bytes');
    this.hasher = new PieceHasher({ workers: opts.hasherWorkers });
    this.resumeStore = opts.stateDir ? new ResumeStore(opts.stateDir) : undefined;
    this.udpTracker = new UdpTrackerClient();
    this.globalUpload = new TokenBucket({ rate: opts.uploadRateLimit ?? 0, clock: this.clock });
    this.globalDownload = new TokenBucket({ rate: opts.downloadRateLimit ?? 0, clock: this.clock });
  }

  get port(): number {
    return this.listenPort;
  }

  private log(msg: string): void {
    this.opts.log?.(msg);
    this.emit('log', msg);
  }

  /** Start accepting incoming peer connections. */
  async listen(): Promise<void> {
    if (this.server) return;
    const server = createServer({ noDelay: true, pauseOnConnect: false }, (socket) => this.onIncoming(socket));
    this.server = server;
    const host = this.opts.host ?? '::';
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.opts.port ?? 6881, host, ipv6Only: false }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch(async (err: NodeJS.ErrnoException) => {
      // Hosts without IPv6: fall back to IPv4 only.
      if (host === '::' && (err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL')) {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ port: this.opts.port ?? 6881, host: '0.0.0.0' }, () => resolve());
        });
      } else {
        this.server = undefined;
        throw new Error(`cannot listen on ${host}:${this.opts.port ?? 6881}: ${err.message}`);
      }
    });
    const addr = server.address();
    this.listenPort = typeof addr === 'object' && addr ? addr.port : 0;
    server.on('error', (err) => this.log(`listen socket error: ${err.message}`));
  }

  private onIncoming(socket: Socket): void {
    // Connections still in their handshakes count too: a flood of silent sockets cannot pile up.
    if (this.closed || this.connections + this.handshaking >= (this.opts.maxConnections ?? 200) || this.handshaking >= MAX_HANDSHAKING) {
      socket.destroy();
      return;
    }
    const host = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const port = socket.remotePort ?? 0;
    this.incoming.add(socket);
    socket.once('close', () => this.incoming.delete(socket));
    socket.on('error', () => {});
    socket.setNoDelay(true);
    const policy = this.opts.encryption ?? 'enabled';
    if (policy === 'disabled') {
      socket.pause();
      this.acceptPlaintext(socket, [], host, port);
      return;
    }
    // A plaintext handshake starts with 19 'BitTorrent protocol'; anything else is an MSE key exchange.
    const classifyTimeout = this.clock.setTimeout(() => socket.destroy(), 30_000);
    let first: Buffer = Buffer.alloc(0);
    const onFirstBytes = (d: Buffer): void => {
      first = first.length === 0 ? d : Buffer.concat([first, d]);
      if (first[0] === 19 && first.length < 20) return;
      socket.off('data', onFirstBytes);
      socket.pause();
      this.clock.clearTimeout(classifyTimeout);
      if (isPlaintextHandshake(first)) {
        if (policy === 'required') return void socket.destroy();
        this.acceptPlaintext(socket, [first], host, port);
        return;
      }
      this.handshaking++;
      mseRespond(socket, first, {
        allow: policy === 'required' ? CRYPTO_RC4 : CRYPTO_PLAINTEXT | CRYPTO_RC4,
        lookup: (k) => this.mseKeys.get(k),
      })
        .finally(() => this.handshaking--)
        .then(
          (r) => {
            if (this.closed) return void socket.destroy();
            // Plaintext chosen in the key exchange (libtorrent-based peers offer it by default): the socket itself,
            // paused, with what followed the exchange put back in it. It reads as a plaintext connection does.
            if (r.stream === socket) return this.acceptPlaintext(socket, [], host, port);
            // RC4: read into one buffer of ours, decrypted in place, like plaintext connections (Rc4Stream.readDirect).
            const rc4 = r.stream instanceof Rc4Stream ? r.stream : undefined;
            const wire = this.acceptWire(r.stream, socket, host, port, rc4 !== undefined);
            rc4?.readDirect((chunk) => wire.ingest(chunk));
          },
          () => socket.destroy(),
        );
    };
    socket.on('data', onFirstBytes);
  }

  /**
   * An incoming connection that carries plaintext BitTorrent (its handshake sniffed, or plaintext chosen in an MSE
   * exchange), paused; `consumed`: its bytes already read. It reads into one buffer of ours from here on, as outgoing
   * connections do (see switchToOwnBuffer); else through 'data' as before.
   */
  private acceptPlaintext(socket: Socket, consumed: Buffer[], host: string, port: number): void {
    let wire: PeerWire | undefined;
    const held = switchToOwnBuffer(socket, (n, buf) => {
      wire?.ingest(buf.subarray(0, n));
      return true; // pausing goes through socket.pause() (PeerWire.pauseReading)
    });
    if (!held) {
      for (let i = consumed.length - 1; i >= 0; i--) socket.unshift(consumed[i]);
      this.acceptWire(socket, socket, host, port);
      return;
    }
    wire = this.acceptWire(socket, socket, host, port, true);
    // Synchronously, before the socket's next read can reach the callback: the stream stays in order.
    for (const c of consumed) wire.ingest(c);
    for (const c of held) wire.ingest(c);
  }

  /** An incoming connection whose BitTorrent stream (plaintext or decrypted) is `stream`. */
  private acceptWire(stream: Duplex, socket: Socket, host: string, port: number, transientChunks = false): PeerWire {
    const wire = new PeerWire(stream, {
      peerId: this.peerId,
      transientChunks,
      reserved: { extended: true, fast: true, dht: !!this.opts.dht },
      listenPort: this.listenPort,
      clientName: CLIENT_NAME,
      reqq: MAX_PEER_REQUEST_QUEUE,
    } as ConstructorParameters<typeof PeerWire>[1]);
    const handshakeTimeout = this.clock.setTimeout(() => wire.destroy(new Error('handshake timeout')), 30_000);
    wire.once('close', () => {
      this.clock.clearTimeout(handshakeTimeout);
    });
    wire.on('error', () => {});
    wire.once('handshake', (infoHash: Buffer, peerId: Buffer) => {
      this.clock.clearTimeout(handshakeTimeout);
      const torrent = this.torrents.get(infoHash.toString('hex'));
      if (torrent && peerId.equals(this.peerId) && socket.remotePort !== undefined) torrent.noteSelfConnection(socket.remotePort);
      if (!torrent || torrent.state === 'closed' || peerId.equals(this.peerId) || torrent.isBanned(host)) {
        wire.destroy();
        return;
      }
      this.connections++;
      torrent.installExtensions(wire);
      wire.sendHandshake(infoHash);
      // The remote port of an incoming connection is ephemeral; key it by it anyway (unique per connection).
      torrent.attachWire(wire, { host, port }, false);
    });
    return wire;
  }

  /** Add a torrent and start it. Resolves once it is registered (data checking continues in the background). */
  async add(opts: AddTorrentOptions): Promise<Torrent> {
    if (this.closed) throw new Error('session is closed');
    let metainfo: Metainfo | undefined;
    let infoHash: Buffer;
    let name: string | undefined;
    const trackers: string[][] = [];
    const peers: PeerAddress[] = [...(opts.peers ?? [])];
    const t = opts.torrent;
    if (typeof t === 'string') {
      const link = parseTorrentId(t);
      infoHash = link.infoHash;
      name = link.name;
      for (const tr of link.trackers) trackers.push([tr]);
      peers.push(...link.peers);
      // A magnet we fetched metadata for earlier: use it instead of asking peers again.
      if (this.opts.stateDir) {
        const cached = await readFile(join(this.opts.stateDir, `${infoHash.toString('hex')}.torrent`)).catch(() => undefined);
        if (cached) {
          try {
            metainfo = parseTorrent(cached);
          } catch {
            metainfo = undefined;
          }
        }
      }
    } else if (t instanceof Uint8Array) {
      metainfo = parseTorrent(t);
      infoHash = metainfo.infoHash;
    } else {
      metainfo = t;
      infoHash = metainfo.infoHash;
    }
    if (metainfo) for (const tier of metainfo.announce) trackers.push(tier);
    for (const tr of opts.trackers ?? []) trackers.push([tr]);
    const key = infoHash.toString('hex');
    if (this.torrents.has(key)) throw new Error(`torrent ${key} is already in the session`);

    const torrent: Torrent = new Torrent(
      {
        infoHash,
        metainfo,
        name,
        path: opts.path,
        trackers: dedupeTiers(trackers),
        peers,
        seed: opts.seed ?? true,
        sequential: opts.sequential,
        filePriorities: opts.filePriorities,
        uploadRateLimit: opts.uploadRateLimit,
        downloadRateLimit: opts.downloadRateLimit,
        maxConnections: opts.maxConnections ?? this.opts.maxConnectionsPerTorrent,
        uploadSlots: opts.uploadSlots,
        skipHashCheck: opts.skipHashCheck,
        pex: opts.pex,
        choker: opts.choker ?? this.opts.choker?.(infoHash),
        extensions: opts.extensions,
        uploadGate: opts.uploadGate,
        webSeeds: opts.webSeeds,
      } satisfies TorrentOptions,
      {
        clock: this.clock,
        peerId: this.peerId,
        listenPort: () => this.listenPort,
        hasher: this.hasher,
        resumeStore: this.resumeStore,
        udpTracker: this.udpTracker,
        globalUpload: this.globalUpload,
        globalDownload: this.globalDownload,
        extensions: this.opts.extensions ?? [],
        canOpenConnection: () => this.connections < (this.opts.maxConnections ?? 200),
        connectionOpened: () => {
          this.connections++;
        },
        connectionClosed: () => {
          this.connections = Math.max(0, this.connections - 1);
        },
        dht: this.opts.dht,
        log: (m) => this.log(m),
        clientName: CLIENT_NAME,
        encryption: this.opts.encryption ?? 'enabled',
      },
    );
    this.torrents.set(key, torrent);
    this.mseKeys.set(mseTorrentKey(infoHash), infoHash);
    if (this.opts.stateDir) {
      torrent.on('metadata', (meta: Metainfo) => void this.saveMetadata(meta).catch((e) => this.log(`cannot save metadata: ${e.message}`)));
    }
    this.emit('torrent', torrent);
    torrent.start().catch((err: Error) => {
      torrent.error = err.message;
      torrent.state = 'error';
      torrent.emit('error', err);
    });
    return torrent;
  }

  /** Keep fetched metadata (as a minimal .torrent) so a restart does not need peers to resume a magnet. */
  private async saveMetadata(meta: Metainfo): Promise<void> {
    const dir = this.opts.stateDir!;
    await mkdir(dir, { recursive: true });
    const announce = meta.announce.flat();
    const parts: Buffer[] = [Buffer.from('d', 'latin1')];
    if (announce.length) {
      const { encode } = await import('./bencode.js');
      parts.push(encode('announce-list'), encode(meta.announce as unknown as string[][]));
    }
    parts.push(Buffer.from('4:info', 'latin1'), meta.infoBuffer, Buffer.from('e', 'latin1'));
    const file = join(dir, `${meta.infoHashHex}.torrent`);
    await writeFile(`${file}.tmp`, Buffer.concat(parts));
    await rename(`${file}.tmp`, file);
  }

  get(infoHash: string | Buffer): Torrent | undefined {
    return this.torrents.get(typeof infoHash === 'string' ? infoHash.toLowerCase() : infoHash.toString('hex'));
  }

  list(): Torrent[] {
    return [...this.torrents.values()];
  }

  async remove(infoHash: string | Buffer): Promise<void> {
    const t = this.get(infoHash);
    if (!t) return;
    this.torrents.delete(t.infoHashHex);
    this.mseKeys.delete(mseTorrentKey(t.infoHash));
    await t.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.torrents.values()].map((t) => t.close()));
    this.torrents.clear();
    for (const s of this.incoming) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.udpTracker.close();
    await this.hasher.close();
  }
}

function dedupeTiers(tiers: string[][]): string[][] {
  const seen = new Set<string>();
  const out: string[][] = [];
  for (const tier of tiers) {
    const t = tier.filter((u) => u && !seen.has(u) && (seen.add(u), true));
    if (t.length) out.push(t);
  }
  return out;
}
