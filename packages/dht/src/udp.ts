/** Real-socket transport: one dgram socket, datagrams handed to the sans-I/O node unchanged. */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { PeerAddress } from '@bitorrent/core';
import type { Transport } from './node.js';

export class UdpTransport implements Transport {
  private cb?: (buf: Buffer, from: PeerAddress) => void;
  private constructor(readonly socket: Socket) {
    socket.on('message', (msg, rinfo) => this.cb?.(msg, { host: rinfo.address, port: rinfo.port }));
    socket.on('error', () => {
      /* ICMP errors and the like: the query times out */
    });
  }

  /** Bind a UDP socket on host:port (port 0: ephemeral). */
  static async bind(port = 0, host = '0.0.0.0'): Promise<UdpTransport> {
    const socket = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4', ipv6Only: isIPv6(host) });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new UdpTransport(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }
  get host(): string {
    return this.socket.address().address;
  }

  send(buf: Buffer, addr: PeerAddress): void {
    this.socket.send(buf, addr.port, addr.host);
  }

  onMessage(cb: (buf: Buffer, from: PeerAddress) => void): void {
    this.cb = cb;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}
