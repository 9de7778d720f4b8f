/**
 * Batched Ed25519 verification. Signatures submitted in the same event-loop turn are packed into one message per
 * worker thread (so verification runs on another core while the main thread serves HTTP and commits); with 0 threads
 * verification is inline.
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
  private rr = 0;
  private queue: Pending[] = [];
  private scheduled = false;
  private nextId = 1;
  private inflight = new Map<number, { parts: Pending[]; onDone: (release: () => void) => void }>();
  private closed = false;

  constructor(readonly threads: number) {
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL('./verify-worker.mjs', import.meta.url));
      w.unref();
      w.on('message', (m: { id: number; out: Uint8Array }) => this.onReply(m));
      w.on('error', (e) => this.failAll(e));
      this.workers.push(w);
    }
  }

  verify(items: VerifyItem[]): Promise<boolean[]> {
    if (this.workers.length === 0 || this.closed) return Promise.resolve(items.map((x) => verify(x.msg, x.sig, x.pub)));
    return new Promise((resolve) => {
      this.queue.push({ items, resolve });
      if (!this.scheduled && this.inflight.size === 0) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Send everything queued, split over the workers. While a flush is in flight the queue grows (natural batching). */
  private flush(): void {
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    if (q.length === 0) return;
    // Split the queue over the workers; answer everyone together so a commit batch is not split in two.
    const per = Math.ceil(q.length / this.workers.length);
    const groups: Pending[][] = [];
    for (let i = 0; i < q.length; i += per) groups.push(q.slice(i, i + per));
    let left = groups.length;
    const done: (() => void)[] = [];
    for (const g of groups)
      this.send(g, (release) => {
        done.push(release);
        if (--left === 0) for (const f of done) f();
      });
  }

  private send(parts: Pending[], onDone: (release: () => void) => void): void {
    let size = 0;
    let n = 0;
    for (const p of parts) for (const it of p.items) {
      size += 98 + it.msg.length;
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
        buf.writeUInt16BE(Math.min(it.msg.length, 65535), o + 96);
        it.msg.copy(buf, o + 98, 0, Math.min(it.msg.length, 65535));
        o += 98 + it.msg.length;
      }
    const id = this.nextId++;
    this.inflight.set(id, { parts, onDone });
    const w = this.workers[this.rr++ % this.workers.length]!;
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    w.postMessage({ id, buf: ab, n }, [ab]);
  }

  private onReply(m: { id: number; out: Uint8Array }): void {
    const f = this.inflight.get(m.id);
    if (!f) return;
    this.inflight.delete(m.id);
    let i = 0;
    const verdicts: boolean[][] = [];
    for (const p of f.parts) {
      const v: boolean[] = [];
      for (const it of p.items) {
        const ok = m.out[i++] === 1 && it.pub.length === 32 && it.sig.length === 64 && it.msg.length < 65536;
        v.push(ok);
      }
      verdicts.push(v);
    }
    f.onDone(() => f.parts.forEach((p, j) => p.resolve(verdicts[j]!)));
    if (this.inflight.size === 0 && this.queue.length > 0 && !this.scheduled) this.flush();
  }

  private failAll(_e: Error): void {
    // A crashed worker: verify what was in flight inline so no caller hangs.
    for (const [id, f] of this.inflight) {
      this.inflight.delete(id);
      const v = f.parts.map((p) => p.items.map((x) => verify(x.msg, x.sig, x.pub)));
      f.onDone(() => f.parts.forEach((p, j) => p.resolve(v[j]!)));
    }
    for (const w of this.workers) void w.terminate();
    this.workers = [];
    for (const p of this.queue.splice(0)) p.resolve(p.items.map((x) => verify(x.msg, x.sig, x.pub)));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.flush();
    // Wait for replies in flight.
    while (this.inflight.size > 0) await new Promise((r) => setTimeout(r, 1));
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers = [];
  }
}
