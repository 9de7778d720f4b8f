/**
 * The `bt_speed` BEP 10 extension on core's `wire.use()` hook: handshake fields, the AUTH key-ownership proof,
 * and typed send/receive of every Speed message (docs/speed-protocol.md). Policy lives elsewhere: the torrent-level
 * Speed agent listens to the events below and drives the auction, bidder and payment state machines.
 *
 * Events emitted on the wire:
 *   'speed-ready'   (peerKey: Buffer)          both handshakes seen and the peer's AUTH verified
 *   'speed-legacy'  (reason: string)           the peer does not speak Speed (or failed AUTH / other ledger)
 *   'speed-message' (m: SpeedMessage)          any message after AUTH (bid, bid_response, channel, payment, ...)
 *   'speed-error'   (err: SpeedMessageError)   a malformed message from the peer (answered with ERROR malformed)
 *
 * Malformed Speed input never closes the BitTorrent connection: the peer gets an ERROR and, at worst, is served
 * as a legacy peer.
 */
import { randomBytes } from 'node:crypto';
import type { BencodeDict, PeerWire, WireExtension, WireExtensionFactory } from '@bitorrent/core';
import { sign, verify } from '@bitorrent/ledger';
import {
  SPEED_EXTENSION_NAME,
  SPEED_PROTOCOL_VERSION,
  SpeedErrorCode,
  SpeedMessageError,
  authPayload,
  decodeSpeedMessage,
  encodeSpeedHandshake,
  encodeSpeedMessage,
  parseSpeedHandshake,
  type SpeedHandshake,
  type SpeedMessage,
} from './messages.js';

export interface SpeedWireOptions {
  ledgerId: Buffer;
  /** Our wallet key pair (Ed25519; 64-byte libsodium-form secret key). */
  publicKey: Buffer;
  secretKey: Buffer;
  /** Our reserve price as a provider (advertised in the handshake). */
  reservePrice?: () => bigint;
  /** Nonce source (tests); default crypto.randomBytes(32). */
  nonce?: () => Buffer;
}

export type SpeedPeerState = 'pending' | 'ready' | 'legacy';

export interface SpeedWireExtension extends WireExtension {
  readonly state: SpeedPeerState;
  /** The peer's Speed handshake fields (once received). */
  readonly peerHandshake: SpeedHandshake | undefined;
  /** The peer's wallet key, once its AUTH verified. */
  readonly peerKey: Buffer | undefined;
  /** Why the peer is legacy, when it is. */
  readonly legacyReason: string | undefined;
  /** Send a message (only once ready; AUTH is automatic). False if not ready or the wire is closed. */
  send(m: SpeedMessage): boolean;
  /** Send a BID with the next sequence number; returns that seq (undefined if not sent). */
  sendBid(price: bigint): bigint | undefined;
  /** The price of our BID `seq` (to check a BID_RESPONSE against). */
  bidPrice(seq: bigint): bigint | undefined;
  /** The peer's latest bid (provider side), 0 when none/withdrawn. */
  readonly peerBid: bigint;
  readonly peerBidSeq: bigint;
}

/** Remember the last few of our bids so a late BID_RESPONSE can be checked against the bid it answers. */
const BID_HISTORY = 8;

class SpeedWire implements SpeedWireExtension {
  readonly name = SPEED_EXTENSION_NAME;
  state: SpeedPeerState = 'pending';
  peerHandshake: SpeedHandshake | undefined;
  peerKey: Buffer | undefined;
  legacyReason: string | undefined;
  peerBid = 0n;
  peerBidSeq = 0n;
  private readonly nonce: Buffer;
  private authSent = false;
  private bidSeq = 0n;
  private readonly bids = new Map<bigint, bigint>();

  constructor(
    private readonly wire: PeerWire,
    private readonly o: SpeedWireOptions,
  ) {
    this.nonce = (o.nonce ?? (() => randomBytes(32)))();
    if (this.nonce.length !== 32) throw new RangeError('speed: nonce must be 32 bytes');
    if (o.ledgerId.length !== 32 || o.publicKey.length !== 32 || o.secretKey.length !== 64) throw new RangeError('speed: bad ledger id or key sizes');
  }

  extendHandshake(dict: Record<string, unknown>): void {
    dict[SPEED_EXTENSION_NAME] = encodeSpeedHandshake({
      v: SPEED_PROTOCOL_VERSION,
      ledger: this.o.ledgerId,
      pk: this.o.publicKey,
      nonce: this.nonce,
      reserve: this.o.reservePrice?.() ?? 0n,
    });
  }

  onExtendedHandshake(dict: BencodeDict): void {
    if (this.state !== 'pending' || this.peerHandshake) return; // a re-sent handshake changes nothing
    let h: SpeedHandshake | undefined;
    try {
      h = parseSpeedHandshake(dict);
    } catch (e) {
      this.toLegacy(`malformed bt_speed handshake: ${(e as Error).message}`, SpeedErrorCode.MALFORMED);
      return;
    }
    if (!h) {
      this.toLegacy('peer does not advertise bt_speed');
      return;
    }
    this.peerHandshake = h;
    if (!Buffer.from(h.ledger).equals(this.o.ledgerId)) {
      this.toLegacy('peer is on another ledger', SpeedErrorCode.WRONG_LEDGER);
      return;
    }
    if (Buffer.from(h.pk).equals(this.o.publicKey)) {
      this.toLegacy('peer uses our own wallet key', SpeedErrorCode.AUTH_FAILED);
      return;
    }
    const infoHash = this.wire.infoHash;
    if (!infoHash) {
      this.toLegacy('no info-hash on the wire');
      return;
    }
    const payload = authPayload({ infoHash, ledger: this.o.ledgerId, signerPk: this.o.publicKey, verifierPk: h.pk, verifierNonce: h.nonce, signerNonce: this.nonce });
    this.authSent = this.raw({ type: 'auth', sig: sign(payload, this.o.secretKey) });
  }

  onMessage(payload: Buffer): void {
    if (this.state === 'legacy') return;
    let m: SpeedMessage;
    try {
      m = decodeSpeedMessage(payload);
    } catch (e) {
      if (e instanceof SpeedMessageError) {
        if (e.kind === 'unknown_type') return; // forward compatibility
        this.wire.emit('speed-error', e);
        this.raw({ type: 'error', code: SpeedErrorCode.MALFORMED, text: e.message });
        return;
      }
      throw e;
    }
    if (m.type === 'error') {
      // The peer could not authenticate us (or we it): neither side treats the other as a Speed peer.
      if (m.code === SpeedErrorCode.AUTH_FAILED || m.code === SpeedErrorCode.WRONG_LEDGER || m.code === SpeedErrorCode.UNSUPPORTED_VERSION) {
        this.toLegacy(`peer says: ${m.text ?? `error ${m.code}`}`);
      } else if (this.state === 'ready') {
        this.wire.emit('speed-message', m);
      }
      return;
    }
    if (m.type === 'auth') {
      this.onAuth(m.sig as Buffer);
      return;
    }
    if (this.state !== 'ready') {
      this.raw({ type: 'error', code: SpeedErrorCode.AUTH_FAILED, text: `${m.type} before AUTH` });
      return;
    }
    if (m.type === 'bid') {
      if (m.seq <= this.peerBidSeq) {
        this.raw({ type: 'error', code: SpeedErrorCode.MALFORMED, text: 'bid seq not increasing' });
        return;
      }
      this.peerBidSeq = m.seq;
      this.peerBid = m.price;
    }
    this.wire.emit('speed-message', m);
  }

  private onAuth(sig: Buffer): void {
    if (this.state !== 'pending') return;
    const h = this.peerHandshake;
    const infoHash = this.wire.infoHash;
    if (!h || !infoHash) {
      this.toLegacy('AUTH before the bt_speed handshake', SpeedErrorCode.AUTH_FAILED);
      return;
    }
    const payload = authPayload({ infoHash, ledger: this.o.ledgerId, signerPk: h.pk, verifierPk: this.o.publicKey, verifierNonce: this.nonce, signerNonce: h.nonce });
    if (!verify(payload, sig, Buffer.from(h.pk))) {
      this.toLegacy('AUTH signature invalid', SpeedErrorCode.AUTH_FAILED);
      return;
    }
    if (!this.authSent) {
      this.toLegacy('could not send our AUTH');
      return;
    }
    this.peerKey = Buffer.from(h.pk);
    this.state = 'ready';
    this.wire.emit('speed-ready', this.peerKey);
  }

  private toLegacy(reason: string, code?: number): void {
    if (this.state === 'legacy') return;
    this.state = 'legacy';
    this.legacyReason = reason;
    if (code !== undefined) this.raw({ type: 'error', code, text: reason });
    this.wire.emit('speed-legacy', reason);
  }

  private raw(m: SpeedMessage): boolean {
    if (this.wire.destroyed || !this.wire.extensionSupported(SPEED_EXTENSION_NAME)) return false;
    return this.wire.sendExtended(SPEED_EXTENSION_NAME, encodeSpeedMessage(m));
  }

  send(m: SpeedMessage): boolean {
    if (this.state !== 'ready') return false;
    if (m.type === 'auth') throw new Error('speed: AUTH is sent automatically');
    return this.raw(m);
  }

  sendBid(price: bigint): bigint | undefined {
    if (this.state !== 'ready') return undefined;
    const seq = this.bidSeq + 1n;
    if (!this.raw({ type: 'bid', seq, price })) return undefined;
    this.bidSeq = seq;
    this.bids.set(seq, price);
    if (this.bids.size > BID_HISTORY) this.bids.delete(this.bids.keys().next().value as bigint);
    return seq;
  }

  bidPrice(seq: bigint): bigint | undefined {
    return this.bids.get(seq);
  }

  onClose(): void {
    this.bids.clear();
  }
}

/** Install with `wire.use(speedWire(opts))` (via the session's `extensions` option). */
export function speedWire(opts: SpeedWireOptions): WireExtensionFactory<SpeedWireExtension> {
  return (wire: PeerWire) => new SpeedWire(wire, opts);
}
