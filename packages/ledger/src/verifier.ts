/**
 * Batched, pipelined Ed25519 verification on worker threads (default one per core). Signatures queued while a worker
 * is busy are packed into its next message (≤ maxChunk items); every idle worker gets an even share, and each chunk is
 * answered on its own as soon as it is done (callers order results themselves). With 0 threads verification is inline.
 */
import { Worker } from 'node:worker_threads';
import { verify } from './keys.js';

export interface VerifyItem {
  msg: Buffer;
  sig: Buffer;
  pub: Buffer;
}

interface Pending {
  items: VerifyItem[];
  resolve: (v: boolean[]) => void;
}

export class Verifier {
  private workers: Worker[] = [];
  /** Per worker: whether a message is in flight (each worker has at most one, so the queue keeps batching). */
  private busy: boolean[] = [];
  private queue: Pending[] = [];
  private queuedItems = 0;
  private scheduled = false;
  private nextId = 1;
  private inflight = new Map<number, { parts: Pending[]; worker: number }>();
  private closed = false;
  /** Counters: messages sent to workers and items verified there. */
  readonly stats = { messages: 0, items: 0 };

  /**
   * @param threads worker threads (0 = inline).
   * @param maxChunk most items sent to one worker in one message: bounds how long an op waits behind others.
   */
  constructor(
    readonly threads: number,
    readonly maxChunk = 128,
  ) {
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL('./verify-worker.mjs', import.meta.url));
      w.unref();
      w.on('message', (m: { id: number; out: Uint8Array }) => this.onReply(m));
      w.on('error', (e) => this.failAll(e));
      this.workers.push(w);
      this.busy.push(false);
    }
  }

  verify(items: VerifyItem[]): Promise<boolean[]> {
    if (this.workers.length === 0 || this.closed) return Promise.resolve(items.map((x) => verify(x.msg, x.sig, x.pub)));
    return new Promise((resolve) => {
      this.queue.push({ items, resolve });
      this.queuedItems += items.length;
      if (!this.scheduled && this.busy.includes(false)) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * Hand queued work to every idle worker: the queue is shared out evenly between the idle workers (at most maxChunk
   * items each). Busy workers pick up what is left when they reply, so verification is a pipeline: while one chunk
   * is verified the next one accumulates, and each chunk is answered on its own (the ledger orders ops itself).
   */
  private flush(): void {
    this.scheduled = false;
    for (;;) {
      if (this.queue.length === 0) return;
      const idle: number[] = [];
      this.busy.forEach((b, i) => {
        if (!b) idle.push(i);
      });
      if (idle.length === 0) return;
      const share = Math.min(this.maxChunk, Math.max(1, Math.ceil(this.queuedItems / idle.length)));
      for (const wi of idle) {
        if (this.queue.length === 0) return;
        const parts: Pending[] = [];
        let n = 0;
        while (this.queue.length > 0 && (n === 0 || n + this.queue[0]!.items.length <= share)) {
          const p = this.queue.shift()!;
          parts.push(p);
          n += p.items.length;
        }
        this.queuedItems -= n;
        this.send(wi, parts);
      }
    }
  }

  private send(wi: number, parts: Pending[]): void {
    let size = 0;
    let n = 0;
    for (const p of parts)
      for (const it of p.items) {
        size += 98 + Math.min(it.msg.length, 65535);
        n++;
      }
    const buf = Buffer.alloc(size);
    let o = 0;
    for (const p of parts)
      for (const it of p.items) {
        if (it.pub.length === 32 && it.sig.length === 64 && it.msg.length < 65536) {
          it.pub.copy(buf, o);
          it.sig.copy(buf, o + 32);
        }
        const len = Math.min(it.msg.length, 65535);
        buf.writeUInt16BE(len, o + 96);
        it.msg.copy(buf, o + 98, 0, len);
        o += 98 + len;
      }
    const id = this.nextId++;
    this.inflight.set(id, { parts, worker: wi });
    this.busy[wi] = true;
    this.stats.messages++;
    this.stats.items += n;
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    this.workers[wi]!.postMessage({ id, buf: ab, n }, [ab]);
  }

  private onReply(m: { id: number; out: Uint8Array }): void {
    const f = this.inflight.get(m.id);
    if (!f) return;
    this.inflight.delete(m.id);
    this.busy[f.worker] = false;
    // Give the worker its next chunk before answering, so it verifies while the main thread handles these results.
    if (this.queue.length > 0) this.flush();
    let i = 0;
    for (const p of f.parts) {
      const v: boolean[] = [];
      for (const it of p.items) {
        const ok = m.out[i++] === 1 && it.pub.length === 32 && it.sig.length === 64 && it.msg.length < 65536;
        v.push(ok);
      }
      p.resolve(v);
    }
  }

  private failAll(_e: Error): void {
    // A crashed worker: verify what was in flight inline so no caller hangs.
    for (const [id, f] of this.inflight) {
      this.inflight.delete(id);
      for (const p of f.parts) p.resolve(p.items.map((x) => verify(x.msg, x.sig, x.pub)));
    }
    for (const w of this.workers) void w.terminate();
    this.workers = [];
    this.busy = [];
    for (const p of this.queue.splice(0)) p.resolve(p.items.map((x) => verify(x.msg, x.sig, x.pub)));
    this.queuedItems = 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    // Wait for replies in flight (flush hands out whatever is still queued as workers free up).
    while (this.inflight.size > 0 || this.queue.length > 0) {
      this.flush();
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers = [];
  }
}
