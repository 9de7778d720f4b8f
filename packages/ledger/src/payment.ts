/**
 * Payment states of a unidirectional channel (requester → provider), shared by the ledger (which settles the final
 * state on close) and by BitTorrent Speed providers (which check each state on receipt).
 *
 * Signed layout (76 + tag bytes): "bitorrent/payment-state/v1\0" ‖ ledgerId[32] ‖ channelId[32] ‖ sequence u64 BE ‖
 * cumulative u128 BE. `cumulative` is the total paid on the channel so far, so a provider only ever needs the latest.
 */
import { Writer, Reader, tag } from './codec.js';
import { sign, verify } from './keys.js';

export const PAYMENT_STATE_TAG = tag('bitorrent/payment-state/v1');

export interface PaymentState {
  ledgerId: Buffer;
  channelId: Buffer;
  sequence: bigint;
  cumulative: bigint;
}

export type ChannelStatus = 'open' | 'closed' | 'expired';

/** Everything a provider needs to decide whether to trust payments on a channel. */
export interface ChannelInfo {
  id: Buffer;
  ledgerId: Buffer;
  requester: Buffer;
  provider: Buffer;
  /** Escrowed amount (base units), including top-ups. */
  deposit: bigint;
  /** Expiry, ms since the Unix epoch (ledger clock). At or after it, the ledger refunds the deposit to the requester. */
  expiresAt: number;
  status: ChannelStatus;
  /** Ledger time the channel was opened (ms). */
  openedAt: number;
  /** Journal sequence number of the open operation. */
  openSeq: number;
  /** Amount paid to the provider on close (0 while open, 0 when expired). */
  settled: bigint;
  /** Sequence of the payment state used to close, if closed. */
  closedSequence?: bigint;
  /** Journal sequence of the close/expiry, if any. */
  closeSeq?: number;
}

export function encodePaymentState(s: PaymentState): Buffer {
  return new Writer()
    .bytes(PAYMENT_STATE_TAG)
    .bytes(s.ledgerId, 32)
    .bytes(s.channelId, 32)
    .u64(s.sequence)
    .u128(s.cumulative)
    .done();
}

export function decodePaymentState(b: Buffer): PaymentState {
  const r = new Reader(b);
  if (!r.bytes(PAYMENT_STATE_TAG.length).equals(PAYMENT_STATE_TAG)) throw new RangeError('not a payment state');
  const s = { ledgerId: Buffer.from(r.bytes(32)), channelId: Buffer.from(r.bytes(32)), sequence: r.u64(), cumulative: r.u128() };
  r.end();
  return s;
}

export function signPaymentState(s: PaymentState, secretKey: Buffer): Buffer {
  return sign(encodePaymentState(s), secretKey);
}

export function verifyPaymentStateSignature(s: PaymentState, sig: Buffer, publicKey: Buffer): boolean {
  let msg: Buffer;
  try {
    msg = encodePaymentState(s);
  } catch {
    return false;
  }
  return verify(msg, sig, publicKey);
}

export type CheckResult = { ok: true } | { ok: false; reason: string };

/**
 * Provider-side check of a payment state received on `channel`: right ledger and channel, signed by the requester,
 * channel open and not expired at `now` (ms), sequence and cumulative strictly above `last` (the last accepted state),
 * cumulative ≤ deposit. Does not check the price; compare `s.cumulative - last.cumulative` to what is owed.
 */
export function checkPaymentState(
  channel: ChannelInfo,
  last: { sequence: bigint; cumulative: bigint } | undefined,
  s: PaymentState,
  sig: Buffer,
  now: number,
): CheckResult {
  if (!Buffer.isBuffer(s.ledgerId) || !s.ledgerId.equals(channel.ledgerId)) return { ok: false, reason: 'wrong ledger id' };
  if (!Buffer.isBuffer(s.channelId) || !s.channelId.equals(channel.id)) return { ok: false, reason: 'wrong channel id' };
  if (channel.status !== 'open') return { ok: false, reason: `channel is ${channel.status}` };
  if (now >= channel.expiresAt) return { ok: false, reason: 'channel expired' };
  if (typeof s.sequence !== 'bigint' || typeof s.cumulative !== 'bigint') return { ok: false, reason: 'malformed state' };
  if (s.cumulative < 0n || s.sequence < 0n) return { ok: false, reason: 'negative value' };
  if (s.cumulative > channel.deposit) return { ok: false, reason: 'cumulative amount exceeds deposit' };
  if (last) {
    if (s.sequence <= last.sequence) return { ok: false, reason: 'sequence not increasing' };
    if (s.cumulative <= last.cumulative) return { ok: false, reason: 'cumulative amount not increasing' };
  } else if (s.sequence < 1n) {
    return { ok: false, reason: 'sequence must start at 1' };
  }
  if (!verifyPaymentStateSignature(s, sig, channel.requester)) return { ok: false, reason: 'bad signature' };
  return { ok: true };
}
