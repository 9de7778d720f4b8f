/**
 * qbittorrent-nox (4.5.x, libtorrent 2.0) headless with a temp profile, driven via its Web
 * API v2 on loopback (no auth for localhost). uTP, DHT, LSD, PeX, UPnP and encryption are
 * disabled for determinism (our engine is TCP-only); encryption can be turned on per test.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireTool, tempDir, freePort, waitFor } from './util.js';
import { startProcess, withOutput, type ManagedProcess } from './process.js';
import { waitAcceptsPeers } from './probe.js';

export interface QbittorrentOptions {
  host?: string;
  peerPort?: number;
  webPort?: number;
  /** Keep PeX on (default off). */
  pex?: boolean;
  /** Protocol encryption (MSE/PE): default 'disabled'; 'required' refuses plaintext peers. */
  encryption?: 'disabled' | 'enabled' | 'required';
  /** Extra `Key=value` lines per qBittorrent.conf section, e.g. { BitTorrent: ['Session\\Foo=1'] }. */
  config?: Record<string, string[]>;
}

export interface QbtTorrentInfo {
  hash: string;
  name: string;
  progress: number;
  state: string;
  dlspeed: number;
  upspeed: number;
  num_seeds: number;
  num_leechs: number;
  downloaded: number;
  uploaded: number;
  save_path: string;
  size: number;
  [k: string]: unknown;
}

export interface Qbittorrent {
  process: ManagedProcess;
  host: string;
  peerPort: number;
  webPort: number;
  profileDir: string;
  /** Raw Web API call: GET when no form, POST (urlencoded) otherwise. */
  api(path: string, form?: Record<string, string>): Promise<string>;
  /** Adds a .torrent (bytes) saving into savePath; returns when the torrent appears in the list. */
  addTorrent(torrent: Buffer, savePath: string, opts?: { paused?: boolean; skipChecking?: boolean }): Promise<void>;
  /** Adds a magnet link. */
  addMagnet(magnet: string, savePath: string): Promise<void>;
  addPeers(infoHash: string, peers: { host: string; port: number }[]): Promise<void>;
  info(infoHash: string): Promise<QbtTorrentInfo | undefined>;
  /** Waits until progress == 1 (downloaded and verified) — also true for a seed that finished checking. */
  waitComplete(infoHash: string, timeoutMs?: number): Promise<QbtTorrentInfo>;
  /** waitComplete, then until its peer port answers handshakes for the torrent (ready to seed). */
  waitSeeding(infoHash: string, timeoutMs?: number): Promise<QbtTorrentInfo>;
  stop(): Promise<void>;
}

export async function startQbittorrent(opts: QbittorrentOptions = {}): Promise<Qbittorrent> {
  const bin = requireTool('qbittorrent-nox');
  if (!bin) throw new Error('qbittorrent-nox is not installed');
  const host = opts.host ?? '127.0.0.1';
  const webPort = opts.webPort ?? (await freePort(host));
  const peerPort = opts.peerPort ?? (await freePort(host));
  const profile = await tempDir('qbittorrent-');
  const confDir = join(profile.path, 'qBittorrent', 'config');
  await mkdir(confDir, { recursive: true });
  const conf: string[] = [
    '[LegalNotice]',
    'Accepted=true',
    '',
    '[BitTorrent]',
    'Session\\DHTEnabled=false',
    'Session\\LSDEnabled=false',
    `Session\\PeXEnabled=${opts.pex ? 'true' : 'false'}`,
    `Session\\Port=${peerPort}`,
    `Session\\InterfaceAddress=${host}`,
    'Session\\BTProtocol=TCP',
    `Session\\Encryption=${{ enabled: 0, required: 1, disabled: 2 }[opts.encryption ?? 'disabled']}`,
    'Session\\MultiConnectionsPerIp=true',
    'Session\\AnonymousModeEnabled=false',
    'Session\\QueueingSystemEnabled=false',
    'Session\\ValidateHTTPSTrackerCertificate=false',
    'Session\\SSRFMitigation=false',
    'Session\\AddTorrentPaused=false',
    'Session\\UseRandomPort=false',
    `Session\\DefaultSavePath=${join(profile.path, 'downloads')}`,
    '',
    '[Preferences]',
    `WebUI\\Port=${webPort}`,
    `WebUI\\Address=${host}`,
    'WebUI\\LocalHostAuth=false',
    'WebUI\\CSRFProtection=false',
    'WebUI\\HostHeaderValidation=false',
    'WebUI\\ClickjackingProtection=false',
    'WebUI\\UseUPnP=false',
    `Connection\\PortRangeMin=${peerPort}`,
    'Connection\\UPnP=false',
    'Connection\\ResolvePeerCountries=false',
    'General\\PreventFromSuspendWhenDownloading=false',
    'Advanced\\AnonymousMode=false',
    '',
  ];
  for (const [section, lines] of Object.entries(opts.config ?? {})) {
    const at = conf.indexOf(`[${section}]`);
    if (at >= 0) conf.splice(at + 1, 0, ...lines);
    else conf.push(`[${section}]`, ...lines, '');
  }
  const confText = conf.join('\n');
  await writeFile(join(confDir, 'qBittorrent.conf'), confText);
  const proc = startProcess(bin, [`--profile=${profile.path}`, `--webui-port=${webPort}`, `--torrenting-port=${peerPort}`], {
    name: 'qbittorrent-nox',
    env: { ...process.env, HOME: profile.path, XDG_CONFIG_HOME: profile.path, XDG_DATA_HOME: profile.path, XDG_CACHE_HOME: profile.path },
  });
  const base = `http://${host}:${webPort}/api/v2`;
  const api = async (path: string, form?: Record<string, string>): Promise<string> => {
    const res = await fetch(`${base}${path}`, form ? { method: 'POST', body: new URLSearchParams(form) } : {});
    const text = await res.text();
    if (!res.ok) throw new Error(`qBittorrent ${path}: HTTP ${res.status} ${text}`);
    return text;
  };
  await waitFor(
    async () => {
      if (proc.hasExited()) throw withOutput(proc, 'qbittorrent-nox exited during start-up');
      return (await api('/app/version').catch(() => '')) !== '';
    },
    { timeoutMs: 20_000, intervalMs: 100, what: 'qBittorrent Web API' },
  ).catch((err: Error) => {
    throw withOutput(proc, err.message);
  });

  const info = async (infoHash: string): Promise<QbtTorrentInfo | undefined> => {
    const list = JSON.parse(await api(`/torrents/info?hashes=${infoHash.toLowerCase()}`)) as QbtTorrentInfo[];
    return list[0];
  };
  const appear = (infoHash: string): Promise<QbtTorrentInfo> =>
    waitFor(() => info(infoHash), { timeoutMs: 10_000, intervalMs: 50, what: `qBittorrent to list ${infoHash}` });
  const qb: Qbittorrent = {
    process: proc,
    host,
    peerPort,
    webPort,
    profileDir: profile.path,
    api,
    async addTorrent(torrent, savePath, o = {}) {
      const fd = new FormData();
      fd.append('torrents', new Blob([torrent], { type: 'application/x-bittorrent' }), 'file.torrent');
      fd.append('savepath', savePath);
      fd.append('paused', o.paused ? 'true' : 'false');
      if (o.skipChecking) fd.append('skip_checking', 'true');
      const res = await fetch(`${base}/torrents/add`, { method: 'POST', body: fd });
      const text = await res.text();
      if (!res.ok || text.trim() === 'Fails.') throw new Error(`qBittorrent torrents/add failed: HTTP ${res.status} ${text}`);
      const { parseTorrentBytes } = await import('./torrent.js');
      await appear(parseTorrentBytes(torrent).infoHash);
    },
    async addMagnet(magnet, savePath) {
      const text = await api('/torrents/add', { urls: magnet, savepath: savePath, paused: 'false' });
      if (text.trim() === 'Fails.') throw new Error('qBittorrent refused the magnet');
    },
    async addPeers(infoHash, peers) {
      await api('/torrents/addPeers', { hashes: infoHash.toLowerCase(), peers: peers.map((p) => `${p.host}:${p.port}`).join('|') });
    },
    info,
    waitComplete(infoHash, timeoutMs = 60_000) {
      return waitFor(
        async () => {
          if (proc.hasExited()) throw withOutput(proc, 'qbittorrent-nox exited');
          const i = await info(infoHash);
          return i && i.progress >= 1 && !i.state.startsWith('checking') ? i : undefined;
        },
        { timeoutMs, intervalMs: 100, what: `qBittorrent to complete ${infoHash}` },
      );
    },
    async waitSeeding(infoHash, timeoutMs = 60_000) {
      const i = await qb.waitComplete(infoHash, timeoutMs);
      // Right after its check, qBittorrent still resets incoming connections for a moment:
      // wait until it really answers a handshake for this torrent.
      await waitAcceptsPeers(host, peerPort, infoHash, timeoutMs, opts.encryption === 'required');
      return i;
    },
    stop: () => proc.stop(5000),
  };
  return qb;
}
