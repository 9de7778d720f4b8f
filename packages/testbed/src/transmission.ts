/**
 * transmission-daemon (3.00) with a temp config dir, RPC on loopback (handles the 409
 * X-Transmission-Session-Id handshake). Transmission has no "add peer" RPC: peers reach it
 * through a tracker (opentracker). uTP, DHT, LPD, PEX and port mapping are off.
 * Transmission 3.00 never dials peers in 127.0.0.0/8 (it treats them as martian addresses): it
 * only accepts them. So the other side must learn Transmission's address from the tracker and
 * connect to it — register Transmission's torrent first, then start the other peer.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireTool, tempDir, freePort, waitFor } from './util.js';
import { startProcess, withOutput, type ManagedProcess } from './process.js';

export interface TransmissionOptions {
  host?: string;
  peerPort?: number;
  rpcPort?: number;
  /** Settings merged over the defaults written to settings.json. */
  settings?: Record<string, unknown>;
}

export interface TrTorrent {
  id: number;
  hashString: string;
  name: string;
  percentDone: number;
  status: number;
  error: number;
  errorString: string;
  leftUntilDone: number;
  rateDownload: number;
  rateUpload: number;
  uploadedEver: number;
  downloadedEver: number;
  peersConnected: number;
  recheckProgress: number;
  [k: string]: unknown;
}

export interface Transmission {
  process: ManagedProcess;
  host: string;
  peerPort: number;
  rpcPort: number;
  configDir: string;
  rpc<T = Record<string, unknown>>(method: string, args?: Record<string, unknown>): Promise<T>;
  /** Adds a .torrent (bytes) into downloadDir; returns its RPC id. Verifies existing data. */
  addTorrent(torrent: Buffer, downloadDir: string): Promise<number>;
  get(infoHash: string): Promise<TrTorrent | undefined>;
  /** Asks Transmission to re-announce now (so it learns peers that registered later). */
  reannounce(infoHash: string): Promise<void>;
  waitComplete(infoHash: string, timeoutMs?: number): Promise<TrTorrent>;
  stop(): Promise<void>;
}

const FIELDS = ['id', 'hashString', 'name', 'percentDone', 'status', 'error', 'errorString', 'leftUntilDone', 'rateDownload', 'rateUpload', 'uploadedEver', 'downloadedEver', 'peersConnected', 'recheckProgress', 'trackerStats'];

export async function startTransmission(opts: TransmissionOptions = {}): Promise<Transmission> {
  const bin = requireTool('transmission-daemon');
  if (!bin) throw new Error('transmission-daemon is not installed');
  const host = opts.host ?? '127.0.0.1';
  const rpcPort = opts.rpcPort ?? (await freePort(host));
  const peerPort = opts.peerPort ?? (await freePort(host));
  const dir = await tempDir('transmission-');
  const downloads = join(dir.path, 'downloads');
  await mkdir(downloads, { recursive: true });
  const settings = {
    'bind-address-ipv4': host,
    'bind-address-ipv6': '::1',
    'peer-port': peerPort,
    'peer-port-random-on-start': false,
    'port-forwarding-enabled': false,
    'utp-enabled': false,
    'dht-enabled': false,
    'lpd-enabled': false,
    'pex-enabled': false,
    encryption: 0,
    'rpc-enabled': true,
    'rpc-bind-address': host,
    'rpc-port': rpcPort,
    'rpc-authentication-required': false,
    'rpc-whitelist-enabled': false,
    'rpc-host-whitelist-enabled': false,
    'download-dir': downloads,
    'incomplete-dir-enabled': false,
    'start-added-torrents': true,
    'ratio-limit-enabled': false,
    'idle-seeding-limit-enabled': false,
    'speed-limit-down-enabled': false,
    'speed-limit-up-enabled': false,
    'alt-speed-enabled': false,
    'blocklist-enabled': false,
    'queue-stalled-enabled': false,
    'download-queue-enabled': false,
    'seed-queue-enabled': false,
    'message-level': 2,
    'cache-size-mb': 4,
    'prefetch-enabled': false,
    umask: 18,
    ...opts.settings,
  };
  await writeFile(join(dir.path, 'settings.json'), JSON.stringify(settings, null, 2));
  const proc = startProcess(bin, ['-f', '-g', dir.path, '--log-error'], { name: 'transmission-daemon' });
  const url = `http://${host}:${rpcPort}/transmission/rpc`;
  let sessionId = '';
  const rpc = async <T>(method: string, args: Record<string, unknown> = {}): Promise<T> => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'X-Transmission-Session-Id': sessionId },
        body: JSON.stringify({ method, arguments: args }),
      });
      if (res.status === 409) {
        sessionId = res.headers.get('x-transmission-session-id') ?? '';
        await res.text();
        continue;
      }
      const text = await res.text();
      if (!res.ok) throw new Error(`transmission ${method}: HTTP ${res.status} ${text}`);
      const body = JSON.parse(text) as { result: string; arguments: T };
      if (body.result !== 'success') throw new Error(`transmission ${method}: ${body.result}`);
      return body.arguments;
    }
    throw new Error(`transmission ${method}: session-id handshake failed`);
  };
  await waitFor(
    async () => {
      if (proc.hasExited()) throw withOutput(proc, 'transmission-daemon exited during start-up');
      await rpc('session-get', { fields: ['version'] });
      return true;
    },
    { timeoutMs: 15_000, intervalMs: 100, what: 'transmission RPC' },
  ).catch((err: Error) => {
    throw withOutput(proc, err.message);
  });

  const get = async (infoHash: string): Promise<TrTorrent | undefined> => {
    const r = await rpc<{ torrents: TrTorrent[] }>('torrent-get', { ids: [infoHash.toLowerCase()], fields: FIELDS });
    return r.torrents[0];
  };
  return {
    process: proc,
    host,
    peerPort,
    rpcPort,
    configDir: dir.path,
    rpc,
    async addTorrent(torrent, downloadDir) {
      const r = await rpc<{ 'torrent-added'?: { id: number }; 'torrent-duplicate'?: { id: number } }>('torrent-add', {
        metainfo: torrent.toString('base64'),
        'download-dir': downloadDir,
        paused: false,
      });
      const t = r['torrent-added'] ?? r['torrent-duplicate'];
      if (!t) throw new Error('transmission torrent-add: no torrent in reply');
      return t.id;
    },
    get,
    async reannounce(infoHash) {
      await rpc('torrent-reannounce', { ids: [infoHash.toLowerCase()] });
    },
    waitComplete(infoHash, timeoutMs = 60_000) {
      return waitFor(
        async () => {
          if (proc.hasExited()) throw withOutput(proc, 'transmission-daemon exited');
          const t = await get(infoHash);
          if (t && t.error) throw new Error(`transmission torrent error: ${t.errorString}`);
          // status 6 = seeding, 5 = queued to seed, 0 = stopped; percentDone 1 after verification.
          return t && t.percentDone >= 1 && t.leftUntilDone === 0 && t.status !== 1 && t.status !== 2 ? t : undefined;
        },
        { timeoutMs, intervalMs: 100, what: `transmission to complete ${infoHash}` },
      );
    },
    stop: () => proc.stop(5000),
  };
}
