/** BEP 15 request packets and a reply collector shared by the tracker's UDP tests. Not a test file itself. */
import type { Socket } from 'node:dgram';

/** A connect request with transaction id `tx`. */
export function udpConnect(tx = 7): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0x417, 0);
  b.writeUInt32BE(0x27101980, 4);
  b.writeUInt32BE(0, 8);
  b.writeUInt32BE(tx, 12);
  return b;
}

export interface UdpAnnounceFields {
  conn: Buffer;
  infoHash: Buffer;
  port: number;
  left: bigint;
  tx: number;
  /** 0 none, 1 completed, 2 started, 3 stopped (default 0). */
  event?: number;
  numwant?: number;
  /** Default: 20 zero bytes. */
  peerId?: Buffer;
}

/** An IPv4 announce request (98 bytes, no extensions). */
export function udpAnnounce(f: UdpAnnounceFields): Buffer {
  const b = Buffer.alloc(98);
  f.conn.copy(b, 0);
  b.writeUInt32BE(1, 8);
  b.writeUInt32BE(f.tx, 12);
  f.infoHash.copy(b, 16);
  f.peerId?.copy(b, 36);
  b.writeBigUInt64BE(f.left, 64);
  b.writeUInt32BE(f.event ?? 0, 80);
  b.writeInt32BE(f.numwant ?? -1, 92);
  b.writeUInt16BE(f.port, 96);
  return b;
}

/**
 * Every datagram `sock` receives, in arrival order; waitFor(n) resolves once n have arrived, and rejects after
 * `timeoutMs` (a lost datagram fails the test with a count instead of hanging it).
 */
export function collectUdpReplies(sock: Socket, timeoutMs = 15_000): { replies: Buffer[]; waitFor(n: number): Promise<void> } {
  const replies: Buffer[] = [];
  let want = 0;
  let wake: (() => void) | null = null;
  sock.on('message', (m) => {
    replies.push(m);
    if (replies.length >= want && wake) wake();
  });
  return {
    replies,
    waitFor: (n) =>
      new Promise((resolve, reject) => {
        want = n;
        if (replies.length >= n) return resolve();
        const timer = setTimeout(() => reject(new Error(`${replies.length} of ${n} UDP replies after ${timeoutMs} ms`)), timeoutMs);
        wake = () => {
          clearTimeout(timer);
          wake = null;
          resolve();
        };
      }),
  };
}
