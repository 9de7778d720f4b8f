/**
 * SHA-1 piece hashing off the event loop: a small pool of worker threads, each with its own
 * SharedArrayBuffer input area. A job copies the piece into the area (memcpy, much cheaper than SHA-1)
 * and the worker hashes it in place, so callers keep their buffers intact. Inputs below
 * `syncThreshold` bytes are hashed synchronously (a worker round-trip would cost more).
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

export interface PieceHasherOptions {
  /** Worker threads; default max(1, availableParallelism() - 1). 0 = hash synchronously on the calling thread. */
  workers?: number;
  /** Inputs smaller than this are hashed synchronously (default 64 KiB). */
  syncThreshold?: number;
}

interface Job {
  data: Uint8Array;
  resolve: (d: Buffer) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** Input areas; a job owns one while in flight (2 per worker: the next copy overlaps the current hash). */
  slabs: SharedArrayBuffer[];
  free: number[];
  inflight: Map<number, { job: Job; slab: number }>;
}

/** Jobs in flight per worker. */
const DEPTH = 2;

export function sha1Sync(data: Uint8Array): Buffer {
  return createHash('sha1').update(data).digest();
}

export class PieceHasher {
  readonly workerCount: number;
  private readonly syncThreshold: number;
  private slots: Slot[] = [];
  private queue: Job[] = [];
  private closed = false;
  private nextId = 1;

  constructor(opts: PieceHasherOptions = {}) {
    this.workerCount = Math.max(0, Math.floor(opts.workers ?? Math.max(1, availableParallelism() - 1)));
    this.syncThreshold = opts.syncThreshold ?? 64 * 1024;
  }

  /** SHA-1 of `data`. The buffer is not modified or detached. */
  sha1(data: Uint8Array): Promise<Buffer> {
    if (this.closed) return Promise.reject(new Error('PieceHasher is closed'));
    if (this.workerCount === 0 || data.length < this.syncThreshold) return Promise.resolve(sha1Sync(data));
    return new Promise<Buffer>((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      this.pump();
    });
  }

  /** Stop the workers; pending jobs are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('PieceHasher closed');
    for (const j of this.queue.splice(0)) j.reject(err);
    const slots = this.slots.splice(0);
    for (const s of slots) for (const { job } of s.inflight.values()) job.reject(err);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./hash-worker.mjs', import.meta.url));
    const slot: Slot = {
      worker,
      slabs: Array.from({ length: DEPTH }, () => new SharedArrayBuffer(0)),
      free: Array.from({ length: DEPTH }, (_, i) => i),
      inflight: new Map(),
    };
    worker.on('message', (msg: { id: number; digest?: Uint8Array; error?: string }) => {
      const e = slot.inflight.get(msg.id);
      if (!e) return;
      slot.inflight.delete(msg.id);
      slot.free.push(e.slab);
      if (msg.digest) e.job.resolve(Buffer.from(msg.digest.buffer, msg.digest.byteOffset, msg.digest.byteLength));
      else e.job.reject(new Error(`hash worker: ${msg.error}`));
      this.pump();
    });
    worker.on('error', (e) => this.onWorkerFailure(slot, e));
    worker.on('exit', (code) => {
      if (!this.closed) this.onWorkerFailure(slot, new Error(`hash worker exited with code ${code}`));
    });
    worker.unref();
    this.slots.push(slot);
    return slot;
  }

  private onWorkerFailure(slot: Slot, e: Error): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    const jobs = [...slot.inflight.values()].map((x) => x.job);
    slot.inflight.clear();
    void slot.worker.terminate();
    // Do not lose the jobs: hash them synchronously rather than failing the callers.
    for (const job of jobs) {
      try {
        job.resolve(sha1Sync(job.data));
      } catch {
        job.reject(e);
      }
    }
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0) {
      // Prefer an idle worker, then spawn, then queue a second job on a busy one.
      let slot = this.slots.find((s) => s.inflight.size === 0);
      if (!slot && this.slots.length < this.workerCount) slot = this.spawn();
      slot ??= this.slots.find((s) => s.free.length > 0);
      if (!slot) break;
      const job = this.queue.shift()!;
      const k = slot.free.pop()!;
      if (slot.slabs[k].byteLength < job.data.length) {
        slot.slabs[k] = new SharedArrayBuffer(Math.max(job.data.length, 256 * 1024));
        slot.worker.postMessage({ slab: slot.slabs[k], index: k });
      }
      new Uint8Array(slot.slabs[k]).set(job.data);
      const id = this.nextId++;
      slot.inflight.set(id, { job, slab: k });
      slot.worker.ref(); // keep the process alive while a job is in flight
      slot.worker.postMessage({ id, index: k, length: job.data.length });
    }
    for (const s of this.slots) if (s.inflight.size === 0) s.worker.unref();
  }
}
