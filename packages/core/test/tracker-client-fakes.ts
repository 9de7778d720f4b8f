/** Fake HTTP and UDP trackers on 127.0.0.1 for the tracker-client tests (real sockets, ephemeral ports). */
import http from 'node:http';
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { encode, type EncodableValue } from '../src/bencode.js';

/** Split a raw query string into byte values (percent-decoding by hand so binary values survive). */
export function rawQuery(url: string): Map<string, Buffer[]> {
  const out = new Map<string, Buffer[]>();
  const q = url.slice(url.indexOf('?') + 1);
  for (const part of q.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = part.slice(0, eq);
    const v = part.slice(eq + 1);
    const bytes: number[] = [];
    for (let i = 0; i < v.length; i++) {
      if (v[i] === '%') {
        bytes.push(parseInt(v.slice(i + 1, i + 3), 16));
        i += 2;
      } else bytes.push(v.charCodeAt(i));
    }
    const list = out.get(k) ?? [];
    list.push(Buffer.from(bytes));
    out.set(k, list);
  }
  return out;
}

export interface FakeHttp {
  url: string;
  port: number;
  requests: string[];
  close(): Promise<void>;
}

/** `respond` returns a bencodable value, a raw Buffer, or a function handling (req, res) itself. */
export async function fakeHttpTracker(
  respond: (req: http.IncomingMessage, q: Map<string, Buffer[]>) => EncodableValue | Buffer | ((res: http.ServerResponse) => void),
): Promise<FakeHttp> {
  const requests: string[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    const r = respond(req, rawQuery(req.url ?? ''));
    if (typeof r === 'function' && !(r instanceof Uint8Array)) return (r as (res: http.ServerResponse) => void)(res);
    const body = Buffer.isBuffer(r) ? r : encode(r as EncodableValue);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/announce`,
    port,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

export interface UdpRequest {
  action: number;
  tid: number;
  connId: Buffer;
  body: Buffer;
  from: dgram.RemoteInfo;
}

export interface FakeUdp {
  url: string;
  port: number;
  socket: dgram.Socket;
  requests: UdpRequest[];
  close(): Promise<void>;
}

/**
 * Minimal BEP 15 tracker. `handle` returns the reply buffer (or undefined to drop the packet) for announce/scrape;
 * connect is answered with connection id 0x0102030405060708 unless `handle` answers it.
 */
export async function fakeUdpTracker(handle: (r: UdpRequest, reply: (b: Buffer) => void) => Buffer | undefined | 'default', family: 4 | 6 = 4): Promise<FakeUdp> {
  const socket = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
  const requests: UdpRequest[] = [];
  socket.on('message', (msg, from) => {
    if (msg.length < 16) return;
    const isConnect = msg.readBigUInt64BE(0) === 0x41727101980n && msg.readUInt32BE(8) === 0;
    const r: UdpRequest = { action: isConnect ? 0 : msg.readUInt32BE(8), tid: msg.readUInt32BE(12), connId: msg.subarray(0, 8), body: msg.subarray(16), from };
    requests.push(r);
    const reply = (b: Buffer) => socket.send(b, from.port, from.address);
    const out = handle(r, reply);
    if (out === 'default' && r.action === 0) {
      const b = Buffer.alloc(16);
      b.writeUInt32BE(0, 0);
      b.writeUInt32BE(r.tid, 4);
      b.writeBigUInt64BE(0x0102030405060708n, 8);
      reply(b);
    } else if (out instanceof Buffer) reply(out);
  });
  await new Promise<void>((r) => socket.bind(0, family === 4 ? '127.0.0.1' : '::1', r));
  const port = socket.address().port;
  return {
    url: family === 4 ? `udp://127.0.0.1:${port}/announce` : `udp://[::1]:${port}/announce`,
    port,
    socket,
    requests,
    close: () => new Promise<void>((r) => socket.close(() => r())),
  };
}

export function udpAnnounceReply(tid: number, interval: number, leechers: number, seeders: number, peers: Buffer): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32BE(1, 0);
  b.writeUInt32BE(tid, 4);
  b.writeUInt32BE(interval, 8);
  b.writeUInt32BE(leechers, 12);
  b.writeUInt32BE(seeders, 16);
  return Buffer.concat([b, peers]);
}

export function udpError(tid: number, text: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(3, 0);
  b.writeUInt32BE(tid, 4);
  return Buffer.concat([b, Buffer.from(text)]);
}
