/**
 * A deliberately hostile BitTorrent seeder for tests: speaks just enough BEP 3 (handshake,
 * bitfield, unchoke, piece) to serve a single-file torrent, but corrupts the pieces chosen
 * by `corrupt`. Plain TCP, no extensions.
 */
import { createServer, type Server, type Socket, type AddressInfo } from 'node:net';
import { open, type FileHandle } from 'node:fs/promises';
import { registerCleanup } from './process.js';

export interface HostileSeederOptions {
  host?: string;
  infoHash: string;
  /** The single data file of the torrent. */
  file: string;
  pieceLength: number;
  pieceCount: number;
  totalLength: number;
  /** Which pieces to corrupt (default: all). */
  corrupt?: (piece: number) => boolean;
}

export interface HostileSeeder {
  host: string;
  port: number;
  /** Connections accepted so far, with their accept time (Date.now()). */
  connections: { at: number; remote: string }[];
  /** Blocks served, and how many of them were corrupted. */
  blocksServed: number;
  corruptBlocksServed: number;
  close(): Promise<void>;
}

export async function startHostileSeeder(opts: HostileSeederOptions): Promise<HostileSeeder> {
  const host = opts.host ?? '127.0.0.1';
  const corrupt = opts.corrupt ?? (() => true);
  const fh: FileHandle = await open(opts.file, 'r');
  const infoHash = Buffer.from(opts.infoHash, 'hex');
  const sockets = new Set<Socket>();
  const state: HostileSeeder = {
    host,
    port: 0,
    connections: [],
    blocksServed: 0,
    corruptBlocksServed: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await fh.close().catch(() => undefined);
    },
  };
  const bitfield = Buffer.alloc(Math.ceil(opts.pieceCount / 8));
  for (let i = 0; i < opts.pieceCount; i++) bitfield[i >> 3] |= 0x80 >> (i & 7);

  const onConn = (sock: Socket): void => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    state.connections.push({ at: Date.now(), remote: `${sock.remoteAddress}:${sock.remotePort}` });
    let buf = Buffer.alloc(0);
    let handshaken = false;
    const send = (id: number, payload: Buffer = Buffer.alloc(0)): void => {
      const h = Buffer.alloc(5);
      h.writeUInt32BE(payload.length + 1, 0);
      h[4] = id;
      sock.write(Buffer.concat([h, payload]));
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!handshaken) {
        if (buf.length < 68) return;
        if (buf[0] !== 19 || !buf.subarray(28, 48).equals(infoHash)) return void sock.destroy();
        handshaken = true;
        buf = buf.subarray(68);
        const peerId = Buffer.from('-XX0001-hostilepeer!', 'latin1');
        sock.write(Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol', 'latin1'), Buffer.alloc(8), infoHash, peerId]));
        send(5, bitfield);
      }
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len > 1 << 20) return void sock.destroy();
        if (buf.length < 4 + len) break;
        const msg = buf.subarray(4, 4 + len);
        buf = buf.subarray(4 + len);
        if (len === 0) continue;
        const id = msg[0];
        if (id === 2) send(1); // interested → unchoke
        else if (id === 6 && len === 13) {
          const index = msg.readUInt32BE(1);
          const begin = msg.readUInt32BE(5);
          const length = msg.readUInt32BE(9);
          void serve(index, begin, length);
        }
      }
      async function serve(index: number, begin: number, length: number): Promise<void> {
        if (index >= opts.pieceCount || length > 1 << 17) return;
        const block = Buffer.alloc(length);
        await fh.read(block, 0, length, index * opts.pieceLength + begin).catch(() => undefined);
        state.blocksServed++;
        if (corrupt(index)) {
          for (let i = 0; i < block.length; i += 97) block[i] ^= 0xff;
          state.corruptBlocksServed++;
        }
        const head = Buffer.alloc(8);
        head.writeUInt32BE(index, 0);
        head.writeUInt32BE(begin, 4);
        if (!sock.destroyed) send(7, Buffer.concat([head, block]));
      }
    });
  };
  const server: Server = createServer(onConn);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  state.port = (server.address() as AddressInfo).port;
  registerCleanup(() => state.close());
  return state;
}
