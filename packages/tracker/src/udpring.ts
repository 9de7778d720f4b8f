/**
 * Optional UDP send thread. The main thread keeps receiving and answering datagrams (it owns the swarm store);
 * the replies are appended to a single-producer / single-consumer ring in a SharedArrayBuffer and a worker
 * thread sends them from the same socket (it adopts the socket's fd and does not receive). The kernel send path
 * (for loopback: delivery into the receiver's socket and its wake-up) is then off the main thread.
 *
 * Ring: 64-byte control block (Int32: HEAD, TAIL = byte counters, wrapping at 2^32; SLEEP = consumer parked;
 * STOP, CLOSED = shutdown handshake), then `size` bytes (power of two). Record, 4-byte aligned, never split:
 * u16 payload length | u16 port | u8 address length | 3 spare | address (latin1 text) | payload.
 * A length of 0xffff means "continue at offset 0". When the ring is full the caller sends directly.
 *
 * Needs Node internals for the fd (the dgram socket's handle); start() returns null where they are missing.
 */
import { Worker } from 'node:worker_threads';
import type { Socket as UdpSocket } from 'node:dgram';

const HEAD = 0, TAIL = 1, SLEEP = 2, STOP = 3, CLOSED = 4;
const CTL_BYTES = 64;

interface UdpHandle { fd?: number; recvStop?: () => number }

function handleOf(sock: UdpSocket): UdpHandle | null {
  const sym = Object.getOwnPropertySymbols(sock).find((s) => s.description === 'state symbol');
  if (sym === undefined) return null;
  const st = (sock as unknown as Record<symbol, { handle?: UdpHandle } | undefined>)[sym];
  return st?.handle ?? null;
}

export class UdpSendThread {
  private readonly ctl: Int32Array;
  private readonly ring: Buffer;
  private readonly mask: number;
  private head = 0;
  private dead = false;
  /** Replies that went out directly because the ring was full. */
  overflow = 0;
  /** Resolves when the thread has exited. */
  readonly exited: Promise<void>;

  private constructor(
    private readonly worker: Worker,
    sab: SharedArrayBuffer,
    size: number,
  ) {
    this.ctl = new Int32Array(sab, 0, 16);
    this.ring = Buffer.from(sab, CTL_BYTES, size);
    this.mask = size - 1;
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
  }

  /** Start a send thread for this bound socket; null if the socket's fd cannot be reached. */
  static start(sock: UdpSocket, type: 'udp4' | 'udp6', log: (m: string) => void, size = 1 << 22): UdpSendThread | null {
    const h = handleOf(sock);
    const fd = h?.fd;
    if (typeof fd !== 'number' || fd < 0 || typeof h?.recvStop !== 'function') return null;
    if ((size & (size - 1)) !== 0 || size < 1 << 12) throw new Error('ring size must be a power of two >= 4096');
    const sab = new SharedArrayBuffer(CTL_BYTES + size);
    const worker = new Worker(new URL('./udp-sender.mjs', import.meta.url), {
      workerData: { fd, sab, type, ringOffset: CTL_BYTES, HEAD, TAIL, SLEEP, STOP, CLOSED },
      stdout: false,
      stderr: false,
    });
    const t = new UdpSendThread(worker, sab, size);
    worker.on('error', (e) => {
      t.dead = true;
      log(`udp send thread failed, sending from the main thread: ${e.message}`);
    });
    worker.on('exit', () => {
      t.dead = true;
    });
    worker.unref();
    return t;
  }

  /**
   * Queue `payload` for address:port. Returns false (caller sends itself) when the ring is full or the thread
   * is gone. The payload is copied: the caller may reuse its buffer at once.
   */
  push(payload: Buffer, port: number, address: string): boolean {
    if (this.dead) return false;
    const len = payload.length;
    const alen = address.length;
    if (len >= 0xffff || alen > 255) return false;
    const need = (8 + alen + len + 3) & ~3;
    const size = this.mask + 1;
    const ctl = this.ctl;
    const used = (this.head - Atomics.load(ctl, TAIL)) >>> 0;
    let pos = this.head & this.mask;
    let skip = 0;
    if (size - pos < need) skip = size - pos; // does not fit before the end: wrap
    if (used + skip + need > size) {
      this.overflow++;
      return false;
    }
    const r = this.ring;
    if (skip > 0) {
      r[pos] = 0xff;
      r[pos + 1] = 0xff;
      pos = 0;
    }
    r[pos] = len >>> 8;
    r[pos + 1] = len & 0xff;
    r[pos + 2] = port >>> 8;
    r[pos + 3] = port & 0xff;
    r[pos + 4] = alen;
    for (let i = 0; i < alen; i++) r[pos + 8 + i] = address.charCodeAt(i);
    payload.copy(r, pos + 8 + alen);
    this.head = (this.head + skip + need) | 0;
    Atomics.store(ctl, HEAD, this.head);
    if (Atomics.load(ctl, SLEEP) === 1) Atomics.notify(ctl, HEAD, 1);
    return true;
  }

  /**
   * Stop the thread and let it close the shared fd; blocks (bounded) until it has. Afterwards the caller closes
   * its own socket (whose close of the same fd number then fails harmlessly) — the main thread opens nothing in
   * between, which is why this waits synchronously.
   */
  stop(): boolean {
    if (this.dead) return false;
    this.dead = true;
    Atomics.store(this.ctl, STOP, 1);
    Atomics.notify(this.ctl, HEAD);
    const r = Atomics.wait(this.ctl, CLOSED, 0, 2000);
    void this.worker.terminate();
    return r !== 'timed-out';
  }
}
