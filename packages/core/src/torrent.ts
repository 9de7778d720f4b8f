/**
 * One torrent in a session: connects peers, requests blocks, verifies and stores pieces, serves uploads,
 * runs the choker and talks to trackers. Policies (picker, choker, rate limits) are plain objects it
 * consults; I/O (sockets, disk, hashing) is behind the wire, storage and hasher interfaces.
 */
import { EventEmitter } from 'node:events';
import { createConnection, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createHash, randomInt, type Hash } from 'node:crypto';
import type { Clock, Timer } from './clock.js';
import { RateMeter } from './clock.js';
import { peerKey, type PeerAddress } from './compact.js';
import type { Metainfo } from './metainfo.js';
import { parseInfoDict, pieceSize, piecesForFile } from './metainfo.js';
import { BitField } from './bitfield.js';
import type { PieceStorage } from './storage/index.js';
import { FileStorage, checkExistingData, validateResume, statFiles, type ResumeStore, type ResumeData } from './storage/index.js';
import type { PieceHasher } from './hasher.js';
import { PiecePicker, filePrioritiesToPieces, type BlockRequest, type PickerPeer } from './picker.js';
import { StandardChoker, type ChokerPolicy, type ChokerPeer } from './choker.js';
import { TokenBucket, PRIORITY_NORMAL, type Priority } from './rate-limit.js';
import { Announcer } from './tracker-client/index.js';
import type { UdpTrackerClient } from './tracker-client/index.js';
import { WebSeed, type WebSeedHost } from './webseed.js';
import { mseInitiate, Rc4Stream, CRYPTO_PLAINTEXT, CRYPTO_RC4, type EncryptionPolicy } from './wire/mse.js';
import { SOCKET_READ_BUFFER, switchToOwnBuffer } from './wire/socket-read.js';
import { PeerWire } from './wire/peer-wire.js';
import type { WireExtensionFactory } from './wire/extensions.js';
import { utMetadata, type UtMetadataExtension } from './wire/ut-metadata.js';
import { utPex } from './wire/ut-pex.js';

export const BLOCK_SIZE = 16 * 1024;
/** Largest block we serve: 16 KiB is the spec, many clients accept up to 128 KiB. */
const MAX_SERVED_BLOCK = 128 * 1024;
/** Requests a peer may queue with us (advertised as reqq, BEP 10); beyond that they are rejected. */
export const MAX_PEER_REQUEST_QUEUE = 500;
/** Read buffer of each outgoing plaintext connection (reused for every read; see connectTo). */
/** Magnet links: peers asked for the info dictionary at once, how long one may go without sending a piece, and how long a peer that failed is left alone. */
const METADATA_FETCHERS = 3;
const METADATA_STALL_MS = 20_000;
const METADATA_RETRY_MS = 60_000;
/** Hash failures a peer may contribute to before it is banned. */
const BAN_AFTER_HASH_FAILURES = 2;
/** Least time between rechokes run for an urgent reason (an interested peer and a free slot; a Speed bid). */
const URGENT_RECHOKE_SPACING_MS = 20;
/** Bytes of completed pieces being hashed or written before we stop requesting more (memory bound). */
const MAX_PENDING_WRITE_BYTES = 16 * 1024 * 1024;
/** Bytes of spare piece buffers kept for reuse (cuts allocation and GC on the download path; bounds RSS). */
const PIECE_POOL_BYTES = 16 * 1024 * 1024;
/** Whole pieces kept in the upload read cache (a peer reads a piece block by block; 16 MiB = 16 pieces of 1 MiB). */
const READ_CACHE_BYTES = 16 * 1024 * 1024;
/** Bytes of evicted read-cache buffers kept for reuse by the upload path (on top of the read cache). */
const READ_POOL_BYTES = 8 * 1024 * 1024;

export type TorrentState = 'metadata' | 'checking' | 'downloading' | 'seeding' | 'paused' | 'error' | 'closed';

export interface TorrentStats {
  infoHash: string;
  name: string;
  state: TorrentState;
  /** Fraction of wanted bytes verified, 0..1. */
  progress: number;
  /** Verified bytes of wanted pieces. */
  verifiedBytes: number;
  wantedBytes: number;
  totalBytes: number;
  /** Payload bytes received / sent in this session. */
  downloaded: number;
  uploaded: number;
  downloadRate: number;
  uploadRate: number;
  peers: number;
  seeds: number;
  candidates: number;
  /** Seconds until done at the current rate; Infinity when stalled. */
  eta: number;
  pieces: { have: number; total: number };
  hashFailures: number;
  wastedBytes: number;
  /** Times an UploadGate held every request a peer had queued (Speed: a requester at its unpaid limit), this session. */
  uploadHolds: number;
  error?: string;
}

export interface TorrentDeps {
  clock: Clock;
  peerId: Buffer;
  listenPort: () => number;
  hasher: PieceHasher;
  resumeStore?: ResumeStore;
  udpTracker?: UdpTrackerClient;
  globalUpload: TokenBucket;
  globalDownload: TokenBucket;
  extensions: WireExtensionFactory[];
  canOpenConnection: () => boolean;
  connectionOpened: () => void;
  connectionClosed: () => void;
  dht?: TorrentDht;
  log: (msg: string) => void;
  clientName: string;
  /** Protocol encryption policy for outgoing connections (default 'enabled'). */
  encryption?: EncryptionPolicy;
}

/** What a torrent needs from a DHT (BEP 5); the dht package satisfies it. */
export interface TorrentDht {
  getPeers(infoHash: Buffer, opts?: { onPeers?(peers: PeerAddress[]): void }): Promise<PeerAddress[]>;
  announce(infoHash: Buffer, port: number): Promise<void>;
  /** Like announce(), resolving with how many nodes stored it (lets the torrent retry sooner on a young table). */
  announceCount?(infoHash: Buffer, port: number): Promise<number>;
  /** A node learnt of through a peer's BEP 5 PORT message. */
  addNode?(addr: PeerAddress): void;
  /** Our DHT's UDP port, sent to DHT-capable peers in a PORT message. */
  readonly port?: number;
}

export interface TorrentOptions {
  infoHash: Buffer;
  /** Download from the torrent's BEP 19 web seeds (default true). */
  webSeeds?: boolean;
  metainfo?: Metainfo;
  name?: string;
  path: string;
  trackers: string[][];
  peers?: PeerAddress[];
  /** Keep seeding after the download completes (default true; the CLI may stop instead). */
  seed?: boolean;
  sequential?: boolean;
  /** Per-file priority 0 (skip) .. 7. */
  filePriorities?: number[];
  uploadRateLimit?: number;
  downloadRateLimit?: number;
  maxConnections?: number;
  uploadSlots?: number;
  choker?: ChokerPolicy;
  /** Skip the hash check of existing data (trust it fully): only for data we just created. */
  skipHashCheck?: boolean;
  pex?: boolean;
  /** BEP 10 extensions for this torrent only (installed after the session-wide ones). */
  extensions?: WireExtensionFactory[];
  /** Consulted before each block is sent (e.g. BitTorrent Speed holds uploads to a requester that has not paid). */
  uploadGate?: UploadGate;
}

/**
 * A plugin's say over uploads. A held request stays queued (and can still be cancelled by the peer);
 * call torrent.resumeUploads() when the gate opens again (the torrent also retries every second).
 */
export interface UploadGate {
  /**
   * May blocks of `piece` go to this peer now? The answer covers every block of the piece the torrent sends before it
   * next yields (awaits bandwidth, a disk read or the socket): one call per piece per run of sends, not per block.
   */
  mayUpload(peerKey: string, piece: number): boolean;
  /** `bytes` of `piece` went to this peer: consecutive blocks of one piece sent in one run are reported together. */
  onBlockUploaded?(peerKey: string, piece: number, bytes: number): void;
  /** The other direction: a block arrived from this peer (requested or not). Speed charges paid blocks here. */
  onBlockReceived?(peerKey: string, piece: number, bytes: number): void;
  /**
   * The other direction, for the same plugin: at most this many distinct pieces with our requests outstanding at
   * this peer (undefined: no limit; see PickerPeer.maxPieces). Speed: whole pieces, K + 1 at a time, from a provider
   * that charges us and holds requests beyond its unpaid-piece limit K. `rate`: what the peer sends us, bytes/s.
   */
  maxRequestPieces?(peerKey: string, rate: number): number | undefined;
  /**
   * Upload bandwidth priority of this peer under a rate limit (default PRIORITY_NORMAL). Speed: PRIORITY_HIGH for a
   * peer paying for its slot, so free (tit-for-tat, optimistic) slots share what paid ones leave, never below
   * NORMAL_SHARE of the limit.
   */
  uploadPriority?(peerKey: string): Priority;
}

/** A number unique per (piece, offset): offsets below 2^32 and piece counts below 2^21 fit a safe integer. */
function blockKey(index: number, begin: number): number {
  return index * 4294967296 + begin;
}

interface PieceInProgress {
  buf: Buffer;
  received: number;
  size: number;
  /** SHA-1 of buf[0, hashed), fed as blocks arrive in order (no second pass, no worker round-trip). */
  hash: Hash | undefined;
  hashed: number;
  /** Blocks stored in buf (by block number), so the running hash can catch up over out-of-order arrivals. */
  got: Uint8Array;
}

/**
 * A Peer as the picker sees it, one per peer: fillRequests sets the per-call fields before each pickBlocks. Methods
 * and getters, not closures: under tsx every closure created also costs a defineProperty for its name, which on the
 * per-piece interest check (peerHasWanted) alone came to ~7 ms per GiB.
 */
class PickerView implements PickerPeer {
  choked = false;
  rate: number | undefined = undefined;
  maxPieces: number | undefined = undefined;
  constructor(private readonly peer: Peer) {}
  get id(): string {
    return this.peer.key;
  }
  has(i: number): boolean {
    return this.peer.hasPiece(i);
  }
  get hasAll(): boolean {
    return this.peer.hasAll;
  }
  get fastAllowed(): Set<number> {
    return this.peer.allowedFast;
  }
}

/** Per-connection state. */
export class Peer {
  readonly key: string;
  has: BitField | undefined;
  /** Bitfield received before we had the metadata. */
  rawBitfield: Buffer | undefined;
  hasAll = false;
  hasNone = false;
  /** Requests we sent this peer, keyed by blockKey(). */
  readonly outstanding = new Map<number, BlockRequest>();
  readonly uploadQueue: BlockRequest[] = [];
  readonly downRate: RateMeter;
  readonly upRate: RateMeter;
  readonly connectedAt: number;
  lastPieceAt: number;
  lastUnchokedAt: number | undefined;
  hashFailures = 0;
  /** Pieces the peer lets us request while it chokes us (its BEP 6 allowed-fast messages). We grant none. */
  allowedFast = new Set<number>();
  serving = false;
  /**
   * The UploadGate held every queued request (a Speed requester at its unpaid-piece limit). Until resumeUploads()
   * or the tick, a new request only restarts the loop if the gate allows its own piece: re-scanning the whole
   * queue on each of the held piece's requests cost ~90k gate calls and 3× the serve-loop runs per GiB.
   */
  uploadHeld = false;
  /** Bytes of `chargedPiece` sent and not yet reported to the UploadGate (serveQueued's current run; see reportUploadCharges). */
  chargedBytes = 0;
  chargedPiece = -1;
  /** Magnet phase: when our ut_metadata fetch from this peer last started or made progress (undefined: not fetching). */
  metadataSince: number | undefined;
  /** Pieces its running fetch had received at metadataSince. */
  metadataPieces = 0;
  /** Its last fetch failed: not asked again before this time. */
  metadataRetryAt = 0;
  readPaused = false;
  snubbed = false;
  pipeline = 32;
  remotePeerId = '';
  constructor(
    readonly address: PeerAddress,
    readonly wire: PeerWire,
    readonly outgoing: boolean,
    clock: Clock,
  ) {
    this.key = peerKey(address);
    this.downRate = new RateMeter(clock);
    this.upRate = new RateMeter(clock);
    this.connectedAt = clock.now();
    this.lastPieceAt = clock.now();
    this.pickerView = new PickerView(this);
  }
  readonly pickerView: PickerView;
  hasPiece(i: number): boolean {
    return this.hasAll || (this.has !== undefined && this.has.get(i));
  }
  isSeed(): boolean {
    return this.hasAll || (this.has !== undefined && this.has.isComplete());
  }
}

interface Candidate {
  address: PeerAddress;
  failures: number;
  nextAttemptAt: number;
  source: string;
  /** Dial with an MSE handshake (else plaintext); flipped when the other kind failed. */
  mse?: boolean;
  /** Both kinds were tried since the last successful handshake. */
  triedBoth?: boolean;
}

export class Torrent extends EventEmitter {
  readonly infoHash: Buffer;
  readonly infoHashHex: string;
  metainfo: Metainfo | undefined;
  name: string;
  state: TorrentState;
  readonly path: string;
  error: string | undefined;

  private storage: PieceStorage | undefined;
  private picker: PiecePicker | undefined;
  private have: BitField | undefined;
  private wanted: BitField | undefined;
  private readonly peers = new Map<string, Peer>();
  private readonly connecting = new Set<string>();
  private readonly candidates = new Map<string, Candidate>();
  private readonly banned = new Set<string>();
  /** BEP 19 web seeds, started once the data check is done (see webseed.ts). */
  private webSeeds: WebSeed[] = [];
  /** Addresses that turned out to be this client (trackers list us among the peers): never dialled again. */
  private readonly selfAddresses = new Set<string>();
  private readonly inProgress = new Map<number, PieceInProgress>();
  private readonly contributors = new Map<number, Set<string>>();
  private pendingWriteBytes = 0;
  /** Spare piece-sized buffers (all exactly pieceLength bytes), reused by onBlock. */
  private readonly piecePool: Buffer[] = [];
  private readonly readCache = new Map<number, Promise<Buffer>>();
  /** Read-cache entries whose read finished (serveLoop takes blocks from these without awaiting). */
  private readonly readReady = new Map<number, Buffer>();
  /**
   * Evicted read buffers, each with the sockets that may still point into it: (wire, queuedBytes at eviction) pairs.
   * Reusable once each of those wires has flushed past its mark (see readPieceCached).
   */
  private readRetired: { buf: Buffer; waits: (PeerWire | number)[] }[] = [];
  private readonly readSpare: Buffer[] = [];
  private readonly downRate: RateMeter;
  private readonly upRate: RateMeter;
  private uploadedBytes = 0;
  private downloadedBytes = 0;
  private wastedBytes = 0;
  private hashFailures = 0;
  /** See TorrentStats.uploadHolds. */
  private uploadHolds = 0;
  private readonly upBucket: TokenBucket;
  private readonly downBucket: TokenBucket;
  private readonly choker: ChokerPolicy;
  private announcer: Announcer | undefined;
  private tickTimer: Timer | undefined;
  private chokeTimer: Timer | undefined;
  private rechokeSoon: Timer | undefined;
  /** When the pending rechokeSoon fires (clock ms). */
  private rechokeDueAt = 0;
  private lastRechokeAt = -Infinity;
  private resumeDirty = false;
  private lastResumeSave = 0;
  private readonly opts: TorrentOptions;
  private readonly deps: TorrentDeps;
  private metadataBuffer: Buffer | undefined;
  private nextDhtLookup = 0;
  private dhtFailures = 0;
  private dhtBusy = false;
  private doneEmitted = false;
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private rejectDone!: (e: Error) => void;

  constructor(opts: TorrentOptions, deps: TorrentDeps) {
    super();
    this.opts = opts;
    this.deps = deps;
    this.infoHash = opts.infoHash;
    this.infoHashHex = opts.infoHash.toString('hex');
    this.path = opts.path;
    this.metainfo = opts.metainfo;
    this.name = opts.metainfo?.name ?? opts.name ?? this.infoHashHex;
    this.state = opts.metainfo ? 'checking' : 'metadata';
    this.downRate = new RateMeter(deps.clock);
    this.upRate = new RateMeter(deps.clock);
    this.upBucket = new TokenBucket({ rate: opts.uploadRateLimit ?? 0, clock: deps.clock });
    this.downBucket = new TokenBucket({ rate: opts.downloadRateLimit ?? 0, clock: deps.clock });
    this.choker = opts.choker ?? new StandardChoker();
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {}); // observed through events too; never an unhandled rejection
    if (opts.metainfo) this.metadataBuffer = opts.metainfo.infoBuffer;
    for (const p of opts.peers ?? []) this.addPeer(p, 'user');
  }

  get isPrivate(): boolean {
    return this.metainfo?.private ?? false;
  }

  /** Start: verify existing data (or trust fast-resume), then connect and announce. */
  async start(): Promise<void> {
    this.tickTimer = this.deps.clock.setInterval(() => this.tick(), 1000);
    this.tickTimer.unref?.();
    this.chokeTimer = this.deps.clock.setInterval(() => this.rechoke(), 10_000);
    this.chokeTimer.unref?.();
    this.startAnnouncer();
    if (this.metainfo) await this.initStorage();
    this.tick();
  }

  private startAnnouncer(): void {
    const tiers = this.opts.trackers.filter((t) => t.length > 0);
    if (tiers.length === 0 || this.announcer) return;
    this.announcer = new Announcer({
      infoHash: this.infoHash,
      peerId: this.deps.peerId,
      port: this.deps.listenPort(),
      tiers,
      udp: this.deps.udpTracker,
      clock: this.deps.clock,
      getStats: () => ({ uploaded: this.uploadedBytes, downloaded: this.downloadedBytes, left: this.leftBytes() }),
    });
    this.announcer.on('peers', (peers: PeerAddress[]) => {
      for (const p of peers) this.addPeer(p, 'tracker');
      this.tick();
    });
    this.announcer.on('error', (err: Error) => this.emit('tracker-error', err));
    this.announcer.on('warning', (msg: string) => this.emit('tracker-warning', msg));
    this.announcer.start();
  }

  private leftBytes(): number {
    if (!this.metainfo || !this.have) return this.metainfo?.length ?? 0;
    return Math.max(0, this.metainfo.length - this.verifiedBytes());
  }

  private async initStorage(): Promise<void> {
    const meta = this.metainfo!;
    this.state = 'checking';
    const skipFiles = new Set<number>();
    const prios = this.opts.filePriorities;
    if (prios) prios.forEach((p, i) => p === 0 && skipFiles.add(i));
    this.storage = new FileStorage(meta, this.path, { skipFiles });
    this.picker = new PiecePicker({
      pieceCount: meta.pieceCount,
      pieceLength: meta.pieceLength,
      totalLength: meta.length,
      blockSize: BLOCK_SIZE,
      rng: (n: number) => randomInt(n),
    });
    this.wanted = new BitField(meta.pieceCount);
    const piecePrios = prios ? filePrioritiesToPieces(meta.files, prios, meta.pieceLength, meta.pieceCount) : undefined;
    for (let i = 0; i < meta.pieceCount; i++) {
      const p = piecePrios ? piecePrios[i] : 1;
      if (p > 0) this.wanted.set(i);
      if (piecePrios) this.picker.setPiecePriority(i, p);
    }
    if (this.opts.sequential) this.picker.setSequential(true);

    let have: BitField | undefined;
    if (this.opts.skipHashCheck) {
      have = new BitField(meta.pieceCount);
      for (let i = 0; i < meta.pieceCount; i++) have.set(i);
    } else if (this.deps.resumeStore) {
      const data = await this.deps.resumeStore.load(this.infoHash).catch(() => undefined);
      if (data) have = await validateResume(meta, this.path, data).catch(() => undefined);
      if (have) this.deps.log(`${this.name}: fast-resume accepted (${have.count()}/${meta.pieceCount} pieces)`);
      else if (data) {
        const partial = await resumeAfterCrash(meta, this.path, data).catch(() => undefined);
        if (partial) {
          // Hash only what the resume data did not record: pieces written after its last save.
          const found = await checkExistingData(meta, this.storage, this.deps.hasher, (done: number, total: number) => this.emit('checking', done, total), {
            pieces: partial.recheck,
          });
          for (const p of partial.recheck) if (found.get(p)) partial.have.set(p);
          have = partial.have;
          this.deps.log(`${this.name}: files changed since the last resume save (a crash?): kept ${partial.trusted} recorded pieces, re-checked ${partial.recheck.length} others`);
        }
      }
    }
    if (!have) {
      have = await checkExistingData(meta, this.storage, this.deps.hasher, (done: number, total: number) =>
        this.emit('checking', done, total),
      );
    }
    if ((this.state as TorrentState) === 'closed') return;
    this.have = have;
    for (let i = 0; i < meta.pieceCount; i++) if (have.get(i)) this.picker.setHave(i);
    this.resumeDirty = true;
    await this.saveResume();
    // Peers that connected before the metadata arrived: give them their bitfields now.
    for (const peer of this.peers.values()) this.applyPeerBitfield(peer);
    this.state = 'downloading';
    this.announceHaveAll();
    this.checkDone();
    this.updateInterestAll();
    this.emit('ready');
    this.startWebSeeds();
  }

  /** One WebSeed per http(s) url-list entry (at most 8), fetching whole pieces while we are downloading. */
  private startWebSeeds(): void {
    const meta = this.metainfo;
    if (!meta || this.opts.webSeeds === false || this.webSeeds.length > 0) return;
    const urls = [...new Set(meta.urlList.filter((u) => /^https?:\/\//i.test(u)))].slice(0, 8);
    const blocksPerPiece = Math.ceil(meta.pieceLength / BLOCK_SIZE);
    const host: WebSeedHost = {
      active: () => this.state === 'downloading',
      reservePiece: (key) => {
        if (this.state !== 'downloading' || !this.picker) return [];
        const reqs = this.picker.pickBlocks({ id: key, has: () => true, hasAll: true, maxPieces: 1 }, blocksPerPiece);
        const first = reqs[0]?.index;
        for (const r of reqs) if (r.index !== first) this.picker.requestCancelled(r, key);
        return reqs.filter((r) => r.index === first);
      },
      deliver: (key, req, block) => {
        if (this.state !== 'downloading' && this.state !== 'seeding') return;
        this.downloadedBytes += block.length;
        this.downRate.add(block.length);
        this.acceptBlock(key, req, block);
      },
      release: (key, reqs) => {
        for (const r of reqs) this.picker?.requestCancelled(r, key);
      },
      // Web seed bytes count against the same limits as peers' (charged up front: a piece is one HTTP request).
      throttle: async (bytes, signal) => {
        await this.deps.globalDownload.take(bytes, signal);
        await this.downBucket.take(bytes, signal);
      },
      log: (m) => this.deps.log(`${this.name}: ${m}`),
    };
    const setTimer = (fn: () => void, ms: number) => this.deps.clock.setTimeout(fn, ms);
    this.webSeeds = urls.map((u) => new WebSeed(u, meta, host, { setTimer }));
    for (const ws of this.webSeeds) ws.kick();
  }

  /** Give newly connected (or pre-metadata) peers our bitfield. */
  private announceHaveAll(): void {
    for (const peer of this.peers.values()) this.sendOurBitfield(peer);
  }

  private verifiedBytes(): number {
    const meta = this.metainfo;
    if (!meta || !this.have) return 0;
    let n = 0;
    for (let i = 0; i < meta.pieceCount; i++) if (this.have.get(i) && this.wanted!.get(i)) n += pieceSize(meta, i);
    return n;
  }

  private wantedBytes(): number {
    const meta = this.metainfo;
    if (!meta || !this.wanted) return meta?.length ?? 0;
    let n = 0;
    for (let i = 0; i < meta.pieceCount; i++) if (this.wanted.get(i)) n += pieceSize(meta, i);
    return n;
  }

  /** Every wanted piece is verified and stored (nothing left to download; a seed, or a finished partial download). */
  isDownloadComplete(): boolean {
    return this.isComplete();
  }

  private isComplete(): boolean {
    const meta = this.metainfo;
    if (!meta || !this.have || !this.wanted || this.rechecking > 0) return false;
    // Pieces below the hint are known wanted-and-had (or unwanted); `have` only grows, setFilePriorities resets it.
    for (let i = this.completeScanFrom; i < meta.pieceCount; i++) {
      if (this.wanted.get(i) && !this.have.get(i)) {
        this.completeScanFrom = i;
        return false;
      }
    }
    this.completeScanFrom = meta.pieceCount;
    return true;
  }
  /** isComplete() resumes its scan here (keeps it O(pieces) over a whole download instead of per piece). */
  private completeScanFrom = 0;
  /** Re-checks of pieces shared with newly selected files in progress: not complete until they are done. */
  private rechecking = 0;

  private checkDone(): void {
    if (!this.isComplete()) return;
    if (this.state === 'downloading') this.state = 'seeding';
    if (this.doneEmitted) return;
    this.doneEmitted = true;
    this.announcer?.complete();
    for (const peer of this.peers.values()) {
      if (peer.wire.amInterested) peer.wire.notInterested();
      // Two seeds have nothing to say to each other.
      if (peer.isSeed()) peer.wire.end();
    }
    void this.saveResume();
    this.emit('done');
    this.resolveDone();
  }

  // ---------------------------------------------------------------- peers and connections

  /**
   * The session accepted a connection from itself (our own peer id) whose remote port is `localPort`:
   * the outgoing connection using that local port dialled one of our own addresses. Never dial it again.
   */
  noteSelfConnection(localPort: number): void {
    for (const peer of this.peers.values()) {
      if (!peer.outgoing || (peer.wire.socket as { localPort?: number }).localPort !== localPort) continue;
      if (this.selfAddresses.size < 64) this.selfAddresses.add(peer.key);
      peer.wire.destroy();
    }
  }

  /** Add a peer address to connect to (from trackers, DHT, PEX, the user). */
  addPeer(address: PeerAddress, source = 'user'): void {
    if (!address || !Number.isInteger(address.port) || address.port <= 0 || address.port > 65535) return;
    if (!isIP(address.host)) return;
    const key = peerKey(address);
    if (this.banned.has(address.host) || this.selfAddresses.has(key) || this.peers.has(key) || this.candidates.has(key)) return;
    if (this.candidates.size >= 2000) return; // bounded
    this.candidates.set(key, { address, failures: 0, nextAttemptAt: 0, source });
  }

  private maxConnections(): number {
    return this.opts.maxConnections ?? 50;
  }

  private connectMore(): void {
    if (this.state === 'closed' || this.state === 'paused' || this.state === 'error') return;
    if (this.state === 'seeding' && !this.opts.seed) return;
    const now = this.deps.clock.now();
    for (const [key, cand] of this.candidates) {
      if (this.peers.size + this.connecting.size >= this.maxConnections()) break;
      if (!this.deps.canOpenConnection()) break;
      if (cand.nextAttemptAt > now || this.connecting.has(key) || this.peers.has(key)) continue;
      this.connectTo(cand);
    }
  }

  private connectTo(cand: Candidate): void {
    const key = peerKey(cand.address);
    this.connecting.add(key);
    this.deps.connectionOpened();
    const policy = this.deps.encryption ?? 'enabled';
    const useMse = policy === 'required' || (policy !== 'disabled' && (cand.mse ?? policy === 'prefer'));
    // Plaintext: the socket reads into one buffer of its own, reused for every read, and hands each read to the wire
    // (Node's default allocates a fresh 64 KiB buffer per read: at 250 MB/s that garbage cost more CPU in GC
    // threads than parsing the stream). MSE connections switch to the same once the key exchange is done (below).
    let reader: PeerWire | undefined;
    const ingestRead = (n: number, buf: Uint8Array): boolean => {
      reader?.ingest((buf as Buffer).subarray(0, n));
      return true; // pausing goes through socket.pause() (PeerWire.pauseReading)
    };
    const onread = useMse ? undefined : { buffer: Buffer.allocUnsafe(SOCKET_READ_BUFFER), callback: ingestRead };
    const socket = createConnection({ host: cand.address.host, port: cand.address.port, ...(onread ? { onread } : {}) });
    socket.setNoDelay(true);
    const timeout = this.deps.clock.setTimeout(() => socket.destroy(new Error('connect timeout')), 10_000);
    let handedOver = false;
    let retryNow = false;
    const handOver = (stream: Duplex): void => {
      this.connecting.delete(key);
      handedOver = true;
      // RC4 connections read the same way, through their cipher stream (Rc4Stream.readDirect).
      const rc4 = stream instanceof Rc4Stream ? stream : undefined;
      // Plaintext chosen in the key exchange: the socket itself (dialled without onread), switched to a buffer of ours.
      const held = useMse && stream === socket ? switchToOwnBuffer(socket, ingestRead) : undefined;
      const wire = this.newWire(stream, onread !== undefined || rc4 !== undefined || held !== undefined);
      reader = wire;
      rc4?.readDirect((chunk) => wire.ingest(chunk));
      (wire as { viaMse?: boolean }).viaMse = useMse;
      wire.sendHandshake(this.infoHash);
      this.attachWire(wire, cand.address, true);
      // What the socket held past the key exchange, before any later read can reach the callback: in order.
      for (const c of held ?? []) wire.ingest(c);
    };
    socket.once('connect', () => {
      this.deps.clock.clearTimeout(timeout);
      if (!useMse) return handOver(socket);
      mseInitiate(socket, this.infoHash, { provide: policy === 'required' ? CRYPTO_RC4 : CRYPTO_PLAINTEXT | CRYPTO_RC4 }).then(
        (r) => (this.state === 'closed' ? socket.destroy() : handOver(r.stream)),
        () => {
          // 'prefer': a peer without MSE gets a plaintext retry at once.
          if (policy === 'prefer' && !cand.triedBoth) {
            retryNow = true;
            this.retryWithOtherMethod(cand, false);
          }
          socket.destroy();
        },
      );
    });
    socket.once('error', () => {});
    socket.once('close', () => {
      this.deps.clock.clearTimeout(timeout);
      if (!handedOver) {
        this.connecting.delete(key);
        this.deps.connectionClosed();
        if (!retryNow) {
          cand.failures++;
          cand.nextAttemptAt = this.deps.clock.now() + Math.min(300_000, 5_000 * 2 ** cand.failures);
          if (cand.failures >= 5) this.candidates.delete(key);
        }
      }
    });
  }

  /** Dial again now, with (mse = true) or without MSE, once per address until a handshake succeeds. */
  private retryWithOtherMethod(cand: Candidate, mse: boolean): void {
    cand.mse = mse;
    cand.triedBoth = true;
    cand.nextAttemptAt = this.deps.clock.now();
    this.candidates.set(peerKey(cand.address), cand);
  }

  /** Build a wire with our extensions (used for outgoing connections; the session builds incoming ones). */
  newWire(socket: Duplex, transientChunks = false): PeerWire {
    const wire = new PeerWire(socket, {
      peerId: this.deps.peerId,
      transientChunks,
      reserved: { extended: true, fast: true, dht: !!this.deps.dht && !this.isPrivate },
      listenPort: this.deps.listenPort(),
      clientName: this.deps.clientName,
      reqq: MAX_PEER_REQUEST_QUEUE,
    } as ConstructorParameters<typeof PeerWire>[1]);
    return wire;
  }

  /** Install the extensions this torrent offers on a wire (before the handshakes complete). */
  installExtensions(wire: PeerWire): void {
    wire.use(
      utMetadata({
        infoHash: this.infoHash,
        getMetadata: () => this.metadataBuffer,
      }),
    );
    if (this.opts.pex !== false && !this.isPrivate) {
      wire.use(utPex({ getPeers: () => [...this.peers.values()].filter((p) => p.outgoing).map((p) => p.address) }));
    }
    for (const ext of this.deps.extensions) wire.use(ext);
    for (const ext of this.opts.extensions ?? []) wire.use(ext);
  }

  /** A wire whose BitTorrent handshake for this torrent is complete (or in flight, for outgoing). */
  attachWire(wire: PeerWire, address: PeerAddress, outgoing: boolean): void {
    const key = peerKey(address);
    if (this.state === 'closed' || this.banned.has(address.host) || this.peers.has(key)) {
      wire.destroy();
      this.deps.connectionClosed();
      return;
    }
    this.candidates.delete(key);
    const peer = new Peer(address, wire, outgoing, this.deps.clock);
    this.peers.set(key, peer);
    if (outgoing) this.installExtensions(wire);
    this.emit('peer', peer);

    const onHandshake = (infoHash: Buffer, peerId: Buffer) => {
      if (!infoHash.equals(this.infoHash) || peerId.equals(this.deps.peerId)) return wire.destroy();
      peer.remotePeerId = peerId.toString('hex');
      for (const other of this.peers.values()) {
        if (other !== peer && other.remotePeerId === peer.remotePeerId) return wire.destroy();
      }
      this.sendOurBitfield(peer);
      this.sendDhtPort(peer);
    };
    if (outgoing) wire.once('handshake', onHandshake);
    else {
      if (wire.peerId) peer.remotePeerId = wire.peerId.toString('hex');
      this.sendOurBitfield(peer);
      this.sendDhtPort(peer);
    }

    wire.on('bitfield', (buf: Buffer, replaces: boolean) => {
      if (replaces) this.forgetPeerPieces(peer);
      peer.rawBitfield = buf;
      this.applyPeerBitfield(peer);
    });
    wire.on('have-all', (replaces: boolean) => {
      if (replaces) this.forgetPeerPieces(peer);
      peer.hasAll = true;
      this.picker?.peerHasAll();
      this.updateInterest(peer);
      this.maybeDropSeed(peer);
    });
    wire.on('have-none', (replaces: boolean) => {
      if (replaces) this.forgetPeerPieces(peer);
      peer.hasNone = true;
      this.updateInterest(peer);
    });
    wire.on('have', (index: number) => {
      const meta = this.metainfo;
      if (!meta) {
        // Before metadata: remember haves on top of the raw bitfield is not worth it; they re-announce.
        return;
      }
      if (index >= meta.pieceCount) return wire.destroy(new Error('have index out of range'));
      if (!peer.has) peer.has = new BitField(meta.pieceCount);
      if (peer.hasAll || peer.has.get(index)) return;
      peer.has.set(index);
      this.picker?.peerHave(index);
      if (!peer.wire.amInterested) this.updateInterest(peer);
      else this.fillRequests(peer);
      this.maybeDropSeed(peer);
    });
    wire.on('choke', () => {
      this.releaseRequests(peer, /* keepAllowedFast */ true);
    });
    wire.on('unchoke', () => this.fillRequests(peer));
    // A peer that becomes interested while an upload slot is free is unchoked at once (libtorrent does the same), not
    // at the next coalesced rechoke: a 200 ms wait before the first byte (~0.1 s of a 1 GiB download on loopback).
    wire.on('interested', () => this.scheduleRechoke(peer.wire.amChoking && this.hasFreeUploadSlot() && (this.choker.admitAtOnce?.(peer.key) ?? true)));
    // An unchoked peer that loses interest (or leaves, onPeerClose) frees its slot: a peer waiting for one gets it at once.
    wire.on('not-interested', () => this.scheduleRechoke(!peer.wire.amChoking && this.hasPeerWaitingForSlot()));
    wire.on('allowed-fast', (index: number) => {
      if (peer.allowedFast.size < 64) peer.allowedFast.add(index);
      this.fillRequests(peer);
    });
    wire.on('reject', (index: number, begin: number, length: number) => {
      const k = blockKey(index, begin);
      const req = peer.outstanding.get(k);
      if (!req || req.length !== length) return;
      peer.outstanding.delete(k);
      this.picker?.requestCancelled(req, peer.key);
    });
    wire.on('piece', (index: number, begin: number, block: Buffer) => this.onBlock(peer, index, begin, block));
    wire.on('request', (index: number, begin: number, length: number) => this.onRequest(peer, index, begin, length));
    wire.on('cancel', (index: number, begin: number, length: number) => {
      const i = peer.uploadQueue.findIndex((r) => r.index === index && r.begin === begin && r.length === length);
      if (i >= 0) peer.uploadQueue.splice(i, 1);
    });
    wire.on('extended-handshake', () => {
      if (!this.metainfo) this.startMetadataFetches();
    });
    wire.on('metadata-error', (err: Error) => {
      peer.metadataSince = undefined;
      peer.metadataRetryAt = this.deps.clock.now() + METADATA_RETRY_MS;
      if (this.metainfo) return; // the other fetches, stopped once one succeeded
      this.deps.log(`${this.name}: no metadata from ${peer.key}: ${err.message}`);
      this.startMetadataFetches();
    });
    wire.on('metadata', (buf: Buffer) => this.onMetadata(buf));
    wire.on('pex-peers', (ev: { added: PeerAddress[] }) => {
      if (this.isPrivate) return;
      for (const p of ev.added.slice(0, 200)) this.addPeer(p, 'pex');
    });
    wire.on('port', (port: number) => {
      // BEP 5: the peer runs a DHT node on this port; the session's DHT may use it.
      if (!this.isPrivate && port > 0) this.deps.dht?.addNode?.({ host: address.host, port });
    });
    wire.on('drain', () => this.serveUploads(peer));
    // The wire closes itself on protocol violations and on exceptions in our own handlers: keep the reason.
    wire.on('error', (err: Error) => this.emit('peer-error', peer.key, err));
    wire.once('close', () => this.onPeerClose(peer));
  }

  private maybeDropSeed(peer: Peer): void {
    // end(), not destroy(): messages the peer queued before its last HAVE (e.g. a payment) are still read.
    if (this.state === 'seeding' && peer.isSeed()) peer.wire.end();
  }

  private sendOurBitfield(peer: Peer): void {
    if (!this.have || !this.metainfo || (peer as { bitfieldSent?: boolean }).bitfieldSent) return;
    (peer as { bitfieldSent?: boolean }).bitfieldSent = true;
    const fast = peer.wire.peerCaps?.fast;
    const count = this.have.count();
    if (fast && count === this.metainfo.pieceCount) peer.wire.haveAll();
    else if (fast && count === 0) peer.wire.haveNone();
    else if (count > 0) peer.wire.bitfield(this.have.toBuffer());
  }

  private sendDhtPort(peer: Peer): void {
    const port = this.deps.dht?.port;
    if (port && !this.isPrivate && peer.wire.peerCaps?.dht) peer.wire.port(port);
  }

  private applyPeerBitfield(peer: Peer): void {
    const meta = this.metainfo;
    if (!meta || !peer.rawBitfield) return;
    let bits: BitField;
    try {
      bits = BitField.fromBuffer(peer.rawBitfield, meta.pieceCount);
    } catch {
      peer.wire.destroy(new Error('invalid bitfield'));
      return;
    }
    peer.rawBitfield = undefined;
    peer.has = bits;
    this.picker?.peerBitfield(bits);
    this.updateInterest(peer);
    this.maybeDropSeed(peer);
  }

  /** Take back a peer's announced pieces (its set is being replaced by a later have-state message). */
  private forgetPeerPieces(peer: Peer): void {
    if (this.picker) {
      if (peer.hasAll) this.picker.peerLost('all');
      else if (peer.has) this.picker.peerLost(peer.has);
    }
    peer.hasAll = false;
    peer.hasNone = false;
    peer.has = undefined;
    peer.rawBitfield = undefined;
  }

  private onPeerClose(peer: Peer): void {
    if (this.peers.get(peer.key) !== peer) return;
    this.peers.delete(peer.key);
    this.deps.connectionClosed();
    this.releaseRequests(peer, false);
    if (this.picker) {
      if (peer.hasAll) this.picker.peerLost('all');
      else if (peer.has) this.picker.peerLost(peer.has);
    }
    this.picker?.peerGone(peer.key);
    // Peers we reached once are worth retrying later (unless banned).
    if (peer.outgoing && !this.banned.has(peer.address.host) && !this.selfAddresses.has(peer.key) && this.state !== 'closed') {
      const viaMse = (peer.wire as { viaMse?: boolean }).viaMse ?? false;
      const policy = this.deps.encryption ?? 'enabled';
      if (!peer.wire.handshakeReceived && !viaMse && policy === 'enabled') {
        // Hung up on our plaintext handshake: peers that require encryption do. Retry encrypted now, once.
        this.candidates.set(peer.key, { address: peer.address, failures: 0, nextAttemptAt: this.deps.clock.now(), source: 'reconnect', mse: true, triedBoth: true });
      } else {
        this.candidates.set(peer.key, { address: peer.address, failures: 1, nextAttemptAt: this.deps.clock.now() + 5_000, source: 'reconnect', mse: viaMse });
      }
    }
    this.emit('peer-closed', peer.key);
    this.scheduleRechoke(!peer.wire.amChoking && this.hasPeerWaitingForSlot());
  }

  private releaseRequests(peer: Peer, keepAllowedFast: boolean): void {
    for (const [k, req] of peer.outstanding) {
      if (keepAllowedFast && peer.allowedFast.has(req.index)) continue;
      peer.outstanding.delete(k);
      this.picker?.requestCancelled(req, peer.key);
    }
  }

  // ---------------------------------------------------------------- metadata (BEP 9)

  private startingMetadataFetches = false;

  private metadataExt(peer: Peer): UtMetadataExtension | undefined {
    return peer.wire.getExtension<UtMetadataExtension>('ut_metadata');
  }

  /**
   * Fetch the info dictionary from at most METADATA_FETCHERS peers at once (each fetch allocates up to the peer's
   * metadata_size and downloads all of it: every connected peer at once multiplied both by the swarm size). A peer
   * that fails, or sends no piece for METADATA_STALL_MS, is set aside for METADATA_RETRY_MS and the next one asked.
   */
  private startMetadataFetches(): void {
    // A fetch that fails synchronously re-enters through 'metadata-error': this loop goes on to the next peer itself.
    if (this.metainfo || this.state === 'closed' || this.startingMetadataFetches) return;
    this.startingMetadataFetches = true;
    try {
      const now = this.deps.clock.now();
      let running = 0;
      for (const peer of this.peers.values()) if (peer.metadataSince !== undefined) running++;
      for (const peer of this.peers.values()) {
        if (running >= METADATA_FETCHERS) return;
        if (peer.metadataSince !== undefined || now < peer.metadataRetryAt || !peer.wire.extendedHandshake) continue;
        const ext = this.metadataExt(peer);
        if (!ext || !(ext.peerMetadataSize! > 0)) continue;
        peer.metadataSince = now;
        peer.metadataPieces = 0;
        ext.fetch(); // may fail synchronously ('metadata-error' clears metadataSince)
        if (peer.metadataSince !== undefined) running++;
      }
    } finally {
      this.startingMetadataFetches = false;
    }
  }

  /** tick(): abort fetches that stalled, start others. */
  private checkMetadataFetches(now: number): void {
    for (const peer of this.peers.values()) {
      if (peer.metadataSince === undefined) continue;
      const ext = this.metadataExt(peer);
      const got = ext?.piecesReceived ?? 0;
      if (got !== peer.metadataPieces) {
        peer.metadataPieces = got;
        peer.metadataSince = now;
      } else if (now - peer.metadataSince >= METADATA_STALL_MS) {
        ext?.abort(`no metadata piece for ${METADATA_STALL_MS / 1000} s`); // → 'metadata-error' → next peer
        peer.metadataSince = undefined; // abort() cleared it through its error event; without the extension, here
      }
    }
    this.startMetadataFetches();
  }

  private onMetadata(info: Buffer): void {
    if (this.metainfo) return;
    let meta: Metainfo;
    try {
      meta = parseInfoDict(info);
    } catch (err) {
      this.deps.log(`${this.name}: invalid metadata from peer: ${(err as Error).message}`);
      return;
    }
    if (!meta.infoHash.equals(this.infoHash)) return;
    meta.announce = this.opts.trackers;
    this.metainfo = meta;
    this.metadataBuffer = meta.infoBuffer;
    this.name = meta.name;
    for (const peer of this.peers.values()) if (peer.metadataSince !== undefined) this.metadataExt(peer)?.abort('metadata already received');
    this.emit('metadata', meta);
    this.initStorage().catch((err) => this.fail(err));
  }

  // ---------------------------------------------------------------- downloading

  private updateInterestAll(): void {
    for (const peer of this.peers.values()) this.updateInterest(peer);
  }

  private updateInterest(peer: Peer): void {
    if (!this.metainfo || !this.have || !this.wanted) return;
    const interested = !this.isComplete() && this.picker!.isInteresting(peer.pickerView);
    if (interested && !peer.wire.amInterested) peer.wire.interested();
    else if (!interested && peer.wire.amInterested) peer.wire.notInterested();
    if (interested) this.fillRequests(peer);
  }

  /** Keep the peer's request pipeline full. */
  private fillRequests(peer: Peer): void {
    const picker = this.picker;
    if (!picker || this.state !== 'downloading' || !peer.wire.amInterested) return;
    if (this.pendingWriteBytes > MAX_PENDING_WRITE_BYTES) return;
    const choked = peer.wire.peerChoking;
    if (choked && peer.allowedFast.size === 0) return;
    // Pipeline depth follows the peer's rate: about one second of data in flight, 8..500 blocks.
    const rate = peer.downRate.rate();
    const target = Math.max(8, Math.min(500, Math.ceil(rate / BLOCK_SIZE)));
    // Never more than the peer said it queues (BEP 10 reqq; 250 is libtorrent's default when absent).
    const reqq = peer.wire.extendedHandshake?.reqq;
    const peerQueue = typeof reqq === 'number' && reqq > 0 ? reqq : 250;
    peer.pipeline = Math.min(Math.max(peer.pipeline, target), peerQueue);
    // Refill in batches (a quarter of the pipeline at a time) rather than one request per block received. Checked first
    // on the full pipeline: a smaller one (below) has less room and a threshold lower by less, so it would wait too;
    // most blocks received end here, without asking the gate.
    const room = peer.pipeline - peer.outstanding.size;
    if (room <= 0 || (peer.outstanding.size > 0 && room < Math.max(1, peer.pipeline >> 2))) return;
    // A peer we may only ask for a few whole pieces at a time (a paid provider) never has more than those pieces'
    // blocks out: size the pipeline to that, so the batching below still applies (else every block re-runs the picker).
    const maxPieces = this.opts.uploadGate?.maxRequestPieces?.(peer.key, rate);
    const pipeline = maxPieces !== undefined && maxPieces > 0 ? Math.min(peer.pipeline, Math.max(8, maxPieces * Math.ceil(this.metainfo!.pieceLength / BLOCK_SIZE))) : peer.pipeline;
    const want = pipeline - peer.outstanding.size;
    if (want <= 0 || (peer.outstanding.size > 0 && want < Math.max(1, pipeline >> 2))) return;
    const view = peer.pickerView;
    view.choked = choked;
    view.rate = rate; // piece affinity: slow peers don't join pieces fast peers are finishing
    view.maxPieces = maxPieces;
    const reqs = picker.pickBlocks(view, want);
    for (const r of reqs) {
      if (choked && !peer.allowedFast.has(r.index)) {
        picker.requestCancelled(r, peer.key);
        continue;
      }
      peer.outstanding.set(blockKey(r.index, r.begin), r);
      peer.wire.request(r.index, r.begin, r.length);
    }
  }

  private onBlock(peer: Peer, index: number, begin: number, block: Buffer): void {
    const meta = this.metainfo;
    const k = blockKey(index, begin);
    const req = peer.outstanding.get(k);
    peer.lastPieceAt = this.deps.clock.now();
    peer.snubbed = false;
    this.downloadedBytes += block.length;
    peer.downRate.add(block.length);
    this.downRate.add(block.length);
    this.throttleDownload(peer, block.length);
    this.opts.uploadGate?.onBlockReceived?.(peer.key, index, block.length);
    if (!meta || !this.picker || !this.have || !req || req.length !== block.length) {
      this.wastedBytes += block.length;
      return;
    }
    peer.outstanding.delete(k);
    this.acceptBlock(peer.key, req, block);
    this.fillRequests(peer);
  }

  /** A requested block from a peer or a web seed (`sourceKey`): assemble, hash as it grows, verify when complete. */
  private acceptBlock(sourceKey: string, req: BlockRequest, block: Buffer): void {
    const meta = this.metainfo!;
    const { index, begin } = req;
    const k = blockKey(index, begin);
    if (this.have!.get(index)) {
      this.wastedBytes += block.length;
      return;
    }
    let contributors = this.contributors.get(index);
    if (!contributors) this.contributors.set(index, (contributors = new Set()));
    contributors.add(sourceKey);
    const result = this.picker!.blockReceived(req, sourceKey);
    // End-game duplicates: cancel the same block at the other peers.
    for (const otherKey of result.cancel) {
      const other = this.peers.get(otherKey);
      if (other && other.outstanding.delete(k)) other.wire.cancel(index, begin, block.length);
    }
    if (result.duplicate) {
      // Not copied: the first copy may already be hashed.
      this.wastedBytes += block.length;
      return;
    }
    let piece = this.inProgress.get(index);
    if (!piece) {
      const size = pieceSize(meta, index);
      const pooled = size === meta.pieceLength ? this.piecePool.pop() : undefined;
      piece = {
        buf: pooled ?? Buffer.allocUnsafe(size),
        received: 0,
        size,
        hash: createHash('sha1'),
        hashed: 0,
        got: new Uint8Array(Math.ceil(size / BLOCK_SIZE)),
      };
      this.inProgress.set(index, piece);
    }
    block.copy(piece.buf, begin);
    piece.received += block.length;
    this.feedPieceHash(piece, begin, block);
    if (result.pieceComplete) {
      this.inProgress.delete(index);
      const digest = piece.hash && piece.hashed === piece.size ? piece.hash.digest() : undefined;
      void this.verifyAndStore(index, piece.buf, digest);
    }
  }

  /** Advance a piece's running SHA-1 over every block now contiguous from its start; drop it if blocks are odd. */
  private feedPieceHash(piece: PieceInProgress, begin: number, block: Buffer): void {
    const h = piece.hash;
    if (!h) return;
    const b = begin / BLOCK_SIZE;
    if (begin % BLOCK_SIZE !== 0 || b >= piece.got.length || piece.got[b] || (block.length !== BLOCK_SIZE && begin + block.length !== piece.size)) {
      piece.hash = undefined; // unusual block layout or a block stored twice: hash the whole buffer at the end
      return;
    }
    piece.got[b] = 1;
    if (begin !== piece.hashed) return; // out of order: caught up when the gap is filled
    h.update(block);
    piece.hashed += block.length;
    for (let i = b + 1; i < piece.got.length && piece.got[i] && piece.hashed < piece.size; i++) {
      const end = Math.min(piece.size, piece.hashed + BLOCK_SIZE);
      h.update(piece.buf.subarray(piece.hashed, end));
      piece.hashed = end;
    }
  }

  private throttleDownload(peer: Peer, bytes: number): void {
    // Received bytes are already here: charge them (possibly into debt), then stop reading until repaid.
    this.deps.globalDownload.consume(bytes);
    this.downBucket.consume(bytes);
    const delay = Math.max(this.deps.globalDownload.delayFor(1), this.downBucket.delayFor(1));
    if (delay > 0 && !peer.readPaused) {
      peer.readPaused = true;
      peer.wire.pauseReading();
      const t = this.deps.clock.setTimeout(() => {
        peer.readPaused = false;
        peer.wire.resumeReading();
      }, delay);
      t.unref?.();
    }
  }

  /** `digest`: the SHA-1 already computed while the blocks arrived; otherwise the hasher pool computes it. */
  private async verifyAndStore(index: number, buf: Buffer, digest?: Uint8Array): Promise<void> {
    const meta = this.metainfo!;
    this.pendingWriteBytes += buf.length;
    try {
      digest ??= await this.deps.hasher.sha1(buf);
      const expected = meta.pieceHashes.subarray(index * 20, index * 20 + 20);
      if (!Buffer.from(digest).equals(expected)) {
        this.onHashFailure(index);
        return;
      }
      // The data is proven good: plugins that pay per piece (Speed) need not wait for the disk write.
      this.emit('verified', index);
      await this.storage!.writePiece(index, buf);
      if (this.state === 'closed') return;
      this.have!.set(index);
      this.picker!.setHave(index);
      this.contributors.delete(index);
      this.resumeDirty = true;
      for (const peer of this.peers.values()) {
        peer.wire.have(index);
      }
      this.emit('piece', index);
      if (this.isComplete()) {
        this.checkDone();
      } else {
        for (const peer of this.peers.values()) if (peer.wire.amInterested && !this.peerHasWanted(peer)) this.updateInterest(peer);
      }
    } catch (err) {
      this.fail(err as Error);
    } finally {
      this.pendingWriteBytes -= buf.length;
      // Nothing holds the buffer now (the hasher copies, storage is done with it): keep it for the next piece.
      if (buf.length === meta.pieceLength && (this.piecePool.length + 1) * buf.length <= PIECE_POOL_BYTES) this.piecePool.push(buf);
      if (this.pendingWriteBytes <= MAX_PENDING_WRITE_BYTES) for (const p of this.peers.values()) this.fillRequests(p);
    }
  }

  private peerHasWanted(peer: Peer): boolean {
    return this.picker!.isInteresting(peer.pickerView);
  }

  private onHashFailure(index: number): void {
    this.hashFailures++;
    this.wastedBytes += pieceSize(this.metainfo!, index);
    const who = this.contributors.get(index) ?? new Set<string>();
    this.contributors.delete(index);
    this.picker!.pieceFailed(index);
    this.emit('hash-failure', index, [...who]);
    for (const ws of this.webSeeds) if (who.has(ws.key)) ws.onHashFailure();
    for (const key of who) {
      const peer = this.peers.get(key);
      if (!peer) continue;
      peer.hashFailures++;
      // A piece from a single peer that fails is that peer's fault; shared pieces count for all of them.
      if (peer.hashFailures >= BAN_AFTER_HASH_FAILURES || (who.size === 1 && peer.hashFailures >= BAN_AFTER_HASH_FAILURES)) {
        this.ban(peer, `sent ${peer.hashFailures} pieces that failed the hash check`);
      }
    }
  }

  /** Disconnect a peer and refuse it (by IP) for the rest of the session. */
  ban(peer: Peer, reason: string): void {
    this.banned.add(peer.address.host);
    this.candidates.delete(peer.key);
    this.emit('peer-banned', peer.key, reason);
    this.deps.log(`${this.name}: banned ${peer.key}: ${reason}`);
    peer.wire.destroy();
  }

  isBanned(host: string): boolean {
    return this.banned.has(host);
  }

  // ---------------------------------------------------------------- uploading

  private onRequest(peer: Peer, index: number, begin: number, length: number): void {
    const meta = this.metainfo;
    const valid =
      meta !== undefined &&
      this.have !== undefined &&
      index < meta.pieceCount &&
      this.have.get(index) &&
      length > 0 &&
      length <= MAX_SERVED_BLOCK &&
      begin + length <= pieceSize(meta, index);
    const allowed = !peer.wire.amChoking;
    if (!valid || !allowed || peer.uploadQueue.length >= MAX_PEER_REQUEST_QUEUE) {
      if (peer.wire.peerCaps?.fast) peer.wire.reject(index, begin, length);
      return;
    }
    peer.uploadQueue.push({ index, begin, length });
    // Held by the UploadGate: the request waits for resumeUploads() (or tick()'s retry) behind those already queued.
    // Asking the gate again for each request that arrives meanwhile cost ~12,000 refused calls per GiB of a paid
    // transfer. Alone in the queue (the held ones were dropped, e.g. by a choke) it asks at once.
    if (peer.uploadHeld && peer.uploadQueue.length > 1) return;
    this.serveUploads(peer);
  }

  /** Read blocks from storage and send them, respecting socket backpressure and rate limits. */
  private serveUploads(peer: Peer): void {
    if (peer.serving) return;
    peer.serving = true;
    void this.serveLoop(peer);
  }

  /**
   * Sends queued blocks. `serving` is cleared in serveQueued's own finally, which runs synchronously at
   * the `return` — before the corked writes flush on nextTick and emit 'drain'. (Clearing it in a promise
   * callback would run after that 'drain', whose handler would then see serving === true and the loop
   * would never restart.)
   */
  private async serveLoop(peer: Peer): Promise<void> {
    // Not `await this.serveQueued()` + finally here: an await always yields, so the flag would clear only after
    // the nextTick uncork had already emitted 'drain' (observed: transfers stalling with requests queued).
    await this.serveQueued(peer).catch((err: Error) => {
      this.deps.log(`${this.name}: upload to ${peer.key} failed: ${err.message}`);
    });
  }

  private async serveQueued(peer: Peer): Promise<void> {
    const gate = this.opts.uploadGate;
    // An UploadGate is asked once per piece and told once per run of blocks of one piece, not per block: within a
    // stretch of this loop that does not yield, nothing else runs, so a gate's answer for a piece cannot change (its
    // own state moves on messages and timers). Every await below ends the stretch: charges are reported first and
    // the cached answers dropped. (Three calls per 16 KiB block before: ~200,000 per GiB.)
    // No closures here: the loop restarts on every 'drain', and each closure created costs an allocation plus, under
    // tsx, a defineProperty for its name.
    let allowedPiece = -1;
    let priority: Priority | undefined;
    // The read-cache entry this stretch last moved to the LRU end: moving it again before another is moved changes
    // nothing, and was a Map delete + set per block.
    let touchedPiece = -1;
    try {
      while (peer.uploadQueue.length > 0 && !peer.wire.destroyed && this.state !== 'closed') {
        if (peer.wire.needsDrain) return; // 'drain' resumes us
        if (gate && peer.uploadQueue[0].index !== allowedPiece) {
          this.reportUploadCharges(peer); // the gate's decision on a new piece counts what this run already sent
          const held = !this.gateNextUpload(peer);
          if (held && !peer.uploadHeld) this.uploadHolds++;
          peer.uploadHeld = held;
          if (held) return; // all held; resumeUploads() or tick() retries
          allowedPiece = peer.uploadQueue[0].index;
        }
        const req = peer.uploadQueue[0];
        // Wait for bandwidth in arrival order (the buckets queue waiters): with a sleep-and-retry loop the peer
        // that just sent re-armed first and won every race, starving the others (Speed's paid slots included).
        const prio = (priority ??= gate?.uploadPriority?.(peer.key) ?? PRIORITY_NORMAL);
        if (!this.upBucket.tryTake(req.length, prio)) {
          this.reportUploadCharges(peer);
          allowedPiece = -1;
          priority = undefined;
          touchedPiece = -1;
          await this.upBucket.take(req.length, undefined, prio);
        }
        if (!this.deps.globalUpload.tryTake(req.length, prio)) {
          this.reportUploadCharges(peer);
          allowedPiece = -1;
          priority = undefined;
          touchedPiece = -1;
          await this.deps.globalUpload.take(req.length, undefined, prio);
        }
        // After a wait this block still goes (its bandwidth is taken); the next one asks the gate again.
        if (peer.uploadQueue[0] !== req) continue; // cancelled, rejected or reordered while waiting
        peer.uploadQueue.shift();
        let piece = this.readReady.get(req.index);
        if (piece) {
          if (req.index !== touchedPiece) this.touchReadCache((touchedPiece = req.index));
        } else {
          this.reportUploadCharges(peer);
          allowedPiece = -1;
          priority = undefined;
          touchedPiece = -1;
          try {
            await this.readPieceCached(req.index);
          } catch (err) {
            this.deps.log(`${this.name}: read of piece ${req.index} failed: ${(err as Error).message}`);
            if (peer.wire.peerCaps?.fast) peer.wire.reject(req.index, req.begin, req.length);
            continue;
          }
          // Only a buffer still in the cache is safe (an evicted one may be recycled): else read it again.
          piece = this.readReady.get(req.index);
          if (!piece) {
            peer.uploadQueue.unshift(req);
            continue;
          }
        }
        const block = piece.subarray(req.begin, req.begin + req.length);
        if (peer.wire.amChoking) {
          peer.wire.reject(req.index, req.begin, req.length); // choked while reading (no-op without BEP 6)
          continue;
        }
        peer.wire.piece(req.index, req.begin, block);
        if (gate) {
          if (req.index !== peer.chargedPiece) {
            this.reportUploadCharges(peer);
            peer.chargedPiece = req.index;
          }
          peer.chargedBytes += req.length;
        }
        peer.upRate.add(req.length);
        this.upRate.add(req.length);
        this.uploadedBytes += req.length;
      }
    } finally {
      // Runs synchronously when the loop returns without awaiting.
      this.reportUploadCharges(peer);
      peer.serving = false;
    }
  }

  /** Tell the UploadGate what serveQueued's current run sent of one piece (before it asks about another, or yields). */
  private reportUploadCharges(peer: Peer): void {
    if (peer.chargedBytes > 0) this.opts.uploadGate?.onBlockUploaded?.(peer.key, peer.chargedPiece, peer.chargedBytes);
    peer.chargedBytes = 0;
    peer.chargedPiece = -1;
  }

  /** Retry held uploads (after an UploadGate opened). */
  resumeUploads(peerKey?: string): void {
    for (const peer of this.peers.values()) if (!peerKey || peer.key === peerKey) this.serveUploads(peer);
  }

  /**
   * UploadGate: put the first request the gate allows at the head of the peer's upload queue (requests for a held
   * piece keep their order behind it). False when every queued request is held. One gate call per distinct piece.
   */
  private gateNextUpload(peer: Peer): boolean {
    const gate = this.opts.uploadGate!;
    const q = peer.uploadQueue;
    let held = -1;
    for (let i = 0; i < q.length; i++) {
      const index = q[i].index;
      if (index === held) continue;
      if (gate.mayUpload(peer.key, index)) {
        if (i > 0) q.unshift(q.splice(i, 1)[0]);
        return true;
      }
      held = index;
    }
    // Everything is held (Speed: waiting for a payment): read the head's piece meanwhile, so it goes out as soon as
    // the gate opens instead of after a disk read.
    if (q.length > 0 && this.metainfo && this.storage && !this.readCache.has(q[0].index)) void this.readPieceCached(q[0].index).catch(() => {});
    return false;
  }

  /** LRU: move a read-cache entry to the most recently used end. */
  private touchReadCache(index: number): void {
    const p = this.readCache.get(index);
    if (!p) return;
    this.readCache.delete(index);
    this.readCache.set(index, p);
  }

  /** Whole-piece read cache: peers ask for a piece block by block; one disk read serves them all. */
  private readPieceCached(index: number): Promise<Buffer> {
    let p = this.readCache.get(index);
    if (p) {
      this.touchReadCache(index);
      return p;
    }
    const meta = this.metainfo!;
    const size = pieceSize(meta, index);
    // An evicted buffer is reusable once every socket that had unflushed writes at its eviction has flushed past
    // that point: only writes queued before the eviction can point into it. (Waiting for all sockets to be empty
    // at once almost never happened under steady upload: 60–85% of piece reads allocated a new buffer.)
    if (this.readRetired.length > 0 && this.readSpare.length === 0) this.recycleRetired();
    const target = size === meta.pieceLength ? this.readSpare.pop() : undefined;
    const read = this.storage!.readBlock(index, 0, size, target);
    p = read;
    this.readCache.set(index, read);
    read.then(
      (buf) => {
        if (this.readCache.get(index) === read) this.readReady.set(index, buf);
      },
      () => {
        if (this.readCache.get(index) === read) this.readCache.delete(index);
      },
    );
    const maxPieces = Math.max(4, Math.floor(READ_CACHE_BYTES / (meta.pieceLength ?? 1)));
    while (this.readCache.size > maxPieces) {
      const old = this.readCache.keys().next().value as number;
      this.readCache.delete(old);
      const buf = this.readReady.get(old);
      this.readReady.delete(old);
      if (buf && buf.length === meta.pieceLength && (this.readRetired.length + this.readSpare.length + 1) * buf.length <= READ_POOL_BYTES) {
        const waits: (PeerWire | number)[] = [];
        for (const peer of this.peers.values()) if (peer.wire.writableLength > 0) waits.push(peer.wire, peer.wire.queuedBytes);
        if (waits.length === 0) this.readSpare.push(buf);
        else this.readRetired.push({ buf, waits });
      }
    }
    return p;
  }

  /** Move the retired read buffers no socket can still be sending from to the spare list. */
  private recycleRetired(): void {
    let kept = 0;
    for (const entry of this.readRetired) {
      let free = true;
      for (let i = 0; i < entry.waits.length && free; i += 2) {
        if ((entry.waits[i] as PeerWire).flushedBytes < (entry.waits[i + 1] as number)) free = false;
      }
      if (free) this.readSpare.push(entry.buf);
      else this.readRetired[kept++] = entry;
    }
    this.readRetired.length = kept;
  }

  // ---------------------------------------------------------------- choking

  /**
   * Re-run the choker soon (within 200 ms; calls coalesce): a plugin's input changed, e.g. a Speed bid arrived.
   * `urgent`: as soon as the urgent-rechoke spacing allows (a bid that can change who is unchoked, or at what price).
   */
  requestRechoke(urgent = false): void {
    if (this.state !== 'closed') this.scheduleRechoke(urgent);
  }

  /** An interested peer we choke. */
  private hasPeerWaitingForSlot(): boolean {
    for (const peer of this.peers.values()) if (peer.wire.amChoking && peer.wire.peerInterested) return true;
    return false;
  }

  /** Fewer peers unchoked than the regular slots plus the optimistic one. */
  private hasFreeUploadSlot(): boolean {
    let unchoked = 0;
    for (const peer of this.peers.values()) if (!peer.wire.amChoking) unchoked++;
    return unchoked < (this.opts.uploadSlots ?? 4) + 1;
  }

  /**
   * Rechokes coalesce: one timer, 200 ms out, or URGENT_RECHOKE_SPACING_MS after the last rechoke when urgent (a
   * plugin asking on every message of a chatty peer cannot make the choker run more than 50 times a second).
   */
  private scheduleRechoke(urgent = false): void {
    const now = this.deps.clock.now();
    const due = urgent ? Math.max(now, this.lastRechokeAt + URGENT_RECHOKE_SPACING_MS) : now + 200;
    if (this.rechokeSoon) {
      if (this.rechokeDueAt <= due) return;
      this.deps.clock.clearTimeout(this.rechokeSoon);
    }
    this.rechokeDueAt = due;
    this.rechokeSoon = this.deps.clock.setTimeout(() => {
      this.rechokeSoon = undefined;
      this.rechoke();
    }, due - now);
    this.rechokeSoon.unref?.();
  }

  private rechoke(): void {
    if (this.state === 'closed') return;
    const now = this.deps.clock.now();
    this.lastRechokeAt = now;
    const chokerPeers: ChokerPeer[] = [];
    for (const peer of this.peers.values()) {
      chokerPeers.push({
        id: peer.key,
        interested: peer.wire.peerInterested,
        downloadRate: peer.downRate.rate(),
        uploadRate: peer.upRate.rate(),
        isSeed: peer.isSeed(),
        connectedAt: peer.connectedAt,
        lastUnchokedAt: peer.lastUnchokedAt,
        unchoked: !peer.wire.amChoking,
        snubbed: peer.snubbed,
      });
    }
    const decision = this.choker.rechoke({ peers: chokerPeers, now, seeding: this.state === 'seeding', slots: this.opts.uploadSlots ?? 4 });
    for (const peer of this.peers.values()) {
      const unchoke = decision.unchoke.has(peer.key);
      if (unchoke && peer.wire.amChoking) {
        peer.wire.unchoke();
        peer.lastUnchokedAt = now;
      } else if (!unchoke && !peer.wire.amChoking) {
        peer.wire.choke();
        // Drop their queued requests (BEP 6 peers get explicit rejects).
        for (const r of peer.uploadQueue.splice(0)) peer.wire.reject(r.index, r.begin, r.length);
      }
    }
  }

  // ---------------------------------------------------------------- periodic work

  private tick(): void {
    if (this.state === 'closed') return;
    const now = this.deps.clock.now();
    // Snubbed peers: nothing received for 30 s while requests are outstanding.
    for (const peer of this.peers.values()) {
      if (peer.outstanding.size > 0 && now - peer.lastPieceAt > 30_000) {
        peer.snubbed = true;
        this.releaseRequests(peer, false);
      }
    }
    this.connectMore();
    if (!this.metainfo) this.checkMetadataFetches(now);
    for (const ws of this.webSeeds) ws.kick();
    // Watchdog: an idle upload loop with queued requests (a held UploadGate, or a lost 'drain' wake-up) restarts
    // within a second instead of leaving the peer's requests unanswered until it gives up on us.
    for (const peer of this.peers.values()) if (peer.uploadQueue.length > 0 && !peer.serving) this.serveUploads(peer);
    if (this.deps.dht && !this.isPrivate && now >= this.nextDhtLookup && !this.dhtBusy) this.dhtLookup();
    if (this.resumeDirty && now - this.lastResumeSave > 10_000) void this.saveResume();
    this.emit('tick');
  }

  /**
   * get_peers + announce_peer. Downloading torrents look again every 5 minutes, seeds re-announce every
   * 15; while the announce reaches no node (young routing table) retry after 5 s, 10 s, 20 s, …
   */
  private dhtLookup(): void {
    const dht = this.deps.dht!;
    this.dhtBusy = true;
    const port = this.deps.listenPort();
    dht
      .getPeers(this.infoHash, { onPeers: (peers) => { peers.forEach((p) => this.addPeer(p, 'dht')); this.connectMore(); } })
      .then(() => (dht.announceCount ? dht.announceCount(this.infoHash, port) : dht.announce(this.infoHash, port).then(() => 1)))
      .catch(() => 0)
      .then((stored) => {
        this.dhtBusy = false;
        const now = this.deps.clock.now();
        if (stored > 0) {
          this.dhtFailures = 0;
          this.nextDhtLookup = now + (this.state === 'seeding' ? 15 : 5) * 60_000;
        } else {
          this.nextDhtLookup = now + Math.min(5 * 60_000, 5_000 * 2 ** this.dhtFailures++);
        }
      });
  }

  /** Look up peers in the DHT now (e.g. after the DHT bootstrapped). */
  dhtLookupNow(): void {
    if (this.deps.dht && !this.isPrivate) this.dhtLookup();
  }

  private async saveResume(): Promise<void> {
    const store = this.deps.resumeStore;
    if (!store || !this.metainfo || !this.have || !this.storage) return;
    this.resumeDirty = false;
    this.lastResumeSave = this.deps.clock.now();
    try {
      await this.storage.flush();
      const { statFiles } = await import('./storage/index.js');
      const files = await statFiles(this.metainfo, this.path);
      await store.save(this.infoHash, { have: this.have.toBuffer(), files, torrent: this.metadataBuffer } as Parameters<ResumeStore['save']>[1]);
    } catch (err) {
      this.deps.log(`${this.name}: could not save resume data: ${(err as Error).message}`);
    }
  }

  private fail(err: Error): void {
    if (this.state === 'closed') return;
    this.error = err.message;
    this.state = 'error';
    this.deps.log(`${this.name}: ${err.message}`);
    this.emit('error', err);
    this.rejectDone(err);
    for (const peer of this.peers.values()) peer.wire.destroy();
  }

  stats(): TorrentStats {
    const wanted = this.wantedBytes();
    const verified = this.verifiedBytes();
    const rate = this.downRate.rate();
    let seeds = 0;
    for (const p of this.peers.values()) if (p.isSeed()) seeds++;
    const remaining = wanted - verified;
    return {
      infoHash: this.infoHashHex,
      name: this.name,
      state: this.state,
      progress: wanted > 0 ? verified / wanted : this.metainfo ? 1 : 0,
      verifiedBytes: verified,
      wantedBytes: wanted,
      totalBytes: this.metainfo?.length ?? 0,
      downloaded: this.downloadedBytes,
      uploaded: this.uploadedBytes,
      downloadRate: rate,
      uploadRate: this.upRate.rate(),
      peers: this.peers.size,
      seeds,
      candidates: this.candidates.size,
      eta: remaining <= 0 ? 0 : rate > 0 ? remaining / rate : Infinity,
      pieces: { have: this.have?.count() ?? 0, total: this.metainfo?.pieceCount ?? 0 },
      hashFailures: this.hashFailures,
      wastedBytes: this.wastedBytes,
      uploadHolds: this.uploadHolds,
      error: this.error,
    };
  }

  /** Hash `pieces` again from disk; a piece that no longer matches is dropped from `have` and downloaded again. */
  private async recheckPieces(pieces: number[]): Promise<void> {
    const meta = this.metainfo;
    if (pieces.length === 0 || !meta || !this.storage || !this.have || !this.picker) return;
    const ok = await checkExistingData(meta, this.storage, this.deps.hasher, undefined, { pieces });
    let lost = 0;
    for (const i of pieces) {
      if (ok.get(i) || !this.have.get(i)) continue;
      this.have.set(i, false);
      this.picker.unsetHave(i);
      lost++;
    }
    if (lost === 0) return;
    this.deps.log(`${this.name}: ${lost} piece(s) shared with newly selected files failed a re-check; downloading them again`);
    this.resumeDirty = true;
    this.completeScanFrom = 0;
    if (this.state === 'seeding') {
      this.state = 'downloading';
      this.doneEmitted = false;
    }
    this.updateInterestAll();
  }

  /** Download only the given file indexes (others get priority 0); applies now or once metadata arrives. */
  setFileSelection(indices: number[]): void {
    const meta = this.metainfo;
    if (!meta) {
      this.once('metadata', () => this.setFileSelection(indices));
      return;
    }
    for (const i of indices) if (!Number.isInteger(i) || i < 0 || i >= meta.files.length) throw new RangeError(`file index ${i} out of range (torrent has ${meta.files.length} files)`);
    const keep = new Set(indices);
    this.setFilePriorities(meta.files.map((_, i) => (keep.has(i) ? 1 : 0)));
  }

  /** Per-file priority 0 (skip) .. 7. */
  setFilePriorities(prios: number[]): void {
    const before = this.opts.filePriorities;
    this.opts.filePriorities = prios;
    const meta = this.metainfo;
    if (!meta || !this.picker || !this.wanted) return; // applied by initStorage
    if (this.storage instanceof FileStorage) {
      // Files leaving the skip set get their bytes back from the part file; then the pieces they share with other
      // files, which we may have verified while the file was skipped, are checked again before anyone relies on them.
      const unskipped = meta.files.map((_, i) => i).filter((i) => (before?.[i] ?? 1) === 0 && (prios[i] ?? 1) > 0);
      const skip = prios.flatMap((p, i) => (p === 0 ? [i] : []));
      const recheck = new Set<number>();
      for (const i of unskipped) {
        const span = piecesForFile(meta, i);
        if (span) for (const piece of span) if (this.have?.get(piece)) recheck.add(piece);
      }
      const storage = this.storage;
      this.rechecking++;
      void storage
        .setSkipFiles(skip)
        .then(() => this.recheckPieces([...recheck]))
        .catch((err: Error) => this.deps.log(`${this.name}: applying the file selection failed: ${err.message}`))
        .finally(() => {
          this.rechecking--;
          if (this.state !== 'closed') this.checkDone();
        });
    }
    const piecePrios = filePrioritiesToPieces(meta.files, prios, meta.pieceLength, meta.pieceCount);
    for (let i = 0; i < meta.pieceCount; i++) {
      this.picker.setPiecePriority(i, piecePrios[i]);
      this.wanted.set(i, piecePrios[i] > 0);
    }
    this.completeScanFrom = 0;
    if (this.state === 'seeding' && !this.isComplete()) {
      this.state = 'downloading';
      this.doneEmitted = false;
    }
    this.checkDone();
    this.updateInterestAll();
  }

  /** Connected peers (read-only view for UIs and plugins). */
  peerList(): Peer[] {
    return [...this.peers.values()];
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasDone = this.doneEmitted;
    await this.saveResume();
    this.state = 'closed';
    this.deps.clock.clearInterval(this.tickTimer);
    this.deps.clock.clearInterval(this.chokeTimer);
    this.deps.clock.clearTimeout(this.rechokeSoon);
    const stopping = this.announcer?.stop();
    for (const ws of this.webSeeds) ws.stop();
    for (const peer of this.peers.values()) peer.wire.destroy();
    this.peers.clear();
    await this.storage?.close();
    await Promise.race([stopping, new Promise((r) => setTimeout(r, 2000).unref())]).catch(() => {});
    if (!wasDone) this.rejectDone(new Error('torrent closed before completion'));
    this.emit('close');
  }
}

/**
 * Fast-resume when files changed after the last save. Our own writes after the save (the process was killed
 * before it could save again) change sizes and mtimes, and re-hashing everything for that would make every
 * crash cost a full check. Pieces are only ever written once verified, so a recorded piece is kept if every
 * file it spans still physically holds its bytes (file present, not shorter), without re-hashing; pieces not
 * recorded but lying in a file that changed are returned for a hash check (they may have been written after
 * the save). Like libtorrent, this trusts the recorded bitfield over mtimes: data modified in place by someone
 * else is caught by peers' hash checks, not here.
 */
async function resumeAfterCrash(meta: Metainfo, dir: string, data: ResumeData): Promise<{ have: BitField; trusted: number; recheck: number[] } | undefined> {
  if (data.files.length !== meta.files.length) return undefined;
  let recorded: BitField;
  try {
    recorded = BitField.fromBuffer(data.have, meta.pieceCount);
  } catch {
    return undefined;
  }
  const now = await statFiles(meta, dir);
  const changed = meta.files.map((f, i) => !f.pad && (now[i].size !== data.files[i].size || now[i].mtimeMs !== data.files[i].mtimeMs));
  const have = new BitField(meta.pieceCount);
  const recheck: number[] = [];
  let trusted = 0;
  for (let p = 0; p < meta.pieceCount; p++) {
    const start = p * meta.pieceLength;
    const end = start + pieceSize(meta, p);
    let present = true;
    let inChangedFile = false;
    for (let i = 0; i < meta.files.length; i++) {
      const f = meta.files[i];
      if (f.pad || f.length === 0 || f.offset >= end || f.offset + f.length <= start) continue;
      const needed = Math.min(end, f.offset + f.length) - f.offset; // bytes of this file up to the piece's end
      if (now[i].size < needed) present = false;
      if (changed[i]) inChangedFile = true;
    }
    if (!present) continue; // missing bytes: download it
    if (recorded.get(p)) {
      have.set(p);
      trusted++;
    } else if (inChangedFile) recheck.push(p);
  }
  return { have, trusted, recheck };
}
