/**
 * KRPC codec (BEP 5, BEP 32, BEP 42, BEP 44 fields). Sans-I/O: bytes in, typed messages out.
 * Strict and bounded: packet size, nesting depth, field types and lengths are all checked; anything
 * else is a KrpcDecodeError (never another exception type).
 */
import { isIPv4 } from 'node:net';
import {
  decode,
  encode,
  isDict,
  encodeIPv4,
  encodeIPv6,
  decodeIPv4,
  decodeIPv6,
  type BencodeDict,
  type BencodeValue,
  type EncodableValue,
  type PeerAddress,
} from '@bitorrent/core';
import { ID_LEN } from './id.js';

/** Largest datagram we accept (a full BEP 44 item plus nodes fits well below this). */
export const MAX_PACKET = 4096;
const MAX_DEPTH = 12;
const MAX_TID = 32;
/** Most nodes / values we take from one response (extra entries are ignored, bounding work per packet). */
export const MAX_NODES_PER_RESPONSE = 32;
export const MAX_VALUES_PER_RESPONSE = 256;

export interface NodeInfo {
  id: Buffer;
  host: string;
  port: number;
}

export interface KrpcQuery {
  y: 'q';
  t: Buffer;
  method: string;
  id: Buffer;
  args: BencodeDict;
  /** BEP 43 read-only node: do not add it to the routing table. */
  ro: boolean;
}
export interface KrpcResponse {
  y: 'r';
  t: Buffer;
  id: Buffer;
  r: BencodeDict;
  /** BEP 42: our address as the responder saw it. */
  ip?: PeerAddress;
}
export interface KrpcErrorMsg {
  y: 'e';
  t: Buffer;
  code: number;
  message: string;
}
export type KrpcMessage = KrpcQuery | KrpcResponse | KrpcErrorMsg;

export class KrpcDecodeError extends Error {
  /** Transaction id, when the packet was readable enough to answer with an error 203. */
  constructor(message: string, readonly t?: Buffer) {
    super(`krpc: ${message}`);
    this.name = 'KrpcDecodeError';
  }
}

export const ErrorCode = {
  Generic: 201,
  Server: 202,
  Protocol: 203,
  MethodUnknown: 204,
  MessageTooBig: 205,
  InvalidSignature: 206,
  SaltTooBig: 207,
  CasMismatch: 301,
  SeqTooSmall: 302,
} as const;

function buf(v: Uint8Array): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

function bytesField(d: BencodeDict, key: string, t?: Buffer): Buffer {
  const v = d[key];
  if (!(v instanceof Uint8Array)) throw new KrpcDecodeError(`field '${key}' missing or not a byte string`, t);
  return buf(v);
}

function idField(d: BencodeDict, t: Buffer): Buffer {
  const id = bytesField(d, 'id', t);
  if (id.length !== ID_LEN) throw new KrpcDecodeError(`node id is ${id.length} bytes, expected 20`, t);
  return id;
}

/** Decode one datagram. Throws KrpcDecodeError only. */
export function decodeMessage(data: Uint8Array): KrpcMessage {
  if (data.length > MAX_PACKET) throw new KrpcDecodeError(`packet of ${data.length} bytes is too large`);
  let v: BencodeValue;
  try {
    v = decode(data, { maxDepth: MAX_DEPTH });
  } catch (err) {
    throw new KrpcDecodeError(`bad bencoding (${(err as Error).message})`);
  }
  if (!isDict(v)) throw new KrpcDecodeError('message is not a dictionary');
  const tRaw = v.t;
  if (!(tRaw instanceof Uint8Array) || tRaw.length === 0 || tRaw.length > MAX_TID) {
    throw new KrpcDecodeError('missing or invalid transaction id');
  }
  const t = buf(tRaw);
  const yRaw = v.y;
  if (!(yRaw instanceof Uint8Array) || yRaw.length !== 1) throw new KrpcDecodeError('missing message type', t);
  const y = String.fromCharCode(yRaw[0]);
  if (y === 'q') {
    const q = v.q;
    if (!(q instanceof Uint8Array) || q.length === 0 || q.length > 64) throw new KrpcDecodeError('missing method name', t);
    const a = v.a;
    if (!isDict(a)) throw new KrpcDecodeError("query has no 'a' dictionary", t);
    const id = idField(a, t);
    const ro = v.ro === 1;
    return { y: 'q', t, method: buf(q).toString('latin1'), id, args: a, ro };
  }
  if (y === 'r') {
    const r = v.r;
    if (!isDict(r)) throw new KrpcDecodeError("response has no 'r' dictionary", t);
    const id = idField(r, t);
    let ip: PeerAddress | undefined;
    const ipRaw = v.ip;
    if (ipRaw instanceof Uint8Array) {
      if (ipRaw.length === 6) ip = { host: decodeIPv4(ipRaw, 0), port: (ipRaw[4] << 8) | ipRaw[5] };
      else if (ipRaw.length === 18) ip = { host: decodeIPv6(ipRaw, 0), port: (ipRaw[16] << 8) | ipRaw[17] };
    }
    return { y: 'r', t, id, r, ip };
  }
  if (y === 'e') {
    const e = v.e;
    let code = ErrorCode.Generic as number;
    let message = '';
    if (Array.isArray(e)) {
      if (typeof e[0] === 'number') code = e[0];
      if (e[1] instanceof Uint8Array) message = buf(e[1]).toString('utf8').slice(0, 200);
    }
    return { y: 'e', t, code, message };
  }
  throw new KrpcDecodeError(`unknown message type '${y}'`, t);
}

// ---- encoding ----

export function compactAddr(addr: PeerAddress): Buffer {
  if (isIPv4(addr.host)) {
    const b = Buffer.alloc(6);
    encodeIPv4(addr.host, b, 0);
    b.writeUInt16BE(addr.port, 4);
    return b;
  }
  const b = Buffer.alloc(18);
  encodeIPv6(addr.host, b, 0);
  b.writeUInt16BE(addr.port, 16);
  return b;
}

export function encodeQuery(t: Buffer, method: string, args: Record<string, EncodableValue | undefined>, ro = false): Buffer {
  return encode({ t, y: 'q', q: method, a: args, ro: ro ? 1 : undefined });
}

export function encodeResponse(t: Buffer, r: Record<string, EncodableValue | undefined>, requester?: PeerAddress): Buffer {
  return encode({ t, y: 'r', r, ip: requester ? compactAddr(requester) : undefined });
}

export function encodeError(t: Buffer, code: number, message: string): Buffer {
  return encode({ t, y: 'e', e: [code, message] });
}

/** Compact node info: 26 bytes per IPv4 node, 38 per IPv6 node. Entries of the other family are skipped. */
export function encodeNodes(nodes: NodeInfo[], family: 4 | 6): Buffer {
  const size = family === 4 ? 26 : 38;
  const list = nodes.filter((n) => isIPv4(n.host) === (family === 4));
  const out = Buffer.alloc(list.length * size);
  list.forEach((n, i) => {
    const o = i * size;
    n.id.copy(out, o);
    if (family === 4) encodeIPv4(n.host, out, o + 20);
    else encodeIPv6(n.host, out, o + 20);
    out.writeUInt16BE(n.port, o + size - 2);
  });
  return out;
}

/** Decode compact node info; rejects lengths that are not a multiple of the entry size; drops port 0. */
export function decodeNodes(data: Uint8Array, family: 4 | 6, max = MAX_NODES_PER_RESPONSE): NodeInfo[] {
  const size = family === 4 ? 26 : 38;
  if (data.length % size !== 0) throw new KrpcDecodeError(`compact node list of ${data.length} bytes is not a multiple of ${size}`);
  const out: NodeInfo[] = [];
  for (let o = 0; o < data.length && out.length < max; o += size) {
    const port = (data[o + size - 2] << 8) | data[o + size - 1];
    if (port === 0) continue;
    const host = family === 4 ? decodeIPv4(data, o + 20) : decodeIPv6(data, o + 20);
    out.push({ id: Buffer.from(data.subarray(o, o + 20)), host, port });
  }
  return out;
}

/** Nodes from a response's 'nodes' (and 'nodes6') fields. Malformed fields are ignored, not fatal. */
export function responseNodes(r: BencodeDict, family: 4 | 6): NodeInfo[] {
  const key = family === 4 ? 'nodes' : 'nodes6';
  const v = r[key];
  if (!(v instanceof Uint8Array)) return [];
  try {
    return decodeNodes(v, family);
  } catch {
    return [];
  }
}

/** Peers from a get_peers response's 'values' list (6- or 18-byte strings); bad entries are skipped. */
export function responseValues(r: BencodeDict): PeerAddress[] {
  const v = r.values;
  if (!Array.isArray(v)) return [];
  const out: PeerAddress[] = [];
  for (const e of v) {
    if (out.length >= MAX_VALUES_PER_RESPONSE) break;
    if (!(e instanceof Uint8Array)) continue;
    let p: PeerAddress | undefined;
    if (e.length === 6) p = { host: decodeIPv4(e, 0), port: (e[4] << 8) | e[5] };
    else if (e.length === 18) p = { host: decodeIPv6(e, 0), port: (e[16] << 8) | e[17] };
    if (p && p.port !== 0) out.push(p);
  }
  return out;
}

/** The 'want' list of a query (BEP 32): which families of nodes the requester wants. */
export function parseWant(args: BencodeDict): { n4: boolean; n6: boolean } | undefined {
  const w = args.want;
  if (!Array.isArray(w)) return undefined;
  let n4 = false;
  let n6 = false;
  for (const e of w.slice(0, 8)) {
    if (!(e instanceof Uint8Array) || e.length !== 2) continue;
    const s = buf(e).toString('latin1');
    if (s === 'n4') n4 = true;
    if (s === 'n6') n6 = true;
  }
  return { n4, n6 };
}

/** A 20-byte field of the query args ('target', 'info_hash'), or a KrpcDecodeError. */
export function hashArg(args: BencodeDict, key: string, t: Buffer): Buffer {
  const v = bytesField(args, key, t);
  if (v.length !== ID_LEN) throw new KrpcDecodeError(`'${key}' is ${v.length} bytes, expected 20`, t);
  return v;
}

export { bytesField };
