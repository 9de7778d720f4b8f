/** `bitorrent download <magnet|file.torrent|info-hash>` */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { formatBytes, formatRate, formatDuration, type Torrent } from '@bitorrent/core';
import { parseCommandLine } from './args.js';
import { sessionOptionSpec, sessionOptionHelp, sessionOptions, peersFrom, startClient, type SessionFlags } from './common.js';
import { speedCliOptions, SPEED_HELP, type SpeedFlags } from '@bitorrent/speed/cli-flags';
import { progressMode, reportProgress, guardOutput } from '../progress.js';

const HELP = `usage: bitorrent download <magnet|file.torrent|info-hash> [options]

Downloads a torrent into a folder, verifying every piece. Resumes where it left off.

options:
  -o, --output DIR       where to save (default: current folder)
  --seed                 keep seeding after the download completes (Ctrl-C to stop)
  --no-seed              exit as soon as the download completes (default)
  --seed-ratio N         with --seed: stop once uploaded/size reaches N
  --sequential           download pieces in order (for streaming)
  --no-web-seeds         ignore the torrent's HTTP web seeds (BEP 19; used by default)
  --only LIST            download only these files (indexes from 'bitorrent info', e.g. 0,2,4-6)
${sessionOptionHelp}
${SPEED_HELP}`;

export function parseIndexList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const m = part.trim().match(/^(\d+)(?:-(\d+))?$/);
    if (!m) throw new Error(`--only: invalid file list '${s}' (expected e.g. 0,2,4-6)`);
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    if (b < a || b - a > 1_000_000) throw new Error(`--only: invalid range '${part}'`);
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}

export async function loadTorrentArg(arg: string): Promise<Buffer | string> {
  if (/^magnet:/i.test(arg) || /^[0-9a-f]{40}$/i.test(arg) || /^[a-z2-7]{32}$/i.test(arg)) return arg;
  try {
    return await readFile(arg);
  } catch (err) {
    throw new Error(`cannot read '${arg}': ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file (expected a .torrent file, a magnet link or an info-hash)' : (err as Error).message}`);
  }
}

export async function run(argv: string[]): Promise<number> {
  guardOutput();
  const cmd = parseCommandLine('download', argv, {
    ...sessionOptionSpec,
    ...speedCliOptions,
    output: { type: 'string', short: 'o' },
    seed: { type: 'boolean' },
    'no-seed': { type: 'boolean' },
    'seed-ratio': { type: 'string' },
    sequential: { type: 'boolean' },
    only: { type: 'string' },
    'no-web-seeds': { type: 'boolean' },
  }, HELP, 'one .torrent file, magnet link or info-hash');
  if (typeof cmd === 'number') return cmd;
  const { values: f, positional } = cmd;
  const seedRatio = f['seed-ratio'] !== undefined ? Number(f['seed-ratio']) : undefined;
  if (seedRatio !== undefined && !(seedRatio > 0)) throw new Error(`--seed-ratio: expected a positive number, got '${f['seed-ratio']}'`);
  const keepSeeding = !!f.seed && !f['no-seed'];
  const source = await loadTorrentArg(positional);
  const opts = sessionOptions(f as SessionFlags);
  const mode = progressMode(f);
  const client = await startClient(f as SessionFlags & SpeedFlags, opts, {
    exitCode: 130,
    message: mode !== 'json' && mode !== 'quiet' ? '\nstopping (saving resume data)…\n' : undefined,
  });
  const { session, speed } = client;
  let torrent: Torrent | undefined;
  try {
    await session.listen();
    const only = f.only ? parseIndexList(f.only) : undefined;
    torrent = await session.add({
      torrent: source,
      path: resolve(f.output ?? '.'),
      peers: peersFrom(f as SessionFlags),
      trackers: f.tracker,
      seed: keepSeeding,
      sequential: f.sequential,
      webSeeds: !f['no-web-seeds'],
      pex: !f['no-pex'],
      ...speed?.perTorrentOptions(source, () => {
        const st = torrent?.stats();
        return st ? st.wantedBytes - st.verifiedBytes : 0;
      }),
    });
    speed?.attach(torrent);
    // A bad --only (index out of range) is only known once the metadata is there (magnet): it must end the
    // command with its message, not throw inside the core's 'metadata' event (which would drop the peer and hang).
    let failSelection: (err: Error) => void = () => {};
    const selectionFailed = new Promise<never>((_, reject) => (failSelection = reject));
    selectionFailed.catch(() => {});
    if (only) {
      const t = torrent;
      const apply = () => {
        try {
          t.setFileSelection(only);
        } catch (err) {
          failSelection(new Error(`--only: ${(err as Error).message}`));
        }
      };
      if (t.metainfo) apply();
      else t.once('metadata', apply);
    }
    if (mode !== 'json' && mode !== 'quiet') {
      console.log(`${torrent.name}  ${torrent.infoHashHex}  → ${resolve(f.output ?? '.')}  (peer port ${session.port})`);
    }
    client.setProgress(reportProgress(torrent, mode));
    const started = Date.now();
    const cpuAtStart = process.cpuUsage();
    const mainCpuAtStart = mainThreadCpuSeconds();
    await Promise.race([
      torrent.done,
      selectionFailed,
      new Promise((_, reject) => torrent!.once('error', reject)),
    ]);
    client.setProgress(undefined);
    const s = torrent.stats();
    const secs = (Date.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuAtStart);
    // cpuSeconds: this process's user + system time during the transfer (all threads; start-up excluded);
    // mainCpuSeconds: the main thread's part (Linux only).
    const mainCpuAtEnd = mainThreadCpuSeconds();
    const mainCpuSeconds = mainCpuAtStart !== undefined && mainCpuAtEnd !== undefined ? Math.round((mainCpuAtEnd - mainCpuAtStart) * 100) / 100 : undefined;
    if (mode === 'json') console.log(JSON.stringify({ event: 'done', infoHash: s.infoHash, bytes: s.verifiedBytes, seconds: secs, cpuSeconds: (cpu.user + cpu.system) / 1e6, mainCpuSeconds }));
    else console.log(`done: ${s.name} (${formatBytes(s.verifiedBytes)} in ${formatDuration(secs)}, ${formatRate(s.verifiedBytes / Math.max(secs, 0.001))})`);
    if (keepSeeding) {
      if (mode !== 'json' && mode !== 'quiet') console.log('seeding; press Ctrl-C to stop');
      client.setProgress(reportProgress(torrent, mode));
      const size = Math.max(1, s.totalBytes);
      await new Promise<void>((resolveSeed) => {
        torrent!.on('tick', () => {
          if (seedRatio !== undefined && torrent!.stats().uploaded / size >= seedRatio) resolveSeed();
        });
      });
    }
    await client.shutdown();
    return 0;
  } catch (err) {
    // Stopped by Ctrl-C/SIGTERM: closing the torrent rejects what we were waiting on; that is no error.
    if (client.signalExit) return client.signalExit;
    await client.shutdown().catch(() => {});
    throw err;
  } finally {
    client.dispose();
  }
}

/** User + system seconds of the calling (main) thread, from /proc/thread-self (Linux); undefined elsewhere. */
function mainThreadCpuSeconds(): number | undefined {
  try {
    const st = readFileSync('/proc/thread-self/stat', 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return undefined;
  }
}
