/**
 * Progress reporting for long-running commands: a live status line on a terminal, periodic plain lines
 * otherwise, one JSON object per line with --json, nothing with --quiet.
 */
import type { Torrent, TorrentStats } from '@bitorrent/core';
import { formatBytes, formatRate, formatDuration } from '@bitorrent/core';

/**
 * Keep running when our output goes nowhere: with `bitorrent download … | head -1` the reader leaves, and
 * Node reports EPIPE as an 'error' event on stdout, which would crash the process with a stack trace. The
 * transfer goes on (resume data still gets saved on exit); only the output is dropped.
 */
export function guardOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if ((stream as { __bitorrentGuard?: boolean }).__bitorrentGuard) continue;
    (stream as { __bitorrentGuard?: boolean }).__bitorrentGuard = true;
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return;
      throw err;
    });
  }
}

export type ProgressMode = 'tty' | 'plain' | 'json' | 'quiet';

export function progressMode(flags: { json?: boolean; quiet?: boolean }, stream: NodeJS.WriteStream = process.stdout): ProgressMode {
  if (flags.json) return 'json';
  if (flags.quiet) return 'quiet';
  return stream.isTTY ? 'tty' : 'plain';
}

export function statusLine(s: TorrentStats): string {
  const pct = (s.progress * 100).toFixed(1).padStart(5);
  const state = s.state === 'checking' ? 'checking' : s.state === 'metadata' ? 'fetching metadata' : s.state;
  const parts = [
    `${pct}%`,
    `${formatBytes(s.verifiedBytes)}/${formatBytes(s.wantedBytes)}`,
    `↓ ${formatRate(s.downloadRate)}`,
    `↑ ${formatRate(s.uploadRate)}`,
    `peers ${s.peers}${s.seeds ? ` (${s.seeds} seeds)` : ''}`,
  ];
  if (s.state === 'downloading') parts.push(`ETA ${formatDuration(s.eta)}`);
  return `${state.padEnd(11)} ${parts.join('  ')}`;
}

export function jsonStats(s: TorrentStats): string {
  return JSON.stringify({ ...s, eta: Number.isFinite(s.eta) ? Math.round(s.eta) : null, time: new Date().toISOString() });
}

/** Report a torrent's progress until stop() is called. */
export function reportProgress(torrent: Torrent, mode: ProgressMode, intervalMs?: number): { stop(final?: boolean): void } {
  const out = process.stdout;
  const every = intervalMs ?? (mode === 'tty' ? 500 : mode === 'json' ? 1000 : 5000);
  let last = '';
  const draw = () => {
    if (out.destroyed || !out.writable) return;
    const s = torrent.stats();
    if (mode === 'tty') {
      // A pseudo-terminal whose size was never set (script(1), serial consoles, some CI runners) reports 0 columns.
      const cols = out.columns || Number(process.env.COLUMNS) || 120;
      const line = statusLine(s).slice(0, Math.max(20, cols - 1));
      out.write(`\r\x1b[2K${line}`);
      last = line;
    } else if (mode === 'plain') {
      out.write(`${statusLine(s)}\n`);
    } else if (mode === 'json') {
      out.write(`${jsonStats(s)}\n`);
    }
  };
  const timer = mode === 'quiet' ? undefined : setInterval(draw, every);
  const onTrackerError = (err: Error) => {
    if (mode === 'quiet') return;
    if (mode === 'json') out.write(`${JSON.stringify({ event: 'tracker-error', message: err.message })}\n`);
    else process.stderr.write(`${mode === 'tty' && last ? '\n' : ''}tracker: ${err.message}\n`);
  };
  torrent.on('tracker-error', onTrackerError);
  return {
    stop(final = true) {
      if (timer) clearInterval(timer);
      torrent.off('tracker-error', onTrackerError);
      if (final && mode !== 'quiet') draw();
      if (mode === 'tty') out.write('\n');
    },
  };
}
