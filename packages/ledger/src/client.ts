/** Typed HTTP client for `bitorrent ledger serve`; same API as the in-process Ledger. */
import { request, Agent } from 'node:http';
import { LedgerApiBase, MAX_BATCH_OPS, type AccountInfo, type HistoryEntry, type LedgerInfo, type OpResult } from './api.js';
import type { ChannelInfo } from './payment.js';
import { LedgerError } from './state.js';
import { accountFromJson, channelFromJson, historyFromJson, ledgerInfoFromJson, opResultFromJson } from './json.js';

export interface LedgerClientOptions {
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
  /** Max concurrent sockets (default 64). */
  maxSockets?: number;
  /**
   * Coalesce operations submitted in the same event-loop turn into one POST /v1/ops/batch (default true). Each
   * operation still gets its own result or error.
   */
  autoBatch?: boolean;
  /**
   * Most operations in one batch request (1..256, default 32). More pending operations go out as several requests at
   * once: the ledger answers a request only when all its operations are durable, so with one big request every
   * client waits for the slowest commit group and the ledger idles between rounds; with a few smaller ones the first
   * are answered (and their clients submit again) while the ledger still verifies and commits the rest. At 64
   * closed-loop clients, 32 measured ~5–10% more operations/s than 256 (docs/BENCHMARKS.md, ledger).
   */
  maxBatchOps?: number;
}

interface PendingSubmit {
  hex: string;
  resolve: (r: OpResult) => void;
  reject: (e: Error) => void;
}

/** HTTP status the server uses for an error code (batch answers carry codes only). */
function statusOf(code: string): number {
  switch (code) {
    case 'bad_request':
    case 'malformed_op':
      return 400;
    case 'bad_signature':
      return 401;
    case 'unknown_channel':
      return 404;
    case 'duplicate_op_id':
    case 'duplicate_channel':
    case 'faucet_claimed':
      return 409;
    case 'rate_limited':
      return 429;
    case 'unavailable':
    case 'faucet_empty':
      return 503;
    case 'internal':
      return 500;
    default:
      return 422;
  }
}

export class LedgerClient extends LedgerApiBase {
  private readonly url: URL;
  private readonly agent: Agent;
  private readonly timeoutMs: number;
  private readonly autoBatch: boolean;
  private readonly maxBatchOps: number;
  private pending: PendingSubmit[] = [];
  private flushScheduled = false;

  constructor(baseUrl: string, opts: LedgerClientOptions = {}) {
    super();
    this.url = new URL(baseUrl);
    if (this.url.protocol !== 'http:') throw new Error('ledger URL must be http://');
    this.agent = new Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 64 });
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.autoBatch = opts.autoBatch ?? true;
    const mb = opts.maxBatchOps ?? 32;
    if (!Number.isInteger(mb) || mb < 1 || mb > MAX_BATCH_OPS) throw new RangeError(`maxBatchOps must be 1..${MAX_BATCH_OPS}`);
    this.maxBatchOps = mb;
  }

  private call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          host: this.url.hostname.replace(/^\[|\]$/g, ''),
          port: this.url.port || 80,
          method,
          path,
          agent: this.agent,
          headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > 8 << 20) res.destroy(new Error('response too large'));
            else chunks.push(c);
          });
          res.on('error', reject);
          res.on('end', () => {
            let j: unknown;
            try {
              j = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              return reject(new LedgerError('bad_response', `ledger answered ${res.statusCode} with non-JSON`, 502));
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) return resolve(j);
            const err = (j as { error?: { code?: unknown; message?: unknown } }).error;
            reject(new LedgerError(typeof err?.code === 'string' ? err.code : 'http_error', typeof err?.message === 'string' ? err.message : `HTTP ${status}`, status));
          });
        },
      );
      req.on('timeout', () => req.destroy(new LedgerError('timeout', 'ledger request timed out', 504)));
      req.on('error', reject);
      req.end(data);
    });
  }

  async ledgerInfo(): Promise<LedgerInfo> {
    return ledgerInfoFromJson(await this.call('GET', '/v1/info'));
  }
  async account(publicKey: Buffer): Promise<AccountInfo> {
    return accountFromJson(await this.call('GET', `/v1/accounts/${publicKey.toString('hex')}`));
  }
  async channel(id: Buffer): Promise<ChannelInfo | undefined> {
    try {
      return channelFromJson(await this.call('GET', `/v1/channels/${id.toString('hex')}`));
    } catch (e) {
      if (e instanceof LedgerError && e.status === 404) return undefined;
      throw e;
    }
  }
  async channels(publicKey: Buffer): Promise<ChannelInfo[]> {
    const j = (await this.call('GET', `/v1/accounts/${publicKey.toString('hex')}/channels`)) as { channels?: unknown };
    if (!Array.isArray(j.channels)) throw new LedgerError('bad_response', 'expected channels', 502);
    return j.channels.map(channelFromJson);
  }
  async history(publicKey: Buffer, opts: { limit?: number; beforeSeq?: number } = {}): Promise<HistoryEntry[]> {
    const q = new URLSearchParams({ limit: String(opts.limit ?? 100) });
    if (opts.beforeSeq !== undefined) q.set('before', String(opts.beforeSeq));
    const j = (await this.call('GET', `/v1/accounts/${publicKey.toString('hex')}/history?${q}`)) as { history?: unknown };
    if (!Array.isArray(j.history)) throw new LedgerError('bad_response', 'expected history', 502);
    return j.history.map(historyFromJson);
  }
  async opStatus(signer: Buffer, opId: Buffer): Promise<{ seq: number } | undefined> {
    const j = (await this.call('GET', `/v1/ops/${signer.toString('hex')}/${opId.toString('hex')}`)) as { applied?: boolean; seq?: number };
    return j.applied && typeof j.seq === 'number' ? { seq: j.seq } : undefined;
  }
  async submit(wire: Buffer): Promise<OpResult> {
    if (!this.autoBatch) return opResultFromJson(await this.call('POST', '/v1/ops', { op: wire.toString('hex') }));
    return new Promise((resolve, reject) => {
      this.pending.push({ hex: wire.toString('hex'), resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    while (this.pending.length > 0) {
      const group = this.pending.splice(0, this.maxBatchOps);
      if (group.length === 1) {
        const p = group[0]!;
        this.call('POST', '/v1/ops', { op: p.hex }).then((j) => p.resolve(opResultFromJson(j)), p.reject);
        continue;
      }
      this.call('POST', '/v1/ops/batch', { ops: group.map((p) => p.hex) }).then(
        (j) => {
          const results = (j as { results?: unknown }).results;
          if (!Array.isArray(results) || results.length !== group.length) {
            const e = new LedgerError('bad_response', 'batch answer does not match the request', 502);
            for (const p of group) p.reject(e);
            return;
          }
          group.forEach((p, i) => {
            const r = results[i] as { status?: unknown; error?: { code?: unknown; message?: unknown } };
            if (r && typeof r === 'object' && r.error) {
              const code = String(r.error.code ?? 'error');
              p.reject(new LedgerError(code, String(r.error.message ?? ''), typeof r.status === 'number' ? r.status : statusOf(code)));
            } else {
              try {
                p.resolve(opResultFromJson(r));
              } catch (e) {
                p.reject(e as Error);
              }
            }
          });
        },
        (e: Error) => {
          for (const p of group) p.reject(e);
        },
      );
    }
  }
  close(): void {
    this.agent.destroy();
  }
}
