/**
 * Dht: the promise-based façade over DhtNode for sessions and the CLI — a UDP socket, hostname
 * bootstrap, routing table persisted in a state file, events for incoming announces.
 */
import { EventEmitter } from 'node:events';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP, isIPv6 } from 'node:net';
import { readFile, writeFile, rename } from 'node:fs/promises';
import type { EncodableValue, PeerAddress } from '@bitorrent/core';
import type { Clock } from './clock.js';
import type { Rng } from './id.js';
import { DhtNode, type DhtItem, type Lookup, type LookupResult, type LookupStats, type Transport } from './node.js';
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
  transport?: DhtTransport;
  /**
   * BEP 32: also run an IPv6 node (its own socket and routing table) bound to this address ('::' when
   * true), on the same port when one was given. Skipped silently when the host has no IPv6.
   */
  ipv6?: boolean | string;
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

export type DhtTransport = Transport & { port?: number; close?(): Promise<void> | void };

interface StateFile {
  version: 1;
  id: string;
  nodes: { host: string; port: number; id: string }[];
}

async function resolveAll<T extends PeerAddress>(addrs: T[], family: 4 | 6 = 4): Promise<T[]> {
  const out: T[] = [];
  await Promise.all(
    addrs.map(async (a) => {
      if (isIP(a.host)) return out.push(a);
      try {
        const r = await dnsLookup(a.host, { family });
        out.push({ ...a, host: r.address });
      } catch {
        /* unresolvable bootstrap name: skip */
      }
    }),
  );
  return out;
}

const familyOf = (host: string): 4 | 6 => (isIPv6(host) ? 6 : 4);

export interface Dht {
  on(event: 'peer', listener: (infoHash: Buffer, peer: PeerAddress) => void): this;
  on(event: 'ready', listener: () => void): this;
}

export class Dht extends EventEmitter {
  /** The primary node (IPv4 unless bound to an IPv6 address). */
  readonly node: DhtNode;
  /** The BEP 32 IPv6 node, when enabled. */
  readonly node6?: DhtNode;
  /** Stats of the most recent lookup (for benchmarks and the CLI). */
  lastLookup?: LookupStats;
  private closed = false;
  /** The bootstrap in progress: lookups wait for it so early calls do not run on an empty table. */
  private booting: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly transport: DhtTransport,
    makeNode: (t: Transport, family: 4 | 6) => DhtNode,
    private readonly stateFile?: string,
    family: 4 | 6 = 4,
    private readonly transport6?: DhtTransport,
  ) {
    super();
    this.node = makeNode(transport, family);
    if (transport6) this.node6 = makeNode(transport6, 6);
  }

  private nodes(): DhtNode[] {
    return this.node6 ? [this.node, this.node6] : [this.node];
  }

  /** The node of `host`'s address family. */
  nodeFor(host: string): DhtNode | undefined {
    return this.nodes().find((n) => n.family === familyOf(host));
  }

  get port(): number {
    return this.transport.port ?? 0;
  }

  /** Port of the IPv6 socket, when BEP 32 is enabled. */
  get port6(): number | undefined {
    return this.transport6?.port;
  }

  get id(): Buffer {
    return this.node.id;
  }

  nodeCount(): number {
    return this.nodes().reduce((a, n) => a + n.nodeCount(), 0);
  }

  addNode(addr: PeerAddress): void {
    if (isIP(addr.host)) this.nodeFor(addr.host)?.addNode(addr);
    else void resolveAll([addr], this.node.family).then((r) => r.forEach((a) => this.node.addNode(a)));
  }

  /** Bootstrap from addresses (also done by createDht); resolves once the self-lookups finished, with the node count. */
  bootstrap(addrs: (PeerAddress & { id?: Buffer })[]): Promise<number> {
    const p = this.runBootstrap(addrs);
    this.booting = p.catch(() => undefined);
    return p;
  }

  /** Resolves once any bootstrap in progress has finished. */
  whenReady(): Promise<void> {
    return this.booting.then(() => undefined);
  }

  private async runBootstrap(addrs: (PeerAddress & { id?: Buffer })[]): Promise<number> {
    await Promise.all(
      this.nodes().map(async (node) => {
        const mine = (await resolveAll(addrs, node.family)).filter((a) => familyOf(a.host) === node.family);
        if (mine.length === 0 && node !== this.node) return;
        await new Promise<void>((resolve) => node.bootstrap(mine, () => resolve()));
      }),
    );
    return this.nodeCount();
  }

  /**
   * Iterative get_peers lookup (on both families with BEP 32); onPeers streams new peers as they
   * arrive; resolves with all peers found. Aborting `signal` ends the lookup early and resolves with
   * what was found so far.
   */
  getPeers(infoHash: Buffer, opts: GetPeersOptions = {}): Promise<PeerAddress[]> {
    if (infoHash.length !== 20) return Promise.reject(new RangeError('info-hash must be 20 bytes'));
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason ?? new Error('aborted'));
    const all = new Map<string, PeerAddress>();
    const add = (peers: PeerAddress[]) => {
      const fresh = peers.filter((p) => {
        const k = `${p.host}|${p.port}`;
        if (all.has(k)) return false;
        all.set(k, p);
        return true;
      });
      if (fresh.length > 0) opts.onPeers?.(fresh);
    };
    for (const node of this.nodes()) add(node.peerStore.get(infoHash, 200, node.rng));
    const lookups: Lookup[] = [];
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      lookups.forEach((l) => l.cancel());
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    return this.booting.then(() => aborted ? [] : Promise.all(
      this.nodes().map(
        (node) =>
          new Promise<void>((resolve) => {
            lookups.push(
              node.getPeers(infoHash, add, (r) => {
                if (node === this.node) this.lastLookup = r.stats;
                add(r.peers);
                resolve();
              }),
            );
          }),
      ),
    )).then(() => {
      opts.signal?.removeEventListener('abort', onAbort);
      return [...all.values()];
    });
  }

  /** Announce that we have `infoHash` on `port` ('implied': the source port of our DHT socket, BEP 5 implied_port). */
  async announce(infoHash: Buffer, port: number | 'implied', opts: { seed?: boolean } = {}): Promise<void> {
    await this.announceCount(infoHash, port, opts);
  }

  /** BEP 33 scrape: estimated seeds and downloaders announced for `infoHash`. */
  async scrape(infoHash: Buffer): Promise<{ seeds: number; peers: number }> {
    if (infoHash.length !== 20) throw new RangeError('info-hash must be 20 bytes');
    await this.booting;
    return new Promise((resolve) => this.node.scrape(infoHash, (c, r) => {
      this.lastLookup = r.stats;
      resolve(c);
    }));
  }

  /** Like announce(), but resolves with how many nodes accepted it. */
  announceCount(infoHash: Buffer, port: number | 'implied', opts: { seed?: boolean } = {}): Promise<number> {
    if (infoHash.length !== 20) return Promise.reject(new RangeError('info-hash must be 20 bytes'));
    if (port !== 'implied' && (!Number.isInteger(port) || port < 1 || port > 65535)) return Promise.reject(new RangeError(`invalid port ${port}`));
    return this.booting.then(() => Promise.all(
      this.nodes().map(
        (node) =>
          new Promise<number>((resolve) =>
            node.announce(infoHash, port, (acked, r) => {
              if (node === this.node) this.lastLookup = r.stats;
              resolve(acked);
            }, !!opts.seed),
          ),
      ),
    )).then((counts) => counts.reduce((a, b) => a + b, 0));
  }

  /** BEP 44 put (immutable: {v}; mutable: {v, keyPair, seq, salt?, cas?}). Resolves with the target and how many nodes stored it. */
  async put(opts: DhtPutOptions): Promise<{ target: Buffer; stored: number }> {
    await this.booting;
    return new Promise((resolve, reject) => {
      try {
        this.node.putItem(opts, (stored, target) => resolve({ target, stored }));
      } catch (err) {
        reject(err);
      }
    });
  }

  /** BEP 44 get: a verified item or null. For mutable items pass the salt used at put. */
  async get(target: Buffer, opts: { salt?: Buffer; seq?: number } = {}): Promise<DhtItem | null> {
    if (target.length !== 20) throw new RangeError('target must be 20 bytes');
    await this.booting;
    return new Promise((resolve) => {
      this.node.getItem(target, opts, (item, r: LookupResult) => {
        this.lastLookup = r.stats;
        resolve(item);
      });
    });
  }

  /** Save our ID and routing table(s) to the state file (also done by close()). */
  async save(): Promise<void> {
    if (!this.stateFile) return;
    const state: StateFile = {
      version: 1,
      id: this.node.id.toString('hex'),
      nodes: this.nodes().flatMap((node) =>
        node.table.all().filter((n) => n.lastResponse > 0).map((n) => ({ host: n.host, port: n.port, id: n.id.toString('hex') })),
      ),
    };
    const tmp = `${this.stateFile}.tmp`;
    await writeFile(tmp, JSON.stringify(state));
    await rename(tmp, this.stateFile);
  }

  /** Persist the routing table (if stateFile), stop all lookups and close the socket(s). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.save();
    } finally {
      for (const n of this.nodes()) n.close();
      await this.transport.close?.();
      await this.transport6?.close?.();
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
  const host = opts.host ?? '0.0.0.0';
  const transport = opts.transport ?? (await UdpTransport.bind(opts.port ?? 0, host));
  const family = familyOf(host);
  let transport6: DhtTransport | undefined;
  if (opts.ipv6 && family === 4 && !opts.transport) {
    const host6 = typeof opts.ipv6 === 'string' ? opts.ipv6 : '::';
    try {
      transport6 = await UdpTransport.bind(opts.port ? transport.port ?? 0 : 0, host6);
    } catch {
      transport6 = undefined; // no IPv6 on this host
    }
  }
  const nodeId = opts.nodeId ?? (state ? Buffer.from(state.id, 'hex') : undefined);
  let dht!: Dht;
  dht = new Dht(
    transport,
    (t, fam) =>
      new DhtNode({
        transport: t,
        family: fam,
        clock: opts.clock,
        rng: opts.rng,
        nodeId,
        // An ID loaded from the state file may be regenerated once our external IP is known (BEP 42).
        keepNodeId: !!opts.nodeId,
        alpha: opts.alpha,
        queryTimeoutMs: opts.queryTimeoutMs,
        softTimeoutMs: opts.softTimeoutMs,
        otherFamilyClosest: (target, count) => {
          const other = [dht.node, dht.node6].find((n) => n && n.family !== fam);
          return other ? other.table.closest(target, count) : [];
        },
        onAnnounce: (ih, peer) => dht.emit('peer', ih, peer),
      }),
    opts.stateFile,
    family,
    transport6,
  );
  const selfAddrs = (node: DhtNode | undefined, h: string, port: number | undefined) => {
    if (!node || !port) return;
    if (h !== '0.0.0.0' && h !== '::') node.selfAddrs.add(`${h}|${port}`);
    node.selfAddrs.add(node.family === 4 ? `127.0.0.1|${port}` : `::1|${port}`);
  };
  selfAddrs(dht.node, host, transport.port);
  selfAddrs(dht.node6, typeof opts.ipv6 === 'string' ? opts.ipv6 : '::', transport6?.port);
  // Saved nodes come back with their IDs: the bootstrap lookup queries the closest, the rest are pinged.
  const saved = (state?.nodes ?? []).map((n) => ({ host: n.host, port: n.port, id: Buffer.from(n.id, 'hex') }));
  const seeds: (PeerAddress & { id?: Buffer })[] = [...(opts.bootstrap ?? []), ...saved];
  for (const n of saved.slice(0, 64)) dht.nodeFor(n.host)?.addNode(n);
  const boot = seeds.length > 0 ? dht.bootstrap(seeds).then(() => dht.emit('ready')) : Promise.resolve();
  if (opts.waitForBootstrap) await boot;
  return dht;
}
