/**
 * HTTP/JSON front end of a Ledger. The only mutation is POST /v1/ops carrying a signed operation; everything else is a
 * read. Bodies are limited (4 KiB), validated against a strict schema, and rate-limited per signing key (and per IP).
 *
 *   GET  /v1/info                          ledger id, key, supply, faucet parameters, clock
 *   GET  /v1/accounts/:pub                 balance
 *   GET  /v1/accounts/:pub/channels        channels where the key is requester or provider
 *   GET  /v1/accounts/:pub/history?limit=&before=
 *   GET  /v1/channels/:id                  everything a provider checks before trusting a channel
 *   GET  /v1/ops/:signer/:opId             whether an operation id was applied (durably)
 *   POST /v1/ops   {"op":"<hex of msg‖sig>"} → {seq, opId, channelId?, duplicate?}
 *   POST /v1/ops/batch {"ops":["<hex>", ...]} (≤ 256) → {"results":[{seq,…} | {"error":{code,message}}, …]}
 * Errors: {"error":{"code","message"}} with 400/401/404/405/409/413/415/422/429/503.
 */
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Ledger } from './ledger.js';
import { LedgerError } from './state.js';
import { MAX_OP_BYTES, OP_TAG } from './ops.js';
import { MAX_BATCH_OPS } from './api.js';
import { accountToJson, channelToJson, historyToJson, ledgerInfoToJson, opResultToJson } from './json.js';

export interface LedgerServerOptions {
  ledger: Ledger;
  host?: string;
  port?: number;
  /** Sustained operations per second per signing key (default 1000), burst = 2× rate. */
  opsPerKeyPerSec?: number;
  /** Requests per second per client IP, each op of a batch counting as one (default 50,000; charged before any signature check). */
  requestsPerIpPerSec?: number;
  maxBodyBytes?: number;
  /** Clock for the rate limiters (ms; default Date.now). */
  clock?: () => number;
}

class Buckets {
  private m = new Map<string, { t: number; tokens: number }>();
  constructor(
    private rate: number,
    private burst: number,
  ) {}
  take(k: string, now: number): boolean {
    return this.takeN(k, now, 1);
  }
  takeN(k: string, now: number, n: number): boolean {
    let b = this.m.get(k);
    if (!b) {
      if (this.m.size > 100_000) this.sweep(now);
      b = { t: now, tokens: this.burst };
      this.m.set(k, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.t) / 1000) * this.rate);
    b.t = now;
    if (b.tokens < n) return false;
    b.tokens -= n;
    return true;
  }
  private sweep(now: number): void {
    for (const [k, b] of this.m) if (b.tokens + ((now - b.t) / 1000) * this.rate >= this.burst) this.m.delete(k);
    if (this.m.size > 100_000) this.m.clear();
  }
}

const HEX64 = /^[0-9a-f]{64}$/;
const HEX32 = /^[0-9a-f]{32}$/;

function send(res: ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), 'cache-control': 'no-store' });
  res.end(s);
}
function fail(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, { error: { code, message } });
}

export function createLedgerServer(opts: LedgerServerOptions): { server: Server; listen(): Promise<string>; close(): Promise<void> } {
  const { ledger } = opts;
  const clock = opts.clock ?? Date.now;
  const maxOneBody = opts.maxBodyBytes ?? 4096;
  const maxBatchBody = MAX_BATCH_OPS * (MAX_OP_BYTES * 2 + 8) + 64;
  const perKey = opts.opsPerKeyPerSec ?? 1000;
  const perIp = opts.requestsPerIpPerSec ?? 50_000;
  const keyBuckets = new Buckets(perKey, perKey * 2);
  const ipBuckets = new Buckets(perIp, perIp * 2);

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const now = clock();
    if (!ipBuckets.take(req.socket.remoteAddress ?? '?', now)) return fail(res, 429, 'rate_limited', 'too many requests from this address');
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'v1') return fail(res, 404, 'not_found', 'unknown path');
    if (req.method === 'POST' && parts.length === 2 && parts[1] === 'ops') return postOp(req, res, now, false);
    if (req.method === 'POST' && parts.length === 3 && parts[1] === 'ops' && parts[2] === 'batch') return postOp(req, res, now, true);
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, 405, 'method_not_allowed', 'only GET and POST /v1/ops');
    if (parts.length === 2 && parts[1] === 'info') return send(res, 200, ledgerInfoToJson(await ledger.ledgerInfo()));
    if (parts[1] === 'accounts' && parts[2] && HEX64.test(parts[2])) {
      const pub = Buffer.from(parts[2], 'hex');
      if (parts.length === 3) return send(res, 200, accountToJson(await ledger.account(pub)));
      if (parts.length === 4 && parts[3] === 'channels') return send(res, 200, { channels: (await ledger.channels(pub)).map(channelToJson) });
      if (parts.length === 4 && parts[3] === 'history') {
        const limit = Number(url.searchParams.get('limit') ?? '100');
        const before = url.searchParams.get('before');
        if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) return fail(res, 400, 'bad_request', 'limit must be 1..1000');
        const beforeSeq = before === null ? undefined : Number(before);
        if (beforeSeq !== undefined && (!Number.isSafeInteger(beforeSeq) || beforeSeq < 0)) return fail(res, 400, 'bad_request', 'bad before');
        const h = await ledger.history(pub, { limit, beforeSeq });
        return send(res, 200, { history: h.map(historyToJson) });
      }
    }
    if (parts[1] === 'channels' && parts.length === 3 && HEX64.test(parts[2]!)) {
      const c = await ledger.channel(Buffer.from(parts[2]!, 'hex'));
      return c ? send(res, 200, channelToJson(c)) : fail(res, 404, 'unknown_channel', 'no such channel');
    }
    if (parts[1] === 'ops' && parts.length === 4 && HEX64.test(parts[2]!) && HEX32.test(parts[3]!)) {
      const r = ledger.opStatus(Buffer.from(parts[2]!, 'hex'), Buffer.from(parts[3]!, 'hex'));
      return r ? send(res, 200, { applied: true, seq: r.seq, ...(r.channelId ? { channelId: r.channelId.toString('hex') } : {}) }) : send(res, 200, { applied: false });
    }
    return fail(res, 404, 'not_found', 'unknown path');
  }

  const admit = (signer: Buffer): LedgerError | undefined =>
    keyBuckets.take(signer.toString('latin1'), clock()) ? undefined : new LedgerError('rate_limited', 'too many operations for this key', 429);

  /** Validate one hex op and submit it (its signer is rate-limited after verification, see admit). */
  function submitHex(op: unknown, now: number): Promise<Record<string, unknown>> {
    const err = (status: number, code: string, message: string) => Promise.resolve({ status, error: { code, message } });
    if (typeof op !== 'string' || op.length > MAX_OP_BYTES * 2 || op.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(op)) return err(400, 'bad_request', 'op must be hex, at most 512 bytes');
    const wire = Buffer.from(op, 'hex');
    // The per-key allowance is charged only once the signature has verified (admit runs after verification), so a
    // forged op naming someone else's key cannot spend that key's allowance; forged ops cost the sender's per-IP
    // allowance instead (charged per op, before verification).
    const signerAt = OP_TAG.length + 1 + 32 + 16;
    if (wire.length < signerAt + 32 + 64) return err(400, 'malformed_op', 'operation too short');
    return ledger.submit(wire, { admit }).then(
      (r) => ({ status: 200, ...opResultToJson(r) }),
      (e: unknown) => (e instanceof LedgerError ? { status: e.status, error: { code: e.code, message: e.message } } : { status: 500, error: { code: 'internal', message: 'internal error' } }),
    );
  }

  function postOp(req: IncomingMessage, res: ServerResponse, now: number, batch: boolean): void {
    const ct = req.headers['content-type'] ?? '';
    if (!ct.startsWith('application/json')) return fail(res, 415, 'unsupported_media_type', 'send application/json');
    const maxBody = batch ? maxBatchBody : maxOneBody;
    const len = Number(req.headers['content-length'] ?? '0');
    if (len > maxBody) {
      fail(res, 413, 'too_large', `body over ${maxBody} bytes`);
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBody) {
        over = true;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (over) return fail(res, 413, 'too_large', `body over ${maxBody} bytes`);
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return fail(res, 400, 'bad_json', 'body is not valid JSON');
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) return fail(res, 400, 'bad_request', 'body must be an object');
      const keys = Object.keys(body);
      if (!batch) {
        const op = (body as { op?: unknown }).op;
        if (keys.length !== 1 || typeof op !== 'string') return fail(res, 400, 'bad_request', 'body must be exactly {"op": "<hex>"}');
        void submitHex(op, now).then(({ status, ...rest }) => send(res, status as number, rest));
        return;
      }
      const ops = (body as { ops?: unknown }).ops;
      if (keys.length !== 1 || !Array.isArray(ops) || ops.length < 1 || ops.length > MAX_BATCH_OPS) return fail(res, 400, 'bad_request', `body must be exactly {"ops": ["<hex>", ...]} with 1..${MAX_BATCH_OPS} ops`);
      // The request took one per-IP token; a batch pays one more per further op, before any signature is checked.
      if (ops.length > 1 && !ipBuckets.takeN(req.socket.remoteAddress ?? '?', now, ops.length - 1)) return fail(res, 429, 'rate_limited', 'too many requests from this address');
      void Promise.all(ops.map((op) => submitHex(op, now))).then((results) => send(res, 200, { results }));
    });
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) fail(res, 500, 'internal', 'internal error');
    });
  });
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.maxHeadersCount = 50;

  return {
    server,
    listen: () =>
      new Promise<string>((resolve, reject) => {
        server.once('error', reject);
        server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
          const a = server.address() as AddressInfo;
          const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
          resolve(`http://${host}:${a.port}`);
        });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
