/**
 * aria2c (1.36) as a BitTorrent peer. It has no "connect to this peer" option: it finds peers
 * through the torrent's tracker (opentracker). DHT, LPD and PEX are off.
 */
import { requireTool } from './util.js';
import { startProcess, withOutput, type ManagedProcess } from './process.js';

export interface Aria2Options {
  torrent: string;
  /** Download directory (download) or the folder containing the data (seed). */
  dir: string;
  /** seed: verify the data in `dir` then seed forever; download: exit 0 when complete. */
  mode: 'seed' | 'download';
  host?: string;
  listenPort: number;
  /** Extra trackers (--bt-tracker). */
  trackers?: string[];
  extraArgs?: string[];
}

export interface Aria2 {
  process: ManagedProcess;
  listenPort: number;
  /** Last reported percentage (from the console summary), -1 if none yet. */
  percent(): number;
  /** Resolves with aria2c's exit code (0 = download complete and verified). */
  exited: Promise<number>;
  stop(): Promise<void>;
}

export function runAria2(opts: Aria2Options): Aria2 {
  const bin = requireTool('aria2c');
  if (!bin) throw new Error('aria2c is not installed');
  const args = [
    `--dir=${opts.dir}`,
    `--listen-port=${opts.listenPort}`,
    '--enable-dht=false',
    '--enable-dht6=false',
    '--bt-enable-lpd=false',
    '--enable-peer-exchange=false',
    '--bt-require-crypto=false',
    '--bt-min-crypto-level=plain',
    `--bt-external-ip=${opts.host ?? '127.0.0.1'}`,
    '--file-allocation=none',
    '--allow-overwrite=true',
    '--auto-save-interval=0',
    '--summary-interval=1',
    '--console-log-level=warn',
    '--show-console-readout=false',
    '--enable-color=false',
    '--bt-tracker-connect-timeout=5',
    '--bt-tracker-interval=2',
    '--check-certificate=false',
    '--follow-torrent=mem',
    '--no-conf=true',
  ];
  if (opts.mode === 'seed') args.push('--check-integrity=true', '--seed-ratio=0.0', '--bt-seed-unverified=false');
  else args.push('--seed-time=0', '--bt-hash-check-seed=true');
  if (opts.trackers?.length) args.push(`--bt-tracker=${opts.trackers.join(',')}`);
  args.push(...(opts.extraArgs ?? []), opts.torrent);
  let pct = -1;
  const proc = startProcess(bin, args, {
    name: `aria2c-${opts.mode}`,
    onLine(line) {
      const m = /\((\d+)%\)/.exec(line);
      if (m) pct = Number(m[1]);
    },
  });
  return {
    process: proc,
    listenPort: opts.listenPort,
    percent: () => pct,
    exited: proc.exited.then((code) => {
      if (code === 0) pct = 100;
      return code;
    }),
    stop: () => proc.stop(),
  };
}

/** Waits for an aria2 download to exit 0, with a timeout; throws with its output otherwise. */
export async function aria2Done(a: Aria2, timeoutMs = 60_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    a.exited,
    new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (code === 'timeout') throw withOutput(a.process, `aria2c did not finish within ${timeoutMs} ms (at ${a.percent()}%)`);
  if (code !== 0) throw withOutput(a.process, `aria2c exited with ${code}`);
}
