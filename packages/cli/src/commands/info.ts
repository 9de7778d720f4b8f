/** `bitorrent info <file.torrent|magnet|info-hash>`: show what a torrent or magnet link holds. */
import { promises as fsp } from 'node:fs';
import { parseCommandLine } from './args.js';
import { type Metainfo, type MagnetLink, formatMagnet, parseTorrent, parseTorrentId } from '@bitorrent/core';

const HELP = `usage: bitorrent info <file.torrent | magnet:?... | info-hash> [--json]

Shows name, info-hash, size, pieces, private flag, trackers by tier, web seeds, files and the magnet link.

options:
      --json     print one JSON object
  -h, --help     show this help`;

/** 1536 → "1.5 KiB" (binary units). */
export function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${n} B`;
  const s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s} ${units[u]}`;
}

function metaJson(m: Metainfo, magnet: string) {
  return {
    kind: 'torrent',
    name: m.name,
    infoHash: m.infoHashHex,
    size: m.length,
    pieceLength: m.pieceLength,
    pieces: m.pieceCount,
    private: m.private,
    hybrid: m.isHybrid,
    trackers: m.announce,
    webSeeds: m.urlList,
    comment: m.comment,
    createdBy: m.createdBy,
    creationDate: m.creationDate,
    files: m.files.map((f) => ({ path: f.name, length: f.length, offset: f.offset, pad: f.pad })),
    magnet,
  };
}

function magnetJson(l: MagnetLink, magnet: string) {
  return {
    kind: 'magnet',
    name: l.name,
    infoHash: l.infoHashHex,
    trackers: l.trackers,
    webSeeds: l.webSeeds,
    peers: l.peers.map((p) => (p.host.includes(':') ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`)),
    selectOnly: l.selectOnly,
    magnet,
  };
}

function looksLikeId(s: string): boolean {
  return /^magnet:/i.test(s) || /^[0-9a-fA-F]{40}$/.test(s) || /^[A-Za-z2-7]{32}$/.test(s);
}

export async function run(argv: string[]): Promise<number | void> {
  const cmd = parseCommandLine('info', argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, HELP, 'one .torrent file, magnet link or info-hash');
  if (typeof cmd === 'number') return cmd;
  const { values: v, positional } = cmd;
  const arg = positional;
  try {
    let buf: Buffer | undefined;
    try {
      buf = await fsp.readFile(arg);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (!looksLikeId(arg)) {
        throw new Error(code === 'ENOENT' ? `'${arg}': no such file (and not a magnet link or info-hash)` : `cannot read '${arg}': ${code ?? (e as Error).message}`);
      }
    }
    if (!buf) {
      const l = parseTorrentId(arg);
      const magnet = formatMagnet(l);
      if (v.json) {
        console.log(JSON.stringify(magnetJson(l, magnet)));
        return 0;
      }
      console.log(`name:       ${l.name ?? '(unknown until metadata is fetched)'}`);
      console.log(`info-hash:  ${l.infoHashHex}`);
      if (l.trackers.length) console.log(`trackers:\n${l.trackers.map((t) => `  ${t}`).join('\n')}`);
      if (l.webSeeds.length) console.log(`web seeds:\n${l.webSeeds.map((t) => `  ${t}`).join('\n')}`);
      if (l.peers.length) console.log(`peers:      ${l.peers.map((p) => `${p.host}:${p.port}`).join(', ')}`);
      if (l.selectOnly) console.log(`files:      only ${l.selectOnly.join(',')}`);
      console.log(`magnet:     ${magnet}`);
      return 0;
    }
    const m = parseTorrent(buf);
    const magnet = formatMagnet({ infoHash: m.infoHash, name: m.name, trackers: m.announce.flat(), webSeeds: m.urlList });
    if (v.json) {
      console.log(JSON.stringify(metaJson(m, magnet)));
      return 0;
    }
    const lines: string[] = [];
    lines.push(`name:       ${m.name}`);
    lines.push(`info-hash:  ${m.infoHashHex}${m.isHybrid ? ' (v1 part of a hybrid v1/v2 torrent)' : ''}`);
    lines.push(`size:       ${humanSize(m.length)} (${m.length} bytes)`);
    lines.push(`pieces:     ${m.pieceCount} × ${humanSize(m.pieceLength)}`);
    lines.push(`private:    ${m.private ? 'yes' : 'no'}`);
    if (m.comment) lines.push(`comment:    ${m.comment}`);
    if (m.createdBy) lines.push(`created by: ${m.createdBy}`);
    if (m.creationDate !== undefined) lines.push(`created:    ${new Date(m.creationDate * 1000).toISOString()}`);
    if (m.announce.length === 0) lines.push('trackers:   none (trackerless: DHT/PEX only)');
    else {
      lines.push('trackers:');
      m.announce.forEach((tier, i) => lines.push(`  tier ${i}: ${tier.join(', ')}`));
    }
    if (m.urlList.length) {
      lines.push('web seeds:');
      for (const u of m.urlList) lines.push(`  ${u}`);
    }
    const real = m.files.filter((f) => !f.pad);
    lines.push(`files (${real.length}${real.length !== m.files.length ? `, plus ${m.files.length - real.length} pad` : ''}):`);
    m.files.forEach((f, i) => {
      if (!f.pad) lines.push(`  [${i}] ${humanSize(f.length).padStart(10)}  ${f.name}`);
    });
    lines.push(`magnet:     ${magnet}`);
    console.log(lines.join('\n'));
    return 0;
  } catch (e) {
    console.error(`bitorrent info: ${(e as Error).message}`);
    return 1;
  }
}
