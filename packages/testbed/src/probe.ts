/** Readiness probe: does a peer at host:port answer a BitTorrent handshake for this torrent? */
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { mseInitiate, CRYPTO_PLAINTEXT, CRYPTO_RC4 } from '@bitorrent/core';
import { waitFor } from './util.js';

/**
 * Connects, sends a BEP 3 handshake for `infoHash` (inside an MSE handshake when `encrypted`, for peers that
 * refuse plaintext) and resolves true if the remote answers with a handshake for the same info-hash, false if
 * it closes or stays silent (timeoutMs).
 */
export function probeHandshake(host: string, port: number, infoHash: string, timeoutMs = 2000, encrypted = false): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, host);
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const talk = (stream: Duplex): void => {
      const reserved = Buffer.alloc(8);
      const peerId = Buffer.from(`-TB0001-${Math.random().toString(36).slice(2, 14).padEnd(12, '0')}`, 'latin1');
      stream.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 48) finish(buf[0] === 19 && buf.subarray(28, 48).equals(Buffer.from(infoHash, 'hex')));
      });
      stream.resume();
      stream.write(Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol', 'latin1'), reserved, Buffer.from(infoHash, 'hex'), peerId]));
    };
    s.on('connect', () => {
      if (!encrypted) return talk(s);
      mseInitiate(s, Buffer.from(infoHash, 'hex'), { provide: CRYPTO_PLAINTEXT | CRYPTO_RC4, timeoutMs }).then(
        (r) => talk(r.stream),
        () => finish(false),
      );
    });
    s.on('error', () => finish(false));
    s.on('close', () => finish(false));
  });
}

/** Polls probeHandshake until the peer answers for `infoHash`. */
export async function waitAcceptsPeers(host: string, port: number, infoHash: string, timeoutMs = 15_000, encrypted = false): Promise<void> {
  await waitFor(() => probeHandshake(host, port, infoHash, 2000, encrypted), { timeoutMs, intervalMs: 100, what: `${host}:${port} to accept peers for ${infoHash}` });
}
