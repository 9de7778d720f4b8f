/** Child processes of the tracker benches: started through `run`/`track`, all SIGKILLed by PID when the bench exits. */
import { spawn, type ChildProcess } from 'node:child_process';

export const children: ChildProcess[] = [];

/** SIGKILL every child still running. */
export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.pid) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
}
process.on('exit', killChildren);

/** Keep a spawned process in the kill list. */
export function track<T extends ChildProcess>(c: T): T {
  children.push(c);
  return c;
}

/** Run a command to completion; resolves with its stdout, rejects with the end of its stderr. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = track(spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '', err = '';
    c.stdout!.on('data', (d) => (out += d));
    c.stderr!.on('data', (d) => (err += d));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${err.slice(-500)}`))));
  });
}
