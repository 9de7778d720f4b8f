/**
 * Real sockets on loopback: our DHT node with three python3-libtorrent sessions on 127.0.0.2-4.
 * Checks that our node answers libtorrent's queries and takes its announces, that we find a peer
 * libtorrent announced, and that libtorrent finds a peer we announced.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { PeerAddress } from '@bitorrent/core';
import { createDht, type LookupResult } from '../src/index.js';

const PY = '/usr/bin/python3';
const script = fileURLToPath(new URL('./lt_dht.py', import.meta.url));

function haveLibtorrent(): boolean {
  if (!existsSync(PY)) return false;
  return spawnSync(PY, ['-c', 'import libtorrent'], { stdio: 'ignore' }).status === 0;
}

interface LtEvent {
  ready?: boolean;
  port?: number;
  peers?: [string, number][];
  ih?: string;
  announced_to_us?: [string, number];
  nodes?: number;
}

class LtSession {
  proc: ChildProcess;
  port = 0;
  host: string;
  private listeners: ((e: LtEvent) => void)[] = [];
  constructor(host: string) {
    this.host = host;
    this.proc = spawn(PY, [script, host], { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      let e: LtEvent;
      try {
        e = JSON.parse(line) as LtEvent;
      } catch {
        return;
      }
      for (const l of [...this.listeners]) l(e);
    });
  }
  send(cmd: Record<string, unknown>): void {
    this.proc.stdin!.write(JSON.stringify(cmd) + '\n');
  }
  /** Resolve with the first event matching `pred`, or reject after `ms`. */
  wait(pred: (e: LtEvent) => boolean, ms: number, what: string): Promise<LtEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners = this.listeners.filter((x) => x !== l);
        reject(new Error(`libtorrent ${this.host}: timed out waiting for ${what}`));
      }, ms);
      const l = (e: LtEvent) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        this.listeners = this.listeners.filter((x) => x !== l);
        resolve(e);
      };
      this.listeners.push(l);
    });
  }
  async start(): Promise<void> {
    const e = await this.wait((x) => !!x.ready, 15_000, 'startup');
    this.port = e.port!;
  }
  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

/** Retry `attempt` (each a bounded operation) until it yields a value or `deadline` ms pass. */
async function retry<T>(attempt: () => Promise<T | undefined>, deadlineMs: number, what: string): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await attempt();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    // libtorrent blocks nodes that send it more than 5 queries/s (dht_block_ratelimit): pace the retries.
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const skip = !haveLibtorrent();
if (skip && process.env.CI === 'true') throw new Error('python3-libtorrent is required in CI (/usr/bin/python3 -c "import libtorrent")');

test('DHT interop with python3-libtorrent on loopback', { skip: skip ? 'python3-libtorrent not installed' : false, timeout: 120_000 }, async (t) => {
  const lts = ['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((h) => new LtSession(h));
  t.after(() => lts.forEach((l) => l.kill()));
  await Promise.all(lts.map((l) => l.start()));

  const dht = await createDht({ host: '127.0.0.1', port: 0, queryTimeoutMs: 2000 });
  t.after(() => dht.close());

  // Wire everyone to everyone.
  for (const l of lts) {
    l.send({ cmd: 'add_node', host: '127.0.0.1', port: dht.port });
    for (const o of lts) if (o !== l) l.send({ cmd: 'add_node', host: o.host, port: o.port });
  }
  const seeds = lts.map((l) => ({ host: l.host, port: l.port }));
  await retry(async () => {
    await dht.bootstrap(seeds);
    return dht.nodeCount() >= 3 ? true : undefined;
  }, 20_000, 'our routing table to hold the three libtorrent nodes');
  const ltHosts = new Set(lts.map((l) => l.host));
  assert.ok(dht.node.table.all().every((n) => ltHosts.has(n.host)));

  // 1. libtorrent announces (it adds a torrent with DHT on); its announce_peer reaches us with a valid token...
  const ih1 = randomBytes(20);
  const gotAnnounce = new Promise<PeerAddress>((resolve) => {
    const l = (ih: Buffer, peer: PeerAddress) => {
      if (ih.equals(ih1)) {
        dht.off('peer', l);
        resolve(peer);
      }
    };
    dht.on('peer', l);
  });
  const dir = mkdtempSync(join(tmpdir(), 'dht-lt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  lts[0].send({ cmd: 'announce', ih: ih1.toString('hex'), dir });
  assert.deepEqual(await gotAnnounce, { host: '127.0.0.2', port: lts[0].port });
  // ...and our iterative lookup finds it stored on the other libtorrent nodes (our own store excluded).
  const found = await retry(async () => {
    const r = await new Promise<LookupResult>((resolve) => dht.node.getPeers(ih1, undefined, resolve));
    return r.peers.find((p) => p.host === '127.0.0.2' && p.port === lts[0].port);
  }, 30_000, 'our lookup to find the peer libtorrent announced');
  assert.deepEqual(found, { host: '127.0.0.2', port: lts[0].port });
  assert.ok(dht.node.stats.queriesAnswered > 0, 'we answered libtorrent queries');
  assert.deepEqual(await dht.getPeers(ih1), [{ host: '127.0.0.2', port: lts[0].port }]);

  // 2. We announce; libtorrent finds us.
  const ih2 = randomBytes(20);
  const acked = await dht.announceCount(ih2, 7777);
  assert.ok(acked >= 1, `announce accepted by ${acked} libtorrent nodes`);
  const ltFound = await retry(async () => {
    lts[2].send({ cmd: 'get_peers', ih: ih2.toString('hex') });
    try {
      const e = await lts[2].wait((x) => x.ih === ih2.toString('hex') && !!x.peers?.some(([h, p]) => h === '127.0.0.1' && p === 7777), 5_000, 'get_peers reply');
      return e.peers;
    } catch {
      return undefined;
    }
  }, 30_000, 'libtorrent to find the peer we announced');
  assert.ok(ltFound.some(([h, p]) => h === '127.0.0.1' && p === 7777));

  // 3. implied_port: libtorrent sees our DHT socket's port.
  const ih3 = randomBytes(20);
  assert.ok((await dht.announceCount(ih3, 'implied')) >= 1);
  await retry(async () => {
    lts[1].send({ cmd: 'get_peers', ih: ih3.toString('hex') });
    try {
      return await lts[1].wait((x) => x.ih === ih3.toString('hex') && !!x.peers?.some(([h, p]) => h === '127.0.0.1' && p === dht.port), 5_000, 'implied get_peers');
    } catch {
      return undefined;
    }
  }, 30_000, 'libtorrent to find our implied-port announce');
  console.log(`# interop: ${dht.nodeCount()} nodes, answered ${dht.node.stats.queriesAnswered} queries, lookup stats ${JSON.stringify(dht.lastLookup)}`);
});
