/**
 * SpeedAgent: BitTorrent Speed for one torrent, composing the wire extension, the auction choker, the auto-bidder
 * and the payment state machines with a ledger (in-process `Ledger` or HTTP `LedgerClient`).
 *
 * The torrent integration installs `agent.extension()` on every wire, uses `agent.choker()` as its choker policy,
 * and calls these hooks:
 *   mayUpload(peerId, piece)               before sending a block (false: hold the request)
 *   onBlockUploaded(peerId, piece, bytes)  after sending a block
 *   onPieceVerified(piece)                 a piece passed its hash check (pays the providers that sent it)
 *   onPieceFailed(piece, peerIds)          a piece failed (rejects, strikes, bans)
 *   tick()                                 every second or so (bids, payment timeouts, channel closes)
 *   shutdown()                             close every channel with its last state
 * Chokes and HAVEs are observed on the wire directly; received blocks through the UploadGate's onBlockReceived when
 * the torrent was built with torrentOptions()/uploadGate(), else on the wire too.
 *
 * Events: 'bid' (price, reason), 'won' (peerId, price), 'paid' (peerId, piece, amount), 'earned' (peerId, amount),
 * 'channel-opened' (peerId, id, deposit), 'channel-closed' (id, amount), 'choke-peer' (peerId, reason),
 * 'ban-peer' (peerId, reason), 'legacy' (peerId, reason), 'warning' (message).
 */
import { EventEmitter } from 'node:events';
import type { PeerWire, WireExtensionFactory, ChokerPolicy, Torrent, UploadGate, AddTorrentOptions, Priority } from '@bitorrent/core';
import { PRIORITY_HIGH, PRIORITY_NORMAL } from '@bitorrent/core';
import type { AccountInfo, ChannelInfo, CloseChannelArgs, KeyPair, OpResult, OpenChannelArgs } from '@bitorrent/ledger';
import { AuctionChoker, type AuctionResult } from './auction.js';
import { AutoBidder, type BidderSettings } from './bidder.js';
import { StandardChoker } from './core-choker.js';
import { speedWire, type SpeedWireExtension } from './extension.js';
import { SpeedErrorCode, type SpeedMessage, type PaymentMessage, type AckMessage } from './messages.js';
import { ProviderPayments, RequesterPayments, defaultMaxUnpaid, suggestDeposit, type PayResult, type PersistedChannel, type ProviderAction, type ProviderPaymentsOptions } from './payments.js';

/** What the agent needs from a ledger (LedgerApiBase satisfies it). */
export interface SpeedLedgerApi {
  channel(id: Buffer): Promise<ChannelInfo | undefined>;
  account(publicKey: Buffer): Promise<AccountInfo>;
  openChannel(a: OpenChannelArgs): Promise<OpResult & { channelId: Buffer }>;
  closeChannel(a: CloseChannelArgs): Promise<OpResult>;
}

export interface SpeedAgentOptions {
  ledger: SpeedLedgerApi;
  ledgerId: Buffer;
  keys: KeyPair;
  /** Clock in ms, comparable with the ledger's clock (channel expiries). */
  now: () => number;
  pieceLength: number;
  /** Bytes this torrent still wants (requester side). Default: from the attached torrent's stats (0 before). */
  remainingBytes?: () => number | bigint;
  /** Bid as a requester (default on, spending rate 1.0). `enabled: false` = never bid. */
  bidding?: Partial<BidderSettings>;
  /** Provider settings. */
  reservePrice?: bigint;
  provider?: Omit<ProviderPaymentsOptions, 'ledgerId' | 'publicKey'>;
  /**
   * New channels: deposit covers this many pieces at the clearing price (default: the rest of the download, at least
   * 32 pieces, at most half the balance), and live this long (default 2 h).
   */
  depositPieces?: number;
  channelTtlMs?: number;
  /** How the torrent names a peer in its choker (default "host:port" of the wire, as core's peerKey). */
  peerIdOf?: (wire: PeerWire) => string;
  /**
   * Persist accepted payment states. The ACK for a payment goes out only once this has returned, or once the promise
   * it returns has resolved (a rejected promise: no ACK, a warning; the requester's next payment carries the state).
   */
  persist?: (channels: PersistedChannel[]) => unknown;
  rng?: () => number;
  /**
   * Fallback for engines without an UploadGate (core has one: use torrentOptions()/uploadGate() instead): wrap `wire.piece` on our wires so paid blocks beyond the exposure limit
   * are rejected (BEP 6 reject; the requester asks again later) and sent blocks are charged. Default false.
   */
  interceptUploads?: boolean;
}

interface AgentPeer {
  id: string;
  wire: PeerWire;
  ext: SpeedWireExtension;
  pk?: Buffer;
  providerKey?: string; // our ProviderPayments key for it (as requester of ours)
  req?: RequesterPayments; // our payments to it (as our provider)
  opening?: Promise<void>;
  pendingPayments: PaymentMessage[];
  /** The newest ACK waiting for its state's durable save (older ones are superseded by it). */
  latestAck?: AckMessage;
  price: bigint; // clearing price we charge it
  /** The provider's unpaid-piece limit K from its last bid_response (as our provider). */
  providerK?: number;
  /** A channel open failed (ledger unreachable): tick() tries again from this time. */
  retryOpenAt?: number;
  /** The provider could not check our channel on the ledger: tick() announces it again from this time. */
  reannounceAt?: number;
  /** As its provider, we asked the ledger for its balance (on its first bid). */
  fundsLookup?: boolean;
}

/** An already settled promise: the usual result of the payment paths (nothing to wait for). */
const DONE: Promise<void> = Promise.resolve();

/** Retry interval for ledger-dependent steps that failed (channel open, channel check by the provider). */
const LEDGER_RETRY_MS = 2_000;

/** Blocks held back per requester while it is at its unpaid-piece limit (interceptUploads). */
const MAX_HELD_BLOCKS = 256;

/** The promise a persist callback returned, if any (a synchronous persist returns anything else). */
function asPromise(x: unknown): Promise<unknown> | undefined {
  return x instanceof Promise ? x : undefined;
}

function defaultPeerId(wire: PeerWire): string {
  const h = wire.remoteAddress ?? '?';
  const host = h.startsWith('::ffff:') ? h.slice(7) : h;
  return host.includes(':') ? `[${host}]:${wire.remotePort}` : `${host}:${wire.remotePort}`;
}

/**
 * The UploadGate core consults on its hot paths (per piece sent, per block received). A class rather than an object of
 * closures made per agent: every agent's gate then has the same methods, so core's call sites stay monomorphic in a
 * process running many torrents (with new closures per torrent, V8 recompiled those paths for each one).
 */
class AgentUploadGate implements UploadGate {
  constructor(private readonly agent: SpeedAgent) {}
  mayUpload(peerKey: string, piece: number): boolean {
    return this.agent.mayUpload(peerKey, piece);
  }
  onBlockUploaded(peerKey: string, piece: number, bytes: number): void {
    this.agent.onBlockUploaded(peerKey, piece, bytes);
  }
  onBlockReceived(peerKey: string, piece: number, bytes: number): void {
    this.agent.onBlockReceived(peerKey, piece, bytes);
  }
  maxRequestPieces(peerKey: string, rate: number): number | undefined {
    return this.agent.maxRequestPieces(peerKey, rate);
  }
  uploadPriority(peerKey: string): Priority {
    return this.agent.uploadPriority(peerKey);
  }
}

export class SpeedAgent extends EventEmitter {
  readonly provider: ProviderPayments;
  readonly bidder: AutoBidder;
  private readonly peers = new Map<string, AgentPeer>();
  private balance = 0n;
  private closing = new Set<string>();
  /** Failed closes back off (1, 2, 4 … 60 s) instead of retrying (and warning) on every tick. */
  private readonly closeRetry = new Map<string, { at: number; failures: number }>();
  private readonly o: SpeedAgentOptions;
  private auction?: AuctionChoker;
  /** The newest asynchronous save of payment states (persist), true once durable; ACKs wait for it. */
  private lastSave?: Promise<boolean>;
  private readonly flushers = new Map<PeerWire, () => void>();
  /** Payments made to peers that have since disconnected. */
  private paidGone = 0n;
  /** The torrent this agent serves (attach()); gives peer keys, progress and resumeUploads(). */
  private torrent?: Torrent;
  private readonly wireIds = new WeakMap<PeerWire, string>();
  /** Every wire's Speed extension, Speed peer or not yet known (until the wire closes). */
  private readonly exts = new Map<PeerWire, SpeedWireExtension>();
  private detach?: () => void;
  /** uploadGate() was handed to a torrent: blocks received are charged through its onBlockReceived. */
  private blocksViaGate = false;

  constructor(o: SpeedAgentOptions) {
    super();
    this.o = o;
    this.provider = new ProviderPayments({ ...o.provider, maxUnpaid: o.provider?.maxUnpaid ?? defaultMaxUnpaid(o.pieceLength), ledgerId: o.ledgerId, publicKey: o.keys.publicKey });
    this.bidder = new AutoBidder({ now: o.now, settings: o.bidding });
  }

  /** Refresh the cached wallet balance from the ledger. */
  async refreshBalance(): Promise<bigint> {
    this.balance = (await this.o.ledger.account(this.o.keys.publicKey)).balance;
    return this.balance;
  }

  // ------------------------------------------------------------ wiring

  /**
   * Everything a torrent needs to run Speed, for Session.add(): `{ ...agent.torrentOptions(), torrent, path }`,
   * then `agent.attach(torrent)` on the Torrent it returns.
   */
  torrentOptions(legacy?: ChokerPolicy): Pick<AddTorrentOptions, 'extensions' | 'choker' | 'uploadGate'> {
    return { extensions: [this.extension()], choker: this.choker(legacy), uploadGate: this.uploadGate() };
  }

  /**
   * Requester side (core asks through the UploadGate object): from a provider that charges us, request whole
   * pieces, at most K + 1 at a time (K = its unpaid-piece limit). It serves nothing beyond K unpaid pieces, so
   * requests for more pieces would only sit in its queue while slower peers are asked for the blocks our current
   * piece still needs — delaying the piece, our payment, and so everything else it would send us. Within that, about
   * one second of what it sends us (at least 2 pieces): a slow provider with a large K would otherwise hold dozens of
   * our pieces that faster peers could have finished.
   */
  maxRequestPieces(peerKey: string, rate = 0): number | undefined {
    const p = this.peers.get(peerKey);
    if (!p?.req || p.req.currentPrice === 0n) return undefined;
    const bySpeed = Math.max(2, Math.ceil(rate / this.o.pieceLength) + 1);
    return Math.min((p.providerK ?? 1) + 1, bySpeed);
  }

  /**
   * The torrent's UploadGate: holds a Speed requester's requests while it is at its unpaid-piece limit (K). It is a
   * class instance whose methods live on its prototype: to wrap it, delegate or inherit (`Object.create`); a spread
   * (`{ ...gate }`) copies none of them.
   */
  uploadGate(): UploadGate {
    // Blocks received are then charged through the gate (one call from core's own block handler) instead of a second
    // 'piece' listener on every wire: on the download's hot path a second listener makes each emit copy its list.
    this.blocksViaGate = true;
    return new AgentUploadGate(this);
  }

  /** A block of `piece` arrived from this peer: counted toward what we owe it if it charges us (see uploadGate). */
  onBlockReceived(peerKey: string, piece: number, bytes: number): void {
    this.peers.get(peerKey)?.req?.onBlock(piece, bytes);
  }

  /** Paid slots go first under an upload limit ("prioritized access to seeds"); free slots keep NORMAL_SHARE. */
  uploadPriority(peerKey: string): Priority {
    const p = this.peers.get(peerKey);
    return p !== undefined && p.price > 0n ? PRIORITY_HIGH : PRIORITY_NORMAL;
  }

  /**
   * Bind to the torrent created with torrentOptions(): verified/failed pieces drive payments, peer keys come from
   * the torrent, held uploads resume when a payment lands. Returns a function that detaches.
   */
  attach(torrent: Torrent): () => void {
    this.detach?.();
    this.torrent = torrent;
    // Payments held back for batching are paid at completion by the HAVE hook (extension()), before that HAVE.
    const onPiece = (index: number) => void this.onPieceVerified(index);
    const onFail = (index: number, who: string[]) => this.onPieceFailed(index, who);
    // 'verified' comes right after the hash check, before the disk write, for every piece downloaded ('piece', after
    // the write, always follows it: listening there too only repeated a lookup per piece).
    torrent.on('verified', onPiece);
    torrent.on('hash-failure', onFail);
    this.detach = () => {
      torrent.off('verified', onPiece);
      torrent.off('hash-failure', onFail);
      if (this.torrent === torrent) this.torrent = undefined;
      this.detach = undefined;
    };
    return this.detach;
  }

  private remaining(): number | bigint {
    if (this.o.remainingBytes) return this.o.remainingBytes();
    const t = this.torrent;
    if (!t) return 0;
    const s = t.stats();
    return Math.max(0, s.wantedBytes - s.verifiedBytes);
  }

  /** The torrent's key for a wire ("host:port" as core's Peer.key), falling back to the socket address. */
  private idOf(wire: PeerWire): string {
    if (this.o.peerIdOf) return this.o.peerIdOf(wire);
    const cached = this.wireIds.get(wire);
    if (cached) return cached;
    const peer = this.torrent?.peerList().find((p) => p.wire === wire);
    if (peer) {
      this.wireIds.set(wire, peer.key);
      return peer.key;
    }
    return defaultPeerId(wire);
  }

  /** Held uploads to this peer may go now (a payment or channel landed). */
  private resume(p: AgentPeer): void {
    this.flushers.get(p.wire)?.();
    this.torrent?.resumeUploads(p.id);
  }

  extension(): WireExtensionFactory<SpeedWireExtension> {
    const base = speedWire({ ledgerId: this.o.ledgerId, publicKey: this.o.keys.publicKey, secretKey: this.o.keys.secretKey, reservePrice: () => this.o.reservePrice ?? 0n });
    return (wire: PeerWire) => {
      const ext = base(wire);
      this.exts.set(wire, ext);
      wire.once('close', () => this.exts.delete(wire));
      if (this.o.interceptUploads) {
        const send = wire.piece.bind(wire);
        const held: { index: number; begin: number; block: Buffer }[] = [];
        const flush = () => {
          const id = this.idOf(wire);
          while (held.length > 0 && !wire.destroyed && !wire.amChoking && this.mayUpload(id, held[0].index)) {
            const h = held.shift()!;
            send(h.index, h.begin, h.block);
            this.onBlockUploaded(id, h.index, h.block.length);
          }
          if (wire.amChoking) held.length = 0; // a choke discards pending requests (BEP 3)
        };
        (wire as { piece: PeerWire['piece'] }).piece = (index: number, begin: number, block: Buffer) => {
          const id = this.idOf(wire);
          if (held.length === 0 && this.mayUpload(id, index)) {
            send(index, begin, block);
            this.onBlockUploaded(id, index, block.length);
            return;
          }
          // Over the exposure limit: hold the block until the requester pays (bounded), else reject it.
          if (held.length < MAX_HELD_BLOCKS) held.push({ index, begin, block });
          else if (wire.supportsFast) wire.reject(index, begin, block.length);
        };
        wire.on('cancel', (index: number, begin: number) => {
          const i = held.findIndex((h) => h.index === index && h.begin === begin);
          if (i >= 0) held.splice(i, 1);
        });
        this.flushers.set(wire, flush);
        wire.once('close', () => this.flushers.delete(wire));
      }
      // Pay a provider for a verified piece BEFORE the engine tells it HAVE: a provider that sees us become a seed
      // drops the connection at once, and a payment queued behind that HAVE would never be read.
      const have = wire.have.bind(wire);
      (wire as { have: PeerWire['have'] }).have = (index: number) => {
        const p = this.byWire(wire);
        if (p) {
          void this.payFor(p, index);
          // The last piece: pay what was held back to be paid together now, before the HAVE that makes us a seed.
          if (this.torrent?.isDownloadComplete()) void this.payResult(p, p.req?.flushDue());
        }
        have(index);
      };
      wire.on('speed-ready', (pk: Buffer) => this.onReady(wire, ext, pk));
      wire.on('speed-legacy', (reason: string) => this.emit('legacy', this.idOf(wire), reason));
      wire.on('speed-message', (m: SpeedMessage) => {
        const p = this.byWire(wire);
        if (p) this.onMessage(p, m);
      });
      if (!this.blocksViaGate) wire.on('piece', (index: number, _begin: number, block: Buffer) => this.byWire(wire)?.req?.onBlock(index, block.length));
      wire.on('choke', () => {
        const p = this.byWire(wire);
        if (!p?.req) return;
        p.req.onChoke();
        // It stops serving us: pay now for what we verified and held back (setProviderLimit).
        void this.payResult(p, p.req.flushDue());
      });
      wire.on('have', (index: number) => {
        const p = this.byWire(wire);
        if (p?.providerKey) this.provider.onHave(p.providerKey, index, this.o.now());
      });
      wire.on('close', () => {
        const p = this.byWire(wire);
        if (!p) return;
        if (p.providerKey) this.provider.disconnect(p.providerKey, this.o.now());
        this.paidGone += p.req?.paid ?? 0n;
        this.peers.delete(p.id);
      });
      return ext;
    };
  }

  /** The auction as the torrent's choker policy (legacy part: core's StandardChoker unless given). */
  choker(legacy: ChokerPolicy = new StandardChoker({ rng: this.o.rng })): ChokerPolicy {
    this.auction = new AuctionChoker({
      legacy,
      rng: this.o.rng,
      reservePrice: () => this.o.reservePrice ?? 0n,
      bidOf: (id) => {
        const p = this.peers.get(id);
        if (!p?.providerKey || p.ext.peerBid === 0n) return undefined;
        // Eligible while it has a channel, or funds on the ledger, or we do not know yet (the lookup is on its way).
        return { bid: p.ext.peerBid, funded: this.provider.mayFund(p.providerKey) !== false, banned: this.provider.isBanned(p.providerKey, this.o.now()) };
      },
      onResult: (r) => this.onAuction(r),
      // A peer that speaks Speed (its handshake came) but has not bid yet: its BID follows its `interested` by about
      // a round trip. Unchoked at once into a free slot it would download free until that bid is auctioned.
      admitAtOnce: (id) => {
        for (const [wire, ext] of this.exts) {
          if (this.idOf(wire) === id) return !(ext.peerHandshake !== undefined && ext.state !== 'legacy' && ext.peerBid === 0n);
        }
        return true;
      },
    });
    return this.auction;
  }

  private byWire(wire: PeerWire): AgentPeer | undefined {
    const p = this.peers.get(this.idOf(wire));
    return p && p.wire === wire ? p : undefined;
  }

  private onReady(wire: PeerWire, ext: SpeedWireExtension, pk: Buffer): void {
    const id = this.idOf(wire);
    const now = this.o.now();
    const providerKey = this.provider.connect(pk, now);
    if (providerKey === undefined) {
      ext.send({ type: 'error', code: SpeedErrorCode.BANNED, text: 'banned' });
      wire.destroy();
      return;
    }
    const p: AgentPeer = {
      id, wire, ext, pk, providerKey,
      req: new RequesterPayments({ ledgerId: this.o.ledgerId, publicKey: this.o.keys.publicKey, secretKey: this.o.keys.secretKey, providerKey: pk }),
      pendingPayments: [],
      price: 0n,
    };
    this.peers.set(id, p);
    const ack = this.provider.resyncAck(providerKey);
    if (ack) ext.send(ack);
    if (this.bidder.bid > 0n) ext.sendBid(this.bidder.bid);
  }

  // ------------------------------------------------------------ provider side

  private onAuction(r: AuctionResult): void {
    for (const p of this.peers.values()) {
      if (!p.providerKey) continue;
      const price = r.winners.get(p.id);
      if (price === undefined) {
        if (p.price !== 0n) {
          // No longer a winner. If a free (tit-for-tat/optimistic) slot keeps it unchoked, no CHOKE will reset its
          // price, so say explicitly that data is free from here on.
          p.price = 0n;
          this.provider.setPrice(p.providerKey, 0n);
          if (p.ext.peerBidSeq > 0n) p.ext.send({ type: 'bid_response', seq: p.ext.peerBidSeq, price: 0n, maxUnpaid: this.provider.maxUnpaid, minTtl: this.provider.minTtlSeconds });
        }
        continue;
      }
      if (price !== p.price || p.ext.peerBidSeq === 0n) {
        // BID_RESPONSE goes out now, before the session applies the unchoke.
        p.ext.send({ type: 'bid_response', seq: p.ext.peerBidSeq, price, maxUnpaid: this.provider.maxUnpaid, minTtl: this.provider.minTtlSeconds });
        p.price = price;
        this.provider.setPrice(p.providerKey, price);
        this.emit('won', p.id, price);
      }
    }
  }

  /** May we send a block of `piece` to this peer now? Legacy peers: always. */
  mayUpload(peerId: string, piece: number): boolean {
    const p = this.peers.get(peerId);
    if (!p?.providerKey) return true;
    const d = this.provider.canServe(p.providerKey, piece, this.o.now());
    return d.ok;
  }

  onBlockUploaded(peerId: string, piece: number, bytes: number): void {
    const p = this.peers.get(peerId);
    if (p?.providerKey) this.provider.onBlockSent(p.providerKey, piece, bytes, this.o.now());
  }

  /**
   * As provider, on a requester's first bid: read its balance on the ledger, so it can be served up to K pieces while
   * it opens its first channel (ProviderPayments.canServe), and be left out of the auction if it has nothing. A failed
   * lookup changes nothing: it is served once its channel is checked, as before.
   */
  private async lookupFunds(p: AgentPeer): Promise<void> {
    p.fundsLookup = true;
    let balance: bigint;
    try {
      balance = (await this.o.ledger.account(p.pk!)).balance;
    } catch {
      return;
    }
    if (this.peers.get(p.id) !== p) return;
    this.provider.onRequesterFunds(p.providerKey!, balance);
    if (balance > 0n) this.resume(p);
    else this.torrent?.requestRechoke(true);
  }

  private async onChannel(p: AgentPeer, channelId: Buffer): Promise<void> {
    const key = p.providerKey!;
    const r = this.provider.onChannelAnnounced(key, channelId);
    if (r === 'foreign') {
      p.ext.send({ type: 'error', code: SpeedErrorCode.CHANNEL_INVALID, text: 'channel belongs to another peer' });
      return;
    }
    if (r === 'fetch') {
      let info: ChannelInfo | undefined;
      try {
        info = await this.o.ledger.channel(channelId);
      } catch (e) {
        p.ext.send({ type: 'error', code: SpeedErrorCode.LEDGER_UNAVAILABLE, text: 'ledger unreachable' });
        this.provider.onLedgerWait(key, this.o.now());
        this.emit('warning', `ledger unreachable while checking a channel: ${(e as Error).message}`);
        return;
      }
      if (!info) {
        p.ext.send({ type: 'error', code: SpeedErrorCode.CHANNEL_INVALID, text: 'no such channel' });
        return;
      }
      const ok = this.provider.onChannelInfo(key, info, this.o.now());
      if (!ok.ok) {
        p.ext.send({ type: 'error', code: ok.code, text: ok.reason });
        return;
      }
    }
    const queued = p.pendingPayments.splice(0);
    for (const m of queued) this.onPayment(p, m);
    this.resume(p);
  }

  private onPayment(p: AgentPeer, m: PaymentMessage): void {
    const r = this.provider.onPayment(p.providerKey!, m, this.o.now());
    if (!r.ok) {
      if (r.pending) {
        if (p.pendingPayments.length < 64) p.pendingPayments.push(m);
        return;
      }
      p.ext.send({ type: 'error', code: r.code, text: r.reason });
      return;
    }
    const ack = r.ack;
    const saving = r.delta > 0n ? asPromise(this.o.persist?.(this.provider.exportChannels())) : undefined;
    if (r.delta > 0n) this.emit('earned', p.id, r.delta);
    if (saving) {
      const saved = saving.then(
        () => true,
        (e: Error) => {
          this.emit('warning', `payment state from ${p.id} not saved (${e.message}): not acknowledged`);
          return false;
        },
      );
      this.lastSave = saved;
      // ACKs are cumulative: when a group commit covered several payments, only the newest one's ACK goes out.
      p.latestAck = ack;
      void saved.then((ok) => {
        if (this.lastSave === saved) this.lastSave = undefined;
        if (ok && p.latestAck === ack) {
          p.latestAck = undefined;
          p.ext.send(ack);
        }
      });
    } else if (this.lastSave) {
      // A duplicate of a state whose save is still under way: ACK it only once that save has landed.
      void this.lastSave.then((ok) => ok && p.ext.send(ack));
    } else p.ext.send(ack);
    this.resume(p);
  }

  // ------------------------------------------------------------ requester side

  private async openChannel(p: AgentPeer): Promise<void> {
    if (p.opening) return p.opening;
    const req = p.req!;
    p.opening = (async () => {
      try {
        const budget = await this.refreshBalance();
        const price = req.currentPrice > 0n ? req.currentPrice : 1n;
        let deposit: bigint;
        if (this.o.depositPieces !== undefined) deposit = suggestDeposit(price, this.o.pieceLength, this.o.depositPieces, req.pendingAmount, budget);
        else {
          // Enough for the rest of the download at this price (at least 32 pieces): every new channel costs a ledger
          // round trip on each side while the provider waits at its unpaid limit. At most half the balance while
          // that covers what is already owed, so other providers can be paid too.
          const left = Math.max(0, Number(this.remaining()));
          const pieces = Math.max(32, Math.ceil(left / this.o.pieceLength));
          const cap = budget / 2n >= req.pendingAmount ? budget / 2n : budget;
          deposit = suggestDeposit(price, this.o.pieceLength, pieces, req.pendingAmount, cap);
        }
        if (deposit <= 0n || deposit < req.pendingAmount) {
          this.emit('warning', `cannot fund a channel to ${p.id}: balance ${budget}, needed ${req.pendingAmount}`);
          return;
        }
        const expiresAt = this.o.now() + (this.o.channelTtlMs ?? 2 * 3_600_000);
        const r = await this.o.ledger.openChannel({ requesterKeys: this.o.keys, provider: p.pk!, deposit, expiresAt });
        this.balance -= deposit;
        p.retryOpenAt = undefined;
        this.emit('channel-opened', p.id, r.channelId, deposit);
        const { announce, payments } = req.onChannelOpened({ id: r.channelId, deposit, expiresAt });
        p.ext.send(announce);
        for (const m of payments) this.sendPayment(p, m);
      } catch (e) {
        p.retryOpenAt = this.o.now() + LEDGER_RETRY_MS;
        p.ext.send({ type: 'error', code: SpeedErrorCode.LEDGER_UNAVAILABLE, text: 'waiting for the ledger to open a channel' });
        this.emit('warning', `opening a channel to ${p.id} failed (will retry): ${(e as Error).message}`);
      } finally {
        p.opening = undefined;
      }
    })();
    return p.opening;
  }

  private sendPayment(p: AgentPeer, m: PaymentMessage): void {
    p.ext.send(m);
    // At the end of the download push the payment to the socket now: the engine may destroy() the wire in this same
    // tick (both sides seeds), and destroy() drops writes still corked for the next tick. Mid-download it goes out
    // with the tick's other writes (a write call per payment costs more than the payment).
    if (!this.torrent || this.torrent.isDownloadComplete()) (p.wire as unknown as { uncork?: () => void }).uncork?.();
    this.emit('paid', p.id, m.piece, m.amount);
  }

  /** A piece passed its hash check: pay every Speed provider that charged for bytes of it (idempotent). */
  onPieceVerified(piece: number): Promise<void> {
    // Called for every piece downloaded, on the hot path: no allocation when there is nothing to wait for.
    let opening: Promise<void>[] | undefined;
    for (const p of this.peers.values()) {
      if (!p.req) continue;
      const r = this.payFor(p, piece);
      if (r !== DONE) (opening ??= []).push(r);
    }
    return opening ? Promise.all(opening).then(() => undefined) : DONE;
  }

  private payFor(p: AgentPeer, piece: number): Promise<void> {
    return this.payResult(p, p.req?.onPieceVerified(piece));
  }

  /** Pay every provider now for verified pieces held back to be paid together (setProviderLimit). */
  private flushDuePayments(): Promise<void> {
    return Promise.all([...this.peers.values()].map((p) => this.payResult(p, p.req?.flushDue()))).then(() => undefined);
  }

  private payResult(p: AgentPeer, r: PayResult | undefined): Promise<void> {
    if (!r || r.type === 'nothing' || r.type === 'deferred') return DONE;
    if (r.type === 'payment') {
      this.sendPayment(p, r.message);
      return DONE;
    }
    return this.openChannel(p);
  }

  /** A piece failed its hash check with bytes from `peerIds`: pay nothing, reject, ban repeat offenders. */
  onPieceFailed(piece: number, peerIds: string[]): void {
    for (const id of peerIds) {
      const p = this.peers.get(id);
      if (!p?.req) continue;
      const r = p.req.onPieceFailed(piece);
      if (r.reject) p.ext.send(r.reject);
      if (r.ban) {
        this.emit('ban-peer', id, 'sent data that failed its hash check repeatedly');
        p.wire.destroy();
      }
    }
  }

  private onMessage(p: AgentPeer, m: SpeedMessage): void {
    switch (m.type) {
      case 'bid':
        // The extension keeps the latest bid; the auction reads it when the choker runs. From an interested peer it can
        // change who is unchoked or at what price: at once (core spaces urgent rechokes 20 ms apart). Until its first bid
        // a Speed peer is not admitted into a free slot (admitAtOnce), so that bid is what gets it unchoked, priced.
        this.torrent?.requestRechoke(p.wire.peerInterested);
        if (!p.fundsLookup && p.providerKey && p.pk) void this.lookupFunds(p);
        break;
      case 'channel':
        void this.onChannel(p, Buffer.from(m.channel));
        break;
      case 'payment':
        this.onPayment(p, m);
        break;
      case 'reject':
        for (const a of this.provider.onReject(p.providerKey!, m.piece, this.o.now())) this.apply(a);
        break;
      case 'bid_response': {
        const r = p.req!.onBidResponse(m.price, p.ext.bidPrice(m.seq));
        p.providerK = m.maxUnpaid;
        p.req!.setProviderLimit(m.maxUnpaid);
        if (!r.ok) {
          p.ext.send({ type: 'error', code: r.code, text: r.reason });
          break;
        }
        if (p.req!.channelRemaining < m.price * BigInt(this.o.pieceLength)) void this.openChannel(p);
        break;
      }
      case 'ack': {
        const r = p.req!.onAck(m);
        if (r.resend) p.ext.send(r.resend);
        if (r.error) this.emit('warning', `${p.id}: ${r.error}`);
        break;
      }
      case 'error':
        // The provider could not reach the ledger to check our channel: announce it again later.
        if (m.code === SpeedErrorCode.LEDGER_UNAVAILABLE && p.req?.channelId) p.reannounceAt = this.o.now() + LEDGER_RETRY_MS;
        if (m.code === SpeedErrorCode.LEDGER_UNAVAILABLE && p.providerKey) this.provider.onLedgerWait(p.providerKey, this.o.now());
        this.emit('warning', `${p.id} says: ${m.text ?? `error ${m.code}`}`);
        break;
    }
  }

  // ------------------------------------------------------------ time

  /** Call every second or so. Returns when ledger closes started by this tick have finished. */
  async tick(): Promise<void> {
    const now = this.o.now();
    let spent = 0n, escrow = 0n;
    for (const p of this.peers.values()) {
      if (!p.req) continue;
      spent += p.req.paid;
      escrow += p.req.channelRemaining;
    }
    const u = this.bidder.poll({ balance: this.balance + escrow, remainingBytes: this.remaining(), spent });
    if (u) {
      for (const p of this.peers.values()) p.ext.sendBid(u.price);
      this.emit('bid', u.price, u.reason);
    }
    // Ledger-dependent steps that failed: nothing else retries them once the provider stops serving us at its
    // unpaid-piece limit, so the transfer would stall for good after a ledger outage.
    for (const p of this.peers.values()) {
      const r = p.req;
      const needChannel = r && (r.pendingAmount > 0n || (r.currentPrice > 0n && r.channelRemaining < r.currentPrice * BigInt(this.o.pieceLength)));
      if (p.retryOpenAt !== undefined && now >= p.retryOpenAt && !p.opening && needChannel) void this.openChannel(p);
      if (p.reannounceAt !== undefined && now >= p.reannounceAt) {
        p.reannounceAt = undefined;
        const id = p.req?.channelId;
        if (id) p.ext.send({ type: 'channel', channel: id });
      }
    }
    await Promise.all([this.flushDuePayments(), ...this.provider.tick(now).map((a) => this.apply(a))]);
    for (const f of this.flushers.values()) f();
  }

  /** Save after a channel left our books (no ACK waits on it; a failure is only reported). */
  private async persistQuietly(): Promise<void> {
    try {
      await asPromise(this.o.persist?.(this.provider.exportChannels()));
    } catch (e) {
      this.emit('warning', `channel states not saved: ${(e as Error).message}`);
    }
  }

  private async apply(a: ProviderAction, force = false): Promise<void> {
    const peer = [...this.peers.values()].find((p) => p.providerKey === a.requester);
    if (a.type === 'choke') {
      peer?.ext.send({ type: 'error', code: SpeedErrorCode.PAYMENT_OVERDUE, text: a.reason });
      this.emit('choke-peer', peer?.id ?? a.requester, a.reason);
      return;
    }
    if (a.type === 'ban') {
      peer?.ext.send({ type: 'error', code: SpeedErrorCode.BANNED, text: a.reason });
      this.emit('ban-peer', peer?.id ?? a.requester, a.reason);
      peer?.wire.destroy();
      return;
    }
    if (a.type === 'abandon') return;
    const id = a.channelId.toString('hex');
    if (this.closing.has(id)) return;
    const retry = this.closeRetry.get(id);
    if (retry && !force && this.o.now() < retry.at) return;
    this.closing.add(id);
    try {
      await this.o.ledger.closeChannel({ providerKeys: this.o.keys, state: a.state, signature: a.sig });
      this.closeRetry.delete(id);
      this.provider.onChannelClosed(a.channelId);
      await this.persistQuietly();
      this.emit('channel-closed', a.channelId, a.state.cumulative);
    } catch (e) {
      // Refused because the channel is no longer open (our earlier close landed but we crashed before recording it,
      // or its reply was lost) or has expired: retrying can never succeed, so settle our books from the ledger.
      const code = (e as { code?: unknown }).code;
      const info = code === 'channel_not_open' || code === 'channel_expired' ? await this.o.ledger.channel(a.channelId).catch(() => undefined) : undefined;
      if (info && (info.status !== 'open' || code === 'channel_expired')) {
        this.closeRetry.delete(id);
        this.provider.onChannelClosed(a.channelId);
        await this.persistQuietly();
        if (info.status === 'closed' && info.settled >= a.state.cumulative) this.emit('channel-closed', a.channelId, info.settled);
        else this.emit('warning', `channel ${id.slice(0, 16)}… is ${code === 'channel_expired' ? 'expired' : info.status} on the ledger: settled ${info.settled} of the ${a.state.cumulative} we held`);
        return;
      }
      this.provider.onCloseFailed(a.channelId);
      const failures = (retry?.failures ?? 0) + 1;
      const waitMs = Math.min(60_000, 1000 * 2 ** (failures - 1));
      this.closeRetry.set(id, { at: this.o.now() + waitMs, failures });
      this.emit('warning', `closing channel ${id.slice(0, 16)}… failed (retry in ${waitMs / 1000} s): ${(e as Error).message}`);
    } finally {
      this.closing.delete(id);
    }
  }

  /** Close every channel we hold a payment on (transfer finished / shutting down). */
  async shutdown(): Promise<void> {
    await Promise.all(this.provider.closeAll().map((a) => this.apply(a, true)));
  }

  /** Total this agent has signed over to providers (as a requester), across peers and channels. */
  totalPaid(): bigint {
    let s = 0n;
    for (const p of this.peers.values()) s += p.req?.paid ?? 0n;
    return s + this.paidGone;
  }
  /** True while a channel open is in flight. */
  busy(): boolean {
    for (const p of this.peers.values()) if (p.opening) return true;
    return false;
  }

  /** Speed peers by choker id (UI / tests). */
  peerIds(): string[] {
    return [...this.peers.keys()];
  }
  requesterState(peerId: string): RequesterPayments | undefined {
    return this.peers.get(peerId)?.req;
  }
}
