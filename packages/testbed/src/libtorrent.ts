/** A python3-libtorrent peer (packages/testbed/src/lt_peer.py) driven over JSON lines. */
import { fileURLToPath } from 'node:url';
import { requireLibtorrent, waitFor } from './util.js';
import { startProcess, withOutput, type ManagedProcess } from './process.js';

export const LT_PEER_SCRIPT = fileURLToPath(new URL('./lt_peer.py', import.meta.url));

export interface LibtorrentOptions {
  mode: 'seed' | 'download';
  /** Path of a .torrent file. */
  torrent?: string;
  /** Magnet link or bare hex info-hash (download mode). */
  magnet?: string;
  savePath: string;
  /** Listen address; default 127.0.0.1. Port 0 (default) = ephemeral, reported in `port`. */
  host?: string;
  port?: number;
  peers?: { host: string; port: number }[];
  dht?: boolean;
  dhtNodes?: { host: string; port: number }[];
  /** MSE/PE: false (default) plaintext only, true allowed, 'forced' encrypted (RC4) only. */
  encryption?: boolean | 'forced';
  seedMode?: boolean;
  uploadRateLimit?: number;
  downloadRateLimit?: number;
  statusIntervalMs?: number;
  exitOnFinish?: boolean;
  /** Settings tuned for one fast loopback transfer (benchmarks). */
  bench?: boolean;
  peerIdPrefix?: string;
}

export interface LtStatus {
  progress: number;
  state: string;
  peers: number;
  seeds: number;
  total_done: number;
  total_wanted: number;
  download_rate: number;
  upload_rate: number;
  total_upload: number;
  total_download: number;
  is_seeding: boolean;
  has_metadata: boolean;
  errc: string;
}

export interface LtEvent {
  event: string;
  [k: string]: unknown;
}

export interface LibtorrentPeer {
  process: ManagedProcess;
  host: string;
  port: number;
  infoHash?: string;
  /** Latest status line. */
  status(): LtStatus | undefined;
  events: LtEvent[];
  /** Resolves with the first event of that name (already seen or future). */
  once(event: string, timeoutMs?: number): Promise<LtEvent>;
  connect(host: string, port: number): void;
  addDhtNode(host: string, port: number): void;
  /** Waits until the torrent is complete (seeding). */
  waitSeeding(timeoutMs?: number): Promise<LtStatus>;
  stop(): Promise<void>;
}

export async function startLibtorrent(opts: LibtorrentOptions): Promise<LibtorrentPeer> {
  const py = requireLibtorrent();
  if (!py) throw new Error('python3-libtorrent is not installed');
  const host = opts.host ?? '127.0.0.1';
  const cfg = {
    mode: opts.mode,
    torrent: opts.torrent,
    magnet: opts.magnet,
    save_path: opts.savePath,
    listen: `${host}:${opts.port ?? 0}`,
    peers: (opts.peers ?? []).map((p) => [p.host, p.port]),
    dht: opts.dht ?? false,
    dht_nodes: (opts.dhtNodes ?? []).map((p) => [p.host, p.port]),
    encryption: opts.encryption ?? false,
    seed_mode: opts.seedMode ?? false,
    upload_rate_limit: opts.uploadRateLimit ?? 0,
    download_rate_limit: opts.downloadRateLimit ?? 0,
    status_interval_ms: opts.statusIntervalMs ?? 250,
    exit_on_finish: opts.exitOnFinish ?? false,
    bench: opts.bench ?? false,
    peer_id_prefix: opts.peerIdPrefix ?? '-LT2080-',
  };
  const events: LtEvent[] = [];
  const waiters: { name: string; resolve: (e: LtEvent) => void }[] = [];
  let last: LtStatus | undefined;
  const proc = startProcess(py, [LT_PEER_SCRIPT, JSON.stringify(cfg)], {
    name: `libtorrent-${opts.mode}`,
    stdin: true,
    maxOutput: 256 * 1024,
    onLine(line) {
      if (!line.startsWith('{')) return;
      let e: LtEvent;
      try {
        e = JSON.parse(line) as LtEvent;
      } catch {
        return;
      }
      if (e.event === 'status') last = e as unknown as LtStatus;
      else events.push(e);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].name === e.event) {
          waiters[i].resolve(e);
          waiters.splice(i, 1);
        }
      }
    },
  });
  const once = (name: string, timeoutMs = 30_000): Promise<LtEvent> => {
    const seen = events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    return new Promise<LtEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(withOutput(proc, `libtorrent: no '${name}' event within ${timeoutMs} ms`)), timeoutMs);
      const w = {
        name,
        resolve: (e: LtEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      waiters.push(w);
      void proc.exited.then(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) {
          waiters.splice(i, 1);
          clearTimeout(timer);
          reject(withOutput(proc, `libtorrent exited before '${name}'`));
        }
      });
    });
  };
  const listening = await once('listening', 15_000);
  const added = await once('added', 15_000).catch(() => undefined);
  const peer: LibtorrentPeer = {
    process: proc,
    host,
    port: Number(listening.port),
    infoHash: added ? String(added.info_hash) : undefined,
    status: () => last,
    events,
    once,
    connect(h, p) {
      proc.send(JSON.stringify({ cmd: 'connect', host: h, port: p }));
    },
    addDhtNode(h, p) {
      proc.send(JSON.stringify({ cmd: 'dht_node', host: h, port: p }));
    },
    async waitSeeding(timeoutMs = 60_000) {
      return waitFor(
        () => {
          if (proc.hasExited() && !last?.is_seeding) throw withOutput(proc, 'libtorrent exited');
          return last && last.is_seeding ? last : undefined;
        },
        { timeoutMs, intervalMs: 50, what: 'libtorrent to be seeding' },
      ).catch((err: Error) => {
        throw withOutput(proc, err.message);
      });
    },
    stop: () => proc.stop(),
  };
  return peer;
}
