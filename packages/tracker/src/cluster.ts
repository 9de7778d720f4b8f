/**
 * Multi-core tracker: node:cluster workers share the listening sockets (the kernel / primary spread UDP
 * datagrams and TCP connections over the workers) and each keeps a full replica of the swarm store.
 * Every stored announce is appended to a 40-byte record batch and shipped every `flushMs` through the primary
 * to the other workers, which apply it without answering (peer lists are at most a few ms stale, like
 * opentracker's live sync). UDP connection ids come from a shared secret, so any worker verifies any id.
 * Worker 0 alone writes the state file; all workers load it.
 *
 * Record: flags u8 (1 = IPv6, 2 = seeder) | event u8 | info_hash[20] | addr[18] (IPv4 uses the first 6).
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { startTracker, type TrackerServer, type TrackerServerOptions } from './server.js';
import { TrackerStats } from './tracker.js';
import type { AnnounceEvent } from './swarm.js';

const REC = 40;
const ENV_SECRET = 'BITORRENT_TRACKER_SECRET';
const ENV_INDEX = 'BITORRENT_TRACKER_WORKER';

interface BatchMsg { t: 'batch'; from: number; data: Uint8Array }
interface StatsMsg { t: 'stats'; from: number; s: Record<string, number> }
interface ListeningMsg { t: 'listening'; from: number; http: number; udp: number }
interface TotalsMsg { t: 'totals'; s: Record<string, number> }
interface ShutdownMsg { t: 'shutdown' }
type Msg = BatchMsg | StatsMsg | ListeningMsg | TotalsMsg | ShutdownMsg;

export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[ENV_INDEX] !== undefined;
}

/**
 * Primary side: fork `workers` processes running the same command line, relay batches and stats, and stop them
 * on SIGINT/SIGTERM. Resolves with the exit code once all workers have exited.
 */
export async function runClusterPrimary(
  workers: number,
  log: (m: string) => void,
  onListening: (http: number, udp: number) => void,
): Promise<number> {
  const secret = randomBytes(32).toString('hex');
  // Workers accept on the shared listening socket themselves: round-robin through the primary costs an IPC
  // message per TCP connection.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ serialization: 'advanced' } as Parameters<typeof cluster.setupPrimary>[0]);
  const ws: Worker[] = [];
  const stats = new Map<number, Record<string, number>>();
  let listening = 0;
  let stopping = false;
  let code = 0;
  return await new Promise<number>((resolve) => {
    let alive = 0;
    for (let i = 0; i < workers; i++) {
      const w = cluster.fork({ [ENV_SECRET]: secret, [ENV_INDEX]: String(i) });
      alive++;
      ws.push(w);
      w.on('message', (m: Msg) => {
        if (m.t === 'batch') {
          for (const o of ws) if (o !== w && o.isConnected()) o.send(m);
        } else if (m.t === 'stats') {
          stats.set(m.from, m.s);
          const sum: Record<string, number> = {};
          for (const s of stats.values()) for (const [k, v] of Object.entries(s)) sum[k] = (sum[k] ?? 0) + v;
          for (const o of ws) if (o.isConnected()) o.send({ t: 'totals', s: sum } satisfies TotalsMsg);
        } else if (m.t === 'listening') {
          if (++listening === workers) onListening(m.http, m.udp);
        }
      });
      w.on('exit', (c, sig) => {
        alive--;
        if (c !== 0) code = 1;
        if (!stopping) {
          log(`worker ${i} exited (${sig ?? c}); stopping the tracker`);
          code = 1;
          stop();
        }
        if (alive === 0) resolve(code);
      });
    }
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      for (const w of ws) if (w.isConnected()) w.send({ t: 'shutdown' } satisfies ShutdownMsg);
    };
    process.once('SIGINT', () => { log('SIGINT: stopping workers'); stop(); });
    process.once('SIGTERM', () => { log('SIGTERM: stopping workers'); stop(); });
  });
}

/** Worker side: run one replica of the tracker with replication hooks. Resolves with the exit code on shutdown. */
export async function runClusterWorker(opts: TrackerServerOptions, log: (m: string) => void, flushMs = 10): Promise<number> {
  const index = Number(process.env[ENV_INDEX]);
  const secret = Buffer.from(process.env[ENV_SECRET] ?? '', 'hex');
  if (secret.length !== 32) throw new Error('cluster worker started without a shared secret');
  let batch = Buffer.allocUnsafe(REC * 4096);
  let n = 0;
  const flush = (): void => {
    if (n === 0) return;
    process.send!({ t: 'batch', from: index, data: batch.subarray(0, n * REC) } satisfies BatchMsg);
    batch = Buffer.allocUnsafe(REC * 4096);
    n = 0;
  };
  const onAnnounce = (ih: string, v6: boolean, addr: Buffer, event: AnnounceEvent, seeder: boolean): void => {
    const o = n * REC;
    batch[o] = (v6 ? 1 : 0) | (seeder ? 2 : 0);
    batch[o + 1] = event;
    batch.write(ih, o + 2, 20, 'latin1');
    addr.copy(batch, o + 22, 0, v6 ? 18 : 6);
    if (++n === 4096) flush();
  };
  // A shutdown can arrive while we are still starting: remember it.
  let early = false;
  const earlyListener = (m: Msg): void => {
    if (m.t === 'shutdown') early = true;
  };
  process.on('message', earlyListener);
  const server: TrackerServer = await startTracker({
    ...opts,
    connIdSecret: secret,
    onAnnounce,
    stateReadOnly: index !== 0,
    log: (m) => log(`[worker ${index}] ${m}`),
  });
  const store = server.tracker.store;
  const own = server.tracker.stats;
  server.tracker.clusterStats = new TrackerStats();
  const timer = setInterval(flush, flushMs);
  const statsTimer = setInterval(() => process.send!({ t: 'stats', from: index, s: { ...own } as unknown as Record<string, number> } satisfies StatsMsg), 1000);
  process.on('message', (m: Msg) => {
    if (m.t === 'batch') {
      const d = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      for (let o = 0; o + REC <= d.length; o += REC) {
        const ih = d.toString('latin1', o + 2, o + 22);
        store.announce(ih, (d[o] & 1) !== 0, d, o + 22, (d[o + 1] & 3) as AnnounceEvent, (d[o] & 2) !== 0, 0);
      }
    } else if (m.t === 'totals') {
      Object.assign(server.tracker.clusterStats!, m.s);
    } else if (m.t === 'shutdown') {
      void shutdown();
    }
  });
  // The primary relays signals as 'shutdown'; a signal sent to the whole process group reaches us directly too.
  process.on('SIGINT', () => void shutdown());
  process.on('SIGTERM', () => void shutdown());
  let done: (c: number) => void = () => {};
  const finished = new Promise<number>((r) => (done = r));
  let closing = false;
  async function shutdown(): Promise<void> {
    if (closing) return;
    closing = true;
    clearInterval(timer);
    clearInterval(statsTimer);
    try {
      await server.close();
      done(0);
    } catch (e) {
      log(`[worker ${index}] shutdown error: ${(e as Error).message}`);
      done(1);
    } finally {
      process.disconnect?.();
    }
  }
  process.off('message', earlyListener);
  process.send!({ t: 'listening', from: index, http: server.httpPort, udp: server.udpPort } satisfies ListeningMsg);
  if (early) void shutdown();
  return finished;
}
