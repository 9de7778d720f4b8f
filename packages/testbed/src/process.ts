/**
 * Process control for tests: every process started here is registered, and stopAll() (wire it
 * to `t.after`) stops each one by its own PID — SIGTERM, then SIGKILL after a grace period.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface StartOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Milliseconds between SIGTERM and SIGKILL in stop(). Default 3000. */
  graceMs?: number;
  /** Keep at most this many bytes of combined output (oldest dropped). Default 1 MiB. */
  maxOutput?: number;
  /** Called with each complete stdout line. */
  onLine?: (line: string) => void;
  /** Called with each complete stderr line. */
  onErrLine?: (line: string) => void;
  /** Echo output to this process's stderr, prefixed (also enabled by env TESTBED_VERBOSE=1). */
  echo?: boolean;
  /** Label used in messages; default the command's basename. */
  name?: string;
  /** Pipe for stdin (default 'ignore'). */
  stdin?: boolean;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Combined stdout+stderr captured so far (bounded). */
  output(): string;
  /** Resolves with the exit code (or 128+signal number-ish: null code → -1) when the process exits. */
  readonly exited: Promise<number>;
  /** True once the process has exited. */
  hasExited(): boolean;
  exitCode(): number | null;
  /** Writes a line to stdin (requires opts.stdin). */
  send(line: string): void;
  /** SIGTERM, then SIGKILL after the grace period; resolves when the process is gone. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

type Cleanup = () => Promise<void> | void;
const running = new Set<ManagedProcess>();
const cleanups: Cleanup[] = [];

/** Registers a cleanup (e.g. temp dir removal) that stopAll() runs after stopping processes. */
export function registerCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

/** The processes started with startProcess() that have not been stopped yet. */
export function runningProcesses(): ManagedProcess[] {
  return [...running];
}

/** Stops every registered process (each by its own PID), then runs registered cleanups (LIFO). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop().catch(() => undefined)));
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch (err) {
      console.error('testbed cleanup failed:', err);
    }
  }
}

/** Minimal shape of node:test's TestContext we need (keeps this module free of node:test). */
export interface HasAfter {
  after(fn: () => unknown): void;
}

/** Arranges for stopAll() to run after the test (or suite) `t`. Call once at the start of each test. */
export function cleanupAfter(t: HasAfter): void {
  t.after(() => stopAll());
}

// Last-resort: kill our children if the test process itself exits abruptly.
process.once('exit', () => {
  for (const p of running) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch { /* gone */ }
  }
});

export function startProcess(cmd: string, args: string[], opts: StartOptions = {}): ManagedProcess {
  const name = opts.name ?? cmd.split('/').pop() ?? cmd;
  const spawnOpts: SpawnOptions = {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    detached: false,
  };
  const child = spawn(cmd, args, spawnOpts);
  if (child.pid === undefined) {
    // Spawn failure (ENOENT etc.) is also emitted as 'error' later: swallow that, throw now.
    child.once('error', () => undefined);
    throw new Error(`failed to start ${cmd}: no pid (is it installed?)`);
  }
  const pid = child.pid;
  const max = opts.maxOutput ?? 1 << 20;
  const echo = opts.echo ?? process.env.TESTBED_VERBOSE === '1';
  let out = '';
  let code: number | null = null;
  let exitedFlag = false;
  const append = (s: string): void => {
    out += s;
    if (out.length > max) out = out.slice(out.length - max);
  };
  const lineSplitter = (cb: ((l: string) => void) | undefined, tag: string) => {
    let partial = '';
    return (chunk: Buffer): void => {
      const s = chunk.toString('utf8');
      append(s);
      partial += s;
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i).replace(/\r$/, '');
        partial = partial.slice(i + 1);
        if (echo) process.stderr.write(`[${name}:${pid}${tag}] ${line}\n`);
        if (cb) {
          try {
            cb(line);
          } catch (err) {
            console.error(`[${name}] line handler threw:`, err);
          }
        }
      }
    };
  };
  child.stdout!.on('data', lineSplitter(opts.onLine, ''));
  child.stderr!.on('data', lineSplitter(opts.onErrLine, ' err'));
  const exited = new Promise<number>((resolve) => {
    child.once('error', (err) => {
      append(`\n[spawn error] ${err.message}\n`);
      exitedFlag = true;
      running.delete(proc);
      resolve(-1);
    });
    child.once('exit', (c, sig) => {
      code = c ?? -1;
      exitedFlag = true;
      running.delete(proc);
      if (echo) process.stderr.write(`[${name}:${pid}] exited code=${c} signal=${sig}\n`);
      resolve(code);
    });
  });
  let stopping: Promise<void> | undefined;
  const proc: ManagedProcess = {
    name,
    pid,
    child,
    output: () => out,
    exited,
    hasExited: () => exitedFlag,
    exitCode: () => code,
    send(line: string) {
      if (!child.stdin) throw new Error(`${name}: stdin not piped (pass stdin: true)`);
      child.stdin.write(line.endsWith('\n') ? line : `${line}\n`);
    },
    stop(graceMs = opts.graceMs ?? 3000) {
      if (exitedFlag) return Promise.resolve();
      if (stopping) return stopping;
      stopping = (async () => {
        try {
          process.kill(pid, 'SIGTERM');
        } catch { /* already gone */ }
        const timer = setTimeout(() => {
          try {
            process.kill(pid, 'SIGKILL');
          } catch { /* gone */ }
        }, graceMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
  running.add(proc);
  return proc;
}

/** Error helper: includes the tail of a process's output in a thrown message. */
export function withOutput(p: ManagedProcess, message: string, tail = 3000): Error {
  const o = p.output();
  return new Error(`${message}\n--- ${p.name} (pid ${p.pid}) output tail ---\n${o.slice(Math.max(0, o.length - tail))}`);
}
