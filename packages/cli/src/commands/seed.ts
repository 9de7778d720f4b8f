/** `bitorrent seed <path|file.torrent>` */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, resolve, basename } from 'node:path';
import { createTorrent, parseTorrent, formatMagnet, formatBytes } from '@bitorrent/core';
import { parseCommandLine } from './args.js';
import { sessionOptionSpec, sessionOptionHelp, sessionOptions, peersFrom, startClient, type SessionFlags } from './common.js';
import { speedCliOptions, SPEED_HELP, type SpeedFlags } from '@bitorrent/speed/cli-flags';
import { progressMode, reportProgress, guardOutput } from '../progress.js';

const HELP = `usage: bitorrent seed <file-or-folder | file.torrent> [options]

Seeds data to other peers. Given a file or folder, creates the torrent first (and prints its magnet
link); given a .torrent, seeds it from --data (default: the .torrent's folder) after checking the data.

options:
  --data DIR             with a .torrent: the folder that holds its files
  -a, --announce URL     with a path: tracker for the new torrent (repeatable)
  --private              with a path: mark the new torrent private (BEP 27)
  --piece-length SIZE    with a path: piece length (e.g. 256K)
  --save-torrent FILE    with a path: also write the .torrent to FILE
  --seed-ratio N         stop once uploaded/size reaches N (default: seed until Ctrl-C)
${sessionOptionHelp}
${SPEED_HELP}`;

export async function run(argv: string[]): Promise<number> {
  guardOutput();
  const cmd = parseCommandLine('seed', argv, {
    ...sessionOptionSpec,
    ...speedCliOptions,
    data: { type: 'string' },
    announce: { type: 'string', short: 'a', multiple: true },
    private: { type: 'boolean' },
    'piece-length': { type: 'string' },
    'save-torrent': { type: 'string' },
    'seed-ratio': { type: 'string' },
  }, HELP, 'one file or folder to seed (or a .torrent file)');
  if (typeof cmd === 'number') return cmd;
  const { values: f, positional } = cmd;
  const target = resolve(positional);
  const st = await stat(target).catch(() => undefined);
  if (!st) throw new Error(`'${positional}' does not exist`);
  const mode = progressMode(f);
  // Bad flags (e.g. '--max-up 12Q') fail now, before a possibly long hash of the data.
  const opts = sessionOptions(f as SessionFlags);
  const ratio = f['seed-ratio'] !== undefined ? Number(f['seed-ratio']) : undefined;
  if (ratio !== undefined && !(ratio > 0)) throw new Error(`--seed-ratio: expected a positive number, got '${f['seed-ratio']}'`);
  let torrentBytes: Buffer;
  let dataDir: string;
  let skipHashCheck = false;
  if (st.isFile() && target.endsWith('.torrent')) {
    torrentBytes = await readFile(target);
    parseTorrent(torrentBytes); // a clear error for a malformed file before anything starts
    dataDir = resolve(f.data ?? dirname(target));
  } else {
    const { parseSize } = await import('@bitorrent/core');
    const created = await createTorrent({
      path: target,
      announce: f.announce,
      private: f.private,
      pieceLength: f['piece-length'] ? parseSize(f['piece-length']) : undefined,
    });
    torrentBytes = created.torrent;
    dataDir = dirname(target);
    skipHashCheck = true; // we hashed it just now
    if (f['save-torrent']) await writeFile(f['save-torrent'], torrentBytes);
    if (mode !== 'quiet') {
      const m = created.metainfo;
      const line = { event: 'created', name: m.name, infoHash: m.infoHashHex, size: m.length, magnet: formatMagnet({ infoHash: m.infoHash, name: m.name, trackers: m.announce.flat() }) };
      console.log(mode === 'json' ? JSON.stringify(line) : `created ${basename(target)}: ${formatBytes(m.length)}, info-hash ${m.infoHashHex}\n${line.magnet}`);
    }
  }
  const client = await startClient(f as SessionFlags & SpeedFlags, opts, { exitCode: 0 });
  const { session, speed } = client;
  const peers = peersFrom(f as SessionFlags);
  try {
    await session.listen();
    const torrent = await session.add({ torrent: torrentBytes, path: dataDir, peers, trackers: f.tracker, seed: true, skipHashCheck, pex: !f['no-pex'], ...speed?.perTorrentOptions(torrentBytes, () => 0) });
    speed?.attach(torrent);
    await new Promise<void>((res, rej) => {
      if (torrent.state === 'seeding' || torrent.state === 'downloading') return res();
      torrent.once('ready', () => res());
      torrent.once('error', rej);
    });
    const s = torrent.stats();
    if (s.progress < 1) {
      throw new Error(`data for '${s.name}' in ${dataDir} is incomplete (${(s.progress * 100).toFixed(1)}% verified); use 'bitorrent download' to fetch the rest`);
    }
    if (mode === 'json') console.log(JSON.stringify({ event: 'seeding', infoHash: s.infoHash, port: session.port }));
    else if (mode !== 'quiet') console.log(`seeding ${s.name} (${formatBytes(s.totalBytes)}) on peer port ${session.port}; Ctrl-C to stop`);
    client.setProgress(reportProgress(torrent, mode));
    await new Promise<void>((res) => {
      if (ratio === undefined) return; // until a signal
      torrent.on('tick', () => {
        if (torrent.stats().uploaded / Math.max(1, s.totalBytes) >= ratio) res();
      });
    });
    await client.shutdown();
    client.dispose();
    return 0;
  } catch (err) {
    // Close the listening socket and DHT, or the process would stay alive after printing the error.
    // Stopped by Ctrl-C/SIGTERM: closing the torrent rejects what we were waiting on; that is no error.
    if (client.signalExit) return client.signalExit;
    await client.shutdown().catch(() => {});
    client.dispose();
    throw err;
  }
}
