/**
 * Ledger benchmark: durable ops/s and p50/p99 latency for transfers and channel open+close at 1/16/64 concurrent
 * clients, on SQLite and PostgreSQL, through the HTTP server (a separate `bitorrent ledger serve` process) and
 * in-process; beside the raw ceilings of this machine measured in the same run (Ed25519 verifies/s with node:crypto
 * and sodium-native, fdatasync/s, single-row SQLite commits/s).
 *
 *   npm run bench -- ledger [--quick] [--no-pg] [--no-http] [--no-inproc] [--no-batch] [--seconds S] [--verify-threads N] [--crash N]
 *                           [--startup-entries N]   (start-up time, snapshot vs full replay, of an N-entry journal; 0 = skip)
 *                           [--sdks N]   (HTTP: spread the clients over N SDK instances; default 1, all clients share one)
 * Operations are signed before the timed window (client signing is not what is measured); every op counted was
 * acknowledged by the ledger after its batch was fsynced. Last line: one JSON object.
 */
import { parseArgs } from 'node:util';
import { procCpuSeconds } from './transfer/procstat.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, writeSync, fdatasyncSync, closeSync, writeFileSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import Database from 'better-sqlite3';
import { Ledger, makeGenesis } from '../packages/ledger/src/ledger.js';
import { LedgerState } from '../packages/ledger/src/state.js';
import { SqliteStorage } from '../packages/ledger/src/storage-sqlite.js';
import { LedgerClient } from '../packages/ledger/src/client.js';
import { keyPairFromSeed, verifyNodeCrypto, sign, type KeyPair } from '../packages/ledger/src/keys.js';
import { signOp, newOpId, channelIdFor } from '../packages/ledger/src/ops.js';
import { signPaymentState } from '../packages/ledger/src/payment.js';
import { sha256 } from '../packages/ledger/src/codec.js';
import type { OpResult } from '../packages/ledger/src/api.js';

const { values: argv } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    'no-pg': { type: 'boolean' },
    'no-http': { type: 'boolean' },
    'no-inproc': { type: 'boolean' },
    seconds: { type: 'string' },
    crash: { type: 'string' },
    'verify-threads': { type: 'string' },
    'no-batch': { type: 'boolean' },
    'startup-entries': { type: 'string' },
    /** HTTP: SDK instances the clients are spread over (1 = all share one, coalescing their ops into batches). */
    sdks: { type: 'string' },
    /** Only these workloads / client counts (comma-separated), e.g. --workloads transfer --clients 64. */
    workloads: { type: 'string' },
    /** The ledger's adaptive group-commit wait (LedgerOptions.gatherMs; server --gather-ms). */
    'gather-ms': { type: 'string' },
    clients: { type: 'string' },
  },
});
const quick = !!argv.quick;
const seconds = Number(argv.seconds ?? (quick ? 1.5 : 4));
const verifyThreads = Number(argv['verify-threads'] ?? Math.min(availableParallelism(), 4));
const gatherMs = Number(argv['gather-ms'] ?? 0);
const root = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(root, 'packages/cli/bin/bitorrent.js');
const tmp = mkdtempSync(join(tmpdir(), 'btt-ledger-bench-'));
const cleanup: (() => void | Promise<void>)[] = [() => rmSync(tmp, { recursive: true, force: true })];
const log = (s: string) => console.error(s);

// ---------- raw ceilings ----------
function rate(f: () => void, ms: number): number {
  const end = performance.now() + ms;
  let n = 0;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) f();
    n += 64;
  }
  return Math.round(n / ((performance.now() - t0) / 1000));
}

function ceilings(): Record<string, number> {
  const k = keyPairFromSeed(sha256(Buffer.from('bench')));
  const msg = Buffer.alloc(160, 7);
  const sig = sign(msg, k.secretKey);
  const sodium = createRequire(import.meta.url)('sodium-native') as { crypto_sign_verify_detached(s: Buffer, m: Buffer, p: Buffer): boolean };
  const ms = quick ? 500 : 1500;
  const out: Record<string, number> = {};
  out.verify_node_crypto_per_s = rate(() => verifyNodeCrypto(msg, sig, k.publicKey), ms);
  out.verify_sodium_per_s = rate(() => sodium.crypto_sign_verify_detached(sig, msg, k.publicKey), ms);
  out.sign_sodium_per_s = rate(() => sign(msg, k.secretKey), ms);
  const fd = openSync(join(tmp, 'fsync.bin'), 'w');
  out.fdatasync_per_s = rate(() => {
    writeSync(fd, msg);
    fdatasyncSync(fd);
  }, ms);
  closeSync(fd);
  const db = new Database(join(tmp, 'raw.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)');
  const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
  out.sqlite_commits_per_s = rate(() => ins.run(msg), ms);
  db.close();
  return out;
}

// ---------- workloads ----------
const CLIENTS = 64;
const clientKeys: KeyPair[] = Array.from({ length: CLIENTS }, (_, i) => keyPairFromSeed(sha256(Buffer.from(`bench-client-${i}`))));
const ledgerKeys = keyPairFromSeed(sha256(Buffer.from('bench-ledger')));

type Workload = 'transfer' | 'channel';
/** Pre-signed op sequences per client. A channel unit is [open, close]; a transfer unit is [transfer]. */
function presign(ledgerId: Buffer, workload: Workload, clients: number, units: number): Buffer[][][] {
  const out: Buffer[][][] = [];
  const expiresAt = Date.now() + 3600_000;
  for (let c = 0; c < clients; c++) {
    const me = clientKeys[c]!;
    const peer = clientKeys[(c + 1) % CLIENTS]!;
    const list: Buffer[][] = [];
    for (let i = 0; i < units; i++) {
      if (workload === 'transfer') list.push([signOp(ledgerId, me, { kind: 'transfer', to: peer.publicKey, amount: 1n }).wire]);
      else {
        const opId = newOpId();
        const open = signOp(ledgerId, me, { kind: 'open', provider: peer.publicKey, deposit: 1000n, expiresAt }, opId);
        const channelId = channelIdFor(ledgerId, me.publicKey, opId);
        const st = { ledgerId, channelId, sequence: 5n, cumulative: 400n };
        const close = signOp(ledgerId, peer, { kind: 'close', channelId, sequence: 5n, cumulative: 400n, requesterSig: signPaymentState(st, me.secretKey) });
        list.push([open.wire, close.wire]);
      }
    }
    out.push(list);
  }
  return out;
}

interface Result {
  backend: string;
  transport: string;
  workload: Workload;
  clients: number;
  ops: number;
  ops_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  /** CPU time per op of the process holding the ledger (all its threads: verify workers, SQLite writer; for HTTP the server process). */
  cpu_us_per_op?: number;
  /** HTTP runs: CPU per op of the bench process itself (the SDK clients), which shares the machine's cores with the server. */
  client_cpu_us_per_op?: number;
}

function pct(a: number[], p: number): number {
  if (a.length === 0) return NaN;
  const s = Float64Array.from(a).sort();
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 100) / 100;
}

async function drive(submit: (w: Buffer, client: number) => Promise<OpResult>, ops: Buffer[][][], clients: number, ms: number): Promise<{ ops: number; secs: number; lat: number[]; errors: number }> {
  const lat: number[] = [];
  let done = 0;
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    ops.slice(0, clients).map(async (units, client) => {
      for (const unit of units) {
        if (performance.now() >= end) return;
        for (const w of unit) {
          const s = performance.now();
          try {
            await submit(w, client);
            lat.push(performance.now() - s);
            done++;
          } catch (e) {
            errors++;
            if (errors < 5) log(`  error: ${(e as Error).message}`);
          }
        }
      }
    }),
  );
  return { ops: done, secs: (performance.now() - t0) / 1000, lat, errors };
}

async function createLedgerDb(db: string): Promise<Buffer> {
  const l = await Ledger.open({ db, ledgerKeys, genesis: { allocations: clientKeys.map((k) => ({ account: k.publicKey, amount: 10n ** 15n })) }, expiryIntervalMs: 0, verifyThreads: 0 });
  const id = l.state.ledgerId;
  await l.close();
  return id;
}

function startServer(db: string, keyFile: string): Promise<{ proc: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [BIN, 'ledger', 'serve', '--db', db, '--key', keyFile, '--port', '0', '--rate', '1000000', '--verify-threads', String(verifyThreads), '--gather-ms', String(gatherMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ proc, url: m[1]! });
    });
    proc.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

async function runScenario(backend: string, db: string, transport: 'http' | 'inproc', workload: Workload, clients: number): Promise<Result> {
  const ledgerId = await createLedgerDb(db);
  const expected = Math.ceil((quick ? 6000 : 12000) * seconds);
  const units = Math.max(20, Math.ceil(expected / clients / (workload === 'channel' ? 2 : 1)));
  const ops = presign(ledgerId, workload, clients, units);
  let r;
  let cpu: number | undefined;
  let clientCpu: number | undefined;
  if (transport === 'inproc') {
    const l = await Ledger.open({ db, ledgerKeys, expiryIntervalMs: 0, verifyThreads, gatherMs });
    try {
      const c0 = process.cpuUsage();
      r = await drive((w) => l.submit(w), ops, clients, seconds * 1000);
      const c = process.cpuUsage(c0);
      cpu = Math.round((c.user + c.system) / Math.max(1, r.ops));
    } finally {
      await l.close();
    }
  } else {
    const keyFile = join(tmp, `key-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(keyFile, JSON.stringify({ seed: ledgerKeys.secretKey.subarray(0, 32).toString('hex') }));
    const { proc, url } = await startServer(db, keyFile);
    const exited = new Promise((res) => proc.once('exit', res));
    const serverCpu = () => (procCpuSeconds(proc.pid!) ?? 0) * 1e6;
    const nSdk = Math.max(1, Math.min(clients, Number(argv.sdks ?? 1)));
    const sdks = Array.from({ length: nSdk }, () => new LedgerClient(url, { maxSockets: Math.ceil(clients / nSdk), autoBatch: !argv['no-batch'] }));
    try {
      const s0 = serverCpu();
      const c0 = process.cpuUsage();
      r = await drive((w, client) => sdks[client % nSdk]!.submit(w), ops, clients, seconds * 1000);
      const c = process.cpuUsage(c0);
      cpu = Math.round((serverCpu() - s0) / Math.max(1, r.ops));
      clientCpu = Math.round((c.user + c.system) / Math.max(1, r.ops));
    } finally {
      for (const c of sdks) c.close();
      proc.kill('SIGTERM');
      await exited;
    }
  }
  const res: Result = { backend, transport, workload, clients, ops: r.ops, ops_per_s: Math.round(r.ops / r.secs), p50_ms: pct(r.lat, 50), p99_ms: pct(r.lat, 99), errors: r.errors, ...(cpu !== undefined ? { cpu_us_per_op: cpu } : {}), ...(clientCpu !== undefined ? { client_cpu_us_per_op: clientCpu } : {}) };
  log(`${backend.padEnd(8)} ${transport.padEnd(6)} ${workload.padEnd(8)} c=${String(clients).padStart(2)}  ${String(res.ops_per_s).padStart(6)} ops/s  p50 ${res.p50_ms} ms  p99 ${res.p99_ms} ms${cpu !== undefined ? `  cpu ${cpu} µs/op` : ''}${clientCpu !== undefined ? ` (+ clients ${clientCpu})` : ''}${r.errors ? `  errors ${r.errors}` : ''}`);
  return res;
}

/**
 * Start-up cost: build an N-entry SQLite journal (1,000 accounts, 95% transfers, 5% channel opens, batches of 64 with
 * signed checkpoints, as the ledger writes them), then time Ledger.open from the snapshot and with a full replay.
 */
async function startupBench(n: number): Promise<Record<string, number>> {
  const db = join(tmp, 'startup.db');
  const keys = Array.from({ length: 1000 }, (_, i) => keyPairFromSeed(sha256(Buffer.from(`startup-${i}`))));
  const t = Date.now();
  const st = new LedgerState(makeGenesis(ledgerKeys.publicKey, { allocations: keys.map((k) => ({ account: k.publicKey, amount: 10n ** 15n })), opIdWindowMs: 24 * 3600_000 }, t));
  const s = new SqliteStorage(db, { threaded: false });
  await s.init();
  const g = st.applyGenesis();
  g.checkpoint = st.checkpoint(ledgerKeys.secretKey);
  await s.append([g]);
  let rows = [];
  for (let i = 1; i < n; i++) {
    const me = keys[i % 1000]!;
    const to = keys[(i * 7 + 1) % 1000]!;
    const op = signOp(st.ledgerId, me, i % 20 === 0 ? { kind: 'open', provider: to.publicKey, deposit: 100n, expiresAt: t + 3600_000 } : { kind: 'transfer', to: to.publicKey, amount: 1n }, newOpId(t));
    const r = st.applyOp(op, t, true);
    if (!r.ok) throw r.error;
    rows.push(r.row!);
    if (rows.length === 64 || i === n - 1) {
      rows[rows.length - 1]!.checkpoint = st.checkpoint(ledgerKeys.secretKey);
      await s.append(rows);
      rows = [];
    }
  }
  await s.close();
  const time = async (snapshotEvery: number) => {
    const c0 = process.cpuUsage();
    const l = await Ledger.open({ db, ledgerKeys, expiryIntervalMs: 0, verifyThreads: 0, snapshotEvery });
    const cu = process.cpuUsage(c0);
    const r = { ms: l.startup.ms, cpu_ms: Math.round((cu.user + cu.system) / 1000), replayed: l.startup.replayed, snap: l.startup.snapshotSeq !== undefined };
    await l.close(); // saves the snapshot the next open uses (when enabled)
    return r;
  };
  const full = await time(0);
  await time(100_000); // no snapshot yet: full replay, then one is saved at close
  const snap = await time(100_000);
  if (!snap.snap) throw new Error('start-up did not use the snapshot');
  const out = { entries: n, full_replay_ms: full.ms, full_replay_cpu_ms: full.cpu_ms, snapshot_ms: snap.ms, snapshot_cpu_ms: snap.cpu_ms };
  log(`start-up, ${n} journal entries: full replay ${full.ms} ms (${full.cpu_ms} ms CPU), from snapshot ${snap.ms} ms (${snap.cpu_ms} ms CPU)`);
  return out;
}

async function main(): Promise<void> {
  log(`ledger bench (${quick ? 'quick' : 'full'}, ${seconds}s per scenario, verify threads ${verifyThreads})`);
  const ceil = ceilings();
  log(`ceilings: ${JSON.stringify(ceil)}`);
  const results: Result[] = [];
  const backends: { name: string; db: () => Promise<string> }[] = [{ name: 'sqlite', db: async () => join(tmp, `b-${Math.random().toString(36).slice(2)}.db`) }];
  if (!argv['no-pg']) {
    const { postgresAvailable, startPostgres } = await import('../packages/ledger/test/pg-harness.js');
    const missing = postgresAvailable();
    if (missing) log(`skipping PostgreSQL: ${missing}`);
    else {
      const pg = await import('pg');
      const { url } = await startPostgres((fn) => cleanup.unshift(fn));
      let n = 0;
      backends.push({
        name: 'postgres',
        db: async () => {
          const c = new pg.default.Client({ connectionString: url });
          await c.connect();
          const name = `bench${n++}`;
          await c.query(`CREATE DATABASE ${name}`);
          await c.end();
          return url.replace(/\/postgres$/, `/${name}`);
        },
      });
    }
  }
  const transports: ('http' | 'inproc')[] = [];
  if (!argv['no-http']) transports.push('http');
  if (!argv['no-inproc']) transports.push('inproc');
  for (const b of backends)
    for (const tr of transports)
      for (const w of (['transfer', 'channel'] as Workload[]).filter((x) => !argv.workloads || argv.workloads.split(',').includes(x)))
        for (const c of [1, 16, 64].filter((x) => !argv.clients || argv.clients.split(',').map(Number).includes(x))) results.push(await runScenario(b.name, await b.db(), tr, w, c));

  const startupN = Number(argv['startup-entries'] ?? (quick ? 20_000 : 100_000));
  const startup = startupN > 0 ? await startupBench(startupN) : undefined;
  let crash: unknown;
  if (argv.crash) {
    const { runCrashTest } = await import('../packages/ledger/test/crash-harness.js');
    crash = await runCrashTest({ db: join(tmp, 'crash.db'), keyFile: join(tmp, 'crash.key'), kills: Number(argv.crash), clients: 8, seed: Date.now() & 0xffff, after: (fn) => cleanup.unshift(fn), log });
    log(`crash: ${JSON.stringify(crash)}`);
  }
  const goal = results.find((r) => r.backend === 'sqlite' && r.transport === 'http' && r.workload === 'transfer' && r.clients === 64);
  for (const f of cleanup) await f();
  console.log(
    JSON.stringify({
      bench: 'ledger',
      quick,
      seconds,
      verify_threads: verifyThreads,
      sdk_auto_batch: !argv['no-batch'],
      load_average: (await import('node:os')).loadavg().map((x) => Math.round(x * 100) / 100),
      ceilings: ceil,
      results,
      goal: goal ? { target_ops_per_s: 10000, target_p99_ms: 20, sqlite_http_transfer_64: { ops_per_s: goal.ops_per_s, p99_ms: goal.p99_ms }, met: goal.ops_per_s >= 10000 && goal.p99_ms <= 20 } : null,
      ...(startup ? { startup } : {}),
      ...(crash ? { crash } : {}),
    }),
  );
}

main().catch(async (e) => {
  console.error(e);
  for (const f of cleanup) await Promise.resolve(f()).catch(() => {});
  process.exit(1);
});
