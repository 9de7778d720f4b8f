/** Runs the real `bitorrent` executable as a child process for the CLI tests, and reads its output. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';

export const BIN = fileURLToPath(new URL('../../bin/bitorrent.js', import.meta.url));
/** Flags every test passes: loopback only, any free port, never a public DHT bootstrap. */
export const SAFE = ['--host', '127.0.0.1', '--peer-port', '0', '--no-dht'];

export interface CliProc {
  child: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  /** stdout split into lines (only complete lines). */
  lines(): string[];
  /** Parsed JSON lines of stdout (lines that are not JSON are skipped). */
  json(): Record<string, unknown>[];
  /** Resolves with the first stdout line for which pred is true (checks lines already seen too). */
  waitLine(pred: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves with the first JSON object for which pred is true. */
  waitJson(pred: (o: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (or 128+signal) once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(sig?: NodeJS.Signals): void;
}

export function runCli(t: TestContext, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): CliProc {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  const poke = () => {
    for (const w of [...waiters]) w();
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    poke();
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.on('exit', (code, signal) => {
      done = true;
      // let the pipes drain before resolving
      setImmediate(() => {
        poke();
        res({ code, signal });
      });
    });
  });
  const pid = child.pid!;
  const label = `bitorrent ${args.join(' ')} (pid ${pid})`;
  t.after(() => {
    if (!done) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
  const lines = () => {
    const all = out.split('\n');
    all.pop();
    return all;
  };
  const json = () => {
    const res: Record<string, unknown>[] = [];
    for (const l of lines()) {
      try {
        const v = JSON.parse(l);
        if (v && typeof v === 'object') res.push(v);
      } catch {
        /* not JSON */
      }
    }
    return res;
  };
  const waitLine = (pred: (line: string) => boolean, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = lines().find(pred);
        if (hit !== undefined) {
          cleanup();
          resolve(hit);
        } else if (done) {
          cleanup();
          reject(new Error(`${label}: process exited before the expected line\nstdout:\n${out}\nstderr:\n${err}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${label}: timed out after ${timeoutMs} ms waiting for a line\nstdout:\n${out}\nstderr:\n${err}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  const waitJson = async (pred: (o: Record<string, unknown>) => boolean, timeoutMs?: number) => {
    const line = await waitLine((l) => {
      try {
        const v = JSON.parse(l);
        return !!v && typeof v === 'object' && pred(v);
      } catch {
        return false;
      }
    }, timeoutMs);
    return JSON.parse(line) as Record<string, unknown>;
  };
  return {
    child,
    pid,
    stdout: () => out,
    stderr: () => err,
    lines,
    json,
    waitLine,
    waitJson,
    exited,
    kill: (sig: NodeJS.Signals = 'SIGTERM') => {
      if (!done) process.kill(pid, sig);
    },
  };
}

/** Runs the CLI to completion (killing it after timeoutMs) and returns its exit code and output. */
export async function runCliToEnd(t: TestContext, args: string[], timeoutMs = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const p = runCli(t, args);
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const { code, signal } = await p.exited;
  clearTimeout(timer);
  return { code, signal, stdout: p.stdout(), stderr: p.stderr() };
}

/** Writes random files (relative path → size) under root and returns their contents. */
export async function makeTree(root: string, files: Record<string, number>): Promise<Map<string, Buffer>> {
  const m = new Map<string, Buffer>();
  for (const [rel, size] of Object.entries(files)) {
    const p = join(root, rel);
    await mkdir(dirname(p), { recursive: true });
    const b = randomBytes(size);
    await writeFile(p, b);
    m.set(rel, b);
  }
  return m;
}

/** Starts `bitorrent seed` with --json and resolves once it listens, with its port. */
export async function startSeeder(t: TestContext, args: string[]): Promise<{ proc: CliProc; port: number; infoHash: string; created?: Record<string, unknown> }> {
  const proc = runCli(t, ['seed', ...args, '--json']);
  const ev = await proc.waitJson((o) => o.event === 'seeding', 60_000);
  const created = proc.json().find((o) => o.event === 'created');
  return { proc, port: Number(ev.port), infoHash: String(ev.infoHash), created };
}

/** No "    at foo (file:line)" frames: the CLI must not dump a stack trace for user errors. */
export function hasStackTrace(s: string): boolean {
  return /^\s+at .+(\(|:\d+:\d+)/m.test(s);
}
