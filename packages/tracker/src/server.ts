/**
 * Socket layer of the tracker: a minimal HTTP/1.1 server on node:net (keep-alive, pipelining, GET/HEAD only,
 * bounded header size and output backlog) and a UDP socket, both feeding one `Tracker`. Also periodic peer
 * expiry and atomic state snapshots.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { Tracker, type TrackerOptions } from './tracker.js';
import { loadState, saveState } from './persist.js';
import { UdpSendThread } from './udpring.js';
import { accessSync, constants as fsConstants } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';

export interface TrackerServerOptions extends TrackerOptions {
  /** Bind address (default 0.0.0.0; '::' for dual-stack). */
  host?: string;
  /** HTTP port; 0 = ephemeral, null = no HTTP (default 6969). */
  httpPort?: number | null;
  /** UDP port; 0 = ephemeral, null = no UDP (default 6969). */
  udpPort?: number | null;
  /** Snapshot file for swarm state; loaded at start, saved every saveIntervalMs and on close. */
  statePath?: string | null;
  /** Load the state file but never write it (all cluster workers but one). */
  stateReadOnly?: boolean;
  saveIntervalMs?: number;
  /** How often expired peers are swept (default 60 s). */
  sweepIntervalMs?: number;
  /** Concurrent HTTP connections (default 20,000). */
  maxConnections?: number;
  /** Idle HTTP keep-alive timeout (default 30 s). */
  idleTimeoutMs?: number;
  /** Trust X-Forwarded-For / X-Real-IP (only behind your own reverse proxy). */
  trustProxy?: boolean;
  /**
   * Send UDP replies from a second thread sharing the socket (see udpring.ts): the main thread keeps receiving
   * and answering. Default false; falls back to main-thread sends if the socket's fd cannot be reached.
   */
  udpSendThread?: boolean;
  log?: (msg: string) => void;
}

const MAX_HEAD = 8192;
const MAX_BACKLOG = 1 << 20;
const REASONS: Record<number, string> = { 200: 'OK', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 431: 'Request Header Fields Too Large' };

export class TrackerServer {
  readonly tracker: Tracker;
  httpPort = 0;
  udpPort = 0;
  private http: Server | null = null;
  private udp: UdpSocket | null = null;
  private sender: UdpSendThread | null = null;
  private timers: NodeJS.Timeout[] = [];
  private sockets = new Set<Socket>();
  private closed = false;
  private saving: Promise<unknown> = Promise.resolve();

  constructor(readonly opts: TrackerServerOptions = {}) {
    if (opts.now !== undefined) this.tracker = new Tracker(opts);
    else {
      // Coarse clock (50 ms steps): Date.now() twice per datagram (peer last-seen, connection-id epoch) costs
      // more than the rest of a connection-id check. Times in the store are seconds, ids rotate every 2 min.
      let coarse = Date.now();
      const tick = setInterval(() => (coarse = Date.now()), 50);
      tick.unref();
      this.timers.push(tick);
      this.tracker = new Tracker({ ...opts, now: () => coarse });
    }
  }

  private log(msg: string): void {
    this.opts.log?.(msg);
  }

  async listen(): Promise<void> {
    const o = this.opts;
    const host = o.host ?? '0.0.0.0';
    if (o.statePath && !o.stateReadOnly) {
      const dir = dirname(resolvePath(o.statePath));
      try {
        accessSync(dir, fsConstants.W_OK);
      } catch {
        throw new Error(`state file folder ${dir} does not exist or is not writable`);
      }
    }
    if (o.statePath) {
      const n = await loadState(this.tracker.store, o.statePath, Math.floor(Date.now() / 1000));
      if (n >= 0) this.log(`loaded ${n} peers in ${this.tracker.store.swarms.size} swarms from ${o.statePath}`);
    }
    const httpPort = o.httpPort === undefined ? 6969 : o.httpPort;
    const udpPort = o.udpPort === undefined ? 6969 : o.udpPort;
    if (httpPort !== null) {
      const srv = createServer({ noDelay: true }, (s) => this.onConnection(s));
      srv.maxConnections = o.maxConnections ?? 20_000;
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen({ port: httpPort, host, backlog: 4096 }, () => {
          srv.off('error', reject);
          resolve();
        });
      });
      srv.on('error', (e) => this.log(`http server error: ${e.message}`));
      this.http = srv;
      this.httpPort = (srv.address() as { port: number }).port;
    }
    if (udpPort !== null) {
      const sock = createSocket({
        type: host.includes(':') ? 'udp6' : 'udp4',
        recvBufferSize: 4 << 20,
        sendBufferSize: 4 << 20,
        // Replies go to the literal source address: skip dns.lookup and its extra tick per packet.
        lookup: (address: string, _o: unknown, cb: (err: Error | null, address: string, family: number) => void) =>
          cb(null, address, address.includes(':') ? 6 : 4),
      } as Parameters<typeof createSocket>[0]);
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(udpPort, host, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      sock.on('error', (e) => this.log(`udp socket error: ${e.message}`));
      const t = this.tracker;
      const sender = o.udpSendThread ? UdpSendThread.start(sock, host.includes(':') ? 'udp6' : 'udp4', (m) => this.log(m)) : null;
      if (o.udpSendThread && sender === null) this.log('udp send thread unavailable (no socket fd): sending from the main thread');
      this.sender = sender;
      sock.on('message', (msg, rinfo) => {
        const reply = t.udp(msg, rinfo.address, rinfo.port);
        if (reply === null) return;
        if (sender !== null && sender.push(reply, rinfo.port, rinfo.address)) return;
        // `reply` is a view of the tracker's reused output buffer. send() normally hands the datagram to the
        // kernel before it returns; if it could not (socket buffer full), the datagram waits in the send queue
        // still pointing at that buffer, so the tracker gets a fresh one.
        sock.send(reply, rinfo.port, rinfo.address);
        if (sock.getSendQueueCount() !== 0) t.detachOutput();
      });
      this.udp = sock;
      this.udpPort = sock.address().port;
    }
    const sweepMs = o.sweepIntervalMs ?? 60_000;
    const sweep = setInterval(() => {
      const n = this.tracker.sweep();
      if (n > 0) this.log(`expired ${n} peers`);
    }, sweepMs);
    sweep.unref();
    this.timers.push(sweep);
    if (o.statePath && !o.stateReadOnly) {
      const save = setInterval(() => void this.saveState().catch((e) => this.log(`state save failed: ${(e as Error).message}`)), o.saveIntervalMs ?? 300_000);
      save.unref();
      this.timers.push(save);
    }
  }

  /** Save a snapshot now (no-op without statePath). Saves never overlap. */
  saveState(): Promise<void> {
    const path = this.opts.statePath;
    if (!path || this.opts.stateReadOnly) return Promise.resolve();
    const p = this.saving.then(() => saveState(this.tracker.store, path, Math.floor(Date.now() / 1000))).then((bytes) => {
      this.log(`saved state (${bytes} bytes) to ${path}`);
    });
    this.saving = p.catch(() => {});
    return p;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    const waits: Promise<void>[] = [];
    if (this.http) {
      const h = this.http;
      waits.push(new Promise((r) => h.close(() => r())));
      for (const s of this.sockets) s.destroy();
    }
    if (this.udp) {
      const u = this.udp;
      // The send thread closes the shared fd first (this blocks until it has), then our handle is closed.
      if (this.sender !== null) {
        this.sender.stop();
        waits.push(this.sender.exited);
      }
      waits.push(new Promise((r) => u.close(() => r())));
    }
    await Promise.all(waits);
    await this.saveState();
  }

  private onConnection(sock: Socket): void {
    this.sockets.add(sock);
    sock.setTimeout(this.opts.idleTimeoutMs ?? 30_000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => this.sockets.delete(sock));
    const ip = sock.remoteAddress ?? '0.0.0.0';
    let pending: Buffer | null = null;
    const t = this.tracker;
    const trustProxy = this.opts.trustProxy === true;
    sock.on('data', (chunk: Buffer) => {
      let buf = chunk;
      if (pending !== null) {
        buf = Buffer.concat([pending, chunk]);
        pending = null;
      }
      let pos = 0;
      let outs: Buffer[] | null = null;
      let one: Buffer | null = null;
      let close = false;
      while (pos < buf.length) {
        const end = buf.indexOf('\r\n\r\n', pos, 'latin1');
        if (end < 0) break;
        if (end - pos > MAX_HEAD) {
          one = response(431, 'text/plain', Buffer.from('request header too large\n'), true, false);
          close = true;
          pos = buf.length;
          break;
        }
        const head = buf.toString('latin1', pos, end);
        pos = end + 4;
        const r = handleHead(t, head, ip, trustProxy);
        if (r.close) close = true;
        if (one === null) one = r.out;
        else {
          if (outs === null) outs = [one];
          outs.push(r.out);
        }
        if (close) {
          pos = buf.length;
          break;
        }
      }
      if (!close && pos < buf.length) {
        if (buf.length - pos > MAX_HEAD) {
          const r = response(431, 'text/plain', Buffer.from('request header too large\n'), true, false);
          if (one === null) one = r;
          else (outs ??= [one]).push(r);
          close = true;
        } else pending = Buffer.from(buf.subarray(pos));
      }
      if (one !== null) {
        const data = outs !== null ? Buffer.concat(outs) : one;
        if (close) sock.end(data);
        else {
          sock.write(data);
          if (sock.writableLength > MAX_BACKLOG) sock.destroy();
        }
      } else if (close) sock.end();
    });
  }
}

function response(status: number, type: string, body: Buffer, close: boolean, head: boolean): Buffer {
  const h = `HTTP/1.1 ${status} ${REASONS[status] ?? 'OK'}\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
  const hl = Buffer.byteLength(h, 'latin1');
  const out = Buffer.allocUnsafe(hl + (head ? 0 : body.length));
  out.write(h, 0, 'latin1');
  if (!head) body.copy(out, hl);
  return out;
}

/** One request head (request line + headers, no terminating blank line) → response bytes and whether to close. */
function handleHead(t: Tracker, head: string, ip: string, trustProxy: boolean): { out: Buffer; close: boolean } {
  let eol = head.indexOf('\r\n');
  if (eol < 0) eol = head.length;
  const sp1 = head.indexOf(' ');
  const sp2 = head.lastIndexOf(' ', eol);
  if (sp1 <= 0 || sp2 <= sp1 || head.charCodeAt(sp1 + 1) !== 47 /* '/' */) {
    return { out: response(400, 'text/plain', Buffer.from('bad request line\n'), true, false), close: true };
  }
  const method = head.slice(0, sp1);
  const version = head.slice(sp2 + 1, eol);
  if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') {
    return { out: response(400, 'text/plain', Buffer.from('unsupported HTTP version\n'), true, false), close: true };
  }
  let close = version === 'HTTP/1.0';
  let wantJson = false;
  if (eol < head.length) {
    const h = head.slice(eol).toLowerCase();
    if (close) close = !/\r\nconnection:[ \t]*keep-alive/.test(h);
    else close = /\r\nconnection:[ \t]*close/.test(h);
    if (/\r\ntransfer-encoding:/.test(h) || /\r\ncontent-length:[ \t]*[1-9]/.test(h)) {
      return { out: response(400, 'text/plain', Buffer.from('request bodies are not accepted\n'), true, false), close: true };
    }
    wantJson = /\r\naccept:[^\r]*application\/json/.test(h);
    if (trustProxy) {
      const m = /\r\nx-forwarded-for:[ \t]*([0-9a-f.:]+)/.exec(h) ?? /\r\nx-real-ip:[ \t]*([0-9a-f.:]+)/.exec(h);
      if (m) ip = m[1];
    }
  }
  const isHead = method === 'HEAD';
  if (method !== 'GET' && !isHead) {
    return { out: response(405, 'text/plain', Buffer.from('only GET is supported\n'), true, false), close: true };
  }
  const r = t.http(head.slice(sp1 + 1, sp2), ip, wantJson);
  return { out: response(r.status, r.contentType, r.body, close, isHead), close };
}

export async function startTracker(opts: TrackerServerOptions = {}): Promise<TrackerServer> {
  const s = new TrackerServer(opts);
  await s.listen();
  return s;
}
