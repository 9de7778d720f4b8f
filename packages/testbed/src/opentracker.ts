/**
 * Debian's opentracker on loopback. It is built whitelist-only and drops privileges (to
 * "nobody", chrooted into its cwd) before reading the whitelist, so the whitelist file and
 * its folder are world-readable. Reload after adding hashes: SIGHUP.
 */
import { writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:net';
import { request } from 'node:http';
import { bdecode, isBDict } from './bdecode.js';
import { requireTool, tempDir, freePort, waitFor } from './util.js';
import { startProcess, withOutput, type ManagedProcess } from './process.js';

export interface OpentrackerOptions {
  /** Hex info-hashes to whitelist at start. */
  infoHashes?: string[];
  host?: string;
  port?: number;
}

export interface Opentracker {
  process: ManagedProcess;
  host: string;
  port: number;
  /** http://host:port/announce */
  httpAnnounce: string;
  /** udp://host:port/announce */
  udpAnnounce: string;
  /** Adds hex info-hashes to the whitelist and reloads it (SIGHUP); waits until the tracker accepts them. */
  allow(infoHashes: string[]): Promise<void>;
  /** HTTP scrape of one torrent: seeders (complete) and leechers (incomplete). */
  scrape(infoHash: string): Promise<{ complete: number; incomplete: number; downloaded: number }>;
  stop(): Promise<void>;
}

function hexToUrl(hex: string): string {
  // opentracker only understands upper-case percent escapes.
  return Buffer.from(hex, 'hex').reduce((s, b) => s + '%' + b.toString(16).padStart(2, '0').toUpperCase(), '');
}

function httpGet(url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: 5000, agent: false, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout GET ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

export async function startOpentracker(opts: OpentrackerOptions = {}): Promise<Opentracker> {
  const bin = requireTool('opentracker');
  if (!bin) throw new Error('opentracker is not installed');
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? (await freePort(host));
  const dir = await tempDir('opentracker-');
  const wl = join(dir.path, 'whitelist');
  const hashes = new Set((opts.infoHashes ?? []).map((h) => h.toLowerCase()));
  const writeList = async (): Promise<void> => {
    await writeFile(wl, [...hashes].map((h) => `${h}\n`).join(''));
    await chmod(wl, 0o644);
  };
  await writeList();
  // The whitelist path is relative: opentracker reads it first from its cwd, then (on SIGHUP)
  // from inside its chroot, which is the same folder.
  const proc = startProcess(bin, ['-i', host, '-p', String(port), '-P', String(port), '-w', 'whitelist', '-d', dir.path], {
    cwd: dir.path,
    name: 'opentracker',
  });
  await waitFor(
    () => {
      if (proc.hasExited()) throw withOutput(proc, 'opentracker exited during start-up');
      return new Promise<boolean>((resolve) => {
        const s = connect(port, host);
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
    },
    { timeoutMs: 10_000, intervalMs: 50, what: `opentracker on ${host}:${port}` },
  ).catch((err) => {
    if (proc.hasExited()) throw err;
    throw withOutput(proc, (err as Error).message);
  });

  const base = `http://${host}:${port}`;
  // A whitelisted hash is answered without "failure reason" (event=stopped skips the
  // whitelist check, so probe with a plain announce, then withdraw the probe peer).
  const untilAccepted = async (infoHashes: Iterable<string>): Promise<void> => {
    for (const h of infoHashes) {
      const q = `${base}/announce?info_hash=${hexToUrl(h)}&peer_id=-TB0001-xxxxxxxxxxxx&port=1&compact=1&numwant=0`;
      await waitFor(
        async () => {
          const d = bdecode(await httpGet(`${q}&left=1`)).value;
          return isBDict(d) && d['failure reason'] === undefined;
        },
        { timeoutMs: 5000, intervalMs: 50, what: `opentracker to accept ${h}` },
      );
      await httpGet(`${q}&left=1&event=stopped`);
    }
  };
  // opentracker listens before a separate thread has loaded the whitelist: an announce that
  // comes too early is refused as "not authorized".
  await untilAccepted(hashes).catch(async (err) => {
    await proc.stop();
    throw err;
  });
  const scrape = async (infoHash: string): Promise<{ complete: number; incomplete: number; downloaded: number }> => {
    const body = await httpGet(`${base}/scrape?info_hash=${hexToUrl(infoHash)}`);
    const d = bdecode(body).value;
    const files = isBDict(d) ? d.files : undefined;
    if (!isBDict(files)) throw new Error(`scrape: unexpected reply ${body.toString('latin1').slice(0, 200)}`);
    const entry = files[Buffer.from(infoHash, 'hex').toString('latin1')] ?? Object.values(files)[0];
    if (!isBDict(entry)) return { complete: 0, incomplete: 0, downloaded: 0 };
    const n = (v: unknown): number => (typeof v === 'number' ? v : 0);
    return { complete: n(entry.complete), incomplete: n(entry.incomplete), downloaded: n(entry.downloaded) };
  };
  return {
    process: proc,
    host,
    port,
    httpAnnounce: `${base}/announce`,
    udpAnnounce: `udp://${host}:${port}/announce`,
    async allow(infoHashes: string[]) {
      for (const h of infoHashes) hashes.add(h.toLowerCase());
      await writeList();
      process.kill(proc.pid, 'SIGHUP');
      await untilAccepted(infoHashes);
    },
    scrape,
    stop: () => proc.stop(),
  };
}
