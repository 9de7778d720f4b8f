/** Options shared by the commands that run a session (download, seed). */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Session, parsePeerAddress, parseRate, UNITS_HELP, type PeerAddress, type SessionOptions, type EncryptionPolicy } from '@bitorrent/core';
import type { SpeedFlags } from '@bitorrent/speed/cli-flags';
import type { SpeedSetup } from '@bitorrent/speed';
import { startDht } from './dht-setup.js';

export const sessionOptionSpec = {
  'peer-port': { type: 'string' },
  host: { type: 'string' },
  peer: { type: 'string', multiple: true },
  tracker: { type: 'string', multiple: true, short: 't' },
  'max-up': { type: 'string' },
  'max-down': { type: 'string' },
  'max-peers': { type: 'string' },
  'state-dir': { type: 'string' },
  'no-resume': { type: 'boolean' },
  dht: { type: 'boolean' },
  'no-dht': { type: 'boolean' },
  'dht-port': { type: 'string' },
  'dht-bootstrap': { type: 'string', multiple: true },
  'no-pex': { type: 'boolean' },
  encryption: { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const sessionOptionHelp = `
network:
  --peer-port N          TCP port for peer connections (default 6881; 0 = any free port)
  --host ADDR            listen address (default :: = all IPv6 and IPv4)
  --peer HOST:PORT       connect to this peer (repeatable)
  -t, --tracker URL      extra tracker (repeatable)
  --max-peers N          connections per torrent (default 50)
  --dht / --no-dht       find peers through the Mainline DHT (default on, never for private torrents)
  --dht-port N           UDP port of the DHT node (default: the peer port)
  --dht-bootstrap H:P    DHT bootstrap node (repeatable)
  --no-pex               do not exchange peers with peers (BEP 11)
  --encryption MODE      protocol encryption (MSE/PE): enabled (default: accept both, dial plaintext and
                         retry encrypted), prefer (dial encrypted first), required (RC4 only), disabled
limits:
  --max-up RATE          upload limit, e.g. 500K, 2MiB/s (default unlimited)
  --max-down RATE        download limit
  ${UNITS_HELP.split('\n').join('\n  ')}
state:
  --state-dir DIR        fast-resume data (default ~/.local/state/bitorrent)
  --no-resume            neither read nor write fast-resume data
output:
  --json                 one JSON status object per line
  -q, --quiet            print only errors and the final result
`;

export interface SessionFlags {
  'peer-port'?: string;
  host?: string;
  peer?: string[];
  tracker?: string[];
  'max-up'?: string;
  'max-down'?: string;
  'max-peers'?: string;
  'state-dir'?: string;
  'no-resume'?: boolean;
  dht?: boolean;
  'no-dht'?: boolean;
  'dht-port'?: string;
  'dht-bootstrap'?: string[];
  'no-pex'?: boolean;
  encryption?: string;
  json?: boolean;
  quiet?: boolean;
}

const ENCRYPTION_MODES: readonly EncryptionPolicy[] = ['enabled', 'prefer', 'required', 'disabled'];

export function parseIntFlag(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: expected an integer from ${min} to ${max}, got '${v}'`);
  return n;
}

export function defaultStateDir(): string {
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'bitorrent');
}

export function sessionOptions(f: SessionFlags): SessionOptions {
  return {
    port: parseIntFlag('peer-port', f['peer-port'], 0, 65535) ?? 6881,
    host: f.host,
    uploadRateLimit: f['max-up'] ? parseRate(f['max-up']) : 0,
    downloadRateLimit: f['max-down'] ? parseRate(f['max-down']) : 0,
    maxConnectionsPerTorrent: parseIntFlag('max-peers', f['max-peers'], 1, 10000),
    stateDir: f['no-resume'] ? undefined : (f['state-dir'] ?? defaultStateDir()),
    encryption: encryptionFlag(f.encryption),
  };
}

function encryptionFlag(v: string | undefined): EncryptionPolicy | undefined {
  if (v === undefined) return undefined;
  if (!(ENCRYPTION_MODES as readonly string[]).includes(v)) throw new Error(`--encryption: expected one of ${ENCRYPTION_MODES.join(', ')}, got '${v}'`);
  return v as EncryptionPolicy;
}

export function peersFrom(f: SessionFlags): PeerAddress[] {
  return (f.peer ?? []).map((p) => parsePeerAddress(p));
}

export function dhtEnabled(f: SessionFlags): boolean {
  return !f['no-dht'];
}

/** A command-line usage error (unknown flag, missing flag value): the command prints it and exits 2. */
/** What download and seed share: DHT, Speed, the session, progress and an orderly shutdown on signals. */
export interface ClientRun {
  session: Session;
  speed: SpeedSetup | undefined;
  /** Once only: the signal handler and the normal/error paths may both call it. */
  shutdown(): Promise<void>;
  /** Replace the progress reporter (the old one is stopped). */
  setProgress(p: { stop(final?: boolean): void } | undefined): void;
  /** Set once Ctrl-C/SIGTERM started the shutdown; the process exits when it settles. */
  readonly signalExit: Promise<never> | undefined;
  /** Remove the signal handlers. */
  dispose(): void;
}

export async function startClient(
  f: SessionFlags & SpeedFlags,
  opts: SessionOptions,
  onSignal: { exitCode: number; message?: string },
): Promise<ClientRun> {
  const dht = await startDht(f, opts.port ?? 6881, opts.stateDir).catch((err: Error) => {
    if (!f.quiet) console.error(`DHT unavailable: ${err.message}`);
    return undefined;
  });
  // BitTorrent Speed: off unless --speed and a wallet; says what it will spend before anything starts.
  // Speed (ledger client, wallet, native crypto) is loaded only when asked for: a plain client starts without it.
  const speed = f['no-speed'] || !f.speed
    ? undefined
    : await (await import('@bitorrent/speed')).setupSpeed(f, { stdout: (s: string) => console.log(s), log: (s: string) => { if (!f.quiet) console.error(s); } });
  if (speed && !f.quiet) console.log(speed.disclosure);
  const session = new Session({ ...opts, dht });
  let progress: { stop(final?: boolean): void } | undefined;
  let closing: Promise<void> | undefined;
  let signalExit: Promise<never> | undefined;
  const shutdown = (): Promise<void> =>
    (closing ??= (async () => {
      progress?.stop(true);
      progress = undefined;
      await speed?.close(); // closes the channels we were paid on, with their last state
      await session.close();
      await dht?.close();
    })());
  const handler = () => {
    if (signalExit) process.exit(130); // second Ctrl-C: now
    if (onSignal.message) process.stderr.write(onSignal.message);
    const exit = () => process.exit(onSignal.exitCode);
    signalExit = shutdown().then(exit, exit);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    session,
    speed,
    shutdown,
    setProgress(p) {
      progress?.stop(true);
      progress = p;
    },
    get signalExit() {
      return signalExit;
    },
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
