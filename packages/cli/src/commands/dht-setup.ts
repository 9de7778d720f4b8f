/** Start the session's DHT node (BEP 5) for the CLI, if enabled; private torrents never use it. */
import { parsePeerAddress, type PeerAddress, type TorrentDht } from '@bitorrent/core';
import { join } from 'node:path';
import type { SessionFlags } from './common.js';
import { dhtEnabled, parseIntFlag } from './common.js';

export const DEFAULT_DHT_BOOTSTRAP = ['router.bittorrent.com:6881', 'dht.transmissionbt.com:6881', 'router.utorrent.com:6881'];

export interface CliDht extends TorrentDht {
  close(): Promise<void>;
  port: number;
}

export async function startDht(f: SessionFlags, peerPort: number, stateDir: string | undefined): Promise<CliDht | undefined> {
  if (!dhtEnabled(f)) return undefined;
  const { createDht } = await import('@bitorrent/dht');
  const bootstrap: PeerAddress[] = [];
  const given = f['dht-bootstrap'];
  for (const b of given ?? DEFAULT_DHT_BOOTSTRAP) {
    try {
      bootstrap.push(parsePeerAddress(b));
    } catch {
      // host names: resolved by the DHT package
      const i = b.lastIndexOf(':');
      bootstrap.push({ host: b.slice(0, i), port: Number(b.slice(i + 1)) });
    }
  }
  const port = parseIntFlag('dht-port', f['dht-port'], 0, 65535) ?? peerPort;
  return (await createDht({
    port,
    host: f.host && f.host !== '::' ? f.host : '0.0.0.0',
    bootstrap,
    stateFile: stateDir ? join(stateDir, 'dht.dat') : undefined,
  })) as unknown as CliDht;
}
