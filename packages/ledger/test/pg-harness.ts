/** Start a throwaway PostgreSQL 15 server (Debian binaries) on a loopback port; stopped by PID on cleanup. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, chownSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

const BIN = '/usr/lib/postgresql/15/bin';

export function postgresAvailable(): string | null {
  if (!existsSync(join(BIN, 'postgres'))) return `PostgreSQL 15 not installed (${BIN})`;
  if (userInfo().uid === 0) {
    const id = spawnSync('id', ['-u', 'postgres']);
    if (id.status !== 0) return 'running as root but there is no postgres user';
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export async function startPostgres(after: (fn: () => void | Promise<void>) => void): Promise<{ url: string; pid: number }> {
  const root = userInfo().uid === 0;
  const ids = root ? { uid: Number(spawnSync('id', ['-u', 'postgres']).stdout.toString()), gid: Number(spawnSync('id', ['-g', 'postgres']).stdout.toString()) } : {};
  const dir = mkdtempSync(join(tmpdir(), 'btt-pg-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  if (root) chownSync(dir, ids.uid!, ids.gid!);
  const data = join(dir, 'data');
  const init = spawnSync(join(BIN, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'], { ...ids, cwd: dir, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const proc = spawn(join(BIN, 'postgres'), ['-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', dir, '-c', 'fsync=on', '-c', 'synchronous_commit=on', '-c', 'max_connections=50'], {
    ...ids,
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGINT'); // fast shutdown
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
  });
  let log = '';
  await new Promise<void>((resolve, reject) => {
    proc.stderr!.on('data', (d) => {
      log += d;
      if (/ready to accept connections/.test(log)) resolve();
    });
    proc.once('exit', (c) => reject(new Error(`postgres exited (${c}): ${log}`)));
  });
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, pid: proc.pid! };
}
