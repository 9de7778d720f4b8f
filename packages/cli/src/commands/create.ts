/** `bitorrent create <path>`: make a .torrent (mktorrent-compatible info-hash). */
import { promises as fsp } from 'node:fs';
import { parseCommandLine } from './args.js';
import { createTorrent, formatMagnet } from '@bitorrent/core';
import { humanSize } from './info.js';

const HELP = `usage: bitorrent create <file-or-folder> [options]

Make a .torrent. With the same files and piece length, the info-hash equals mktorrent's.

options:
  -a, --announce URL     tracker URL (repeatable; each -a is a tier, a comma-separated value is one tier)
  -w, --web-seed URL     web seed (BEP 19), repeatable (comma-separated values allowed)
  -p, --private          set the private flag (BEP 27: no DHT/PEX)
  -l, --piece-length N   piece length: bytes with a suffix (256K, 1M, 4MiB) or log2 like mktorrent -l (18 = 256 KiB);
                         default: chosen by size (about 1000-2000 pieces, 16 KiB..16 MiB)
  -c, --comment TEXT     comment
  -n, --name NAME        torrent name (default: the file or folder name)
  -s, --source TEXT      'source' key inside info (changes the info-hash, like mktorrent -s)
  -o, --output FILE      where to write (default: <name>.torrent in the current folder)
  -f, --force            overwrite the output file if it exists
  -d, --no-date          do not write the creation date
      --json             print the result as one JSON object
  -h, --help             show this help`;

/** Parse a piece length: a plain number ≤ 40 is log2 (mktorrent -l), else bytes with an optional K/M/G suffix. */
export function parsePieceLength(s: string): number {
  const m = s.trim().match(/^(\d+)\s*([kmg]?)(i?b)?$/i);
  if (!m) throw new Error(`--piece-length: cannot parse '${s}' (examples: 256K, 1M, 18)`);
  const n = Number(m[1]);
  let bytes: number;
  if (!m[2] && !m[3] && n <= 40) bytes = 2 ** n;
  else bytes = n * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[m[2].toLowerCase()];
  if (!Number.isSafeInteger(bytes) || bytes < 16 * 1024 || bytes > 64 * 1024 * 1024 || (bytes & (bytes - 1)) !== 0) {
    throw new Error(`--piece-length: must be a power of two from 16 KiB to 64 MiB (log2 14..26), got '${s}'`);
  }
  return bytes;
}

const splitList = (xs: string[] | undefined) => (xs ?? []).flatMap((x) => x.split(',')).map((u) => u.trim()).filter(Boolean);

export async function run(argv: string[]): Promise<number | void> {
  const cmd = parseCommandLine('create', argv, {
    announce: { type: 'string', short: 'a', multiple: true },
    'web-seed': { type: 'string', short: 'w', multiple: true },
    private: { type: 'boolean', short: 'p' },
    'piece-length': { type: 'string', short: 'l' },
    comment: { type: 'string', short: 'c' },
    name: { type: 'string', short: 'n' },
    source: { type: 'string', short: 's' },
    output: { type: 'string', short: 'o' },
    force: { type: 'boolean', short: 'f' },
    'no-date': { type: 'boolean', short: 'd' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  }, HELP, 'exactly one file or folder');
  if (typeof cmd === 'number') return cmd;
  const { values: v, positional } = cmd;
  let pieceLength: number | undefined;
  try {
    pieceLength = v['piece-length'] !== undefined ? parsePieceLength(v['piece-length']) : undefined;
  } catch (e) {
    console.error(`bitorrent create: ${(e as Error).message}`);
    return 2;
  }
  const tiers = (v.announce ?? []).map((a) => a.split(',').map((u) => u.trim()).filter(Boolean)).filter((t) => t.length > 0);
  for (const u of [...tiers.flat(), ...splitList(v['web-seed'])]) {
    if (!/^(https?|udp|wss?):\/\/[^\s]+$/i.test(u)) {
      console.error(`bitorrent create: '${u}' is not an http(s)://, udp:// or ws(s):// URL`);
      return 2;
    }
  }

  const tty = process.stderr.isTTY && !v.json;
  let lastDraw = 0;
  const onProgress = tty
    ? (done: number, total: number) => {
        const now = Date.now();
        if (done !== total && now - lastDraw < 100) return;
        lastDraw = now;
        process.stderr.write(`\rhashing: ${done}/${total} pieces (${Math.floor((done / total) * 100)}%)`);
      }
    : undefined;

  try {
    const { torrent, metainfo: m } = await createTorrent({
      path: positional,
      announce: tiers,
      webSeeds: splitList(v['web-seed']),
      private: v.private ?? false,
      pieceLength,
      comment: v.comment,
      name: v.name,
      source: v.source,
      creationDate: v['no-date'] ? null : undefined,
      onProgress,
    });
    if (tty) process.stderr.write('\n');
    const out = v.output ?? `${m.name}.torrent`;
    try {
      await fsp.writeFile(out, torrent, { flag: v.force ? 'w' : 'wx' });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new Error(`'${out}' already exists (use --force to overwrite)`);
      throw new Error(`cannot write '${out}': ${code ?? (e as Error).message}`);
    }
    const magnet = formatMagnet({ infoHash: m.infoHash, name: m.name, trackers: m.announce.flat(), webSeeds: m.urlList });
    if (v.json) {
      console.log(JSON.stringify({
        file: out, name: m.name, size: m.length, files: m.files.length, pieces: m.pieceCount,
        pieceLength: m.pieceLength, infoHash: m.infoHashHex, private: m.private, magnet,
      }));
    } else {
      console.log(`created ${out}`);
      console.log(`  name:       ${m.name}`);
      console.log(`  size:       ${humanSize(m.length)} in ${m.files.length} file${m.files.length === 1 ? '' : 's'}`);
      console.log(`  pieces:     ${m.pieceCount} × ${humanSize(m.pieceLength)}`);
      console.log(`  info-hash:  ${m.infoHashHex}`);
      console.log(`  magnet:     ${magnet}`);
    }
    return 0;
  } catch (e) {
    if (tty) process.stderr.write('\n');
    console.error(`bitorrent create: ${(e as Error).message}`);
    return 1;
  }
}
