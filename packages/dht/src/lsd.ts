/**
 * BEP 14 Local Service Discovery: HTTP-over-UDP-multicast announces on 239.192.152.143:6771.
 * Off by default (a session creates an Lsd only when asked). The codec is pure; `Lsd` owns the socket.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { PeerAddress } from '@bitorrent/core';

export const LSD_HOST = '239.192.152.143';
export const LSD_PORT = 6771;
const MAX_LSD_PACKET = 1400;

export function encodeLsdAnnounce(port: number, infoHashes: Buffer[], cookie?: string): Buffer {
  const lines = ['BT-SEARCH * HTTP/1.1', `Host: ${LSD_HOST}:${LSD_PORT}`, `Port: ${port}`];
  for (const ih of infoHashes) lines.push(`Infohash: ${ih.toString('hex')}`);
  if (cookie) lines.push(`cookie: ${cookie}`);
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n\r\n', 'latin1');
}

export interface LsdAnnounce {
  port: number;
  infoHashes: Buffer[];
  cookie?: string;
}

/** Parse an announce; null for anything that is not a well-formed BT-SEARCH. */
export function parseLsdAnnounce(buf: Uint8Array): LsdAnnounce | null {
  if (buf.length > MAX_LSD_PACKET * 2) return null;
  const text = Buffer.from(buf).toString('latin1');
  const lines = text.split(/\r?\n/);
  if (lines[0]?.trim() !== 'BT-SEARCH * HTTP/1.1') return null;
  let port = 0;
  let cookie: string | undefined;
  const infoHashes: Buffer[] = [];
  for (const line of lines.slice(1, 64)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    if (name === 'port') {
      if (!/^\d{1,5}$/.test(value)) return null;
      port = Number(value);
    } else if (name === 'infohash') {
      if (/^[0-9a-fA-F]{40}$/.test(value) && infoHashes.length < 32) infoHashes.push(Buffer.from(value, 'hex'));
    } else if (name === 'cookie') cookie = value.slice(0, 64);
  }
  if (port < 1 || port > 65535 || infoHashes.length === 0) return null;
  return { port, infoHashes, cookie };
}

export interface LsdOptions {
  /** Our BitTorrent listen port, announced to neighbours. */
  port: number;
  onPeer(infoHash: Buffer, peer: PeerAddress): void;
  /** Multicast group/port override (tests). */
  group?: string;
  groupPort?: number;
  /** Local interface address for multicast. */
  interfaceAddress?: string;
  /** Minimum ms between two announces of the same info-hash (default 60 000, BEP 14's 1/minute). */
  minIntervalMs?: number;
  now?: () => number;
  /** Bind the multicast socket on the first announce() if start() was not called (default true). */
  autoStart?: boolean;
}

export class Lsd {
  readonly cookie = randomBytes(6).toString('hex');
  private socket?: Socket;
  private starting?: Promise<void>;
  private closed = false;
  private lastAnnounce = new Map<string, number>();
  private readonly now: () => number;

  constructor(private opts: LsdOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Bind the multicast socket and join the group (idempotent). */
  start(): Promise<void> {
    this.starting ??= this.bind();
    return this.starting;
  }

  private async bind(): Promise<void> {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(this.opts.groupPort ?? LSD_PORT, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('error', () => {});
    try {
      s.addMembership(this.opts.group ?? LSD_HOST, this.opts.interfaceAddress);
      s.setMulticastTTL(2);
      if (this.opts.interfaceAddress) s.setMulticastInterface(this.opts.interfaceAddress);
    } catch {
      /* no multicast route: we can still send unicast-looking traffic or nothing */
    }
    s.on('message', (msg, rinfo) => this.handle(msg, { host: rinfo.address, port: rinfo.port }));
    if (this.closed) {
      s.close();
      return;
    }
    this.socket = s;
  }

  /** Process one datagram (exposed for tests and other transports). */
  handle(buf: Uint8Array, from: PeerAddress): void {
    const a = parseLsdAnnounce(buf);
    if (!a || a.cookie === this.cookie) return;
    for (const ih of a.infoHashes) this.opts.onPeer(ih, { host: from.host, port: a.port });
  }

  /** Announce one info-hash (rate limited per BEP 14). Returns the packet, or null when rate-limited. */
  announce(infoHash: Buffer): Buffer | null {
    const key = infoHash.toString('hex');
    const now = this.now();
    const last = this.lastAnnounce.get(key);
    if (last !== undefined && now - last < (this.opts.minIntervalMs ?? 60_000)) return null;
    this.lastAnnounce.set(key, now);
    if (this.lastAnnounce.size > 10_000) this.lastAnnounce.delete(this.lastAnnounce.keys().next().value as string);
    const pkt = encodeLsdAnnounce(this.opts.port, [infoHash], this.cookie);
    const send = () => this.socket?.send(pkt, this.opts.groupPort ?? LSD_PORT, this.opts.group ?? LSD_HOST);
    if (this.socket) send();
    else if (!this.closed && (this.starting || this.opts.autoStart !== false)) this.start().then(send, () => {});
    return pkt;
  }

  close(): Promise<void> {
    this.closed = true;
    const s = this.socket;
    this.socket = undefined;
    return new Promise((resolve) => (s ? s.close(() => resolve()) : resolve()));
  }
}
