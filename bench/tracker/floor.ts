/**
 * Receive + send floor of this run: the C UDP generator (bench/tracker/udpgen.c) against a bare Node echo server
 * (bench/tracker/echo.mjs), bitorrent's tracker (CLI, one process) and opentracker, one after another, several
 * rounds. Per target: announces/s and the server's CPU µs per announce (/proc, all threads).
 *
 *   flock /tmp/bitorrent-bench.lock node --import tsx bench/tracker/floor.ts [--seconds N] [--rounds N] [--only a,b] [--other-root DIR]
 *
 * --other-root: also run the tracker of another checkout (e.g. `git archive` of an older commit) as target "other",
 * for a same-run A/B of the tracker code.
 *
 * Not a `npm run bench` target; last line is one JSON object.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { procCpuSeconds } from '../transfer/procstat.js';
import { children, killChildren, run } from './procs.js';
import { startOpentracker, type Opentracker } from '@bitorrent/testbed';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const { values } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, only: { type: 'string' }, 'other-root': { type: 'string' } } });
const seconds = Number(values.seconds ?? 4);
const rounds = Number(values.rounds ?? 2);
const only = values.only ? new Set(values.only.split(',')) : null;

function startJson(cmd: string, args: string[], key: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d) => {
      buf += d;
      const line = buf.split('\n').find((l) => l.includes(`"${key}"`));
      if (line) resolve({ child, port: JSON.parse(line)[key] });
    });
    child.on('exit', (c) => reject(new Error(`${cmd} exited ${c}`)));
  });
}

/** bitorrent's tracker CLI of the checkout at `checkout`, UDP only, one process, the given allow-list. */
function startTracker(checkout: string, hashFile: string): Promise<{ child: ChildProcess; port: number }> {
  const args = ['tracker', 'serve', '--host', '127.0.0.1', '--http-port', 'off', '--udp-port', '0', '--allow', hashFile, '--workers', '1', '--rate-limit', '0'];
  return startJson(process.execPath, [join(checkout, 'packages/cli/bin/bitorrent.js'), ...args], 'udp_port');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bt-trkfloor-'));
  chmodSync(dir, 0o755);
  const hashFile = join(dir, 'whitelist.txt');
  const hashes = Array.from({ length: 1000 }, () => randomBytes(20).toString('hex'));
  writeFileSync(hashFile, hashes.join('\n') + '\n');
  chmodSync(hashFile, 0o644);
  const gen = join(dir, 'udpgen');
  let ot: Opentracker | undefined;
  try {
    await run('gcc', ['-O2', '-o', gen, join(here, 'udpgen.c')]);
    const targets: { name: string; pid: number; port: number }[] = [];
    const want = (n: string): boolean => only === null || only.has(n);
    if (want('echo')) { const e = await startJson(process.execPath, [join(here, 'echo.mjs'), 'lookup'], 'udp_port'); targets.push({ name: 'echo', pid: e.child.pid!, port: e.port }); }
    if (want('echo-plain')) { const e = await startJson(process.execPath, [join(here, 'echo.mjs'), 'plain'], 'udp_port'); targets.push({ name: 'echo-plain', pid: e.child.pid!, port: e.port }); }
    if (want('bitorrent')) {
      const b = await startTracker(root, hashFile);
      targets.push({ name: 'bitorrent', pid: b.child.pid!, port: b.port });
    }
    if (values['other-root']) {
      const b = await startTracker(values['other-root'], hashFile);
      targets.push({ name: 'other', pid: b.child.pid!, port: b.port });
    }
    if (want('opentracker')) {
      // Ready once its whitelist is loaded (a separate thread, after it already accepts connections).
      ot = await startOpentracker({ infoHashes: hashes });
      targets.push({ name: 'opentracker', pid: ot.process.pid, port: ot.port });
    }
    const res: Record<string, { rps: number[]; us_cpu: number[] }> = {};
    for (let r = 0; r < rounds; r++) {
      for (const tg of r % 2 === 0 ? targets : [...targets].reverse()) {
        // The generator warms up 1 s; CPU is sampled over the whole run, announces counted over `seconds`.
        const c0 = procCpuSeconds(tg.pid)!;
        const t0 = performance.now();
        const j = JSON.parse((await run(gen, ['127.0.0.1', String(tg.port), String(seconds), '64', '8', hashFile, '1'])).trim().split('\n').pop()!);
        const wall = (performance.now() - t0) / 1000;
        const cpu = procCpuSeconds(tg.pid)! - c0;
        const perPkt = (cpu / (j.rps * wall)) * 1e6; // approx: rate during warm-up ~ measured rate
        (res[tg.name] ??= { rps: [], us_cpu: [] }).rps.push(j.rps);
        res[tg.name].us_cpu.push(Math.round(perPkt * 10) / 10);
        console.error(`# round ${r + 1} ${tg.name.padEnd(12)} ${j.rps} announces/s, ~${perPkt.toFixed(1)} µs server CPU per announce, errors ${j.errors} timeouts ${j.timeouts}`);
      }
    }
    console.log(JSON.stringify({ bench: 'tracker-floor', seconds, rounds, ...res }));
  } finally {
    killChildren();
    await ot?.process.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
main().then(() => process.exit(0), (e) => { console.error(e); killChildren(); process.exit(1); });
