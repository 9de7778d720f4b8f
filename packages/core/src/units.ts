/**
 * Human-readable sizes, rates and durations.
 *
 * Rule (stated once, used everywhere, including the CLI --help text): every unit prefix is
 * binary, 1024-based, whatever its spelling — K, k, KB, kB, KiB and KiB/s all mean 1024 bytes;
 * M = 1024², G = 1024³, T = 1024⁴. A bare number is bytes (or bytes/s). This is what
 * Transmission, qBittorrent and libtorrent-based UIs do for speed limits.
 * Rates additionally accept '0', 'unlimited', 'none', 'off', 'inf' (all meaning 0 = no limit).
 */

export class UnitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnitError';
  }
}

const PREFIX: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Help text fragment describing the accepted syntax. */
export const UNITS_HELP =
  "sizes/rates: a number with an optional binary suffix K, M, G, T (1024-based whatever the spelling: " +
  "'500K' = '500KB/s' = '500KiB/s' = 512000 bytes/s); '0' or 'unlimited' = no limit";

function parseWithSuffix(text: string, what: string, allowRateSuffix: boolean): number {
  const s = text.trim();
  const m = s.match(/^(\d+(?:\.\d+)?|\.\d+)\s*([kKmMgGtT]?)(i?)([bB]?)(\/s|ps)?$/);
  if (!m || (m[5] && !allowRateSuffix) || (m[3] && !m[2])) {
    throw new UnitError(`invalid ${what} '${text}' (expected e.g. 500K, 2MiB${allowRateSuffix ? '/s' : ''}, 1.5G)`);
  }
  const n = Number(m[1]) * PREFIX[m[2].toLowerCase()];
  if (!Number.isFinite(n) || n > Number.MAX_SAFE_INTEGER) throw new UnitError(`${what} '${text}' is too large`);
  return Math.round(n);
}

/** Parse a rate to bytes/s; 0 means unlimited. */
export function parseRate(text: string): number {
  const s = String(text).trim().toLowerCase();
  if (s === 'unlimited' || s === 'none' || s === 'off' || s === 'inf' || s === '∞') return 0;
  return parseWithSuffix(String(text), 'rate', true);
}

/** Parse a size to bytes. */
export function parseSize(text: string): number {
  return parseWithSuffix(String(text), 'size', false);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.50 KiB"; 0 → "0 B". Three significant digits. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '∞';
  const neg = n < 0;
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  let s: string;
  if (u === 0) s = `${Math.round(v)} B`;
  else {
    let digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
    s = v.toFixed(digits);
    // 1023.999 KiB rounds to "1024" — carry into the next unit.
    if (Number(s) >= 1024 && u < UNITS.length - 1) {
      u++;
      digits = 2;
      s = (Number(s) / 1024).toFixed(digits);
    }
    s = `${s} ${UNITS[u]}`;
  }
  return neg ? `-${s}` : s;
}

/** Bytes/s → "1.50 MiB/s". */
export function formatRate(bps: number): string {
  return `${formatBytes(bps)}/s`;
}

/** Seconds → ETA text: "45s", "3m07s", "1h02m", "2d03h"; non-finite or negative → "∞". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '∞';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const pad = (x: number) => String(x).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  const d = Math.floor(s / 86400);
  if (d >= 365 * 100) return '∞';
  return `${d}d${pad(Math.floor((s % 86400) / 3600))}h`;
}
