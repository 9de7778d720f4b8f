/** Runs the `bitorrent` CLI as a separate process (for kill/restart tests and benchmarks). */
import { fileURLToPath } from 'node:url';
import { startProcess, withOutput, type ManagedProcess, type StartOptions } from './process.js';
import { waitFor } from './util.js';

/** Absolute path of packages/cli/bin/bitorrent.js. */
export const BITORRENT_BIN = fileURLToPath(new URL('../../cli/bin/bitorrent.js', import.meta.url));

export interface BitorrentProcess {
  process: ManagedProcess;
  /** Every JSON object printed on stdout (with --json). */
  lines: Record<string, unknown>[];
  /** The latest status object (a line without "event"). */
  last(): Record<string, unknown> | undefined;
  /** Resolves with the first JSON line matching `pred` (seen or future). */
  waitLine(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/**
 * Starts `bitorrent <args...>` with node (the CLI registers tsx itself). Pass --json in args to
 * get parsed lines. Extra node flags (e.g. --max-old-space-size) go in opts.nodeArgs.
 */
export function startBitorrent(args: string[], opts: StartOptions & { nodeArgs?: string[] } = {}): BitorrentProcess {
  const lines: Record<string, unknown>[] = [];
  let last: Record<string, unknown> | undefined;
  const userOnLine = opts.onLine;
  const proc = startProcess(process.execPath, [...(opts.nodeArgs ?? []), BITORRENT_BIN, ...args], {
    name: `bitorrent-${args[0] ?? ''}`,
    ...opts,
    env: { ...process.env, NODE_OPTIONS: '', ...opts.env },
    onLine(line) {
      if (line.startsWith('{')) {
        try {
          const o = JSON.parse(line) as Record<string, unknown>;
          lines.push(o);
          if (o.event === undefined) last = o;
        } catch { /* not JSON */ }
      }
      userOnLine?.(line);
    },
  });
  return {
    process: proc,
    lines,
    last: () => last,
    waitLine(pred, timeoutMs = 60_000, what = 'a matching JSON line') {
      return waitFor(
        () => {
          const l = lines.find(pred);
          if (l) return l;
          if (proc.hasExited()) throw withOutput(proc, `bitorrent exited (code ${proc.exitCode()}) before ${what}`);
          return undefined;
        },
        { timeoutMs, intervalMs: 50, what },
      ).catch((err: Error) => {
        throw proc.hasExited() ? err : withOutput(proc, err.message);
      });
    },
    stop: () => proc.stop(),
  };
}
