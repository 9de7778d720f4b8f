/** JSON shapes of the HTTP API: bytes as lowercase hex, amounts as decimal strings of base units. */
import { fromHex } from './codec.js';
import type { ChannelInfo } from './payment.js';
import type { AccountInfo, HistoryEntry, LedgerInfo, OpResult } from './api.js';

type J = Record<string, unknown>;
const hex = (b: Buffer) => b.toString('hex');

export function ledgerInfoToJson(i: LedgerInfo): J {
  return {
    ledgerId: hex(i.ledgerId),
    ledgerPublicKey: hex(i.ledgerPublicKey),
    supply: i.supply.toString(),
    escrow: i.escrow.toString(),
    openChannels: i.openChannels,
    height: i.height,
    time: i.time,
    faucet: { account: hex(i.faucet.account), amount: i.faucet.amount.toString(), difficulty: i.faucet.difficulty },
    maxChannelMs: i.maxChannelMs,
  };
}

function obj(v: unknown, what: string): J {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TypeError(`${what}: expected an object`);
  return v as J;
}
function big(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^\d{1,40}$/.test(v)) throw new TypeError(`${what}: expected a decimal string`);
  return BigInt(v);
}
function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new TypeError(`${what}: expected an integer`);
  return v;
}

export function ledgerInfoFromJson(v: unknown): LedgerInfo {
  const o = obj(v, 'info');
  const f = obj(o.faucet, 'faucet');
  return {
    ledgerId: fromHex(o.ledgerId, 32, 'ledgerId'),
    ledgerPublicKey: fromHex(o.ledgerPublicKey, 32, 'ledgerPublicKey'),
    supply: big(o.supply, 'supply'),
    escrow: big(o.escrow, 'escrow'),
    openChannels: num(o.openChannels, 'openChannels'),
    height: num(o.height, 'height'),
    time: num(o.time, 'time'),
    faucet: { account: fromHex(f.account, 32, 'faucet.account'), amount: big(f.amount, 'faucet.amount'), difficulty: num(f.difficulty, 'faucet.difficulty') },
    maxChannelMs: num(o.maxChannelMs, 'maxChannelMs'),
  };
}

export function accountToJson(a: AccountInfo): J {
  return { publicKey: hex(a.publicKey), balance: a.balance.toString(), faucetClaimed: a.faucetClaimed };
}
export function accountFromJson(v: unknown): AccountInfo {
  const o = obj(v, 'account');
  return { publicKey: fromHex(o.publicKey, 32, 'publicKey'), balance: big(o.balance, 'balance'), faucetClaimed: o.faucetClaimed === true };
}

export function channelToJson(c: ChannelInfo): J {
  const j: J = {
    id: hex(c.id),
    ledgerId: hex(c.ledgerId),
    requester: hex(c.requester),
    provider: hex(c.provider),
    deposit: c.deposit.toString(),
    expiresAt: c.expiresAt,
    status: c.status,
    openedAt: c.openedAt,
    openSeq: c.openSeq,
    settled: c.settled.toString(),
  };
  if (c.closedSequence !== undefined) j.closedSequence = c.closedSequence.toString();
  if (c.closeSeq !== undefined) j.closeSeq = c.closeSeq;
  return j;
}
export function channelFromJson(v: unknown): ChannelInfo {
  const o = obj(v, 'channel');
  if (o.status !== 'open' && o.status !== 'closed' && o.status !== 'expired') throw new TypeError('channel.status: bad value');
  const c: ChannelInfo = {
    id: fromHex(o.id, 32, 'id'),
    ledgerId: fromHex(o.ledgerId, 32, 'ledgerId'),
    requester: fromHex(o.requester, 32, 'requester'),
    provider: fromHex(o.provider, 32, 'provider'),
    deposit: big(o.deposit, 'deposit'),
    expiresAt: num(o.expiresAt, 'expiresAt'),
    status: o.status,
    openedAt: num(o.openedAt, 'openedAt'),
    openSeq: num(o.openSeq, 'openSeq'),
    settled: big(o.settled, 'settled'),
  };
  if (o.closedSequence !== undefined) c.closedSequence = big(o.closedSequence, 'closedSequence');
  if (o.closeSeq !== undefined) c.closeSeq = num(o.closeSeq, 'closeSeq');
  return c;
}

export function opResultToJson(r: OpResult): J {
  const j: J = { seq: r.seq, opId: hex(r.opId) };
  if (r.channelId) j.channelId = hex(r.channelId);
  if (r.duplicate) j.duplicate = true;
  return j;
}
export function opResultFromJson(v: unknown): OpResult {
  const o = obj(v, 'result');
  const r: OpResult = { seq: num(o.seq, 'seq'), opId: fromHex(o.opId, 16, 'opId') };
  if (o.channelId !== undefined) r.channelId = fromHex(o.channelId, 32, 'channelId');
  if (o.duplicate === true) r.duplicate = true;
  return r;
}

const HIST_BUF: (keyof HistoryEntry)[] = ['signer', 'opId', 'to', 'channelId', 'provider'];
const HIST_BIG: (keyof HistoryEntry)[] = ['amount', 'sequence', 'cumulative'];
export function historyToJson(h: HistoryEntry): J {
  const j: J = { seq: h.seq, time: h.time, kind: h.kind };
  for (const k of HIST_BUF) if (h[k] !== undefined) j[k] = hex(h[k] as Buffer);
  for (const k of HIST_BIG) if (h[k] !== undefined) j[k] = (h[k] as bigint).toString();
  if (h.expiresAt !== undefined) j.expiresAt = h.expiresAt;
  return j;
}
export function historyFromJson(v: unknown): HistoryEntry {
  const o = obj(v, 'history entry');
  const h: HistoryEntry = { seq: num(o.seq, 'seq'), time: num(o.time, 'time'), kind: o.kind as HistoryEntry['kind'] };
  const lens: Record<string, number> = { signer: 32, opId: 16, to: 32, channelId: 32, provider: 32 };
  for (const k of HIST_BUF) if (o[k] !== undefined) (h as unknown as J)[k] = fromHex(o[k], lens[k]!, k);
  for (const k of HIST_BIG) if (o[k] !== undefined) (h as unknown as J)[k] = big(o[k], k);
  if (o.expiresAt !== undefined) h.expiresAt = num(o.expiresAt, 'expiresAt');
  return h;
}
