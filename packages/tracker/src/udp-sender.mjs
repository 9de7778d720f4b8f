// UDP send thread of the tracker (plain JS: workers do not get the tsx loader). The main thread answers each
// datagram and appends the reply to a single-producer / single-consumer ring in a SharedArrayBuffer; this thread
// sends it from the same UDP socket (same fd, receiving stopped here), so the kernel's send path runs beside the
// main thread's receive + tracker work. Protocol and layout: see udpring.ts.
import { workerData } from 'node:worker_threads';
import { createSocket } from 'node:dgram';

const { fd, sab, type, ringOffset, HEAD, TAIL, SLEEP, STOP, CLOSED } = workerData;
const ctl = new Int32Array(sab, 0, 16);
const ring = Buffer.from(sab, ringOffset);
const size = ring.length;
const mask = size - 1;

const sock = createSocket({
  type,
  // Replies go to literal addresses: no DNS.
  lookup: (address, _o, cb) => cb(null, address, address.includes(':') ? 6 : 4),
});
sock.on('error', () => {});
sock.bind({ fd });
const state = Object.getOwnPropertySymbols(sock).find((s) => s.description === 'state symbol');
// Only the main thread receives.
sock[state].handle.recvStop();

let tail = Atomics.load(ctl, TAIL);

function closeAndExit() {
  // Closing this handle closes the shared fd: the main thread waits (blocked) for CLOSED, then closes its own.
  try { sock.close(); } catch { /* already closed */ }
  Atomics.store(ctl, CLOSED, 1);
  Atomics.notify(ctl, CLOSED);
}

function loop() {
  for (;;) {
    if (Atomics.load(ctl, STOP) === 1) return closeAndExit();
    const head = Atomics.load(ctl, HEAD);
    while (tail !== head) {
      const pos = tail & mask;
      const len = (ring[pos] << 8) | ring[pos + 1];
      if (len === 0xffff) {
        // Wrap marker: the producer continued at offset 0.
        tail = (tail + (size - pos)) | 0;
        continue;
      }
      const port = (ring[pos + 2] << 8) | ring[pos + 3];
      const alen = ring[pos + 4];
      const address = ring.toString("latin1", pos + 8, pos + 8 + alen);
      const start = pos + 8 + alen;
      const rec = (8 + alen + len + 3) & ~3;
      sock.send(ring.subarray(start, start + len), port, address);
      if (sock.getSendQueueCount() !== 0) {
        // The kernel buffer is full and the datagram was queued, still pointing into the ring: keep its bytes
        // (tail not published past it) until the queue drains, on the event loop.
        const held = (tail + rec) | 0;
        const wait = () => {
          if (Atomics.load(ctl, STOP) === 1) return closeAndExit();
          if (sock.getSendQueueCount() !== 0) return void setTimeout(wait, 1);
          tail = held;
          Atomics.store(ctl, TAIL, tail);
          setImmediate(loop);
        };
        return void setImmediate(wait);
      }
      tail = (tail + rec) | 0;
      Atomics.store(ctl, TAIL, tail);
    }
    // Announce we are going to sleep, then re-check: the producer stores HEAD before it loads SLEEP.
    Atomics.store(ctl, SLEEP, 1);
    const h = Atomics.load(ctl, HEAD);
    if (h === tail && Atomics.load(ctl, STOP) === 0) Atomics.wait(ctl, HEAD, h, 250);
    Atomics.store(ctl, SLEEP, 0);
  }
}

loop();
