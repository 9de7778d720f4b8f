/**
 * Dht: the promise-based façade over DhtNode for sessions and the CLI — a UDP socket, hostname
 * bootstrap, routing table persisted in a state file, events for incoming announces.
 */
import { EventEmitter } from 'node:events';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { readFile, writeFile, rename } from 'node:fs/promises';
import type { EncodableValue, PeerAddress } from '@bitorrent/core';
import type { Clock } from './clock.js';
import type { Rng } from './id.js';
import { DhtNode, type DhtItem, type LookupResult, type LookupStats, type Transport } from './node.js';
import { UdpTransport } from './udp.js';
import type { KeyPair } from './bep44.js';

export interface CreateDhtOptions {
  /** UDP port to bind (0 or absent: ephemeral). */
  port?: number;
  /** Bind address, default '0.0.0.0'. */
  host?: string;
  /** Bootstrap nodes; host names are resolved. */
  bootstrap?: PeerAddress[];
  /** JSON file holding our node ID and routing table across restarts. */
  stateFile?: string;
  nodeId?: Buffer;
  clock?: Clock;
  rng?: Rng;
  /** Use this transport instead of binding a UDP socket (simulation, tests). */
  transport?: Transport & { port?: number; close?(): Promise<void> | void };
  /** Extra DhtNode tuning. */
  alpha?: number;
  queryTimeoutMs?: number;
  softTimeoutMs?: number;
  /** Resolve the returned promise only once the bootstrap lookup finished (default false). */
  waitForBootstrap?: boolean;
}

export interface GetPeersOptions {
  onPeers?(peers: PeerAddress[]): void;
  signal?: AbortSignal;
}

export interface DhtPutOptions {
  v: EncodableValue;
  keyPair?: KeyPair;
  seq?: number;
  salt?: Buffer;
  cas?: number;
}

interface StateFile {
  version: 1;
  id: string;
  nodes: { host: string; port: number; id: string }[];
}

async function resolveAll(addrs: PeerAddress[]): Promise<PeerAddress[]> {
  const out: PeerAddress[] = [];
  await Promise.all(
    addrs.map(async (a) => {
      if (isIP(a.host)) return out.push(a);
      try {
        const r = await dnsLookup(a.host, { family: 4 });
        out.push({ host: r.address, port: a.port });
      } catch {
        /* unresolvable bootstrap name: skip */
      }
    }),
  );
  return out;
}

export interface Dht {
  on(event: 'peer', listener: (infoHash: Buffer, peer: PeerAddress) => void): this;
  on(event: 'ready', listener: () => void): this;
}

export class Dht extends EventEmitter {
  readonly node: DhtNode;
  /** Stats of the most recent lookups (for benchmarks and the CLI). */
  lastLookup?: LookupStats;
  private closed = false;

  constructor(private readonly transport: Transport & { port?: number; close?(): Promise<void> | void }, node: (t: Transport) => DhtNode, private readonly stateFile?: string) {
    super();
    this.node = node(transport);
  }

  get port(): number {
    return this.transport.port ?? 0;
  }

  get id(): Buffer {
    return this.node.id;
  }

  nodeCount(): number {
    return this.node.nodeCount();
  }

  addNode(addr: PeerAddress): void {
    if (isIP(addr.host)) this.node.addNode(addr);
    else void resolveAll([addr]).then((r) => r.forEach((a) => this.node.addNode(a)));
  }

  /** Bootstrap from addresses (also done by createDht); resolves once the self-lookup finished. */
  bootstrap(addrs: PeerAddress[]): Promise<number> {
    return resolveAll(addrs).then(
      (resolved) => new Promise<number>((resolve) => this.node.bootstrap(resolved, () => resolve(this.node.nodeCount()))),
    );
  }

  /** Iterative get_peers lookup; onPeers streams peers as they arrive; resolves with all peers found. */
  getPeers(infoHash: Buffer, opts: GetPeersOptions = {}): Promise<PeerAddress[]> {
    if (infoHash.length !== 20) return Promise.reject(new RangeError('info-hash must be 20 bytes'));
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(opts.signal.reason ?? new Error('aborted'));
      let result: PeerAddress[] = [];
      const local = this.node.peerStore.get(infoHash, 200, this.node.rng);
      if (local.length > 0) opts.onPeers?.(local);
      const l = this.node.getPeers(
        infoHash,
        (peers) => opts.onPeers?.(peers),
        (r) => {
          this.lastLookup = r.stats;
          result = r.peers;
          opts.signal?.removeEventListener('abort', onAbort);
          const seen = new Set(result.map((p) => `${p.host}|${p.port}`));
          resolve([...result, ...local.filter((p) => !seen.has(`${p.host}|${p.port}`))]);
        },
      );
      const onAbort = () => {
        l.cancel();
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Announce that we have `infoHash` on `port` ('implied': the source port of our DHT socket, BEP 5 implied_port). */
  announce(infoHash: Buffer, port: number | 'implied'): Promise<void> {
    if (infoHash.length !== 20) return Promise.reject(new RangeError('info-hash must be 20 bytes'));
    return new Promise((resolve) => {
      this.node.announce(infoHash, port, (_acked, r) => {
        this.lastLookup = r.stats;
        resolve();
      });
    });
  }

  /** Like announce(), but reports how many nodes accepted it. */
  announceCount(infoHash: Buffer, port: number | 'implied'): Promise<number> {
    return new Promise((resolve) => this.node.announce(infoHash, port, (acked) => resolve(acked)));
  }

  /** BEP 44 put (immutable: {v}; mutable: {v, keyPair, seq, salt?, cas?}). Resolves with the target and how many nodes stored it. */
  put(opts: DhtPutOptions): Promise<{ target: Buffer; stored: number }> {
    return new Promise((resolve, reject) => {
      try {
        this.node.putItem(opts, (stored, target) => resolve({ target, stored }));
      } catch (err) {
        reject(err);
      }
    });
  }

  /** BEP 44 get: a verified item or null. For mutable items pass the salt used at put. */
  get(target: Buffer, opts: { salt?: Buffer; seq?: number } = {}): Promise<DhtItem | null> {
    return new Promise((resolve) => {
      this.node.getItem(target, opts, (item, r: LookupResult) => {
        this.lastLookup = r.stats;
        resolve(item);
      });
    });
  }

  /** Save our ID and routing table to the state file (also done by close()). */
  async save(): Promise<void> {
    if (!this.stateFile) return;
    const state: StateFile = {
      version: 1,
      id: this.node.id.toString('hex'),
      nodes: this.node.table.all().filter((n) => n.lastResponse > 0).map((n) => ({ host: n.host, port: n.port, id: n.id.toString('hex') })),
    };
    const tmp = `${this.stateFile}.tmp`;
    await writeFile(tmp, JSON.stringify(state));
    await rename(tmp, this.stateFile);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.save();
    } finally {
      this.node.close();
      await this.transport.close?.();
    }
  }
}

async function loadState(file: string): Promise<StateFile | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as StateFile;
    if (s.version !== 1 || typeof s.id !== 'string' || !/^[0-9a-f]{40}$/.test(s.id) || !Array.isArray(s.nodes)) return undefined;
    s.nodes = s.nodes
      .filter((n) => n && typeof n.host === 'string' && isIP(n.host) && Number.isInteger(n.port) && n.port > 0 && n.port < 65536 && /^[0-9a-f]{40}$/.test(n.id))
      .slice(0, 2000);
    return s;
  } catch {
    return undefined; // missing or corrupt: start fresh
  }
}

/** Create and start a DHT node: bind UDP (unless a transport is given), load state, bootstrap. */
export async function createDht(opts: CreateDhtOptions = {}): Promise<Dht> {
  const state = opts.stateFile ? await loadState(opts.stateFile) : undefined;
  const transport = opts.transport ?? (await UdpTransport.bind(opts.port ?? 0, opts.host ?? '0.0.0.0'));
  const nodeId = opts.nodeId ?? (state ? Buffer.from(state.id, 'hex') : undefined);
  let dht!: Dht;
  dht = new Dht(
    transport,
    (t) =>
      new DhtNode({
        transport: t,
        clock: opts.clock,
        rng: opts.rng,
        nodeId,
        // An ID loaded from the state file may be regenerated once our external IP is known (BEP 42).
        keepNodeId: !!opts.nodeId,
        alpha: opts.alpha,
        queryTimeoutMs: opts.queryTimeoutMs,
        softTimeoutMs: opts.softTimeoutMs,
        onAnnounce: (ih, peer) => dht.emit('peer', ih, peer),
      }),
    opts.stateFile,
  );
  const host = opts.host ?? '0.0.0.0';
  if (transport.port) {
    if (host !== '0.0.0.0' && host !== '::') dht.node.selfAddrs.add(`${host}|${transport.port}`);
    dht.node.selfAddrs.add(`127.0.0.1|${transport.port}`);
  }
  const seeds = [...(opts.bootstrap ?? [])];
  if (state) for (const n of state.nodes) seeds.push({ host: n.host, port: n.port });
  const boot = seeds.length > 0 ? dht.bootstrap(seeds).then(() => dht.emit('ready')) : Promise.resolve();
  if (opts.waitForBootstrap) await boot;
  return dht;
}
