/**
 * `bitorrent tracker serve ...`: run the HTTP + UDP tracker until SIGINT/SIGTERM (state saved on exit).
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { startTracker, type TrackerServerOptions } from './server.js';
import { hexToInfoHash } from './tracker.js';
import { isClusterWorker, runClusterPrimary, runClusterWorker } from './cluster.js';

const HELP = `usage: bitorrent tracker serve [options]

Run a BitTorrent tracker: HTTP announce/scrape (BEP 3, 23, 7, 48) and UDP (BEP 15).

  --http-port N          HTTP port (default 6969; 'off' disables HTTP)
  --udp-port N           UDP port (default 6969; 'off' disables UDP)
  --host ADDR            bind address (default 0.0.0.0; '::' for dual-stack IPv4+IPv6)
  --interval S           announce interval in seconds (default 1800); peers expire after 2 × interval
  --numwant N            peers returned by default (default 50; clients may ask up to 200)
  --allow FILE           only track info-hashes listed in FILE (one 40-char hex per line, # comments)
  --private              private mode: announces must use /<passkey>/announce (needs --passkeys)
  --passkeys FILE        passkeys, one per line ([A-Za-z0-9_-], first word of the line)
  --state FILE           load swarm state at start, save atomically every 5 min and on exit
  --rate-limit N         per-IP requests per second (token bucket, burst 4 × N; default 50; 0 = off;
                         per worker process)
  --max-swarms N         global swarm cap with eviction (default 1000000)
  --max-peers N          global stored-peer cap (default 10000000)
  --max-peers-per-swarm N  (default 100000)
  --trust-proxy          take the client address from X-Forwarded-For (behind your own proxy only)
  --workers N            processes (node:cluster) sharing the ports, each with a replica of the swarms
                         kept in sync every 10 ms (default 1)
  --udp-send-thread on|off  send UDP replies from a second thread sharing the socket, so the kernel's
                         send path runs beside the receive + announce work (default off: it reads
                         Node's internal socket handle, and gains nothing when the CPU is contended)
  -h, --help             this help

Endpoints: /announce, /scrape, /<passkey>/announce, /<passkey>/scrape, /stats (HTML; ?format=json), /metrics (Prometheus).
`;

function readList(path: string, what: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${what} file ${path}: ${(e as Error).message}`);
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '')
    .map((l) => l.split(/\s+/)[0]);
}

function intOpt(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got '${v}'`);
  return n;
}

function onOff(v: string | undefined, name: string, def: boolean): boolean {
  if (v === undefined) return def;
  if (v === 'on') return true;
  if (v === 'off') return false;
  throw new Error(`--${name} must be 'on' or 'off', got '${v}'`);
}

function portOpt(v: string | undefined, name: string): number | null {
  if (v === 'off') return null;
  return intOpt(v, name, 6969, 0, 65535);
}

/** Parse `serve` options into server options (exported for tests). */
export function parseServeArgs(argv: string[]): TrackerServerOptions & { workers: number } {
  const { values } = parseArgs({
    args: argv,
    options: {
      'http-port': { type: 'string' },
      'udp-port': { type: 'string' },
      host: { type: 'string' },
      interval: { type: 'string' },
      numwant: { type: 'string' },
      allow: { type: 'string' },
      private: { type: 'boolean' },
      passkeys: { type: 'string' },
      state: { type: 'string' },
      'rate-limit': { type: 'string' },
      'max-swarms': { type: 'string' },
      'max-peers': { type: 'string' },
      'max-peers-per-swarm': { type: 'string' },
      'trust-proxy': { type: 'boolean' },
      workers: { type: 'string' },
      'udp-send-thread': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  const opts: TrackerServerOptions & { workers: number } = {
    workers: intOpt(values.workers, 'workers', 1, 1, 64),
    host: values.host ?? '0.0.0.0',
    httpPort: portOpt(values['http-port'], 'http-port'),
    udpPort: portOpt(values['udp-port'], 'udp-port'),
    interval: intOpt(values.interval, 'interval', 1800, 1, 86400),
    defaultNumwant: intOpt(values.numwant, 'numwant', 50, 0, 200),
    statePath: values.state ?? null,
    trustProxy: values['trust-proxy'] === true,
    udpSendThread: onOff(values['udp-send-thread'], 'udp-send-thread', false),
    store: {
      maxSwarms: intOpt(values['max-swarms'], 'max-swarms', 1_000_000, 1, 1e9),
      maxPeers: intOpt(values['max-peers'], 'max-peers', 10_000_000, 1, 1e10),
      maxPeersPerSwarm: intOpt(values['max-peers-per-swarm'], 'max-peers-per-swarm', 100_000, 1, 1e9),
    },
  };
  const rl = intOpt(values['rate-limit'], 'rate-limit', 50, 0, 1e9);
  opts.rateLimit = rl > 0 ? { perSecond: rl, burst: rl * 4 } : null;
  if (opts.httpPort === null && opts.udpPort === null) throw new Error('both HTTP and UDP are off: nothing to serve');
  if (values.allow) opts.allow = new Set(readList(values.allow, 'allow-list').map(hexToInfoHash));
  if (values.private) {
    if (!values.passkeys) throw new Error('--private needs --passkeys FILE');
  }
  if (values.passkeys) {
    const keys = readList(values.passkeys, 'passkeys');
    for (const k of keys) if (!/^[A-Za-z0-9_-]{1,64}$/.test(k)) throw new Error(`invalid passkey '${k.slice(0, 70)}' (use 1-64 of A-Z a-z 0-9 _ -)`);
    if (keys.length === 0) throw new Error(`passkeys file ${values.passkeys} lists no passkeys`);
    opts.passkeys = new Set(keys);
  }
  return opts;
}

export async function runTrackerCli(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    process.stdout.write(HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'serve') {
    process.stderr.write(`unknown tracker command '${sub}'\n${HELP}`);
    return 2;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    process.stdout.write(HELP);
    return 0;
  }
  let opts: TrackerServerOptions & { workers: number };
  try {
    opts = parseServeArgs(rest);
  } catch (e) {
    process.stderr.write(`bitorrent tracker: ${(e as Error).message}\n`);
    return 2;
  }
  const log = (m: string): void => void process.stderr.write(`[tracker] ${new Date().toISOString()} ${m}\n`);
  opts.log = log;
  if (isClusterWorker()) {
    try {
      return await runClusterWorker(opts, log);
    } catch (e) {
      log(`worker failed: ${(e as Error).message}`);
      process.disconnect?.(); // let this worker exit; the primary then stops the others
      return 1;
    }
  }
  if (opts.workers > 1) {
    return runClusterPrimary(opts.workers, log, (http, udp) => {
      const where = opts.host?.includes(':') ? `[${opts.host}]` : opts.host;
      log(`${opts.workers} workers; HTTP ${opts.httpPort === null ? 'off' : `http://${where}:${http}/announce`}; UDP ${opts.udpPort === null ? 'off' : `udp://${where}:${udp}/announce`}`);
      process.stdout.write(JSON.stringify({ event: 'listening', http_port: opts.httpPort === null ? null : http, udp_port: opts.udpPort === null ? null : udp, workers: opts.workers }) + '\n');
    });
  }
  let server;
  try {
    server = await startTracker(opts);
  } catch (e) {
    process.stderr.write(`bitorrent tracker: ${(e as Error).message}\n`);
    return 1;
  }
  const where = opts.host?.includes(':') ? `[${opts.host}]` : opts.host;
  if (opts.httpPort !== null) log(`HTTP on http://${where}:${server.httpPort}/announce`);
  if (opts.udpPort !== null) log(`UDP on udp://${where}:${server.udpPort}/announce`);
  if (opts.passkeys) log(`private mode: ${opts.passkeys.size} passkeys`);
  if (opts.allow) log(`allow-list: ${opts.allow.size} info-hashes`);
  // Machine-readable line for scripts and tests.
  process.stdout.write(JSON.stringify({ event: 'listening', http_port: opts.httpPort === null ? null : server.httpPort, udp_port: opts.udpPort === null ? null : server.udpPort }) + '\n');
  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string): void => {
      if (stopping) return;
      stopping = true;
      log(`${sig}: saving state and stopping`);
      server
        .close()
        .then(() => resolve(0))
        .catch((e) => {
          log(`shutdown error: ${(e as Error).message}`);
          resolve(1);
        });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}
